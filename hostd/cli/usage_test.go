package cli

import (
	"context"
	"encoding/csv"
	"strings"
	"testing"
	"time"

	"deskhost/hostd/metering"
	"deskhost/hostd/service"
	"deskhost/hostd/store"
	"deskhost/hostd/workspace"
)

// TestCLIUsageCSV: `hostd usage --month 2026-11 --csv` exports the ledger the recorder
// wrote (an injected clock in November 2026), with the documented columns; a bad month is
// a usage error that names it, before any call.
func TestCLIUsageCSV(t *testing.T) {
	f := newFixture(t)
	ws, failed, err := f.svc.CreateWorkspaces(context.Background(), []service.CreateRequest{{DirectoryID: dirID, UserName: "alice", BundleID: bundleStd}})
	if err != nil || len(failed) != 0 {
		t.Fatal(err, failed)
	}
	id := ws[0].ID
	// Created on 2026-11-30 at 22:10 UTC (the ledger fills from creation), sampled after
	// midnight: two hours in November, one in December.
	if err := f.store.Update(func(tx store.Tx) error {
		w, err := store.GetJSON[workspace.Workspace](tx, store.Workspaces, id)
		if err != nil {
			return err
		}
		w.Created, w.State = time.Date(2026, 11, 30, 22, 10, 0, 0, time.UTC), workspace.Available
		return store.PutJSON(tx, store.Workspaces, id, w)
	}); err != nil {
		t.Fatal(err)
	}
	rec := &metering.Recorder{Store: f.store, Now: func() time.Time { return time.Date(2026, 12, 1, 0, 30, 0, 0, time.UTC) }}
	if err := rec.Sample(); err != nil {
		t.Fatal(err)
	}

	code, out, errs := f.cli("usage", "--month", "2026-11", "--csv")
	if code != 0 {
		t.Fatalf("usage --csv: exit %d: %s", code, errs)
	}
	recs, err := csv.NewReader(strings.NewReader(out)).ReadAll()
	if err != nil {
		t.Fatalf("output is not CSV: %v\n%s", err, out)
	}
	if len(recs) != 2 || strings.Join(recs[0], ",") != strings.Join(metering.CSVHeader, ",") {
		t.Fatalf("CSV:\n%s", out)
	}
	want := []string{"2026-11", id, dirID, "alice", bundleStd, "ALWAYS_ON", "STANDARD", "80", "50",
		"2026-11-30T22:00:00Z", "2026-12-01T00:00:00Z", "2", "0", "2", ""}
	if strings.Join(recs[1], ",") != strings.Join(want, ",") {
		t.Errorf("row\n %v\nwant\n %v", recs[1], want)
	}
	code, out, _ = f.cli("usage", "--month", "2026-12")
	if code != 0 || !hasRow(out, id, "alice", "ALWAYS_ON", "STANDARD", "80", "50", "2026-12-01T00:00:00Z", "2026-12-01T01:00:00Z", "1", "1", "1") {
		t.Errorf("usage for December:\n%s", out)
	}

	for _, bad := range []string{"2026-13", "11-2026", "2026-11-01"} {
		code, out, errs = f.cli("usage", "--month", bad, "--csv")
		if code != exitUsage || out != "" || !strings.Contains(errs, `"`+bad+`"`) || !strings.Contains(errs, "YYYY-MM") {
			t.Errorf("--month %s: exit %d, stdout %q, stderr %q; want a usage error naming it", bad, code, out, errs)
		}
	}
}

// TestCLIQuotas: `hostd quotas` lists the guide's quotas and their use.
func TestCLIQuotas(t *testing.T) {
	f := newFixture(t)
	if _, failed, err := f.svc.CreateWorkspaces(context.Background(), []service.CreateRequest{{DirectoryID: dirID, UserName: "alice", BundleID: bundleStd}}); err != nil || len(failed) != 0 {
		t.Fatal(err, failed)
	}
	code, out, errs := f.cli("quotas")
	if code != 0 {
		t.Fatalf("quotas: exit %d: %s", code, errs)
	}
	for _, row := range [][]string{
		{"WorkSpaces", "10", "1", "ResourceLimitExceededException"},
		{"Images", "20", "1", "ResourceLimitExceededException"},
		{"IP access control groups", "100", "0", "ResourceLimitExceededException"},
	} {
		if !hasRow(out, append(strings.Fields(row[0]), row[1:]...)...) {
			t.Errorf("quotas lacks %v:\n%s", row, out)
		}
	}
}
