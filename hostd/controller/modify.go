package controller

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"time"

	"deskhost/hostd/agent"
	"deskhost/hostd/memscrub"
	"deskhost/hostd/workspace"
)

// Compute and volume changes (ModifyWorkspaceProperties; hostd/workspace/modify.go holds the
// rules). An UPDATING WorkSpace carries the change as its Modification; the controller makes
// it and returns the WorkSpace to the state it came from:
//
//   - compute type: as AWS does ("Amazon WorkSpaces restarts the WorkSpace using the new
//     bundle"), a running guest is powered off (RAM scrubbed) and booted again; every boot
//     defines the domain afresh, so the new vCPUs and memory apply. A stopped guest needs
//     nothing but its saved RAM (hibernation) dropped: that was the old hardware's.
//   - a volume grows online while the guest runs: libvirt's block resize grows the qcow2
//     and tells the guest, and the guest agent grows the mounted filesystem (grow-fs). A
//     stopped guest's volume grows offline (qemu-img resize, through libvirt); its
//     filesystem grows after its next boot (Workspace.GrowFS).
//
// Each step is safe to repeat: a crash anywhere is finished by the next reconcile.

// growFSer is the part of the agent a volume change needs.
type growFSer interface {
	GrowFS(ctx context.Context, volume string, minBytes uint64) (fsBytes, diskBytes uint64, err error)
}

var _ growFSer = (*agentClient)(nil)

func (c *Controller) modify(ctx context.Context, w workspace.Workspace, h *health) error {
	m := w.Modification
	if c.modifying != nil {
		c.modifying(w.ID, m.Resource)
	}
	switch m.Resource {
	case workspace.ResourceComputeType:
		return c.modifyCompute(ctx, w, h)
	case workspace.ResourceRootVolume, workspace.ResourceUserVolume:
		return c.growVolume(ctx, w)
	}
	return c.fail(w.ID, workspace.Updating, "ModificationFailed", fmt.Errorf("UPDATING names no modification this host knows (%q)", m.Resource))
}

func (c *Controller) modifyCompute(ctx context.Context, w workspace.Workspace, h *health) error {
	if w.Modification.Return == workspace.Stopped {
		if err := c.keepStopped(ctx, w); err != nil {
			return err
		}
		if err := c.dropSavedState(w); err != nil {
			return err
		}
		return c.set(w.ID, workspace.Updating, workspace.Stopped)
	}
	if !w.BootedAt.After(w.StateSince) {
		if err := c.powerOff(ctx, w.ID, true); err != nil {
			if ctx.Err() != nil {
				return err
			}
			return c.fail(w.ID, workspace.Updating, failureCode(err, "ModifyComputeFailed"), err)
		}
	}
	return c.boot(ctx, w, workspace.Updating, h)
}

// dropSavedState scrubs a hibernated WorkSpace's saved RAM: after a compute or volume
// change it no longer fits the guest, which boots afresh.
func (c *Controller) dropSavedState(w workspace.Workspace) error {
	if !w.Hibernated {
		return nil
	}
	if _, err := memscrub.RemoveSavedState(c.savedState(w.ID)); err != nil {
		return err
	}
	return c.transition(w.ID, w.State, func(r *workspace.Workspace) { r.Hibernated = false })
}

// volumeOf is the volume file and the agent's name of a volume resource.
func (c *Controller) volumeOf(id string, r workspace.Resource) (name, agentName string) {
	if r == workspace.ResourceRootVolume {
		return rootVolume(id), agent.VolumeRoot
	}
	return userVolume(id), agent.VolumeUser
}

