// Package keystore is hostd's key store: the keys that encrypt WorkSpace volumes (what AWS
// keeps in KMS as customer master keys). A key is a record in hostd's store (bucket
// store.Keys) holding 256 random bits sealed with the host's master key; only the sealed
// form is ever stored. Keys are enabled or disabled, never deleted while a WorkSpace uses
// them, and each serves at most MaxWorkspacesPerKey WorkSpaces (guide catalog §8.1).
//
// Volumes are encrypted by envelope, as WorkSpaces does with KMS: each WorkSpace gets a
// data key of its own (the LUKS passphrase of its volumes), sealed with its key's material
// and kept in its record. Opening a data key needs the master key, the key record and the
// key to be enabled: a disabled key leaves the WorkSpace's volumes unreadable, so it does
// not start.
//
// Where the master key lives: a 0600 file owned by root under hostd's data dir (/perm on
// the appliance), made at first start. The store (a bbolt file, or the fleet's etcd) holds
// no key in the clear, so a copy of it, a backup or an etcd snapshot, opens no volume.
// A fleet has one master key, on every host, since a key made through one host's API
// seals data keys that the WorkSpace's owner, another host, must open. The store keeps
// only its check value (CheckValue: an HMAC of a fixed label under it), by which a host
// tells whether the master it holds is the fleet's; a host that holds none, or another,
// fetches the fleet's from a peer over the fleet port (mutual TLS under the fleet CA) and
// checks it before keeping it (hostd/fleet does this).
package keystore

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"deskhost/hostd/store"
	"deskhost/internal/catalog"
	"deskhost/internal/secretfile"
)

// MaxWorkspacesPerKey is the guide's limit: "There is a limit of 500 WorkSpaces per CMK".
const MaxWorkspacesPerKey = 500

// NotAvailable is the guide's message for a key that cannot encrypt another WorkSpace.
const NotAvailable = "The specified key is not available. Please provide a valid key for encryption."

// MustBeEnabled is the guide's warning for an encrypted WorkSpace whose key is disabled.
const MustBeEnabled = "To reboot or rebuild an encrypted WorkSpace, first make sure that the key is enabled; otherwise, the WorkSpace becomes unusable."

// Key is one key of the store.
type Key struct {
	ID          string    `json:"id"`              // a UUID, as KMS key ids are
	Alias       string    `json:"alias,omitempty"` // "alias/NAME"
	Description string    `json:"description,omitempty"`
	Enabled     bool      `json:"enabled"`
	Created     time.Time `json:"created"`
	// Sealed is the key's 256-bit material sealed with the master key (AES-256-GCM, the
	// key id as additional data).
	Sealed []byte `json:"sealed"`
}

// ARN is the key's ARN in KMS's form, for administrators' scripts that pass ARNs.
func (k Key) ARN(region string) string { return "arn:aws:kms:" + region + ":000000000000:key/" + k.ID }

// Master is the master key, which seals the keys' material.
type Master struct {
	key  []byte
	aead cipher.AEAD
}

// MasterFile is where, under hostd's data dir, the master key is kept.
const MasterFile = "keystore/master.key"

// LoadOrCreateMaster reads the master key from path (hex, a 0600 root file), making a new
// random one there first if there is none.
func LoadOrCreateMaster(path string) (*Master, error) {
	m, err := LoadMaster(path)
	if errors.Is(err, os.ErrNotExist) {
		if m, err = GenerateMaster(); err != nil {
			return nil, err
		}
		if err := WriteMaster(path, m); err != nil {
			return nil, err
		}
		return m, nil
	}
	return m, err
}

// LoadMaster reads the master key from path; an error that is os.ErrNotExist if there
// is none.
func LoadMaster(path string) (*Master, error) {
	s, err := secretfile.Read(path)
	if err != nil {
		return nil, fmt.Errorf("master key: %w", err)
	}
	m, err := ParseMaster(s)
	if err != nil {
		return nil, fmt.Errorf("master key %s: %w", path, err)
	}
	return m, nil
}

// GenerateMaster makes a new random master key.
func GenerateMaster() (*Master, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("master key: %w", err)
	}
	return NewMaster(b)
}

// WriteMaster writes m to path (0600, in a 0700 directory), replacing the file whole.
func WriteMaster(path string, m *Master) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("master key: %w", err)
	}
	if err := secretfile.Write(path, m.Hex()); err != nil {
		return fmt.Errorf("master key: %w", err)
	}
	return nil
}

