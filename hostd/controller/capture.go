package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"deskhost/hostd/agent"
	"deskhost/hostd/fleet"
	"deskhost/hostd/store"
	"deskhost/hostd/workspace"
	"deskhost/internal/catalog"
	"deskhost/internal/desktopimage"
	"deskhost/internal/digest"
)

// Image capture (CreateWorkspaceImage, guide catalog §4.1, §4.3). While the WorkSpace is
// SUSPENDED and its image PENDING:
//
//  1. as for a snapshot, the WorkSpace's agent freezes its filesystems, libvirt pauses the
//     domain, and the root volume is flattened (qemu-img convert: no backing file) into
//     the image's directory; the domain resumes and the filesystems thaw;
//  2. that copy is booted on its own, with the source image's kernel and initramfs, in an
//     isolated domain named after the image (no NIC), and its guest agent runs the guide's
//     Linux sanitising steps on it (SSH host keys shredded, machine-id truncated, logs,
//     caches and shell histories removed), refusing a root volume 97 % full or more; the
//     guest powers off cleanly, its RAM scrubbed;
//  3. the sanitised volume is flattened again into the image's root.qcow2, beside links
//     to the source image's kernel and initramfs and an image.json with their checksums;
//  4. the image becomes AVAILABLE (ERROR, with the reason, if a step failed) and the
//     WorkSpace AVAILABLE again.
//
// The WorkSpace itself is never sanitised: it keeps its host keys, identity and logs. The
// image has booted once to a healthy agent before it is AVAILABLE. A capture cut short by
// a crash starts again from step 1.

// sanitizer is the part of the agent a capture needs.
type sanitizer interface {
	Sanitize(ctx context.Context) (float64, []string, error)
}

var _ sanitizer = (*agent.Client)(nil)

// SanitizeTimeout bounds the guest's sanitising.
const SanitizeTimeout = 2 * time.Minute

