package controller

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"deskhost/hostd/store"
	"deskhost/hostd/virt"
	"deskhost/hostd/workspace"
)

// Migration (guide catalog §7.4; the intent: hostd/service/migrate.go). Two workers share
// it, each acting on its own record and reading the other's:
//
//   - the source's (UPDATING) powers its guest off (RAM scrubbed) and keeps it off, so that
//     its user volume holds still; if its target is gone or no longer migrating, the
//     migration failed and the source returns to its prior state;
//   - the target's (PENDING) waits for the source's guest to be off, copies the source's
//     user volume (recorded as done in the store only once the copy is complete, so a
//     copy cut short is made again), creates its root volume from its bundle's image,
//     boots, and, once its agent answers, becomes AVAILABLE in the same transaction that
//     moves the source to TERMINATING. A failure — an image this host lacks, a guest that
//     does not come up within ProvisionTimeout — rolls back: in one transaction the target
//     goes to TERMINATING (its domain and volumes are removed like any terminated
//     WorkSpace's) and the source returns to its prior state.
//
// Every step is safe to repeat, so a hostd killed anywhere in between finishes or rolls
// back the migration from the two records alone.

// migrationWait is how often the target's worker looks again at the source's guest.
const migrationWait = 250 * time.Millisecond

// view reads a record without remembering it (the worker of id does that).
func (c *Controller) view(id string) (workspace.Workspace, error) {
	var w workspace.Workspace
	err := c.cfg.Store.View(func(tx store.Tx) error {
		var err error
		w, err = store.GetJSON[workspace.Workspace](tx, store.Workspaces, id)
		return err
	})
	return w, err
}

// linked reports whether src and dst are the two ends of one running migration.
func linked(src, dst workspace.Workspace) bool {
	return src.MigrationSource() && dst.MigrationTarget() && src.Migration.Target == dst.ID && dst.Migration.Source == src.ID
}

// migrateSource keeps a migration's source off while its target is made.
func (c *Controller) migrateSource(ctx context.Context, w workspace.Workspace) error {
	t, err := c.view(w.Migration.Target)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	if err != nil || !linked(w, t) {
		return c.rollbackMigration(w.ID, w.Migration.Target, fmt.Errorf("the target WorkSpace %s is gone or no longer migrating (%s)", w.Migration.Target, t.State))
	}
	if err := c.powerOff(ctx, w.ID, true); err != nil {
		return err // retried; the target waits
	}
	c.Poke(t.ID)
	return nil
}

// migrateTarget makes a migration's target, as described above.
func (c *Controller) migrateTarget(ctx context.Context, w workspace.Workspace, h *health) error {
	srcID := w.Migration.Source
	src, err := c.view(srcID)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	if err != nil || !linked(src, w) {
		return c.rollbackMigration(srcID, w.ID, fmt.Errorf("the source WorkSpace %s is gone or no longer migrating", srcID))
	}
	if c.cfg.Now().Sub(w.StateSince) > c.cfg.ProvisionTimeout {
		reason := fmt.Errorf("did not become AVAILABLE within %s", c.cfg.ProvisionTimeout)
		if h.lastErr != nil {
			reason = fmt.Errorf("%w: %v", reason, h.lastErr)
		}
		return c.rollbackMigration(srcID, w.ID, reason)
	}
	if !w.BootedAt.After(w.StateSince) && !w.Migration.UserCopied {
		// The source's user volume, once its guest is off.
		for {
			st, err := c.cfg.Conn.State(srcID)
			if err != nil {
				return err
			}
			if !st.Active() {
				break
			}
			c.Poke(srcID)
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(migrationWait):
			}
		}
		vols, err := c.cfg.Conn.Volumes(c.cfg.Pool, userVolume(srcID))
		if err != nil {
			return err
		}
		if len(vols) == 0 { // a source that never got its volumes (an ERROR at its launch)
			return c.rollbackMigration(srcID, w.ID, fmt.Errorf("the source WorkSpace %s has no user volume on this host to migrate", srcID))
		}
		start := time.Now()
		if err := c.copyUserVolume(w, vols[0]); err != nil {
			if errors.As(err, new(keyError)) || errors.As(err, new(permanent)) {
				return c.rollbackMigration(srcID, w.ID, err)
			}
			h.lastErr = err
			return err // retried until the deadline
		}
		grown := vols[0].CapacityGiB < uint64(w.Properties.UserVolumeSizeGib)
		if err := c.transition(w.ID, workspace.Pending, func(r *workspace.Workspace) {
			r.Migration.UserCopied = true
			if grown && !slices.Contains(r.GrowFS, workspace.ResourceUserVolume) {
				r.GrowFS = append(r.GrowFS, workspace.ResourceUserVolume) // once AVAILABLE
			}
		}); err != nil {
			return err
		}
		w.Migration.UserCopied = true
		c.cfg.Log.Info("migration: user volume copied", "workspace", w.ID, "source", srcID, "duration", time.Since(start))
	}
	if err := c.ensureRunning(ctx, w); err != nil {
		var p permanent
		var m *memoryError
		if errors.As(err, &p) || errors.As(err, &m) || errors.Is(err, errGuestStopped) {
			return c.failMigration(srcID, w.ID, err)
		}
		h.lastErr = err // retried until the deadline
		return err
	}
	if err := c.waitAgent(ctx, w); err != nil {
		if errors.Is(err, errBootTimeout) || !errors.Is(err, context.Canceled) && ctx.Err() == nil {
			return c.failMigration(srcID, w.ID, err)
		}
		return err
	}
	return c.finishMigration(srcID, w.ID)
}

