package ldapauth

import (
	"context"
	"errors"
	"strings"
	"testing"

	"deskhost/hostd/directory"
	"deskhost/zeroclient/internal/testsvc"
)

func TestAgainstSlapd(t *testing.T) {
	l := testsvc.Slapd(t, "corp.example.com", []testsvc.LDAPUser{
		{UID: "alice", Password: "Corr3ct-Horse", GivenName: "Alice"},
		{UID: "bob", Password: "B0b-secret!"},
	})
	a, err := New(&directory.LDAP{URL: l.URL, BindDN: l.ServiceDN, BindPassword: l.ServicePassword,
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
	bad, _ := New(&directory.LDAP{URL: l.URL, BindDN: l.ServiceDN, BindPassword: "nope", UserBase: l.UserBase, UserAttribute: "uid"})
	if _, err := bad.Authenticate(ctx, "alice", "Corr3ct-Horse"); err == nil || errors.Is(err, ErrBadCredentials) || !strings.Contains(err.Error(), "service account") {
		t.Errorf("wrong service password: %v", err)
	}
	// An unreachable directory says so.
	down, _ := New(&directory.LDAP{URL: "ldap://127.0.0.1:1", BindDN: l.ServiceDN, BindPassword: "x", UserBase: l.UserBase, TimeoutSeconds: 1})
	if _, err := down.Authenticate(ctx, "alice", "Corr3ct-Horse"); err == nil || errors.Is(err, ErrBadCredentials) {
		t.Errorf("unreachable directory: %v", err)
	}
}
