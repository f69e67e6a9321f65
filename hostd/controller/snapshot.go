package controller

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"deskhost/hostd/agent"
	"deskhost/hostd/memscrub"
	"deskhost/hostd/store"
	"deskhost/hostd/virt"
	"deskhost/hostd/workspace"
)

// Snapshots (guide catalog §7.1): every Config.SnapshotInterval (the guide's 12 hours) a healthy (AVAILABLE)
// WorkSpace's root and user volumes are copied as one pair, consistent across both:
//
//  1. the guest agent syncs and freezes the volumes' filesystems (FIFREEZE);
//  2. libvirt pauses the domain, and qemu drains and flushes both disks to their files;
//  3. both qcow2 files are copied (sparse) below DataDir/snapshots/<id>/;
//  4. the domain resumes and the agent thaws the filesystems.
//
// The pair is recorded in the store (bucket store.Snapshots) only once both files are
// complete; files without a record (a snapshot cut short by a crash) are removed.

// snapshotDir holds id's snapshot files.
func (c *Controller) snapshotDir(id string) string {
	return filepath.Join(c.cfg.DataDir, "snapshots", id)
}

// Snapshots returns id's snapshot pairs, oldest first.
func Snapshots(st store.Store, id string) (workspace.Snapshots, error) {
	var snaps workspace.Snapshots
	err := st.View(func(tx store.Tx) error {
		var err error
		snaps, err = store.GetJSON[workspace.Snapshots](tx, store.Snapshots, id)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		return err
	})
	return snaps, err
}

// snapshotIfDue takes a pair when w (AVAILABLE, its agent just answered) is due one.
func (c *Controller) snapshotIfDue(ctx context.Context, w workspace.Workspace) error {
	snaps, err := Snapshots(c.cfg.Store, w.ID)
	if err != nil {
		return err
	}
	if !snaps.Due(w.Created, c.cfg.Now(), c.cfg.SnapshotInterval) {
		return nil
	}
	return c.snapshot(ctx, w, snaps)
}

// freezer is the part of the agent a snapshot needs.
type freezer interface {
	Freeze(ctx context.Context) ([]string, error)
	Thaw(ctx context.Context) ([]string, error)
}

func (c *Controller) snapshot(ctx context.Context, w workspace.Workspace, snaps workspace.Snapshots) error {
	start := time.Now()
	now := c.cfg.Now()
	snap := workspace.Snapshot{ID: workspace.SnapshotID(now), Time: now, ImageID: w.ImageID}
	dir := c.snapshotDir(w.ID)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := c.removeUnrecorded(dir, snaps); err != nil {
		return err
	}
	snap.Root = filepath.Join(dir, snap.ID+"-root.qcow2")
	snap.User = filepath.Join(dir, snap.ID+"-user.qcow2")

	a, err := c.cfg.DialAgent(ctx, c.AgentSocket(w.ID))
	if err != nil {
		return fmt.Errorf("snapshot %s: %w", w.ID, err)
	}
	defer a.Close()
	fz, ok := a.(freezer)
	if !ok {
		return fmt.Errorf("snapshot %s: the agent client cannot freeze filesystems", w.ID)
	}
	fctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	frozen, err := fz.Freeze(fctx)
	cancel()
	if err != nil {
		// A guest that cannot freeze is not snapshotted: a pair that may be torn is worse
		// than the previous one.
		return fmt.Errorf("snapshot %s: freeze the guest's filesystems: %w", w.ID, err)
	}
	frozenAt := time.Now()
	// Thaw and resume whatever happens, even if the reconcile is cancelled meanwhile.
	bg := context.WithoutCancel(ctx)
	copyErr := func() error {
		if err := c.cfg.Conn.Suspend(w.ID); err != nil {
			return err
		}
		defer func() {
			if err := c.cfg.Conn.Resume(w.ID); err != nil {
				c.cfg.Log.Error("resume after snapshot", "workspace", w.ID, "err", err)
			}
		}()
		root, user := c.volumePaths(w.ID)[0], c.volumePaths(w.ID)[1]
		if err := copySparse(root, snap.Root); err != nil {
			return err
		}
		return copySparse(user, snap.User)
	}()
	tctx, cancel := context.WithTimeout(bg, 20*time.Second)
	_, thawErr := fz.Thaw(tctx)
	cancel()
	frozenFor := time.Since(frozenAt)
	if err := errors.Join(copyErr, thawErr); err != nil {
		os.Remove(snap.Root)
		os.Remove(snap.User)
		return fmt.Errorf("snapshot %s: %w", w.ID, err)
	}
	var dropped workspace.Snapshots
	err = c.cfg.Store.Update(func(tx store.Tx) error {
		cur, err := store.GetJSON[workspace.Workspace](tx, store.Workspaces, w.ID)
		if err != nil {
			return err
		}
		if cur.State != workspace.Available || !c.mine(cur) {
			return errSuperseded // no longer healthy, or no longer ours: no pair
		}
		if c.cfg.Fence != nil {
			if err := c.cfg.Fence(tx); err != nil {
				return err
			}
		}
		old, err := store.GetJSON[workspace.Snapshots](tx, store.Snapshots, w.ID)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		var keep workspace.Snapshots
		keep, dropped = old.Add(snap)
		return store.PutJSON(tx, store.Snapshots, w.ID, keep)
	})
	if err != nil {
		os.Remove(snap.Root)
		os.Remove(snap.User)
		return err
	}
	for _, d := range dropped {
		os.Remove(d.Root)
		os.Remove(d.User)
	}
	if c.snapshotted != nil {
		c.snapshotted(w.ID, time.Since(start), frozenFor)
	}
	c.cfg.Log.Info("snapshot taken", "workspace", w.ID, "snapshot", snap.ID, "filesystems", strings.Join(frozen, ","),
		"frozen", frozenFor, "duration", time.Since(start))
	return nil
}

