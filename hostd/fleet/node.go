package fleet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"time"

	"deskhost/hostd/store"
)

// Config is this host's part in the fleet.
type Config struct {
	Store store.Store
	// Self is this host's record as the host knows itself (id, name, hardware id,
	// addresses, capacity, compute types, whether it is an etcd member). What others
	// decide (draining) and what it acquired (images) are kept from the stored record.
	Self Host
	// LeaseTTL is the life of this host's lease without a keepalive (DefaultLeaseTTL).
	LeaseTTL time.Duration
	// SweepInterval is how often hosts without an alive key are looked for, beside the
	// store's watch (default LeaseTTL/2).
	SweepInterval time.Duration
	Log           *slog.Logger
	Now           func() time.Time
}

// Node is this host in the fleet: its lease and record, and its watch on the others.
type Node struct {
	cfg    Config
	log    *slog.Logger
	lease  *lease
	cancel context.CancelFunc
	done   sync.WaitGroup

	mu        sync.Mutex
	seenAlive map[string]bool
}

// Join puts this host in the fleet: a lease and its alive key first (so that the
// controller's fenced writes can go through), then its record (marked up, not down), then
// the adoption of WorkSpaces without an owner when it is the only host. Then, until Close,
// it keeps the lease alive and marks down the hosts whose lease expires.
func Join(ctx context.Context, cfg Config) (*Node, error) {
	if err := checkHostID(cfg.Self.ID); err != nil {
		return nil, err
	}
	if cfg.LeaseTTL <= 0 {
		cfg.LeaseTTL = DefaultLeaseTTL
	}
	if cfg.SweepInterval <= 0 {
		cfg.SweepInterval = cfg.LeaseTTL / 2
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	n := &Node{cfg: cfg, log: cfg.Log, seenAlive: map[string]bool{}}
	n.lease = &lease{st: cfg.Store, host: cfg.Self.ID, ttl: cfg.LeaseTTL, log: cfg.Log, up: n.register}
	if err := n.lease.acquire(ctx); err != nil {
		return nil, err
	}
	if err := n.register(ctx); err != nil {
		return nil, err
	}
	if k, err := Adopt(cfg.Store, cfg.Self.ID); err != nil {
		return nil, fmt.Errorf("fleet: adopt WorkSpaces without an owner: %w", err)
	} else if k > 0 {
		n.log.Info("adopted WorkSpaces that had no owner: this host is the only one", "workspaces", k)
	}
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	n.cancel = cancel
	n.done.Add(2)
	go func() { defer n.done.Done(); n.lease.keep(rctx) }()
	go func() { defer n.done.Done(); n.monitor(rctx) }()
	return n, nil
}

// ID is this host's id.
func (n *Node) ID() string { return n.cfg.Self.ID }

// Store is the fleet's store.
func (n *Node) Store() store.Store { return n.cfg.Store }

// Live reports whether this host holds a lease now.
func (n *Node) Live() bool { return n.lease.live.Load() }

// register writes this host's record: what the host knows of itself, over what the fleet
// keeps (draining, images, when it joined), marked up. It goes through the fence: a host
// without a lease does not claim to be up.
func (n *Node) register(ctx context.Context) error {
	self := n.cfg.Self
	err := n.cfg.Store.Update(func(tx store.Tx) error {
		if err := Fence(tx, self.ID); err != nil {
			return err
		}
		h := self
		old, err := store.GetJSON[Host](tx, Hosts, self.ID)
		switch {
		case err == nil:
			h.Draining, h.Joined = old.Draining, old.Joined
			h.Images = maps.Clone(old.Images)
			if h.Images == nil {
				h.Images = map[string]string{}
			}
			maps.Copy(h.Images, self.Images)
		case errors.Is(err, store.ErrNotFound):
			h.Joined = n.cfg.Now()
		default:
			return err
		}
		if h.Joined.IsZero() {
			h.Joined = n.cfg.Now()
		}
		h.Down, h.DownSince, h.DownReason = false, time.Time{}, ""
		h.Started = n.cfg.Now()
		// The join request that made this host is done with.
		joins, err := store.ListJSON[JoinRequest](tx, Joins)
		if err != nil {
			return err
		}
		for _, j := range joins {
			if j.HostID == h.ID {
				if err := tx.Delete(Joins, j.Code); err != nil {
					return err
				}
			}
		}
		return store.PutJSON(tx, Hosts, h.ID, h)
	})
	if err != nil {
		return fmt.Errorf("fleet: register host %s: %w", self.ID, err)
	}
	return nil
}

// Close stops keeping the lease (it expires after its TTL unless the host is back by
// then: a restart within the TTL is not noticed) and the monitor.
func (n *Node) Close() {
	if n.cancel != nil {
		n.cancel()
	}
	n.done.Wait()
}

// Leave revokes this host's lease at once: the fleet marks it down now.
func (n *Node) Leave(ctx context.Context) error {
	n.Close()
	return n.lease.release(ctx)
}
