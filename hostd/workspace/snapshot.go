package workspace

import (
	"fmt"
	"slices"
	"time"
)

// SnapshotInterval is how often a healthy WorkSpace's volumes are snapshotted (guide
// catalog §7.1: "scheduled every 12 hours").
const SnapshotInterval = 12 * time.Hour

// SnapshotsKept is how many snapshot pairs hostd keeps per WorkSpace; older ones go.
const SnapshotsKept = 2

// Snapshot is one root+user pair, cut while the WorkSpace was AVAILABLE with its guest's
// filesystems frozen. Root and User are the files' paths on the host.
type Snapshot struct {
	ID   string    `json:"id"`
	Time time.Time `json:"time"`
	Root string    `json:"root"`
	User string    `json:"user"`
	// ImageID is the image the root volume was a child of (its qcow2 backing file).
	ImageID string `json:"imageId"`
}

// Snapshots is a WorkSpace's snapshot pairs, oldest first (hostd's store, bucket
// "snapshots", by WorkSpace id).
type Snapshots []Snapshot

// Latest is the newest pair, if any.
func (s Snapshots) Latest() (Snapshot, bool) {
	if len(s) == 0 {
		return Snapshot{}, false
	}
	return s[len(s)-1], true
}

// Due reports whether a WorkSpace created at created, with these snapshots, needs a new
// pair at now: interval after the last one (or after its creation).
func (s Snapshots) Due(created, now time.Time, interval time.Duration) bool {
	last := created
	if l, ok := s.Latest(); ok {
		last = l.Time
	}
	return !now.Before(last.Add(interval))
}

// Add appends snap and returns the list to keep and the pairs dropped from it (their
// files are to be deleted).
func (s Snapshots) Add(snap Snapshot) (keep, dropped Snapshots) {
	all := append(slices.Clone(s), snap)
	if n := len(all) - SnapshotsKept; n > 0 {
		return all[n:], all[:n]
	}
	return all, nil
}

// SnapshotID names a pair by its time, so that names sort by age.
func SnapshotID(t time.Time) string {
	return fmt.Sprintf("snap-%s", t.UTC().Format("20060102T150405.000000000Z"))
}
