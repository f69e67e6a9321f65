// Package credstore is zeroclient's own state on disk (bbolt files, mode 0600): local
// directory users' password hashes (argon2id) and TOTP secrets and one-time activation
// codes in one file, lockout records in a second one beside it. hostd owns WorkSpaces and
// directory membership; this store owns only what proves who a user is. Sessions and
// connect tags are deliberately not here: they are bearer secrets the guide says must never
// reach the appliance's disk (catalog §10.6).
//
// The lockout file is written without fsync: every login step writes it (an attempt is
// charged before it is checked), and an fsync per step made a login with MFA 4–5 times
// slower. Written pages sit in the kernel's page cache, so the counts outlive a crash of
// zeroclient; a power loss may lose or damage them, and a damaged lockout file is set aside
// and started afresh (the counts are short-lived by nature). A write that fails (a full
// /perm) still fails at once, and the login is refused.
package credstore

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

var (
	bucketUsers       = []byte("users")
	bucketActivations = []byte("activations")
	bucketLockouts    = []byte("lockouts")
)

// ErrNoActivation is returned for an activation code that is unknown, used or expired.
var ErrNoActivation = errors.New("the activation code is not valid (unknown, already used or expired)")

// Store is the open credential store.
type Store struct {
	db   *bolt.DB
	lock *bolt.DB // lockout records; nil when opened read-only without one
}

// LockoutPath is the lockout file of the store at path (credentials.db:
// credentials.lockouts.db).
func LockoutPath(path string) string { return strings.TrimSuffix(path, ".db") + ".lockouts.db" }

// Open opens (creating if needed) the store at path and its lockout file.
func Open(path string) (*Store, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("credential store: %w", err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("credential store %s: %w (is another zeroclient running?)", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketUsers, bucketActivations} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("credential store %s: %w", path, err)
	}
	lock, err := openLockouts(LockoutPath(path))
	if err != nil {
		db.Close()
		return nil, err
	}
	return &Store{db: db, lock: lock}, nil
}

func openLockouts(path string) (*bolt.DB, error) {
	open := func() (*bolt.DB, error) {
		db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second, NoSync: true})
		if err != nil {
			return nil, err
		}
		if err := db.Update(func(tx *bolt.Tx) error {
			_, err := tx.CreateBucketIfNotExists(bucketLockouts)
			return err
		}); err != nil {
			db.Close()
			return nil, err
		}
		return db, nil
	}
	db, err := open()
	if errors.Is(err, bolt.ErrInvalid) || errors.Is(err, bolt.ErrChecksum) || errors.Is(err, bolt.ErrVersionMismatch) {
		// Damaged (a power loss while it was not synced): the counts are set aside.
		if rerr := os.Rename(path, path+".damaged"); rerr != nil {
			return nil, fmt.Errorf("lockout store %s: %w; setting it aside: %v", path, err, rerr)
		}
		db, err = open()
	}
	if err != nil {
		return nil, fmt.Errorf("lockout store %s: %w", path, err)
	}
	return db, nil
}

// OpenReadOnly opens an existing store without the right to write it (for inspection while
// no zeroclient runs). Logins against it are refused: their failures could not be counted.
func OpenReadOnly(path string) (*Store, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second, ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("credential store %s: %w", path, err)
	}
	s := &Store{db: db}
	if _, err := os.Stat(LockoutPath(path)); err == nil {
		if s.lock, err = bolt.Open(LockoutPath(path), 0o600, &bolt.Options{Timeout: 2 * time.Second, ReadOnly: true}); err != nil {
			db.Close()
			return nil, fmt.Errorf("lockout store %s: %w", LockoutPath(path), err)
		}
	}
	return s, nil
}

// errNoLockouts is a read-only store without a lockout file.
var errNoLockouts = errors.New("no lockout store (opened read-only)")

// lockouts runs fn on the lockout file, in a write transaction if write.
func (s *Store) lockouts(write bool, fn func(*bolt.Bucket) error) error {
	if s.lock == nil {
		if write {
			return errNoLockouts
		}
		return nil
	}
	run := s.lock.View
	if write {
		run = s.lock.Update
	}
	return run(func(tx *bolt.Tx) error { return fn(tx.Bucket(bucketLockouts)) })
}

// Close closes the store.
func (s *Store) Close() error {
	if s.lock != nil {
		s.lock.Close()
	}
	return s.db.Close()
}

// Credential is what proves a local user: a password hash and, with TOTP, a secret.
type Credential struct {
	// Hash is the argon2id hash in PHC form; empty until the user activates.
	Hash       string    `json:"hash"`
	PasswordAt time.Time `json:"passwordAt"`
	// TOTPSecret is the base32 secret enrolled at activation (TOTP directories).
	TOTPSecret string `json:"totpSecret,omitempty"`
	// TOTPLastStep is the last time step accepted, so a code is never accepted twice.
	TOTPLastStep int64 `json:"totpLastStep,omitempty"`
}

