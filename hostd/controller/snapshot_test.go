package controller

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"deskhost/hostd/agent"
	"deskhost/hostd/api"
	"deskhost/hostd/virt"
	"deskhost/hostd/workspace"
	"deskhost/internal/hostconfig"
	"deskhost/internal/hostdclient"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/workspaces"
	"github.com/aws/aws-sdk-go-v2/service/workspaces/types"
	"github.com/aws/smithy-go"
)

// offsetClock is real time plus an offset the test advances (the snapshot schedule), so
// that boot deadlines still pass at the real pace.
type offsetClock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *offsetClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

func (c *offsetClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.offset += d
	c.mu.Unlock()
}

// sdkClient serves hostd's API over h's service on loopback TLS and returns AWS's Go SDK
// client for it.
func (h *harness) sdkClient(t *testing.T) *workspaces.Client {
	t.Helper()
	return h.apiClient(t).Client
}

// apiClient is sdkClient's hostd client: AWS's SDK and hostd's own operations.
func (h *harness) apiClient(t *testing.T) *hostdclient.Client {
	t.Helper()
	const keyID, secret = "AKIDSNAPSHOTTEST0001", "snapshot-test-secret-key-0123456789abcdef"
	srv := api.New(h.svc, api.Options{
		Region:     "local",
		AccessKeys: []hostconfig.AccessKey{{ID: keyID, Secret: secret, Name: "admin"}},
		Throttle:   hostconfig.Throttle{Rate: 1000, Burst: 1000},
	})
	cert, certPath, err := api.LoadOrCreateCertificate("", "", filepath.Join(h.dir, "tls"), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.ServeTLSListener(ctx, ln, api.TLSConfig(cert)) }()
	t.Cleanup(func() { cancel(); <-done })
	c, err := hostdclient.New(hostdclient.Options{Endpoint: "https://" + ln.Addr().String(), CAFile: certPath,
		AccessKeyID: keyID, SecretAccessKey: secret, Region: "local", MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func apiCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// TestSnapshotRebuildRestore: one WorkSpace on real libvirt + qemu. Marker A on the user
// volume and R on the root volume; the injected clock moves 12 h: no snapshot while the
// WorkSpace is UNHEALTHY, then, healthy again, a snapshot pair is cut with the guest running; marker B on both; RebuildWorkspaces (through AWS's SDK) gives a
// fresh root (neither R nor B) and the snapshot's user volume (A, not B), passing through
// REBUILDING; RestoreWorkspace gives both volumes as at the snapshot (A and R, not B),
// passing through RESTORING. Wrong states get the guide's refusals and change nothing.
func TestSnapshotRebuildRestore(t *testing.T) {
	clk := &offsetClock{}
	type took struct{ total, frozen time.Duration }
	snapTook := make(chan took, 4)
	h := newHarness(t, func(c *Config) { c.Now = clk.Now }, func(c *Controller) {
		c.snapshotted = func(id string, total, frozen time.Duration) { snapTook <- took{total, frozen} }
	})
	cl := h.sdkClient(t)
	ctx := context.Background()

	created := time.Now()
	w := h.create("alice")
	h.waitState(w.ID, workspace.Available, 8*time.Minute)
	createTook := time.Since(created)

	snaps, err := cl.DescribeWorkspaceSnapshots(ctx, &workspaces.DescribeWorkspaceSnapshotsInput{WorkspaceId: aws.String(w.ID)})
	if err != nil {
		t.Fatal(err)
	}
	if len(snaps.RebuildSnapshots)+len(snaps.RestoreSnapshots) != 0 {
		t.Fatalf("a new WorkSpace has snapshots before its first 12 h: %+v", snaps)
	}
	// Nothing to restore yet.
	if _, err := cl.RestoreWorkspace(ctx, &workspaces.RestoreWorkspaceInput{WorkspaceId: aws.String(w.ID)}); apiCode(err) != "InvalidResourceStateException" {
		t.Fatalf("restore without a snapshot: %v, want InvalidResourceStateException", err)
	}
	// Unknown WorkSpace.
	if _, err := cl.DescribeWorkspaceSnapshots(ctx, &workspaces.DescribeWorkspaceSnapshotsInput{WorkspaceId: aws.String("ws-00000000zz")}); apiCode(err) != "ResourceNotFoundException" {
		t.Fatalf("snapshots of an unknown WorkSpace: %v", err)
	}

	// The agent's channel serves one connection at a time: each call dials and hangs up, so
	// that hostd's health checks (and its freeze) get through between them.
	dial := func(actx context.Context) *agent.Client {
		t.Helper()
		c, err := agent.Dial(actx, h.ctl.AgentSocket(w.ID))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	write := func(p, data string) {
		t.Helper()
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		a := dial(wctx)
		defer a.Close()
		if err := a.WriteFile(wctx, p, []byte(data)); err != nil {
			t.Fatalf("write %s: %v", p, err)
		}
	}
	// has reports whether p exists in the guest with data.
	has := func(p, data string) bool {
		t.Helper()
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		a := dial(rctx)
		defer a.Close()
		b, err := a.ReadFile(rctx, p)
		var ae *agent.Error
		switch {
		case err == nil:
			if string(b) != data {
				t.Fatalf("%s holds %q, want %q", p, b, data)
			}
			return true
		case errors.As(err, &ae) && strings.Contains(ae.Msg, "no such file"):
			return false
		}
		t.Fatalf("read %s: %v", p, err)
		return false
	}
	const userA, rootR, userB, rootB = "/home/marker-A", "/sysroot/marker-R", "/home/marker-B", "/sysroot/marker-B"
	write(userA, "A")
	write(rootR, "R")

	// 12 h on, but the WorkSpace is UNHEALTHY (this test holds the agent's only channel, so
	// hostd's status requests go unanswered): no snapshot (guide §7.1).
	hctx, hcancel := context.WithTimeout(ctx, 10*time.Second)
	held := dial(hctx)
	hcancel()
	clk.Advance(workspace.SnapshotInterval + time.Minute)
	h.waitState(w.ID, workspace.Unhealthy, 3*time.Minute)
	time.Sleep(3 * time.Second)
	select {
	case <-snapTook:
		t.Fatal("a snapshot was taken while the WorkSpace was UNHEALTHY")
	default:
	}
	if snaps, err := cl.DescribeWorkspaceSnapshots(ctx, &workspaces.DescribeWorkspaceSnapshotsInput{WorkspaceId: aws.String(w.ID)}); err != nil || len(snaps.RestoreSnapshots) != 0 {
		t.Fatalf("snapshots of an UNHEALTHY WorkSpace: %v %+v", err, snaps)
	}
	// Healthy again: the pair due is cut, its guest running.
	held.Close()
	var st took
	select {
	case st = <-snapTook:
	case <-time.After(3 * time.Minute):
		t.Fatal("no snapshot within 3 min of the clock passing 12 h")
	}
	snaps, err = cl.DescribeWorkspaceSnapshots(ctx, &workspaces.DescribeWorkspaceSnapshotsInput{WorkspaceId: aws.String(w.ID)})
	if err != nil {
		t.Fatal(err)
	}
	if len(snaps.RebuildSnapshots) != 1 || len(snaps.RestoreSnapshots) != 1 || snaps.RestoreSnapshots[0].SnapshotTime == nil {
		t.Fatalf("after 12 h: %+v, want one rebuild and one restore snapshot", snaps)
	}
	if d := snaps.RestoreSnapshots[0].SnapshotTime.Sub(clk.Now()); d > time.Second || d < -3*time.Minute {
		t.Fatalf("SnapshotTime %s is not the injected clock's (%s)", snaps.RestoreSnapshots[0].SnapshotTime, clk.Now())
	}
	if s := h.domainState(w.ID); s != virt.Running {
		t.Fatalf("after the snapshot the guest is %s, want running", s)
	}
	files, _ := os.ReadDir(h.ctl.snapshotDir(w.ID))
	if len(files) != 2 {
		t.Fatalf("snapshot directory holds %d files, want the pair", len(files))
	}
	t.Logf("figure: snapshot of root+user with the guest running: %s in all, filesystems frozen %s", st.total, st.frozen)
	snapshotBaseline(t, h, w, st.total)
	// No second pair before the next 12 h.
	time.Sleep(5 * time.Second)
	select {
	case <-snapTook:
		t.Fatal("a second snapshot within the same 12 h")
	default:
	}

	write(userB, "B")
	write(rootB, "B")

	// Wrong state: ADMIN_MAINTENANCE refuses rebuild (a FailedRequests entry) and restore,
	// and changes nothing.
	if _, err := cl.ModifyWorkspaceState(ctx, &workspaces.ModifyWorkspaceStateInput{WorkspaceId: aws.String(w.ID), WorkspaceState: types.TargetWorkspaceStateAdminMaintenance}); err != nil {
		t.Fatal(err)
	}
	rb, err := cl.RebuildWorkspaces(ctx, &workspaces.RebuildWorkspacesInput{RebuildWorkspaceRequests: []types.RebuildRequest{{WorkspaceId: aws.String(w.ID)}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(rb.FailedRequests) != 1 || aws.ToString(rb.FailedRequests[0].ErrorCode) != "InvalidResourceStateException" ||
		!strings.Contains(aws.ToString(rb.FailedRequests[0].ErrorMessage), "ADMIN_MAINTENANCE") {
		t.Fatalf("rebuild in ADMIN_MAINTENANCE: %+v", rb.FailedRequests)
	}
	if _, err := cl.RestoreWorkspace(ctx, &workspaces.RestoreWorkspaceInput{WorkspaceId: aws.String(w.ID)}); apiCode(err) != "InvalidResourceStateException" {
		t.Fatalf("restore in ADMIN_MAINTENANCE: %v", err)
	}
	if got := h.get(w.ID).State; got != workspace.AdminMaintenance {
		t.Fatalf("a refused rebuild changed the state to %s", got)
	}
	if _, err := cl.ModifyWorkspaceState(ctx, &workspaces.ModifyWorkspaceStateInput{WorkspaceId: aws.String(w.ID), WorkspaceState: types.TargetWorkspaceStateAvailable}); err != nil {
		t.Fatal(err)
	}
	h.waitState(w.ID, workspace.Available, time.Minute)

	// Rebuild: fresh root, user volume from the snapshot.
	start := time.Now()
	rb, err = cl.RebuildWorkspaces(ctx, &workspaces.RebuildWorkspacesInput{RebuildWorkspaceRequests: []types.RebuildRequest{{WorkspaceId: aws.String(w.ID)}}})
	if err != nil || len(rb.FailedRequests) != 0 {
		t.Fatalf("rebuild: %v %+v", err, rb)
	}
	seen := h.waitState(w.ID, workspace.Available, 8*time.Minute)
	rebuildTook := time.Since(start)
	if !slices.Contains(seen, workspace.Rebuilding) {
		t.Errorf("rebuild went through %v, not REBUILDING", seen)
	}
	if has(rootR, "R") || has(rootB, "B") {
		t.Error("after rebuild the root volume still holds a marker: it is not the image's")
	}
	if !has(userA, "A") {
		t.Error("after rebuild the user volume lost marker A, which the snapshot holds")
	}
	if has(userB, "B") {
		t.Error("after rebuild the user volume holds marker B, written after the snapshot")
	}

	// Restore: both volumes as at the snapshot.
	write(userB, "B")
	write(rootB, "B")
	start = time.Now()
	if _, err := cl.RestoreWorkspace(ctx, &workspaces.RestoreWorkspaceInput{WorkspaceId: aws.String(w.ID)}); err != nil {
		t.Fatal(err)
	}
	seen = h.waitState(w.ID, workspace.Available, 8*time.Minute)
	restoreTook := time.Since(start)
	if !slices.Contains(seen, workspace.Restoring) {
		t.Errorf("restore went through %v, not RESTORING", seen)
	}
	if !has(userA, "A") || !has(rootR, "R") {
		t.Error("after restore a marker of the snapshot (A on the user volume, R on the root volume) is missing")
	}
	if has(userB, "B") || has(rootB, "B") {
		t.Error("after restore a marker written after the snapshot (B) is still there")
	}
	t.Logf("figure: create → AVAILABLE %s; rebuild → AVAILABLE %s (%.2f× create); restore → AVAILABLE %s (%.2f× create)",
		createTook.Round(time.Millisecond), rebuildTook.Round(time.Millisecond), rebuildTook.Seconds()/createTook.Seconds(),
		restoreTook.Round(time.Millisecond), restoreTook.Seconds()/createTook.Seconds())
}

// snapshotBaseline measures `qemu-img convert` of the same two volumes (the root one onto
// the same backing image, so both keep only what the guest wrote), the baseline of the
// snapshot's time and space.
func snapshotBaseline(t *testing.T, h *harness, w workspace.Workspace, took time.Duration) {
	t.Helper()
	img, err := h.ctl.cfg.Images.ImageFiles(w.ImageID)
	if err != nil {
		t.Fatal(err)
	}
	snaps, err := Snapshots(h.store, w.ID)
	if err != nil {
		t.Fatal(err)
	}
	snap, _ := snaps.Latest()
	out := t.TempDir()
	vols := h.ctl.volumePaths(w.ID)
	start := time.Now()
	for i, args := range [][]string{
		{"convert", "-U", "-O", "qcow2", "-B", img.Root, "-F", "qcow2", vols[0], filepath.Join(out, "root.qcow2")},
		{"convert", "-U", "-O", "qcow2", vols[1], filepath.Join(out, "user.qcow2")},
	} {
		if b, err := exec.Command("qemu-img", args...).CombinedOutput(); err != nil {
			t.Fatalf("qemu-img convert of volume %d: %v: %s", i, err, b)
		}
	}
	convertTook := time.Since(start)
	used := func(paths ...string) int64 {
		var n int64
		for _, p := range paths {
			var st syscall.Stat_t
			if err := syscall.Stat(p, &st); err != nil {
				t.Fatal(err)
			}
			n += st.Blocks * 512
		}
		return n
	}
	snapBytes := used(snap.Root, snap.User)
	convBytes := used(filepath.Join(out, "root.qcow2"), filepath.Join(out, "user.qcow2"))
	t.Logf("figure: snapshot %s and %d KiB on disk; qemu-img convert of the same volumes %s and %d KiB (time %.2f×, space %.2f× convert's)",
		took.Round(time.Millisecond), snapBytes>>10, convertTook.Round(time.Millisecond), convBytes>>10,
		took.Seconds()/convertTook.Seconds(), float64(snapBytes)/float64(convBytes))
}
