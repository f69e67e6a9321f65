package hostdclient_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/workspaces"
	"github.com/aws/aws-sdk-go-v2/service/workspaces/types"
	"github.com/aws/smithy-go"

	"deskhost/hostd/api"
	"deskhost/hostd/hostdtest"
	"deskhost/hostd/service"
	"deskhost/hostd/store"
	"deskhost/internal/catalog"
	"deskhost/internal/hostconfig"
	"deskhost/internal/hostdclient"
	"deskhost/internal/testenv"
)

const (
	dirID    = "d-0123456789"
	bundleID = "wsb-value00001"
	keyID    = "AKIDHOSTDCLIENT001"
	secret   = "hostdclient-test-secret-0000000000000000"
)

type noWake struct{}

func (noWake) Wake(string) {}

// hostd is hostd's real service over a real bbolt store behind its real API handler.
type hostd struct {
	svc   *service.Service
	api   *api.Server
	calls atomic.Int64 // HTTP requests the HTTPS server got
}

func newHostd(t *testing.T, throttle hostconfig.Throttle) *hostd {
	t.Helper()
	st, err := store.OpenBolt(filepath.Join(t.TempDir(), "hostd.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	svc := service.New(st, service.Config{ComputeTypes: map[catalog.ComputeType]catalog.Hardware{catalog.ComputeValue: {VCPUs: 1, MemoryMiB: 256}}, WorkspaceQuota: 10}, noWake{}, nil, log)
	hostdtest.SeedCatalog(t, svc, hostdtest.Catalog{
		Images: []catalog.Image{{ID: "wsi-linux00001", OS: catalog.Linux}},
		Bundles: []catalog.Bundle{{ID: bundleID, ImageID: "wsi-linux00001", ComputeType: catalog.ComputeValue,
			Protocol: catalog.PCoIP, RootGiB: 80, UserGiB: 10}},
		Directories: []catalog.Directory{{ID: dirID, Name: "corp.example.com", Users: []catalog.User{
			{UserName: "alice", Email: "alice@example.com"}, {UserName: "bob", Email: "bob@example.com"}}}},
	})
	if throttle == (hostconfig.Throttle{}) {
		throttle = hostconfig.Throttle{Rate: 1000, Burst: 1000}
	}
	return &hostd{svc: svc, api: api.New(svc, api.Options{
		AccessKeys: []hostconfig.AccessKey{{ID: keyID, Secret: secret, Name: "test"}},
		Throttle:   throttle,
		Logger:     log,
	})}
}

// socket serves the API on a unix socket in a temporary directory (root only: hostd
// checks the peer).
func (h *hostd) socket(t *testing.T) string {
	t.Helper()
	testenv.Root(t)
	dir := filepath.Join(t.TempDir(), "run")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "hostd.sock")
	ln, err := api.ListenUnix(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.api.ServeUnixListener(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done })
	return path
}

// https serves the API over TLS, counting requests, and returns a client for it.
func (h *hostd) https(t *testing.T, o hostdclient.Options) *hostdclient.Client {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.calls.Add(1)
		h.api.Handler().ServeHTTP(w, r)
	}))
	srv.StartTLS()
	t.Cleanup(srv.Close)
	o.Endpoint = srv.URL
	o.RootCAs = srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
	if o.AccessKeyID == "" {
		o.AccessKeyID, o.SecretAccessKey = keyID, secret
	}
	c, err := hostdclient.New(o)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func create(t *testing.T, c *hostdclient.Client, user string) string {
	t.Helper()
	out, err := c.CreateWorkspaces(context.Background(), &workspaces.CreateWorkspacesInput{Workspaces: []types.WorkspaceRequest{
		{DirectoryId: aws.String(dirID), UserName: aws.String(user), BundleId: aws.String(bundleID)}}})
	if err != nil || len(out.PendingRequests) != 1 {
		t.Fatalf("create for %s: %v %+v", user, err, out)
	}
	return aws.ToString(out.PendingRequests[0].WorkspaceId)
}