// copyUserVolume makes w's user volume a copy of src (the source's), at w's size. libvirt
// clones a plain volume; an encrypted one is copied as a file, as snapshots are (libvirt's
// clone would have to open it): its LUKS header and data stay under the data key w
// carries from its source (hostd/service/migrate.go), and the copy is grown with it. A
// copy cut short is made again.
func (c *Controller) copyUserVolume(w workspace.Workspace, src virt.Volume) error {
	name := userVolume(w.ID)
	if err := c.cfg.Conn.DeleteVolume(c.cfg.Pool, name); err != nil {
		return err
	}
	if !src.Encrypted {
		_, err := c.cfg.Conn.CloneVolume(c.cfg.Pool, name, src.Name, w.Properties.UserVolumeSizeGib)
		return err
	}
	if !w.Encryption.User {
		return permanent{fmt.Errorf("the source's user volume %s is encrypted, but the target's record says its user volume is not", src.Name)}
	}
	pass, err := c.passphrase(w)
	if err != nil {
		return err
	}
	if err := copySparse(src.Path, c.volumePaths(w.ID)[1]); err != nil {
		return err
	}
	// The file is in place: this only makes libvirt's pool list it.
	if _, err := c.cfg.Conn.CreateEncryptedVolume(c.cfg.Pool, name, int(src.CapacityGiB), "", pass); err != nil {
		return err
	}
	_, err = c.cfg.Conn.GrowVolume(c.cfg.Pool, name, w.Properties.UserVolumeSizeGib, pass)
	return err
}

// failMigration powers the target's guest off (RAM scrubbed), then rolls back.
func (c *Controller) failMigration(srcID, targetID string, reason error) error {
	if err := c.powerOff(c.root, targetID, false); err != nil {
		c.cfg.Log.Error("power off a failed migration's target", "workspace", targetID, "err", err)
	}
	return c.rollbackMigration(srcID, targetID, reason)
}

// rollbackMigration ends a failed migration in one transaction: the target (if still
// linked) goes to TERMINATING with the reason, the source (if still linked) returns to its
// prior state.
func (c *Controller) rollbackMigration(srcID, targetID string, reason error) error {
	now := c.cfg.Now()
	err := c.cfg.Store.Update(func(tx store.Tx) error {
		if c.cfg.Fence != nil {
			if err := c.cfg.Fence(tx); err != nil {
				return err
			}
		}
		for _, id := range []string{targetID, srcID} {
			w, err := store.GetJSON[workspace.Workspace](tx, store.Workspaces, id)
			if errors.Is(err, store.ErrNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			switch {
			case !c.mine(w):
				continue
			case id == targetID && w.MigrationTarget() && w.Migration.Source == srcID:
				w.SetState(workspace.Terminating, now)
				w.ErrorCode, w.ErrorMessage = "MigrationFailed", reason.Error()
				w.Migration.Failed = reason.Error()
			case id == srcID && w.MigrationSource() && w.Migration.Target == targetID:
				w.RestoreFromMigration(now)
			default:
				continue
			}
			w.Updated = now
			c.remember(nil, w)
			if err := store.PutJSON(tx, store.Workspaces, id, w); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	c.cfg.Log.Warn("migration failed; rolled back", "workspace", srcID, "target", targetID, "reason", reason.Error())
	c.Poke(srcID)
	c.Poke(targetID)
	return nil
}

// finishMigration makes the target AVAILABLE and moves the source to TERMINATING, in one
// transaction.
func (c *Controller) finishMigration(srcID, targetID string) error {
	now := c.cfg.Now()
	done := false
	err := c.cfg.Store.Update(func(tx store.Tx) error {
		done = false
		t, err := store.GetJSON[workspace.Workspace](tx, store.Workspaces, targetID)
		if err != nil {
			return err
		}
		s, err := store.GetJSON[workspace.Workspace](tx, store.Workspaces, srcID)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		if !c.mine(t) || !t.MigrationTarget() {
			return errSuperseded
		}
		if err != nil || !linked(s, t) {
			return nil // the source left the migration: rolled back below
		}
		if c.cfg.Fence != nil {
			if err := c.cfg.Fence(tx); err != nil {
				return err
			}
		}
		t.SetState(workspace.Available, now)
		t.Migration = nil
		t.Updated = now
		s.SetState(workspace.Terminating, now)
		s.Migration = nil
		s.Updated = now
		c.remember(nil, t)
		c.remember(nil, s)
		done = true
		if err := store.PutJSON(tx, store.Workspaces, srcID, s); err != nil {
			return err
		}
		return store.PutJSON(tx, store.Workspaces, targetID, t)
	})
	if err != nil {
		return err
	}
	if !done {
		return c.failMigration(srcID, targetID, fmt.Errorf("the source WorkSpace %s left the migration", srcID))
	}
	c.cfg.Log.Info("migration finished", "workspace", srcID, "target", targetID)
	c.Poke(srcID)
	return nil
}
