// Package proc starts init's child processes and tells each caller when its own child
// exits. PID 1 reaps every process that exits below it (orphans are re-parented to it),
// with one wait4(-1) loop (internal/reaper). exec.Cmd.Wait would race that loop for its
// child, so processes are started here and waited for through the loop: Start registers
// the child under the same lock the loop takes to deliver an exit, so no exit is lost
// between fork and registration.
package proc

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"deskhost/internal/reaper"
)

// Exit is how a process ended.
type Exit struct {
	PID    int
	Status syscall.WaitStatus
}

// Err describes a non-zero exit, or nil.
func (e Exit) Err() error {
	switch {
	case e.Status.Exited() && e.Status.ExitStatus() == 0:
		return nil
	case e.Status.Exited():
		return fmt.Errorf("exit status %d", e.Status.ExitStatus())
	case e.Status.Signaled():
		return fmt.Errorf("killed by %v", e.Status.Signal())
	default:
		return fmt.Errorf("wait status %#x", uint32(e.Status))
	}
}

// Reaper reaps every child of the process and routes exits to whoever started them.
type Reaper struct {
	mu      sync.Mutex
	waiters map[int]chan Exit
	orphans int // reaped processes nobody waited for (re-parented orphans)
}

// Start begins reaping: call once, early, in PID 1 (or a subreaper).
func Start() *Reaper {
	r := &Reaper{waiters: map[int]chan Exit{}}
	exits := make(chan reaper.Exit, 256)
	go reaper.Loop(exits)
	go func() {
		for e := range exits {
			r.mu.Lock()
			if ch, ok := r.waiters[e.PID]; ok {
				delete(r.waiters, e.PID)
				ch <- Exit{PID: e.PID, Status: e.Status}
			} else {
				r.orphans++
			}
			r.mu.Unlock()
		}
	}()
	return r
}

// Orphans is how many processes were reaped that init had not started itself.
func (r *Reaper) Orphans() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.orphans
}

// Process is a started child.
type Process struct {
	PID  int
	done chan Exit
	exit Exit
	once sync.Once
}

// Done delivers the exit once (to one receiver); use Wait unless selecting.
func (p *Process) Done() <-chan Exit { return p.done }

// Wait waits for the process to exit.
func (p *Process) Wait() Exit {
	p.once.Do(func() { p.exit = <-p.done })
	return p.exit
}

// Signal sends sig to the process.
func (p *Process) Signal(sig syscall.Signal) error { return syscall.Kill(p.PID, sig) }

// Start starts cmd, whose Stdin, Stdout and Stderr must be nil or *os.File (no copying
// goroutines: exec.Cmd.Wait is never called). The caller closes its own copies of files
// it passed after Start returns.
func (r *Reaper) Start(cmd *exec.Cmd) (*Process, error) {
	for _, f := range []any{cmd.Stdin, cmd.Stdout, cmd.Stderr} {
		switch f.(type) {
		case nil, *os.File:
		default:
			return nil, errors.New("proc: stdin, stdout and stderr must be *os.File or nil")
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &Process{PID: cmd.Process.Pid, done: make(chan Exit, 1)}
	r.waiters[p.PID] = p.done
	return p, nil
}

// Output runs cmd to completion and returns its combined output (at most limit bytes
// kept), and an error for a failure or a non-zero exit.
func (r *Reaper) Output(cmd *exec.Cmd, timeout time.Duration) ([]byte, error) {
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	p, err := r.Start(cmd)
	pw.Close()
	if err != nil {
		pr.Close()
		return nil, err
	}
	outc := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(io.LimitReader(pr, 4<<20))
		_, _ = io.Copy(io.Discard, pr)
		pr.Close()
		outc <- b
	}()
	var ex Exit
	if timeout > 0 {
		select {
		case ex = <-p.done:
		case <-time.After(timeout):
			_ = p.Signal(syscall.SIGKILL)
			ex = <-p.done
			return <-outc, fmt.Errorf("%s: timed out after %v", cmd.Path, timeout)
		}
	} else {
		ex = <-p.done
	}
	out := <-outc
	if err := ex.Err(); err != nil {
		return out, err
	}
	return out, nil
}
