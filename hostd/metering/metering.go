// Package metering keeps the hourly usage ledger of every WorkSpace (guide-catalog §5):
// for each hour a WorkSpace exists, one entry with its running mode, compute type, volume
// sizes, tags and whether it ran during that hour. AlwaysOn WorkSpaces are billed for
// every hour they exist ("a fixed fee for unlimited usage"); AutoStop WorkSpaces for the
// hours they ran ("a low hourly rate for each hour the WorkSpace is running"; "hourly
// metering is suspended" while stopped).
//
// The ledger lives in hostd's store, keyed by WorkSpace and hour, so it survives restarts,
// and every write is a read-merge-write in one store transaction (a compare-and-set on
// etcd): a restart mid-hour or two fleet hosts sampling the same WorkSpace record that
// hour once. Hours are UTC; a month is a UTC calendar month.
package metering

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"time"

	"deskhost/hostd/store"
	"deskhost/hostd/workspace"
	"deskhost/internal/catalog"
)

// Entry is one WorkSpace's hour.
type Entry struct {
	WorkspaceID   string                `json:"workspaceId"`
	DirectoryID   string                `json:"directoryId"`
	UserName      string                `json:"userName"`
	BundleID      string                `json:"bundleId"`
	Hour          time.Time             `json:"hour"` // UTC, on the hour
	RunningMode   workspace.RunningMode `json:"runningMode"`
	ComputeType   string                `json:"computeType"`
	RootVolumeGiB int                   `json:"rootVolumeGib"`
	UserVolumeGiB int                   `json:"userVolumeGib"`
	Tags          []catalog.Tag         `json:"tags,omitempty"`
	// Running: the WorkSpace's VM ran at some sample during the hour.
	Running bool `json:"running"`
}

// Billable reports whether the hour is charged: every hour of an AlwaysOn WorkSpace, the
// running hours of an AutoStop one.
func (e Entry) Billable() bool { return e.RunningMode != workspace.AutoStop || e.Running }

// sameTerms: two entries bill alike (one row of a report when their hours are adjacent).
func (e Entry) sameTerms(o Entry) bool {
	return e.WorkspaceID == o.WorkspaceID && e.DirectoryID == o.DirectoryID && e.UserName == o.UserName &&
		e.BundleID == o.BundleID && e.RunningMode == o.RunningMode && e.ComputeType == o.ComputeType &&
		e.RootVolumeGiB == o.RootVolumeGiB && e.UserVolumeGiB == o.UserVolumeGiB && slices.Equal(e.Tags, o.Tags)
}

// Key is the ledger key of a WorkSpace's hour: sorting keys sorts by WorkSpace, then hour.
func Key(workspaceID string, hour time.Time) string {
	return workspaceID + "/" + hour.UTC().Format("2006-01-02T15")
}

// metered reports whether a WorkSpace in state s has its VM running: the states in which
// hourly metering is not suspended.
func metered(s workspace.State) bool {
	switch s {
	case workspace.Available, workspace.Impaired, workspace.Unhealthy, workspace.Rebooting, workspace.Starting,
		workspace.Maintenance, workspace.AdminMaintenance, workspace.Updating, workspace.Stopping:
		return true
	}
	return false
}

// observe is what a sample of w at hour says.
func observe(w workspace.Workspace, tags []catalog.Tag, hour time.Time) Entry {
	return Entry{
		WorkspaceID: w.ID, DirectoryID: w.DirectoryID, UserName: w.UserName, BundleID: w.BundleID,
		Hour: hour, RunningMode: w.Properties.RunningMode, ComputeType: w.Properties.ComputeTypeName,
		RootVolumeGiB: w.Properties.RootVolumeSizeGib, UserVolumeGiB: w.Properties.UserVolumeSizeGib,
		Tags: tags, Running: metered(w.State),
	}
}

// DefaultMaxBackfill bounds how far back a sample fills the hours it missed (hostd down):
// two months, so one long outage is one bounded transaction.
const DefaultMaxBackfill = 62 * 24 * time.Hour

// Recorder samples the store's WorkSpaces into the ledger.
type Recorder struct {
	Store store.Store
	Now   func() time.Time // nil: time.Now
	Log   *slog.Logger     // nil: discard
	// MaxBackfill: see DefaultMaxBackfill (0: that).
	MaxBackfill time.Duration
}

func (r *Recorder) now() time.Time {
	if r.Now == nil {
		return time.Now()
	}
	return r.Now()
}