// TestSocket: over hostd's socket, unsigned, the client is AWS's SDK for AWS's operations
// and makes hostd's own ReportConnections, whose effect hostd's service shows; hostd's
// refusals keep their exception name.
func TestSocket(t *testing.T) {
	h := newHostd(t, hostconfig.Throttle{})
	c := hostdclient.Dial(h.socket(t))
	ctx := context.Background()
	id := create(t, c, "alice")
	out, err := c.DescribeWorkspaces(ctx, &workspaces.DescribeWorkspacesInput{WorkspaceIds: []string{id}})
	if err != nil || len(out.Workspaces) != 1 || aws.ToString(out.Workspaces[0].UserName) != "alice" {
		t.Fatalf("describe: %v %+v", err, out)
	}

	if _, err := c.ReportConnections(ctx, &hostdclient.ReportConnectionsInput{ConnectedWorkspaceIds: []string{id}}); err != nil {
		t.Fatal(err)
	}
	if w, _ := h.svc.Get(id); !w.Connection.Connected || w.Connection.LastUserConnection.IsZero() {
		t.Fatalf("after reporting a session: %+v", w.Connection)
	}
	if _, err := c.ReportConnections(ctx, &hostdclient.ReportConnectionsInput{}); err != nil {
		t.Fatal(err)
	}
	if w, _ := h.svc.Get(id); w.Connection.Connected {
		t.Fatalf("after reporting none: %+v", w.Connection)
	}

	// hostd's refusal of its own operation: a typed error with the exception name.
	_, err = c.ReportConnections(ctx, &hostdclient.ReportConnectionsInput{ConnectedWorkspaceIds: []string{"not-a-workspace"}})
	var ae *hostdclient.APIError
	if !errors.As(err, &ae) || ae.Operation != "ReportConnections" || ae.StatusCode != http.StatusBadRequest || ae.RequestID == "" {
		t.Fatalf("malformed id: %v (%#v)", err, ae)
	}
	if !catalog.IsError(err, catalog.InvalidParameterValues) || !strings.Contains(err.Error(), "not-a-workspace") {
		t.Errorf("malformed id: %v, want InvalidParameterValuesException naming it", err)
	}
	var sa smithy.APIError
	if !errors.As(err, &sa) || sa.ErrorCode() != "InvalidParameterValuesException" || sa.ErrorFault() != smithy.FaultClient {
		t.Errorf("not a smithy.APIError with the code: %v", err)
	}

	// And of AWS's operation: the same, with the SDK's own exception type beneath it.
	_, err = c.ModifyWorkspaceState(ctx, &workspaces.ModifyWorkspaceStateInput{WorkspaceId: aws.String("ws-doesnotexist"),
		WorkspaceState: types.TargetWorkspaceStateAdminMaintenance})
	var rnf *types.ResourceNotFoundException
	if !catalog.IsError(err, catalog.ResourceNotFound) || !errors.As(err, &rnf) || !errors.As(err, &ae) || ae.Operation != "ModifyWorkspaceState" {
		t.Fatalf("unknown WorkSpace: %v", err)
	}
	if got := catalog.AsError(err); got.Type != catalog.ResourceNotFound || !strings.Contains(got.Message, "ws-doesnotexist") {
		t.Errorf("catalog.AsError: %+v", got)
	}
}

// TestHTTPS: over HTTPS every call is signed with the access key (the SDK's and the
// typed ones); a wrong secret and a local-only operation are refused with their names.
func TestHTTPS(t *testing.T) {
	h := newHostd(t, hostconfig.Throttle{})
	c := h.https(t, hostdclient.Options{})
	ctx := context.Background()
	id := create(t, c, "bob")
	var out struct {
		Workspaces []struct{ WorkspaceId, UserName string }
	}
	if err := c.Call(ctx, hostdclient.WorkspacesTarget+"DescribeWorkspaces", map[string]any{"WorkspaceIds": []string{id}}, &out); err != nil {
		t.Fatalf("typed call over HTTPS: %v", err)
	}
	if len(out.Workspaces) != 1 || out.Workspaces[0].UserName != "bob" {
		t.Fatalf("typed call over HTTPS: %+v", out)
	}
	_, err := c.ReportConnections(ctx, &hostdclient.ReportConnectionsInput{})
	if !catalog.IsError(err, catalog.AccessDenied) || !strings.Contains(err.Error(), "local socket") {
		t.Errorf("ReportConnections over HTTPS: %v, want AccessDeniedException", err)
	}

	bad := h.https(t, hostdclient.Options{AccessKeyID: keyID, SecretAccessKey: "not-the-secret-0000000000"})
	if _, err := bad.DescribeWorkspaces(ctx, &workspaces.DescribeWorkspacesInput{}); !catalog.IsError(err, catalog.InvalidSignature) {
		t.Errorf("wrong secret, SDK call: %v", err)
	}
	if err := bad.Call(ctx, hostdclient.WorkspacesTarget+"DescribeWorkspaces", struct{}{}, nil); !catalog.IsError(err, catalog.InvalidSignature) {
		t.Errorf("wrong secret, typed call: %v", err)
	}
}