// userKey identifies a user: directory id and the lower-cased name (user names compare
// case-insensitively, as in AD).
func userKey(dir, user string) []byte { return []byte(dir + "/" + strings.ToLower(user)) }

// Credential returns a user's credential; ok is false for a user who never activated.
func (s *Store) Credential(dir, user string) (c Credential, ok bool, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketUsers).Get(userKey(dir, user))
		if v == nil {
			return nil
		}
		ok = true
		return json.Unmarshal(v, &c)
	})
	if err != nil {
		return Credential{}, false, fmt.Errorf("credential store: read %s/%s: %w", dir, user, err)
	}
	return c, ok, nil
}

func putCredential(tx *bolt.Tx, dir, user string, c Credential) error {
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	return tx.Bucket(bucketUsers).Put(userKey(dir, user), b)
}

// UseTOTPStep records that the code for step was accepted; it returns false if that step
// (or a later one) was already used: a replayed code.
func (s *Store) UseTOTPStep(dir, user string, step int64) (bool, error) {
	fresh := false
	err := s.db.Update(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketUsers).Get(userKey(dir, user))
		if v == nil {
			return nil
		}
		var c Credential
		if err := json.Unmarshal(v, &c); err != nil {
			return err
		}
		if step <= c.TOTPLastStep {
			return nil
		}
		fresh = true
		c.TOTPLastStep = step
		return putCredential(tx, dir, user, c)
	})
	if err != nil {
		return false, fmt.Errorf("credential store: record TOTP use for %s/%s: %w", dir, user, err)
	}
	return fresh, nil
}

// activation is a pending activation code, stored under the SHA-256 of the code so that a
// copy of the file does not hand out working codes.
type activation struct {
	Dir     string    `json:"dir"`
	User    string    `json:"user"`
	Expires time.Time `json:"expires"`
}

var codeEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

func codeKey(code string) []byte {
	h := sha256.Sum256([]byte(strings.ToUpper(strings.TrimSpace(code))))
	return []byte(hex.EncodeToString(h[:]))
}

// NewActivation makes a one-time activation code for a user, valid for ttl. Any earlier
// code for the same user stops working.
func (s *Store) NewActivation(dir, user string, ttl time.Duration, now time.Time) (string, error) {
	var raw [20]byte // 160 bits
	if _, err := rand.Read(raw[:]); err != nil {
		return "", err
	}
	code := codeEncoding.EncodeToString(raw[:])
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketActivations)
		if err := dropActivations(b, dir, user, now); err != nil {
			return err
		}
		v, err := json.Marshal(activation{Dir: dir, User: user, Expires: now.Add(ttl)})
		if err != nil {
			return err
		}
		return b.Put(codeKey(code), v)
	})
	if err != nil {
		return "", fmt.Errorf("credential store: activation code for %s/%s: %w", dir, user, err)
	}
	return code, nil
}

// dropActivations removes the user's codes and every expired one.
func dropActivations(b *bolt.Bucket, dir, user string, now time.Time) error {
	var dead [][]byte
	err := b.ForEach(func(k, v []byte) error {
		var a activation
		if json.Unmarshal(v, &a) != nil || now.After(a.Expires) || (a.Dir == dir && strings.EqualFold(a.User, user)) {
			dead = append(dead, append([]byte(nil), k...))
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, k := range dead {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// Lookup returns whose an activation code is, without using it.
func (s *Store) Lookup(code string, now time.Time) (dir, user string, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketActivations).Get(codeKey(code))
		if v == nil {
			return ErrNoActivation
		}
		var a activation
		if err := json.Unmarshal(v, &a); err != nil || now.After(a.Expires) {
			return ErrNoActivation
		}
		dir, user = a.Dir, a.User
		return nil
	})
	return dir, user, err
}

// Activate uses an activation code: in one transaction the code is consumed and the user's
// credential is replaced by what set returns (from the hash of the new password). If set
// fails, nothing changes.
func (s *Store) Activate(code string, now time.Time, set func(dir, user string) (Credential, error)) (dir, user string, err error) {
	err = s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketActivations)
		k := codeKey(code)
		v := b.Get(k)
		if v == nil {
			return ErrNoActivation
		}
		var a activation
		if err := json.Unmarshal(v, &a); err != nil || now.After(a.Expires) {
			return ErrNoActivation
		}
		c, err := set(a.Dir, a.User)
		if err != nil {
			return err
		}
		if err := b.Delete(k); err != nil {
			return err
		}
		dir, user = a.Dir, a.User
		return putCredential(tx, a.Dir, a.User, c)
	})
	return dir, user, err
}

// SetCredential replaces a user's credential (operator reset, tests).
func (s *Store) SetCredential(dir, user string, c Credential) error {
	return s.db.Update(func(tx *bolt.Tx) error { return putCredential(tx, dir, user, c) })
}