// Run samples at once and then every interval until ctx ends. A minute is fine: an
// AutoStop WorkSpace that ran for a minute of an hour is charged that hour, as one that
// ran the whole hour.
func (r *Recorder) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if err := r.Sample(); err != nil && r.Log != nil {
			r.Log.Warn("metering sample failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Sample records the current hour of every live WorkSpace, and fills the hours since its
// last recorded one that no sample saw (hostd was down): an AlwaysOn WorkSpace existed
// through them; an AutoStop one ran through them only if it ran at both ends (a hostd
// restart leaves its VMs running), otherwise they are recorded as not run, never charged
// on a guess. A WorkSpace never sampled before is filled from its creation.
func (r *Recorder) Sample() error {
	hour := r.now().UTC().Truncate(time.Hour)
	var wss []workspace.Workspace
	tags := map[string][]catalog.Tag{}
	current := map[string]bool{} // WorkSpaces whose hour the ledger already has as observed
	err := r.Store.View(func(tx store.Tx) error {
		clear(tags)
		clear(current)
		var err error
		if wss, err = store.ListJSON[workspace.Workspace](tx, store.Workspaces); err != nil {
			return err
		}
		err = tx.ForEach(store.Tags, func(k string, v []byte) error {
			if !strings.HasPrefix(k, catalog.KindWorkspace.Prefix) {
				return nil
			}
			var t []catalog.Tag
			if err := json.Unmarshal(v, &t); err != nil {
				return fmt.Errorf("decode %s/%s: %w", store.Tags, k, err)
			}
			tags[k] = t
			return nil
		})
		if err != nil {
			return err
		}
		// Most samples change nothing: find those here, in one read, rather than in a
		// write transaction per WorkSpace.
		for _, w := range wss {
			obs := observe(w, tags[w.ID], hour)
			cur, err := store.GetJSON[Entry](tx, store.UsageCursor, w.ID)
			if err != nil || !cur.Hour.Equal(hour) {
				continue
			}
			merged := obs
			merged.Running = cur.Running || obs.Running
			current[w.ID] = reflect.DeepEqual(normal(cur), normal(merged))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("metering: read workspaces: %w", err)
	}
	var errs []error
	for _, w := range wss {
		if !w.Live() || current[w.ID] {
			continue
		}
		if err := r.record(observe(w, tags[w.ID], hour), w.Created); err != nil {
			errs = append(errs, fmt.Errorf("metering: record %s: %w", Key(w.ID, hour), err))
		}
	}
	return errors.Join(errs...)
}

// record merges one observation into the ledger in one transaction: the merge is
// idempotent (Running only ever turns on; the terms are the last seen), so a retried or
// repeated sample, by this host or another, leaves one entry for the hour.
func (r *Recorder) record(obs Entry, created time.Time) error {
	maxBack := r.MaxBackfill
	if maxBack <= 0 {
		maxBack = DefaultMaxBackfill
	}
	return r.Store.Update(func(tx store.Tx) error {
		cur, err := store.GetJSON[Entry](tx, store.UsageCursor, obs.WorkspaceID)
		switch {
		case errors.Is(err, store.ErrNotFound):
			// Never sampled: it existed from its creation, and is not known to have run.
			cur = obs
			cur.Running = false
			cur.Hour = created.UTC().Truncate(time.Hour).Add(-time.Hour)
		case err != nil:
			return err
		}
		from := cur.Hour.Add(time.Hour)
		if lim := obs.Hour.Add(-maxBack); from.Before(lim) {
			from = lim
		}
		for h := from; h.Before(obs.Hour); h = h.Add(time.Hour) {
			k := Key(obs.WorkspaceID, h)
			if _, err := tx.Get(store.Usage, k); err == nil {
				continue // another recorder has it
			} else if !errors.Is(err, store.ErrNotFound) {
				return err
			}
			fill := cur
			fill.Hour, fill.Running = h, cur.Running && obs.Running
			if err := store.PutJSON(tx, store.Usage, k, fill); err != nil {
				return err
			}
		}
		k := Key(obs.WorkspaceID, obs.Hour)
		merged := obs
		have, err := store.GetJSON[Entry](tx, store.Usage, k)
		switch {
		case err == nil:
			merged.Running = have.Running || obs.Running
			if reflect.DeepEqual(normal(have), normal(merged)) {
				return nil // nothing new: no write
			}
		case !errors.Is(err, store.ErrNotFound):
			return err
		}
		if err := store.PutJSON(tx, store.Usage, k, merged); err != nil {
			return err
		}
		if merged.Hour.Before(cur.Hour) {
			return nil // another host's clock is ahead: keep its cursor
		}
		return store.PutJSON(tx, store.UsageCursor, obs.WorkspaceID, merged)
	})
}

// normal makes an entry comparable after a JSON round trip (nil and empty tags).
func normal(e Entry) Entry {
	if len(e.Tags) == 0 {
		e.Tags = nil
	}
	e.Hour = e.Hour.UTC()
	return e
}
