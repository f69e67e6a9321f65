package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/workspaces"
	"github.com/aws/aws-sdk-go-v2/service/workspaces/types"

	"deskhost/hostd/agent"
	"deskhost/hostd/virt"
	"deskhost/internal/runpaths"
)

// TestKilledHostdMidMigrationConverges kills hostd with SIGKILL twice during a
// MigrateWorkspace — right after the API accepted it, and once the target's domain runs
// but before its agent answered — restarts it, and checks that each migration finishes
// from the store alone: the target AVAILABLE with the user volume's marker, the source
// TERMINATED with no domain or volume left, the one running guest's RAM held.
func TestKilledHostdMidMigrationConverges(t *testing.T) {
	h := newHost(t)
	h.start()
	ctx := context.Background()
	src := h.create("alice")[0]
	h.waitState(src, types.WorkspaceStateAvailable, boot)
	agentDo := func(id string, fn func(context.Context, *agent.Client) error) error {
		actx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		a, err := agent.Dial(actx, runpaths.AgentSocket(h.dir, id))
		if err != nil {
			return err
		}
		defer a.Close()
		return fn(actx, a)
	}
	if err := agentDo(src, func(c context.Context, a *agent.Client) error { return a.WriteFile(c, "/home/marker-M", []byte("M")) }); err != nil {
		t.Fatal(err)
	}
	hasMarker := func(id string) bool {
		var got []byte
		err := agentDo(id, func(c context.Context, a *agent.Client) (err error) {
			got, err = a.ReadFile(c, "/home/marker-M")
			return err
		})
		return err == nil && string(got) == "M"
	}
	nb, err := h.client().CreateWorkspaceBundle(ctx, &workspaces.CreateWorkspaceBundleInput{BundleName: aws.String("Value-50"),
		BundleDescription: aws.String("1 vCPU and 50 GB user"), ImageId: aws.String(imageID),
		ComputeType: &types.ComputeType{Name: types.ComputeValue}, UserStorage: &types.UserStorage{Capacity: aws.String("50")},
		RootStorage: &types.RootStorage{Capacity: aws.String("80")}})
	if err != nil {
		t.Fatal(err)
	}
	migrate := func(id, bundle string) string {
		t.Helper()
		m, err := h.client().MigrateWorkspace(ctx, &workspaces.MigrateWorkspaceInput{SourceWorkspaceId: aws.String(id), BundleId: aws.String(bundle)})
		if err != nil {
			t.Fatal(err)
		}
		return aws.ToString(m.TargetWorkspaceId)
	}
	converged := func(from, to string) {
		t.Helper()
		h.waitState(to, types.WorkspaceStateAvailable, boot)
		h.waitState(from, types.WorkspaceStateTerminated, time.Minute)
		if st, vols := h.libvirtView(from); st != virt.Missing || vols != 0 {
			t.Errorf("source %s after the migration: domain %s, %d volumes", from, st, vols)
		}
		if st, vols := h.libvirtView(to); st != virt.Running || vols != 2 {
			t.Errorf("target %s: domain %s, %d volumes; want running with 2", to, st, vols)
		}
		waitFor(t, "the marker on the target's user volume", time.Minute, func() bool { return hasMarker(to) })
	}

	// Kill right after the API accepted the migration.
	t1 := migrate(src, aws.ToString(nb.WorkspaceBundle.BundleId))
	h.kill()
	h.start()
	converged(src, t1)

	// Kill once the target's domain runs, before its agent answered (back to the first
	// bundle: a migration needs another bundle).
	t2 := migrate(t1, h.bundle)
	waitFor(t, "the second target's domain running", boot, func() bool { st, _ := h.libvirtView(t2); return st == virt.Running })
	if s := h.describe(t2).State; s != types.WorkspaceStatePending {
		t.Logf("the target is already %s at the kill (wanted PENDING; the kill is later than planned)", s)
	}
	h.kill()
	h.start()
	converged(t1, t2)
	waitFor(t, "the one running guest's RAM held", 30*time.Second, func() bool { return h.heldRAM() == 1 })

	// Nothing lost: three records, the two sources TERMINATED.
	out, err := h.client().DescribeWorkspaces(ctx, &workspaces.DescribeWorkspacesInput{DirectoryId: aws.String(directoryID)})
	if err != nil || len(out.Workspaces) != 3 {
		t.Fatalf("records after the migrations: %v %+v", err, out)
	}
}
