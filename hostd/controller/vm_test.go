package controller

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"deskhost/hostd/memscrub"
	"deskhost/hostd/service"
	"deskhost/hostd/virt"
	"deskhost/hostd/workspace"
	"deskhost/internal/catalog"
)

const bootWithin = 3 * time.Minute

// scrubLog records each scrub the controller performs and the markers the test finds in
// the held RAM right after the zeroing, before it is released.
type scrubLog struct {
	mu      sync.Mutex
	markers map[string][]byte // id -> marker to look for
	found   map[string][]int64
}

func (s *scrubLog) hook(c *Controller) {
	c.afterZero = func(id string, h *memscrub.Held) {
		s.mu.Lock()
		m := s.markers[id]
		s.mu.Unlock()
		var n int64 = -1
		if m != nil {
			var err error
			if n, err = h.Count(m); err != nil {
				n = -2
			}
		}
		s.mu.Lock()
		s.found[id] = append(s.found[id], n)
		s.mu.Unlock()
	}
}

func (s *scrubLog) scrubs(id string) []int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.found[id])
}

func newScrubLog() *scrubLog {
	return &scrubLog{markers: map[string][]byte{}, found: map[string][]int64{}}
}

// TestLifecycleAgainstLibvirt drives one WorkSpace through create → AVAILABLE → reboot →
// stop → start → terminate, checking each step against libvirt itself (domain state,
// domain XML, volumes), the guest (files on both volumes survive), and the scrub log.
func TestLifecycleAgainstLibvirt(t *testing.T) {
	sl := newScrubLog()
	h := newHarness(t, nil, sl.hook)
	ctx := context.Background()
	w := h.create("alice", autoStop)
	t0 := time.Now()
	seen := h.waitState(w.ID, workspace.Available, bootWithin)
	t.Logf("PENDING → AVAILABLE in %s (states %v)", time.Since(t0).Round(time.Millisecond), seen)
	if seen[0] != workspace.Pending {
		t.Errorf("first state seen %s, want PENDING", seen[0])
	}
	if st := h.domainState(w.ID); st != virt.Running {
		t.Fatalf("libvirt says the domain is %s", st)
	}
	checkDomain(t, h, w.ID)
	checkVolumes(t, h, w.ID)

	a := h.agent(w.ID)
	for _, p := range []string{"/sysroot/marker", "/home/marker"} {
		if err := a.WriteFile(ctx, p, []byte("kept across reboots: "+p)); err != nil {
			t.Fatal(err)
		}
	}
	a.Close()
	pid := qemuPID(t, w.ID)

	// Reboot restarts qemu: a new process, RAM of the old one scrubbed, data kept.
	if failed, err := h.svc.RebootWorkspaces(ctx, []string{w.ID}); err != nil || len(failed) > 0 {
		t.Fatalf("reboot: %v %+v", err, failed)
	}
	if st := h.get(w.ID).State; st != workspace.Rebooting && st != workspace.Available {
		t.Fatalf("after RebootWorkspaces the WorkSpace is %s", st)
	}
	seen = h.waitState(w.ID, workspace.Available, bootWithin)
	if !slices.Contains(seen, workspace.Rebooting) {
		t.Errorf("reboot states %v never showed REBOOTING", seen)
	}
	if p2 := qemuPID(t, w.ID); p2 == pid {
		t.Errorf("reboot kept qemu %d: the reboot did not restart qemu", pid)
	}
	if n := len(sl.scrubs(w.ID)); n != 1 {
		t.Errorf("%d scrubs after the reboot, want 1", n)
	}
	checkFiles(t, h, w.ID)

	// A refused operation names the current state.
	failed, _ := h.svc.StartWorkspaces(ctx, []string{w.ID})
	if len(failed) != 1 || failed[0].Code != string(catalog.InvalidResourceState) || !strings.Contains(failed[0].Message, "AVAILABLE") {
		t.Errorf("start of an AVAILABLE WorkSpace: %+v", failed)
	}

	// Stop: the domain is shut off but kept, volumes kept, RAM scrubbed.
	if failed, err := h.svc.StopWorkspaces(ctx, []string{w.ID}); err != nil || len(failed) > 0 {
		t.Fatalf("stop: %v %+v", err, failed)
	}
	h.waitState(w.ID, workspace.Stopped, time.Minute)
	if st := h.domainState(w.ID); st != virt.Shutoff {
		t.Errorf("stopped WorkSpace: libvirt says %s, want shutoff", st)
	}
	if len(h.volumes(w.ID)) != 2 {
		t.Errorf("stopped WorkSpace lost volumes: %v", h.volumes(w.ID))
	}
	if n := len(sl.scrubs(w.ID)); n != 2 {
		t.Errorf("%d scrubs after the stop, want 2", n)
	}
	failed, _ = h.svc.RebootWorkspaces(ctx, []string{w.ID})
	if len(failed) != 1 || !strings.Contains(failed[0].Message, "STOPPED") {
		t.Errorf("reboot of a STOPPED WorkSpace: %+v", failed)
	}
	if err := h.svc.ModifyWorkspaceState(ctx, w.ID, workspace.AdminMaintenance); !catalog.IsError(err, catalog.InvalidResourceState) {
		t.Errorf("ADMIN_MAINTENANCE of a STOPPED WorkSpace: %v", err)
	}

	// Start: boots again with the data.
	if failed, err := h.svc.StartWorkspaces(ctx, []string{w.ID}); err != nil || len(failed) > 0 {
		t.Fatalf("start: %v %+v", err, failed)
	}
	seen = h.waitState(w.ID, workspace.Available, bootWithin)
	if !slices.Contains(seen, workspace.Starting) {
		t.Errorf("start states %v never showed STARTING", seen)
	}
	checkFiles(t, h, w.ID)

	// Maintenance: reboot refused, then back to AVAILABLE.
	if err := h.svc.ModifyWorkspaceState(ctx, w.ID, workspace.AdminMaintenance); err != nil {
		t.Fatal(err)
	}
	failed, _ = h.svc.RebootWorkspaces(ctx, []string{w.ID})
	if len(failed) != 1 || !strings.Contains(failed[0].Message, "ADMIN_MAINTENANCE") {
		t.Errorf("reboot in ADMIN_MAINTENANCE: %+v", failed)
	}
	if err := h.svc.ModifyWorkspaceState(ctx, w.ID, workspace.Available); err != nil {
		t.Fatal(err)
	}

	// Terminate: domain, volumes and files gone; RAM scrubbed.
	if failed, err := h.svc.TerminateWorkspaces(ctx, []string{w.ID}); err != nil || len(failed) > 0 {
		t.Fatalf("terminate: %v %+v", err, failed)
	}
	h.waitState(w.ID, workspace.Terminated, time.Minute)
	if st := h.domainState(w.ID); st != virt.Missing {
		t.Errorf("terminated WorkSpace: libvirt still has the domain (%s)", st)
	}
	if v := h.volumes(w.ID); len(v) != 0 {
		t.Errorf("terminated WorkSpace: volumes left %v", v)
	}
	if n := len(sl.scrubs(w.ID)); n != 3 {
		t.Errorf("%d scrubs after the terminate, want 3", n)
	}
	// One WorkSpace per user until TERMINATED; then the user can have a new one.
	h.create("alice")
}

