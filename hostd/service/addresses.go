package service

import (
	"errors"

	"deskhost/hostd/store"
	"deskhost/hostd/workspace"
	"deskhost/internal/catalog"
)

// allocateAddress gives WorkSpace id the lowest free address of the primary pool, inside
// tx (store.Addresses: one key per address, so concurrent allocations on a fleet's hosts
// conflict in the store and one of them runs again). An address whose holder is gone or
// TERMINATED is free: a crash between a WorkSpace's end and its address's release loses
// nothing. Without a pool (netcfg does not serve the primary network) it returns "".
func (s *Service) allocateAddress(tx store.Tx, id string) (string, error) {
	if s.cfg.PrimaryPool == nil {
		return "", nil
	}
	pool, ok := s.cfg.PrimaryPool()
	if !ok {
		return "", nil
	}
	for a := range pool.All() {
		key := a.String()
		holder, err := tx.Get(store.Addresses, key)
		if err == nil {
			w, err := store.GetJSON[workspace.Workspace](tx, store.Workspaces, string(holder))
			if err == nil && w.Live() && w.IPAddress == key {
				continue
			}
			if err != nil && !errors.Is(err, store.ErrNotFound) {
				return "", err
			}
		} else if !errors.Is(err, store.ErrNotFound) {
			return "", err
		}
		if err := tx.Put(store.Addresses, key, []byte(id)); err != nil {
			return "", err
		}
		return key, nil
	}
	// The guide: "Make sure that you have enough IP addresses".
	return "", catalog.Errorf(catalog.ResourceLimitExceeded, "the primary network's pool %s has no free address (%d WorkSpaces hold them all)", pool, pool.Size())
}
