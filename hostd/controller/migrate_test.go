package controller

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"deskhost/hostd/agent"
	"deskhost/hostd/service"
	"deskhost/hostd/store"
	"deskhost/hostd/virt"
	"deskhost/hostd/workspace"
	"deskhost/internal/catalog"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/workspaces"
	"github.com/aws/aws-sdk-go-v2/service/workspaces/types"
)

// TestMigrateWorkspace: one AutoStop WorkSpace with tags on real libvirt + qemu, markers on
// its user volume (M) and root volume (R), migrated through AWS's SDK.
//
//   - To a bundle whose image this host does not have: the migration fails and rolls back
//     — the target ends TERMINATED with no domain or volume left, the source is back
//     AVAILABLE under its own id with marker M.
//   - To another bundle (user volume 10 → 50 GiB), with the controller stopped and a new
//     one started on the same store right after the user volume was copied: the target
//     (new id and computer name) is AVAILABLE with marker M and without R (its root volume
//     is the new bundle's image), the source's tags and running mode, a 50 GiB user volume
//     whose filesystem grew to fill it; the source is TERMINATED, its domain and volumes
//     gone.
//
// Figure: migrate → AVAILABLE against create → AVAILABLE in the same run.
func TestMigrateWorkspace(t *testing.T) {
	h := newHarness(t, nil, nil)
	cl := h.sdkClient(t)
	ctx := context.Background()

	created := time.Now()
	out, err := cl.CreateWorkspaces(ctx, &workspaces.CreateWorkspacesInput{Workspaces: []types.WorkspaceRequest{{
		DirectoryId: aws.String(testDirectory), UserName: aws.String("alice"), BundleId: aws.String(testBundle),
		WorkspaceProperties: &types.WorkspaceProperties{RunningMode: types.RunningModeAutoStop, RunningModeAutoStopTimeoutInMinutes: aws.Int32(180)},
		Tags:                []types.Tag{{Key: aws.String("cost-center"), Value: aws.String("42")}},
	}}})
	if err != nil || len(out.PendingRequests) != 1 {
		t.Fatalf("create: %v %+v", err, out)
	}
	src := aws.ToString(out.PendingRequests[0].WorkspaceId)
	h.waitState(src, workspace.Available, 8*time.Minute)
	createTook := time.Since(created)

	const userM, rootR = "/home/marker-M", "/sysroot/marker-R"
	h.agentWrite(src, userM, "M")
	h.agentWrite(src, rootR, "R")

	// A bundle whose image record exists but whose files this host lacks (as on a fleet
	// host that has not fetched it): the target cannot be made.
	absent := catalog.Image{ID: "wsi-absent00001", Name: "absent", OS: catalog.Linux, Dir: "/nonexistent"}
	absentBundle := catalog.Bundle{ID: "wsb-absent00001", Name: "Absent", ImageID: absent.ID, ComputeType: catalog.ComputeValue,
		Protocol: catalog.PCoIP, RootGiB: 80, UserGiB: 10}
	if err := h.store.Update(func(tx store.Tx) error {
		if err := store.PutJSON(tx, store.Images, absent.ID, absent); err != nil {
			return err
		}
		return store.PutJSON(tx, store.Bundles, absentBundle.ID, absentBundle)
	}); err != nil {
		t.Fatal(err)
	}
	m, err := cl.MigrateWorkspace(ctx, &workspaces.MigrateWorkspaceInput{SourceWorkspaceId: aws.String(src), BundleId: aws.String(absentBundle.ID)})
	if err != nil {
		t.Fatal(err)
	}
	failed := aws.ToString(m.TargetWorkspaceId)
	seen := h.waitState(src, workspace.Available, 5*time.Minute)
	if !slices.Contains(seen, workspace.Updating) && !slices.Contains(seen, workspace.Starting) {
		t.Errorf("the source went through %v during the failed migration", seen)
	}
	h.waitState(failed, workspace.Terminated, 2*time.Minute)
	if fw := h.get(failed); fw.Migration == nil || !strings.Contains(fw.Migration.Failed, "not on this host") {
		t.Errorf("the failed target says %+v", fw.Migration)
	}
	if st := h.domainState(failed); st != virt.Missing {
		t.Errorf("the failed target's domain is %s after the rollback", st)
	}
	if v := h.volumes(failed); len(v) != 0 {
		t.Errorf("the failed target's volumes remain: %v", v)
	}
	if w := h.get(src); w.Migration != nil || w.BundleID != testBundle {
		t.Errorf("the source after the rollback: migration %+v, bundle %s", w.Migration, w.BundleID)
	}
	if !h.agentHas(src, userM, "M") || !h.agentHas(src, rootR, "R") {
		t.Fatal("after the rollback the source lost a marker")
	}

	// The real migration, with a controller restart after the user volume is copied.
	b, err := h.svc.CreateWorkspaceBundle(ctx, service.BundleRequest{Name: "Value-50", ImageID: testImage, ComputeType: catalog.ComputeValue, RootGiB: 80, UserGiB: 50})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	m, err = cl.MigrateWorkspace(ctx, &workspaces.MigrateWorkspaceInput{SourceWorkspaceId: aws.String(src), BundleId: aws.String(b.ID)})
	if err != nil {
		t.Fatal(err)
	}
	target := aws.ToString(m.TargetWorkspaceId)
	if target == src || target == failed {
		t.Fatalf("target id %s", target)
	}
	deadline := time.Now().Add(5 * time.Minute)
	for w := h.get(target); w.Migration == nil || !w.Migration.UserCopied; w = h.get(target) {
		if w.State != workspace.Pending || time.Now().After(deadline) {
			t.Fatalf("the target is %s (%+v) before its user volume was copied", w.State, w.Migration)
		}
		time.Sleep(50 * time.Millisecond)
	}
	h.restartController()
	seen = h.waitState(target, workspace.Available, 8*time.Minute)
	migrateTook := time.Since(start)
	if seen[0] != workspace.Pending {
		t.Errorf("the target went through %v", seen)
	}
	h.waitState(src, workspace.Terminated, 2*time.Minute)

	tw, sw := h.get(target), h.get(src)
	if tw.ComputerName == sw.ComputerName || tw.BundleID != b.ID || tw.Migration != nil {
		t.Errorf("target %+v: want a new computer name, bundle %s, the migration done", tw, b.ID)
	}
	if tw.Properties.RunningMode != workspace.AutoStop || tw.Properties.AutoStopTimeoutMinutes != 180 {
		t.Errorf("target running mode %s/%d min; the source's AUTO_STOP/180 did not carry over", tw.Properties.RunningMode, tw.Properties.AutoStopTimeoutMinutes)
	}
	tags, err := cl.DescribeTags(ctx, &workspaces.DescribeTagsInput{ResourceId: aws.String(target)})
	if err != nil || len(tags.TagList) != 1 || aws.ToString(tags.TagList[0].Key) != "cost-center" || aws.ToString(tags.TagList[0].Value) != "42" {
		t.Errorf("target tags: %v %+v", err, tags)
	}
	if !h.agentHas(target, userM, "M") {
		t.Error("marker M on the user volume did not survive the migration")
	}
	if h.agentHas(target, rootR, "R") {
		t.Error("marker R on the source's root volume is on the target's: its root volume is not the new bundle's image")
	}
	vols := h.volumes(target)
	if v, ok := vols[userVolume(target)]; !ok || v.CapacityGiB != 50 {
		t.Errorf("target user volume %+v, want 50 GiB", v)
	}
	h.waitHomeFS(target, 50)
	if st := h.domainState(src); st != virt.Missing {
		t.Errorf("the source's domain is %s after the migration", st)
	}
	if v := h.volumes(src); len(v) != 0 {
		t.Errorf("the source's volumes remain: %v", v)
	}
	t.Logf("figure: create → AVAILABLE %s; migrate → AVAILABLE %s (%.2f× create, with a controller restart in it)",
		createTook.Round(time.Millisecond), migrateTook.Round(time.Millisecond), migrateTook.Seconds()/createTook.Seconds())
}

