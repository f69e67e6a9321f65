package service

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"deskhost/hostd/keystore"
	"deskhost/hostd/store"
	"deskhost/hostd/workspace"
	"deskhost/internal/catalog"
)

// Volume encryption (guide catalog §8.1): CreateWorkspaces' RootVolumeEncryptionEnabled,
// UserVolumeEncryptionEnabled and VolumeEncryptionKey, the key store's operations, and the
// key checks on start, reboot, rebuild and restore. VolumeEncryptionKey names a key of
// hostd's key store (hostd/keystore) by id, alias/NAME, or either as a KMS ARN.

// encryption checks a launch's encryption request inside its transaction and returns what
// the WorkSpace record keeps: the key and a fresh data key sealed with it.
func (s *Service) encryption(tx store.Tx, r CreateRequest, id string) (workspace.Encryption, error) {
	var e workspace.Encryption
	if !r.RootVolumeEncryptionEnabled && !r.UserVolumeEncryptionEnabled {
		if r.VolumeEncryptionKey != "" {
			return e, catalog.Errorf(catalog.InvalidParameterValues, "VolumeEncryptionKey is given but neither RootVolumeEncryptionEnabled nor UserVolumeEncryptionEnabled is true")
		}
		return e, nil
	}
	if r.VolumeEncryptionKey == "" {
		return e, catalog.Errorf(catalog.InvalidParameterValues, "volume encryption needs VolumeEncryptionKey: a key of this host's key store (id, alias/NAME or ARN; `hostd keys`)")
	}
	if s.cfg.Keys == nil {
		return e, catalog.Errorf(catalog.UnsupportedWorkspaceConfig, "this host has no key store, so it cannot encrypt volumes")
	}
	k, err := keystore.Resolve(tx, r.VolumeEncryptionKey)
	if errors.Is(err, keystore.ErrNotFound) {
		return e, catalog.Errorf(catalog.ResourceNotFound, "%s (%v)", keystore.NotAvailable, err)
	}
	if err != nil {
		return e, err
	}
	if !k.Enabled {
		return e, catalog.Errorf(catalog.ResourceUnavailable, "%s (key %s is disabled)", keystore.NotAvailable, k.ID)
	}
	all, err := store.ListJSON[workspace.Workspace](tx, store.Workspaces)
	if err != nil {
		return e, err
	}
	n := 0
	for _, o := range all {
		if o.Live() && o.Encrypted() && o.Encryption.KeyID == k.ID {
			n++
		}
	}
	if limit := s.keyLimit(); n >= limit {
		return e, catalog.Errorf(catalog.ResourceLimitExceeded, "%s (key %s already encrypts %d WorkSpaces, its limit; create a key for every %d WorkSpaces)", keystore.NotAvailable, k.ID, n, limit)
	}
	sealed, err := s.cfg.Keys.NewDataKey(k, id)
	if err != nil {
		return e, fmt.Errorf("data key for %s: %w", id, err)
	}
	return workspace.Encryption{Root: r.RootVolumeEncryptionEnabled, User: r.UserVolumeEncryptionEnabled,
		KeyID: k.ID, KeyRef: r.VolumeEncryptionKey, DataKey: sealed}, nil
}

func (s *Service) keyLimit() int {
	if s.cfg.KeyWorkspaceLimit > 0 {
		return s.cfg.KeyWorkspaceLimit
	}
	return keystore.MaxWorkspacesPerKey
}

// checkKey refuses op on an encrypted WorkSpace whose key is missing or disabled (guide
// §8.1: "To reboot or rebuild an encrypted WorkSpace, first make sure that the AWS KMS CMK
// is enabled; otherwise, the WorkSpace becomes unusable"). Nothing is changed.
func checkKey(tx store.Tx, w *workspace.Workspace, op workspace.Op) error {
	if !w.Encrypted() {
		return nil
	}
	k, err := store.GetJSON[keystore.Key](tx, store.Keys, w.Encryption.KeyID)
	if errors.Is(err, store.ErrNotFound) {
		return catalog.Errorf(catalog.ResourceNotFound, "%s WorkSpace %s is encrypted with key %s, which is not in this host's key store; %s is refused",
			keystore.NotAvailable, w.ID, w.Encryption.KeyID, op)
	}
	if err != nil {
		return err
	}
	if !k.Enabled {
		return catalog.Errorf(catalog.ResourceUnavailable, "WorkSpace %s is encrypted with key %s, which is disabled; %s is refused. %s Enable it: hostd keys enable %s",
			w.ID, k.ID, op, keystore.MustBeEnabled, k.ID)
	}
	return nil
}