// TestThrottlingRetried: a throttled call, SDK or typed, is retried with backoff until
// hostd takes it; without retries the ThrottlingException reaches the caller.
func TestThrottlingRetried(t *testing.T) {
	h := newHostd(t, hostconfig.Throttle{Rate: 2, Burst: 1})
	c := h.https(t, hostdclient.Options{})
	ctx := context.Background()
	for _, call := range []struct {
		name string
		do   func() error
	}{
		{"SDK", func() error {
			_, err := c.DescribeWorkspaces(ctx, &workspaces.DescribeWorkspacesInput{})
			return err
		}},
		{"typed", func() error { return c.Call(ctx, hostdclient.WorkspacesTarget+"DescribeWorkspaces", struct{}{}, nil) }},
	} {
		time.Sleep(time.Second) // the bucket refills
		before := h.calls.Load()
		for i := 0; i < 3; i++ {
			if err := call.do(); err != nil {
				t.Fatalf("%s call %d: %v", call.name, i, err)
			}
		}
		if n := h.calls.Load() - before; n <= 3 {
			t.Errorf("%s: 3 calls at a rate of 2/s with a burst of 1 made %d requests: none was throttled and retried", call.name, n)
		}
	}

	once := h.https(t, hostdclient.Options{MaxAttempts: 1})
	var err error
	for i := 0; i < 3 && err == nil; i++ {
		_, err = once.DescribeWorkspaces(ctx, &workspaces.DescribeWorkspacesInput{})
	}
	if !catalog.IsError(err, catalog.Throttling) {
		t.Errorf("without retries: %v, want ThrottlingException", err)
	}
}

// TestUnreachable: a socket nobody serves fails at once with the dial error, not after
// retries.
func TestUnreachable(t *testing.T) {
	c := hostdclient.Dial(filepath.Join(t.TempDir(), "nobody.sock"))
	start := time.Now()
	_, err := c.DescribeWorkspaces(context.Background(), &workspaces.DescribeWorkspacesInput{})
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "dial" {
		t.Fatalf("got %v, want a dial error", err)
	}
	err = c.Call(context.Background(), hostdclient.WorkspacesTarget+"DescribeWorkspaces", struct{}{}, nil)
	if !errors.As(err, &oe) || oe.Op != "dial" {
		t.Fatalf("typed call: got %v, want a dial error", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("took %s: a connection that cannot be made was retried", d)
	}
}

func TestOptions(t *testing.T) {
	for _, tc := range []struct {
		o    hostdclient.Options
		want string
	}{
		{hostdclient.Options{}, "socket or its HTTPS endpoint"},
		{hostdclient.Options{Socket: "/s", Endpoint: "https://h:1"}, "not both"},
		{hostdclient.Options{Socket: "/s", AccessKeyID: "k", SecretAccessKey: "s"}, "socket needs none"},
		{hostdclient.Options{Endpoint: "http://h:1", AccessKeyID: "k", SecretAccessKey: "s"}, "HTTPS only"},
		{hostdclient.Options{Endpoint: "https://h:1"}, "access key"},
		{hostdclient.Options{Endpoint: "https://h:1", AccessKeyID: "k", SecretAccessKey: "s", CAFile: "/nonexistent.pem"}, "CA file"},
	} {
		if _, err := hostdclient.New(tc.o); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v): %v, want an error with %q", tc.o, err, tc.want)
		}
	}
}