// restartController stops the controller as hostd's exit would and starts a new one on
// the same store and libvirt: it knows only what the store holds.
func (h *harness) restartController() {
	h.t.Helper()
	h.cancel()
	<-h.done
	h.ctl.WaitIdle()
	h.ctl.Close()
	h.ctl = New(h.ctl.cfg)
	h.svc.SetWaker(h.ctl)
	h.start()
}

// agentWrite writes a file in id's guest; agentHas reports whether it is there with data.
// Each call dials and hangs up: the agent's channel serves one client at a time, and
// hostd's health checks need it too.
func (h *harness) agentWrite(id, p, data string) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, err := agent.Dial(ctx, h.ctl.AgentSocket(id))
	if err != nil {
		h.t.Fatal(err)
	}
	defer a.Close()
	if err := a.WriteFile(ctx, p, []byte(data)); err != nil {
		h.t.Fatalf("write %s in %s: %v", p, id, err)
	}
}

func (h *harness) agentHas(id, p, data string) bool {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, err := agent.Dial(ctx, h.ctl.AgentSocket(id))
	if err != nil {
		h.t.Fatal(err)
	}
	defer a.Close()
	got, err := a.ReadFile(ctx, p)
	var ae *agent.Error
	switch {
	case err == nil:
		if string(got) != data {
			h.t.Fatalf("%s in %s holds %q, want %q", p, id, got, data)
		}
		return true
	case errors.As(err, &ae) && strings.Contains(ae.Msg, "no such file"):
		return false
	}
	h.t.Fatalf("read %s in %s: %v", p, id, err)
	return false
}

// waitHomeFS waits until id's /home filesystem fills (95 %) a user volume of gib GiB: a
// volume that grew while its guest was off has its filesystem grown once it is AVAILABLE.
func (h *harness) waitHomeFS(id string, gib int) {
	h.t.Helper()
	var got uint64
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); time.Sleep(time.Second) {
		if got = h.status(id).HomeFSBytes; got >= uint64(gib)<<30*95/100 {
			return
		}
	}
	h.t.Fatalf("%s: /home is %d bytes, not grown to its %d GiB volume within 2 min", id, got, gib)
}
