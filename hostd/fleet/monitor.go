package fleet

import (
	"context"
	"errors"
	"fmt"
	"time"

	"deskhost/hostd/store"
	"deskhost/hostd/workspace"
)

// MarkDown marks host id down, with its AVAILABLE WorkSpaces UNHEALTHY, in one transaction,
// if its alive key is gone and it is not marked yet. Any surviving host may call it, and
// several may at once: the transaction reads the host record, its alive key and the
// WorkSpaces, so of concurrent callers one commits and the others find it done (or the
// host back) when they run again. It returns the WorkSpaces it marked.
//
// Only AVAILABLE WorkSpaces change: nobody answers their health checks any more, which is
// what UNHEALTHY says. Others keep their state (a boot or a stop in progress is still owed
// by the owner, who finishes it when it returns); the owner's health checks bring them
// all back once it is back.
func MarkDown(st store.Store, id string, now time.Time) ([]string, error) {
	var marked []string
	err := st.Update(func(tx store.Tx) error {
		marked = nil
		h, err := GetHost(tx, id)
		if err != nil || h.Down {
			return err
		}
		if _, err := tx.Get(Alive, id); err == nil {
			return nil // back, or never gone
		} else if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		all, err := store.ListJSON[workspace.Workspace](tx, store.Workspaces)
		if err != nil {
			return err
		}
		reason := fmt.Sprintf("host %s (%s) is down: its lease in the fleet store expired", h.ID, h.Name)
		for _, w := range all {
			if w.Host != id || w.State != workspace.Available {
				continue
			}
			w.SetState(workspace.Unhealthy, now)
			w.ErrorMessage = reason
			if err := store.PutJSON(tx, store.Workspaces, w.ID, w); err != nil {
				return err
			}
			marked = append(marked, w.ID)
		}
		h.Down, h.DownSince, h.DownReason = true, now, "its lease expired"
		return store.PutJSON(tx, Hosts, id, h)
	})
	return marked, err
}

// monitor marks down every other host whose alive key is gone: at once when the store's
// watch reports the key's deletion (the lease expired), and on every sweep (a watch
// interrupted, a host that never came back after the whole fleet restarted).
func (n *Node) monitor(ctx context.Context) {
	wake := make(chan struct{}, 1)
	if w, ok := n.cfg.Store.(store.Watcher); ok {
		go func() {
			for ctx.Err() == nil {
				for ev := range w.Watch(ctx, Alive, "", 0) {
					if ev.Err != nil {
						break
					}
					if ev.Deleted {
						select {
						case wake <- struct{}{}:
						default:
						}
					}
				}
				select {
				case <-ctx.Done():
				case <-time.After(time.Second):
				}
			}
		}()
	}
	started := n.cfg.Now()
	t := time.NewTicker(n.cfg.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-wake:
		case <-t.C:
		}
		// Hosts get a lease's time after this host starts to register before they count
		// as gone: after a whole fleet restarts, they come up in any order.
		n.sweep(n.cfg.Now().Sub(started) >= n.cfg.LeaseTTL)
	}
}

// sweep marks down the hosts without an alive key; with all, also those never seen alive
// since this host started.
func (n *Node) sweep(all bool) {
	var hosts []Host
	var alive map[string]bool
	err := n.cfg.Store.View(func(tx store.Tx) error {
		var err error
		if hosts, err = ListHosts(tx); err != nil {
			return err
		}
		alive, err = AliveSet(tx)
		return err
	})
	if err != nil {
		n.log.Warn("fleet sweep: read the hosts", "err", err)
		return
	}
	for _, h := range hosts {
		if h.ID == n.cfg.Self.ID || h.Down || alive[h.ID] {
			continue
		}
		if !all && !n.wasAlive(h.ID) {
			continue
		}
		marked, err := MarkDown(n.cfg.Store, h.ID, n.cfg.Now())
		if err != nil {
			n.log.Error("mark a host down", "host", h.ID, "err", err)
			continue
		}
		n.log.Warn("host down: its lease expired", "host", h.ID, "name", h.Name, "unhealthy", len(marked))
	}
	n.mu.Lock()
	for id := range alive {
		n.seenAlive[id] = true
	}
	n.mu.Unlock()
}

func (n *Node) wasAlive(id string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.seenAlive[id]
}
