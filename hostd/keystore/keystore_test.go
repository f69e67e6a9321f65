package keystore

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"deskhost/hostd/store"
	"deskhost/internal/catalog"
)

func TestMasterFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), MasterFile)
	m1, err := LoadOrCreateMaster(path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("master key file: %v mode %v, want 0600", err, st.Mode())
	}
	if st, _ := os.Stat(filepath.Dir(path)); st.Mode().Perm() != 0o700 {
		t.Errorf("master key directory mode %v, want 0700", st.Mode().Perm())
	}
	k, err := m1.NewKey("alias/a", "", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := m1.NewDataKey(k, "ws-abcdefgh12")
	if err != nil {
		t.Fatal(err)
	}
	m2, err := LoadOrCreateMaster(path) // the same file: the same master key
	if err != nil {
		t.Fatal(err)
	}
	p1, err := m1.Passphrase(k, "ws-abcdefgh12", sealed)
	if err != nil {
		t.Fatal(err)
	}
	p2, err := m2.Passphrase(k, "ws-abcdefgh12", sealed)
	if err != nil || string(p1) != string(p2) || len(p1) != 64 {
		t.Fatalf("reloaded master: %v, passphrases %q %q", err, p1, p2)
	}
	// Another host's master key opens nothing.
	other, err := LoadOrCreateMaster(filepath.Join(t.TempDir(), "m.key"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Passphrase(k, "ws-abcdefgh12", sealed); err == nil {
		t.Fatal("another master key opened the data key")
	}
	// A data key is bound to its WorkSpace.
	if _, err := m1.Passphrase(k, "ws-zzzzzzzz12", sealed); err == nil {
		t.Fatal("a data key opened for another WorkSpace")
	}
	// A master key file its group may read is refused.
	if err := os.Chmod(path, 0o640); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateMaster(path); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("group-readable master key: %v", err)
	}
}

func TestKeysAndDataKeys(t *testing.T) {
	m, err := NewMaster(make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"alias/", "alias/has space", "alias/aws/workspaces", strings.Repeat("x", 300)} {
		if _, err := m.NewKey(bad, "", time.Now()); !catalog.IsError(err, catalog.InvalidParameterValues) {
			t.Errorf("alias %q: %v, want InvalidParameterValuesException", bad, err)
		}
	}
	k, err := m.NewKey("team-a", "d", time.Now())
	if err != nil || k.Alias != "alias/team-a" || !k.Enabled || !uuidRE.MatchString(k.ID) {
		t.Fatalf("NewKey: %v %+v", err, k)
	}
	sealed, err := m.NewDataKey(k, "ws-abcdefgh12")
	if err != nil {
		t.Fatal(err)
	}
	k2, _ := m.NewKey("", "", time.Now())
	if _, err := m.Passphrase(k2, "ws-abcdefgh12", sealed); err == nil {
		t.Fatal("another key opened the data key")
	}
	moved, err := m.Rewrap(k, "ws-abcdefgh12", "ws-newid00012", sealed)
	if err != nil {
		t.Fatal(err)
	}
	p1, _ := m.Passphrase(k, "ws-abcdefgh12", sealed)
	if p2, err := m.Passphrase(k, "ws-newid00012", moved); err != nil || string(p1) != string(p2) {
		t.Fatalf("rewrapped data key: %v", err)
	}
	k.Enabled = false
	var d *DisabledError
	if _, err := m.Passphrase(k, "ws-abcdefgh12", sealed); !errors.As(err, &d) {
		t.Fatalf("disabled key: %v", err)
	}
	if _, err := m.NewDataKey(k, "ws-abcdefgh13"); !errors.As(err, &d) {
		t.Fatalf("data key from a disabled key: %v", err)
	}

	st, err := store.OpenBolt(filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.Update(func(tx store.Tx) error { return errors.Join(Put(tx, k), Put(tx, k2)) }); err != nil {
		t.Fatal(err)
	}
	dup, _ := m.NewKey("team-a", "", time.Now())
	if err := st.Update(func(tx store.Tx) error { return Put(tx, dup) }); !catalog.IsError(err, catalog.ResourceAlreadyExists) {
		t.Fatalf("a second key with alias team-a: %v", err)
	}
	err = st.View(func(tx store.Tx) error {
		for _, ref := range []string{k.ID, "alias/team-a", "arn:aws:kms:local:000000000000:key/" + k.ID, "arn:aws:kms:us-east-1:123456789012:alias/team-a", k.ARN("local")} {
			got, err := Resolve(tx, ref)
			if err != nil || got.ID != k.ID {
				t.Errorf("Resolve(%q) = %v, %v", ref, got.ID, err)
			}
		}
		for _, ref := range []string{"alias/nope", "team-a", "00000000-0000-4000-8000-000000000000", "arn:aws:kms:local:1:key/nope", ""} {
			if _, err := Resolve(tx, ref); !errors.Is(err, ErrNotFound) {
				t.Errorf("Resolve(%q): %v, want ErrNotFound", ref, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestCheckValue: the check value tells one master key from another and survives a
// reload; a replaced master key is kept beside the new one.
func TestCheckValue(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, MasterFile)
	m1, err := LoadOrCreateMaster(path)
	if err != nil {
		t.Fatal(err)
	}
	again, err := LoadMaster(path)
	if err != nil {
		t.Fatal(err)
	}
	if !again.Matches(m1.CheckValue()) || len(m1.CheckValue()) != 32 {
		t.Fatal("the same master key, reloaded, does not match its check value")
	}
	m2, err := GenerateMaster()
	if err != nil {
		t.Fatal(err)
	}
	if m2.Matches(m1.CheckValue()) || m1.Matches(nil) {
		t.Fatal("another master key matches the check value")
	}
	if strings.Contains(string(m1.CheckValue()), m1.Hex()) {
		t.Fatal("the check value holds the key")
	}
	if p, err := ParseMaster(m1.Hex()); err != nil || !p.Matches(m1.CheckValue()) {
		t.Fatalf("parse what Hex writes: %v", err)
	}
	if _, err := ParseMaster("abcd"); err == nil {
		t.Fatal("a short master key parsed")
	}
	if _, err := LoadMaster(filepath.Join(dir, "none")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a missing master key: %v, want os.ErrNotExist", err)
	}

	now := time.Unix(1700000000, 0)
	old, err := ReplaceMaster(path, m2, now)
	if err != nil {
		t.Fatal(err)
	}
	if old != path+".replaced-1700000000" {
		t.Fatalf("the replaced master key went to %q", old)
	}
	if kept, err := LoadMaster(old); err != nil || !kept.Matches(m1.CheckValue()) {
		t.Fatalf("the replaced master key is not kept: %v", err)
	}
	if cur, err := LoadMaster(path); err != nil || !cur.Matches(m2.CheckValue()) {
		t.Fatalf("the new master key is not in place: %v", err)
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("the new master key file: %v", err)
	}
	fresh := filepath.Join(dir, "fresh", "master.key")
	if old, err := ReplaceMaster(fresh, m2, now); err != nil || old != "" {
		t.Fatalf("writing where there was none: %q %v", old, err)
	}
}