// ReplaceMaster writes m to path, keeping a master key that was there beside it as
// path.replaced-<unix time> (keys sealed with it open with nothing else). It returns
// where the old one went, "" if there was none.
func ReplaceMaster(path string, m *Master, now time.Time) (string, error) {
	old := ""
	if _, err := os.Lstat(path); err == nil {
		old = fmt.Sprintf("%s.replaced-%d", path, now.Unix())
		if err := os.Rename(path, old); err != nil {
			return "", fmt.Errorf("master key: keep the replaced one: %w", err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("master key: %w", err)
	}
	return old, WriteMaster(path, m)
}

// NewMaster makes a Master from 32 bytes of key.
func NewMaster(key []byte) (*Master, error) {
	a, err := newAEAD(key)
	if err != nil {
		return nil, fmt.Errorf("master key: %w", err)
	}
	return &Master{key: slices.Clone(key), aead: a}, nil
}

// ParseMaster reads a master key written as Hex writes it.
func ParseMaster(s string) (*Master, error) {
	b, err := hex.DecodeString(strings.TrimSpace(s))
	if err != nil || len(b) != 32 {
		return nil, errors.New("not 64 hex digits")
	}
	return NewMaster(b)
}

// Hex is the master key written out (what its file holds, and what a fleet host hands a
// peer that lacks it). It is the secret itself.
func (m *Master) Hex() string { return hex.EncodeToString(m.key) }

// checkLabel is what CheckValue authenticates; a new label would be a new kind of check.
const checkLabel = "deskhost keystore master key check v1"

// CheckValue identifies the master key without revealing it: HMAC-SHA256 of a fixed label
// under the key. Two hosts whose check values are equal hold the same master key; the
// value tells nothing of the key to whoever reads the store.
func (m *Master) CheckValue() []byte {
	h := hmac.New(sha256.New, m.key)
	h.Write([]byte(checkLabel))
	return h.Sum(nil)
}

// Matches reports whether check is m's check value (in constant time).
func (m *Master) Matches(check []byte) bool { return hmac.Equal(m.CheckValue(), check) }

func newAEAD(key []byte) (cipher.AEAD, error) {
	if len(key) != 32 {
		return nil, fmt.Errorf("a key is 32 bytes, not %d", len(key))
	}
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

func seal(a cipher.AEAD, plain []byte, ad string) ([]byte, error) {
	nonce := make([]byte, a.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return a.Seal(nonce, nonce, plain, []byte(ad)), nil
}

func open(a cipher.AEAD, sealed []byte, ad string) ([]byte, error) {
	n := a.NonceSize()
	if len(sealed) < n+a.Overhead() {
		return nil, errors.New("sealed data is too short")
	}
	return a.Open(nil, sealed[:n], sealed[n:], []byte(ad))
}

// aliasRE is KMS's alias name rule ("alias/" then letters, digits, /_-); "alias/aws/" is
// reserved for AWS's own keys.
var aliasRE = regexp.MustCompile(`^alias/[a-zA-Z0-9/_-]{1,250}$`)

// NewKey makes an enabled key with fresh material. alias may be "" or "alias/NAME" (or
// NAME, to which "alias/" is added).
func (m *Master) NewKey(alias, description string, now time.Time) (Key, error) {
	if alias != "" && !strings.HasPrefix(alias, "alias/") {
		alias = "alias/" + alias
	}
	if alias != "" && !aliasRE.MatchString(alias) {
		return Key{}, catalog.Errorf(catalog.InvalidParameterValues, "alias %q: an alias is alias/ and 1 to 250 letters, digits, /, _ or -", alias)
	}
	if strings.HasPrefix(alias, "alias/aws/") {
		return Key{}, catalog.Errorf(catalog.InvalidParameterValues, "alias %q: alias/aws/ is reserved", alias)
	}
	if len(description) > 8192 {
		return Key{}, catalog.Errorf(catalog.InvalidParameterValues, "description: at most 8192 characters")
	}
	material := make([]byte, 32)
	if _, err := rand.Read(material); err != nil {
		return Key{}, err
	}
	k := Key{ID: newUUID(), Alias: alias, Description: description, Enabled: true, Created: now.UTC()}
	var err error
	if k.Sealed, err = seal(m.aead, material, k.ID); err != nil {
		return Key{}, err
	}
	return k, nil
}

func newUUID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// material returns k's key material.
func (m *Master) material(k Key) (cipher.AEAD, error) {
	b, err := open(m.aead, k.Sealed, k.ID)
	if err != nil {
		return nil, fmt.Errorf("key %s: its material does not open with this host's master key (not the one it was sealed with): %w", k.ID, err)
	}
	return newAEAD(b)
}

// NewDataKey makes a data key for WorkSpace id under k (which must be enabled) and
// returns it sealed with k.
func (m *Master) NewDataKey(k Key, id string) ([]byte, error) {
	if !k.Enabled {
		return nil, &DisabledError{Key: k.ID}
	}
	a, err := m.material(k)
	if err != nil {
		return nil, err
	}
	dk := make([]byte, 32)
	if _, err := rand.Read(dk); err != nil {
		return nil, err
	}
	return seal(a, dk, id)
}

// Passphrase opens WorkSpace id's data key sealed with k: the LUKS passphrase of its
// volumes (hex, so that it passes through every tool unchanged). k must be enabled.
func (m *Master) Passphrase(k Key, id string, sealed []byte) ([]byte, error) {
	if !k.Enabled {
		return nil, &DisabledError{Key: k.ID}
	}
	a, err := m.material(k)
	if err != nil {
		return nil, err
	}
	dk, err := open(a, sealed, id)
	if err != nil {
		return nil, fmt.Errorf("WorkSpace %s's data key does not open with key %s: %w", id, k.ID, err)
	}
	return []byte(hex.EncodeToString(dk)), nil
}

// Rewrap reseals WorkSpace from's data key for WorkSpace to (a migration gives a
// WorkSpace a new id and carries its user volume, so its passphrase goes with it). k must
// be enabled.
func (m *Master) Rewrap(k Key, from, to string, sealed []byte) ([]byte, error) {
	if !k.Enabled {
		return nil, &DisabledError{Key: k.ID}
	}
	a, err := m.material(k)
	if err != nil {
		return nil, err
	}
	dk, err := open(a, sealed, from)
	if err != nil {
		return nil, fmt.Errorf("WorkSpace %s's data key does not open with key %s: %w", from, k.ID, err)
	}
	return seal(a, dk, to)
}

// DisabledError is a key that is disabled.
type DisabledError struct{ Key string }

func (e *DisabledError) Error() string { return "key " + e.Key + " is disabled" }

// ErrNotFound is a key reference that names no key of the store.
var ErrNotFound = errors.New("no such key")

// Resolve finds the key ref names: its id, its alias ("alias/NAME"), or either as a KMS
// ARN (…:key/ID, …:alias/NAME), so that what AWS's tools pass as VolumeEncryptionKey works.
func Resolve(tx store.Tx, ref string) (Key, error) {
	if strings.HasPrefix(ref, "arn:") {
		if i := strings.LastIndex(ref, ":"); i >= 0 {
			ref = ref[i+1:]
		}
		ref = strings.TrimPrefix(ref, "key/")
	}
	if uuidRE.MatchString(ref) {
		k, err := store.GetJSON[Key](tx, store.Keys, ref)
		if errors.Is(err, store.ErrNotFound) {
			return Key{}, fmt.Errorf("key %s: %w", ref, ErrNotFound)
		}
		return k, err
	}
	if !strings.HasPrefix(ref, "alias/") {
		return Key{}, fmt.Errorf("%q is not a key id, alias/NAME or ARN: %w", ref, ErrNotFound)
	}
	all, err := List(tx)
	if err != nil {
		return Key{}, err
	}
	for _, k := range all {
		if k.Alias == ref {
			return k, nil
		}
	}
	return Key{}, fmt.Errorf("alias %s: %w", ref, ErrNotFound)
}

// List returns every key, by id.
func List(tx store.Tx) ([]Key, error) { return store.ListJSON[Key](tx, store.Keys) }

// Put stores k, refusing an alias another key has.
func Put(tx store.Tx, k Key) error {
	if k.Alias != "" {
		all, err := List(tx)
		if err != nil {
			return err
		}
		for _, o := range all {
			if o.Alias == k.Alias && o.ID != k.ID {
				return catalog.Errorf(catalog.ResourceAlreadyExists, "alias %s already names key %s", k.Alias, o.ID)
			}
		}
	}
	return store.PutJSON(tx, store.Keys, k.ID, k)
}
