package controller

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"deskhost/hostd/agent"
	"deskhost/hostd/workspace"
	"deskhost/internal/catalog"
	"deskhost/internal/hostdclient"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/workspaces"
	"github.com/aws/aws-sdk-go-v2/service/workspaces/types"
)

// withAgent dials id's agent, runs fn and hangs up: the agent's channel serves one client
// at a time, and the controller needs it too.
func (h *harness) withAgent(id string, fn func(ctx context.Context, a *agent.Client) error) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a, err := agent.Dial(ctx, h.ctl.AgentSocket(id))
	if err != nil {
		h.t.Fatal(err)
	}
	defer a.Close()
	if err := fn(ctx, a); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) status(id string) *agent.Status {
	h.t.Helper()
	var st *agent.Status
	h.withAgent(id, func(ctx context.Context, a *agent.Client) (err error) {
		st, err = a.Status(ctx)
		return err
	})
	return st
}

// TestModifyComputeAndVolumes: ModifyWorkspaceProperties through AWS's Go SDK on a real
// WorkSpace (libvirt + qemu under TCG). Too soon (the guide's 6 h after launch), sizes
// outside the groups, two volumes at once and a shrink are refused and change nothing.
// With the injected clock 6 h on, the user volume grows 10→50 GB while the guest runs: the
// WorkSpace is UPDATING with ModificationStates [USER_VOLUME UPDATE_IN_PROGRESS] (the
// guide's MODIFYING_STORAGE), other operations are refused meanwhile, the same qemu keeps
// running, and the guest's /home filesystem (asked through the agent) has grown with a
// file on it intact. Then the compute type goes VALUE→STANDARD: the WorkSpace restarts
// with the new vCPUs and memory (MODIFYING_COMPUTE), the file still there; a second larger
// bundle within 6 h is refused. Figures: the online growth time against the create time.
func TestModifyComputeAndVolumes(t *testing.T) {
	clk := &offsetClock{}
	var armed atomic.Bool
	modifying := make(chan workspace.Resource)
	release := make(chan struct{})
	grew := make(chan time.Duration, 1)
	h := newHarness(t, func(c *Config) {
		c.Now = clk.Now
		c.ComputeTypes = map[catalog.ComputeType]catalog.Hardware{
			catalog.ComputeValue:    {VCPUs: 1, MemoryMiB: testMemoryMiB},
			catalog.ComputeStandard: {VCPUs: 2, MemoryMiB: testMemoryMiB + 128},
		}
	}, func(c *Controller) {
		c.modifying = func(id string, r workspace.Resource) {
			if armed.CompareAndSwap(true, false) { // the test looks at the UPDATING WorkSpace, then lets go
				modifying <- r
				<-release
			}
		}
		c.grown = func(id string, r workspace.Resource, d time.Duration) { grew <- d }
	})
	cl := h.sdkClient(t)
	ctx := context.Background()

	t0 := time.Now()
	w := h.create("alice")
	h.waitState(w.ID, workspace.Available, 8*time.Minute)
	createTook := time.Since(t0)
	h.withAgent(w.ID, func(ctx context.Context, a *agent.Client) error {
		return a.WriteFile(ctx, "/home/keep.txt", []byte("kept across resizes"))
	})
	before := h.status(w.ID)

	modify := func(p types.WorkspaceProperties) error {
		_, err := cl.ModifyWorkspaceProperties(ctx, &workspaces.ModifyWorkspacePropertiesInput{WorkspaceId: aws.String(w.ID), WorkspaceProperties: &p})
		return err
	}
	describe := func() types.Workspace {
		t.Helper()
		out, err := cl.DescribeWorkspaces(ctx, &workspaces.DescribeWorkspacesInput{WorkspaceIds: []string{w.ID}})
		if err != nil || len(out.Workspaces) != 1 {
			t.Fatalf("describe: %v %+v", err, out)
		}
		return out.Workspaces[0]
	}
	unchanged := func(what string, root, user int32, compute types.Compute) {
		t.Helper()
		d := describe()
		p := d.WorkspaceProperties
		if d.State != types.WorkspaceStateAvailable || len(d.ModificationStates) != 0 || aws.ToInt32(p.RootVolumeSizeGib) != root ||
			aws.ToInt32(p.UserVolumeSizeGib) != user || p.ComputeTypeName != compute {
			t.Fatalf("after %s: %s %+v root %d user %d %s", what, d.State, d.ModificationStates, aws.ToInt32(p.RootVolumeSizeGib), aws.ToInt32(p.UserVolumeSizeGib), p.ComputeTypeName)
		}
	}
	// Refusals that change nothing.
	for _, c := range []struct {
		what string
		p    types.WorkspaceProperties
		code string
	}{
		{"grow within 6 h of launch", types.WorkspaceProperties{UserVolumeSizeGib: aws.Int32(50)}, "OperationNotSupportedException"},
		{"larger bundle within 6 h of launch", types.WorkspaceProperties{ComputeTypeName: types.ComputeStandard}, "OperationNotSupportedException"},
		{"user 20 GB (no group)", types.WorkspaceProperties{UserVolumeSizeGib: aws.Int32(20)}, "InvalidParameterValuesException"},
		{"root and user at once", types.WorkspaceProperties{RootVolumeSizeGib: aws.Int32(175), UserVolumeSizeGib: aws.Int32(100)}, "InvalidParameterValuesException"},
		{"shrink", types.WorkspaceProperties{UserVolumeSizeGib: aws.Int32(5)}, "InvalidParameterValuesException"},
		{"root 175 with a 10 GB user volume", types.WorkspaceProperties{RootVolumeSizeGib: aws.Int32(175)}, "InvalidParameterValuesException"},
		{"a compute type without hardware here", types.WorkspaceProperties{ComputeTypeName: types.ComputePower}, "ResourceUnavailableException"},
	} {
		if err := modify(c.p); apiCode(err) != c.code {
			t.Fatalf("%s: %v, want %s", c.what, err, c.code)
		}
		unchanged(c.what, 80, 10, types.ComputeValue)
	}

	clk.Advance(workspace.LaunchWait + time.Minute)
	pid := qemuPID(t, w.ID)
	armed.Store(true)
	if err := modify(types.WorkspaceProperties{UserVolumeSizeGib: aws.Int32(50)}); err != nil {
		t.Fatalf("user 10→50 GB at 6 h: %v", err)
	}
	if r := <-modifying; r != workspace.ResourceUserVolume {
		t.Fatalf("controller modifies %s", r)
	}
	d := describe()
	if d.State != types.WorkspaceStateUpdating || len(d.ModificationStates) != 1 || d.ModificationStates[0].Resource != types.ModificationResourceEnumUserVolume ||
		d.ModificationStates[0].State != types.ModificationStateEnumUpdateInProgress {
		t.Fatalf("while growing: %s %+v", d.State, d.ModificationStates)
	}
	// One modification at a time; no reboot while it runs.
	if err := modify(types.WorkspaceProperties{ComputeTypeName: types.ComputeStandard}); apiCode(err) != "OperationInProgressException" {
		t.Fatalf("compute change while the volume grows: %v", err)
	}
	out, err := cl.RebootWorkspaces(ctx, &workspaces.RebootWorkspacesInput{RebootWorkspaceRequests: []types.RebootRequest{{WorkspaceId: aws.String(w.ID)}}})
	if err != nil || len(out.FailedRequests) != 1 || aws.ToString(out.FailedRequests[0].ErrorCode) != "InvalidResourceStateException" {
		t.Fatalf("reboot while the volume grows: %v %+v", err, out)
	}
	release <- struct{}{}
	growTook := <-grew
	h.waitState(w.ID, workspace.Available, 3*time.Minute)
	unchanged("growing the user volume", 80, 50, types.ComputeValue)
	if p := qemuPID(t, w.ID); p != pid {
		t.Errorf("qemu %d became %d: the volume grew with a restart, not online", pid, p)
	}
	after := h.status(w.ID)
	if after.HomeFSBytes < 50<<30*95/100 || after.HomeFSBytes <= before.HomeFSBytes {
		t.Fatalf("/home is %d bytes after growing to 50 GB (was %d)", after.HomeFSBytes, before.HomeFSBytes)
	}
	if vs := h.volumes(w.ID); vs[userVolume(w.ID)].CapacityGiB != 50 {
		t.Errorf("user volume file is %d GiB, want 50", vs[userVolume(w.ID)].CapacityGiB)
	}
	h.withAgent(w.ID, func(ctx context.Context, a *agent.Client) error {
		b, err := a.ReadFile(ctx, "/home/keep.txt")
		if err == nil && string(b) != "kept across resizes" {
			t.Errorf("keep.txt reads %q", b)
		}
		return err
	})
	// The same volume again within 6 h: refused.
	if err := modify(types.WorkspaceProperties{UserVolumeSizeGib: aws.Int32(100)}); apiCode(err) != "OperationNotSupportedException" {
		t.Fatalf("second growth within 6 h: %v", err)
	}
	unchanged("a second growth within 6 h", 80, 50, types.ComputeValue)

	// Compute: a restart with the new hardware.
	t1 := time.Now()
	armed.Store(true)
	if err := modify(types.WorkspaceProperties{ComputeTypeName: types.ComputeStandard}); err != nil {
		t.Fatalf("VALUE→STANDARD: %v", err)
	}
	if r := <-modifying; r != workspace.ResourceComputeType {
		t.Fatalf("controller modifies %s", r)
	}
	if d := describe(); d.State != types.WorkspaceStateUpdating || len(d.ModificationStates) != 1 || d.ModificationStates[0].Resource != types.ModificationResourceEnumComputeType {
		t.Fatalf("while changing compute: %s %+v", d.State, d.ModificationStates)
	}
	release <- struct{}{}
	h.waitState(w.ID, workspace.Available, 8*time.Minute)
	computeTook := time.Since(t1)
	unchanged("the compute change", 80, 50, types.ComputeStandard)
	x, err := h.conn.XML(w.ID)
	if err != nil {
		t.Fatal(err)
	}
	if x.VCPU == nil || x.VCPU.Value != 2 || x.Memory == nil || x.Memory.Value != (testMemoryMiB+128)<<10 {
		t.Errorf("domain after the compute change: vcpu %+v memory %+v", x.VCPU, x.Memory)
	}
	st := h.status(w.ID)
	if st.MemTotalKiB <= before.MemTotalKiB {
		t.Errorf("guest MemTotal %d KiB after the change, %d before", st.MemTotalKiB, before.MemTotalKiB)
	}
	h.withAgent(w.ID, func(ctx context.Context, a *agent.Client) error {
		_, err := a.ReadFile(ctx, "/home/keep.txt")
		return err
	})
	if err := modify(types.WorkspaceProperties{ComputeTypeName: types.ComputePerformance}); apiCode(err) != "ResourceUnavailableException" {
		t.Errorf("a compute type without hardware here: %v", err)
	}

	// Offline: an AutoStop WorkSpace stopped (hibernated) grows its user volume 50→100 GB
	// 6 h later; its saved RAM no longer fits and is dropped, the file grows, and the next
	// start boots afresh and grows /home once the agent answers.
	if err := modify(types.WorkspaceProperties{RunningMode: types.RunningModeAutoStop}); err != nil {
		t.Fatal(err)
	}
	if out, err := cl.StopWorkspaces(ctx, &workspaces.StopWorkspacesInput{StopWorkspaceRequests: []types.StopRequest{{WorkspaceId: aws.String(w.ID)}}}); err != nil || len(out.FailedRequests) > 0 {
		t.Fatalf("stop: %v %+v", err, out)
	}
	h.waitState(w.ID, workspace.Stopped, 3*time.Minute)
	if !h.get(w.ID).Hibernated {
		t.Fatal("the AutoStop WorkSpace did not hibernate")
	}
	clk.Advance(workspace.VolumeInterval)
	if err := modify(types.WorkspaceProperties{UserVolumeSizeGib: aws.Int32(100)}); err != nil {
		t.Fatalf("user 50→100 GB while STOPPED: %v", err)
	}
	h.waitState(w.ID, workspace.Stopped, 2*time.Minute)
	if r := h.get(w.ID); r.Hibernated || len(r.GrowFS) != 1 || r.GrowFS[0] != workspace.ResourceUserVolume || r.Modification.Active() {
		t.Fatalf("after growing offline: hibernated %v growFS %v modification %+v", r.Hibernated, r.GrowFS, r.Modification)
	}
	if vs := h.volumes(w.ID); vs[userVolume(w.ID)].CapacityGiB != 100 {
		t.Errorf("user volume file is %d GiB, want 100", vs[userVolume(w.ID)].CapacityGiB)
	}
	if out, err := cl.StartWorkspaces(ctx, &workspaces.StartWorkspacesInput{StartWorkspaceRequests: []types.StartRequest{{WorkspaceId: aws.String(w.ID)}}}); err != nil || len(out.FailedRequests) > 0 {
		t.Fatalf("start: %v %+v", err, out)
	}
	h.waitState(w.ID, workspace.Available, 8*time.Minute)
	for deadline := time.Now().Add(3 * time.Minute); len(h.get(w.ID).GrowFS) > 0; time.Sleep(500 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the filesystem did not grow after the start: %+v", h.get(w.ID))
		}
	}
	if st := h.status(w.ID); st.HomeFSBytes < 100<<30*95/100 {
		t.Fatalf("/home is %d bytes after growing offline to 100 GB", st.HomeFSBytes)
	}
	h.withAgent(w.ID, func(ctx context.Context, a *agent.Client) error {
		_, err := a.ReadFile(ctx, "/home/keep.txt")
		return err
	})

	// 12 h after the launch a snapshot pair is due: wait for it (root 80 GB, user 100 GB).
	waitSnapshot := time.Now().Add(3 * time.Minute)
	for {
		sn, err := cl.DescribeWorkspaceSnapshots(ctx, &workspaces.DescribeWorkspaceSnapshotsInput{WorkspaceId: aws.String(w.ID)})
		if err != nil {
			t.Fatal(err)
		}
		if len(sn.RestoreSnapshots) > 0 {
			break
		}
		if time.Now().After(waitSnapshot) {
			t.Fatal("no snapshot pair 12 h after the launch")
		}
		time.Sleep(time.Second)
	}

	// The root volume, now that the user volume is 100 GB: 80→175 GB online. The image's
	// root filesystem (64 MiB) grows to fill it.
	clk.Advance(workspace.VolumeInterval)
	rootBefore := h.status(w.ID).RootFSBytes
	armed.Store(true)
	if err := modify(types.WorkspaceProperties{RootVolumeSizeGib: aws.Int32(175)}); err != nil {
		t.Fatalf("root 80→175 GB: %v", err)
	}
	if r := <-modifying; r != workspace.ResourceRootVolume {
		t.Fatalf("controller modifies %s", r)
	}
	if d := describe(); d.State != types.WorkspaceStateUpdating || len(d.ModificationStates) != 1 || d.ModificationStates[0].Resource != types.ModificationResourceEnumRootVolume {
		t.Fatalf("while growing the root: %s %+v", d.State, d.ModificationStates)
	}
	release <- struct{}{}
	rootTook := <-grew
	h.waitState(w.ID, workspace.Available, 3*time.Minute)
	unchanged("growing the root volume", 175, 100, types.ComputeStandard)
	if st := h.status(w.ID); st.RootFSBytes < 175<<30*95/100 {
		t.Fatalf("the root filesystem is %d bytes after growing to 175 GB (was %d)", st.RootFSBytes, rootBefore)
	}
	t.Logf("root volume 80→175 GB online (filesystem %d→%d bytes): %v", rootBefore, h.status(w.ID).RootFSBytes, rootTook.Round(time.Millisecond))

	// RestoreWorkspace brings back the pair cut before the root grew: the restored root
	// file is grown back to the WorkSpace's 175 GB, and its filesystem after the boot.
	if _, err := cl.RestoreWorkspace(ctx, &workspaces.RestoreWorkspaceInput{WorkspaceId: aws.String(w.ID)}); err != nil {
		t.Fatalf("restore: %v", err)
	}
	h.waitState(w.ID, workspace.Restoring, time.Minute)
	h.waitState(w.ID, workspace.Available, 8*time.Minute)
	if vs := h.volumes(w.ID); vs[rootVolume(w.ID)].CapacityGiB != 175 || vs[userVolume(w.ID)].CapacityGiB != 100 {
		t.Errorf("after the restore: root %d GiB, user %d GiB; want 175 and 100", vs[rootVolume(w.ID)].CapacityGiB, vs[userVolume(w.ID)].CapacityGiB)
	}
	for deadline := time.Now().Add(4 * time.Minute); len(h.get(w.ID).GrowFS) > 0; time.Sleep(time.Second) {
		if time.Now().After(deadline) {
			t.Fatalf("the restored root's filesystem did not grow: %+v", h.get(w.ID))
		}
	}
	if st := h.status(w.ID); st.RootFSBytes < 175<<30*95/100 || st.HomeFSBytes < 100<<30*95/100 {
		t.Fatalf("after the restore: root filesystem %d bytes, /home %d bytes", st.RootFSBytes, st.HomeFSBytes)
	}

	// statfs counts the blocks left after ext4's own metadata: a grown filesystem is at
	// least 95% of its disk (a 10 GB one was 97.5% here).
	t.Logf("figures: create→AVAILABLE %v; online user volume growth 10→50 GB (block resize + guest ext4 resize) %v (%.3f× create); compute change (restart) %v (%.2f× create); /home %d→%d bytes",
		createTook.Round(time.Millisecond), growTook.Round(time.Millisecond), growTook.Seconds()/createTook.Seconds(),
		computeTook.Round(time.Millisecond), computeTook.Seconds()/createTook.Seconds(), before.HomeFSBytes, after.HomeFSBytes)
}

