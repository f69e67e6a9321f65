package console

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"deskhost/internal/argon2id"
)

func TestPassword(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	slept := time.Duration(0)
	p := &Password{File: filepath.Join(t.TempDir(), "init", "console-password"), Now: func() time.Time { return now },
		Sleep: func(d time.Duration) { slept += d }}
	if set, err := p.State(); set || err != nil {
		t.Fatalf("fresh: %v %v", set, err)
	}
	if err := p.Set("short"); err == nil {
		t.Error("a 5-character password was set")
	}
	if err := p.Set("long enough"); err != nil {
		t.Fatal(err)
	}
	if err := p.Set("another one"); err == nil {
		t.Error("Set replaced a password that was set")
	}
	if err := p.Check("long enough"); err != nil {
		t.Fatal(err)
	}
	// Wrong guesses: each waits, the fifth in a row locks guessing for LockoutFor.
	for i := 0; i < MaxFailures; i++ {
		if err := p.Check("nope"); !errors.Is(err, ErrWrongPassword) {
			t.Fatalf("guess %d: %v", i, err)
		}
	}
	if slept != MaxFailures*WrongDelay {
		t.Errorf("slept %v", slept)
	}
	var le *LockedError
	if err := p.Check("long enough"); !errors.As(err, &le) {
		t.Fatalf("during the lockout the right password: %v", err)
	}
	now = now.Add(LockoutFor + time.Second)
	if err := p.Check("long enough"); err != nil {
		t.Fatalf("after the lockout: %v", err)
	}
	if err := p.ChangeTo("a new password"); err != nil || p.Check("a new password") != nil {
		t.Errorf("change: %v", err)
	}
	// A file its group may read is refused, naming it, and nothing can be set over it.
	os.Chmod(p.File, 0o640)
	if _, err := p.State(); err == nil || !strings.Contains(err.Error(), p.File) {
		t.Errorf("group-readable file: %v", err)
	}
	if err := p.Set("long enough"); err == nil {
		t.Error("a password was set over an unsafe file")
	}
	// The config's hash wins and cannot be changed on the console.
	h, _ := argon2id.Hash("from the config")
	c := &Password{Hash: h, File: p.File, Sleep: func(time.Duration) {}}
	if err := c.Check("from the config"); err != nil {
		t.Error(err)
	}
	if err := c.ChangeTo("whatever else"); err == nil || !strings.Contains(err.Error(), "host config") {
		t.Errorf("changing the config's password: %v", err)
	}
}
