package metering

import (
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"deskhost/hostd/store"
	"deskhost/hostd/workspace"
	"deskhost/internal/catalog"
)

// clock is the injected clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Set(s string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	c.t = t
}

func openBolt(t *testing.T, path string) *store.Bolt {
	t.Helper()
	s, err := store.OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func putWS(t *testing.T, st store.Store, id string, mode workspace.RunningMode, state workspace.State, compute string, created string) {
	t.Helper()
	c, _ := time.Parse(time.RFC3339, created)
	w := workspace.Workspace{ID: id, DirectoryID: "d-1234567890", UserName: "alice", BundleID: "wsb-0123456789", State: state, Created: c,
		Properties: workspace.Properties{RunningMode: mode, ComputeTypeName: compute, RootVolumeSizeGib: 80, UserVolumeSizeGib: 50}}
	if err := st.Update(func(tx store.Tx) error { return store.PutJSON(tx, store.Workspaces, id, w) }); err != nil {
		t.Fatal(err)
	}
}

func sample(t *testing.T, r *Recorder) {
	t.Helper()
	if err := r.Sample(); err != nil {
		t.Fatal(err)
	}
}

func report(t *testing.T, st store.Store, month string) []Row {
	t.Helper()
	m, err := ParseMonth(month)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := Report(st, m)
	if err != nil {
		t.Fatal(err)
	}
	return rows
}

func countEntries(t *testing.T, st store.Store) int {
	t.Helper()
	n := 0
	if err := st.View(func(tx store.Tx) error {
		n = 0
		return tx.ForEach(store.Usage, func(string, []byte) error { n++; return nil })
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestRestartMidHour: hostd samples, restarts (a new Recorder on the reopened store) in
// the same hour and samples again: the hour is recorded once. Then hostd is down for two
// whole hours: they are filled, not lost, for AlwaysOn (existed) and for an AutoStop
// WorkSpace that was running before and after (its VM ran on).
func TestRestartMidHour(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hostd.db")
	clk := &clock{}
	st := openBolt(t, path)
	putWS(t, st, "ws-alwayson1", workspace.AlwaysOn, workspace.Available, "STANDARD", "2026-11-10T10:00:00Z")
	putWS(t, st, "ws-autostop1", workspace.AutoStop, workspace.Available, "STANDARD", "2026-11-10T10:00:00Z")
	putWS(t, st, "ws-autostop2", workspace.AutoStop, workspace.Stopped, "STANDARD", "2026-11-10T10:00:00Z")

	clk.Set("2026-11-10T10:05:00Z")
	sample(t, &Recorder{Store: st, Now: clk.Now})
	clk.Set("2026-11-10T10:06:00Z")
	sample(t, &Recorder{Store: st, Now: clk.Now})
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	// Restarted mid-hour.
	st = openBolt(t, path)
	defer st.Close()
	clk.Set("2026-11-10T10:40:00Z")
	sample(t, &Recorder{Store: st, Now: clk.Now})
	if n := countEntries(t, st); n != 3 {
		t.Fatalf("after a restart mid-hour: %d ledger entries, want 3 (one hour of each WorkSpace)", n)
	}

	// Down from 10:41 to 13:20: hours 11 and 12 saw no sample.
	clk.Set("2026-11-10T13:20:00Z")
	sample(t, &Recorder{Store: st, Now: clk.Now})
	rows := report(t, st, "2026-11")
	want := map[string][3]int{ // hours, running, billable
		"ws-alwayson1": {4, 4, 4},
		"ws-autostop1": {4, 4, 4},
		"ws-autostop2": {4, 0, 0},
	}
	if len(rows) != len(want) {
		t.Fatalf("%d rows, want %d: %+v", len(rows), len(want), rows)
	}
	for _, r := range rows {
		got := [3]int{r.Hours, r.RunningHours, r.BillableHours}
		if got != want[r.WorkspaceID] {
			t.Errorf("%s: hours/running/billable %v, want %v", r.WorkspaceID, got, want[r.WorkspaceID])
		}
		if r.From.Format(time.RFC3339) != "2026-11-10T10:00:00Z" || r.To.Format(time.RFC3339) != "2026-11-10T14:00:00Z" {
			t.Errorf("%s: %s to %s, want 10:00 to 14:00", r.WorkspaceID, r.From, r.To)
		}
	}
}

// TestAutoStopBillsRunningHours: an AutoStop WorkSpace that stopped during hostd's outage
// is not charged for the hours it is not known to have run; one that ran for a minute of
// an hour is charged that hour.
func TestAutoStopBillsRunningHours(t *testing.T) {
	st := openBolt(t, filepath.Join(t.TempDir(), "hostd.db"))
	defer st.Close()
	clk := &clock{}
	r := &Recorder{Store: st, Now: clk.Now}
	putWS(t, st, "ws-autostop1", workspace.AutoStop, workspace.Available, "STANDARD", "2026-11-10T08:00:00Z")
	clk.Set("2026-11-10T08:59:00Z")
	sample(t, r)
	putWS(t, st, "ws-autostop1", workspace.AutoStop, workspace.Stopped, "STANDARD", "2026-11-10T08:00:00Z")
	clk.Set("2026-11-10T09:00:00Z")
	sample(t, r)
	clk.Set("2026-11-10T12:30:00Z") // down 10:00–12:00; stopped at both ends
	sample(t, r)
	putWS(t, st, "ws-autostop1", workspace.AutoStop, workspace.Available, "STANDARD", "2026-11-10T08:00:00Z")
	clk.Set("2026-11-10T12:59:00Z")
	sample(t, r)
	rows := report(t, st, "2026-11")
	if len(rows) != 1 || rows[0].Hours != 5 || rows[0].RunningHours != 2 || rows[0].BillableHours != 2 {
		t.Fatalf("rows %+v; want one row of 5 hours, 2 running (08 and 12), 2 billable", rows)
	}
}

// TestTwoRecorders: two fleet hosts sample the same WorkSpaces over the same hours; each
// hour is in the ledger once.
func TestTwoRecorders(t *testing.T) {
	st := openBolt(t, filepath.Join(t.TempDir(), "hostd.db"))
	defer st.Close()
	twoRecordersOn(t, st, st)
}

// twoRecordersOn runs one recorder on each store (the same store, or two clients of one).
func twoRecordersOn(t *testing.T, st, other store.Store) {
	clk := &clock{}
	for _, id := range []string{"ws-alwayson1", "ws-alwayson2", "ws-alwayson3"} {
		putWS(t, st, id, workspace.AlwaysOn, workspace.Available, "PERFORMANCE", "2026-11-01T00:00:00Z")
	}
	clk.Set("2026-11-01T00:10:00Z")
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for _, s := range []store.Store{st, other} {
		r := &Recorder{Store: s, Now: clk.Now}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 10 {
				errs <- r.Sample()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := countEntries(t, st); n != 3 {
		t.Fatalf("%d ledger entries after two recorders sampled one hour 20 times, want 3", n)
	}
	for _, r := range report(t, st, "2026-11") {
		if r.Hours != 1 || r.BillableHours != 1 {
			t.Errorf("%s: %d hours, %d billable; want 1, 1", r.WorkspaceID, r.Hours, r.BillableHours)
		}
	}
}

// TestMonthBoundary: the hours before and after midnight UTC on the 1st belong to their
// months; a row never spans two months.
func TestMonthBoundary(t *testing.T) {
	st := openBolt(t, filepath.Join(t.TempDir(), "hostd.db"))
	defer st.Close()
	clk := &clock{}
	r := &Recorder{Store: st, Now: clk.Now}
	putWS(t, st, "ws-alwayson1", workspace.AlwaysOn, workspace.Available, "STANDARD", "2026-11-30T22:30:00Z")
	clk.Set("2026-11-30T22:45:00Z")
	sample(t, r)
	clk.Set("2026-12-01T01:15:00Z") // 23:00 and 00:00 filled
	sample(t, r)
	nov, dec := report(t, st, "2026-11"), report(t, st, "2026-12")
	if len(nov) != 1 || nov[0].Hours != 2 || nov[0].To.Format(time.RFC3339) != "2026-12-01T00:00:00Z" {
		t.Errorf("November: %+v; want 2 hours (22, 23) ending at 2026-12-01T00:00Z", nov)
	}
	if len(dec) != 1 || dec[0].Hours != 2 || dec[0].From.Format(time.RFC3339) != "2026-12-01T00:00:00Z" {
		t.Errorf("December: %+v; want 2 hours (00, 01) from 2026-12-01T00:00Z", dec)
	}
	if oct := report(t, st, "2026-10"); len(oct) != 0 {
		t.Errorf("October: %+v; want nothing", oct)
	}
}

// TestTermsChange: a compute type change starts a new row (a new rate); tags are kept.
func TestTermsChangeAndCSV(t *testing.T) {
	st := openBolt(t, filepath.Join(t.TempDir(), "hostd.db"))
	defer st.Close()
	clk := &clock{}
	r := &Recorder{Store: st, Now: clk.Now}
	putWS(t, st, "ws-alwayson1", workspace.AlwaysOn, workspace.Available, "STANDARD", "2026-11-02T09:00:00Z")
	tags := []catalog.Tag{{Key: "cost-center", Value: "a=b&c"}, {Key: "team", Value: "ops"}}
	if err := st.Update(func(tx store.Tx) error { return store.PutJSON(tx, store.Tags, "ws-alwayson1", tags) }); err != nil {
		t.Fatal(err)
	}
	clk.Set("2026-11-02T09:30:00Z")
	sample(t, r)
	clk.Set("2026-11-02T10:30:00Z")
	sample(t, r)
	putWS(t, st, "ws-alwayson1", workspace.AlwaysOn, workspace.Available, "POWER", "2026-11-02T09:00:00Z")
	clk.Set("2026-11-02T11:30:00Z")
	sample(t, r)
	rows := report(t, st, "2026-11")
	if len(rows) != 2 || rows[0].ComputeType != "STANDARD" || rows[0].Hours != 2 || rows[1].ComputeType != "POWER" || rows[1].Hours != 1 {
		t.Fatalf("rows %+v; want STANDARD for 2 hours, then POWER for 1", rows)
	}
	var buf bytes.Buffer
	if err := WriteCSV(&buf, rows); err != nil {
		t.Fatal(err)
	}
	recs, err := csv.NewReader(&buf).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(recs[0], ",") != "month,workspace_id,directory_id,user_name,bundle_id,running_mode,compute_type,root_volume_gib,user_volume_gib,from,to,hours,running_hours,billable_hours,tags" {
		t.Fatalf("header %v", recs[0])
	}
	want := []string{"2026-11", "ws-alwayson1", "d-1234567890", "alice", "wsb-0123456789", "ALWAYS_ON", "STANDARD", "80", "50",
		"2026-11-02T09:00:00Z", "2026-11-02T11:00:00Z", "2", "2", "2", "cost-center=a%3Db%26c&team=ops"}
	if strings.Join(recs[1], "|") != strings.Join(want, "|") {
		t.Fatalf("row\n %v\nwant\n %v", recs[1], want)
	}
	if len(recs) != 3 || recs[2][6] != "POWER" {
		t.Fatalf("records %v", recs)
	}
}

func TestParseMonth(t *testing.T) {
	m, err := ParseMonth("2026-11")
	if err != nil || m.Start != time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC) || m.End() != time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC) {
		t.Fatalf("ParseMonth(2026-11) = %v, %v", m, err)
	}
	for _, bad := range []string{"", "2026-13", "2026-00", "2026-1", "26-11", "2026/11", "2026-11-01", "november", " 2026-11"} {
		_, err := ParseMonth(bad)
		var e *catalog.Error
		if !errors.As(err, &e) || e.Type != catalog.InvalidParameterValues || !strings.Contains(e.Message, "YYYY-MM") || !strings.Contains(e.Message, bad) {
			t.Errorf("ParseMonth(%q) = %v; want InvalidParameterValues naming the value and YYYY-MM", bad, err)
		}
	}
}

// TestUnchangedSampleWritesNothing: a sample that observes what the ledger already has
// commits no write (a minute's beat over many WorkSpaces stays cheap); a change does.
func TestUnchangedSampleWritesNothing(t *testing.T) {
	st := openBolt(t, filepath.Join(t.TempDir(), "hostd.db"))
	defer st.Close()
	clk := &clock{}
	r := &Recorder{Store: st, Now: clk.Now}
	putWS(t, st, "ws-autostop1", workspace.AutoStop, workspace.Stopped, "STANDARD", "2026-11-10T10:00:00Z")
	clk.Set("2026-11-10T10:05:00Z")
	sample(t, r)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events := st.Watch(ctx, store.Usage, "", 0)
	clk.Set("2026-11-10T10:06:00Z")
	sample(t, r)
	select {
	case ev := <-events:
		t.Fatalf("an unchanged sample wrote %s", ev.Key)
	case <-time.After(200 * time.Millisecond):
	}
	putWS(t, st, "ws-autostop1", workspace.AutoStop, workspace.Available, "STANDARD", "2026-11-10T10:00:00Z")
	sample(t, r)
	select {
	case ev := <-events:
		if ev.Key != Key("ws-autostop1", clk.Now().Truncate(time.Hour)) {
			t.Errorf("wrote %s", ev.Key)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("starting the WorkSpace wrote nothing to the ledger")
	}
}
