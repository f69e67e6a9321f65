package console

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/argon2"
)

// fuzzTerm feeds the fuzzer's bytes to the console in small reads, then only times out;
// what the console writes is discarded.
type fuzzTerm struct {
	mu       sync.Mutex
	in       []byte
	deadline time.Time
}

func (f *fuzzTerm) Read(b []byte) (int, error) {
	f.mu.Lock()
	if len(f.in) > 0 {
		n := copy(b[:min(len(b), 1+len(f.in)%7)], f.in)
		f.in = f.in[n:]
		f.mu.Unlock()
		return n, nil
	}
	d := time.Until(f.deadline)
	f.mu.Unlock()
	if d > 0 {
		time.Sleep(min(d, 5*time.Millisecond))
	}
	return 0, os.ErrDeadlineExceeded
}

func (f *fuzzTerm) Write(b []byte) (int, error) { return len(b), nil }

func (f *fuzzTerm) SetReadDeadline(t time.Time) error {
	f.mu.Lock()
	f.deadline = t
	f.mu.Unlock()
	return nil
}

func (f *fuzzTerm) drained() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.in) == 0
}

// cheapHash is an argon2id hash with the smallest parameters, so a fuzz run spends its
// time in the console rather than in argon2.
func cheapHash(pw string) string {
	salt := make([]byte, 16)
	rand.Read(salt)
	key := argon2.IDKey([]byte(pw), salt, 1, 8, 1, 32)
	b := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=19$m=8,t=1,p=1$%s$%s", b.EncodeToString(salt), b.EncodeToString(key))
}

// FuzzConsoleInput types arbitrary bytes at a console whose password the fuzzer does not
// know: whatever it types, the console never panics, and nothing that changes the host
// (restart, address, WorkSpace action, power, factory reset, shell, a new password)
// happens.
func FuzzConsoleInput(f *testing.F) {
	for _, s := range []string{
		"5", "6y\r", "8RESET\r", "2", "22y\r", "1s\r10.0.0.2/24\r\ry\r", "1d\ry\r", "4", "41r\ry\r",
		"3bgGkjq", "5wrong\r5wrong\r5wrong\r5wrong\r5wrong\r5wrong\r", "P", "L", "\x1b[A\x1b[B\x1bO", "\x0c", "\x03\x15\x7f",
		"5" + string(make([]byte, 300)), "1\x1b", "8reset\r",
	} {
		f.Add([]byte(s))
	}
	secret := make([]byte, 18)
	rand.Read(secret)
	hash := cheapHash(base64.RawURLEncoding.EncodeToString(secret))
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) > 2000 {
			in = in[:2000]
		}
		file := filepath.Join(t.TempDir(), "console-password")
		os.WriteFile(file, []byte(hash+"\n"), 0o600)
		h := &fakeHost{mgmt: Management{DHCP: true}, shellOn: true,
			password: &Password{File: file, Sleep: func(time.Duration) {}}}
		term := &fuzzTerm{in: append([]byte(nil), in...)}
		c := New(term, h, "ttyS0")
		c.refresh = time.Millisecond
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- c.Run(ctx) }()
		deadline := time.Now().Add(5 * time.Second)
		for (!term.drained() || len(c.keys) > 0) && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		time.Sleep(5 * time.Millisecond) // the last key's action
		cancel()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("the console did not stop when its context ended")
		}
		if n := h.changes(); n != 0 {
			t.Fatalf("%q changed the host %d times without the password (restarts %v, power %v, actions %v, shells %d, addresses %d)",
				in, n, h.restarts, h.power, h.actions, h.shells, h.mgmtSets)
		}
		if b, _ := os.ReadFile(file); string(b) != hash+"\n" {
			t.Fatalf("%q replaced the console password", in)
		}
	})
}

// FuzzDecode: key decoding never reads past its input, always makes progress once the
// line is quiet, and never turns bytes into a key twice.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{"\r\n", "\x1b[A", "\x1b[", "\x1bO", "\x1b", "q", "\x1b[1;5~", "\xff", "\r\x00"} {
		f.Add([]byte(s), true)
		f.Add([]byte(s), false)
	}
	f.Fuzz(func(t *testing.T, b []byte, timedOut bool) {
		for len(b) > 0 {
			k, used := decode(b, timedOut)
			if used < 0 || used > len(b) {
				t.Fatalf("used %d of %d bytes", used, len(b))
			}
			if used == 0 {
				if timedOut {
					t.Fatalf("no progress on %q after a timeout", b)
				}
				if k != nil {
					t.Fatal("a key without consuming input")
				}
				return
			}
			b = b[used:]
		}
	})
}
