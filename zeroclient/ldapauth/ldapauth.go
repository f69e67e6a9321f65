// Package ldapauth checks a password against an LDAP or Active Directory directory the way
// the guide's AD Connector does: a service account finds the user by name, then a bind as
// that user proves the password.
//
// Connections are kept between checks, because dialing (and binding the service account)
// costs more than the check itself:
//   - one service connection, bound as the service account, carries the searches (LDAP
//     multiplexes operations, so concurrent logins share it); it is never used to bind as
//     anyone else;
//   - a few bind connections carry the users' binds, one check at a time each. A bind
//     changes who a connection is (a failed one leaves it anonymous), so these connections
//     do nothing but binds: whatever identity one is left with is never used for anything,
//     and each bind's answer is read from its own response.
//
// A connection the directory has closed (a restart, an idle timeout) is found out on use:
// the operation is retried once on a fresh connection. A connection that saw anything but
// an LDAP result (a network error, a timeout) is closed, never reused.
package ldapauth

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"deskhost/internal/catalog"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-ldap/ldap/v3"
)

// ErrBadCredentials is an unknown user or a wrong password: callers must not tell them
// apart to the client.
var ErrBadCredentials = errors.New("unknown user name or wrong password")

// ErrWrongPassword is the ErrBadCredentials of a user the directory has: the caller may
// record who it was (an unknown name is kept out of logs: it is often a password).
var ErrWrongPassword = fmt.Errorf("wrong password: %w", ErrBadCredentials)

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

	mu      sync.Mutex
	service *ldap.Conn    // bound as the service account; searches only
	lastUse time.Time     // when service was last handed out
	dialing chan struct{} // closed when the service connection being dialed is ready or failed
	dialErr error         // how the last dial of the service connection ended
	idle    []idleConn    // bind connections not in use, most recently used last
	closed  bool
	dials   atomic.Int64 // connections dialed (tests)
}

type idleConn struct {
	conn *ldap.Conn
	used time.Time
}

const (
	// maxIdle bind connections are kept; more are dialed when logins overlap.
	maxIdle = 4
	// maxIdleTime: a connection idle longer is closed rather than used (directories drop
	// idle connections: Active Directory after 15 minutes by default).
	maxIdleTime = 2 * time.Minute
)

// New prepares an authenticator from a directory's LDAP settings (already validated).
func New(cfg *catalog.LDAP) (*Authenticator, error) {
	pw, err := cfg.Password()
	if err != nil {
		return nil, fmt.Errorf("ldap: service account: %w", err)
	}
	u, err := url.Parse(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("ldap: url %q: %w", cfg.URL, err)
	}
	if u.Scheme == "ldap" && !cfg.StartTLS && !cfg.AllowCleartext {
		return nil, fmt.Errorf("ldap: %s without startTLS would send passwords in cleartext (allowCleartext is not set)", cfg.URL)
	}
	a := &Authenticator{
		url: cfg.URL, startTLS: cfg.StartTLS, bindDN: cfg.BindDN, bindPW: pw, base: cfg.UserBase,
		attr: cfg.UserAttribute, filter: cfg.UserFilter, timeout: time.Duration(cfg.TimeoutSeconds) * time.Second,
	}
	if a.attr == "" {
		a.attr = catalog.DefaultLDAPUserAttribute
	}
	if a.filter == "" {
		a.filter = catalog.DefaultLDAPUserFilter
	}
	if a.timeout == 0 {
		a.timeout = catalog.DefaultLDAPTimeout * time.Second
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
	filter := fmt.Sprintf("(&%s(%s=%s))", a.filter, a.attr, ldap.EscapeFilter(name))
	res, err := a.search(ctx, ldap.NewSearchRequest(a.base, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 2,
		int(a.timeout/time.Second), false, filter, []string{a.attr, "givenName", "sn", "mail"}, nil))
	if err != nil {
		return User{}, err
	}
	if len(res.Entries) != 1 {
		// No such user (or an ambiguous name): still pay for one failing bind, so that the
		// directory's round trips do not tell this apart from a wrong password. Whatever it
		// answers, the answer is the same (a directory may well say "no such object" here,
		// which must not become a different message).
		_ = a.bind(ctx, a.attr+"=deskhost-no-such-user,"+a.base, password)
		return User{}, ErrBadCredentials
	}
	e := res.Entries[0]
	if err := a.bind(ctx, e.DN, password); err != nil {
		if err == ErrBadCredentials {
			err = ErrWrongPassword
		}
		return User{}, err
	}
	return User{DN: e.DN, Name: e.GetAttributeValue(a.attr), GivenName: e.GetAttributeValue("givenName"),
		Surname: e.GetAttributeValue("sn"), Email: e.GetAttributeValue("mail")}, nil
}

// search runs req on the service connection, dialing and binding it when there is none or
// the directory has closed it.
func (a *Authenticator) search(ctx context.Context, req *ldap.SearchRequest) (*ldap.SearchResult, error) {
	for attempt := 0; ; attempt++ {
		conn, fresh, err := a.serviceConn(ctx)
		if err != nil {
			return nil, err
		}
		res, err := conn.Search(req)
		if err == nil || ldap.IsErrorWithCode(err, ldap.LDAPResultSizeLimitExceeded) {
			if res == nil {
				res = &ldap.SearchResult{}
			}
			return res, nil
		}
		if isResult(err) {
			return nil, fmt.Errorf("ldap %s: search %s: %w", a.url, req.Filter, err)
		}
		a.dropService(conn)
		if fresh || attempt > 0 {
			return nil, fmt.Errorf("ldap %s: search %s: %w", a.url, req.Filter, err)
		}
		// A kept connection the directory had closed: once more on a new one.
	}
}

// serviceConn returns the service connection, dialing and binding it if needed. Logins
// that need it while it is being dialed wait for that dial and share its outcome, so a
// directory that is down costs one timeout, not one per waiting login in turn.
func (a *Authenticator) serviceConn(ctx context.Context) (conn *ldap.Conn, fresh bool, err error) {
	a.mu.Lock()
	for {
		if a.closed {
			a.mu.Unlock()
			return nil, false, fmt.Errorf("ldap %s: closed", a.url)
		}
		// Idle past maxIdleTime, the connection is redialed rather than trusted: nothing
		// can be using it, and a directory or firewall may have dropped it silently.
		if a.service != nil && !a.service.IsClosing() && time.Since(a.lastUse) < maxIdleTime {
			conn := a.service
			a.lastUse = time.Now()
			a.mu.Unlock()
			return conn, false, nil
		}
		if a.dialing == nil {
			break
		}
		wait := a.dialing
		a.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return nil, false, fmt.Errorf("ldap %s: %w", a.url, ctx.Err())
		}
		a.mu.Lock()
		if a.service == nil && a.dialErr != nil {
			err := a.dialErr
			a.mu.Unlock()
			return nil, false, err
		}
	}
	old := a.service
	a.service = nil
	done := make(chan struct{})
	a.dialing = done
	a.mu.Unlock()
	if old != nil {
		old.Close()
	}

	conn, err = a.dial(ctx)
	if err == nil {
		if berr := conn.Bind(a.bindDN, a.bindPW); berr != nil {
			conn.Close()
			conn, err = nil, fmt.Errorf("ldap %s: service account bind as %s: %w", a.url, a.bindDN, berr)
		}
	}
	a.mu.Lock()
	a.dialing, a.dialErr = nil, err
	if err == nil && a.closed {
		conn.Close()
		conn, err = nil, fmt.Errorf("ldap %s: closed", a.url)
	}
	a.service, a.lastUse = conn, time.Now()
	close(done)
	a.mu.Unlock()
	return conn, true, err
}

