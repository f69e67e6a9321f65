package service

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"deskhost/hostd/store"
	"deskhost/hostd/workspace"
	"deskhost/internal/catalog"
	"deskhost/internal/hostconfig"
)

// waker records wake-ups and, at each, what the store held: desired state must be written
// before anyone is told to act on it.
type waker struct {
	t     *testing.T
	st    store.Store
	woken []string
	seen  []workspace.State
}

func (w *waker) Wake(id string) {
	var rec workspace.Workspace
	if err := w.st.View(func(tx store.Tx) error {
		var err error
		rec, err = store.GetJSON[workspace.Workspace](tx, store.Workspaces, id)
		return err
	}); err != nil {
		w.t.Errorf("woken for %s, which the store does not hold yet: %v", id, err)
	}
	w.woken = append(w.woken, id)
	w.seen = append(w.seen, rec.State)
}

const (
	dirID   = "d-0123456789"
	valueID = "wsb-value00001"
	gpuID   = "wsb-graphics01"
	winID   = "wsb-windows001"
)

func newService(t *testing.T, quota int) (*Service, *waker, *time.Time) {
	t.Helper()
	st, err := store.OpenBolt(filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	var users []catalog.User
	for i := 0; i < 40; i++ {
		users = append(users, catalog.User{UserName: fmt.Sprintf("user%02d", i), Email: fmt.Sprintf("u%d@example.com", i)})
	}
	users = append(users, catalog.User{UserName: "noemail"}, catalog.User{UserName: "a@b", Email: "ab@example.com"})
	cfg := Config{
		ComputeTypes:   map[catalog.ComputeType]catalog.Hardware{catalog.ComputeValue: {VCPUs: 1, MemoryMiB: 256}, catalog.ComputeGraphics: {VCPUs: 2, MemoryMiB: 512}},
		WorkspaceQuota: quota,
	}
	now := time.Unix(1_700_000_000, 0)
	w := &waker{t: t, st: st}
	s := New(st, cfg, w, func() time.Time { return now }, slog.New(slog.NewTextHandler(io.Discard, nil)))
	seed(t, s,
		[]catalog.Image{{ID: "wsi-linux00001", OS: catalog.Linux}, {ID: "wsi-windows001", OS: catalog.Windows}},
		[]catalog.Bundle{
			{ID: valueID, ImageID: "wsi-linux00001", ComputeType: catalog.ComputeValue, Protocol: catalog.PCoIP, RootGiB: 80, UserGiB: 10},
			{ID: gpuID, ImageID: "wsi-linux00001", ComputeType: catalog.ComputeGraphics, Protocol: catalog.PCoIP, RootGiB: 100, UserGiB: 100},
			{ID: winID, ImageID: "wsi-windows001", ComputeType: catalog.ComputeValue, Protocol: catalog.WSP, RootGiB: 80, UserGiB: 50},
		},
		[]catalog.Directory{{ID: dirID, Name: "corp.example.com", Users: users}})
	return s, w, &now
}

// seed puts a catalog into the store through the service's import (records checked as
// the API checks them); the directories are registered.
func seed(t *testing.T, s *Service, images []catalog.Image, bundles []catalog.Bundle, dirs []catalog.Directory) {
	t.Helper()
	var l hostconfig.LegacyCatalog
	for i, im := range images {
		l.Images = append(l.Images, hostconfig.Sourced[catalog.Image]{From: fmt.Sprintf("images[%d]", i), Item: im})
	}
	for i, b := range bundles {
		l.Bundles = append(l.Bundles, hostconfig.Sourced[catalog.Bundle]{From: fmt.Sprintf("bundles[%d]", i), Item: b})
	}
	for i, d := range dirs {
		l.Directories = append(l.Directories, hostconfig.Sourced[catalog.Directory]{From: fmt.Sprintf("directories[%d]", i), Item: d})
	}
	if _, err := s.ImportCatalog(context.Background(), &l, "test"); err != nil {
		t.Fatal(err)
	}
}

func req(user string) CreateRequest {
	return CreateRequest{DirectoryID: dirID, UserName: user, BundleID: valueID}
}

func TestCreateValidatesEachItem(t *testing.T) {
	s, w, _ := newService(t, 100)
	ctx := context.Background()
	bad := []struct {
		r    CreateRequest
		typ  catalog.ErrorType
		want string
	}{
		{CreateRequest{DirectoryID: "d-ffffffffff", UserName: "user01", BundleID: valueID}, catalog.ResourceNotFound, "directory d-ffffffffff"},
		{CreateRequest{DirectoryID: dirID, UserName: "user01", BundleID: "wsb-nosuch0001"}, catalog.ResourceNotFound, "bundle wsb-nosuch0001"},
		{CreateRequest{DirectoryID: "corp", UserName: "user01", BundleID: valueID}, catalog.InvalidParameterValues, "DirectoryId"},
		{req("nobody"), catalog.ResourceNotFound, `user "nobody"`},
		{req("noemail"), catalog.InvalidParameterValues, "no email"},
		{req("a@b"), catalog.InvalidParameterValues, "Linux"},
		{func() CreateRequest { r := req("user01"); r.RootVolumeSizeGib, r.UserVolumeSizeGib = 80, 20; return r }(), catalog.InvalidParameterValues, "[80,10]"},
		{func() CreateRequest {
			r := req("user01")
			r.RunningMode = workspace.AutoStop
			r.AutoStopTimeoutMinutes = 90
			return r
		}(), catalog.InvalidParameterValues, "whole number of hours"},
		{func() CreateRequest { r := req("user01"); r.ComputeTypeName = "POWER"; return r }(), catalog.InvalidParameterValues, "ComputeTypeName"},
		{func() CreateRequest { r := req("user01"); r.RootVolumeEncryptionEnabled = true; return r }(), catalog.InvalidParameterValues, "needs VolumeEncryptionKey"},
		{func() CreateRequest {
			r := req("user01")
			r.UserVolumeEncryptionEnabled, r.VolumeEncryptionKey = true, "alias/none"
			return r
		}(), catalog.UnsupportedWorkspaceConfig, "no key store"},
		{func() CreateRequest { r := req("user01"); r.Protocols = []string{"WSP"}; return r }(), catalog.InvalidParameterValues, "Linux"},
		{func() CreateRequest { r := req("user01"); r.Tags = []catalog.Tag{{Key: "aws:x"}}; return r }(), catalog.InvalidParameterValues, "reserved"},
	}
	var reqs []CreateRequest
	for _, b := range bad {
		reqs = append(reqs, b.r)
	}
	reqs = append(reqs, req("user02")) // one good item among the bad ones
	pending, failed, err := s.CreateWorkspaces(ctx, reqs)
	if err != nil {
		t.Fatal(err)
	}
	if len(pending) != 1 || pending[0].UserName != "user02" || pending[0].State != workspace.Pending {
		t.Fatalf("pending %+v", pending)
	}
	if len(failed) != len(bad) {
		t.Fatalf("%d failures, want %d: %+v", len(failed), len(bad), failed)
	}
	for i, f := range failed {
		if f.Index != i || f.Code != string(bad[i].typ) || !strings.Contains(f.Message, bad[i].want) {
			t.Errorf("item %d: %+v, want %s containing %q", i, f, bad[i].typ, bad[i].want)
		}
	}
	if len(w.woken) != 1 || w.seen[0] != workspace.Pending {
		t.Errorf("woken %v seeing %v", w.woken, w.seen)
	}
	// The defaults: the bundle's volumes, ALWAYS_ON, the bundle's protocol.
	p := pending[0].Properties
	if p.RootVolumeSizeGib != 80 || p.UserVolumeSizeGib != 10 || p.RunningMode != workspace.AlwaysOn || p.Protocol != "PCOIP" || p.ComputeTypeName != "VALUE" {
		t.Errorf("defaults %+v", p)
	}
	// Windows bundles take Windows user names; GPU bundles their own volume minimums.
	_, failed, _ = s.CreateWorkspaces(ctx, []CreateRequest{
		{DirectoryID: dirID, UserName: "a@b", BundleID: winID},
		func() CreateRequest {
			r := req("user03")
			r.BundleID = gpuID
			r.RootVolumeSizeGib, r.UserVolumeSizeGib = 80, 10
			return r
		}(),
	})
	if len(failed) != 1 || failed[0].Index != 1 || !strings.Contains(failed[0].Message, "at least 100 GB") {
		t.Errorf("windows user / gpu volumes: %+v", failed)
	}
	if _, _, err := s.CreateWorkspaces(ctx, make([]CreateRequest, 26)); !catalog.IsError(err, catalog.InvalidParameterValues) {
		t.Errorf("26 items: %v", err)
	}
}

func TestOneWorkspacePerUserAndQuota(t *testing.T) {
	s, _, _ := newService(t, 3)
	ctx := context.Background()
	pending, failed, _ := s.CreateWorkspaces(ctx, []CreateRequest{req("user01"), req("USER01")})
	if len(pending) != 1 || len(failed) != 1 || failed[0].Code != string(catalog.ResourceAlreadyExists) || !strings.Contains(failed[0].Message, pending[0].ID) {
		t.Fatalf("second WorkSpace for one user: %+v %+v", pending, failed)
	}
	_, failed, _ = s.CreateWorkspaces(ctx, []CreateRequest{req("user02"), req("user03"), req("user04")})
	if len(failed) != 1 || failed[0].Code != string(catalog.ResourceLimitExceeded) {
		t.Fatalf("over quota: %+v", failed)
	}
	// TERMINATED frees the user and the quota.
	id := pending[0].ID
	if f, _ := s.TerminateWorkspaces(ctx, []string{id}); len(f) != 0 {
		t.Fatal(f)
	}
	if _, failed, _ = s.CreateWorkspaces(ctx, []CreateRequest{req("user01")}); len(failed) != 1 {
		t.Fatalf("a TERMINATING WorkSpace still counts: %+v", failed)
	}
	markTerminated(t, s, id)
	if _, failed, _ = s.CreateWorkspaces(ctx, []CreateRequest{req("user01")}); len(failed) != 0 {
		t.Fatalf("after TERMINATED: %+v", failed)
	}
}

func markTerminated(t *testing.T, s *Service, id string) {
	t.Helper()
	setState(t, s, id, workspace.Terminated)
}

// setState stands in for the controller finishing an operation.
func setState(t *testing.T, s *Service, id string, st workspace.State) {
	t.Helper()
	if err := s.store.Update(func(tx store.Tx) error {
		w, err := store.GetJSON[workspace.Workspace](tx, store.Workspaces, id)
		if err != nil {
			return err
		}
		w.SetState(st, s.now())
		return store.PutJSON(tx, store.Workspaces, id, w)
	}); err != nil {
		t.Fatal(err)
	}
}

func TestOperationsWriteDesiredStateFirst(t *testing.T) {
	s, w, _ := newService(t, 100)
	ctx := context.Background()
	auto := req("user01")
	auto.RunningMode = workspace.AutoStop
	pending, _, _ := s.CreateWorkspaces(ctx, []CreateRequest{auto, req("user02")})
	a, o := pending[0].ID, pending[1].ID
	// PENDING accepts nothing but terminate.
	if f, _ := s.RebootWorkspaces(ctx, []string{a}); len(f) != 1 || !strings.Contains(f[0].Message, "PENDING") {
		t.Errorf("reboot while PENDING: %+v", f)
	}
	setState(t, s, a, workspace.Available)
	setState(t, s, o, workspace.Available)
	w.woken, w.seen = nil, nil

	check := func(op string, f []Failure, err error, id string, want workspace.State) {
		t.Helper()
		if err != nil || len(f) != 0 {
			t.Fatalf("%s: %v %+v", op, err, f)
		}
		if got, _ := s.Get(id); got.State != want {
			t.Errorf("%s: state %s, want %s", op, got.State, want)
		}
		if n := len(w.seen); n == 0 || w.seen[n-1] != want {
			t.Errorf("%s: the controller was woken seeing %v, want %s already stored", op, w.seen, want)
		}
	}
	f, err := s.RebootWorkspaces(ctx, []string{a})
	check("reboot", f, err, a, workspace.Rebooting)
	setState(t, s, a, workspace.Available)
	f, err = s.StopWorkspaces(ctx, []string{a})
	check("stop", f, err, a, workspace.Stopping)
	setState(t, s, a, workspace.Stopped)
	f, err = s.StartWorkspaces(ctx, []string{a})
	check("start", f, err, a, workspace.Starting)

	// Stop/start are for AutoStop WorkSpaces only.
	f, _ = s.StopWorkspaces(ctx, []string{o})
	if len(f) != 1 || f[0].Code != string(catalog.OperationNotSupported) {
		t.Errorf("stop of ALWAYS_ON: %+v", f)
	}
	// Maintenance in and out; not from STOPPED.
	if err := s.ModifyWorkspaceState(ctx, o, workspace.AdminMaintenance); err != nil {
		t.Fatal(err)
	}
	if f, _ := s.RebootWorkspaces(ctx, []string{o}); len(f) != 1 || !strings.Contains(f[0].Message, "ADMIN_MAINTENANCE") {
		t.Errorf("reboot in maintenance: %+v", f)
	}
	if err := s.ModifyWorkspaceState(ctx, o, workspace.Available); err != nil {
		t.Fatal(err)
	}
	if err := s.ModifyWorkspaceState(ctx, o, "STOPPED"); !catalog.IsError(err, catalog.InvalidParameterValues) {
		t.Errorf("target STOPPED: %v", err)
	}
	setState(t, s, a, workspace.Stopped)
	if err := s.ModifyWorkspaceState(ctx, a, workspace.AdminMaintenance); !catalog.IsError(err, catalog.InvalidResourceState) || !strings.Contains(err.Error(), "STOPPED") {
		t.Errorf("maintenance from STOPPED: %v", err)
	}
	// A STOPPED AutoStop WorkSpace switched to ALWAYS_ON starts.
	ao := workspace.AlwaysOn
	if err := s.ModifyWorkspaceProperties(ctx, a, workspace.PropertiesChange{RunningMode: &ao}); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Get(a); got.State != workspace.Starting || got.Properties.RunningMode != workspace.AlwaysOn {
		t.Errorf("after switching a stopped WorkSpace to ALWAYS_ON: %s %s", got.State, got.Properties.RunningMode)
	}
	// Unknown ids are refused per item with ResourceNotFound; malformed ones with
	// InvalidParameterValues; nothing else changes.
	f, _ = s.TerminateWorkspaces(ctx, []string{"ws-nosuchthing", "bogus", o})
	if len(f) != 2 || f[0].Code != string(catalog.ResourceNotFound) || f[1].Code != string(catalog.InvalidParameterValues) {
		t.Errorf("terminate of unknown ids: %+v", f)
	}
	if got, _ := s.Get(o); got.State != workspace.Terminating {
		t.Errorf("the valid item was not terminated: %s", got.State)
	}
	// Terminating twice is accepted and changes nothing.
	n := len(w.woken)
	if f, _ := s.TerminateWorkspaces(ctx, []string{o}); len(f) != 0 || len(w.woken) != n {
		t.Errorf("second terminate: %+v, woken again: %v", f, len(w.woken) != n)
	}
}

func TestDescribeFiltersAndPages(t *testing.T) {
	s, _, _ := newService(t, 100)
	ctx := context.Background()
	var reqs []CreateRequest
	for i := 0; i < 23; i++ {
		reqs = append(reqs, req(fmt.Sprintf("user%02d", i)))
	}
	if _, f, _ := s.CreateWorkspaces(ctx, reqs); len(f) != 0 {
		t.Fatal(f)
	}
	seen := map[string]bool{}
	token := ""
	pages := 0
	for {
		ws, next, err := s.DescribeWorkspaces(ctx, DescribeFilter{DirectoryID: dirID, Limit: 10, NextToken: token})
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, w := range ws {
			if seen[w.ID] {
				t.Fatalf("%s on two pages", w.ID)
			}
			seen[w.ID] = true
		}
		if next == "" {
			break
		}
		token = next
	}
	if len(seen) != 23 || pages != 3 {
		t.Errorf("%d WorkSpaces over %d pages", len(seen), pages)
	}
	ws, _, err := s.DescribeWorkspaces(ctx, DescribeFilter{DirectoryID: dirID, UserName: "USER07"})
	if err != nil || len(ws) != 1 || ws[0].UserName != "user07" {
		t.Errorf("by user: %+v %v", ws, err)
	}
	for _, f := range []DescribeFilter{
		{DirectoryID: dirID, BundleID: valueID},
		{UserName: "user01"},
		{Limit: 26},
		{IDs: []string{"nope"}},
		{NextToken: "garbage"},
	} {
		if _, _, err := s.DescribeWorkspaces(ctx, f); !catalog.IsError(err, catalog.InvalidParameterValues) {
			t.Errorf("%+v: %v", f, err)
		}
	}
}

// available creates user's WorkSpace in the given running mode and stands in for the
// controller bringing it to AVAILABLE.
func available(t *testing.T, s *Service, user string, mode workspace.RunningMode) string {
	t.Helper()
	r := req(user)
	r.RunningMode = mode
	ws, failed, err := s.CreateWorkspaces(context.Background(), []CreateRequest{r})
	if err != nil || len(failed) > 0 {
		t.Fatalf("create %s: %v %v", user, err, failed)
	}
	setState(t, s, ws[0].ID, workspace.Available)
	return ws[0].ID
}

// TestConnectionsAndAutoStop: reports make WorkSpaces CONNECTED and DISCONNECTED; an idle
// AutoStop WorkSpace is stopped after its AutoStop time and a connected one is not, until
// the connection manager stops vouching for its session.
func TestConnectionsAndAutoStop(t *testing.T) {
	s, wk, now := newService(t, 100)
	ctx := context.Background()
	idle, busy, always := available(t, s, "user01", workspace.AutoStop), available(t, s, "user02", workspace.AutoStop),
		available(t, s, "user03", workspace.AlwaysOn)
	state := func(id string) workspace.Workspace {
		w, err := s.Get(id)
		if err != nil {
			t.Fatal(err)
		}
		return w
	}
	status := func() map[string]ConnectionStatus {
		st, _, err := s.DescribeWorkspacesConnectionStatus(ctx, nil, "")
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]ConnectionStatus{}
		for _, c := range st {
			out[c.WorkspaceID] = c
		}
		return out
	}
	advance := func(d time.Duration) { *now = now.Add(d) }

	// busy streams from minute 10; the manager reports every 30 s from then on.
	advance(10 * time.Minute)
	connectedAt := *now
	if err := s.ReportConnections(ctx, []string{busy}); err != nil {
		t.Fatal(err)
	}
	st := status()
	if st[busy].State != Connected || st[idle].State != Disconnected || !st[busy].LastUserConnection.Equal(connectedAt) || !st[busy].CheckedAt.Equal(connectedAt) {
		t.Fatalf("after the report: %+v", st)
	}
	report := func(until time.Duration, connected ...string) {
		for end := now.Add(until); now.Before(end); {
			advance(ConnectionReportInterval)
			if err := s.ReportConnections(ctx, connected); err != nil {
				t.Fatal(err)
			}
			if _, err := s.AutoStop(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	report(49*time.Minute, busy) // minute 59: nobody is due yet
	if w := state(idle); w.State != workspace.Available {
		t.Fatalf("idle WorkSpace is %s at minute 59", w.State)
	}
	woken := len(wk.woken)
	report(time.Minute, busy) // minute 60: idle has been AVAILABLE, unconnected, for 1 h
	if w := state(idle); w.State != workspace.Stopping {
		t.Fatalf("idle AutoStop WorkSpace is %s after 1 h, want STOPPING", w.State)
	}
	if len(wk.woken) != woken+1 || wk.woken[len(wk.woken)-1] != idle {
		t.Errorf("the controller was not told to stop %s: %v", idle, wk.woken[woken:])
	}
	report(3*time.Hour, busy)
	if w := state(busy); w.State != workspace.Available {
		t.Fatalf("a connected AutoStop WorkSpace is %s", w.State)
	}
	if w := state(always); w.State != workspace.Available {
		t.Fatalf("an AlwaysOn WorkSpace is %s", w.State)
	}
	if st := status(); st[idle].State != Unknown {
		t.Errorf("a stopping WorkSpace's connection state is %s, want UNKNOWN", st[idle].State)
	}

	// The session ends: busy stops an hour later, not sooner.
	report(ConnectionReportInterval)
	disconnectedAt := *now
	report(59 * time.Minute)
	if w := state(busy); w.State != workspace.Available {
		t.Fatalf("busy stopped %s after its session ended", now.Sub(disconnectedAt))
	}
	report(time.Minute)
	if w := state(busy); w.State != workspace.Stopping {
		t.Fatalf("busy is %s an hour after its session ended", w.State)
	}
	if w := state(busy); !w.Connection.LastUserConnection.Equal(connectedAt) || w.Connection.Connected {
		t.Errorf("busy's connection record: %+v", w.Connection)
	}
}

// TestConnectionReportSilence: a session the connection manager stops confirming reads
// UNKNOWN, and AutoStop counts it as ended when the reports stopped.
func TestConnectionReportSilence(t *testing.T) {
	s, _, now := newService(t, 100)
	ctx := context.Background()
	id := available(t, s, "user04", workspace.AutoStop)
	if err := s.ReportConnections(ctx, []string{id}); err != nil {
		t.Fatal(err)
	}
	lastReport := *now
	*now = now.Add(ConnectionReportStale)
	st, _, _ := s.DescribeWorkspacesConnectionStatus(ctx, []string{id}, "")
	if st[0].State != Unknown {
		t.Errorf("with no report for %s the state is %s, want UNKNOWN", ConnectionReportStale, st[0].State)
	}
	*now = lastReport.Add(59 * time.Minute)
	if stopped, _ := s.AutoStop(ctx); len(stopped) != 0 {
		t.Fatalf("stopped %v 59 min after the last report", stopped)
	}
	*now = lastReport.Add(time.Hour)
	if stopped, _ := s.AutoStop(ctx); len(stopped) != 1 || stopped[0] != id {
		t.Fatalf("1 h after the connection manager went quiet: stopped %v", stopped)
	}
}

func TestReportConnectionsRefuses(t *testing.T) {
	s, _, _ := newService(t, 100)
	ctx := context.Background()
	ws, _, _ := s.CreateWorkspaces(ctx, []CreateRequest{req("user05")})
	before, _ := s.Get(ws[0].ID)
	for _, bad := range [][]string{{"ws-NOTVALID!"}, {ws[0].ID, "d-0123456789"}, make([]string, MaxConnectionReport+1)} {
		if err := s.ReportConnections(ctx, bad); !catalog.IsError(err, catalog.InvalidParameterValues) {
			t.Errorf("report %.40v: %v", bad, err)
		}
	}
	if after, _ := s.Get(ws[0].ID); after.Connection != before.Connection {
		t.Errorf("a refused report changed the record: %+v", after.Connection)
	}
	// An id that is not (or no longer) on this host is skipped.
	if err := s.ReportConnections(ctx, []string{"ws-zzzzzzzzzz", ws[0].ID}); err != nil {
		t.Errorf("report with an unknown id: %v", err)
	}
	if _, _, err := s.DescribeWorkspacesConnectionStatus(ctx, []string{}, ""); !catalog.IsError(err, catalog.InvalidParameterValues) {
		t.Errorf("empty WorkspaceIds: %v", err)
	}
}

// TestConnectionsAfterRestart: a restarted hostd has heard no report yet, so it says
// UNKNOWN, and it does not stop a WorkSpace whose session the store holds until the
// connection manager has had its chance to report (idle time counts from the restart).
func TestConnectionsAfterRestart(t *testing.T) {
	s, wk, now := newService(t, 100)
	ctx := context.Background()
	id := available(t, s, "user06", workspace.AutoStop)
	if err := s.ReportConnections(ctx, []string{id}); err != nil {
		t.Fatal(err)
	}
	// hostd restarts five hours later.
	*now = now.Add(5 * time.Hour)
	s2 := New(s.store, s.cfg, wk, func() time.Time { return *now }, s.log)
	st, _, err := s2.DescribeWorkspacesConnectionStatus(ctx, []string{id}, "")
	if err != nil || st[0].State != Unknown || !st[0].CheckedAt.IsZero() {
		t.Fatalf("before any report: %+v %v", st, err)
	}
	restart := *now
	*now = restart.Add(59 * time.Minute)
	if stopped, _ := s2.AutoStop(ctx); len(stopped) != 0 {
		t.Fatalf("stopped %v 59 min after the restart, with no report", stopped)
	}
	*now = restart.Add(time.Hour)
	if stopped, _ := s2.AutoStop(ctx); len(stopped) != 1 {
		t.Fatalf("an hour after the restart with no report: stopped %v", stopped)
	}
}
