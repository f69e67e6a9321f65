// Package supervisor runs init's services: each in its own session, its stdout and
// stderr captured into its log (package logbuf), restarted when it exits with a delay that
// doubles on each quick failure (reset after a run of a minute), checked for readiness,
// and stopped with SIGTERM then SIGKILL. The operator console restarts, stops and
// inspects them.
package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"deskhost/init/logbuf"
	"deskhost/init/proc"
)

// States of a service.
const (
	StateStarting = "starting" // started, not ready yet
	StateRunning  = "running"  // ready
	StateBackoff  = "backoff"  // exited; waiting to restart
	StateStopping = "stopping"
	StateStopped  = "stopped"  // stopped on request, or not started yet
	StateDisabled = "disabled" // left out by the config or not in the image
)

// StableAfter is how long a run must last for the next failure to restart at the
// first delay again.
const StableAfter = time.Minute

// Spec describes a service.
type Spec struct {
	Name            string
	Path            string
	Args            []string
	Env             []string // added to a minimal environment
	RestartDelay    time.Duration
	MaxRestartDelay time.Duration
	StopTimeout     time.Duration
	// Ready reports whether the service serves; nil means "running for a second".
	Ready func(ctx context.Context) error
	// ReadyTimeout, when set, restarts a run that is not ready that long after its start,
	// killing its whole process group: a daemon wedged in its start (libvirtd whose
	// forked helper hung before exec) would otherwise hold its dependants off forever.
	ReadyTimeout time.Duration
	Log          *logbuf.Log
	// Disabled services are listed but never started (Why says why).
	Disabled bool
	Why      string
}

// Status is a snapshot of a service.
type Status struct {
	Name     string
	State    string
	PID      int
	Restarts int       // times it was started after the first
	Since    time.Time // when it entered State
	LastExit string    // how the last run ended
	Why      string    // for disabled services
}

// Service is one supervised service.
type Service struct {
	spec Spec
	r    *proc.Reaper

	mu       sync.Mutex
	st       Status
	ctl      chan string // "restart", "stop", "start"
	started  bool
	proc     *proc.Process
	readyCh  chan struct{}
	readyHit bool
}

// New returns a service; Start begins supervising it.
func New(r *proc.Reaper, spec Spec) *Service {
	if spec.RestartDelay <= 0 {
		spec.RestartDelay = time.Second
	}
	if spec.MaxRestartDelay < spec.RestartDelay {
		spec.MaxRestartDelay = spec.RestartDelay
	}
	if spec.StopTimeout <= 0 {
		spec.StopTimeout = 10 * time.Second
	}
	if spec.Log == nil {
		spec.Log = logbuf.New(500)
	}
	s := &Service{spec: spec, r: r, ctl: make(chan string, 4), readyCh: make(chan struct{})}
	s.st = Status{Name: spec.Name, State: StateStopped, Since: time.Now()}
	if spec.Disabled {
		s.st.State, s.st.Why = StateDisabled, spec.Why
	}
	return s
}

// Name of the service.
func (s *Service) Name() string { return s.spec.Name }

// Log of the service.
func (s *Service) Log() *logbuf.Log { return s.spec.Log }

// Disabled reports whether the service is left out.
func (s *Service) Disabled() bool { return s.spec.Disabled }

// Status returns a snapshot.
func (s *Service) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st
}

// ReadyC is closed the first time the service is ready.
func (s *Service) ReadyC() <-chan struct{} { return s.readyCh }

func (s *Service) set(state string, f func(*Status)) {
	s.mu.Lock()
	if s.st.State != state {
		s.st.Since = time.Now()
	}
	s.st.State = state
	if f != nil {
		f(&s.st)
	}
	s.mu.Unlock()
}

// Start begins supervising (once); later calls start a stopped service again.
func (s *Service) Start() {
	if s.spec.Disabled {
		return
	}
	s.mu.Lock()
	first := !s.started
	s.started = true
	s.mu.Unlock()
	if first {
		go s.loop()
		return
	}
	s.ctl <- "start"
}

// Restart stops the running process and starts it again at once.
func (s *Service) Restart() error {
	if s.spec.Disabled {
		return fmt.Errorf("%s is disabled: %s", s.spec.Name, s.spec.Why)
	}
	s.mu.Lock()
	started := s.started
	s.mu.Unlock()
	if !started {
		s.Start()
		return nil
	}
	s.ctl <- "restart"
	return nil
}

