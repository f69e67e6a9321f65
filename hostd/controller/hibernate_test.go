package controller

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"deskhost/hostd/service"
	"deskhost/hostd/workspace"
)

// TestHibernateResume: AutoStop's stop of an AutoStop WorkSpace idle past its AutoStop
// time saves its running guest to disk, and its start restores it: the guest agent's
// count of answered requests (state in a guest process's memory) and the guest's uptime
// run on across the stop, where a cold stop and start of the same WorkSpace (hibernation
// off) reset both. While the WorkSpace is STOPPED the saved state holds the guest's RAM (a
// marker a guest process keeps resident) and is root's alone; after the resume its blocks
// are zeros and its name is gone. A saved state that cannot be restored gives a cold boot
// that says so. Figures: hibernate → STOPPED and resume → AVAILABLE against cold stop and
// cold start of the same WorkSpace, and the saved state's size against guest RAM.
func TestHibernateResume(t *testing.T) {
	h := newHarness(t, nil, nil)
	ctx := context.Background()
	w := h.create("erin", autoStop)
	id := w.ID
	h.waitState(id, workspace.Available, bootWithin)

	// counter asks the guest agent n times and returns its count and the guest's uptime.
	counter := func(n int) (answered, uptimeMs uint64) {
		t.Helper()
		a := h.agent(id)
		defer a.Close()
		for i := 0; i < n; i++ {
			st, err := a.Status(ctx)
			if err != nil {
				t.Fatal(err)
			}
			answered, uptimeMs = st.Answered, st.UptimeMs
		}
		return
	}
	// The service as it will be past the WorkSpace's AutoStop time (60 minutes idle).
	idleLater := service.New(h.store, service.Config{ComputeTypes: h.ctl.cfg.ComputeTypes, WorkspaceQuota: 20, Host: h.ctl.cfg.Owner},
		h.ctl, func() time.Time { return time.Now().Add(2 * time.Hour) }, h.ctl.cfg.Log)
	stopStart := func(what string) (stop, start time.Duration) {
		t.Helper()
		t0 := time.Now()
		if what == "hibernate" {
			// AutoStop's own stop: the idle WorkSpace is due on a clock past its AutoStop time.
			if ids, err := idleLater.AutoStop(ctx); err != nil || len(ids) != 1 || ids[0] != id {
				t.Fatalf("AutoStop stopped %v (%v), want [%s]", ids, err, id)
			}
		} else if failed, err := h.svc.StopWorkspaces(ctx, []string{id}); err != nil || len(failed) > 0 {
			t.Fatal(what, err, failed)
		}
		h.waitState(id, workspace.Stopped, 2*time.Minute)
		stop = time.Since(t0)
		if what == "hibernate" {
			checkSaved(t, h, id)
		}
		t0 = time.Now()
		if failed, err := h.svc.StartWorkspaces(ctx, []string{id}); err != nil || len(failed) > 0 {
			t.Fatal(what, err, failed)
		}
		h.waitState(id, workspace.Available, bootWithin)
		return stop, time.Since(t0)
	}

	// Cold (as before hibernation): the stop powers the guest off, the start boots it afresh.
	h.ctl.coldStop.Store(true)
	before, _ := counter(40)
	coldStop, coldStart := stopStart("cold")
	h.ctl.coldStop.Store(false)
	if after, _ := counter(1); after >= before {
		t.Fatalf("after a cold stop and start the agent has answered %d requests (%d before): not a fresh boot", after, before)
	}

	// Hibernate: AutoStop's stop saves the guest, the start restores it.
	a := h.agent(id)
	marker := "DESKHOST-HIBERNATE-MARKER-" + id + "!"
	if _, err := a.FillMemory(ctx, marker, 30); err != nil {
		t.Fatal(err)
	}
	a.Close()
	hibernateMarker = []byte(marker)
	before, upBefore := counter(40)
	hibStop, resume := stopStart("hibernate")
	after, upAfter := counter(1)
	if after <= before || upAfter <= upBefore {
		t.Fatalf("after hibernate and resume the agent has answered %d requests (%d before) and the guest is up %d ms (%d before): the guest was not resumed", after, before, upAfter, upBefore)
	}
	if w := h.get(id); w.Hibernated || w.ErrorCode != "" {
		t.Fatalf("resumed record: hibernated=%v error %s %s", w.Hibernated, w.ErrorCode, w.ErrorMessage)
	}
	if _, err := os.Stat(h.ctl.savedState(id)); !os.IsNotExist(err) {
		t.Fatalf("the saved state is still there after the resume: %v", err)
	}
	left, err := os.ReadFile(witness(h, id))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(left, []byte(marker)) || len(bytes.Trim(left, "\x00")) != 0 {
		t.Fatalf("the saved state's blocks were not zeroed before it was removed (%d bytes, marker %v)", len(left), bytes.Contains(left, []byte(marker)))
	}
	os.Remove(witness(h, id))
	t.Logf("hibernate -> STOPPED %.1fs vs cold stop %.1fs (%.2fx); resume -> AVAILABLE %.1fs vs cold start %.1fs (%.2fx); the agent answered %d then %d requests, uptime %d -> %d ms",
		hibStop.Seconds(), coldStop.Seconds(), hibStop.Seconds()/coldStop.Seconds(), resume.Seconds(), coldStart.Seconds(), resume.Seconds()/coldStart.Seconds(),
		before, after, upBefore, upAfter)

	// A saved state that cannot be restored: the start boots afresh and says why.
	if failed, err := h.svc.StopWorkspaces(ctx, []string{id}); err != nil || len(failed) > 0 {
		t.Fatal(err, failed)
	}
	h.waitState(id, workspace.Stopped, 2*time.Minute)
	if err := os.Truncate(h.ctl.savedState(id), 4096); err != nil {
		t.Fatal(err)
	}
	if failed, err := h.svc.StartWorkspaces(ctx, []string{id}); err != nil || len(failed) > 0 {
		t.Fatal(err, failed)
	}
	h.waitState(id, workspace.Available, bootWithin)
	rec := h.get(id)
	if rec.ErrorCode != "ResumeFailed" || rec.Hibernated {
		t.Fatalf("a start from a broken saved state: AVAILABLE with error %q %q, hibernated=%v; want ResumeFailed saying why", rec.ErrorCode, rec.ErrorMessage, rec.Hibernated)
	}
	if n, _ := counter(1); n >= after {
		t.Fatalf("after the failed restore the agent has answered %d requests: not a fresh boot", n)
	}
	if _, err := os.Stat(h.ctl.savedState(id)); !os.IsNotExist(err) {
		t.Fatalf("the broken saved state is still there: %v", err)
	}
	t.Logf("broken saved state: %s", rec.ErrorMessage)
}

