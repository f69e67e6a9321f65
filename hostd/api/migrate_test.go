package api

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"deskhost/hostd/store"
	"deskhost/hostd/workspace"
	"deskhost/internal/catalog"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/workspaces"
	"github.com/aws/aws-sdk-go-v2/service/workspaces/types"
)

// TestMigrateWorkspaceThroughSDK drives MigrateWorkspace through AWS's SDK: what the
// accepted migration writes (the target: new id and computer name, the new bundle, the
// source's running mode and tags, the guide's volume sizes; the source UPDATING), and the
// refusals — unknown ids, wrong states, the same bundle, a second migration of one
// WorkSpace, more than 25 in flight — each with its error and no change to any record.
// (The volumes, the boot and the rollback: hostd/controller's TestMigrateWorkspace.)
func TestMigrateWorkspaceThroughSDK(t *testing.T) {
	e := newEnv(t, envOptions{workspaceQuota: 60})
	c := e.client(accessKeyID, secretKey)
	ctx := context.Background()
	out, err := c.CreateWorkspaces(ctx, &workspaces.CreateWorkspacesInput{Workspaces: []types.WorkspaceRequest{
		{DirectoryId: aws.String(dirID), UserName: aws.String("alice"), BundleId: aws.String(bundleValue),
			WorkspaceProperties: &types.WorkspaceProperties{RunningMode: types.RunningModeAutoStop, RunningModeAutoStopTimeoutInMinutes: aws.Int32(120)},
			Tags:                []types.Tag{{Key: aws.String("cost-center"), Value: aws.String("42")}, {Key: aws.String("team"), Value: aws.String("desk")}}},
		{DirectoryId: aws.String(dirID), UserName: aws.String("bob"), BundleId: aws.String(bundleValue)},
	}})
	if err != nil || len(out.PendingRequests) != 2 {
		t.Fatalf("create: %v %+v", err, out)
	}
	alice, bob := aws.ToString(out.PendingRequests[0].WorkspaceId), aws.ToString(out.PendingRequests[1].WorkspaceId)
	migrate := func(src, bundle string) (*workspaces.MigrateWorkspaceOutput, error) {
		return c.MigrateWorkspace(ctx, &workspaces.MigrateWorkspaceInput{SourceWorkspaceId: aws.String(src), BundleId: aws.String(bundle)})
	}
	// refused calls migrate and checks the error and that no record changed.
	refused := func(src, bundle, code, msg string) {
		t.Helper()
		before := e.snapshot()
		_, err := migrate(src, bundle)
		ae := apiErr(t, err, code)
		if !strings.Contains(ae.ErrorMessage(), msg) {
			t.Errorf("migrate %s to %s: %q does not say %q", src, bundle, ae.ErrorMessage(), msg)
		}
		if after := e.snapshot(); !reflect.DeepEqual(before, after) {
			t.Errorf("a refused migration (%s) changed the records:\nbefore %+v\nafter  %+v", code, before, after)
		}
	}

	// State gates: PENDING, ADMIN_MAINTENANCE, UNHEALTHY are not AVAILABLE, STOPPED or ERROR.
	refused(alice, bundleStd, "InvalidResourceStateException", "is PENDING")
	e.setState(alice, workspace.AdminMaintenance)
	refused(alice, bundleStd, "InvalidResourceStateException", "ADMIN_MAINTENANCE")
	e.setState(alice, workspace.Unhealthy)
	refused(alice, bundleStd, "InvalidResourceStateException", "AVAILABLE, STOPPED or ERROR")
	e.setState(alice, workspace.Available)
	// An encrypted WorkSpace whose key is not in the key store (a key migrates with its
	// WorkSpace: TestEncryptionThroughSDK).
	if err := e.store.Update(func(tx store.Tx) error {
		w, err := store.GetJSON[workspace.Workspace](tx, store.Workspaces, alice)
		if err != nil {
			return err
		}
		w.Encryption.User = true
		return store.PutJSON(tx, store.Workspaces, alice, w)
	}); err != nil {
		t.Fatal(err)
	}
	refused(alice, bundleStd, "ResourceNotFoundException", "not in this host's key store") // its key is gone: its volumes could not be copied
	if err := e.store.Update(func(tx store.Tx) error {
		w, err := store.GetJSON[workspace.Workspace](tx, store.Workspaces, alice)
		if err != nil {
			return err
		}
		w.Encryption.User = false
		return store.PutJSON(tx, store.Workspaces, alice, w)
	}); err != nil {
		t.Fatal(err)
	}
	// Unknown ids, the same bundle.
	refused("ws-doesnotexist", bundleStd, "ResourceNotFoundException", "ws-doesnotexist")
	refused(alice, "wsb-doesnotexist", "ResourceNotFoundException", "wsb-doesnotexist")
	refused(alice, bundleValue, "InvalidParameterValuesException", "must be different")
	// Malformed ids.
	refused("i-123", bundleStd, "InvalidParameterValuesException", "SourceWorkspaceId")
	refused(alice, "bundle", "InvalidParameterValuesException", "BundleId")

	// Accepted.
	m, err := migrate(alice, bundleStd)
	if err != nil {
		t.Fatal(err)
	}
	target := aws.ToString(m.TargetWorkspaceId)
	if aws.ToString(m.SourceWorkspaceId) != alice || target == "" || target == alice || catalog.CheckID(catalog.KindWorkspace, target) != nil {
		t.Fatalf("MigrateWorkspace answered %+v", m)
	}
	d, err := c.DescribeWorkspaces(ctx, &workspaces.DescribeWorkspacesInput{WorkspaceIds: []string{alice, target}})
	if err != nil || len(d.Workspaces) != 2 {
		t.Fatalf("describe: %v %+v", err, d)
	}
	byID := map[string]types.Workspace{}
	for _, w := range d.Workspaces {
		byID[aws.ToString(w.WorkspaceId)] = w
	}
	src, tgt := byID[alice], byID[target]
	if src.State != types.WorkspaceStateUpdating {
		t.Errorf("the source is %s during its migration, want UPDATING", src.State)
	}
	if tgt.State != types.WorkspaceStatePending || aws.ToString(tgt.BundleId) != bundleStd || aws.ToString(tgt.UserName) != "alice" ||
		aws.ToString(tgt.DirectoryId) != dirID {
		t.Errorf("target %+v: want PENDING, bundle %s, alice in %s", tgt, bundleStd, dirID)
	}
	if aws.ToString(tgt.ComputerName) == "" || aws.ToString(tgt.ComputerName) == aws.ToString(src.ComputerName) {
		t.Errorf("target computer name %q, source's %q: want a new one", aws.ToString(tgt.ComputerName), aws.ToString(src.ComputerName))
	}
	p := tgt.WorkspaceProperties
	if p == nil || p.RunningMode != types.RunningModeAutoStop || aws.ToInt32(p.RunningModeAutoStopTimeoutInMinutes) != 120 {
		t.Errorf("target properties %+v: the running mode (AUTO_STOP, 120 min) did not carry over", p)
	}
	// Value (80, 10) to Standard (80, 50): the default user volume grows to the new bundle's.
	if p != nil && (aws.ToInt32(p.RootVolumeSizeGib) != 80 || aws.ToInt32(p.UserVolumeSizeGib) != 50 || p.ComputeTypeName != types.ComputeStandard) {
		t.Errorf("target volumes %d/%d GiB, compute %s; want 80/50 STANDARD", aws.ToInt32(p.RootVolumeSizeGib), aws.ToInt32(p.UserVolumeSizeGib), p.ComputeTypeName)
	}
	tags, err := c.DescribeTags(ctx, &workspaces.DescribeTagsInput{ResourceId: aws.String(target)})
	if err != nil || len(tags.TagList) != 2 {
		t.Fatalf("target tags: %v %+v, want the source's two", err, tags)
	}
	// One migration at a time per WorkSpace; the target is PENDING, not migratable.
	refused(alice, bundleBig, "OperationInProgressException", target)
	refused(target, bundleValue, "InvalidResourceStateException", "PENDING")

	// At most 25 in flight: with alice's running, 24 more are accepted and the 26th is
	// refused.
	var users []catalog.User
	for i := range 25 {
		users = append(users, catalog.User{UserName: fmt.Sprintf("mig%02d", i), Email: fmt.Sprintf("mig%02d@example.com", i)})
	}
	if err := e.svc.CreateUsers(ctx, dirID, users); err != nil {
		t.Fatal(err)
	}
	var reqs []types.WorkspaceRequest
	for _, u := range users {
		reqs = append(reqs, types.WorkspaceRequest{DirectoryId: aws.String(dirID), UserName: aws.String(u.UserName), BundleId: aws.String(bundleValue)})
	}
	more, err := c.CreateWorkspaces(ctx, &workspaces.CreateWorkspacesInput{Workspaces: reqs})
	if err != nil || len(more.PendingRequests) != 25 {
		t.Fatalf("create 25: %v %+v", err, more.FailedRequests)
	}
	ids := []string{bob}
	for _, w := range more.PendingRequests {
		ids = append(ids, aws.ToString(w.WorkspaceId))
	}
	for i, id := range ids {
		e.setState(id, workspace.Stopped)
		if i == len(ids)-2 {
			break // alice's + 24 = 25 in flight
		}
	}
	for _, id := range ids[:24] {
		if _, err := migrate(id, bundleStd); err != nil {
			t.Fatalf("migration %s (of 25 in flight): %v", id, err)
		}
	}
	refused(ids[24], bundleStd, "ResourceLimitExceededException", "at most 25")
}

