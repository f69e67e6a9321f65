package credstore

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestPasswords(t *testing.T) {
	h, err := HashPassword("Corr3ct-Horse!")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Errorf("hash %q is not argon2id in PHC form", h)
	}
	h2, _ := HashPassword("Corr3ct-Horse!")
	if h == h2 {
		t.Error("two hashes of one password are equal: no salt")
	}
	for _, tc := range []struct {
		hash, pw string
		ok       bool
	}{{h, "Corr3ct-Horse!", true}, {h, "corr3ct-horse!", false}, {h, "", false}, {"", "Corr3ct-Horse!", false},
		{"$argon2id$v=19$m=1,t=1,p=1$@@$@@", "x", false}, {"$2y$10$bcrypt", "x", false}} {
		if VerifyPassword(tc.hash, tc.pw) != tc.ok {
			t.Errorf("VerifyPassword(%.20q, %q) != %v", tc.hash, tc.pw, tc.ok)
		}
	}
}

func TestActivationAndLockouts(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "creds.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("store mode %v, want 0600", fi.Mode().Perm())
	}
	now := time.Date(2026, 1, 1, 9, 0, 0, 0, time.UTC)
	old, _ := s.NewActivation("d-1", "alice", time.Hour, now)
	code, _ := s.NewActivation("d-1", "Alice", time.Hour, now)
	set := func(string, string) (Credential, error) { return Credential{Hash: "h"}, nil }
	if _, _, err := s.Activate(old, now, set); !errors.Is(err, ErrNoActivation) {
		t.Error("an earlier code still works after a new one")
	}
	refuse := errors.New("policy says no")
	if _, _, err := s.Activate(code, now, func(string, string) (Credential, error) { return Credential{}, refuse }); !errors.Is(err, refuse) {
		t.Fatal(err)
	}
	if _, ok, _ := s.Credential("d-1", "alice"); ok {
		t.Error("a refused activation stored a credential")
	}
	if _, _, err := s.Activate(code, now.Add(2*time.Hour), set); !errors.Is(err, ErrNoActivation) {
		t.Error("an expired code worked")
	}
	if d, u, err := s.Activate(strings.ToLower(code), now, set); err != nil || d != "d-1" || u != "Alice" {
		t.Errorf("activate: %s %s %v", d, u, err)
	}
	if c, ok, _ := s.Credential("d-1", "ALICE"); !ok || c.Hash != "h" {
		t.Error("credential not stored under the case-insensitive name")
	}
	if _, _, err := s.Activate(code, now, set); !errors.Is(err, ErrNoActivation) {
		t.Error("a code worked twice")
	}
	// TOTP steps are used once.
	if fresh, _ := s.UseTOTPStep("d-1", "alice", 100); !fresh {
		t.Error("first use refused")
	}
	if fresh, _ := s.UseTOTPStep("d-1", "alice", 100); fresh {
		t.Error("a TOTP step was accepted twice")
	}
	// Lockout records.
	s.UpdateLockouts([]string{"d-1/alice/192.0.2.1", "d-1/alice/192.0.2.2"}, func(r []*Lockout) bool {
		r[0].Failures = append(r[0].Failures, now)
		r[1].Until = now
		return true
	})
	s.UpdateLockouts([]string{"d-1/alicia/192.0.2.2"}, func(r []*Lockout) bool { r[0].Until = now; return true })
	// fn returning false writes nothing.
	s.UpdateLockouts([]string{"d-1/carol/192.0.2.2"}, func(r []*Lockout) bool { r[0].Until = now; return false })
	if l, _ := s.ReadLockout("d-1/carol/192.0.2.2"); !l.Until.IsZero() {
		t.Error("a refused update was written")
	}
	if n, _ := s.ClearLockouts("d-1/alice/"); n != 2 {
		t.Errorf("cleared %d records, want 2 (alicia is another user)", n)
	}
	if l, _ := s.ReadLockout("d-1/alicia/192.0.2.2"); l.Until.IsZero() {
		t.Error("another user's lockout was cleared")
	}
}

// TestSweepLockouts: records the caller calls dead go, in batches, the others stay.
func TestSweepLockouts(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "creds.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	now := time.Date(2026, 1, 1, 9, 0, 0, 0, time.UTC)
	const n = 2*sweepBatch + 17
	for i := 0; i < n; i++ {
		at := now
		if i%3 == 0 {
			at = now.Add(-time.Hour) // dead
		}
		key := fmt.Sprintf("d-1/user%05d/192.0.2.1", i)
		if err := s.UpdateLockouts([]string{key}, func(r []*Lockout) bool { r[0].Failures = []time.Time{at}; return true }); err != nil {
			t.Fatal(err)
		}
	}
	swept, err := s.SweepLockouts(func(l Lockout) bool { return l.Failures[0].Before(now.Add(-time.Minute)) })
	if err != nil {
		t.Fatal(err)
	}
	left, _ := s.LockoutCount()
	if want := (n + 2) / 3; swept != want || left != n-want {
		t.Errorf("swept %d, %d left; want %d swept, %d left", swept, left, want, n-want)
	}
}

// TestLockoutFile: lockout records live in a file of their own beside the credentials
// (0600); a damaged one (what a power loss may leave, as it is written without fsync) is
// set aside and started afresh, the credentials untouched.
func TestLockoutFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "credentials.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	s.SetCredential("d-1", "alice", Credential{Hash: "h"})
	s.UpdateLockouts([]string{"d-1/alice/192.0.2.1"}, func(r []*Lockout) bool { r[0].Until = time.Now().Add(time.Hour); return true })
	s.Close()
	lp := LockoutPath(path)
	if fi, err := os.Stat(lp); err != nil || fi.Mode().Perm() != 0o600 || !strings.HasSuffix(lp, "credentials.lockouts.db") {
		t.Fatalf("lockout file %s: %v", lp, err)
	}
	if err := os.WriteFile(lp, []byte(strings.Repeat("damaged ", 1024)), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err = Open(path)
	if err != nil {
		t.Fatalf("open with a damaged lockout file: %v", err)
	}
	defer s.Close()
	if l, err := s.ReadLockout("d-1/alice/192.0.2.1"); err != nil || !l.Until.IsZero() {
		t.Errorf("after a damaged lockout file: %+v %v", l, err)
	}
	if _, err := os.Stat(lp + ".damaged"); err != nil {
		t.Errorf("the damaged file was not set aside: %v", err)
	}
	if c, ok, _ := s.Credential("d-1", "alice"); !ok || c.Hash != "h" {
		t.Error("the credentials did not survive")
	}
}