func checkFiles(t *testing.T, h *harness, id string) {
	t.Helper()
	a := h.agent(id)
	defer a.Close()
	for _, p := range []string{"/sysroot/marker", "/home/marker"} {
		b, err := a.ReadFile(context.Background(), p)
		if err != nil || string(b) != "kept across reboots: "+p {
			t.Errorf("%s after restart: %q, %v", p, b, err)
		}
	}
}

// checkDomain reads the live domain XML back from libvirt and checks every property the
// design promises.
func checkDomain(t *testing.T, h *harness, id string) {
	t.Helper()
	d, err := h.conn.XML(id)
	if err != nil {
		t.Fatal(err)
	}
	if d.Type != "qemu" {
		t.Errorf("domain type %q", d.Type)
	}
	mb := d.MemoryBacking
	switch {
	case mb == nil || mb.MemorySource == nil || mb.MemorySource.Type != "memfd":
		t.Errorf("RAM is not memfd-backed: %+v", mb)
	case mb.MemoryAccess == nil || mb.MemoryAccess.Mode != "shared":
		t.Errorf("memfd RAM is not shared: %+v", mb.MemoryAccess)
	case mb.MemoryNosharepages == nil:
		t.Error("no <nosharepages/>")
	case mb.MemoryDiscard != nil:
		t.Error("<discard/> would drop pages unscrubbed")
	}
	if d.Memory == nil || d.Memory.DumpCore != "off" {
		t.Errorf("guest memory may be dumped: %+v", d.Memory)
	}
	if d.OnCrash != "destroy" {
		t.Errorf("on_crash %q", d.OnCrash)
	}
	if d.PM == nil || d.PM.SuspendToMem == nil || d.PM.SuspendToMem.Enabled != "no" || d.PM.SuspendToDisk == nil || d.PM.SuspendToDisk.Enabled != "no" {
		t.Errorf("guest suspend not disabled: %+v", d.PM)
	}
	if d.CPU == nil {
		t.Fatal("no CPU element")
	}
	for _, f := range []string{"vmx", "svm"} {
		found := false
		for _, cf := range d.CPU.Features {
			found = found || cf.Name == f && cf.Policy == "disable"
		}
		if !found {
			t.Errorf("CPU feature %s is not disabled: %+v", f, d.CPU.Features)
		}
	}
	nics := d.Devices.Interfaces
	if len(nics) != 2 {
		t.Fatalf("%d NICs, want 2", len(nics))
	}
	for i, want := range []string{h.mgmt, h.pri} {
		n := nics[i]
		if n.Source == nil || n.Source.Bridge == nil || n.Source.Bridge.Bridge != want {
			t.Errorf("NIC %d is not on bridge %s: %+v", i, want, n.Source)
		}
		if n.Model == nil || n.Model.Type != "virtio" {
			t.Errorf("NIC %d model %+v", i, n.Model)
		}
		if n.Address == nil || n.Address.PCI == nil || *n.Address.PCI.Slot != uint(3+i) {
			t.Errorf("NIC %d is not in PCI slot %d (guest eth%d)", i, 3+i, i)
		}
	}
	if len(d.Devices.Graphics) != 1 || d.Devices.Graphics[0].VNC == nil {
		t.Fatalf("graphics %+v", d.Devices.Graphics)
	}
	vnc := d.Devices.Graphics[0].VNC
	if vnc.Socket != h.ctl.VNCSocket(id) || vnc.Port > 0 || vnc.Listen != "" {
		t.Errorf("VNC is not on the unix socket only: %+v", vnc)
	}
	for _, l := range vnc.Listeners {
		if l.Address != nil || l.Network != nil {
			t.Errorf("VNC has a network listener: %+v", l)
		}
	}
	if len(d.Devices.Serials) != 1 || d.Devices.Serials[0].Source == nil || d.Devices.Serials[0].Source.File == nil ||
		d.Devices.Serials[0].Source.File.Path != h.ctl.SerialLog(id) {
		t.Errorf("serial console is not logged to a file: %+v", d.Devices.Serials)
	}
	if len(d.Devices.Panics) != 1 {
		t.Errorf("no pvpanic device: a guest crash would go unseen")
	}
}