// CheckImageSource refuses to make an image from w (CreateWorkspaceImage): "Creating a
// custom image from an encrypted WorkSpace is not supported" (guide §8.1).
func CheckImageSource(w workspace.Workspace) error {
	if w.Encrypted() {
		return catalog.Errorf(catalog.OperationNotSupported, "Creating a custom image from an encrypted WorkSpace is not supported: WorkSpace %s's %s encrypted",
			w.ID, encryptedVolumes(w))
	}
	return nil
}

func encryptedVolumes(w workspace.Workspace) string {
	var v []string
	if w.Encryption.Root {
		v = append(v, "root volume")
	}
	if w.Encryption.User {
		v = append(v, "user volume")
	}
	if len(v) == 2 {
		return "root and user volumes are"
	}
	return strings.Join(v, "") + " is"
}

// KeyInfo is a key as the key store's operations describe it: never its material.
type KeyInfo struct {
	ID, ARN, Alias, Description string
	Enabled                     bool
	Created                     int64 // Unix seconds
	Workspaces                  int   // live WorkSpaces it encrypts
	Limit                       int
}

// CreateKey makes a new enabled key with fresh random material.
func (s *Service) CreateKey(ctx context.Context, alias, description string) (KeyInfo, error) {
	if s.cfg.Keys == nil {
		return KeyInfo{}, catalog.Errorf(catalog.UnsupportedWorkspaceConfig, "this host has no key store")
	}
	k, err := s.cfg.Keys.NewKey(alias, description, s.now())
	if err != nil {
		return KeyInfo{}, err
	}
	if err := s.store.Update(func(tx store.Tx) error { return keystore.Put(tx, k) }); err != nil {
		return KeyInfo{}, err
	}
	s.log.Info("encryption key created", "key", k.ID, "alias", k.Alias)
	return s.keyInfo(k, 0), nil
}

func (s *Service) keyInfo(k keystore.Key, n int) KeyInfo {
	return KeyInfo{ID: k.ID, ARN: k.ARN(s.region()), Alias: k.Alias, Description: k.Description, Enabled: k.Enabled,
		Created: k.Created.Unix(), Workspaces: n, Limit: s.keyLimit()}
}

func (s *Service) region() string {
	if s.cfg.Region != "" {
		return s.cfg.Region
	}
	return "local"
}

// DescribeKeys lists the keys (ref "" ) or the one ref names, with the WorkSpaces each
// encrypts.
func (s *Service) DescribeKeys(ctx context.Context, ref string) ([]KeyInfo, error) {
	var out []KeyInfo
	err := s.store.View(func(tx store.Tx) error {
		out = nil
		var keys []keystore.Key
		if ref != "" {
			k, err := keystore.Resolve(tx, ref)
			if errors.Is(err, keystore.ErrNotFound) {
				return catalog.Errorf(catalog.ResourceNotFound, "%v", err)
			}
			if err != nil {
				return err
			}
			keys = []keystore.Key{k}
		} else {
			var err error
			if keys, err = keystore.List(tx); err != nil {
				return err
			}
		}
		all, err := store.ListJSON[workspace.Workspace](tx, store.Workspaces)
		if err != nil {
			return err
		}
		uses := map[string]int{}
		for _, w := range all {
			if w.Live() && w.Encrypted() {
				uses[w.Encryption.KeyID]++
			}
		}
		for _, k := range keys {
			out = append(out, s.keyInfo(k, uses[k.ID]))
		}
		return nil
	})
	return out, err
}

// SetKeyEnabled enables or disables a key. A disabled key encrypts no new WorkSpace, and
// the WorkSpaces it encrypts do not start, reboot, rebuild or restore until it is enabled.
func (s *Service) SetKeyEnabled(ctx context.Context, ref string, enabled bool) (KeyInfo, error) {
	var info KeyInfo
	err := s.store.Update(func(tx store.Tx) error {
		k, err := keystore.Resolve(tx, ref)
		if errors.Is(err, keystore.ErrNotFound) {
			return catalog.Errorf(catalog.ResourceNotFound, "%v", err)
		}
		if err != nil {
			return err
		}
		k.Enabled = enabled
		info = s.keyInfo(k, 0)
		return keystore.Put(tx, k)
	})
	if err != nil {
		return KeyInfo{}, err
	}
	s.log.Info("encryption key state", "key", info.ID, "enabled", enabled)
	return info, nil
}
