package api

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/workspaces"
	"github.com/aws/aws-sdk-go-v2/service/workspaces/types"

	"deskhost/hostd/service"
	"deskhost/hostd/workspace"
)

// TestModifyComputeAndVolumesThroughSDK: ModifyWorkspaceProperties of the compute type and
// the volume sizes through AWS's Go SDK, with the service's clock injected (no VM: the test
// plays the controller with setState). Every refusal carries the guide's text and changes
// nothing; an accepted change shows as UPDATING with AWS's ModificationStates; the change
// times live in the store, so a new service on it (a restarted hostd) keeps the limits; and
// awscli sees the same.
func TestModifyComputeAndVolumesThroughSDK(t *testing.T) {
	clk := &fakeClock{t: time.Now().UTC().Truncate(time.Second)}
	e := newEnv(t, envOptions{serviceNow: clk.Now})
	c := e.client(accessKeyID, secretKey)
	ctx := context.Background()
	out, err := c.CreateWorkspaces(ctx, &workspaces.CreateWorkspacesInput{Workspaces: []types.WorkspaceRequest{
		{DirectoryId: aws.String(dirID), UserName: aws.String("alice"), BundleId: aws.String(bundleValue)}}})
	if err != nil || len(out.PendingRequests) != 1 {
		t.Fatalf("create: %v %+v", err, out)
	}
	id := aws.ToString(out.PendingRequests[0].WorkspaceId)
	e.setState(id, workspace.Available)

	modify := func(p types.WorkspaceProperties) error {
		_, err := c.ModifyWorkspaceProperties(ctx, &workspaces.ModifyWorkspacePropertiesInput{WorkspaceId: aws.String(id), WorkspaceProperties: &p})
		return err
	}
	describe := func() types.Workspace {
		t.Helper()
		d, err := c.DescribeWorkspaces(ctx, &workspaces.DescribeWorkspacesInput{WorkspaceIds: []string{id}})
		if err != nil || len(d.Workspaces) != 1 {
			t.Fatalf("describe: %v", err)
		}
		return d.Workspaces[0]
	}
	refused := func(what string, p types.WorkspaceProperties, code, msg string) {
		t.Helper()
		before := e.snapshot()
		if ae := apiErr(t, modify(p), code); !strings.Contains(ae.ErrorMessage(), msg) {
			t.Errorf("%s: %q does not say %q", what, ae.ErrorMessage(), msg)
		}
		if after := e.snapshot(); !reflect.DeepEqual(before, after) {
			t.Errorf("%s: a refused change changed the records", what)
		}
	}
	refused("larger bundle at launch", types.WorkspaceProperties{ComputeTypeName: types.ComputeStandard}, "OperationNotSupportedException", workspace.MsgComputeLaunchWait)
	clk.Advance(workspace.LaunchWait - time.Minute)
	refused("user volume at 5h59m", types.WorkspaceProperties{UserVolumeSizeGib: aws.Int32(50)}, "OperationNotSupportedException", workspace.MsgVolumeLaunchWait)
	clk.Advance(time.Minute)
	// Sizes outside the groups, two volumes, a shrink: the guide's texts.
	refused("user 20 GB", types.WorkspaceProperties{UserVolumeSizeGib: aws.Int32(20)}, "InvalidParameterValuesException", workspace.MsgVolumeRoot80)
	refused("root and user", types.WorkspaceProperties{RootVolumeSizeGib: aws.Int32(175), UserVolumeSizeGib: aws.Int32(100)}, "InvalidParameterValuesException", workspace.MsgVolumeBoth)
	refused("shrink", types.WorkspaceProperties{UserVolumeSizeGib: aws.Int32(5)}, "InvalidParameterValuesException", workspace.MsgVolumeShrink)
	refused("root first", types.WorkspaceProperties{RootVolumeSizeGib: aws.Int32(175)}, "InvalidParameterValuesException", workspace.MsgVolumeRootFirst)
	refused("compute and volume", types.WorkspaceProperties{ComputeTypeName: types.ComputeStandard, UserVolumeSizeGib: aws.Int32(50)}, "InvalidParameterValuesException", "separate requests")
	refused("Graphics", types.WorkspaceProperties{ComputeTypeName: types.ComputeGraphics}, "OperationNotSupportedException", "migrating")
	refused("no hardware", types.WorkspaceProperties{ComputeTypeName: types.ComputePerformance}, "ResourceUnavailableException", "no hardware on this host")

	// At 6 h the user volume grows: UPDATING, USER_VOLUME UPDATE_IN_PROGRESS.
	woke := len(e.waker.calls())
	if err := modify(types.WorkspaceProperties{UserVolumeSizeGib: aws.Int32(100)}); err != nil {
		t.Fatalf("user 10→100 at 6 h: %v", err)
	}
	d := describe()
	want := []types.ModificationState{{Resource: types.ModificationResourceEnumUserVolume, State: types.ModificationStateEnumUpdateInProgress}}
	if d.State != types.WorkspaceStateUpdating || !reflect.DeepEqual(d.ModificationStates, want) || aws.ToInt32(d.WorkspaceProperties.UserVolumeSizeGib) != 100 {
		t.Fatalf("after the growth request: %s %+v user %d", d.State, d.ModificationStates, aws.ToInt32(d.WorkspaceProperties.UserVolumeSizeGib))
	}
	if len(e.waker.calls()) != woke+1 {
		t.Error("the controller was not woken")
	}
	// While it runs: one change at a time; no reboot, no mode switch (guide §11).
	refused("root while the user volume grows", types.WorkspaceProperties{RootVolumeSizeGib: aws.Int32(175)}, "OperationInProgressException", "MODIFYING_STORAGE")
	refused("mode switch while the user volume grows", types.WorkspaceProperties{RunningMode: types.RunningModeAutoStop}, "InvalidResourceStateException", "UPDATING")
	if r, err := c.RebootWorkspaces(ctx, &workspaces.RebootWorkspacesInput{RebootWorkspaceRequests: []types.RebootRequest{{WorkspaceId: aws.String(id)}}}); err != nil ||
		len(r.FailedRequests) != 1 || aws.ToString(r.FailedRequests[0].ErrorCode) != "InvalidResourceStateException" {
		t.Errorf("reboot while UPDATING: %v %+v", err, r)
	}
	e.setState(id, workspace.Available) // the controller's end of the change
	if d := describe(); len(d.ModificationStates) != 0 || d.State != types.WorkspaceStateAvailable {
		t.Errorf("after the change: %+v", d.ModificationStates)
	}
	// Then the root, as the guide's path goes; the user volume again within 6 h is refused.
	if err := modify(types.WorkspaceProperties{RootVolumeSizeGib: aws.Int32(175)}); err != nil {
		t.Fatalf("root 80→175 after the user volume: %v", err)
	}
	e.setState(id, workspace.Available)
	refused("user volume twice in 6 h", types.WorkspaceProperties{UserVolumeSizeGib: aws.Int32(200)}, "OperationNotSupportedException", workspace.MsgVolumeRate)

	// Compute: larger, then not larger again within 6 h, even after a restart.
	if err := modify(types.WorkspaceProperties{ComputeTypeName: types.ComputeStandard}); err != nil {
		t.Fatalf("VALUE→STANDARD: %v", err)
	}
	if d := describe(); d.State != types.WorkspaceStateUpdating || len(d.ModificationStates) != 1 || d.ModificationStates[0].Resource != types.ModificationResourceEnumComputeType {
		t.Fatalf("during the compute change: %s %+v", d.State, d.ModificationStates)
	}
	e.setState(id, workspace.Available)
	restarted := service.New(e.store, testConfig(), e.waker, clk.Now, slog.New(slog.DiscardHandler))
	larger := "POWER"
	if err := restarted.ModifyWorkspaceProperties(ctx, id, workspace.PropertiesChange{ComputeTypeName: &larger}); err == nil ||
		!strings.Contains(err.Error(), workspace.MsgComputeRate) {
		t.Errorf("a larger bundle within 6 h, after a restart: %v", err)
	}
	// Smaller: once, then not again for 30 days.
	if err := modify(types.WorkspaceProperties{ComputeTypeName: types.ComputeValue}); err != nil {
		t.Fatalf("STANDARD→VALUE: %v", err)
	}
	e.setState(id, workspace.Available)
	clk.Advance(workspace.UpsizeInterval)
	if err := modify(types.WorkspaceProperties{ComputeTypeName: types.ComputeStandard}); err != nil {
		t.Fatalf("VALUE→STANDARD 6 h later: %v", err)
	}
	e.setState(id, workspace.Available)
	refused("a second smaller bundle within 30 days", types.WorkspaceProperties{ComputeTypeName: types.ComputeValue}, "OperationNotSupportedException", workspace.MsgComputeRate)

	// awscli: 6 h on, the user volume grows 100→200; describe-workspaces lists the change.
	if _, err := os.Stat(awsCLI); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is missing: %v", awsCLI, err)
		}
		t.Skipf("the awscli part is skipped: %s is missing", awsCLI)
	}
	clk.Advance(workspace.VolumeInterval)
	home := t.TempDir()
	cli := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(awsCLI, append(append([]string{"workspaces"}, args...), "--endpoint-url", e.url, "--region", e.region, "--output", "json")...)
		cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + home, "LANG=C.UTF-8", "AWS_CONFIG_FILE=" + filepath.Join(home, "config"),
			"AWS_SHARED_CREDENTIALS_FILE=" + filepath.Join(home, "credentials"), "AWS_CA_BUNDLE=" + e.cert,
			"AWS_ACCESS_KEY_ID=" + accessKeyID, "AWS_SECRET_ACCESS_KEY=" + secretKey, "AWS_PAGER=", "AWS_MAX_ATTEMPTS=1"}
		b, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("aws %s: %v\n%s", args[0], err, b)
		}
		return string(b)
	}
	cli("modify-workspace-properties", "--workspace-id", id, "--workspace-properties", "UserVolumeSizeGib=200")
	if o := cli("describe-workspaces", "--workspace-ids", id); !strings.Contains(o, `"Resource": "USER_VOLUME"`) || !strings.Contains(o, `"State": "UPDATE_IN_PROGRESS"`) ||
		!strings.Contains(o, `"UserVolumeSizeGib": 200`) {
		t.Errorf("describe-workspaces during the growth:\n%s", o)
	}
}
