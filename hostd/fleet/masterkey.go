package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"time"

	"deskhost/hostd/keystore"
	"deskhost/hostd/store"
)

// One key store master key per fleet (hostd/keystore): a key made through one host's API
// seals the data key of a WorkSpace another host owns and must open. The store keeps the
// master key's check value only (keyMasterCheck in Secrets), never the key: the store
// also holds the keys it seals, and the two together would open every volume. The key
// itself travels host to host over the fleet port, to a host of this fleet only.

// keyMasterCheck is, in Secrets, the check value of the fleet's master key.
const keyMasterCheck = "keystoreMasterCheck"

// masterPath is where a peer serves the fleet's master key (peers only).
const masterPath = "/fleet/v1/keystore/master"

// masterWire is the master key between hosts.
type masterWire struct {
	Key string `json:"key"` // hex, as its file holds it
}

// MasterKey finds this host's key store master key: the fleet's.
type MasterKey struct {
	Store store.Store
	Self  string
	// Path is the master key file (keystore.MasterFile under the data dir).
	Path string
	// Peers fetch the fleet's master key from another host. Nil: this host has no fleet
	// port (a single host, or a hand-configured etcd store).
	Peers *Peers
	Log   *slog.Logger
	// Attempts and Backoff pace the fetch from peers: peers may be starting too.
	// Defaults: 6 attempts, 1 s doubling (31 s in all).
	Attempts int
	Backoff  time.Duration
	Now      func() time.Time
}

// Resolve returns the fleet's master key:
//   - the store has no check value yet (a new fleet, or one from before there was one):
//     this host's, made if it has none, becomes the fleet's, unless another host claims
//     it first;
//   - this host's matches the check value: it is the fleet's;
//   - this host has none, or another: the fleet's is fetched from a live peer, checked,
//     and written in its place (the other kept beside it). No peer gives it: an error,
//     since a key store under a master key of its own seals keys no other host opens.
//
// A host without peers (Peers nil) whose master key is not the fleet's keeps it, as
// before there was a check value, and says so in the log.
func (c MasterKey) Resolve(ctx context.Context) (*keystore.Master, error) {
	if c.Now == nil {
		c.Now = time.Now
	}
	local, err := keystore.LoadMaster(c.Path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	check, err := c.claim(&local)
	if err != nil {
		return nil, err
	}
	if local != nil && local.Matches(check) {
		return local, nil
	}
	if c.Peers == nil {
		if local == nil {
			if local, err = keystore.LoadOrCreateMaster(c.Path); err != nil {
				return nil, err
			}
		}
		c.Log.Error("the key store master key is not the fleet's: keys made on other hosts do not open here; copy the master key file from a host of the fleet",
			"path", c.Path, "host", c.Self)
		return local, nil
	}
	m, from, err := c.fetch(ctx, check)
	if err != nil {
		return nil, err
	}
	old, err := keystore.ReplaceMaster(c.Path, m, c.Now())
	if err != nil {
		return nil, err
	}
	if old != "" {
		c.Log.Warn("the key store master key was not the fleet's: replaced by the fleet's, the old one kept beside it (keys sealed with it open nowhere else)",
			"path", c.Path, "replaced", old, "from", from)
	} else {
		c.Log.Info("the fleet's key store master key fetched from a peer", "path", c.Path, "from", from)
	}
	return m, nil
}

// claim reads the fleet's check value. If there is none, this host's master key (made
// now if *local is nil) becomes the fleet's: its check value is written unless another
// host's was written first (the transaction reads it, so a concurrent claim makes it run
// again and find that one).
func (c MasterKey) claim(local **keystore.Master) ([]byte, error) {
	var check []byte
	err := c.Store.View(func(tx store.Tx) error {
		var err error
		check, err = tx.Get(Secrets, keyMasterCheck)
		return err
	})
	if err == nil {
		return check, nil
	}
	if !errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("key store master key: read the fleet's check value: %w", err)
	}
	if *local == nil {
		// Written before it is claimed: a check value in the store must always name a
		// master key some host holds.
		m, err := keystore.LoadOrCreateMaster(c.Path)
		if err != nil {
			return nil, err
		}
		*local = m
	}
	mine := (*local).CheckValue()
	claimed := false
	err = c.Store.Update(func(tx store.Tx) error {
		claimed = false
		b, err := tx.Get(Secrets, keyMasterCheck)
		if err == nil {
			check = b
			return nil
		}
		if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		check, claimed = mine, true
		return tx.Put(Secrets, keyMasterCheck, mine)
	})
	if err != nil {
		return nil, fmt.Errorf("key store master key: write the fleet's check value: %w", err)
	}
	if claimed {
		c.Log.Info("this host's key store master key is the fleet's", "path", c.Path, "host", c.Self)
	}
	return check, nil
}

// fetch gets the fleet's master key from a live peer, retrying with backoff.
func (c MasterKey) fetch(ctx context.Context, check []byte) (*keystore.Master, string, error) {
	attempts, wait := c.Attempts, c.Backoff
	if attempts <= 0 {
		attempts = 6
	}
	if wait <= 0 {
		wait = time.Second
	}
	var last error
	for i := 0; i < attempts; i++ {
		if i > 0 {
			c.Log.Warn("no peer gave the fleet's key store master key; trying again", "attempt", i, "retry_in", wait, "err", last)
			select {
			case <-ctx.Done():
				return nil, "", ctx.Err()
			case <-time.After(wait):
			}
			wait *= 2
		}
		m, from, err := c.fetchOnce(ctx, check)
		if err == nil {
			return m, from, nil
		}
		last = err
	}
	return nil, "", fmt.Errorf("key store master key: this host does not hold the fleet's, and no live host of the fleet gave it after %d attempts "+
		"(a key store with a master key of its own would seal keys no other host opens): %w", attempts, last)
}

func (c MasterKey) fetchOnce(ctx context.Context, check []byte) (*keystore.Master, string, error) {
	peers, err := livePeers(c.Store, c.Self, func(h Host) bool { return h.Addresses.Fleet != "" })
	if err != nil {
		return nil, "", err
	}
	if len(peers) == 0 {
		return nil, "", errors.New("no other host of the fleet is alive")
	}
	var errs []error
	for _, p := range peers {
		m, err := c.Peers.Master(ctx, p)
		if err == nil && !m.Matches(check) {
			err = fmt.Errorf("host %s: its master key is not the one the fleet's check value names", p)
		}
		if err == nil {
			return m, p, nil
		}
		errs = append(errs, err)
	}
	return nil, "", errors.Join(errs...)
}

// Master asks host id for its key store master key.
func (p *Peers) Master(ctx context.Context, id string) (*keystore.Master, error) {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := p.do(cctx, id, http.MethodGet, masterPath, nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var in masterWire
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxBody)).Decode(&in); err != nil {
		return nil, fmt.Errorf("host %s's master key: %w", id, err)
	}
	m, err := keystore.ParseMaster(in.Key)
	if err != nil {
		return nil, fmt.Errorf("host %s's master key: %w", id, err)
	}
	return m, nil
}

// master serves this host's master key to a peer (peers only: mutual TLS, a host of the
// fleet), once this host has the fleet's.
func (s *Server) master(w http.ResponseWriter, r *http.Request, from string) {
	m := s.Master
	if m == nil {
		httpError(w, http.StatusServiceUnavailable, "this host has no key store master key yet")
		return
	}
	s.Log.Info("key store master key served to a peer", "peer", from, "remote", r.RemoteAddr)
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, masterWire{Key: m.Hex()})
}
