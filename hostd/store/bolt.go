package store

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Bolt is the embedded store: one bbolt file, fsynced on every commit so that a record
// written before an action survives a crash during that action. It is the default for a
// single host. Its Watch reports the commits of this process (bbolt's file lock makes it
// the only writer) with bbolt's transaction id as the revision.
type Bolt struct {
	db  *bolt.DB
	wmu sync.Mutex // commits and their notifications in one order
	hub hub
}

// OpenBolt opens (creating if needed) the store file at path. A second hostd on the same
// file fails after a second instead of waiting forever for the lock.
func OpenBolt(path string) (*Bolt, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	return &Bolt{db: db}, nil
}

func (b *Bolt) View(fn func(Tx) error) error {
	return b.db.View(func(tx *bolt.Tx) error { return fn(&boltTx{tx: tx}) })
}

func (b *Bolt) Update(fn func(Tx) error) error {
	b.wmu.Lock()
	defer b.wmu.Unlock()
	var t *boltTx
	var rev int64
	err := b.db.Update(func(tx *bolt.Tx) error {
		t = &boltTx{tx: tx, changes: map[[2]string]*Event{}}
		rev = int64(tx.ID())
		return fn(t)
	})
	if err != nil {
		return err
	}
	if len(t.changes) > 0 {
		evs := make([]Event, 0, len(t.changes))
		for _, ev := range t.changes {
			ev.Revision = rev
			evs = append(evs, *ev)
		}
		slices.SortFunc(evs, func(a, b Event) int {
			return cmp.Or(strings.Compare(a.Bucket, b.Bucket), strings.Compare(a.Key, b.Key))
		})
		b.hub.publish(rev, evs)
	}
	return nil
}

// Watch streams this process's commits to bucket; see Watcher. History is kept in memory
// for the last few commits only, so a watch resumed from an older revision (or from one
// before a restart) gets ErrCompacted.
func (b *Bolt) Watch(ctx context.Context, bucket, prefix string, from int64) <-chan Event {
	var current int64
	_ = b.db.View(func(tx *bolt.Tx) error { current = int64(tx.ID()); return nil })
	return b.hub.watch(ctx, bucket, prefix, from, current)
}

func (b *Bolt) Close() error {
	b.hub.close()
	return b.db.Close()
}

type boltTx struct {
	tx      *bolt.Tx
	changes map[[2]string]*Event // bucket, key → the last change; nil in a read-only tx
}

// Revision is the transaction id of the snapshot: the last commit it sees (a read-only
// transaction), or the one it will be (a read-write one).
func (t *boltTx) Revision() int64 { return int64(t.tx.ID()) }

func (t *boltTx) Get(bucket, key string) ([]byte, error) {
	bk := t.tx.Bucket([]byte(bucket))
	if bk == nil {
		return nil, ErrNotFound
	}
	v := bk.Get([]byte(key))
	if v == nil {
		return nil, ErrNotFound
	}
	return append([]byte(nil), v...), nil // bbolt's slice dies with the transaction
}

func (t *boltTx) Put(bucket, key string, value []byte) error {
	bk, err := t.tx.CreateBucketIfNotExists([]byte(bucket))
	if err != nil {
		return fmt.Errorf("bucket %s: %w", bucket, err)
	}
	if err := bk.Put([]byte(key), value); err != nil {
		return err
	}
	if t.changes != nil {
		t.changes[[2]string{bucket, key}] = &Event{Bucket: bucket, Key: key, Value: append([]byte{}, value...)}
	}
	return nil
}

func (t *boltTx) Delete(bucket, key string) error {
	bk := t.tx.Bucket([]byte(bucket))
	if bk == nil {
		return nil
	}
	if bk.Get([]byte(key)) == nil {
		return nil
	}
	if err := bk.Delete([]byte(key)); err != nil {
		return err
	}
	if t.changes != nil {
		t.changes[[2]string{bucket, key}] = &Event{Bucket: bucket, Key: key, Deleted: true}
	}
	return nil
}

func (t *boltTx) ForEach(bucket string, fn func(string, []byte) error) error {
	bk := t.tx.Bucket([]byte(bucket))
	if bk == nil {
		return nil
	}
	return bk.ForEach(func(k, v []byte) error { return fn(string(k), v) })
}