// TestModifyEncryptedVolume: the guide's "You can expand the root and user volumes whether
// they are encrypted or unencrypted". An encrypted (qcow2 LUKS) user volume grows online
// 10→50 GB through AWS's SDK; then, the WorkSpace stopped, offline 50→100 GB (qemu-img
// with the volume's key through a pipe), its filesystem after the next start.
func TestModifyEncryptedVolume(t *testing.T) {
	clk := &offsetClock{}
	h := newHarness(t, func(c *Config) { c.Now = clk.Now }, nil)
	hc := h.apiClient(t)
	cl := hc.Client
	ctx := context.Background()
	if _, err := hc.CreateKey(ctx, &hostdclient.CreateKeyInput{Alias: "alias/resize-test", Description: "TestModifyEncryptedVolume"}); err != nil {
		t.Fatal(err)
	}
	out, err := cl.CreateWorkspaces(ctx, &workspaces.CreateWorkspacesInput{Workspaces: []types.WorkspaceRequest{
		{DirectoryId: aws.String(testDirectory), UserName: aws.String("erin"), BundleId: aws.String(testBundle),
			WorkspaceProperties:         &types.WorkspaceProperties{RunningMode: types.RunningModeAutoStop},
			UserVolumeEncryptionEnabled: aws.Bool(true), VolumeEncryptionKey: aws.String("alias/resize-test")}}})
	if err != nil || len(out.PendingRequests) != 1 {
		t.Fatalf("create: %v %+v", err, out)
	}
	id := aws.ToString(out.PendingRequests[0].WorkspaceId)
	h.waitState(id, workspace.Available, 8*time.Minute)
	if !h.volumes(id)[userVolume(id)].Encrypted {
		t.Fatal("the user volume is not encrypted")
	}
	grow := func(gib int32) {
		t.Helper()
		if _, err := cl.ModifyWorkspaceProperties(ctx, &workspaces.ModifyWorkspacePropertiesInput{WorkspaceId: aws.String(id),
			WorkspaceProperties: &types.WorkspaceProperties{UserVolumeSizeGib: aws.Int32(gib)}}); err != nil {
			t.Fatalf("user volume to %d GB: %v", gib, err)
		}
	}
	home := func(gib int) {
		t.Helper()
		deadline := time.Now().Add(4 * time.Minute)
		for len(h.get(id).GrowFS) > 0 && time.Now().Before(deadline) {
			time.Sleep(time.Second)
		}
		if got := h.status(id).HomeFSBytes; got < uint64(gib)<<30*95/100 {
			t.Fatalf("/home is %d bytes on a %d GB encrypted volume", got, gib)
		}
		if v := h.volumes(id)[userVolume(id)]; v.CapacityGiB != uint64(gib) || !v.Encrypted {
			t.Fatalf("user volume %+v, want %d GiB encrypted", v, gib)
		}
	}
	clk.Advance(workspace.LaunchWait)
	grow(50) // UPDATING from here until the controller is done
	h.waitState(id, workspace.Available, 3*time.Minute)
	home(50)
	if _, err := cl.StopWorkspaces(ctx, &workspaces.StopWorkspacesInput{StopWorkspaceRequests: []types.StopRequest{{WorkspaceId: aws.String(id)}}}); err != nil {
		t.Fatal(err)
	}
	h.waitState(id, workspace.Stopped, 3*time.Minute)
	clk.Advance(workspace.VolumeInterval)
	grow(100)
	h.waitState(id, workspace.Stopped, 2*time.Minute)
	if v := h.volumes(id)[userVolume(id)]; v.CapacityGiB != 100 {
		t.Fatalf("stopped: user volume %d GiB after growing offline", v.CapacityGiB)
	}
	if _, err := cl.StartWorkspaces(ctx, &workspaces.StartWorkspacesInput{StartWorkspaceRequests: []types.StartRequest{{WorkspaceId: aws.String(id)}}}); err != nil {
		t.Fatal(err)
	}
	h.waitState(id, workspace.Available, 8*time.Minute)
	home(100)
}
