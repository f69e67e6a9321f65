package service

import (
	"context"
	"errors"
	"time"

	"deskhost/hostd/store"
	"deskhost/hostd/workspace"
	"deskhost/internal/catalog"
)

// InvalidUserConfiguration is the guide's error code for a rebuild whose user is no longer
// in the directory (guide catalog §7.2).
const InvalidUserConfiguration catalog.ErrorType = "InvalidUserConfiguration.Workspace"

// RebuildWorkspaces recreates each WorkSpace's root volume from its bundle's current image
// and its user volume from the latest snapshot (hostd/controller). The user is resolved in
// the directory again: one who is gone fails the rebuild with the guide's error.
func (s *Service) RebuildWorkspaces(ctx context.Context, ids []string) ([]Failure, error) {
	if len(ids) != 1 {
		// AWS's RebuildWorkspaces takes exactly one request per call.
		return nil, catalog.Errorf(catalog.InvalidParameterValues, "RebuildWorkspaces takes 1 WorkSpace, not %d", len(ids))
	}
	var failed []Failure
	for i, id := range ids {
		if err := s.rebuild(id); err != nil {
			failed = append(failed, failure(i, id, err))
		}
	}
	return failed, nil
}

func (s *Service) rebuild(id string) error {
	return s.changeTx(id, workspace.OpRebuild, func(tx store.Tx, w *workspace.Workspace, now time.Time) error {
		if err := w.CheckOp(workspace.OpRebuild); err != nil {
			return err
		}
		if err := checkKey(tx, w, workspace.OpRebuild); err != nil {
			return err
		}
		rec, err := store.GetJSON[catalog.DirectoryRecord](tx, store.Directories, w.DirectoryID)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		if _, ok := rec.Definition.FindUser(w.UserName); err != nil || !ok {
			return catalog.Errorf(InvalidUserConfiguration, "The user was either not found or is misconfigured.")
		}
		b, err := store.GetJSON[catalog.Bundle](tx, store.Bundles, w.BundleID)
		if errors.Is(err, store.ErrNotFound) || err == nil && b.DeleteQueued {
			return catalog.Errorf(catalog.ResourceUnavailable, "WorkSpace %s's bundle %s no longer exists; it cannot be rebuilt", id, w.BundleID)
		}
		if err != nil {
			return err
		}
		if _, err := store.GetJSON[catalog.Image](tx, store.Images, b.ImageID); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				return catalog.Errorf(catalog.ResourceUnavailable, "bundle %s names image %s, which this host does not have", b.ID, b.ImageID)
			}
			return err
		}
		w.ImageID = b.ImageID // the bundle's *current* image
		w.SetState(workspace.Rebuilding, now)
		return nil
	})
}

// RestoreWorkspace reverts both volumes to the last pair taken while the WorkSpace was
// healthy.
func (s *Service) RestoreWorkspace(ctx context.Context, id string) error {
	return s.changeTx(id, workspace.OpRestore, func(tx store.Tx, w *workspace.Workspace, now time.Time) error {
		if err := w.CheckOp(workspace.OpRestore); err != nil {
			return err
		}
		if err := checkKey(tx, w, workspace.OpRestore); err != nil {
			return err
		}
		snaps, err := store.GetJSON[workspace.Snapshots](tx, store.Snapshots, id)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		if _, ok := snaps.Latest(); !ok {
			return catalog.Errorf(catalog.InvalidResourceState, "WorkSpace %s has no snapshot to restore yet; snapshots are taken every %s while it is AVAILABLE", id, workspace.SnapshotInterval)
		}
		w.SetState(workspace.Restoring, now)
		return nil
	})
}

// SnapshotTimes are a WorkSpace's snapshots as DescribeWorkspaceSnapshots lists them: the
// user volume of every pair serves a rebuild, the pair a restore.
type SnapshotTimes struct {
	Rebuild, Restore []time.Time
}

// DescribeWorkspaceSnapshots lists id's snapshots, newest first.
func (s *Service) DescribeWorkspaceSnapshots(ctx context.Context, id string) (SnapshotTimes, error) {
	var out SnapshotTimes
	if err := catalog.CheckID(catalog.KindWorkspace, id); err != nil {
		return out, catalog.Errorf(catalog.InvalidParameterValues, "WorkspaceId: %v", err)
	}
	err := s.store.View(func(tx store.Tx) error {
		if _, err := store.GetJSON[workspace.Workspace](tx, store.Workspaces, id); errors.Is(err, store.ErrNotFound) {
			return catalog.Errorf(catalog.ResourceNotFound, "WorkSpace %s does not exist", id)
		} else if err != nil {
			return err
		}
		snaps, err := store.GetJSON[workspace.Snapshots](tx, store.Snapshots, id)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		for i := len(snaps) - 1; i >= 0; i-- {
			out.Rebuild = append(out.Rebuild, snaps[i].Time)
			out.Restore = append(out.Restore, snaps[i].Time)
		}
		return nil
	})
	return out, err
}
