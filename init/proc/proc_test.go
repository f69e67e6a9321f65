package proc

import (
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"deskhost/internal/reaper"
)

var r = func() *Reaper {
	_ = reaper.Become() // orphans of the test come to us
	return Start()
}()

func TestOutputAndExit(t *testing.T) {
	out, err := r.Output(exec.Command("/bin/sh", "-c", "echo out; echo err >&2"), 5*time.Second)
	if err != nil || !strings.Contains(string(out), "out") || !strings.Contains(string(out), "err") {
		t.Errorf("%q %v", out, err)
	}
	if _, err := r.Output(exec.Command("/bin/sh", "-c", "exit 7"), 5*time.Second); err == nil || err.Error() != "exit status 7" {
		t.Errorf("exit 7: %v", err)
	}
	if _, err := r.Output(exec.Command("/bin/sleep", "10"), 100*time.Millisecond); err == nil || !strings.Contains(err.Error(), "timed out") {
		t.Errorf("timeout: %v", err)
	}
}

func TestProcessExitAndOrphans(t *testing.T) {
	p, err := r.Start(exec.Command("/bin/sh", "-c", "sleep 0.2 & exit 0"))
	if err != nil {
		t.Fatal(err)
	}
	if ex := p.Wait(); ex.Err() != nil {
		t.Errorf("exit: %v", ex.Err())
	}
	// The backgrounded sleep is re-parented to us and reaped as an orphan.
	deadline := time.Now().Add(5 * time.Second)
	for r.Orphans() == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if r.Orphans() == 0 {
		t.Error("the orphan was not reaped")
	}
	p, _ = r.Start(exec.Command("/bin/sleep", "10"))
	p.Signal(syscall.SIGKILL)
	if ex := p.Wait(); !strings.Contains(ex.Err().Error(), "killed") {
		t.Errorf("killed: %v", ex.Err())
	}
	if _, err := r.Start(&exec.Cmd{Path: "/bin/true", Stdout: &strings.Builder{}}); err == nil {
		t.Error("a non-file stdout was accepted")
	}
}