// removeUnfinishedSnapshots deletes the files of id's snapshots that were never recorded:
// copies a crash cut short. Only id's worker snapshots id, so none is being written now.
func (c *Controller) removeUnfinishedSnapshots(id string) error {
	snaps, err := Snapshots(c.cfg.Store, id)
	if err != nil {
		return err
	}
	err = c.removeUnrecorded(c.snapshotDir(id), snaps)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

// removeUnrecorded deletes files in dir that no recorded pair names.
func (c *Controller) removeUnrecorded(dir string, snaps workspace.Snapshots) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var known []string
	for _, s := range snaps {
		known = append(known, s.Root, s.User)
	}
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		if !slices.Contains(known, p) {
			c.cfg.Log.Info("removing an unfinished snapshot file", "file", p)
			if err := os.Remove(p); err != nil {
				return err
			}
		}
	}
	return nil
}

// copySparse copies a qcow2 file as it is (its backing reference included), keeping holes,
// through a temporary file renamed into place.
func copySparse(src, dst string) error {
	return writeInPlace(dst, "copy "+src, func(tmp string) *exec.Cmd {
		return exec.Command("cp", "--sparse=always", "--reflink=auto", src, tmp)
	})
}

// writeInPlace has the command cmd makes write dst's content into a temporary file, which
// is synced and renamed into place: dst is never seen half-written, even after a crash.
func writeInPlace(dst, what string, cmd func(tmp string) *exec.Cmd) error {
	tmp := dst + ".tmp"
	out, err := cmd(tmp).CombinedOutput()
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("%s: %v: %s", what, err, strings.TrimSpace(string(out)))
	}
	if err := syncFile(tmp); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, dst); err != nil {
		return err
	}
	return syncFile(filepath.Dir(dst))
}

