package controller

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"deskhost/hostd/maintenance"
	"deskhost/hostd/service"
	"deskhost/hostd/virt"
	"deskhost/hostd/workspace"
)

func TestInGrace(t *testing.T) {
	boot := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
	w := workspace.Workspace{State: workspace.Available, BootedAt: boot, StateSince: boot.Add(time.Hour)}
	for _, c := range []struct {
		after, grace time.Duration
		want         bool
	}{
		{time.Minute, 5 * time.Minute, true},
		{5*time.Minute - time.Nanosecond, 5 * time.Minute, true},
		{5 * time.Minute, 5 * time.Minute, false},
		{time.Minute, 0, false}, // no grace configured
	} {
		if got := inGrace(w, boot.Add(c.after), c.grace); got != c.want {
			t.Errorf("%s after boot, grace %s: inGrace %v, want %v", c.after, c.grace, got, c.want)
		}
	}
	// The grace counts from the boot, not from the last state change: a WorkSpace back
	// from UNHEALTHY an hour after its boot is judged at once.
	if inGrace(w, boot.Add(time.Hour+time.Second), 5*time.Minute) {
		t.Error("grace restarted by a state change")
	}
	msg := unhealthyReason(3, 30*time.Second, errors.New("agent status: context deadline exceeded"))
	if !strings.Contains(msg, "3 consecutive status requests") || !strings.Contains(msg, "deadline") {
		t.Errorf("reason %q", msg)
	}
}

