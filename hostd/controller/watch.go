package controller

import (
	"context"
	"encoding/json"
	"errors"
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
// only when it asks something new. Per WorkSpace the controller keeps the desired state
// (state, when it was entered, properties) it last read or wrote, and the store revision
// it last read at. A change at or below that revision was already in what it read; a
// change whose desired state is the one it holds asks nothing (its own write coming back,
// or a field such as a connection report): so a boot in progress is not restarted by its
// own progress report, and a change back to an earlier state is still a change.

// desired is what of a record asks the controller to act.
type desired struct {
	state workspace.State
	since int64 // StateSince, in ns (a JSON round trip keeps them; == on time.Time would not)
	props workspace.Properties
}

func desiredOf(w workspace.Workspace) desired {
	return desired{w.State, w.StateSince.UnixNano(), w.Properties}
}

// seen is what the controller last knew of a WorkSpace's record.
type seen struct {
	rev int64 // the store revision it last read the record at, or last watched a change at
	d   desired
}

// revisioned is a transaction that tells the revision of its snapshot (both stores' do).
type revisioned interface{ Revision() int64 }

// remember notes the desired state the controller read in tx, or is writing (tx nil: a
// write's revision is not known before it commits).
func (c *Controller) remember(tx store.Tx, w workspace.Workspace) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.seen[w.ID]
	if r, ok := tx.(revisioned); ok && tx != nil && r.Revision() > s.rev {
		s.rev = r.Revision()
	}
	s.d = desiredOf(w)
	c.seen[w.ID] = s
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
		delete(c.seen, id)
		c.mu.Unlock()
		c.Poke(id) // the worker finds no record and removes what is left
		return
	}
	var w workspace.Workspace
	if err := json.Unmarshal(ev.Value, &w); err != nil || w.ID != id {
		c.cfg.Log.Error("watched WorkSpace record unreadable", "workspace", id, "err", err)
		return
	}
	if !c.mine(w) {
		// Every host sees every WorkSpace's changes (records are keyed by id, not by
		// owner): another host's are not this one's to act on. One it knew as its own
		// is poked, to remove what is left of it here.
		c.mu.Lock()
		_, known := c.seen[id]
		delete(c.seen, id)
		c.mu.Unlock()
		if known {
			c.Poke(id)
		}
		return
	}
	d := desiredOf(w)
	c.mu.Lock()
	s, known := c.seen[id]
	news := ev.Revision > s.rev && d != s.d
	if ev.Revision > s.rev {
		s.rev, s.d = ev.Revision, d
		c.seen[id] = s
	}
	c.mu.Unlock()
	if !news {
		return
	}
	c.cfg.Log.Debug("desired state changed", "workspace", id, "state", string(w.State), "revision", ev.Revision)
	if !known {
		// A record the controller has not read yet (new, or its worker about to load it):
		// nothing in progress asks to be cancelled.
		c.Poke(id)
		return
	}
	c.Wake(id)
}