func (a *Authenticator) dropService(conn *ldap.Conn) {
	a.mu.Lock()
	if a.service == conn {
		a.service = nil
	}
	a.mu.Unlock()
	conn.Close()
}

// bind checks dn's password on a bind connection: nil, ErrBadCredentials, or another error
// when the directory cannot say.
func (a *Authenticator) bind(ctx context.Context, dn, password string) error {
	for attempt := 0; ; attempt++ {
		conn, fresh, err := a.bindConn(ctx)
		if err != nil {
			return err
		}
		err = conn.Bind(dn, password)
		switch {
		case err == nil:
			a.putBindConn(conn)
			return nil
		case ldap.IsErrorWithCode(err, ldap.LDAPResultInvalidCredentials):
			a.putBindConn(conn) // anonymous now, and only ever used for binds
			return ErrBadCredentials
		case isResult(err):
			a.putBindConn(conn)
			return fmt.Errorf("ldap %s: bind as %s: %w", a.url, dn, err)
		}
		conn.Close()
		if fresh || attempt > 0 {
			return fmt.Errorf("ldap %s: bind as %s: %w", a.url, dn, err)
		}
	}
}

// bindConn takes an idle bind connection or dials one; fresh reports a new one.
func (a *Authenticator) bindConn(ctx context.Context) (conn *ldap.Conn, fresh bool, err error) {
	var stale []*ldap.Conn
	defer func() {
		for _, c := range stale {
			c.Close()
		}
	}()
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return nil, false, fmt.Errorf("ldap %s: closed", a.url)
	}
	for len(a.idle) > 0 {
		ic := a.idle[len(a.idle)-1]
		a.idle = a.idle[:len(a.idle)-1]
		if time.Since(ic.used) < maxIdleTime && !ic.conn.IsClosing() {
			a.mu.Unlock()
			return ic.conn, false, nil
		}
		stale = append(stale, ic.conn)
	}
	a.mu.Unlock()
	conn, err = a.dial(ctx)
	return conn, true, err
}

func (a *Authenticator) putBindConn(conn *ldap.Conn) {
	a.mu.Lock()
	keep := !a.closed && len(a.idle) < maxIdle && !conn.IsClosing()
	if keep {
		a.idle = append(a.idle, idleConn{conn, time.Now()})
	}
	a.mu.Unlock()
	if !keep {
		conn.Close()
	}
}

// Close closes the kept connections.
func (a *Authenticator) Close() {
	a.mu.Lock()
	a.closed = true
	conns := []*ldap.Conn{}
	if a.service != nil {
		conns = append(conns, a.service)
		a.service = nil
	}
	for _, ic := range a.idle {
		conns = append(conns, ic.conn)
	}
	a.idle = nil
	a.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

// isResult reports whether err is the directory's answer (an LDAP result code), as opposed
// to a failure to get one (network, timeout, closed connection), after which the
// connection's state is unknown.
func isResult(err error) bool {
	var le *ldap.Error
	if !errors.As(err, &le) {
		return false
	}
	return le.ResultCode < ldap.ErrorNetwork
}

func (a *Authenticator) dial(ctx context.Context) (*ldap.Conn, error) {
	a.dials.Add(1)
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