// Lockout is one failure count's record: a (user, address) pair's, a user's across
// addresses, or a user's MFA failures (the key says which; package policy names them).
type Lockout struct {
	// Failures are the times of recent failures, oldest first.
	Failures []time.Time `json:"failures,omitempty"`
	// Until is when a lockout ends; zero when not locked.
	Until time.Time `json:"until,omitzero"`
}

// UpdateLockouts reads the records for keys, lets fn change them, and, when fn returns
// true, writes them back (deleting those fn leaves empty), all in one transaction: the
// counts an attempt is charged to change together or not at all. An error means nothing
// was written.
func (s *Store) UpdateLockouts(keys []string, fn func([]*Lockout) bool) error {
	err := s.lockouts(true, func(b *bolt.Bucket) error {
		recs := make([]*Lockout, len(keys))
		for i, k := range keys {
			recs[i] = &Lockout{}
			if v := b.Get([]byte(k)); v != nil {
				if err := json.Unmarshal(v, recs[i]); err != nil {
					*recs[i] = Lockout{} // a damaged record must not lock anyone out forever
				}
			}
		}
		if !fn(recs) {
			return nil
		}
		for i, k := range keys {
			l := recs[i]
			if len(l.Failures) == 0 && l.Until.IsZero() {
				if err := b.Delete([]byte(k)); err != nil {
					return err
				}
				continue
			}
			v, err := json.Marshal(l)
			if err != nil {
				return err
			}
			if err := b.Put([]byte(k), v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("credential store: lockout records: %w", err)
	}
	return nil
}

// ReadLockout returns the record for key without changing it.
func (s *Store) ReadLockout(key string) (Lockout, error) {
	var l Lockout
	err := s.lockouts(false, func(b *bolt.Bucket) error {
		if v := b.Get([]byte(key)); v != nil {
			_ = json.Unmarshal(v, &l)
		}
		return nil
	})
	if err != nil {
		return Lockout{}, fmt.Errorf("credential store: lockout record: %w", err)
	}
	return l, nil
}

// sweepBatch bounds the deletions of one sweep transaction, so a sweep of a large bucket
// never holds the write lock (and logins) for long.
const sweepBatch = 2000

// SweepLockouts deletes every lockout record dead says is of no more use (no recent
// failure, no lockout in force), in batches, and returns how many went. Records for user
// names that exist nowhere pile up otherwise: every guess at a new name makes one.
func (s *Store) SweepLockouts(dead func(Lockout) bool) (int, error) {
	total := 0
	var after []byte
	for {
		var keys [][]byte
		done := true
		err := s.lockouts(false, func(b *bolt.Bucket) error {
			c := b.Cursor()
			k, v := c.First()
			if after != nil {
				k, v = c.Seek(after)
				if k != nil && string(k) == string(after) {
					k, v = c.Next()
				}
			}
			for ; k != nil; k, v = c.Next() {
				var l Lockout
				if json.Unmarshal(v, &l) != nil || dead(l) {
					keys = append(keys, append([]byte(nil), k...))
				}
				after = append(after[:0], k...)
				if len(keys) >= sweepBatch {
					done = false
					break
				}
			}
			return nil
		})
		if err != nil {
			return total, fmt.Errorf("credential store: sweep lockouts: %w", err)
		}
		if len(keys) > 0 {
			err = s.lockouts(true, func(b *bolt.Bucket) error {
				for _, k := range keys {
					// Checked again inside the write: the record may have changed since.
					v := b.Get(k)
					if v == nil {
						continue
					}
					var l Lockout
					if json.Unmarshal(v, &l) == nil && !dead(l) {
						continue
					}
					if err := b.Delete(k); err != nil {
						return err
					}
					total++
				}
				return nil
			})
			if err != nil {
				return total, fmt.Errorf("credential store: sweep lockouts: %w", err)
			}
		}
		if done {
			return total, nil
		}
	}
}

// LockoutCount is the number of lockout records kept.
func (s *Store) LockoutCount() (int, error) {
	n := 0
	err := s.lockouts(false, func(b *bolt.Bucket) error {
		n = b.Stats().KeyN
		return nil
	})
	return n, err
}

// ClearLockouts removes every lockout record whose key starts with prefix (operator
// unlock: "d-…/alice/" clears alice from every address).
func (s *Store) ClearLockouts(prefix string) (int, error) {
	n := 0
	err := s.lockouts(true, func(b *bolt.Bucket) error {
		c := b.Cursor()
		var keys [][]byte
		for k, _ := c.Seek([]byte(prefix)); k != nil && strings.HasPrefix(string(k), prefix); k, _ = c.Next() {
			keys = append(keys, append([]byte(nil), k...))
		}
		for _, k := range keys {
			if err := b.Delete(k); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	return n, err
}
