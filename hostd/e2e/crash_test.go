package e2e

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/workspaces"
	"github.com/aws/aws-sdk-go-v2/service/workspaces/types"

	"deskhost/hostd/confine"
	"deskhost/hostd/virt"
	"deskhost/internal/testenv"
)

const boot = 4 * time.Minute

// TestKilledHostdConverges kills hostd with SIGKILL during create and during terminate,
// leaves an orphan domain and volume behind its back, restarts it, and checks that store
// and libvirt converge: no orphaned domain or volume, no lost WorkSpace, every interrupted
// operation finished.
func TestKilledHostdConverges(t *testing.T) {
	h := newHost(t)
	h.start()
	ctx := context.Background()

	// Kill during create: bob right after the API accepted it, alice once her domain runs
	// but before her agent answered.
	ids := h.create("alice", "bob")
	alice, bob := ids[0], ids[1]
	deadline := time.Now().Add(boot)
	for {
		if st, _ := h.libvirtView(alice); st == virt.Running {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("alice's domain never started")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if s := h.describe(alice).State; s != types.WorkspaceStatePending {
		t.Logf("alice is already %s at the kill (wanted PENDING; the kill is later than planned)", s)
	}
	h.kill()

	// Behind hostd's back: an orphan domain (running, marked as this hostd's, as if its
	// record were lost) and an orphan volume.
	owner, err := h.conn.Owner(alice)
	if err != nil || owner == "" {
		t.Fatalf("alice's domain carries no owner mark: %q %v", owner, err)
	}
	orphan := "ws-orphan00001"
	root, err := h.conn.CreateVolume(h.pool, orphan+"-root.qcow2", 1, "")
	if err != nil {
		t.Fatal(err)
	}
	user, err := h.conn.CreateVolume(h.pool, orphan+"-user.qcow2", 1, "")
	if err != nil {
		t.Fatal(err)
	}
	img := testenv.DesktopImage(t)
	// Confined as hostd confines its own guests: qemu as libvirt-qemu, given only its files.
	guests, err := confine.Lookup("libvirt-qemu", "", "", false)
	if err != nil {
		t.Fatal(err)
	}
	orun := filepath.Join(h.dir, "run", orphan)
	if err := os.MkdirAll(orun, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := guests.Prepare(orun, []string{root.Path, user.Path}, nil); err != nil {
		t.Fatal(err)
	}
	spec := virt.Spec{Name: orphan, Owner: owner, Type: "qemu", VCPUs: 1, MemoryMiB: 128, Kernel: filepath.Join(img, "vmlinux"),
		Initrd: filepath.Join(img, "initrd.img"), RootVolume: root.Path, UserVolume: user.Path, RunAs: guests.Label(),
		Management: virt.NIC{Bridge: "dem" + h.pool[4:]}, Primary: virt.NIC{Bridge: "dep" + h.pool[4:]},
		VNCSocket: filepath.Join(orun, "vnc.sock"), AgentSocket: filepath.Join(orun, "agent.sock"), SerialLog: filepath.Join(orun, "serial.log")}
	if err := h.conn.Define(spec); err != nil {
		t.Fatal(err)
	}
	if err := h.conn.Start(orphan); err != nil {
		t.Fatal(err)
	}
	if _, err := h.conn.CreateVolume(h.pool, "ws-orphan00002-user.qcow2", 1, ""); err != nil {
		t.Fatal(err)
	}

	h.start()
	h.waitState(alice, types.WorkspaceStateAvailable, boot)
	h.waitState(bob, types.WorkspaceStateAvailable, boot)
	for _, id := range []string{alice, bob} {
		st, vols := h.libvirtView(id)
		if st != virt.Running || vols != 2 {
			t.Errorf("%s after restart: domain %s, %d volumes; want running with 2", id, st, vols)
		}
	}
	waitFor(t, "orphans removed", time.Minute, func() bool {
		st, n := h.libvirtView(orphan)
		_, n2 := h.libvirtView("ws-orphan00002")
		return st == virt.Missing && n == 0 && n2 == 0
	})
	// The restarted hostd holds the RAM of both running guests again (alice's qemu survived
	// the kill; its RAM was re-acquired through /proc).
	waitFor(t, "RAM of both guests held", 30*time.Second, func() bool { return h.heldRAM() == 2 })

	// Kill during terminate, right after the API accepted it.
	if out, err := h.client().TerminateWorkspaces(ctx, &workspaces.TerminateWorkspacesInput{
		TerminateWorkspaceRequests: []types.TerminateRequest{{WorkspaceId: aws.String(alice)}},
	}); err != nil || len(out.FailedRequests) > 0 {
		t.Fatal(err, out)
	}
	h.kill()
	h.start()
	h.waitState(alice, types.WorkspaceStateTerminated, time.Minute)
	if st, vols := h.libvirtView(alice); st != virt.Missing || vols != 0 {
		t.Errorf("alice after terminate across a kill: domain %s, %d volumes", st, vols)
	}

	// Kill while a terminate is mid-teardown: the domain already gone, volumes not yet.
	if out, err := h.client().TerminateWorkspaces(ctx, &workspaces.TerminateWorkspacesInput{
		TerminateWorkspaceRequests: []types.TerminateRequest{{WorkspaceId: aws.String(bob)}},
	}); err != nil || len(out.FailedRequests) > 0 {
		t.Fatal(err, out)
	}
	waitFor(t, "bob's domain destroyed", time.Minute, func() bool { st, _ := h.libvirtView(bob); return !st.Active() })
	h.kill()
	h.start()
	h.waitState(bob, types.WorkspaceStateTerminated, time.Minute)
	if st, vols := h.libvirtView(bob); st != virt.Missing || vols != 0 {
		t.Errorf("bob after terminate across a kill: domain %s, %d volumes", st, vols)
	}
	// Nothing lost: both records are there, TERMINATED.
	out, err := h.client().DescribeWorkspaces(ctx, &workspaces.DescribeWorkspacesInput{DirectoryId: aws.String(directoryID)})
	if err != nil || len(out.Workspaces) != 2 {
		t.Fatalf("records after the crashes: %v %+v", err, out)
	}
	if n := h.heldRAM(); n != 0 {
		t.Errorf("hostd still holds %d guest RAM files with no guest running", n)
	}
}

func waitFor(t *testing.T, what string, within time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for: %s", within, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
