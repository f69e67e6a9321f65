package controller

import (
	"context"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"deskhost/hostd/memscrub"
	"deskhost/hostd/service"
	"deskhost/hostd/workspace"
)

// saveLog records, per scrub of a save image, the markers in it right before the zeroing
// and right after.
type saveLog struct {
	mu     sync.Mutex
	marker []byte
	found  []scrubbed
}

func (s *saveLog) hook(c *Controller) {
	c.savedState = func(id string, f *memscrub.Held, zeroed bool) {
		s.mu.Lock()
		m := s.marker
		s.mu.Unlock()
		var n int64 = -1
		if m != nil {
			var err error
			if n, err = f.Count(m); err != nil {
				n = -2
			}
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if !zeroed {
			s.found = append(s.found, scrubbed{before: n, after: -1})
		} else if len(s.found) > 0 {
			s.found[len(s.found)-1].after = n
		}
	}
}

func (s *saveLog) scrubs() []scrubbed {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]scrubbed(nil), s.found...)
}

// TestHibernateResume: stopping an AutoStop WorkSpace hibernates it and starting it resumes
// it — a guest process's memory (the agent's fill-memory region, a marker) and the guest's
// clock carry on — while the save image, readable by root only, holds the marker only until
// the restore: then it is zeroed and gone. A save image that cannot be restored means a cold
// boot, said in the state reason. It logs the figures: hibernate and resume against a cold
// stop and a cold start of the same WorkSpace, and the save image's size against guest RAM.
func TestHibernateResume(t *testing.T) {
	sl := newScrubLog()
	sv := &saveLog{}
	h := newHarness(t, nil, func(c *Controller) { sl.hook(c); sv.hook(c) })
	ctx := context.Background()
	w := h.create("alice", autoStop)
	h.waitState(w.ID, workspace.Available, bootWithin)

	// A process in the guest (the agent) fills most of the guest's free RAM with a marker
	// and keeps it: that is the application state that must survive.
	marker := fill(t, h, sl, w.ID)
	sv.mu.Lock()
	sv.marker = marker
	sv.mu.Unlock()
	a := h.agent(w.ID)
	before, err := a.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	a.Close()

	// Hibernate: AutoStop's own stop, its AutoStop time passed on a clock two hours ahead.
	later := service.New(h.store, service.Config{ComputeTypes: h.ctl.cfg.ComputeTypes, WorkspaceQuota: 20, Host: h.ctl.cfg.Owner},
		h.ctl, func() time.Time { return time.Now().Add(2 * time.Hour) }, h.ctl.cfg.Log)
	t0 := time.Now()
	if ids, err := later.AutoStop(ctx); err != nil || len(ids) != 1 || ids[0] != w.ID {
		t.Fatalf("AutoStop stopped %v (%v), want [%s]", ids, err, w.ID)
	}
	h.waitState(w.ID, workspace.Stopped, 5*time.Minute)
	hibernate := time.Since(t0)
	if st := h.domainState(w.ID); st.Active() {
		t.Fatalf("STOPPED, but libvirt says the domain is %s", st)
	}
	if saved, err := h.conn.HasManagedSave(w.ID); err != nil || !saved {
		t.Fatalf("no managed save image after stopping an AutoStop WorkSpace (%v)", err)
	}
	path := h.ctl.savePath(w.ID)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("save image: %v", err)
	}
	if sys := fi.Sys().(*syscall.Stat_t); fi.Mode().Perm() != 0o600 || sys.Uid != 0 || sys.Gid != 0 {
		t.Errorf("save image %s is %v owned by %d:%d, want 0600 root:root", path, fi.Mode().Perm(), sys.Uid, sys.Gid)
	}
	f, err := memscrub.HoldFile(path)
	if err != nil {
		t.Fatal(err)
	}
	inSave, err := f.Count(marker)
	f.Release()
	if err != nil {
		t.Fatal(err)
	}
	if inSave == 0 {
		t.Fatalf("the save image holds no marker: the test could not tell a scrubbed image from a clean one")
	}
	waitScrubbed(t, sl, w.ID, 1, "the hibernated qemu's RAM")

	// Resume.
	t0 = time.Now()
	start(t, h, w.ID)
	h.waitState(w.ID, workspace.Available, bootWithin)
	resume := time.Since(t0)
	if r := h.get(w.ID); r.ErrorMessage != "" {
		t.Errorf("resumed WorkSpace has a state reason: %s", r.ErrorMessage)
	}
	a = h.agent(w.ID)
	after, err := a.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	a.Close()
	if after.UptimeMs < before.UptimeMs {
		t.Errorf("guest uptime %d ms after the resume, %d ms before the stop: the guest was booted, not resumed", after.UptimeMs, before.UptimeMs)
	}
	if n := heldMarkers(t, h, w.ID, marker); n < inSave*9/10 {
		t.Errorf("%d markers in the resumed guest's RAM, %d in the save image: the guest process's memory did not survive", n, inSave)
	} else {
		t.Logf("resumed: %d markers in guest RAM (%d in the save image); uptime %d ms → %d ms", n, inSave, before.UptimeMs, after.UptimeMs)
	}
	checkSaveGone(t, h, sv, w.ID, path, 1)

	// The baseline: a cold stop and a cold start of the same WorkSpace.
	h.ctl.coldStop.Store(true)
	t0 = time.Now()
	stop(t, h, w.ID)
	h.waitState(w.ID, workspace.Stopped, 5*time.Minute)
	coldStop := time.Since(t0)
	if saved, _ := h.conn.HasManagedSave(w.ID); saved {
		t.Fatal("a cold stop left a save image")
	}
	t0 = time.Now()
	start(t, h, w.ID)
	h.waitState(w.ID, workspace.Available, bootWithin)
	coldStart := time.Since(t0)
	h.ctl.coldStop.Store(false)
	if n := heldMarkers(t, h, w.ID, marker); n != 0 {
		t.Errorf("%d markers in a cold-booted guest's RAM: the resume check cannot fail", n)
	}

	t.Logf("FIGURES hibernate→STOPPED %s vs cold stop %s (%.2f×); resume→AVAILABLE %s vs cold start %s (%.2f×); save image %d MiB for %d MiB guest RAM (%.2f), marker-filled RAM",
		hibernate.Round(time.Millisecond), coldStop.Round(time.Millisecond), hibernate.Seconds()/coldStop.Seconds(),
		resume.Round(time.Millisecond), coldStart.Round(time.Millisecond), resume.Seconds()/coldStart.Seconds(),
		fi.Size()>>20, testMemoryMiB, float64(fi.Size())/float64(testMemoryMiB<<20))
	if resume > 90*time.Second {
		t.Errorf("resume took %s; the guide promises under 90 s", resume)
	}

	// A save image that cannot be restored: a cold boot, and the state reason says so.
	fill(t, h, sl, w.ID)
	stop(t, h, w.ID)
	h.waitState(w.ID, workspace.Stopped, 5*time.Minute)
	if err := corrupt(path); err != nil {
		t.Fatal(err)
	}
	start(t, h, w.ID)
	h.waitState(w.ID, workspace.Available, bootWithin)
	r := h.get(w.ID)
	if !strings.HasPrefix(r.ErrorMessage, resumeFailedPrefix) {
		t.Errorf("after a failed restore the state reason is %q, want it to start %q", r.ErrorMessage, resumeFailedPrefix)
	} else {
		t.Logf("failed restore: %s", r.ErrorMessage)
	}
	checkSaveGone(t, h, sv, w.ID, path, 2)
	sl.check(t)
}