func syncFile(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// replaceVolumes puts w's volumes back while its guest is off: for a rebuild, a fresh root
// volume from w's (current) image and the user volume of the latest pair (kept as it is if
// there is none); for a restore, both volumes of the latest pair. Safe to repeat.
func (c *Controller) replaceVolumes(w workspace.Workspace, restore bool) error {
	snaps, err := Snapshots(c.cfg.Store, w.ID)
	if err != nil {
		return err
	}
	snap, ok := snaps.Latest()
	if restore && !ok {
		return permanent{fmt.Errorf("WorkSpace %s has no snapshot to restore", w.ID)}
	}
	root, user := c.volumePaths(w.ID)[0], c.volumePaths(w.ID)[1]
	if restore {
		if err := copySparse(snap.Root, root); err != nil {
			return err
		}
	} else {
		if err := c.cfg.Conn.DeleteVolume(c.cfg.Pool, rootVolume(w.ID)); err != nil {
			return err
		}
		if _, _, err := c.ensureVolumes(w); err != nil {
			return err
		}
	}
	if ok {
		if err := copySparse(snap.User, user); err != nil {
			return err
		}
	}
	return c.growRestoredVolumes(w, restore, ok)
}

// growRestoredVolumes grows volumes copied from a snapshot cut before they last grew
// (ModifyWorkspaceProperties) back to the record's sizes; their filesystems grow once the
// guest is up (Workspace.GrowFS).
func (c *Controller) growRestoredVolumes(w workspace.Workspace, root, user bool) error {
	var grown []workspace.Resource
	for _, v := range []struct {
		copied bool
		r      workspace.Resource
		size   int
	}{{root, workspace.ResourceRootVolume, w.Properties.RootVolumeSizeGib}, {user, workspace.ResourceUserVolume, w.Properties.UserVolumeSizeGib}} {
		if !v.copied {
			continue
		}
		name, _ := c.volumeOf(w.ID, v.r)
		vols, err := c.cfg.Conn.Volumes(c.cfg.Pool, name)
		if err != nil {
			return err
		}
		if len(vols) != 1 || vols[0].CapacityGiB >= uint64(v.size) {
			continue
		}
		_, _, pass, err := c.volumeSecrets(w)
		if err != nil {
			return err
		}
		if _, err := c.cfg.Conn.GrowVolume(c.cfg.Pool, name, v.size, pass); err != nil {
			return err
		}
		grown = append(grown, v.r)
	}
	if len(grown) == 0 {
		return nil
	}
	return c.transition(w.ID, w.State, func(r *workspace.Workspace) {
		for _, g := range grown {
			if !slices.Contains(r.GrowFS, g) {
				r.GrowFS = append(r.GrowFS, g)
			}
		}
	})
}

// rebuildOrRestore powers w off, replaces its volumes and boots it. If hostd booted the VM
// after the operation was accepted, the volumes are already replaced and only the wait for
// the agent is left.
func (c *Controller) rebuildOrRestore(ctx context.Context, w workspace.Workspace, h *health) error {
	restore := w.State == workspace.Restoring
	code := "RebuildFailed"
	if restore {
		code = "RestoreFailed"
	}
	if !w.BootedAt.After(w.StateSince) {
		if err := c.powerOff(ctx, w.ID, true); err != nil {
			if ctx.Err() != nil {
				return err
			}
			return c.fail(w.ID, w.State, failureCode(err, code), err)
		}
		if w.Hibernated {
			// A stopped AutoStop WorkSpace's saved RAM belongs to the old volumes: resuming
			// it over the new ones would corrupt them. It is scrubbed and the guest boots
			// afresh.
			if _, err := memscrub.RemoveSavedState(c.savedState(w.ID)); err != nil {
				return err // retried
			}
			if err := c.transition(w.ID, w.State, func(r *workspace.Workspace) { r.Hibernated = false }); err != nil {
				return err
			}
			w.Hibernated = false
		}
		if err := c.replaceVolumes(w, restore); err != nil {
			var p permanent
			if ctx.Err() == nil && errors.As(err, &p) {
				return c.fail(w.ID, w.State, failureCode(err, code), err)
			}
			return err // retried
		}
	}
	return c.boot(ctx, w, w.State, h)
}

// forgetSnapshots removes id's snapshot files and record (the WorkSpace is terminated).
func (c *Controller) forgetSnapshots(id string) error {
	if err := os.RemoveAll(c.snapshotDir(id)); err != nil {
		return err
	}
	return c.cfg.Store.Update(func(tx store.Tx) error { return tx.Delete(store.Snapshots, id) })
}

// resumeIfPaused resumes a running WorkSpace's guest left paused by a snapshot hostd did
// not finish.
func (c *Controller) resumeIfPaused(id string, st virt.DomainState) error {
	if st != virt.Paused {
		return nil
	}
	c.cfg.Log.Warn("guest paused (an unfinished snapshot?); resuming", "workspace", id)
	return c.cfg.Conn.Resume(id)
}

var _ freezer = (*agent.Client)(nil)
