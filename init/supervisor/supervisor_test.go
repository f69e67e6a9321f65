package supervisor

import (
	"context"
	"errors"
	"fmt"
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

// A run that never becomes ready is restarted after ReadyTimeout, and what it forked
// (libvirtd's helper stuck before exec) dies with it; a run that becomes ready stays.
func TestNotReadyInTimeIsRestarted(t *testing.T) {
	dir := t.TempDir()
	flag := filepath.Join(dir, "ready")
	child := filepath.Join(dir, "child")
	// Each run leaves a child in its process group and writes its PID; the second run
	// makes itself ready.
	script := `sleep 600 & echo $! > ` + child + `; if [ -e ` + dir + `/ran ]; then touch ` + flag + `; fi; touch ` + dir + `/ran; wait`
	s := New(reaper, Spec{Name: "wedged", Path: "/bin/sh", Args: []string{"-c", script},
		Ready: func(context.Context) error {
			if _, err := os.Stat(flag); err != nil {
				return errors.New("no answer")
			}
			return nil
		}, ReadyTimeout: 700 * time.Millisecond, RestartDelay: 50 * time.Millisecond, StopTimeout: time.Second})
	s.Start()
	defer s.Stop(context.Background())
	var first int
	waitFor(t, "the first run's child", 5*time.Second, func() bool {
		b, err := os.ReadFile(child)
		if err != nil {
			return false
		}
		_, err = fmt.Sscan(string(b), &first)
		return err == nil && first > 0
	})
	select {
	case <-s.ReadyC():
	case <-time.After(10 * time.Second):
		t.Fatalf("never ready after a restart: %+v\n%s", s.Status(), strings.Join(s.Log().Lines(0), "\n"))
	}
	st := s.Status()
	if st.Restarts != 1 || !strings.Contains(st.LastExit, "not ready within 700ms") {
		t.Errorf("status %+v", st)
	}
	if !strings.Contains(strings.Join(s.Log().Lines(0), "\n"), "wedged not ready 700ms after its start (no answer): restarting it") {
		t.Errorf("log:\n%s", strings.Join(s.Log().Lines(0), "\n"))
	}
	waitFor(t, "the first run's child gone", 5*time.Second, func() bool { return syscall.Kill(first, 0) != nil })
	// Ready now: it is not restarted again.
	time.Sleep(time.Second)
	if st := s.Status(); st.Restarts != 1 || st.State != StateRunning {
		t.Errorf("a ready run was restarted: %+v", st)
	}
}
