package controller

import (
	"errors"
	"fmt"
	"path/filepath"

	"deskhost/hostd/keystore"
	"deskhost/hostd/store"
	"deskhost/hostd/workspace"
)

// Encrypted volumes (guide catalog §8.1): a WorkSpace's encrypted volumes are qcow2 files
// with LUKS encryption, whose passphrase (the WorkSpace's data key, opened with its key
// from hostd's key store) libvirt holds as an ephemeral secret per volume (hostd/virt).
// Snapshots copy the files as they are, so they stay encrypted with the same passphrase,
// and a restore copies them back. A key that is disabled or gone opens no data key: the
// WorkSpace does not boot, and its record says why.

// keyError is a WorkSpace whose key cannot open its data key.
type keyError struct{ error }

func (e keyError) Unwrap() error { return e.error }

// KeyUnavailable is the error code of a WorkSpace that did not boot because of its key.
const KeyUnavailable = "EncryptionKeyUnavailable"

// passphrase opens w's data key.
func (c *Controller) passphrase(w workspace.Workspace) ([]byte, error) {
	if c.cfg.Keys == nil {
		return nil, keyError{fmt.Errorf("WorkSpace %s's volumes are encrypted, but this host has no key store", w.ID)}
	}
	var k keystore.Key
	err := c.cfg.Store.View(func(tx store.Tx) error {
		var err error
		k, err = store.GetJSON[keystore.Key](tx, store.Keys, w.Encryption.KeyID)
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil, keyError{fmt.Errorf("WorkSpace %s is encrypted with key %s, which is not in the key store: its volumes cannot be opened", w.ID, w.Encryption.KeyID)}
	}
	if err != nil {
		return nil, err
	}
	p, err := c.cfg.Keys.Passphrase(k, w.ID, w.Encryption.DataKey)
	var d *keystore.DisabledError
	if errors.As(err, &d) {
		return nil, keyError{fmt.Errorf("WorkSpace %s is encrypted with key %s, which is disabled: it does not start until the key is enabled (hostd keys enable %s)", w.ID, k.ID, k.ID)}
	}
	if err != nil {
		return nil, keyError{err}
	}
	return p, nil
}

// volumeSecrets defines the libvirt secrets of w's encrypted volumes (again: they are
// ephemeral) and returns their UUIDs ("" for a plain volume) and the passphrase.
func (c *Controller) volumeSecrets(w workspace.Workspace) (root, user string, pass []byte, err error) {
	if !w.Encrypted() {
		return "", "", nil, nil
	}
	if pass, err = c.passphrase(w); err != nil {
		return "", "", nil, err
	}
	paths := c.volumePaths(w.ID)
	if w.Encryption.Root {
		if root, err = c.cfg.Conn.DefineVolumeSecret(paths[0], pass); err != nil {
			return "", "", nil, err
		}
	}
	if w.Encryption.User {
		if user, err = c.cfg.Conn.DefineVolumeSecret(paths[1], pass); err != nil {
			return "", "", nil, err
		}
	}
	return root, user, pass, nil
}

// removeVolumeSecrets removes the secrets of id's volumes, if any.
func (c *Controller) removeVolumeSecrets(id string) error {
	var errs []error
	for _, p := range c.volumePaths(id) {
		errs = append(errs, c.cfg.Conn.UndefineVolumeSecret(filepath.Clean(p)))
	}
	return errors.Join(errs...)
}
