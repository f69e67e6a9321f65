package api

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/workspaces"
	"github.com/aws/aws-sdk-go-v2/service/workspaces/types"

	"deskhost/hostd/workspace"
	"deskhost/internal/hostdclient"
)

// TestConnectionStatus: the connection manager's report, taken on the local socket only,
// shows in DescribeWorkspacesConnectionStatus as AWS's SDK reads it.
func TestConnectionStatus(t *testing.T) {
	requireRoot(t, "the local socket takes only a root peer")
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	c := e.client(accessKeyID, secretKey)
	out, err := c.CreateWorkspaces(ctx, &workspaces.CreateWorkspacesInput{Workspaces: []types.WorkspaceRequest{
		{DirectoryId: aws.String(dirID), UserName: aws.String("erin"), BundleId: aws.String(bundleValue)},
		{DirectoryId: aws.String(dirID), UserName: aws.String("dave"), BundleId: aws.String(bundleValue)}}})
	if err != nil || len(out.PendingRequests) != 2 {
		t.Fatalf("create: %v %+v", err, out)
	}
	a, b := aws.ToString(out.PendingRequests[0].WorkspaceId), aws.ToString(out.PendingRequests[1].WorkspaceId)
	e.setState(a, workspace.Available)
	e.setState(b, workspace.Available)

	// Over HTTPS, even signed by an administrator's key, the report is refused.
	body := []byte(`{"ConnectedWorkspaceIds":["` + a + `"]}`)
	r := e.raw(rawCall{target: TargetPrefix + ReportConnectionsOperation, body: body})
	if r.status != http.StatusForbidden || r.errType != "AccessDeniedException" || !strings.Contains(r.message, "local socket") {
		t.Fatalf("report over HTTPS: %d %s %s", r.status, r.errType, r.message)
	}
	if w, _ := e.svc.Get(a); w.Connection.Connected {
		t.Fatal("a refused report changed the connection state")
	}

	// On the local socket it is taken; malformed reports are refused (hand-made requests).
	dir := filepath.Join(t.TempDir(), "run")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "hostd.sock")
	ln, err := ListenUnix(sock)
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- e.api.ServeUnixListener(sctx, ln) }()
	defer func() { cancel(); <-done }()
	report := func(body string) *http.Response {
		req, _ := http.NewRequest(http.MethodPost, "http://hostd.sock/", bytes.NewReader([]byte(body)))
		req.Header.Set("X-Amz-Target", TargetPrefix+ReportConnectionsOperation)
		req.Header.Set("Content-Type", ContentType)
		resp, err := unixHTTPClient(sock).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	before := time.Now()
	if _, err := socketClient(t, sock).ReportConnections(ctx, &hostdclient.ReportConnectionsInput{ConnectedWorkspaceIds: []string{a}}); err != nil {
		t.Fatalf("report over the local socket: %v", err)
	}
	for _, bad := range []string{`{}`, `{"ConnectedWorkspaceIds":["nope"]}`, `{"ConnectedWorkspaceIds":"` + a + `"}`} {
		if resp := report(bad); resp.StatusCode != http.StatusBadRequest {
			t.Errorf("report %s: %s, want 400", bad, resp.Status)
		}
	}

	st, err := c.DescribeWorkspacesConnectionStatus(ctx, &workspaces.DescribeWorkspacesConnectionStatusInput{WorkspaceIds: []string{a, b}})
	if err != nil || len(st.WorkspacesConnectionStatus) != 2 {
		t.Fatalf("DescribeWorkspacesConnectionStatus: %v %+v", err, st)
	}
	got := map[string]types.WorkspaceConnectionStatus{}
	for _, s := range st.WorkspacesConnectionStatus {
		got[aws.ToString(s.WorkspaceId)] = s
	}
	if got[a].ConnectionState != types.ConnectionStateConnected || got[b].ConnectionState != types.ConnectionStateDisconnected {
		t.Errorf("states %s, %s; want CONNECTED, DISCONNECTED", got[a].ConnectionState, got[b].ConnectionState)
	}
	last, checked := aws.ToTime(got[a].LastKnownUserConnectionTimestamp), aws.ToTime(got[a].ConnectionStateCheckTimestamp)
	if last.Before(before.Add(-time.Second)) || time.Since(last) > time.Minute || !checked.Equal(last) {
		t.Errorf("timestamps: last connection %v, checked %v (report at %v)", last, checked, before)
	}
	if got[b].LastKnownUserConnectionTimestamp != nil {
		t.Errorf("a WorkSpace nobody connected to has a last connection %v", got[b].LastKnownUserConnectionTimestamp)
	}
	// A stopped WorkSpace's connection state is UNKNOWN (AWS's documentation).
	e.setState(b, workspace.Stopped)
	st, err = c.DescribeWorkspacesConnectionStatus(ctx, &workspaces.DescribeWorkspacesConnectionStatusInput{WorkspaceIds: []string{b}})
	if err != nil || len(st.WorkspacesConnectionStatus) != 1 || st.WorkspacesConnectionStatus[0].ConnectionState != types.ConnectionStateUnknown {
		t.Errorf("stopped WorkSpace: %v %+v", err, st)
	}
}