func checkVolumes(t *testing.T, h *harness, id string) {
	t.Helper()
	vols := h.volumes(id)
	root, user := vols[rootVolume(id)], vols[userVolume(id)]
	img := h.ctl.cfg.Images.(StaticImages)[testImage]
	if root.Path == "" || user.Path == "" {
		t.Fatalf("libvirt lists volumes %v", vols)
	}
	if root.CapacityGiB != 80 || user.CapacityGiB != 10 {
		t.Errorf("logical sizes root %d GiB, user %d GiB; want the bundle's 80 and 10", root.CapacityGiB, user.CapacityGiB)
	}
	if root.Backing != img.Root {
		t.Errorf("root volume backs onto %q, want the image %q (copy-on-write)", root.Backing, img.Root)
	}
	if user.Backing != "" {
		t.Errorf("user volume has a backing file %q", user.Backing)
	}
	d, _ := h.conn.XML(id)
	var disks []string
	for _, dk := range d.Devices.Disks {
		disks = append(disks, dk.Source.File.File)
	}
	if !slices.Equal(disks, []string{root.Path, user.Path}) {
		t.Errorf("domain disks %v, want root then user %v", disks, []string{root.Path, user.Path})
	}
}

// TestTeardownScrubsGuestMemory proves the guide's promise: a guest fills most of its RAM
// with a marker; after teardown, the pages hostd held contain no marker. The same check
// with the scrub switched off finds the marker, so the test fails if the scrub is removed.
// A guest kernel crash (on_crash destroy) is a teardown too.
func TestTeardownScrubsGuestMemory(t *testing.T) {
	sl := newScrubLog()
	h := newHarness(t, nil, sl.hook)
	ctx := context.Background()
	// Three guests boot at once: the one left unscrubbed, the scrubbed one, the crashed one.
	unscrubbed, scrubbed, crashed := h.create("bob"), h.create("carol"), h.create("dave")
	for _, w := range []workspace.Workspace{unscrubbed, scrubbed, crashed} {
		h.waitState(w.ID, workspace.Available, bootWithin)
	}
	fill := func(id string) []byte {
		marker := []byte("DESKHOST-MEMORY-MARKER-" + id + "!")
		sl.mu.Lock()
		sl.markers[id] = marker
		sl.mu.Unlock()
		a := h.agent(id)
		n, err := a.FillMemory(ctx, string(marker), 90)
		if err != nil {
			t.Fatal(err)
		}
		a.Close()
		if n < testMemoryMiB<<20/3 {
			t.Fatalf("%s filled only %d bytes of %d MiB", id, n, testMemoryMiB)
		}
		// Before teardown the held pages do hold the marker: the check can see the guest's RAM.
		h.ctl.mu.Lock()
		held := h.ctl.held[id]
		h.ctl.mu.Unlock()
		if held == nil {
			t.Fatalf("%s: hostd holds no RAM for a running guest", id)
		}
		c, err := held.Count(marker)
		if err != nil {
			t.Fatal(err)
		}
		if want := int64(n) / int64(len(marker)) * 9 / 10; c < want {
			t.Fatalf("%s: %d markers in the held RAM before teardown, want ≥ %d: the held memfd is not the guest's RAM", id, c, want)
		}
		t.Logf("%s: guest filled %d MiB; %d markers in held RAM", id, n>>20, c)
		return marker
	}

	fill(unscrubbed.ID)
	h.ctl.skipZero.Store(true)
	if failed, err := h.svc.TerminateWorkspaces(ctx, []string{unscrubbed.ID}); err != nil || len(failed) > 0 {
		t.Fatal(err, failed)
	}
	h.waitState(unscrubbed.ID, workspace.Terminated, time.Minute)
	h.ctl.skipZero.Store(false)
	if f := sl.scrubs(unscrubbed.ID); len(f) != 1 || f[0] <= 0 {
		t.Fatalf("with the scrub off, the held RAM should still hold the marker: found %v", f)
	}

	fill(scrubbed.ID)
	if failed, err := h.svc.TerminateWorkspaces(ctx, []string{scrubbed.ID}); err != nil || len(failed) > 0 {
		t.Fatal(err, failed)
	}
	h.waitState(scrubbed.ID, workspace.Terminated, time.Minute)
	if f := sl.scrubs(scrubbed.ID); len(f) != 1 || f[0] != 0 {
		t.Fatalf("after terminate, markers found in the held RAM: %v (want exactly one scrub, 0 markers)", f)
	}

	fill(crashed.ID)
	pid := qemuPID(t, crashed.ID)
	a := h.agent(crashed.ID)
	_ = a.Crash(ctx)
	a.Close()
	// on_crash destroy ends qemu; the controller scrubs and boots the WorkSpace again.
	deadline := time.Now().Add(bootWithin)
	for len(sl.scrubs(crashed.ID)) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("guest crash: no scrub (domain %s)", h.domainState(crashed.ID))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if f := sl.scrubs(crashed.ID); f[0] != 0 {
		t.Fatalf("after the guest crashed, %d markers in the held RAM", f[0])
	}
	h.waitState(crashed.ID, workspace.Available, bootWithin)
	for time.Now().Before(deadline) {
		if p, _, err := virt.QemuProcess(crashed.ID); err == nil && p != pid {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if qemuPID(t, crashed.ID) == pid {
		t.Fatal("the crashed guest was not restarted")
	}
	actx, cancel := context.WithTimeout(ctx, bootWithin)
	defer cancel()
	a = h.agent(crashed.ID)
	if st, err := a.Status(actx); err != nil || st.WorkspaceID != crashed.ID {
		t.Fatalf("the restarted guest's agent: %+v %v", st, err)
	}
}

// TestProvisioningFailuresGoToError: a guest that never answers goes to ERROR with the
// reason when the provisioning limit passes; one whose qemu dies while booting goes to ERROR
// at once. Both are powered off with their RAM scrubbed, and both can be terminated.
func TestProvisioningFailuresGoToError(t *testing.T) {
	sl := newScrubLog()
	h := newHarness(t, func(c *Config) { c.ProvisionTimeout = 40 * time.Second }, sl.hook)
	ctx := context.Background()
	// The broken image's kernel finds no init: it panics and reboots, forever.
	silent := h.create("erin", func(r *service.CreateRequest) { r.BundleID = brokenBundle })
	died := h.create("frank")
	deadline := time.Now().Add(bootWithin)
	for h.domainState(died.ID) != virt.Running {
		if time.Now().After(deadline) {
			t.Fatal("frank's domain never ran")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := h.conn.Destroy(died.ID); err != nil { // qemu dies while the guest boots
		t.Fatal(err)
	}
	h.waitState(died.ID, workspace.Error, time.Minute)
	w := h.get(died.ID)
	if w.ErrorCode != "BootFailed" || !strings.Contains(w.ErrorMessage, "stopped while booting") {
		t.Errorf("a guest that died while booting: %s: %s", w.ErrorCode, w.ErrorMessage)
	}
	waitScrubs(t, sl, died.ID, 1)

	h.waitState(silent.ID, workspace.Error, 2*time.Minute)
	w = h.get(silent.ID)
	if w.ErrorCode != "BootFailed" || !strings.Contains(w.ErrorMessage, "did not answer within 40s") {
		t.Errorf("a guest that never answered: %s: %s", w.ErrorCode, w.ErrorMessage)
	}
	if d := w.StateSince.Sub(w.Created); d < 40*time.Second {
		t.Errorf("ERROR after %s, before the 40 s limit", d)
	}
	if st := h.domainState(silent.ID); st.Active() {
		t.Errorf("the guest that never answered still runs (%s)", st)
	}
	waitScrubs(t, sl, silent.ID, 1)
	for _, id := range []string{silent.ID, died.ID} {
		if f, err := h.svc.TerminateWorkspaces(ctx, []string{id}); err != nil || len(f) > 0 {
			t.Fatal(err, f)
		}
		h.waitState(id, workspace.Terminated, time.Minute)
		if st := h.domainState(id); st != virt.Missing {
			t.Errorf("%s: domain %s after terminate", id, st)
		}
	}
}

func waitScrubs(t *testing.T, sl *scrubLog, id string, n int) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for len(sl.scrubs(id)) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d scrubs, want %d", id, len(sl.scrubs(id)), n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
