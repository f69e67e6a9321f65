package controller

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"time"

	"deskhost/hostd/store"
	"deskhost/hostd/workspace"
)

// The controller is woken two ways, and both stay:
//
//   - Wake, called by the service right after it commits an operation in this process:
//     synchronous, no store round trip, the same with every store.
//   - The store's watch (follow): every committed change to a WorkSpace record, whoever
//     made it — another host's API or CLI once the store is the fleet's etcd. With bbolt,
//     this process is the only writer (the file is locked), so the watch only confirms
//     what Wake said; with etcd it is how a change made elsewhere reaches the owning host
//     without polling.
//
// A watched change wakes the worker (cancelling a reconcile in progress, as Wake does)
// only when it asks something new: a desired state (state, when it was entered, and
// properties) the controller has not itself read or written. The controller's own
// writes, and fields that ask nothing of it (connection reports), come back through the
// watch too and are let pass, so that a boot in progress is not restarted by its own
// progress report.

// desired is what of a record asks the controller to act.
type desired struct {
	state workspace.State
	since int64 // StateSince, in ns (a JSON round trip keeps them; == on time.Time would not)
	props workspace.Properties
}

func desiredOf(w workspace.Workspace) desired {
	return desired{w.State, w.StateSince.UnixNano(), w.Properties}
}

// knownPerWorkspace bounds the memory of desired states per WorkSpace: enough for the
// writes whose watched changes may still be on their way.
const knownPerWorkspace = 8

// remember notes a desired state the controller read or is writing.
func (c *Controller) remember(w workspace.Workspace) {
	d := desiredOf(w)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.rememberLocked(w.ID, d)
}

func (c *Controller) rememberLocked(id string, d desired) {
	k := c.known[id]
	if slices.Contains(k, d) {
		return
	}
	if len(k) >= knownPerWorkspace {
		k = slices.Delete(k, 0, 1)
	}
	c.known[id] = append(k, d)
}

// follow watches the WorkSpace records until ctx ends, waking workers for changes that ask
// something new. A watch that ends (its history compacted away) is started again from now
// after a sweep, which re-reads everything.
func (c *Controller) follow(ctx context.Context, w store.Watcher) {
	var from int64
	for ctx.Err() == nil {
		for ev := range w.Watch(ctx, store.Workspaces, "", from) {
			if ev.Err != nil {
				if errors.Is(ev.Err, store.ErrClosed) {
					return
				}
				c.cfg.Log.Warn("store watch ended; re-reading every WorkSpace", "err", ev.Err)
				from = 0
				if err := c.Sweep(); err != nil {
					c.cfg.Log.Error("sweep", "err", err)
				}
				break
			}
			from = ev.Revision
			c.changed(ev)
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// changed handles one watched change to a WorkSpace record.
func (c *Controller) changed(ev store.Event) {
	id := ev.Key
	if ev.Deleted {
		c.mu.Lock()
		delete(c.known, id)
		c.mu.Unlock()
		c.Poke(id) // the worker finds no record and removes what is left
		return
	}
	var w workspace.Workspace
	if err := json.Unmarshal(ev.Value, &w); err != nil || w.ID != id {
		c.cfg.Log.Error("watched WorkSpace record unreadable", "workspace", id, "err", err)
		return
	}
	d := desiredOf(w)
	c.mu.Lock()
	mine := slices.Contains(c.known[id], d)
	if !mine {
		c.rememberLocked(id, d)
	}
	c.mu.Unlock()
	if mine {
		return
	}
	c.cfg.Log.Debug("desired state changed", "workspace", id, "state", string(w.State), "revision", ev.Revision)
	c.Wake(id)
}
