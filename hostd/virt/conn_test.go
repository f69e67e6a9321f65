package virt

import (
	"context"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestDialGivesUpOnSilentLibvirtd: a libvirtd that accepts connections but never answers
// (as one still initialising its drivers does) holds Dial no longer than its context,
// and the error says so.
func TestDialGivesUpOnSilentLibvirtd(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "libvirt-sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var mu sync.Mutex
	var held []net.Conn
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			c.Close()
		}
	}()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c) // read nothing, answer nothing
			mu.Unlock()
		}
	}()
	// Each unanswered connection is replaced after connectAttempt.
	defer func(d time.Duration) { connectAttempt = d }(connectAttempt)
	connectAttempt = 200 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	start := time.Now()
	_, err = Dial(ctx, sock)
	if err == nil || !strings.Contains(err.Error(), "no answer") {
		t.Fatalf("Dial to a silent libvirtd: %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Dial took %s with a 1 s context", d)
	}
	mu.Lock()
	n := len(held)
	mu.Unlock()
	if n < 2 { // 200 ms unanswered, 500 ms pause, a second connection
		t.Errorf("%d connections in 1 s with a 200 ms attempt limit: unanswered ones were not replaced", n)
	}

	// Nobody listening at all: the last dial error, once the context ends.
	ctx2, cancel2 := context.WithTimeout(context.Background(), 700*time.Millisecond)
	defer cancel2()
	if _, err := Dial(ctx2, filepath.Join(t.TempDir(), "none")); err == nil || !strings.Contains(err.Error(), "connect to libvirtd") {
		t.Errorf("Dial to no socket: %v", err)
	}
}