// TestPrimaryAddressesThroughSDK: with a primary pool (netcfg serving the primary network
// by DHCP), each WorkSpace is given its own address, which DescribeWorkspaces returns as
// IpAddress; a migration's target gets a new one; a full pool refuses a launch with the
// guide's "enough IP addresses" and changes nothing; a TERMINATED WorkSpace's address is
// given again.
func TestPrimaryAddressesThroughSDK(t *testing.T) {
	e := newEnv(t, envOptions{primaryPool: "10.92.0.100-10.92.0.102"})
	c := e.client(accessKeyID, secretKey)
	ctx := context.Background()
	create := func(user string) (string, error) {
		out, err := c.CreateWorkspaces(ctx, &workspaces.CreateWorkspacesInput{Workspaces: []types.WorkspaceRequest{
			{DirectoryId: aws.String(dirID), UserName: aws.String(user), BundleId: aws.String(bundleValue)}}})
		if err != nil {
			return "", err
		}
		if len(out.FailedRequests) > 0 {
			f := out.FailedRequests[0]
			return "", fmt.Errorf("%s: %s", aws.ToString(f.ErrorCode), aws.ToString(f.ErrorMessage))
		}
		return aws.ToString(out.PendingRequests[0].WorkspaceId), nil
	}
	ip := func(id string) string {
		t.Helper()
		d, err := c.DescribeWorkspaces(ctx, &workspaces.DescribeWorkspacesInput{WorkspaceIds: []string{id}})
		if err != nil || len(d.Workspaces) != 1 {
			t.Fatalf("describe %s: %v", id, err)
		}
		return aws.ToString(d.Workspaces[0].IpAddress)
	}
	alice, err := create("alice")
	if err != nil {
		t.Fatal(err)
	}
	bob, err := create("bob")
	if err != nil {
		t.Fatal(err)
	}
	if a, b := ip(alice), ip(bob); a != "10.92.0.100" || b != "10.92.0.101" {
		t.Fatalf("IpAddress alice %q, bob %q; want 10.92.0.100 and .101", a, b)
	}
	e.setState(alice, workspace.Available)
	m, err := c.MigrateWorkspace(ctx, &workspaces.MigrateWorkspaceInput{SourceWorkspaceId: aws.String(alice), BundleId: aws.String(bundleStd)})
	if err != nil {
		t.Fatal(err)
	}
	target := aws.ToString(m.TargetWorkspaceId)
	if got := ip(target); got != "10.92.0.102" {
		t.Fatalf("the migration's target has IpAddress %q, want a new one (10.92.0.102)", got)
	}
	// The pool is used up.
	before := e.snapshot()
	if _, err := create("carol"); err == nil || !strings.Contains(err.Error(), "ResourceLimitExceeded") || !strings.Contains(err.Error(), "no free address") {
		t.Fatalf("a launch with the pool used up: %v", err)
	}
	if after := e.snapshot(); !reflect.DeepEqual(before, after) {
		t.Fatalf("a refused launch changed the records")
	}
	// bob's address is free again once bob is TERMINATED (the controller's last word).
	e.setState(bob, workspace.Terminated)
	carol, err := create("carol")
	if err != nil {
		t.Fatal(err)
	}
	if got := ip(carol); got != "10.92.0.101" {
		t.Fatalf("carol has %q, want bob's freed 10.92.0.101", got)
	}
}