// capture makes the image w.CaptureImage of w's root volume.
func (c *Controller) capture(ctx context.Context, w workspace.Workspace) error {
	start := time.Now()
	var img catalog.Image
	err := c.cfg.Store.View(func(tx store.Tx) error {
		var err error
		img, err = store.GetJSON[catalog.Image](tx, store.Images, w.CaptureImage)
		return err
	})
	if w.CaptureImage == "" || errors.Is(err, store.ErrNotFound) || err == nil && img.Status() != catalog.ImagePending {
		return c.endCapture(w) // nothing (left) to capture
	}
	if err != nil {
		return err
	}
	fail := func(code string, err error) error {
		c.cfg.Log.Warn("image capture failed", "workspace", w.ID, "image", img.ID, "code", code, "err", err)
		if ferr := finishImage(c.cfg.Store, c.cfg.Owner, img.ID, nil, code, err.Error()); ferr != nil {
			return ferr
		}
		os.RemoveAll(img.Dir)
		// The sanitising boot's domain and volumes: the sweep's orphan worker may be removing
		// them at the same time (then this fails on a volume already gone), and removes what
		// is left if this does not.
		if rerr := c.removeOrphan(context.WithoutCancel(ctx), img.ID); rerr != nil {
			c.cfg.Log.Warn("remove the sanitising boot's leftovers", "image", img.ID, "err", rerr)
		}
		return c.endCapture(w)
	}
	st, err := c.cfg.Conn.State(w.ID)
	if err != nil {
		return err
	}
	if !st.Active() {
		return fail("CaptureFailed", fmt.Errorf("WorkSpace %s's guest is not running", w.ID))
	}
	if err := c.resumeIfPaused(w.ID, st); err != nil { // a capture hostd did not finish
		return err
	}
	src, err := c.cfg.Images.ImageFiles(w.ImageID)
	if err != nil {
		return fail("CaptureFailed", fmt.Errorf("source image %s: %w", w.ImageID, err))
	}
	srcImg, err := desktopimage.Load(filepath.Dir(src.Root))
	if err != nil {
		return fail("CaptureFailed", fmt.Errorf("source image %s: %w", w.ImageID, err))
	}

	// Leftovers of an attempt a crash cut short.
	if err := c.removeOrphan(ctx, img.ID); err != nil {
		return err
	}
	if err := os.MkdirAll(img.Dir, 0o755); err != nil {
		return err
	}
	cut := filepath.Join(img.Dir, "capture.qcow2")
	defer os.Remove(cut)
	a, err := c.cfg.DialAgent(ctx, c.AgentSocket(w.ID))
	if err != nil {
		return err // retried
	}
	fz, ok := a.(freezer)
	if !ok {
		a.Close()
		return fail("CaptureFailed", errors.New("the agent client cannot freeze filesystems"))
	}
	var convert time.Duration
	err = c.frozen(ctx, w.ID, fz, func() error {
		t := time.Now()
		err := qemuImgConvert(c.volumePaths(w.ID)[0], cut)
		convert = time.Since(t)
		return err
	})
	a.Close() // the channel takes one client at a time
	if err != nil {
		if ctx.Err() != nil {
			return err
		}
		return fail("CaptureFailed", err)
	}
	copied := time.Since(start)

	// The copy boots on its own and its agent sanitises it.
	m := srcImg.Manifest
	if m.RootVirtualSize, err = virtualSize(cut); err != nil {
		return fail("CaptureFailed", err)
	}
	helper := desktopimage.Image{Dir: img.Dir, Manifest: m, Kernel: srcImg.Kernel, Initrd: srcImg.Initrd, Root: cut}
	var pct float64
	var changed []string
	err = c.bootIsolated(ctx, img.ID, helper, func(actx context.Context, ac *agent.Client) error {
		var err error
		pct, changed, err = sanitizer(ac).Sanitize(actx)
		return err
	})
	if err != nil {
		if ctx.Err() != nil {
			return err
		}
		var ae *agent.Error
		switch {
		case pct >= agent.MaxImageRootPercent:
			// The guide: "The root volume (/) should be less than 97% full".
			return fail("RootVolumeFull", fmt.Errorf("the root volume (/) is %.0f%% full; an image can be created only from a WorkSpace whose root volume is less than %d%% full", pct, agent.MaxImageRootPercent))
		case errors.As(err, &ae):
			return fail("SanitizeFailed", fmt.Errorf("sanitising the image: %w", err))
		}
		return fail("CaptureFailed", fmt.Errorf("booting the copy to sanitise it: %w", err))
	}
	root := filepath.Join(img.Dir, "root.qcow2")
	if err := qemuImgConvert(c.volumePaths(img.ID)[0], root); err != nil {
		return fail("CaptureFailed", err)
	}
	if err := c.removeOrphan(ctx, img.ID); err != nil {
		return err
	}
	sanitized := time.Since(start) - copied
	m.Name, m.Root, m.RootFormat = img.Name, "root.qcow2", "qcow2"
	m.SHA256 = map[string]string{}
	m.Kernel, m.Initrd = filepath.Base(srcImg.Kernel), filepath.Base(srcImg.Initrd)
	m.SHA256[m.Kernel] = srcImg.Manifest.SHA256[srcImg.Manifest.Kernel]
	m.SHA256[m.Initrd] = srcImg.Manifest.SHA256[srcImg.Manifest.Initrd]
	for _, f := range []string{srcImg.Kernel, srcImg.Initrd} {
		dst := filepath.Join(img.Dir, filepath.Base(f))
		os.Remove(dst)
		if err := os.Link(f, dst); err != nil {
			if err := copySparse(f, dst); err != nil {
				return fail("CaptureFailed", err)
			}
		}
	}
	if m.SHA256[m.Root], err = digest.File(root); err != nil {
		return fail("CaptureFailed", err)
	}
	if m.RootVirtualSize, err = virtualSize(root); err != nil {
		return fail("CaptureFailed", err)
	}
	if _, err := desktopimage.WriteManifest(img.Dir, m); err != nil {
		return fail("CaptureFailed", err)
	}
	di, err := desktopimage.Load(img.Dir)
	if err != nil {
		return fail("CaptureFailed", err)
	}
	if err := finishImage(c.cfg.Store, c.cfg.Owner, img.ID, &di, "", ""); err != nil {
		return err
	}
	if c.captured != nil {
		c.captured(w.ID, time.Since(start), copied, convert)
	}
	c.cfg.Log.Info("image captured", "workspace", w.ID, "image", img.ID, "rootUsedPercent", fmt.Sprintf("%.1f", pct),
		"sanitized", strings.Join(changed, "; "), "copied", copied, "convert", convert, "sanitize", sanitized, "duration", time.Since(start))
	return c.endCapture(w)
}

