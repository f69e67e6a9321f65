package api

import (
	"bytes"
	"context"
	"reflect"
	"strings"
	"testing"

	"deskhost/hostd/keystore"
	"deskhost/hostd/service"
	"deskhost/hostd/store"
	"deskhost/hostd/workspace"
	"deskhost/internal/catalog"
	"deskhost/internal/hostdclient"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/workspaces"
	"github.com/aws/aws-sdk-go-v2/service/workspaces/types"
)

// TestEncryptionThroughSDK: the key store's operations and CreateWorkspaces' encryption
// members through AWS's SDK and hostd's client: bad input (no key, a key without
// encryption, an unknown key, a disabled key, the 501st WorkSpace of a key) gets the
// guide's message and changes nothing; an encrypted WorkSpace is described as such; with
// its key disabled, reboot, rebuild, restore and start are refused and change nothing; no
// image may be made from it. (The volumes themselves: hostd/controller's
// TestEncryptedVolumes.)
func TestEncryptionThroughSDK(t *testing.T) {
	e := newEnv(t, envOptions{workspaceQuota: 1000})
	c := e.client(accessKeyID, secretKey)
	ctx := context.Background()

	// The key store.
	k, err := c.CreateKey(ctx, &hostdclient.CreateKeyInput{Alias: "alias/finance", Description: "finance desktops"})
	if err != nil {
		t.Fatal(err)
	}
	key := k.Key
	if !key.Enabled || key.Alias != "alias/finance" || !strings.HasSuffix(key.Arn, ":key/"+key.KeyId) || key.WorkspaceLimit != 500 {
		t.Fatalf("CreateKey: %+v", key)
	}
	_, err = c.CreateKey(ctx, &hostdclient.CreateKeyInput{Alias: "finance"})
	apiErr(t, err, "ResourceAlreadyExistsException")
	_, err = c.CreateKey(ctx, &hostdclient.CreateKeyInput{Alias: "alias/aws/workspaces"})
	apiErr(t, err, "InvalidParameterValuesException")
	_, err = c.DisableKey(ctx, &hostdclient.KeyIDInput{KeyId: "alias/nope"})
	apiErr(t, err, "ResourceNotFoundException")
	_, err = c.DescribeKeys(ctx, &hostdclient.DescribeKeysInput{KeyId: "not-a-key"})
	apiErr(t, err, "ResourceNotFoundException")
	off, err := c.CreateKey(ctx, &hostdclient.CreateKeyInput{Alias: "alias/off"})
	if err != nil {
		t.Fatal(err)
	}
	if d, err := c.DisableKey(ctx, &hostdclient.KeyIDInput{KeyId: off.Key.KeyId}); err != nil || d.Key.Enabled {
		t.Fatalf("DisableKey: %v %+v", err, d)
	}
	ks, err := c.DescribeKeys(ctx, &hostdclient.DescribeKeysInput{})
	if err != nil || len(ks.Keys) != 2 {
		t.Fatalf("DescribeKeys: %v %+v", err, ks)
	}

	// Bad launches: each refused with its reason, nothing written, nobody woken.
	req := func(user string, root, userVol bool, key string) types.WorkspaceRequest {
		r := types.WorkspaceRequest{DirectoryId: aws.String(dirID), UserName: aws.String(user), BundleId: aws.String(bundleValue),
			WorkspaceProperties: &types.WorkspaceProperties{RunningMode: types.RunningModeAutoStop}}
		if root {
			r.RootVolumeEncryptionEnabled = aws.Bool(true)
		}
		if userVol {
			r.UserVolumeEncryptionEnabled = aws.Bool(true)
		}
		if key != "" {
			r.VolumeEncryptionKey = aws.String(key)
		}
		return r
	}
	before, woken := e.snapshot(), len(e.waker.calls())
	for _, bad := range []struct {
		name      string
		r         types.WorkspaceRequest
		code, msg string
	}{
		{"encryption without a key", req("alice", true, false, ""), "InvalidParameterValuesException", "VolumeEncryptionKey"},
		{"a key without encryption", req("alice", false, false, "alias/finance"), "InvalidParameterValuesException", "neither"},
		{"an unknown key", req("alice", true, true, "alias/nope"), "ResourceNotFoundException", keystore.NotAvailable},
		{"an unknown key id", req("alice", false, true, "1b4e28ba-2fa1-41d2-883f-0016d3cca427"), "ResourceNotFoundException", keystore.NotAvailable},
		{"a disabled key", req("alice", true, true, off.Key.Arn), "ResourceUnavailableException", keystore.NotAvailable},
	} {
		out, err := c.CreateWorkspaces(ctx, &workspaces.CreateWorkspacesInput{Workspaces: []types.WorkspaceRequest{bad.r}})
		if err != nil || len(out.PendingRequests) != 0 || len(out.FailedRequests) != 1 {
			t.Fatalf("%s: %v %+v", bad.name, err, out)
		}
		f := out.FailedRequests[0]
		if aws.ToString(f.ErrorCode) != bad.code || !strings.Contains(aws.ToString(f.ErrorMessage), bad.msg) {
			t.Errorf("%s: %s: %s, want %s with %q", bad.name, aws.ToString(f.ErrorCode), aws.ToString(f.ErrorMessage), bad.code, bad.msg)
		}
	}
	if after := e.snapshot(); !reflect.DeepEqual(before, after) || len(e.waker.calls()) != woken {
		t.Fatalf("refused launches changed the WorkSpaces: %d before, %d after", len(before), len(after))
	}

	// An encrypted WorkSpace, its key named by ARN.
	out, err := c.CreateWorkspaces(ctx, &workspaces.CreateWorkspacesInput{Workspaces: []types.WorkspaceRequest{req("alice", true, true, key.Arn), req("bob", false, false, "")}})
	if err != nil || len(out.FailedRequests) != 0 || len(out.PendingRequests) != 2 {
		t.Fatalf("create: %v %+v", err, out)
	}
	alice, bob := aws.ToString(out.PendingRequests[0].WorkspaceId), aws.ToString(out.PendingRequests[1].WorkspaceId)
	d, err := c.DescribeWorkspaces(ctx, &workspaces.DescribeWorkspacesInput{WorkspaceIds: []string{alice}})
	if err != nil || len(d.Workspaces) != 1 {
		t.Fatal(err)
	}
	if w := d.Workspaces[0]; !aws.ToBool(w.RootVolumeEncryptionEnabled) || !aws.ToBool(w.UserVolumeEncryptionEnabled) || aws.ToString(w.VolumeEncryptionKey) != key.Arn {
		t.Fatalf("DescribeWorkspaces: root %v user %v key %q", aws.ToBool(w.RootVolumeEncryptionEnabled), aws.ToBool(w.UserVolumeEncryptionEnabled), aws.ToString(w.VolumeEncryptionKey))
	}
	rec, _ := e.svc.Get(alice)
	if rec.Encryption.KeyID != key.KeyId || len(rec.Encryption.DataKey) < 32 {
		t.Fatalf("record: %+v", rec.Encryption)
	}

	// No image from it (CreateWorkspaceImage calls this).
	plainRec, _ := e.svc.Get(bob)
	if err := service.CheckImageSource(rec); !catalog.IsError(err, catalog.OperationNotSupported) ||
		!strings.Contains(err.Error(), "Creating a custom image from an encrypted WorkSpace is not supported") {
		t.Fatalf("image from an encrypted WorkSpace: %v", err)
	}
	if err := service.CheckImageSource(plainRec); err != nil {
		t.Fatalf("image from a plain WorkSpace: %v", err)
	}
	// Through the API: refused, and nothing changes.
	e.setState(alice, workspace.Available)
	_, err = c.CreateWorkspaceImage(ctx, &workspaces.CreateWorkspaceImageInput{Name: aws.String("from-encrypted"), Description: aws.String("refused"), WorkspaceId: aws.String(alice)})
	if ae := apiErr(t, err, "OperationNotSupportedException"); !strings.Contains(ae.ErrorMessage(), "encrypted WorkSpace is not supported") {
		t.Fatalf("CreateWorkspaceImage of an encrypted WorkSpace: %s", ae.ErrorMessage())
	}
	if got, _ := e.svc.Get(alice); got.State != workspace.Available || got.CaptureImage != "" {
		t.Fatalf("the refused capture changed alice: %s %q", got.State, got.CaptureImage)
	}

	// Key disabled: reboot, rebuild, restore and start are refused with the guide's words.
	e.setState(alice, workspace.Available)
	e.setState(bob, workspace.Available)
	if _, err := c.DisableKey(ctx, &hostdclient.KeyIDInput{KeyId: "alias/finance"}); err != nil {
		t.Fatal(err)
	}
	before, woken = e.snapshot(), len(e.waker.calls())
	refused := func(op string, failed []types.FailedWorkspaceChangeRequest, err error) {
		t.Helper()
		if err != nil || len(failed) != 1 || aws.ToString(failed[0].ErrorCode) != "ResourceUnavailableException" ||
			!strings.Contains(aws.ToString(failed[0].ErrorMessage), keystore.MustBeEnabled) || aws.ToString(failed[0].WorkspaceId) != alice {
			t.Fatalf("%s with the key disabled: %v %+v", op, err, failed)
		}
	}
	rb, err := c.RebootWorkspaces(ctx, &workspaces.RebootWorkspacesInput{RebootWorkspaceRequests: []types.RebootRequest{{WorkspaceId: aws.String(alice)}}})
	refused("reboot", rb.FailedRequests, err)
	rbu, err := c.RebuildWorkspaces(ctx, &workspaces.RebuildWorkspacesInput{RebuildWorkspaceRequests: []types.RebuildRequest{{WorkspaceId: aws.String(alice)}}})
	refused("rebuild", rbu.FailedRequests, err)
	_, err = c.RestoreWorkspace(ctx, &workspaces.RestoreWorkspaceInput{WorkspaceId: aws.String(alice)})
	apiErr(t, err, "ResourceUnavailableException")
	_, err = c.MigrateWorkspace(ctx, &workspaces.MigrateWorkspaceInput{SourceWorkspaceId: aws.String(alice), BundleId: aws.String(bundleStd)})
	if ae := apiErr(t, err, "ResourceUnavailableException"); !strings.Contains(ae.ErrorMessage(), keystore.MustBeEnabled) {
		t.Fatalf("migrate with the key disabled: %s", ae.ErrorMessage())
	}
	if after := e.snapshot(); !reflect.DeepEqual(before, after) || len(e.waker.calls()) != woken {
		t.Fatal("refused operations changed a WorkSpace")
	}
	// The plain WorkSpace is not held back by someone else's key.
	if rb, err := c.RebootWorkspaces(ctx, &workspaces.RebootWorkspacesInput{RebootWorkspaceRequests: []types.RebootRequest{{WorkspaceId: aws.String(bob)}}}); err != nil || len(rb.FailedRequests) != 0 {
		t.Fatalf("reboot of the plain WorkSpace: %v %+v", err, rb)
	}
	e.setState(alice, workspace.Stopped)
	st, err := c.StartWorkspaces(ctx, &workspaces.StartWorkspacesInput{StartWorkspaceRequests: []types.StartRequest{{WorkspaceId: aws.String(alice)}}})
	refused("start", st.FailedRequests, err)
	// Switching it to ALWAYS_ON would start it: refused too.
	_, err = c.ModifyWorkspaceProperties(ctx, &workspaces.ModifyWorkspacePropertiesInput{WorkspaceId: aws.String(alice),
		WorkspaceProperties: &types.WorkspaceProperties{RunningMode: types.RunningModeAlwaysOn}})
	apiErr(t, err, "ResourceUnavailableException")
	if got, _ := e.svc.Get(alice); got.State != workspace.Stopped || got.Properties.RunningMode != workspace.AutoStop {
		t.Fatalf("a refused start left it %s, %s", got.State, got.Properties.RunningMode)
	}
	if _, err := c.EnableKey(ctx, &hostdclient.KeyIDInput{KeyId: key.KeyId}); err != nil {
		t.Fatal(err)
	}
	st, err = c.StartWorkspaces(ctx, &workspaces.StartWorkspacesInput{StartWorkspaceRequests: []types.StartRequest{{WorkspaceId: aws.String(alice)}}})
	if err != nil || len(st.FailedRequests) != 0 {
		t.Fatalf("start with the key enabled: %v %+v", err, st)
	}

	// 500 WorkSpaces per key: 499 more on record (as if launched), then the 501st is refused.
	if err := e.store.Update(func(tx store.Tx) error {
		for i := 0; i < keystore.MaxWorkspacesPerKey-1; i++ {
			w := workspace.Workspace{ID: catalog.NewID(catalog.KindWorkspace), DirectoryID: dirID, UserName: "seeded", BundleID: bundleValue,
				State: workspace.Available, Encryption: workspace.Encryption{User: true, KeyID: key.KeyId, KeyRef: key.KeyId, DataKey: []byte("x")}}
			if i == 0 {
				w.State = workspace.Terminated // does not count
			}
			if err := store.PutJSON(tx, store.Workspaces, w.ID, w); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	out, err = c.CreateWorkspaces(ctx, &workspaces.CreateWorkspacesInput{Workspaces: []types.WorkspaceRequest{req("carol", false, true, "alias/finance")}})
	if err != nil || len(out.PendingRequests) != 1 {
		t.Fatalf("the 500th WorkSpace of the key: %v %+v", err, out)
	}
	ks, err = c.DescribeKeys(ctx, &hostdclient.DescribeKeysInput{KeyId: key.KeyId})
	if err != nil || len(ks.Keys) != 1 || ks.Keys[0].Workspaces != 500 {
		t.Fatalf("DescribeKeys: %v %+v", err, ks)
	}
	before, woken = e.snapshot(), len(e.waker.calls())
	out, err = c.CreateWorkspaces(ctx, &workspaces.CreateWorkspacesInput{Workspaces: []types.WorkspaceRequest{req("dave", true, false, key.KeyId)}})
	if err != nil || len(out.PendingRequests) != 0 || len(out.FailedRequests) != 1 {
		t.Fatalf("the 501st WorkSpace of the key: %v %+v", err, out)
	}
	if f := out.FailedRequests[0]; aws.ToString(f.ErrorCode) != "ResourceLimitExceededException" ||
		!strings.HasPrefix(aws.ToString(f.ErrorMessage), keystore.NotAvailable) {
		t.Fatalf("the 501st WorkSpace of the key: %s: %s", aws.ToString(f.ErrorCode), aws.ToString(f.ErrorMessage))
	}
	if after := e.snapshot(); !reflect.DeepEqual(before, after) || len(e.waker.calls()) != woken {
		t.Fatal("the refused 501st launch changed the WorkSpaces")
	}
	// A migration carries the key: its target takes the source's place under the key's
	// limit, and gets the source's data key sealed for its own id.
	e.setState(alice, workspace.Available)
	m, err := c.MigrateWorkspace(ctx, &workspaces.MigrateWorkspaceInput{SourceWorkspaceId: aws.String(alice), BundleId: aws.String(bundleStd)})
	if err != nil {
		t.Fatalf("migrate an encrypted WorkSpace at its key's limit: %v", err)
	}
	target := aws.ToString(m.TargetWorkspaceId)
	d, err = c.DescribeWorkspaces(ctx, &workspaces.DescribeWorkspacesInput{WorkspaceIds: []string{target}})
	if err != nil || len(d.Workspaces) != 1 {
		t.Fatal(err)
	}
	if w := d.Workspaces[0]; !aws.ToBool(w.RootVolumeEncryptionEnabled) || !aws.ToBool(w.UserVolumeEncryptionEnabled) || aws.ToString(w.VolumeEncryptionKey) != key.Arn {
		t.Fatalf("the target: root %v user %v key %q, want the source's", aws.ToBool(w.RootVolumeEncryptionEnabled), aws.ToBool(w.UserVolumeEncryptionEnabled), aws.ToString(w.VolumeEncryptionKey))
	}
	trec, _ := e.svc.Get(target)
	if trec.Encryption.KeyID != key.KeyId || len(trec.Encryption.DataKey) < 32 || bytes.Equal(trec.Encryption.DataKey, rec.Encryption.DataKey) {
		t.Fatalf("the target's encryption %+v: want key %s and the data key sealed for its id", trec.Encryption, key.KeyId)
	}

	// Another key still serves.
	k2, err := c.CreateKey(ctx, &hostdclient.CreateKeyInput{})
	if err != nil {
		t.Fatal(err)
	}
	out, err = c.CreateWorkspaces(ctx, &workspaces.CreateWorkspacesInput{Workspaces: []types.WorkspaceRequest{req("dave", true, false, k2.Key.KeyId)}})
	if err != nil || len(out.PendingRequests) != 1 {
		t.Fatalf("a second key: %v %+v", err, out)
	}
}
