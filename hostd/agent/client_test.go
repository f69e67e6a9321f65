package agent

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeAgent serves the protocol on a real unix socket with behaviour chosen by handle:
// it returns the lines to write back (possibly none, possibly several).
func fakeAgent(t *testing.T, handle func(n int, req Request) []string) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var n atomic.Int32
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				sc := bufio.NewScanner(conn)
				for sc.Scan() {
					req, _ := DecodeRequest(sc.Bytes())
					for _, l := range handle(int(n.Add(1)), req) {
						conn.Write([]byte(l + "\n"))
					}
				}
			}()
		}
	}()
	return sock
}

func answer(resp Response) string {
	b, _ := json.Marshal(resp)
	return string(b)
}

func TestStatusRetriesAndDiscardsStale(t *testing.T) {
	sock := fakeAgent(t, func(n int, req Request) []string {
		switch n {
		case 1:
			return nil // the guest has not opened its port yet: no answer
		case 2:
			// A stale answer (to request 1, as if delivered late), garbage, then ours
			// split in two writes.
			return []string{
				answer(Response{ID: req.ID - 1, OK: true, Status: &Status{WorkspaceID: "stale"}}),
				"garbage {",
				answer(Response{ID: req.ID, OK: true, Status: &Status{WorkspaceID: "ws-right", AgentVersion: Version}}),
			}
		}
		return []string{answer(Response{ID: req.ID, OK: true, Status: &Status{WorkspaceID: "ws-later"}})}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.StatusAttempt = 200 * time.Millisecond
	st, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.WorkspaceID != "ws-right" {
		t.Errorf("got status of %q", st.WorkspaceID)
	}
	// The connection stays usable.
	st, err = c.Status(ctx)
	if err != nil || st.WorkspaceID != "ws-later" {
		t.Errorf("second status: %+v %v", st, err)
	}
}

func TestDeadlineRespected(t *testing.T) {
	sock := fakeAgent(t, func(int, Request) []string { return nil }) // never answers
	c, err := Dial(context.Background(), sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for name, call := range map[string]func(ctx context.Context) error{
		"status":   func(ctx context.Context) error { _, err := c.Status(ctx); return err },
		"shutdown": func(ctx context.Context) error { return c.Shutdown(ctx, false) },
		"read":     func(ctx context.Context) error { _, err := c.ReadFile(ctx, "/home/x"); return err },
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		start := time.Now()
		err := call(ctx)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s: %v, want deadline exceeded", name, err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("%s returned after %v", name, d)
		}
	}
	// Cancellation without a deadline.
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(200*time.Millisecond, cancel)
	if err := c.Crash(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled crash: %v", err)
	}
}

func TestAgentErrorsAndOps(t *testing.T) {
	var mu sync.Mutex
	var got []Request
	sent := func() []Request { mu.Lock(); defer mu.Unlock(); return append([]Request(nil), got...) }
	sock := fakeAgent(t, func(_ int, req Request) []string {
		mu.Lock()
		got = append(got, req)
		mu.Unlock()
		switch req.Op {
		case OpReadFile:
			return []string{answer(Response{ID: req.ID, OK: true, Data: "contents"})}
		case OpFillMemory:
			return []string{answer(Response{ID: req.ID, OK: true, BytesFilled: 4096})}
		case OpWriteFile, OpShutdown, OpCrash:
			return []string{answer(Response{ID: req.ID, OK: true})}
		}
		return []string{answer(Response{ID: req.ID, Error: "unknown op \"" + req.Op + "\""})}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if b, err := c.ReadFile(ctx, "/home/a"); err != nil || string(b) != "contents" {
		t.Errorf("read: %q %v", b, err)
	}
	if n, err := c.FillMemory(ctx, "MARKER-MARKER", 50); err != nil || n != 4096 {
		t.Errorf("fill: %d %v", n, err)
	}
	if err := c.WriteFile(ctx, "/sysroot/x", []byte("d")); err != nil {
		t.Error(err)
	}
	if err := c.Shutdown(ctx, true); err != nil {
		t.Error(err)
	}
	_, err = c.Call(ctx, Request{Op: "dance"})
	var ae *Error
	if !errors.As(err, &ae) || !strings.Contains(ae.Msg, "dance") {
		t.Errorf("unknown op: %v", err)
	}
	// Client-side validation: nothing is sent.
	n := len(sent())
	if err := c.WriteFile(ctx, "/etc/passwd", nil); err == nil {
		t.Error("write outside the volumes accepted")
	}
	if _, err := c.FillMemory(ctx, "short", 50); err == nil {
		t.Error("short marker accepted")
	}
	if len(sent()) != n {
		t.Error("invalid requests were sent")
	}
	if r := sent()[3]; r.Op != OpShutdown || !r.Reboot {
		t.Errorf("shutdown request %+v", r)
	}
	c.Close()
	if _, err := c.Call(ctx, Request{Op: OpStatus}); err == nil {
		t.Error("call after close succeeded")
	}
}

func TestDialWaitsForSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "late.sock")
	go func() {
		time.Sleep(300 * time.Millisecond)
		ln, err := net.Listen("unix", sock)
		if err != nil {
			return
		}
		t.Cleanup(func() { ln.Close() })
		c, _ := ln.Accept()
		if c != nil {
			c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := Dial(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	// Without a deadline, one attempt.
	if _, err := Dial(context.Background(), filepath.Join(t.TempDir(), "none.sock")); err == nil {
		t.Error("dial to a missing socket succeeded")
	}
}
