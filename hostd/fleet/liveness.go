package fleet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"deskhost/hostd/store"
	"deskhost/internal/catalog"
)

// DefaultLeaseTTL is how long a host's lease lives without a keepalive: a host that stops
// (power cut, kill -9, cut off from the quorum) is down this long after its last renewal
// (plus, when the etcd leader went with it, an election).
const DefaultLeaseTTL = 10 * time.Second

// FencedError is a write refused because this host has no live lease: its alive key is
// gone, so the fleet may have marked it down and its WorkSpaces UNHEALTHY; it writes
// nothing of theirs (and starts no VM) until it holds a lease again.
type FencedError struct{ Host string }

func (e *FencedError) Error() string {
	return fmt.Sprintf("host %s has no live lease in the fleet store (it expired, or was never granted): it changes none of its WorkSpaces until it holds one again", e.Host)
}

// As lets the API answer it as an unavailable service (HTTP 503).
func (e *FencedError) As(target any) bool {
	if p, ok := target.(**catalog.Error); ok {
		*p = catalog.Errorf(catalog.ServiceUnavailableException, "%s", e.Error())
		return true
	}
	return false
}

// IsFenced reports whether err is a FencedError.
func IsFenced(err error) bool {
	var f *FencedError
	return errors.As(err, &f)
}

// Fence checks, inside a store transaction, that host holds a live lease (its alive key is
// there). Inside an Update the read is also a guard: etcd commits the transaction only if
// the alive key is still the one read, so a lease that expires between the check and the
// commit makes the transaction run again, and then refuse. Every write a host makes to the
// WorkSpaces it owns goes through it (the controller's Fence).
func Fence(tx store.Tx, host string) error {
	_, err := tx.Get(Alive, host)
	if errors.Is(err, store.ErrNotFound) {
		return &FencedError{Host: host}
	}
	return err
}

// lease keeps this host's alive key: on etcd, attached to a lease kept alive while the
// host runs (granted again if it is lost); on bbolt, a plain key (a fleet of one: nobody
// else would see it expire).
type lease struct {
	st   store.Store
	host string
	ttl  time.Duration
	log  *slog.Logger
	// up is called each time a new lease is in place (the host registers again: it may
	// have been marked down while it had none).
	up   func(ctx context.Context) error
	live atomic.Bool
	id   atomic.Int64
}

// etcdStore is what liveness needs of the etcd store.
type etcdStore interface {
	Client() *clientv3.Client
	Prefix() string
}

// acquire puts the alive key, under a new lease on etcd.
func (l *lease) acquire(ctx context.Context) error {
	e, ok := l.st.(etcdStore)
	if !ok {
		err := l.st.Update(func(tx store.Tx) error {
			return tx.Put(Alive, l.host, []byte("local"))
		})
		if err != nil {
			return fmt.Errorf("fleet: alive key: %w", err)
		}
		l.live.Store(true)
		return nil
	}
	cctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), 5*time.Second)
	defer cancel()
	g, err := e.Client().Grant(cctx, int64((l.ttl+time.Second-1)/time.Second))
	if err != nil {
		return fmt.Errorf("fleet: grant this host's lease: %w", err)
	}
	key := e.Prefix() + Alive + "/" + l.host
	if _, err := e.Client().Put(cctx, key, strconv.FormatInt(int64(g.ID), 16), clientv3.WithLease(g.ID)); err != nil {
		return fmt.Errorf("fleet: put this host's alive key: %w", err)
	}
	l.id.Store(int64(g.ID))
	l.live.Store(true)
	return nil
}

// keep keeps the lease alive until ctx ends, granting a new one (and calling up) whenever
// it is lost.
func (l *lease) keep(ctx context.Context) {
	e, ok := l.st.(etcdStore)
	if !ok {
		<-ctx.Done()
		return
	}
	backoff := 250 * time.Millisecond
	for ctx.Err() == nil {
		if !l.live.Load() {
			if err := l.acquire(ctx); err != nil {
				l.log.Warn("no lease: this host changes none of its WorkSpaces until it has one", "err", err)
				select {
				case <-ctx.Done():
					return
				case <-time.After(backoff):
				}
				backoff = min(2*backoff, 2*time.Second)
				continue
			}
			l.log.Info("lease granted again: the host is back in the fleet", "lease", fmt.Sprintf("%x", l.id.Load()))
			if l.up != nil {
				if err := l.up(ctx); err != nil {
					l.log.Error("register again after a new lease", "err", err)
				}
			}
		}
		backoff = 250 * time.Millisecond
		ch, err := e.Client().KeepAlive(ctx, clientv3.LeaseID(l.id.Load()))
		if err != nil {
			l.live.Store(false)
			continue
		}
		for range ch {
		}
		if ctx.Err() != nil {
			return
		}
		// The channel closes when the lease expired, or could not be renewed within its
		// TTL (no quorum reachable): either way the fleet sees this host as gone.
		l.live.Store(false)
		l.log.Error("lease lost: the fleet may mark this host down; its WorkSpaces are fenced until a new lease is granted",
			"lease", fmt.Sprintf("%x", l.id.Load()))
	}
}

// release revokes the lease at once (a host leaving the fleet for good).
func (l *lease) release(ctx context.Context) error {
	e, ok := l.st.(etcdStore)
	if !ok {
		return l.st.Update(func(tx store.Tx) error { return tx.Delete(Alive, l.host) })
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err := e.Client().Revoke(cctx, clientv3.LeaseID(l.id.Load()))
	l.live.Store(false)
	return err
}
