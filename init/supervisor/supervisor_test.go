package supervisor

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"deskhost/init/logbuf"
	"deskhost/init/proc"
)

var reaper = proc.Start()

func waitFor(t *testing.T, what string, d time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRestartsWithBackoff(t *testing.T) {
	log := logbuf.New(100)
	s := New(reaper, Spec{Name: "flaky", Path: "/bin/sh", Args: []string{"-c", "echo hello; exit 3"},
		RestartDelay: 50 * time.Millisecond, MaxRestartDelay: 200 * time.Millisecond, Log: log})
	s.Start()
	waitFor(t, "three restarts", 5*time.Second, func() bool { return s.Status().Restarts >= 3 })
	st := s.Status()
	if st.LastExit != "exit status 3" {
		t.Errorf("last exit %q", st.LastExit)
	}
	joined := strings.Join(log.Lines(0), "\n")
	if !strings.Contains(joined, "hello") || !strings.Contains(joined, "restarting flaky in 100ms") || !strings.Contains(joined, "restarting flaky in 200ms") {
		t.Errorf("log:\n%s", joined)
	}
	s.Stop(context.Background())
	if s.Status().State != StateStopped {
		t.Errorf("state %s", s.Status().State)
	}
}

func TestReadyRestartStop(t *testing.T) {
	dir := t.TempDir()
	flag := filepath.Join(dir, "ready")
	s := New(reaper, Spec{Name: "svc", Path: "/bin/sh", Args: []string{"-c", "touch " + flag + "; exec sleep 60"},
		Ready: func(context.Context) error {
			if _, err := os.Stat(flag); err != nil {
				return errors.New("not yet")
			}
			return nil
		}, StopTimeout: 2 * time.Second})
	s.Start()
	select {
	case <-s.ReadyC():
	case <-time.After(5 * time.Second):
		t.Fatal("never ready")
	}
	pid := s.Status().PID
	if !s.Ready() || pid == 0 {
		t.Fatalf("status %+v", s.Status())
	}
	os.Remove(flag)
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a new process, ready", 5*time.Second, func() bool { st := s.Status(); return st.PID != pid && st.PID != 0 && s.Ready() })
	if err := syscall.Kill(pid, 0); err == nil {
		t.Errorf("old process %d still alive", pid)
	}
	if st := s.Status(); st.Restarts != 1 || !strings.Contains(st.LastExit, "restarted") {
		t.Errorf("status after restart %+v", st)
	}
	pid = s.Status().PID
	s.Stop(context.Background())
	if err := syscall.Kill(pid, 0); err == nil {
		t.Errorf("process %d survived Stop", pid)
	}
	s.Start()
	waitFor(t, "started again", 5*time.Second, func() bool { return s.Status().PID != 0 })
	s.Stop(context.Background())
}

func TestStopKillsAStubbornProcess(t *testing.T) {
	s := New(reaper, Spec{Name: "stubborn", Path: "/bin/sh", Args: []string{"-c", "trap '' TERM; echo trapped; while :; do sleep 0.1; done"}, StopTimeout: 300 * time.Millisecond})
	s.Start()
	// Stop only once the shell ignores SIGTERM: before, SIGTERM alone would end it.
	waitFor(t, "ignoring SIGTERM", 5*time.Second, func() bool { return strings.Contains(strings.Join(s.Log().Lines(0), "\n"), "trapped") })
	start := time.Now()
	s.Stop(context.Background())
	if d := time.Since(start); d < 300*time.Millisecond || d > 5*time.Second {
		t.Errorf("stop took %v", d)
	}
	if !strings.Contains(s.Status().LastExit, "killed") {
		t.Errorf("last exit %q", s.Status().LastExit)
	}
}

func TestDisabled(t *testing.T) {
	s := New(reaper, Spec{Name: "off", Path: "/nonexistent", Disabled: true, Why: "not in this image"})
	s.Start()
	if st := s.Status(); st.State != StateDisabled || st.Why != "not in this image" {
		t.Errorf("%+v", st)
	}
	if err := s.Restart(); err == nil {
		t.Error("restarting a disabled service worked")
	}
}