func (c *Controller) growVolume(ctx context.Context, w workspace.Workspace) error {
	m := w.Modification
	name, vol := c.volumeOf(w.ID, m.Resource)
	st, err := c.cfg.Conn.State(w.ID)
	if err != nil {
		return err
	}
	if m.Return == workspace.Stopped || !st.Active() {
		// Offline: the guest is off (or died: keepRunning restarts it once AVAILABLE).
		if m.Return == workspace.Stopped {
			if err := c.keepStopped(ctx, w); err != nil {
				return err
			}
		} else if err := c.guestGone(w.ID); err != nil {
			return err
		}
		if err := c.dropSavedState(w); err != nil {
			return err
		}
		_, _, pass, err := c.volumeSecrets(w)
		if err != nil {
			return c.modifyFailed(w, err)
		}
		if _, err := c.cfg.Conn.GrowVolume(c.cfg.Pool, name, m.SizeGib, pass); err != nil {
			return c.modifyFailed(w, err)
		}
		return c.transition(w.ID, workspace.Updating, func(r *workspace.Workspace) {
			if !slices.Contains(r.GrowFS, m.Resource) {
				r.GrowFS = append(r.GrowFS, m.Resource)
			}
			r.SetState(m.Return, c.cfg.Now())
		})
	}
	if err := c.resumeIfPaused(w.ID, st); err != nil { // an unfinished snapshot's pause
		return err
	}
	start := time.Now()
	if _, err := c.cfg.Conn.GrowDisk(w.ID, filepath.Join(c.volumeDir(), name), m.SizeGib); err != nil {
		return c.modifyFailed(w, err)
	}
	resized := time.Since(start)
	fsBytes, err := c.growFS(ctx, w.ID, vol, m.SizeGib)
	if err != nil {
		if ctx.Err() != nil {
			return err
		}
		return c.modifyFailed(w, err)
	}
	if c.grown != nil {
		c.grown(w.ID, m.Resource, time.Since(start))
	}
	c.cfg.Log.Info("volume grown online", "workspace", w.ID, "volume", string(m.Resource), "sizeGib", m.SizeGib,
		"fsBytes", fsBytes, "blockResize", resized, "duration", time.Since(start))
	return c.set(w.ID, workspace.Updating, m.Return)
}

// growFS asks id's agent to grow volume's filesystem to fill its sizeGib disk.
func (c *Controller) growFS(ctx context.Context, id, volume string, sizeGib int) (uint64, error) {
	actx, cancel := context.WithTimeout(ctx, agent.GrowDiskWait+2*time.Minute)
	defer cancel()
	a, err := c.cfg.DialAgent(actx, c.AgentSocket(id))
	if err != nil {
		return 0, err
	}
	defer a.Close()
	g, ok := a.(growFSer)
	if !ok {
		return 0, errors.New("the agent client cannot grow filesystems")
	}
	fsBytes, _, err := g.GrowFS(actx, volume, uint64(sizeGib)<<30)
	return fsBytes, err
}

// modifyFailed retries a change until the provisioning deadline, then puts the WorkSpace in
// ERROR with the reason.
func (c *Controller) modifyFailed(w workspace.Workspace, err error) error {
	if c.cfg.Now().Sub(w.StateSince) < c.cfg.ProvisionTimeout {
		return err // retried at the next tick
	}
	return c.fail(w.ID, workspace.Updating, "ModifyStorageFailed", fmt.Errorf("the %s did not grow within %s: %w",
		w.Modification.Resource, c.cfg.ProvisionTimeout, err))
}

// growPendingFS grows the filesystems of volumes that grew while w's guest was off, once
// its agent answers (w AVAILABLE).
func (c *Controller) growPendingFS(ctx context.Context, w workspace.Workspace) error {
	for _, r := range w.GrowFS {
		_, vol := c.volumeOf(w.ID, r)
		size := w.Properties.UserVolumeSizeGib
		if r == workspace.ResourceRootVolume {
			size = w.Properties.RootVolumeSizeGib
		}
		fsBytes, err := c.growFS(ctx, w.ID, vol, size)
		if err != nil {
			return fmt.Errorf("grow the %s filesystem after the volume grew offline: %w", r, err)
		}
		c.cfg.Log.Info("filesystem grown after an offline volume growth", "workspace", w.ID, "volume", string(r), "fsBytes", fsBytes)
	}
	return c.transition(w.ID, w.State, func(r *workspace.Workspace) { r.GrowFS = nil })
}
