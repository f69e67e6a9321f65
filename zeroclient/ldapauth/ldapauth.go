// Package ldapauth checks a password against an LDAP or Active Directory directory the way
// the guide's AD Connector does: a service account binds and finds the user by name, then a
// bind as that user proves the password. Each check uses its own short-lived connection, so
// a directory restart never leaves the broker with a dead pooled one.
package ldapauth

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"time"

	"github.com/go-ldap/ldap/v3"

	"deskhost/hostd/directory"
)

// ErrBadCredentials is an unknown user or a wrong password: callers must not tell them
// apart to the client.
var ErrBadCredentials = errors.New("unknown user name or wrong password")

// Authenticator checks passwords against one directory.
type Authenticator struct {
	url       string
	startTLS  bool
	tlsConfig *tls.Config
	bindDN    string
	bindPW    string
	base      string
	attr      string
	filter    string
	timeout   time.Duration
}

// New prepares an authenticator from a directory's LDAP settings (already validated).
func New(cfg *directory.LDAP) (*Authenticator, error) {
	pw, err := cfg.Password()
	if err != nil {
		return nil, fmt.Errorf("ldap: service account: %w", err)
	}
	u, err := url.Parse(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("ldap: url %q: %w", cfg.URL, err)
	}
	a := &Authenticator{
		url: cfg.URL, startTLS: cfg.StartTLS, bindDN: cfg.BindDN, bindPW: pw, base: cfg.UserBase,
		attr: cfg.UserAttribute, filter: cfg.UserFilter, timeout: time.Duration(cfg.TimeoutSeconds) * time.Second,
	}
	if a.attr == "" {
		a.attr = directory.DefaultLDAPUserAttribute
	}
	if a.filter == "" {
		a.filter = directory.DefaultLDAPUserFilter
	}
	if a.timeout == 0 {
		a.timeout = directory.DefaultLDAPTimeout * time.Second
	}
	host, _, _ := net.SplitHostPort(u.Host)
	if host == "" {
		host = u.Host
	}
	a.tlsConfig = &tls.Config{MinVersion: tls.VersionTLS12, ServerName: host}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("ldap: caFile: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ldap: caFile %s holds no PEM certificate", cfg.CAFile)
		}
		a.tlsConfig.RootCAs = pool
	}
	return a, nil
}

// User is what the directory says about an authenticated user.
type User struct {
	DN        string
	Name      string // the directory's spelling of the login name
	GivenName string
	Surname   string
	Email     string
}

// Authenticate checks name's password. It returns ErrBadCredentials for an unknown user
// and for a wrong password (doing a bind in both cases, so both cost the same round
// trips), and another error when the directory cannot be asked.
func (a *Authenticator) Authenticate(ctx context.Context, name, password string) (User, error) {
	if password == "" {
		// An LDAP bind with an empty password is an unauthenticated bind and "succeeds".
		return User{}, ErrBadCredentials
	}
	conn, err := a.dial(ctx)
	if err != nil {
		return User{}, err
	}
	defer conn.Close()
	if err := conn.Bind(a.bindDN, a.bindPW); err != nil {
		return User{}, fmt.Errorf("ldap %s: service account bind as %s: %w", a.url, a.bindDN, err)
	}
	filter := fmt.Sprintf("(&%s(%s=%s))", a.filter, a.attr, ldap.EscapeFilter(name))
	res, err := conn.Search(ldap.NewSearchRequest(a.base, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 2,
		int(a.timeout/time.Second), false, filter, []string{a.attr, "givenName", "sn", "mail"}, nil))
	if err != nil && !ldap.IsErrorWithCode(err, ldap.LDAPResultSizeLimitExceeded) {
		return User{}, fmt.Errorf("ldap %s: search %s: %w", a.url, filter, err)
	}
	if res == nil || len(res.Entries) != 1 {
		// No such user (or an ambiguous name): still pay for one failing bind, so that the
		// directory's round trips do not tell this apart from a wrong password.
		_ = conn.Bind(a.attr+"=deskhost-no-such-user,"+a.base, password)
		return User{}, ErrBadCredentials
	}
	e := res.Entries[0]
	if err := conn.Bind(e.DN, password); err != nil {
		if ldap.IsErrorWithCode(err, ldap.LDAPResultInvalidCredentials) {
			return User{}, ErrBadCredentials
		}
		return User{}, fmt.Errorf("ldap %s: bind as %s: %w", a.url, e.DN, err)
	}
	return User{DN: e.DN, Name: e.GetAttributeValue(a.attr), GivenName: e.GetAttributeValue("givenName"),
		Surname: e.GetAttributeValue("sn"), Email: e.GetAttributeValue("mail")}, nil
}

func (a *Authenticator) dial(ctx context.Context) (*ldap.Conn, error) {
	d := &net.Dialer{Timeout: a.timeout}
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < a.timeout {
		d.Timeout = time.Until(dl)
	}
	conn, err := ldap.DialURL(a.url, ldap.DialWithDialer(d), ldap.DialWithTLSConfig(a.tlsConfig))
	if err != nil {
		return nil, fmt.Errorf("ldap %s: %w", a.url, err)
	}
	conn.SetTimeout(a.timeout)
	if a.startTLS {
		if err := conn.StartTLS(a.tlsConfig); err != nil {
			conn.Close()
			return nil, fmt.Errorf("ldap %s: StartTLS: %w", a.url, err)
		}
	}
	return conn, nil
}