// TestHealthAgainstLibvirt silences the guest agent of a running WorkSpace (the guest
// keeps running; only the agent stops serving its port) and watches the guide's health
// rules (§19): no verdict within the grace period after the boot, UNHEALTHY with a reason
// after HealthMisses misses, AVAILABLE again at the first answer.
func TestHealthAgainstLibvirt(t *testing.T) {
	const (
		interval = time.Second
		timeout  = 2 * time.Second
		misses   = 3
		grace    = 10 * time.Minute
		silence  = 45 * time.Second
	)
	var skew atomic.Int64 // the controller's clock runs this far ahead of the real one
	h := newHarness(t, func(c *Config) {
		c.HealthInterval, c.HealthTimeout, c.HealthMisses, c.HealthGrace = interval, timeout, misses, grace
		c.Now = func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	}, nil)
	w := h.create("grace")
	h.waitState(w.ID, workspace.Available, bootWithin)

	a := h.agent(w.ID)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := a.Silence(ctx, silence); err != nil {
		t.Fatal(err)
	}
	a.Close()
	stopped := time.Now()

	// Within the grace period: misses do not count.
	for time.Since(stopped) < 4*(interval+timeout) {
		if st := h.get(w.ID).State; st != workspace.Available {
			t.Fatalf("%s during the grace period, want AVAILABLE", st)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// The grace period is over (the clock jumps past it); the agent is still silent.
	skew.Store(int64(grace))
	judged := time.Now()
	h.waitState(w.ID, workspace.Unhealthy, misses*(interval+timeout)+20*time.Second)
	toUnhealthy := time.Since(judged)
	t.Logf("agent silenced; UNHEALTHY %s after the grace period ended (%d misses at %s, timeout %s)",
		toUnhealthy.Round(time.Millisecond), misses, interval, timeout)
	if toUnhealthy < (misses-1)*interval {
		t.Errorf("UNHEALTHY after %s: sooner than %d misses allow", toUnhealthy, misses)
	}
	got := h.get(w.ID)
	if got.ErrorCode != "StatusCheckFailed" || !strings.Contains(got.ErrorMessage, "consecutive status requests") {
		t.Errorf("UNHEALTHY reason: %q %q", got.ErrorCode, got.ErrorMessage)
	}
	if st := h.domainState(w.ID); st != virt.Running {
		t.Errorf("guest %s while UNHEALTHY: the guest must keep running", st)
	}

	// The agent comes back by itself when its silence ends.
	back := stopped.Add(silence)
	h.waitState(w.ID, workspace.Available, time.Until(back)+30*time.Second)
	t.Logf("agent back; AVAILABLE %s after it serves again", time.Since(back).Round(time.Millisecond))
	if got := h.get(w.ID); got.ErrorCode != "" || got.ErrorMessage != "" {
		t.Errorf("AVAILABLE again with a reason left: %q %q", got.ErrorCode, got.ErrorMessage)
	}
	if time.Now().Before(back) {
		t.Errorf("AVAILABLE before the agent's silence ended")
	}
}

// TestMaintenanceWindowsAgainstLibvirt drives the guide's automatic maintenance (§6) with
// an injected clock: an AlwaysOn WorkSpace stays AVAILABLE through its Sunday window (the
// guest's own); a stopped AutoStop WorkSpace is started for its monthly window, shown
// MAINTENANCE, and stopped again after; with the directory's maintenance mode disabled,
// nothing enters MAINTENANCE.
func TestMaintenanceWindowsAgainstLibvirt(t *testing.T) {
	loc, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	// The controller's and the service's clock start on a Wednesday noon (no window of
	// either mode), whatever the real time.
	wed := time.Date(2027, 2, 3, 12, 0, 0, 0, loc)
	var skew atomic.Int64
	skew.Store(int64(time.Until(wed)))
	h := newHarness(t, func(c *Config) {
		c.HealthInterval, c.HealthTimeout = time.Second, 3*time.Second
		c.SiteZone = loc
		c.Now = func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	}, nil)
	ctx := context.Background()
	on := h.create("alice")
	auto := h.create("bob", autoStop)
	h.waitState(on.ID, workspace.Available, bootWithin)
	h.waitState(auto.ID, workspace.Available, bootWithin)
	if failed, err := h.svc.StopWorkspaces(ctx, []string{auto.ID}); err != nil || len(failed) > 0 {
		t.Fatalf("stop: %v %+v", err, failed)
	}
	h.waitState(auto.ID, workspace.Stopped, time.Minute)
	at := func(t0 time.Time) { skew.Store(int64(time.Until(t0))) }
	// Poll within a few health intervals (each worker looks again every interval).
	const within = 30 * time.Second

	// AlwaysOn: its Sunday 00:00–04:00 window is the guest's own (the guide: "determined
	// by operating system settings"); hostd changes nothing, the WorkSpace stays AVAILABLE.
	win := maintenance.Next(workspace.AlwaysOn, on.ID, wed, loc)
	if win.Start.Weekday() != time.Sunday || win.Start.In(loc).Hour() != 0 {
		t.Fatalf("AlwaysOn window %v", win.Start)
	}
	at(win.Start.Add(time.Minute))
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		if st := h.get(on.ID).State; st != workspace.Available {
			t.Fatalf("AlwaysOn WorkSpace %s in its Sunday window, want AVAILABLE", st)
		}
	}
	at(win.End)

	// AutoStop: its day of the fortnight from the third Monday, 00:00–05:00.
	awin := maintenance.Next(workspace.AutoStop, auto.ID, win.End, loc)
	at(awin.Start.Add(time.Minute))
	started := time.Now()
	h.waitState(auto.ID, workspace.Maintenance, within)
	if m := h.get(auto.ID).Maintenance; !m.Until.Equal(awin.End) || m.Return != workspace.Stopped {
		t.Errorf("AutoStop maintenance record %+v, want until %v returning STOPPED", m, awin.End)
	}
	for h.domainState(auto.ID) != virt.Running {
		if time.Since(started) > bootWithin {
			t.Fatalf("AutoStop WorkSpace not started for maintenance: %s", h.domainState(auto.ID))
		}
		time.Sleep(200 * time.Millisecond)
	}
	a := h.agent(auto.ID)
	if _, err := a.Status(ctx); err != nil {
		t.Errorf("agent of the WorkSpace in maintenance: %v", err)
	}
	a.Close()
	t.Logf("AutoStop WorkSpace started for maintenance: agent answers %s after the window opened", time.Since(started).Round(time.Millisecond))
	at(awin.End.Add(time.Second))
	seen := h.waitState(auto.ID, workspace.Stopped, time.Minute)
	if st := h.domainState(auto.ID); st != virt.Shutoff {
		t.Errorf("after maintenance: domain %s, want shut off", st)
	}
	t.Logf("after the window: %v", seen)
	// Once per window: a second look within the same (past) window changes nothing.
	if st := h.get(auto.ID).State; st != workspace.Stopped {
		t.Errorf("after maintenance %s", st)
	}

	// Maintenance mode disabled on the directory: the next window passes without it.
	off := false
	if err := h.svc.ModifyWorkspaceCreationProperties(ctx, testDirectory, service.CreationChange{EnableMaintenanceMode: &off}); err != nil {
		t.Fatal(err)
	}
	next := maintenance.Next(workspace.AutoStop, auto.ID, awin.End, loc)
	at(next.Start.Add(time.Minute))
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		if st := h.get(auto.ID).State; st != workspace.Stopped {
			t.Fatalf("maintenance mode disabled, yet the WorkSpace is %s", st)
		}
	}
}