// hibernateMarker is what the guest keeps in RAM while it is saved.
var hibernateMarker []byte

// witness is a second name for the saved state's inode, taken while the WorkSpace is
// STOPPED: it outlives the removal, so its content is what the saved state's blocks hold.
func witness(h *harness, id string) string {
	return filepath.Join(filepath.Dir(h.ctl.savedState(id)), "witness-"+id)
}

// checkSaved checks a hibernated WorkSpace's saved state: recorded, root's alone, holding
// the guest's RAM (the marker), and about the guest RAM's size.
func checkSaved(t *testing.T, h *harness, id string) {
	t.Helper()
	if w := h.get(id); !w.Hibernated {
		t.Fatalf("STOPPED after AutoStop's stop, but not hibernated")
	}
	path := h.ctl.savedState(id)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("no saved state: %v", err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	di, _ := os.Stat(filepath.Dir(path))
	if fi.Mode().Perm() != 0o600 || st.Uid != 0 || di.Mode().Perm() != 0o700 {
		t.Fatalf("saved state %s: mode %v uid %d in a directory of mode %v; want 0600, root's, in a 0700 directory", path, fi.Mode().Perm(), st.Uid, di.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(b, hibernateMarker); n == 0 {
		t.Fatalf("the saved state (%d bytes) does not hold the marker the guest keeps in RAM", len(b))
	} else {
		t.Logf("saved state: %d MiB for %d MiB of guest RAM (%.2fx), %d copies of the marker", fi.Size()>>20, testMemoryMiB, float64(fi.Size())/float64(testMemoryMiB<<20), n)
	}
	if err := os.Link(path, witness(h, id)); err != nil {
		t.Fatal(err)
	}
}
