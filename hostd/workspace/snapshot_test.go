package workspace

import (
	"testing"
	"time"

	"deskhost/internal/catalog"
)

func TestSnapshotSchedule(t *testing.T) {
	created := time.Date(2026, 12, 5, 8, 0, 0, 0, time.UTC)
	var s Snapshots
	if s.Due(created, created.Add(SnapshotInterval-time.Second), SnapshotInterval) {
		t.Error("due before 12 h since creation")
	}
	if !s.Due(created, created.Add(SnapshotInterval), SnapshotInterval) {
		t.Error("not due 12 h after creation")
	}
	var dropped Snapshots
	for i := 1; i <= 3; i++ {
		at := created.Add(time.Duration(i) * SnapshotInterval)
		s, dropped = s.Add(Snapshot{ID: SnapshotID(at), Time: at})
		if s.Due(created, at.Add(SnapshotInterval-time.Second), SnapshotInterval) || !s.Due(created, at.Add(SnapshotInterval), SnapshotInterval) {
			t.Errorf("pair %d: the next one is not due exactly 12 h later", i)
		}
	}
	if len(s) != SnapshotsKept || len(dropped) != 1 || dropped[0].Time != created.Add(SnapshotInterval) {
		t.Fatalf("kept %d, dropped %+v; want the %d newest kept and the oldest dropped", len(s), dropped, SnapshotsKept)
	}
	if l, _ := s.Latest(); l.Time != created.Add(3*SnapshotInterval) {
		t.Errorf("latest is %s", l.Time)
	}
	if a, b := SnapshotID(created), SnapshotID(created.Add(time.Nanosecond)); a >= b {
		t.Errorf("snapshot ids do not sort by time: %s %s", a, b)
	}
}

func TestRebuildRestoreStates(t *testing.T) {
	ok := []State{Available, Error, Unhealthy, Stopped}
	for _, op := range []Op{OpRebuild, OpRestore} {
		for _, s := range []State{Pending, Available, Impaired, Unhealthy, Rebooting, Starting, Rebuilding, Restoring,
			Maintenance, AdminMaintenance, Terminating, Terminated, Suspended, Updating, Stopping, Stopped, Error} {
			err := CheckState(op, "ws-abcdefgh12", s)
			want := false
			for _, o := range ok {
				want = want || o == s
			}
			if (err == nil) != want {
				t.Errorf("%s in %s: %v", op, s, err)
			}
			if err != nil && !catalog.IsError(err, catalog.InvalidResourceState) {
				t.Errorf("%s in %s: %v is not InvalidResourceStateException", op, s, err)
			}
		}
	}
}
