package controller

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"deskhost/hostd/memscrub"
)

// Hibernation (guide §5, AutoStop: "resume in under 90 s"). Stopping an AutoStop WorkSpace
// saves its running guest with libvirt's managed save, and its next start restores it, open
// applications intact.
//
// The save image is the guest's RAM on disk and gets the care RAM gets: it is root's alone
// (0600), and it never goes back to the filesystem unzeroed — hostd holds it open before
// anything deletes it (libvirt unlinks it after a restore), zeroes and syncs its blocks, then
// lets it go (hostd/memscrub.HoldFile).

// resumeFailedPrefix starts the state reason of a WorkSpace whose saved state could not be
// restored and which was cold booted instead; boot keeps it on the AVAILABLE record.
const resumeFailedPrefix = "Resume from hibernation failed; cold booted instead: "

// savePath is where libvirtd keeps id's managed save image.
func (c *Controller) savePath(id string) string {
	if c.cfg.SaveDir != "" {
		return filepath.Join(c.cfg.SaveDir, id+".save")
	}
	return c.cfg.Conn.ManagedSavePath(id)
}

// hibernate saves id's running guest and stops its qemu, then scrubs the qemu's RAM. The
// save image is made root's alone. An error before the save leaves the guest running; one
// after it leaves it stopped with its saved state scrubbed away (the caller then finishes
// with a cold stop).
func (c *Controller) hibernate(ctx context.Context, id string) error {
	st, err := c.cfg.Conn.State(id)
	if err != nil {
		return err
	}
	if !st.Active() {
		return errors.New("the guest is not running")
	}
	// The image must be reachable to be secured and scrubbed: no save where it is not.
	if fi, err := os.Stat(filepath.Dir(c.savePath(id))); err != nil || !fi.IsDir() {
		return fmt.Errorf("libvirt's save directory is not at %s (%v)", filepath.Dir(c.savePath(id)), err)
	}
	if err := c.hold(id, false); err != nil {
		return err
	}
	if err := c.cfg.Conn.ManagedSave(id); err != nil {
		return err
	}
	if err := c.guestGone(id); err != nil {
		return err
	}
	if err := c.privateSave(id); err != nil {
		if derr := c.discardSave(id); derr != nil {
			err = fmt.Errorf("%w; discarding it failed too: %v", err, derr)
		}
		return err
	}
	return nil
}

// privateSave makes id's save image readable and writable by root only (libvirtd opens it
// for the restore; qemu never needs it by name).
func (c *Controller) privateSave(id string) error {
	p := c.savePath(id)
	if fi, err := os.Lstat(p); err == nil {
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			c.cfg.Log.Debug("saved state written", "workspace", id, "path", p, "bytes", fi.Size(), "mode", fi.Mode().Perm(), "uid", st.Uid, "gid", st.Gid)
		}
	}
	if err := os.Lchown(p, 0, 0); err != nil {
		return fmt.Errorf("saved state of %s: %w", id, err)
	}
	if err := os.Chmod(p, 0o600); err != nil {
		return fmt.Errorf("saved state of %s: %w", id, err)
	}
	return nil
}

// holdSave opens id's save image for scrubbing, or returns nil if it has none.
func (c *Controller) holdSave(id string) (*memscrub.Held, error) {
	saved, err := c.cfg.Conn.HasManagedSave(id)
	if err != nil || !saved {
		return nil, err
	}
	f, err := memscrub.HoldFile(c.savePath(id))
	if err != nil {
		return nil, &memoryError{"SavedStateScrubFailed", fmt.Errorf("cannot hold the saved state for scrubbing: %w", err)}
	}
	return f, nil
}

// scrubSave zeroes a held save image once libvirt is done with it, makes sure it is gone
// from the save directory, and lets it go.
func (c *Controller) scrubSave(id string, f *memscrub.Held) error {
	if c.savedState != nil {
		c.savedState(id, f, false)
	}
	st, err := f.Zero()
	if err != nil {
		return &memoryError{"SavedStateScrubFailed", fmt.Errorf("the saved state failed its scrub: %w", err)}
	}
	if c.savedState != nil {
		c.savedState(id, f, true)
	}
	// libvirt unlinks the image after a restore or a forced boot; whatever is left goes.
	if err := c.cfg.Conn.RemoveManagedSave(id); err != nil {
		c.cfg.Log.Warn("remove saved state", "workspace", id, "err", err)
	}
	if err := os.Remove(f.Path()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove saved state of %s: %w", id, err)
	}
	if err := f.Close(); err != nil {
		return &memoryError{"SavedStateScrubFailed", err}
	}
	c.cfg.Log.Info("saved state scrubbed", "workspace", id, "bytes", st.Populated, "duration", st.Duration)
	return nil
}

// discardSave scrubs and deletes id's save image, if any, without restoring it.
func (c *Controller) discardSave(id string) error {
	f, err := c.holdSave(id)
	if err != nil || f == nil {
		return err
	}
	if err := c.cfg.Conn.RemoveManagedSave(id); err != nil {
		f.Release()
		return err
	}
	return c.scrubSave(id, f)
}

// startSaved starts id's defined domain paused: restored from its save image held in f, or,
// if the restore fails, cold booted (define, when given, redefines it first). It returns the
// reason for a cold boot that replaced a restore ("" after a restore).
func (c *Controller) startSaved(id string, f *memscrub.Held, define func() error) (string, error) {
	rerr := c.cfg.Conn.StartPaused(id)
	if rerr == nil {
		return "", c.scrubSave(id, f)
	}
	c.cfg.Log.Warn("resume from hibernation failed; cold booting", "workspace", id, "err", rerr)
	if err := define(); err != nil {
		f.Release()
		return "", err
	}
	err := c.cfg.Conn.StartPausedFresh(id)
	if serr := c.scrubSave(id, f); serr != nil {
		if err == nil {
			_ = c.cfg.Conn.Destroy(id)
		}
		return "", serr
	}
	if err != nil {
		return "", err
	}
	return resumeFailedPrefix + strings.TrimSpace(rerr.Error()), nil
}
