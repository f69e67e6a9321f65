package api

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/workspaces"
	"github.com/aws/aws-sdk-go-v2/service/workspaces/types"

	"deskhost/hostd/metering"
	"deskhost/hostd/workspace"
	"deskhost/internal/hostdclient"
)

func quotaOf(t *testing.T, c *hostdclient.Client, name string) hostdclient.Quota {
	t.Helper()
	out, err := c.DescribeQuotas(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range out.Quotas {
		if q.Name == name {
			return q
		}
	}
	t.Fatalf("DescribeAccount's Quotas %+v has no %q", out.Quotas, name)
	return hostdclient.Quota{}
}

// TestQuotasThroughSDK: the guide's quotas are refused with its error codes through AWS's
// SDK, and DescribeAccount reports them (the SDK still decodes AWS's members; the Quotas
// member, hostd's own, is read by hostdclient).
func TestQuotasThroughSDK(t *testing.T) {
	e := newEnv(t, envOptions{workspaceQuota: 2})
	c := e.client(accessKeyID, secretKey)
	ctx := context.Background()

	acct, err := c.DescribeAccount(ctx, &workspaces.DescribeAccountInput{})
	if err != nil {
		t.Fatal(err)
	}
	if acct.DedicatedTenancySupport != types.DedicatedTenancySupportResultEnumEnabled {
		t.Errorf("DescribeAccount through the SDK: DedicatedTenancySupport %q", acct.DedicatedTenancySupport)
	}
	if q := quotaOf(t, c, "WorkSpaces"); q.Limit != 2 || q.Used != 0 || q.ErrorCode != "ResourceLimitExceededException" {
		t.Errorf("WorkSpaces quota %+v; want limit 2, used 0", q)
	}
	want := map[string]int{"WorkSpaces per user": 1, "Images": 20, "IP access control groups": 100, "Rules per IP access control group": 10,
		"IP access control groups per directory": 25, "Tags per resource": 50, "Registered directories": 50}
	for name, limit := range want {
		if q := quotaOf(t, c, name); q.Limit != limit {
			t.Errorf("%s: limit %d, want the guide's %d", name, q.Limit, limit)
		}
	}

	// WorkSpaces: the third is over the host's quota of 2.
	out, err := c.CreateWorkspaces(ctx, &workspaces.CreateWorkspacesInput{Workspaces: []types.WorkspaceRequest{
		{DirectoryId: aws.String(dirID), UserName: aws.String("alice"), BundleId: aws.String(bundleStd)},
		{DirectoryId: aws.String(dirID), UserName: aws.String("bob"), BundleId: aws.String(bundleStd)},
		{DirectoryId: aws.String(dirID), UserName: aws.String("carol"), BundleId: aws.String(bundleStd)},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.PendingRequests) != 2 || len(out.FailedRequests) != 1 || aws.ToString(out.FailedRequests[0].ErrorCode) != "ResourceLimitExceededException" ||
		!strings.Contains(aws.ToString(out.FailedRequests[0].ErrorMessage), "quota of 2 WorkSpaces") {
		t.Fatalf("3 creates over a quota of 2: pending %d, failed %+v", len(out.PendingRequests), out.FailedRequests)
	}
	if q := quotaOf(t, c, "WorkSpaces"); q.Used != 2 {
		t.Errorf("WorkSpaces quota used %d, want 2", q.Used)
	}
	// One WorkSpace per user: AWS's ResourceAlreadyExists.
	terminate := aws.ToString(out.PendingRequests[1].WorkspaceId)
	if _, err := c.TerminateWorkspaces(ctx, &workspaces.TerminateWorkspacesInput{TerminateWorkspaceRequests: []types.TerminateRequest{{WorkspaceId: aws.String(terminate)}}}); err != nil {
		t.Fatal(err)
	}
	e.setState(terminate, workspace.Terminated)
	out, err = c.CreateWorkspaces(ctx, &workspaces.CreateWorkspacesInput{Workspaces: []types.WorkspaceRequest{
		{DirectoryId: aws.String(dirID), UserName: aws.String("alice"), BundleId: aws.String(bundleStd)}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.FailedRequests) != 1 || aws.ToString(out.FailedRequests[0].ErrorCode) != "ResourceAlreadyExistsException" {
		t.Fatalf("a second WorkSpace for alice: %+v", out.FailedRequests)
	}

	// IP access control groups: the 101st is refused.
	for i := range 100 {
		if _, err := c.CreateIpGroup(ctx, &workspaces.CreateIpGroupInput{GroupName: aws.String(fmt.Sprintf("g%03d", i))}); err != nil {
			t.Fatalf("group %d: %v", i+1, err)
		}
	}
	_, err = c.CreateIpGroup(ctx, &workspaces.CreateIpGroupInput{GroupName: aws.String("one-too-many")})
	ae := apiErr(t, err, "ResourceLimitExceededException")
	if !strings.Contains(ae.ErrorMessage(), "100 IP access control groups") {
		t.Errorf("the 101st group: %q", ae.ErrorMessage())
	}
	if q := quotaOf(t, c, "IP access control groups"); q.Used != 100 {
		t.Errorf("IP group quota used %d, want 100", q.Used)
	}
}

// TestDescribeUsage: the ledger the recorder writes is read back through the API; a bad
// month is InvalidParameterValues naming it.
func TestDescribeUsage(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.client(accessKeyID, secretKey)
	ctx := context.Background()
	out, err := c.CreateWorkspaces(ctx, &workspaces.CreateWorkspacesInput{Workspaces: []types.WorkspaceRequest{
		{DirectoryId: aws.String(dirID), UserName: aws.String("alice"), BundleId: aws.String(bundleStd),
			Tags: []types.Tag{{Key: aws.String("team"), Value: aws.String("blue")}}},
	}})
	if err != nil || len(out.PendingRequests) != 1 {
		t.Fatalf("create: %v %+v", err, out)
	}
	id := aws.ToString(out.PendingRequests[0].WorkspaceId)
	e.setState(id, workspace.Available)
	created := e.snapshot()[0].Created
	now := created.Add(90 * time.Minute)
	rec := &metering.Recorder{Store: e.store, Now: func() time.Time { return now }}
	if err := rec.Sample(); err != nil {
		t.Fatal(err)
	}
	// The WorkSpace's first hour may fall in the month before now's: read both.
	var rows []hostdclient.UsageRow
	for _, month := range []string{created.UTC().Format("2006-01"), now.UTC().Format("2006-01")} {
		u, err := c.DescribeUsage(ctx, &hostdclient.DescribeUsageInput{Month: month})
		if err != nil {
			t.Fatal(err)
		}
		if u.Month != month {
			t.Fatalf("asked for %s, got %s", month, u.Month)
		}
		rows = append(rows, u.Rows...)
		if created.UTC().Month() == now.UTC().Month() {
			break
		}
	}
	hours := 0
	for _, r := range rows {
		hours += r.Hours
	}
	wantHours := int(now.Truncate(time.Hour).Sub(created.Truncate(time.Hour))/time.Hour) + 1
	if len(rows) == 0 || hours != wantHours {
		t.Fatalf("rows %+v; want %d hours in all", rows, wantHours)
	}
	for _, r := range rows {
		if r.WorkspaceId != id || r.RunningMode != "ALWAYS_ON" || r.ComputeTypeName != "STANDARD" || r.RootVolumeSizeGib != 80 || r.UserVolumeSizeGib != 50 ||
			r.Hours != r.BillableHours || len(r.Tags) != 1 || r.Tags[0].Key != "team" || aws.ToString(r.Tags[0].Value) != "blue" {
			t.Errorf("row %+v; want %s ALWAYS_ON STANDARD 80/50 GiB, every hour billable, tag team=blue", r, id)
		}
	}
	for _, bad := range []string{"2026-13", "2026-1", "last month"} {
		_, err := c.DescribeUsage(ctx, &hostdclient.DescribeUsageInput{Month: bad})
		ae := apiErr(t, err, "InvalidParameterValuesException")
		if !strings.Contains(ae.ErrorMessage(), bad) || !strings.Contains(ae.ErrorMessage(), "YYYY-MM") {
			t.Errorf("month %q: %q", bad, ae.ErrorMessage())
		}
	}
}