// Stop stops the service and keeps it stopped; it returns when the process is gone or
// ctx ends.
func (s *Service) Stop(ctx context.Context) {
	s.mu.Lock()
	started := s.started
	s.mu.Unlock()
	if !started || s.spec.Disabled {
		return
	}
	select {
	case s.ctl <- "stop":
	case <-ctx.Done():
		return
	}
	for ctx.Err() == nil {
		if st := s.Status(); st.State == StateStopped {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Signal sends sig to the running process (netcfg reloads its config on SIGHUP).
func (s *Service) Signal(sig syscall.Signal) error {
	s.mu.Lock()
	p := s.proc
	s.mu.Unlock()
	if p == nil {
		return fmt.Errorf("%s is not running", s.spec.Name)
	}
	return p.Signal(sig)
}

func (s *Service) loop() {
	delay := s.spec.RestartDelay
	runs := 0
	for {
		p, err := s.spawn()
		if err != nil {
			s.spec.Log.Printf("init: cannot start %s: %v", s.spec.Path, err)
			s.set(StateBackoff, func(st *Status) { st.PID = 0; st.LastExit = "start failed: " + err.Error() })
		} else {
			if runs > 0 {
				s.mu.Lock()
				s.st.Restarts++
				s.mu.Unlock()
			}
			runs++
			start := time.Now()
			ctx, cancel := context.WithCancel(context.Background())
			go s.watchReady(ctx, p)
			cmd, ex := s.waitOrControl(p)
			cancel()
			ran := time.Since(start)
			why := ex.Err()
			exit := "exited 0"
			if why != nil {
				exit = why.Error()
			}
			s.spec.Log.Printf("init: %s (pid %d) %s after %v", s.spec.Name, p.PID, exit, ran.Round(time.Millisecond))
			s.mu.Lock()
			s.proc = nil
			s.mu.Unlock()
			switch cmd {
			case "stop":
				s.set(StateStopped, func(st *Status) { st.PID = 0; st.LastExit = exit + " (stopped)" })
				if !s.waitStart() {
					return
				}
				delay = s.spec.RestartDelay
				continue
			case "restart":
				s.set(StateStarting, func(st *Status) { st.PID = 0; st.LastExit = exit + " (restarted)" })
				delay = s.spec.RestartDelay
				continue
			case "unready":
				// What it forked and left behind goes with it (it never became ready, so it
				// runs nothing anyone depends on).
				_ = syscall.Kill(-p.PID, syscall.SIGKILL)
				exit = fmt.Sprintf("not ready within %v", s.spec.ReadyTimeout)
			}
			if ran >= StableAfter {
				delay = s.spec.RestartDelay
			}
			s.set(StateBackoff, func(st *Status) { st.PID = 0; st.LastExit = exit })
		}
		s.spec.Log.Printf("init: restarting %s in %v", s.spec.Name, delay)
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case c := <-s.ctl:
			t.Stop()
			if c == "stop" {
				s.set(StateStopped, nil)
				if !s.waitStart() {
					return
				}
			}
			delay = s.spec.RestartDelay
			continue
		}
		delay *= 2
		if delay > s.spec.MaxRestartDelay {
			delay = s.spec.MaxRestartDelay
		}
	}
}

// waitStart blocks a stopped service until it is started again.
func (s *Service) waitStart() bool {
	for c := range s.ctl {
		if c == "start" || c == "restart" {
			return true
		}
	}
	return false
}

// waitOrControl waits for the process to exit or for a control request; on "stop" or
// "restart" it terminates the process first.
func (s *Service) waitOrControl(p *proc.Process) (string, proc.Exit) {
	for {
		select {
		case ex := <-p.Done():
			return "", ex
		case c := <-s.ctl:
			if c == "start" {
				continue // already running
			}
			s.set(StateStopping, nil)
			return c, s.terminate(p)
		}
	}
}

// terminate sends SIGTERM, waits StopTimeout, then SIGKILL.
func (s *Service) terminate(p *proc.Process) proc.Exit {
	_ = p.Signal(syscall.SIGTERM)
	t := time.NewTimer(s.spec.StopTimeout)
	defer t.Stop()
	select {
	case ex := <-p.Done():
		return ex
	case <-t.C:
		s.spec.Log.Printf("init: %s did not stop within %v: killing it", s.spec.Name, s.spec.StopTimeout)
		_ = p.Signal(syscall.SIGKILL)
		return <-p.Done()
	}
}

func (s *Service) spawn() (*proc.Process, error) {
	if _, err := os.Stat(s.spec.Path); err != nil {
		return nil, err
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(s.spec.Path, s.spec.Args...)
	cmd.Env = append([]string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "TERM=dumb", "LANG=C.UTF-8"}, s.spec.Env...)
	cmd.Stdout, cmd.Stderr = pw, pw
	cmd.Dir = "/"
	// Its own session: no controlling terminal, and a console's ^C never reaches it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	p, err := s.r.Start(cmd)
	pw.Close()
	if err != nil {
		pr.Close()
		return nil, err
	}
	go func() {
		_, _ = io.Copy(s.spec.Log, pr)
		pr.Close()
	}()
	s.spec.Log.Printf("init: started %s (pid %d)", s.spec.Name, p.PID)
	s.mu.Lock()
	s.proc = p
	s.mu.Unlock()
	s.set(StateStarting, func(st *Status) { st.PID = p.PID })
	return p, nil
}

func (s *Service) watchReady(ctx context.Context, p *proc.Process) {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	start := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		var err error
		if s.spec.Ready != nil {
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			err = s.spec.Ready(cctx)
			cancel()
		} else if time.Since(start) < time.Second {
			err = errors.New("just started")
		}
		if err != nil {
			if s.spec.ReadyTimeout > 0 && time.Since(start) >= s.spec.ReadyTimeout {
				s.spec.Log.Printf("init: %s not ready %v after its start (%v): restarting it", s.spec.Name, s.spec.ReadyTimeout, err)
				select {
				case s.ctl <- "unready":
				case <-ctx.Done():
				}
				return
			}
			continue
		}
		s.mu.Lock()
		if s.proc == p && s.st.State == StateStarting {
			s.st.Since = time.Now()
			s.st.State = StateRunning
			if !s.readyHit {
				s.readyHit = true
				close(s.readyCh)
			}
			s.spec.Log.Printf("init: %s is ready", s.spec.Name)
		}
		s.mu.Unlock()
		return
	}
}

// Ready reports whether the service is running and ready.
func (s *Service) Ready() bool { return s.Status().State == StateRunning }