func stop(t *testing.T, h *harness, id string) {
	t.Helper()
	if failed, err := h.svc.StopWorkspaces(context.Background(), []string{id}); err != nil || len(failed) > 0 {
		t.Fatalf("stop: %v %+v", err, failed)
	}
}

func start(t *testing.T, h *harness, id string) {
	t.Helper()
	if failed, err := h.svc.StartWorkspaces(context.Background(), []string{id}); err != nil || len(failed) > 0 {
		t.Fatalf("start: %v %+v", err, failed)
	}
}

// heldMarkers counts marker in the RAM hostd holds for id's running guest.
func heldMarkers(t *testing.T, h *harness, id string, marker []byte) int64 {
	t.Helper()
	h.ctl.mu.Lock()
	held := h.ctl.held[id]
	h.ctl.mu.Unlock()
	if held == nil {
		t.Fatalf("%s: hostd holds no RAM for the running guest", id)
	}
	n, err := held.Count(marker)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// checkSaveGone checks save image scrub number n: it held the marker before the zeroing
// and none after, and the image is gone from libvirt and the save directory.
func checkSaveGone(t *testing.T, h *harness, sv *saveLog, id, path string, n int) {
	t.Helper()
	s := sv.scrubs()
	if len(s) < n {
		t.Fatalf("%d save image scrubs, want %d", len(s), n)
	}
	if f := s[n-1]; f.before <= 0 || f.after != 0 {
		t.Errorf("save image scrub %d: %d markers before the zeroing, %d after; want some, then 0", n, f.before, f.after)
	} else {
		t.Logf("save image scrub %d: %d markers before the zeroing, 0 after", n, f.before)
	}
	if saved, _ := h.conn.HasManagedSave(id); saved {
		t.Error("libvirt still has a managed save image")
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("save image %s still there after the start (%v)", path, err)
	}
}

// corrupt overwrites the save image's header, so that libvirt refuses to restore it.
func corrupt(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteAt([]byte("not a save image"), 0); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
