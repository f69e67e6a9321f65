package ldapauth

import (
	"context"
	"errors"
	"strings"
	"testing"

	"deskhost/internal/catalog"
	"deskhost/zeroclient/internal/testsvc"
)

func TestAgainstSlapd(t *testing.T) {
	l := testsvc.Slapd(t, "corp.example.com", []testsvc.LDAPUser{
		{UID: "alice", Password: "Corr3ct-Horse", GivenName: "Alice"},
		{UID: "bob", Password: "B0b-secret!"},
	})
	a, err := New(&catalog.LDAP{URL: l.URL, StartTLS: true, CAFile: l.CAFile, BindDN: l.ServiceDN, BindPassword: l.ServicePassword,
		UserBase: l.UserBase, UserAttribute: "uid", UserFilter: "(objectClass=inetOrgPerson)"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	u, err := a.Authenticate(ctx, "alice", "Corr3ct-Horse")
	if err != nil {
		t.Fatalf("right password: %v", err)
	}
	if u.Name != "alice" || u.GivenName != "Alice" || !strings.HasPrefix(u.DN, "uid=alice,") {
		t.Errorf("user: %+v", u)
	}
	for _, tc := range []struct{ name, pw string }{
		{"alice", "wrong"},
		{"alice", "corr3ct-horse"}, // case matters in passwords
		{"mallory", "Corr3ct-Horse"},
		{"alice", ""}, // an empty password must never become an unauthenticated bind
		{"*", "Corr3ct-Horse"},
		{"alice)(uid=*", "Corr3ct-Horse"},
	} {
		if _, err := a.Authenticate(ctx, tc.name, tc.pw); !errors.Is(err, ErrBadCredentials) {
			t.Errorf("Authenticate(%q, %q) = %v, want ErrBadCredentials", tc.name, tc.pw, err)
		}
	}
	// A wrong service account is an operator problem, not a user's bad password.
	bad, _ := New(&catalog.LDAP{URL: l.URL, StartTLS: true, CAFile: l.CAFile, BindDN: l.ServiceDN, BindPassword: "nope", UserBase: l.UserBase, UserAttribute: "uid"})
	if _, err := bad.Authenticate(ctx, "alice", "Corr3ct-Horse"); err == nil || errors.Is(err, ErrBadCredentials) || !strings.Contains(err.Error(), "service account") {
		t.Errorf("wrong service password: %v", err)
	}
	// An unreachable directory says so.
	down, _ := New(&catalog.LDAP{URL: "ldap://127.0.0.1:1", StartTLS: true, BindDN: l.ServiceDN, BindPassword: "x", UserBase: l.UserBase, TimeoutSeconds: 1})
	if _, err := down.Authenticate(ctx, "alice", "Corr3ct-Horse"); err == nil || errors.Is(err, ErrBadCredentials) {
		t.Errorf("unreachable directory: %v", err)
	}
}

// TestKeptConnections: checks reuse the service connection and the bind connections
// (a check does not dial); what a bind connection was last bound as never lets a wrong
// password or an unknown user through; a directory restart closes every kept connection
// and the next check gets in on fresh ones.
func TestKeptConnections(t *testing.T) {
	l := testsvc.Slapd(t, "corp.example.com", []testsvc.LDAPUser{
		{UID: "alice", Password: "Corr3ct-Horse"},
		{UID: "bob", Password: "B0b-secret!"},
	})
	a, err := New(&catalog.LDAP{URL: l.URL, StartTLS: true, CAFile: l.CAFile, BindDN: l.ServiceDN, BindPassword: l.ServicePassword,
		UserBase: l.UserBase, UserAttribute: "uid", UserFilter: "(objectClass=inetOrgPerson)"})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	ctx := context.Background()
	check := func(name, pw string, ok bool) {
		t.Helper()
		_, err := a.Authenticate(ctx, name, pw)
		if ok && err != nil {
			t.Fatalf("Authenticate(%q) with the right password: %v", name, err)
		}
		if !ok && !errors.Is(err, ErrBadCredentials) {
			t.Fatalf("Authenticate(%q, %q) = %v, want ErrBadCredentials", name, pw, err)
		}
	}
	check("alice", "Corr3ct-Horse", true)
	dials := a.dials.Load() // the service connection and one bind connection
	for i := 0; i < 5; i++ {
		// Right after alice's bind succeeded on the kept connection: bob's wrong password,
		// alice's wrong password, an unknown user with alice's password.
		check("alice", "Corr3ct-Horse", true)
		check("bob", "Corr3ct-Horse", false)
		check("alice", "wrong", false)
		check("alice", "Corr3ct-Horse", true)
		check("mallory", "Corr3ct-Horse", false)
		check("bob", "B0b-secret!", true)
	}
	if n := a.dials.Load(); n != dials || n > 2 {
		t.Errorf("%d connections dialed for 31 sequential checks", n)
	}
	l.Restart(t)
	check("alice", "Corr3ct-Horse", true)
	check("alice", "wrong", false)
	check("mallory", "Corr3ct-Horse", false)
	// Concurrent checks share the service connection and each take a bind connection.
	errs := make(chan error, 16)
	for i := 0; i < 16; i++ {
		go func() {
			_, err := a.Authenticate(ctx, "bob", "B0b-secret!")
			errs <- err
		}()
	}
	for i := 0; i < 16; i++ {
		if err := <-errs; err != nil {
			t.Errorf("concurrent check: %v", err)
		}
	}
	check("bob", "wrong", false)
}

// TestCleartext: an ldap:// URL without StartTLS is refused unless the login settings
// allow cleartext; with StartTLS, the password goes over TLS verified against the
// directory's CA (a wrong CA fails the check instead of sending it).
func TestCleartext(t *testing.T) {
	l := testsvc.Slapd(t, "corp.example.com", []testsvc.LDAPUser{{UID: "alice", Password: "Corr3ct-Horse"}})
	cfg := catalog.LDAP{URL: l.URL, BindDN: l.ServiceDN, BindPassword: l.ServicePassword, UserBase: l.UserBase, UserAttribute: "uid"}
	if _, err := New(&cfg); err == nil || !strings.Contains(err.Error(), "cleartext") {
		t.Errorf("ldap:// without StartTLS: %v", err)
	}
	wrongCA := cfg
	wrongCA.StartTLS, wrongCA.CAFile = true, testsvc.Slapd(t, "other.example.com", nil).CAFile
	a, err := New(&wrongCA)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if _, err := a.Authenticate(context.Background(), "alice", "Corr3ct-Horse"); err == nil || errors.Is(err, ErrBadCredentials) {
		t.Errorf("StartTLS with a certificate from another CA: %v", err)
	}
	// Allowed explicitly, the check runs (and this slapd, like a careful directory, refuses
	// a simple bind that is not protected: the directory is unavailable, not a bad password).
	clear := cfg
	clear.AllowCleartext = true
	c, err := New(&clear)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Authenticate(context.Background(), "alice", "Corr3ct-Horse"); err == nil || errors.Is(err, ErrBadCredentials) {
		t.Errorf("cleartext bind to a directory that requires TLS: %v", err)
	}
}
