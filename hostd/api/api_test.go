package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/workspaces"
	"github.com/aws/aws-sdk-go-v2/service/workspaces/types"
	"github.com/aws/smithy-go"

	"deskhost/hostd/workspace"
	"deskhost/internal/catalog"
)

func apiErr(t *testing.T, err error, wantType string) smithy.APIError {
	t.Helper()
	var ae smithy.APIError
	if !errors.As(err, &ae) {
		t.Fatalf("got %v, want a %s API error", err, wantType)
	}
	if ae.ErrorCode() != wantType {
		t.Fatalf("got %s (%s), want %s", ae.ErrorCode(), ae.ErrorMessage(), wantType)
	}
	return ae
}

func TestOperationsThroughSDK(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.client(accessKeyID, secretKey)
	ctx := context.Background()

	// CreateWorkspaces: three accepted, four refused item by item, each with its reason.
	out, err := c.CreateWorkspaces(ctx, &workspaces.CreateWorkspacesInput{Workspaces: []types.WorkspaceRequest{
		{DirectoryId: aws.String(dirID), UserName: aws.String("alice"), BundleId: aws.String(bundleStd),
			Tags: []types.Tag{{Key: aws.String("team"), Value: aws.String("blue")}}},
		{DirectoryId: aws.String(dirID), UserName: aws.String("bob"), BundleId: aws.String(bundleValue),
			WorkspaceProperties: &types.WorkspaceProperties{RunningMode: types.RunningModeAutoStop, RunningModeAutoStopTimeoutInMinutes: aws.Int32(120)}},
		{DirectoryId: aws.String(dirID), UserName: aws.String("carol"), BundleId: aws.String(bundleBig),
			WorkspaceProperties: &types.WorkspaceProperties{RootVolumeSizeGib: aws.Int32(200), UserVolumeSizeGib: aws.Int32(150)}},
		{DirectoryId: aws.String(dirID), UserName: aws.String("dave"), BundleId: aws.String("wsb-nosuchbndl")},
		{DirectoryId: aws.String("d-ffffffffff"), UserName: aws.String("dave"), BundleId: aws.String(bundleStd)},
		{DirectoryId: aws.String(dirID), UserName: aws.String("nomail"), BundleId: aws.String(bundleStd)},
		{DirectoryId: aws.String(dirID), UserName: aws.String("ALICE"), BundleId: aws.String(bundleStd)},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.PendingRequests) != 3 {
		t.Fatalf("pending %d, want 3", len(out.PendingRequests))
	}
	wantFail := []struct{ user, code, msg string }{
		{"dave", "ResourceNotFoundException", "bundle wsb-nosuchbndl does not exist"},
		{"dave", "ResourceNotFoundException", "directory d-ffffffffff does not exist"},
		{"nomail", "InvalidParameterValuesException", "has no email address"},
		{"ALICE", "ResourceAlreadyExistsException", "already has WorkSpace"},
	}
	if len(out.FailedRequests) != len(wantFail) {
		t.Fatalf("failed %d, want %d", len(out.FailedRequests), len(wantFail))
	}
	for i, w := range wantFail {
		f := out.FailedRequests[i]
		if aws.ToString(f.WorkspaceRequest.UserName) != w.user || aws.ToString(f.ErrorCode) != w.code ||
			!strings.Contains(aws.ToString(f.ErrorMessage), w.msg) {
			t.Errorf("failure %d: user %q code %q message %q; want %v", i, aws.ToString(f.WorkspaceRequest.UserName),
				aws.ToString(f.ErrorCode), aws.ToString(f.ErrorMessage), w)
		}
	}
	if got := aws.ToString(out.FailedRequests[0].WorkspaceRequest.BundleId); got != "wsb-nosuchbndl" {
		t.Errorf("the failure does not echo the request: BundleId %q", got)
	}
	byUser := map[string]types.Workspace{}
	for _, w := range out.PendingRequests {
		byUser[aws.ToString(w.UserName)] = w
		if w.State != types.WorkspaceStatePending {
			t.Errorf("%s: state %s, want PENDING", aws.ToString(w.WorkspaceId), w.State)
		}
	}
	alice, bob, carol := byUser["alice"], byUser["bob"], byUser["carol"]
	p := alice.WorkspaceProperties
	if p.RunningMode != types.RunningModeAlwaysOn || aws.ToInt32(p.RootVolumeSizeGib) != 80 || aws.ToInt32(p.UserVolumeSizeGib) != 50 ||
		p.ComputeTypeName != types.ComputeStandard || !slices.Equal(p.Protocols, []types.Protocol{types.ProtocolPcoip}) {
		t.Errorf("alice's properties %+v", *p)
	}
	if m := aws.ToInt32(bob.WorkspaceProperties.RunningModeAutoStopTimeoutInMinutes); bob.WorkspaceProperties.RunningMode != types.RunningModeAutoStop || m != 120 {
		t.Errorf("bob: %s %d", bob.WorkspaceProperties.RunningMode, m)
	}
	if aws.ToInt32(carol.WorkspaceProperties.RootVolumeSizeGib) != 200 || aws.ToInt32(carol.WorkspaceProperties.UserVolumeSizeGib) != 150 {
		t.Errorf("carol's volumes %+v", *carol.WorkspaceProperties)
	}
	if aws.ToBool(alice.RootVolumeEncryptionEnabled) || aws.ToBool(alice.UserVolumeEncryptionEnabled) || alice.ModificationStates == nil {
		t.Errorf("alice: encryption flags or ModificationStates wrong: %+v", alice)
	}
	if got := e.waker.calls(); len(got) != 3 {
		t.Errorf("waker calls %v, want the 3 new WorkSpaces", got)
	}

	// DescribeWorkspaces: by id, by directory and user, by bundle, and paginated.
	d, err := c.DescribeWorkspaces(ctx, &workspaces.DescribeWorkspacesInput{WorkspaceIds: []string{aws.ToString(alice.WorkspaceId)}})
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Workspaces) != 1 || aws.ToString(d.Workspaces[0].UserName) != "alice" || aws.ToString(d.Workspaces[0].ComputerName) == "" {
		t.Fatalf("describe by id: %+v", d.Workspaces)
	}
	d, err = c.DescribeWorkspaces(ctx, &workspaces.DescribeWorkspacesInput{DirectoryId: aws.String(dirID), UserName: aws.String("bob")})
	if err != nil || len(d.Workspaces) != 1 || aws.ToString(d.Workspaces[0].WorkspaceId) != aws.ToString(bob.WorkspaceId) {
		t.Fatalf("describe by user: %v %+v", err, d)
	}
	d, err = c.DescribeWorkspaces(ctx, &workspaces.DescribeWorkspacesInput{BundleId: aws.String(bundleBig)})
	if err != nil || len(d.Workspaces) != 1 || aws.ToString(d.Workspaces[0].UserName) != "carol" {
		t.Fatalf("describe by bundle: %v %+v", err, d)
	}
	var paged []string
	pager := workspaces.NewDescribeWorkspacesPaginator(c, &workspaces.DescribeWorkspacesInput{Limit: aws.Int32(1)})
	for pager.HasMorePages() {
		pg, err := pager.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(pg.Workspaces) > 1 {
			t.Fatalf("page of %d with Limit 1", len(pg.Workspaces))
		}
		for _, w := range pg.Workspaces {
			paged = append(paged, aws.ToString(w.WorkspaceId))
		}
	}
	if len(paged) != 3 || !slices.IsSorted(paged) {
		t.Errorf("paginated ids %v", paged)
	}

	// RebootWorkspaces: PENDING cannot reboot (per-item failure); AVAILABLE can.
	rb, err := c.RebootWorkspaces(ctx, &workspaces.RebootWorkspacesInput{RebootWorkspaceRequests: []types.RebootRequest{{WorkspaceId: alice.WorkspaceId}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(rb.FailedRequests) != 1 || aws.ToString(rb.FailedRequests[0].ErrorCode) != "InvalidResourceStateException" ||
		aws.ToString(rb.FailedRequests[0].WorkspaceId) != aws.ToString(alice.WorkspaceId) ||
		!strings.Contains(aws.ToString(rb.FailedRequests[0].ErrorMessage), "is PENDING") {
		t.Errorf("reboot of a PENDING WorkSpace: %+v", rb.FailedRequests)
	}
	aliceID, bobID, carolID := aws.ToString(alice.WorkspaceId), aws.ToString(bob.WorkspaceId), aws.ToString(carol.WorkspaceId)
	for _, id := range []string{aliceID, bobID, carolID} {
		e.setState(id, workspace.Available)
	}
	rb, err = c.RebootWorkspaces(ctx, &workspaces.RebootWorkspacesInput{RebootWorkspaceRequests: []types.RebootRequest{
		{WorkspaceId: alice.WorkspaceId}, {WorkspaceId: aws.String("ws-doesnotexist")}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(rb.FailedRequests) != 1 || aws.ToString(rb.FailedRequests[0].WorkspaceId) != "ws-doesnotexist" ||
		aws.ToString(rb.FailedRequests[0].ErrorCode) != "ResourceNotFoundException" {
		t.Errorf("reboot failures %+v", rb.FailedRequests)
	}
	e.expectState(aliceID, workspace.Rebooting)

	// StopWorkspaces / StartWorkspaces: AutoStop only.
	st, err := c.StopWorkspaces(ctx, &workspaces.StopWorkspacesInput{StopWorkspaceRequests: []types.StopRequest{{WorkspaceId: bob.WorkspaceId}, {WorkspaceId: carol.WorkspaceId}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(st.FailedRequests) != 1 || aws.ToString(st.FailedRequests[0].WorkspaceId) != carolID ||
		aws.ToString(st.FailedRequests[0].ErrorCode) != "OperationNotSupportedException" {
		t.Errorf("stop failures %+v", st.FailedRequests)
	}
	e.expectState(bobID, workspace.Stopping)
	e.setState(bobID, workspace.Stopped)
	sr, err := c.StartWorkspaces(ctx, &workspaces.StartWorkspacesInput{StartWorkspaceRequests: []types.StartRequest{{WorkspaceId: bob.WorkspaceId}}})
	if err != nil || len(sr.FailedRequests) != 0 {
		t.Fatalf("start: %v %+v", err, sr)
	}
	e.expectState(bobID, workspace.Starting)
	e.setState(bobID, workspace.Available)

	// ModifyWorkspaceState: into and out of ADMIN_MAINTENANCE; an unknown WorkSpace is
	// ResourceNotFoundException for the whole call.
	if _, err := c.ModifyWorkspaceState(ctx, &workspaces.ModifyWorkspaceStateInput{WorkspaceId: carol.WorkspaceId, WorkspaceState: types.TargetWorkspaceStateAdminMaintenance}); err != nil {
		t.Fatal(err)
	}
	e.expectState(carolID, workspace.AdminMaintenance)
	if _, err := c.ModifyWorkspaceState(ctx, &workspaces.ModifyWorkspaceStateInput{WorkspaceId: carol.WorkspaceId, WorkspaceState: types.TargetWorkspaceStateAvailable}); err != nil {
		t.Fatal(err)
	}
	e.expectState(carolID, workspace.Available)
	_, err = c.ModifyWorkspaceState(ctx, &workspaces.ModifyWorkspaceStateInput{WorkspaceId: aws.String("ws-doesnotexist"), WorkspaceState: types.TargetWorkspaceStateAvailable})
	apiErr(t, err, "ResourceNotFoundException")

	// ModifyWorkspaceProperties: running mode and AutoStop time; restating the protocol is fine.
	_, err = c.ModifyWorkspaceProperties(ctx, &workspaces.ModifyWorkspacePropertiesInput{WorkspaceId: carol.WorkspaceId,
		WorkspaceProperties: &types.WorkspaceProperties{RunningMode: types.RunningModeAutoStop, RunningModeAutoStopTimeoutInMinutes: aws.Int32(180),
			Protocols: []types.Protocol{types.ProtocolPcoip}}})
	if err != nil {
		t.Fatal(err)
	}
	d, err = c.DescribeWorkspaces(ctx, &workspaces.DescribeWorkspacesInput{WorkspaceIds: []string{carolID}})
	if err != nil {
		t.Fatal(err)
	}
	if wp := d.Workspaces[0].WorkspaceProperties; wp.RunningMode != types.RunningModeAutoStop || aws.ToInt32(wp.RunningModeAutoStopTimeoutInMinutes) != 180 {
		t.Errorf("carol after modify: %+v", *wp)
	}
	_, err = c.ModifyWorkspaceProperties(ctx, &workspaces.ModifyWorkspacePropertiesInput{WorkspaceId: carol.WorkspaceId,
		WorkspaceProperties: &types.WorkspaceProperties{Protocols: []types.Protocol{types.ProtocolWsp}}})
	apiErr(t, err, "UnsupportedWorkspaceConfigurationException")
	_, err = c.ModifyWorkspaceProperties(ctx, &workspaces.ModifyWorkspacePropertiesInput{WorkspaceId: carol.WorkspaceId,
		WorkspaceProperties: &types.WorkspaceProperties{RunningModeAutoStopTimeoutInMinutes: aws.Int32(90)}})
	if ae := apiErr(t, err, "InvalidParameterValuesException"); !strings.Contains(ae.ErrorMessage(), "whole number of hours") {
		t.Errorf("message %q", ae.ErrorMessage())
	}

	// DescribeWorkspaceBundles and DescribeWorkspaceDirectories.
	bs, err := c.DescribeWorkspaceBundles(ctx, &workspaces.DescribeWorkspaceBundlesInput{})
	if err != nil {
		t.Fatal(err)
	}
	if len(bs.Bundles) != 3 {
		t.Fatalf("%d bundles", len(bs.Bundles))
	}
	b := bs.Bundles[1] // in id order: power, standard, value
	if aws.ToString(b.BundleId) != bundleStd || aws.ToString(b.Name) != "Standard Linux" || aws.ToString(b.Owner) != catalog.AccountID || b.CreationTime == nil ||
		aws.ToString(b.RootStorage.Capacity) != "80" || aws.ToString(b.UserStorage.Capacity) != "50" ||
		b.ComputeType.Name != types.ComputeStandard || b.State != types.WorkspaceBundleStateAvailable || aws.ToString(b.ImageId) != imageLinux {
		t.Errorf("bundle %+v", b)
	}
	bs, err = c.DescribeWorkspaceBundles(ctx, &workspaces.DescribeWorkspaceBundlesInput{BundleIds: []string{bundleValue}})
	if err != nil || len(bs.Bundles) != 1 || aws.ToString(bs.Bundles[0].BundleId) != bundleValue {
		t.Errorf("bundle by id: %v %+v", err, bs)
	}
	ds, err := c.DescribeWorkspaceDirectories(ctx, &workspaces.DescribeWorkspaceDirectoriesInput{})
	if err != nil {
		t.Fatal(err)
	}
	if len(ds.Directories) != 2 {
		t.Fatalf("%d directories", len(ds.Directories))
	}
	dd := ds.Directories[0]
	if aws.ToString(dd.DirectoryId) != dirID || aws.ToString(dd.DirectoryName) != "corp.example.com" || aws.ToString(dd.Alias) != "corp" ||
		aws.ToString(dd.RegistrationCode) != "SLiad+KX7B2Q" || dd.State != types.WorkspaceDirectoryStateRegistered {
		t.Errorf("directory %+v", dd)
	}
	var dirIDs []string
	dp := workspaces.NewDescribeWorkspaceDirectoriesPaginator(c, &workspaces.DescribeWorkspaceDirectoriesInput{Limit: aws.Int32(1)})
	for dp.HasMorePages() {
		pg, err := dp.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range pg.Directories {
			dirIDs = append(dirIDs, aws.ToString(d.DirectoryId))
		}
	}
	if !slices.Equal(dirIDs, []string{dirID, otherDirID}) {
		t.Errorf("paginated directories %v", dirIDs)
	}

	// TerminateWorkspaces.
	tr, err := c.TerminateWorkspaces(ctx, &workspaces.TerminateWorkspacesInput{TerminateWorkspaceRequests: []types.TerminateRequest{{WorkspaceId: alice.WorkspaceId}}})
	if err != nil || len(tr.FailedRequests) != 0 {
		t.Fatalf("terminate: %v %+v", err, tr)
	}
	e.expectState(aliceID, workspace.Terminating)
}

func (e *env) expectState(id string, want workspace.State) {
	e.t.Helper()
	w, err := e.svc.Get(id)
	if err != nil {
		e.t.Fatal(err)
	}
	if w.State != want {
		e.t.Errorf("%s is %s, want %s", id, w.State, want)
	}
}

// TestWireShapes checks the JSON itself: member names and the always-present members that
// tools rely on, as botocore's model names them.
func TestWireShapes(t *testing.T) {
	e := newEnv(t, envOptions{})
	r := e.raw(rawCall{target: "WorkspacesService.CreateWorkspaces", body: []byte(`{"Workspaces":[
		{"DirectoryId":"` + dirID + `","UserName":"alice","BundleId":"` + bundleStd + `"},
		{"DirectoryId":"` + dirID + `","UserName":"bob","BundleId":"wsb-nosuchbndl","Tags":[{"Key":"k"}],
		 "WorkspaceProperties":{"RunningMode":"AUTO_STOP"}}]}`)})
	if r.status != http.StatusOK {
		t.Fatalf("status %d %s", r.status, r.body)
	}
	var got map[string]any
	if err := json.Unmarshal(r.body, &got); err != nil {
		t.Fatal(err)
	}
	pending := got["PendingRequests"].([]any)[0].(map[string]any)
	for _, k := range []string{"WorkspaceId", "DirectoryId", "UserName", "State", "BundleId", "ComputerName",
		"UserVolumeEncryptionEnabled", "RootVolumeEncryptionEnabled", "WorkspaceProperties", "ModificationStates"} {
		if _, ok := pending[k]; !ok {
			t.Errorf("Workspace lacks %s: %v", k, pending)
		}
	}
	if v := pending["ModificationStates"]; !reflect.DeepEqual(v, []any{}) {
		t.Errorf("ModificationStates %v, want []", v)
	}
	if v := pending["RootVolumeEncryptionEnabled"]; v != false {
		t.Errorf("RootVolumeEncryptionEnabled %v", v)
	}
	props := pending["WorkspaceProperties"].(map[string]any)
	want := map[string]any{"RunningMode": "ALWAYS_ON", "RootVolumeSizeGib": 80.0, "UserVolumeSizeGib": 50.0,
		"ComputeTypeName": "STANDARD", "Protocols": []any{"PCOIP"}}
	if !reflect.DeepEqual(props, want) {
		t.Errorf("WorkspaceProperties %v, want %v", props, want)
	}
	failed := got["FailedRequests"].([]any)[0].(map[string]any)
	wantFailed := map[string]any{
		"WorkspaceRequest": map[string]any{"DirectoryId": dirID, "UserName": "bob", "BundleId": "wsb-nosuchbndl",
			"Tags": []any{map[string]any{"Key": "k"}}, "WorkspaceProperties": map[string]any{"RunningMode": "AUTO_STOP"}},
		"ErrorCode":    "ResourceNotFoundException",
		"ErrorMessage": "bundle wsb-nosuchbndl does not exist",
	}
	if !reflect.DeepEqual(failed, wantFailed) {
		t.Errorf("FailedCreateWorkspaceRequest\n got %v\nwant %v", failed, wantFailed)
	}

	r = e.raw(rawCall{target: "WorkspacesService.RebootWorkspaces", body: []byte(`{"RebootWorkspaceRequests":[{"WorkspaceId":"ws-doesnotexist"}]}`)})
	if string(r.body) != `{"FailedRequests":[{"WorkspaceId":"ws-doesnotexist","ErrorCode":"ResourceNotFoundException","ErrorMessage":"WorkSpace ws-doesnotexist does not exist"}]}` {
		t.Errorf("reboot body %s", r.body)
	}
	r = e.raw(rawCall{target: "WorkspacesService.StopWorkspaces", body: []byte(`{"StopWorkspaceRequests":[{"WorkspaceId":"` + pending["WorkspaceId"].(string) + `"}]}`)})
	if !strings.Contains(string(r.body), `"ErrorCode":"OperationNotSupportedException"`) {
		t.Errorf("stop body %s", r.body)
	}
	r = e.raw(rawCall{target: "WorkspacesService.DescribeWorkspaceBundles", body: []byte(`{"BundleIds":["` + bundleValue + `"]}`)})
	stamps := regexp.MustCompile(`,"CreationTime":[0-9.]+,"LastUpdatedTime":[0-9.]+`)
	if string(stamps.ReplaceAll(r.body, nil)) != `{"Bundles":[{"BundleId":"wsb-value00001","Name":"Value Linux","Owner":"000000000000","ImageId":"wsi-linux000001",`+
		`"RootStorage":{"Capacity":"80"},"UserStorage":{"Capacity":"10"},"ComputeType":{"Name":"VALUE"},"State":"AVAILABLE","BundleType":"REGULAR"}]}` ||
		!stamps.Match(r.body) {
		t.Errorf("bundles body %s", r.body)
	}
	r = e.raw(rawCall{target: "WorkspacesService.DescribeWorkspaceBundles", body: []byte(`{"Owner":"AMAZON"}`)})
	if string(r.body) != `{"Bundles":[]}` {
		t.Errorf("Amazon's bundles: %s", r.body)
	}
	r = e.raw(rawCall{target: "WorkspacesService.DescribeWorkspaceDirectories", body: []byte(`{"DirectoryIds":["` + otherDirID + `"]}`)})
	if string(r.body) != `{"Directories":[{"DirectoryId":"d-abcdef0123","Alias":"lab","DirectoryName":"lab.example.com","RegistrationCode":"SLiad+LAB001",`+
		`"DirectoryType":"SIMPLE_AD","State":"REGISTERED","WorkspaceCreationProperties":{"EnableWorkDocs":false,"EnableInternetAccess":false,`+
		`"UserEnabledAsLocalAdministrator":true,"EnableMaintenanceMode":true},"ipGroupIds":[],"WorkspaceAccessProperties":{"DeviceTypeWindows":"ALLOW",`+
		`"DeviceTypeOsx":"ALLOW","DeviceTypeWeb":"DENY","DeviceTypeIos":"ALLOW","DeviceTypeAndroid":"ALLOW","DeviceTypeChromeOs":"ALLOW",`+
		`"DeviceTypeZeroClient":"ALLOW","DeviceTypeLinux":"DENY"},"Tenancy":"SHARED","SelfservicePermissions":{"RestartWorkspace":"ENABLED",`+
		`"IncreaseVolumeSize":"DISABLED","ChangeComputeType":"DISABLED","SwitchRunningMode":"DISABLED","RebuildWorkspace":"DISABLED"}}]}` {
		t.Errorf("directories body %s", r.body)
	}
	// An empty body is an input with no members (AWS's JSON protocol allows it).
	r = e.raw(rawCall{target: "WorkspacesService.DescribeWorkspaces"})
	if r.status != http.StatusOK || !strings.HasPrefix(string(r.body), `{"Workspaces":[{`) {
		t.Errorf("empty body: %d %s", r.status, r.body)
	}
	r = e.raw(rawCall{target: "WorkspacesService.ModifyWorkspaceState",
		body: []byte(fmt.Sprintf(`{"WorkspaceId":%q,"WorkspaceState":"ADMIN_MAINTENANCE"}`, pending["WorkspaceId"]))})
	if r.errType != "InvalidResourceStateException" || r.status != 400 {
		t.Errorf("modify state of a PENDING WorkSpace: %d %s %s", r.status, r.errType, r.message)
	}
}
