package workspaces

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"deskhost/hostd/api"
	"deskhost/hostd/service"
	"deskhost/hostd/store"
	"deskhost/hostd/workspace"
	"deskhost/internal/catalog"
	"deskhost/internal/hostconfig"
)

type noWake struct{}

func (noWake) Wake(string) {}

// TestReportConnectionsToHostd: the report goes to hostd's real API server on its local
// socket and changes what hostd knows; with nobody listed the WorkSpace is disconnected.
func TestReportConnectionsToHostd(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("hostd's local socket takes only root: run the tests as root")
		}
		t.Skip("hostd's local socket takes only root")
	}
	dir := t.TempDir()
	st, err := store.OpenBolt(filepath.Join(dir, "hostd.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	svc := service.New(st, service.Config{
		ComputeTypes:   map[catalog.ComputeType]catalog.Hardware{catalog.ComputeValue: {VCPUs: 1, MemoryMiB: 256}},
		WorkspaceQuota: 10,
	}, noWake{}, nil, log)
	if _, err := svc.ImportCatalog(context.Background(), &hostconfig.LegacyCatalog{
		Images:      []hostconfig.Sourced[catalog.Image]{{From: "images[0]", Item: catalog.Image{ID: "wsi-linux00001", OS: catalog.Linux}}},
		Bundles:     []hostconfig.Sourced[catalog.Bundle]{{From: "bundles[0]", Item: catalog.Bundle{ID: "wsb-value00001", ImageID: "wsi-linux00001", ComputeType: catalog.ComputeValue, Protocol: catalog.PCoIP, RootGiB: 80, UserGiB: 10}}},
		Directories: []hostconfig.Sourced[catalog.Directory]{{From: "directories[0]", Item: catalog.Directory{ID: "d-0123456789", Name: "corp.example.com", Users: []catalog.User{{UserName: "alice", Email: "alice@example.com"}}}}},
	}, "test"); err != nil {
		t.Fatal(err)
	}
	ws, failed, err := svc.CreateWorkspaces(context.Background(), []service.CreateRequest{{DirectoryID: "d-0123456789", UserName: "alice", BundleID: "wsb-value00001"}})
	if err != nil || len(ws) != 1 {
		t.Fatalf("create: %v %+v", err, failed)
	}
	sock := filepath.Join(dir, "run", "hostd.sock")
	os.MkdirAll(filepath.Dir(sock), 0o700)
	ln, err := api.ListenUnix(sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- api.New(svc, api.Options{Logger: log}).ServeUnixListener(ctx, ln) }()
	defer func() { cancel(); <-done }()

	c := Dial(sock)
	connected := func() workspace.Connection {
		w, err := svc.Get(ws[0].ID)
		if err != nil {
			t.Fatal(err)
		}
		return w.Connection
	}
	if err := c.ReportConnections(ctx, []string{ws[0].ID}); err != nil {
		t.Fatal(err)
	}
	if conn := connected(); !conn.Connected || conn.LastUserConnection.IsZero() {
		t.Fatalf("after reporting a session: %+v", conn)
	}
	if err := c.ReportConnections(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if conn := connected(); conn.Connected {
		t.Fatalf("after reporting none: %+v", conn)
	}
	if err := c.ReportConnections(ctx, []string{"not-a-workspace"}); err == nil {
		t.Error("a malformed id was accepted")
	}
}
