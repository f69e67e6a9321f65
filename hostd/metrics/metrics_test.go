package metrics

import (
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"deskhost/hostd/store"
	"deskhost/hostd/workspace"
	"deskhost/internal/catalog"
	"deskhost/internal/metricstest"
)

// TestExporter: a real store with WorkSpaces in several states, scraped over HTTP: the
// output parses, lints clean (promlint, promtool), and every gauge says what the store holds.
func TestExporter(t *testing.T) {
	st, err := store.OpenBolt(filepath.Join(t.TempDir(), "hostd.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ws := []workspace.Workspace{
		{ID: "ws-avail00001", DirectoryID: "d-0123456789", State: workspace.Available, Properties: workspace.Properties{ComputeTypeName: "STANDARD", RunningMode: workspace.AlwaysOn}},
		{ID: "ws-unhea00001", DirectoryID: "d-0123456789", State: workspace.Unhealthy, Properties: workspace.Properties{ComputeTypeName: "VALUE", RunningMode: workspace.AlwaysOn}},
		{ID: "ws-stopp00001", DirectoryID: "d-0123456789", State: workspace.Stopped, Properties: workspace.Properties{ComputeTypeName: "STANDARD", RunningMode: workspace.AutoStop}},
		{ID: "ws-maint00001", DirectoryID: "d-9876543210", State: workspace.Maintenance, Properties: workspace.Properties{ComputeTypeName: "VALUE", RunningMode: workspace.AutoStop}},
		{ID: "ws-termi00001", DirectoryID: "d-9876543210", State: workspace.Terminated, Properties: workspace.Properties{ComputeTypeName: "STANDARD"}},
	}
	if err := st.Update(func(tx store.Tx) error {
		for _, w := range ws {
			if err := store.PutJSON(tx, store.Workspaces, w.ID, w); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	m := New(Options{Store: st, Quota: 20, CPUs: 8, MemTotal: func() (uint64, error) { return 64 << 30, nil },
		ComputeTypes: map[catalog.ComputeType]catalog.Hardware{catalog.ComputeStandard: {VCPUs: 2, MemoryMiB: 4096}, catalog.ComputeValue: {VCPUs: 1, MemoryMiB: 2048}}})
	m.Scrubbed(3<<30, 1500*time.Millisecond)
	m.Reconciled(20 * time.Millisecond)
	m.Reconciled(30 * time.Millisecond)
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	fams := metricstest.Check(t, metricstest.Scrape(t, srv.URL))

	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"deskhost_hostd_workspaces", map[string]string{"state": "AVAILABLE"}, 1},
		{"deskhost_hostd_workspaces", map[string]string{"state": "TERMINATED"}, 1},
		{"deskhost_hostd_workspaces", map[string]string{"state": "PENDING"}, 0},
		{"deskhost_hostd_workspace_quota", nil, 20},
		{"deskhost_hostd_cpus", nil, 8},
		{"deskhost_hostd_memory_capacity_bytes", nil, 64 << 30},
		// AVAILABLE (4 GiB, 2 vCPUs), UNHEALTHY (2 GiB, 1) and MAINTENANCE (2 GiB, 1) run VMs.
		{"deskhost_hostd_memory_reserved_bytes", nil, 8 << 30},
		{"deskhost_hostd_vcpus_reserved", nil, 4},
		{"deskhost_hostd_memory_scrub_seconds", nil, 1},
		{"deskhost_hostd_memory_scrubbed_bytes_total", nil, 3 << 30},
		{"deskhost_hostd_reconcile_seconds", nil, 2},
		{"deskhost_hostd_workspace_available", map[string]string{"workspace_id": "ws-avail00001", "directory_id": "d-0123456789"}, 1},
		{"deskhost_hostd_workspace_available", map[string]string{"workspace_id": "ws-unhea00001"}, 0},
		{"deskhost_hostd_workspace_unhealthy", map[string]string{"workspace_id": "ws-unhea00001"}, 1},
		{"deskhost_hostd_workspace_stopped", map[string]string{"workspace_id": "ws-stopp00001"}, 1},
		{"deskhost_hostd_workspace_maintenance", map[string]string{"workspace_id": "ws-maint00001", "directory_id": "d-9876543210"}, 1},
		{"deskhost_hostd_workspace_maintenance", map[string]string{"workspace_id": "ws-stopp00001"}, 0},
	} {
		got, ok := metricstest.Value(fams, c.name, c.labels)
		if !ok || got != c.want {
			t.Errorf("%s%v = %v (present %v), want %v", c.name, c.labels, got, ok, c.want)
		}
	}
	// Maintenance applies to AutoStop WorkSpaces only; TERMINATED ones have no series.
	if _, ok := metricstest.Value(fams, "deskhost_hostd_workspace_maintenance", map[string]string{"workspace_id": "ws-avail00001"}); ok {
		t.Error("an AlwaysOn WorkSpace has a Maintenance series")
	}
	if _, ok := metricstest.Value(fams, "deskhost_hostd_workspace_available", map[string]string{"workspace_id": "ws-termi00001"}); ok {
		t.Error("a TERMINATED WorkSpace has an Available series")
	}
	// The guide's CloudWatch name leads each HELP text.
	for name, cw := range map[string]string{"deskhost_hostd_workspace_available": "Available", "deskhost_hostd_workspace_unhealthy": "Unhealthy",
		"deskhost_hostd_workspace_stopped": "Stopped", "deskhost_hostd_workspace_maintenance": "Maintenance"} {
		if f := fams[name]; f == nil || len(f.GetHelp()) < len(cw)+12 || f.GetHelp()[:len("CloudWatch "+cw+":")] != "CloudWatch "+cw+":" {
			t.Errorf("%s HELP %q does not name CloudWatch %s", name, f.GetHelp(), cw)
		}
	}
}

func TestMemTotal(t *testing.T) {
	b, err := memTotal()
	if err != nil || b < 64<<20 {
		t.Fatalf("MemTotal %d %v", b, err)
	}
}
