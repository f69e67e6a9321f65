package console

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"deskhost/internal/argon2id"
	"deskhost/internal/secretfile"
)

// Password is the console password, shared by every terminal's console: an argon2id hash
// from the host config, else the one set at the console on first use and kept in File
// (0600). Wrong guesses are slowed down and, after MaxFailures in a row, refused for
// LockoutFor, across all terminals: a serial line is often reachable through a BMC's
// serial-over-LAN.
type Password struct {
	// Hash is init.console.passwordHash ("" if the config sets none).
	Hash string
	// File keeps a password set at the console (on /perm).
	File string
	// Now is the clock (tests); Sleep waits after a wrong guess (tests make it instant).
	Now   func() time.Time
	Sleep func(time.Duration)

	mu       sync.Mutex
	failures int
	until    time.Time
}

// Limits of guessing and of a new password.
const (
	MaxFailures  = 5
	LockoutFor   = time.Minute
	WrongDelay   = 2 * time.Second
	MinPassword  = 8
	MaxPassword  = 128
	AutoLockIdle = 5 * time.Minute
)

// ErrWrongPassword is a wrong guess.
var ErrWrongPassword = errors.New("wrong password")

// LockedError is a console refusing guesses for a while.
type LockedError struct{ Until time.Time }

func (e *LockedError) Error() string {
	return fmt.Sprintf("%d wrong passwords in a row: try again in %s", MaxFailures, time.Until(e.Until).Round(time.Second))
}

func (p *Password) now() time.Time {
	if p.Now != nil {
		return p.Now()
	}
	return time.Now()
}

// hash returns the hash in force: the config's, else the file's. set is false when there
// is none yet; an unreadable or unsafe file is an error (and no password can be set
// over it).
func (p *Password) hash() (h string, set bool, err error) {
	if p.Hash != "" {
		return p.Hash, true, nil
	}
	if p.File == "" {
		return "", false, nil
	}
	s, err := secretfile.Read(p.File)
	if errors.Is(err, os.ErrNotExist) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	if err := argon2id.Check(s); err != nil {
		return "", false, fmt.Errorf("console password file %s: %w", p.File, err)
	}
	return s, true, nil
}

// State reports whether a password is set, and why none can be used.
func (p *Password) State() (set bool, err error) {
	_, set, err = p.hash()
	return set, err
}

// Check verifies a guess: nil when right, ErrWrongPassword (after a delay) when wrong,
// *LockedError while guesses are refused.
func (p *Password) Check(pw string) error {
	p.mu.Lock()
	if now := p.now(); now.Before(p.until) {
		until := p.until
		p.mu.Unlock()
		return &LockedError{until}
	}
	p.mu.Unlock()
	h, set, err := p.hash()
	if err != nil {
		return err
	}
	if !set {
		return errors.New("no console password is set")
	}
	ok, err := argon2id.Verify(h, pw)
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if ok {
		p.failures = 0
		return nil
	}
	p.failures++
	if p.failures >= MaxFailures {
		p.failures = 0
		p.until = p.now().Add(LockoutFor)
	}
	sleep := p.Sleep
	if sleep == nil {
		sleep = time.Sleep
	}
	p.mu.Unlock()
	sleep(WrongDelay)
	p.mu.Lock()
	return ErrWrongPassword
}

// Set sets the password on first use; once one is set (here or in the config) it is
// refused: changing it needs the old one (ChangeTo).
func (p *Password) Set(pw string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	_, set, err := p.hash()
	if err != nil {
		return err
	}
	if set {
		return errors.New("a console password is already set")
	}
	return p.write(pw)
}

// ChangeTo replaces the password set at the console (the caller checked the old one).
// A password from the host config cannot be changed here.
func (p *Password) ChangeTo(pw string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.Hash != "" {
		return errors.New("the console password comes from the host config (init.console.passwordHash); change it there")
	}
	return p.write(pw)
}

func (p *Password) write(pw string) error {
	if len(pw) < MinPassword || len(pw) > MaxPassword {
		return fmt.Errorf("a console password has %d to %d characters", MinPassword, MaxPassword)
	}
	if p.File == "" {
		return errors.New("nowhere to keep a console password")
	}
	h, err := argon2id.Hash(pw)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dirOf(p.File), 0o700); err != nil {
		return err
	}
	return secretfile.Write(p.File, h)
}

func dirOf(p string) string {
	for i := len(p) - 1; i > 0; i-- {
		if p[i] == '/' {
			return p[:i]
		}
	}
	return "."
}