// frozen runs fn with w's filesystems frozen and its domain paused, as a snapshot does;
// the domain resumes and the filesystems thaw whatever happens.
func (c *Controller) frozen(ctx context.Context, id string, fz freezer, fn func() error) error {
	fctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	_, err := fz.Freeze(fctx)
	cancel()
	if err != nil {
		return fmt.Errorf("freeze the guest's filesystems: %w", err)
	}
	runErr := func() error {
		if err := c.cfg.Conn.Suspend(id); err != nil {
			return err
		}
		defer func() {
			if err := c.cfg.Conn.Resume(id); err != nil {
				c.cfg.Log.Error("resume after capture", "workspace", id, "err", err)
			}
		}()
		return fn()
	}()
	tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 20*time.Second)
	_, thawErr := fz.Thaw(tctx)
	cancel()
	return errors.Join(runErr, thawErr)
}

// abandonCapture fails the image a terminated WorkSpace was being captured into.
func (c *Controller) abandonCapture(w workspace.Workspace) error {
	if w.CaptureImage == "" {
		return nil
	}
	var dir string
	if err := c.cfg.Store.View(func(tx store.Tx) error {
		img, err := store.GetJSON[catalog.Image](tx, store.Images, w.CaptureImage)
		dir = img.Dir
		if errors.Is(err, store.ErrNotFound) || err == nil && img.Status() != catalog.ImagePending {
			dir = ""
			return nil
		}
		return err
	}); err != nil || dir == "" {
		return err
	}
	os.RemoveAll(dir)
	return finishImage(c.cfg.Store, c.cfg.Owner, w.CaptureImage, nil, "CaptureFailed", fmt.Sprintf("WorkSpace %s was terminated before its image was complete", w.ID))
}

// endCapture puts w back to AVAILABLE.
func (c *Controller) endCapture(w workspace.Workspace) error {
	return c.transition(w.ID, workspace.Suspended, func(r *workspace.Workspace) {
		r.CaptureImage = ""
		r.SetState(workspace.Available, c.cfg.Now())
	})
}

// qemuImgConvert writes src (a qcow2 with its backing chain) as one flat, compressed-free
// qcow2 dst, through a temporary file renamed into place. -U: the paused domain still
// holds its lock on src.
func qemuImgConvert(src, dst string) error {
	return writeInPlace(dst, "qemu-img convert "+src, func(tmp string) *exec.Cmd {
		return exec.Command("qemu-img", "convert", "-U", "-O", "qcow2", src, tmp)
	})
}

// virtualSize is a disk image's size as its guest sees it.
func virtualSize(p string) (int64, error) {
	out, err := exec.Command("qemu-img", "info", "-U", "--output=json", p).Output()
	if err != nil {
		return 0, fmt.Errorf("qemu-img info %s: %w", p, err)
	}
	var info struct {
		VirtualSize int64 `json:"virtual-size"`
	}
	if err := json.Unmarshal(out, &info); err != nil {
		return 0, fmt.Errorf("qemu-img info %s: %w", p, err)
	}
	return info.VirtualSize, nil
}

// finishImage records how the making of a PENDING image ended: AVAILABLE with the content
// hash of its directory (held by this host for the fleet), or ERROR with code and message.
// An image no longer PENDING (deleted meanwhile) is left as it is.
func finishImage(st store.Store, host, id string, di *desktopimage.Image, code, msg string) error {
	return st.Update(func(tx store.Tx) error {
		img, err := store.GetJSON[catalog.Image](tx, store.Images, id)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if img.Status() != catalog.ImagePending {
			return nil
		}
		if di == nil {
			img.State, img.ErrorCode, img.ErrorMessage = catalog.ImageError, code, msg
		} else {
			img.State, img.Digest, img.Dir = catalog.ImageAvailable, di.Digest, di.Dir
			if err := fleet.HoldTx(tx, host, img.Digest, img.Dir); err != nil {
				return err
			}
		}
		if err := store.PutJSON(tx, store.Images, id, img); err != nil {
			return err
		}
		_, err = store.BumpCatalogRevision(tx)
		return err
	})
}
