package auth

import (
	"context"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"deskhost/internal/catalog"
	"deskhost/zeroclient/credstore"
	"deskhost/zeroclient/policy"
)

func TestResolve(t *testing.T) {
	s, err := New(Config{Directories: []catalog.Directory{
		{ID: "d-0000000001", Name: "corp.example.com", Alias: "corp-alias"},
		{ID: "d-0000000002", Name: "lab.example.org", Login: catalog.Login{NetBIOSName: "LABNET"}},
		{ID: "d-0000000003", Name: "gone.example.com", Login: catalog.Login{Deregistered: true}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ user, domain, dir, name string }{
		{`CORP\alice`, "", "d-0000000001", "alice"},
		{`corp.example.com\alice`, "", "d-0000000001", "alice"},
		{"alice", "corp.example.com", "d-0000000001", "alice"},
		{"alice", "CORP-ALIAS", "d-0000000001", "alice"},
		{`LABNET\bob`, "", "d-0000000002", "bob"},
		{"bob", "lab", "", "bob"},        // the default NetBIOS name is LAB only without netbiosName
		{"alice", "", "", "alice"},       // two registered directories: a bare name is ambiguous
		{`GONE\ivan`, "", "", "ivan"},    // deregistered
		{`OTHER\alice`, "", "", "alice"}, // unknown domain
		{`CORP\`, "", "", ""},            // no user
		{`CORP\a\b`, "", "", ""},
	} {
		d, name := s.Resolve(tc.user, tc.domain)
		got := ""
		if d != nil {
			got = d.ID
		}
		if got != tc.dir || (tc.dir != "" && name != tc.name) {
			t.Errorf("Resolve(%q, %q) = %s %q, want %s %q", tc.user, tc.domain, got, name, tc.dir, tc.name)
		}
	}
	if _, err := New(Config{Directories: []catalog.Directory{{ID: "d-0000000009", Name: "x.y", Login: catalog.Login{Type: catalog.TypeLDAP}}}}); err == nil {
		t.Error("an invalid login block was accepted")
	}
}

func TestTOTP(t *testing.T) {
	secret, uri, err := NewTOTPSecret("deskhost corp", "alice@corp")
	if err != nil || secret == "" || uri == "" {
		t.Fatal(err)
	}
	now := time.Date(2026, 1, 1, 9, 0, 10, 0, time.UTC)
	code, _ := TOTPCode(secret, now)
	for _, tc := range []struct {
		at time.Time
		ok bool
	}{{now, true}, {now.Add(30 * time.Second), true}, {now.Add(-30 * time.Second), true}, {now.Add(90 * time.Second), false}} {
		if _, ok := CheckTOTP(secret, code, tc.at); ok != tc.ok {
			t.Errorf("code from %s checked at %s: %v", now, tc.at, ok)
		}
	}
	if _, ok := CheckTOTP(secret, "12345", now); ok {
		t.Error("a 5-digit code was accepted")
	}
}

// TestFailsClosedWhenLockoutsCannotBeWritten: with a credential store that cannot be
// written (here opened read-only: what a full /perm does to every write), no login is
// checked: a failure could not be counted, so the right password is refused as well as a
// wrong one, and both answers are the same. (Letting a right password through while wrong
// ones go uncounted would be unlimited guessing.)
func TestFailsClosedWhenLockoutsCannotBeWritten(t *testing.T) {
	path := filepath.Join(t.TempDir(), "creds.db")
	w, err := credstore.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	hash, _ := credstore.HashPassword("Corr3ct-Horse!")
	w.SetCredential("d-0000000001", "alice", credstore.Credential{Hash: hash})
	w.Close()
	ro, err := credstore.OpenReadOnly(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	dirs := []catalog.Directory{{ID: "d-0000000001", Name: "corp.example.com", Users: []catalog.User{{UserName: "alice"}}}}
	s, err := New(Config{Directories: dirs, Creds: ro, Lockout: &policy.Lockout{Failures: 5, Window: time.Minute, Duration: time.Minute, Store: ro, Now: time.Now}})
	if err != nil {
		t.Fatal(err)
	}
	from := netip.MustParseAddr("192.0.2.1")
	dir, user := s.Resolve("alice", "")
	for _, pw := range []string{"Corr3ct-Horse!", "wrong-Passw0rd"} {
		if r := s.Password(context.Background(), dir, user, pw, from); r.Outcome != Unavailable {
			t.Errorf("password %q with an unwritable lockout store: outcome %v (%s), want Unavailable", pw, r.Outcome, r.Reason)
		}
	}
	// The same store, writable: the right password gets in (the refusal was the store's).
	ro.Close()
	w, err = credstore.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	s2, _ := New(Config{Directories: dirs, Creds: w, Lockout: &policy.Lockout{Failures: 5, Window: time.Minute, Duration: time.Minute, Store: w, Now: time.Now}})
	dir, user = s2.Resolve("alice", "")
	if r := s2.Password(context.Background(), dir, user, "Corr3ct-Horse!", from); r.Outcome != OK {
		t.Errorf("writable store: %v %s", r.Outcome, r.Reason)
	}
}

// TestUpdate: a new catalog replaces the directories at once; a directory whose LDAP
// settings did not change keeps its kept connection; an invalid directory is left out
// while the others take effect; access changes are reported so live sessions get checked.
func TestUpdate(t *testing.T) {
	ldapDir := catalog.Directory{ID: "d-0000000001", Name: "corp.example.com", Login: catalog.Login{Type: catalog.TypeLDAP,
		LDAP: &catalog.LDAP{URL: "ldap://127.0.0.1:1", AllowCleartext: true, BindDN: "cn=svc", BindPassword: "pw", UserBase: "dc=corp"}}}
	s, err := New(Config{Directories: []catalog.Directory{ldapDir}})
	if err != nil {
		t.Fatal(err)
	}
	before := s.ByID("d-0000000001")
	same := ldapDir
	same.Users = []catalog.User{{UserName: "alice"}}
	changed, err := s.Update([]catalog.Directory{same})
	if err != nil || changed {
		t.Fatalf("same access: changed %v, err %v", changed, err)
	}
	after := s.ByID("d-0000000001")
	if after == before || after.ldap != before.ldap || len(after.Users) != 1 {
		t.Errorf("the LDAP connection was not kept, or the users not updated")
	}
	// Web Access withdrawn (or granted) is an access change: live web sessions get checked.
	web := same
	web.Login.DeviceAccess.Web = catalog.Allow
	if changed, err := s.Update([]catalog.Directory{web}); err != nil || !changed {
		t.Fatalf("device access changed: changed %v, err %v", changed, err)
	}
	grouped := same
	grouped.Login.IPGroups = []catalog.IPGroup{{ID: "wsipg-a1bcd2efg"}}
	bad := catalog.Directory{ID: "d-0000000002", Name: "bad.example.com", Login: catalog.Login{Type: catalog.TypeLDAP}}
	changed, err = s.Update([]catalog.Directory{grouped, bad})
	if err == nil || !strings.Contains(err.Error(), "d-0000000002") || !changed {
		t.Fatalf("changed %v, err %v", changed, err)
	}
	if s.ByID("d-0000000002") != nil || len(s.ByID("d-0000000001").Login.IPGroups) != 1 {
		t.Errorf("directories after a partly bad update: %v", s.Directories())
	}
	if changed, _ := s.Update(nil); !changed || s.ByID("d-0000000001") != nil {
		t.Errorf("a directory gone from the catalog is still known (changed %v)", changed)
	}
}
