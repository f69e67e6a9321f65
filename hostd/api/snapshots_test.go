package api

import (
	"context"
	"strings"
	"testing"
	"time"

	"deskhost/hostd/store"
	"deskhost/hostd/workspace"
	"deskhost/internal/catalog"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/workspaces"
	"github.com/aws/aws-sdk-go-v2/service/workspaces/types"
)

// TestSnapshotOperationsThroughSDK drives RebuildWorkspaces, RestoreWorkspace and
// DescribeWorkspaceSnapshots through AWS's SDK: the state gates, the guide's
// InvalidUserConfiguration.Workspace, the snapshot listing's shape. (The volumes
// themselves: hostd/controller's TestSnapshotRebuildRestore.)
func TestSnapshotOperationsThroughSDK(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.client(accessKeyID, secretKey)
	ctx := context.Background()
	out, err := c.CreateWorkspaces(ctx, &workspaces.CreateWorkspacesInput{Workspaces: []types.WorkspaceRequest{
		{DirectoryId: aws.String(dirID), UserName: aws.String("alice"), BundleId: aws.String(bundleStd)},
		{DirectoryId: aws.String(dirID), UserName: aws.String("bob"), BundleId: aws.String(bundleStd)},
	}})
	if err != nil || len(out.PendingRequests) != 2 {
		t.Fatalf("create: %v %+v", err, out)
	}
	alice, bob := aws.ToString(out.PendingRequests[0].WorkspaceId), aws.ToString(out.PendingRequests[1].WorkspaceId)
	rebuild := func(id string) []types.FailedWorkspaceChangeRequest {
		t.Helper()
		r, err := c.RebuildWorkspaces(ctx, &workspaces.RebuildWorkspacesInput{RebuildWorkspaceRequests: []types.RebuildRequest{{WorkspaceId: aws.String(id)}}})
		if err != nil {
			t.Fatal(err)
		}
		return r.FailedRequests
	}

	// PENDING is not a state rebuild or restore accepts.
	if f := rebuild(alice); len(f) != 1 || aws.ToString(f[0].ErrorCode) != "InvalidResourceStateException" ||
		!strings.Contains(aws.ToString(f[0].ErrorMessage), "is PENDING") || aws.ToString(f[0].WorkspaceId) != alice {
		t.Fatalf("rebuild of a PENDING WorkSpace: %+v", f)
	}
	_, err = c.RestoreWorkspace(ctx, &workspaces.RestoreWorkspaceInput{WorkspaceId: aws.String(alice)})
	apiErr(t, err, "InvalidResourceStateException")
	// Two requests: AWS's RebuildWorkspaces takes one.
	_, err = c.RebuildWorkspaces(ctx, &workspaces.RebuildWorkspacesInput{RebuildWorkspaceRequests: []types.RebuildRequest{{WorkspaceId: aws.String(alice)}, {WorkspaceId: aws.String(bob)}}})
	apiErr(t, err, "InvalidParameterValuesException")
	if f := rebuild("ws-doesnotexist"); len(f) != 1 || aws.ToString(f[0].ErrorCode) != "ResourceNotFoundException" {
		t.Fatalf("rebuild of an unknown WorkSpace: %+v", f)
	}

	// No snapshot yet: the lists are empty, and there is nothing to restore.
	e.setState(alice, workspace.Available)
	s, err := c.DescribeWorkspaceSnapshots(ctx, &workspaces.DescribeWorkspaceSnapshotsInput{WorkspaceId: aws.String(alice)})
	if err != nil || len(s.RebuildSnapshots) != 0 || len(s.RestoreSnapshots) != 0 {
		t.Fatalf("snapshots of a new WorkSpace: %v %+v", err, s)
	}
	_, err = c.RestoreWorkspace(ctx, &workspaces.RestoreWorkspaceInput{WorkspaceId: aws.String(alice)})
	if ae := apiErr(t, err, "InvalidResourceStateException"); !strings.Contains(ae.ErrorMessage(), "no snapshot") {
		t.Fatalf("restore without a snapshot: %s", ae.ErrorMessage())
	}

	// Two pairs on record (as the controller writes them): newest first.
	t1, t2 := time.Unix(1_800_000_000, 0).UTC(), time.Unix(1_800_043_200, 0).UTC()
	if err := e.store.Update(func(tx store.Tx) error {
		return store.PutJSON(tx, store.Snapshots, alice, workspace.Snapshots{{ID: "a", Time: t1}, {ID: "b", Time: t2}})
	}); err != nil {
		t.Fatal(err)
	}
	s, err = c.DescribeWorkspaceSnapshots(ctx, &workspaces.DescribeWorkspaceSnapshotsInput{WorkspaceId: aws.String(alice)})
	if err != nil || len(s.RebuildSnapshots) != 2 || len(s.RestoreSnapshots) != 2 ||
		!aws.ToTime(s.RestoreSnapshots[0].SnapshotTime).Equal(t2) || !aws.ToTime(s.RebuildSnapshots[1].SnapshotTime).Equal(t1) {
		t.Fatalf("snapshots: %v %+v", err, s)
	}
	_, err = c.DescribeWorkspaceSnapshots(ctx, &workspaces.DescribeWorkspaceSnapshotsInput{WorkspaceId: aws.String("ws-doesnotexist")})
	apiErr(t, err, "ResourceNotFoundException")

	// ADMIN_MAINTENANCE "does not respond".
	e.setState(alice, workspace.AdminMaintenance)
	if f := rebuild(alice); len(f) != 1 || !strings.Contains(aws.ToString(f[0].ErrorMessage), "ADMIN_MAINTENANCE") {
		t.Fatalf("rebuild in ADMIN_MAINTENANCE: %+v", f)
	}
	e.setState(alice, workspace.Stopped)
	if _, err := c.RestoreWorkspace(ctx, &workspaces.RestoreWorkspaceInput{WorkspaceId: aws.String(alice)}); err != nil {
		t.Fatalf("restore of a STOPPED WorkSpace with a snapshot: %v", err)
	}
	if st := e.snapshotState(alice); st != workspace.Restoring {
		t.Fatalf("after RestoreWorkspace the WorkSpace is %s, want RESTORING", st)
	}
	e.setState(alice, workspace.Error)
	if f := rebuild(alice); len(f) != 0 {
		t.Fatalf("rebuild from ERROR: %+v", f)
	}
	if st := e.snapshotState(alice); st != workspace.Rebuilding {
		t.Fatalf("after RebuildWorkspaces the WorkSpace is %s, want REBUILDING", st)
	}

	// A user renamed in the directory (the guide's case: sAMAccountName changed; hostd
	// refuses to delete a user with a WorkSpace, so the record is edited as the directory
	// would): the guide's error code and message, nothing changed.
	e.setState(bob, workspace.Unhealthy)
	if err := e.store.Update(func(tx store.Tx) error {
		rec, err := store.GetJSON[catalog.DirectoryRecord](tx, store.Directories, dirID)
		if err != nil {
			return err
		}
		for i, u := range rec.Definition.Users {
			if u.UserName == "bob" {
				rec.Definition.Users[i].UserName = "robert"
			}
		}
		return store.PutJSON(tx, store.Directories, dirID, rec)
	}); err != nil {
		t.Fatal(err)
	}
	f := rebuild(bob)
	if len(f) != 1 || aws.ToString(f[0].ErrorCode) != "InvalidUserConfiguration.Workspace" ||
		aws.ToString(f[0].ErrorMessage) != "The user was either not found or is misconfigured." {
		t.Fatalf("rebuild of a WorkSpace whose user is gone: %+v", f)
	}
	if st := e.snapshotState(bob); st != workspace.Unhealthy {
		t.Fatalf("a refused rebuild left the WorkSpace %s", st)
	}
}

func (e *env) snapshotState(id string) workspace.State {
	e.t.Helper()
	w, err := e.svc.Get(id)
	if err != nil {
		e.t.Fatal(err)
	}
	return w.State
}
