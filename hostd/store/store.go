// Package store keeps hostd's desired state. The interface is a small transactional
// key-value store with two implementations: an embedded bbolt file for a single host
// (OpenBolt, the default) and etcd for a fleet of hosts (OpenEtcd). Callers do not know
// which one they have.
package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
)

// ErrNotFound is returned by Get for a missing key.
var ErrNotFound = errors.New("not found")

// Buckets hostd uses. The catalog buckets (directories, IP groups, bundles, images,
// tags) change only together with the catalog revision in Meta (CatalogRevisionKey), in
// the same transaction, so that a reader who saw a revision has seen every write before it.
const (
	Workspaces  = "workspaces"
	Directories = "directories" // d-… → catalog.DirectoryRecord
	IPGroups    = "ipgroups"    // wsipg-… → catalog.IPGroup
	Bundles     = "bundles"     // wsb-… → catalog.Bundle
	Images      = "images"      // wsi-… → catalog.Image
	Tags        = "tags"        // resource id → []catalog.Tag
	Snapshots   = "snapshots"   // ws-… → workspace.Snapshots (root+user pairs, oldest first)
	// Usage is the metering ledger (hostd/metering): "<ws-id>/<hour>" → one hour's entry,
	// and UsageCursor the last hour recorded per WorkSpace, "<ws-id>" → its entry.
	Usage       = "usage"
	UsageCursor = "usagecursor"
	// Keys is the volume encryption key store (hostd/keystore): key id → keystore.Key,
	// its material sealed with the host's master key.
	Keys = "keys"
	Meta = "meta"
)

// Keys in Meta.
const (
	// CatalogRevisionKey is the catalog's revision: a decimal counter bumped by every
	// catalog write.
	CatalogRevisionKey = "catalogRevision"
	// CatalogImportKey records the one import of a host config's catalog sections.
	CatalogImportKey = "catalogImport"
)

// Store is a transactional key-value store with named buckets.
type Store interface {
	// View runs fn in a read-only transaction: every read sees one consistent snapshot.
	// fn may run again if the snapshot is discarded under it (etcd's compaction; rare).
	View(fn func(Tx) error) error
	// Update runs fn in a read-write transaction, committed if fn returns nil; if fn or the
	// commit fails, nothing of it is applied. Reads inside fn see fn's own writes.
	//
	// fn may run more than once: an optimistic store (etcd) runs it again when another
	// writer changed what it read before it could commit. So fn must keep its effects
	// inside the transaction, or reset them when it starts.
	Update(fn func(Tx) error) error
	Close() error
}

// Tx is one transaction.
type Tx interface {
	Get(bucket, key string) ([]byte, error)
	Put(bucket, key string, value []byte) error
	Delete(bucket, key string) error
	// ForEach calls fn for every key in bucket in key order.
	ForEach(bucket string, fn func(key string, value []byte) error) error
}

// Watcher is a store that reports changes as they are committed, so that a controller
// reacts to a desired-state write (by this process or, with etcd, by any host) without
// polling. Both implementations are Watchers.
type Watcher interface {
	// Watch streams the changes to the keys of bucket that begin with prefix ("" for all)
	// committed after revision from (0: after now), in commit order, until ctx ends; then
	// the channel is closed. A watch that cannot go on (its history was compacted away, or
	// the store closed) sends one last Event with Err set before the channel closes: the
	// watcher re-reads what it cares about and watches again from 0.
	//
	// A prefix is what serves "the WorkSpaces this host owns" once records are keyed, or
	// indexed, by owner: the store filters, not the watcher.
	Watch(ctx context.Context, bucket, prefix string, from int64) <-chan Event
}

// Event is one committed change to a key.
type Event struct {
	Bucket, Key string
	// Value is the new value; nil when the key was deleted.
	Value   []byte
	Deleted bool
	// Revision orders changes: the store's revision (etcd) or transaction id (bbolt) of the
	// commit. Resume a watch after it with Watch(..., ev.Revision).
	Revision int64
	// Err ends a watch that cannot go on (ErrCompacted, ErrClosed).
	Err error
}

var (
	// ErrCompacted: the changes a watch asked for are no longer kept.
	ErrCompacted = errors.New("store: the changes after that revision are no longer kept; re-read and watch from now")
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("store: closed")
	// ErrConflict: Update was retried as often as it may be and another writer changed
	// what it read every time. Nothing was applied.
	ErrConflict = errors.New("store: the transaction kept conflicting with other writers and was given up; nothing was applied")
)

// GetJSON decodes the record at bucket/key into a new T.
func GetJSON[T any](tx Tx, bucket, key string) (T, error) {
	var v T
	b, err := tx.Get(bucket, key)
	if err != nil {
		return v, err
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return v, fmt.Errorf("decode %s/%s: %w", bucket, key, err)
	}
	return v, nil
}

// PutJSON encodes v and stores it at bucket/key.
func PutJSON(tx Tx, bucket, key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s/%s: %w", bucket, key, err)
	}
	return tx.Put(bucket, key, b)
}

// ListJSON decodes every record of bucket, in key order.
func ListJSON[T any](tx Tx, bucket string) ([]T, error) {
	var out []T
	err := tx.ForEach(bucket, func(key string, b []byte) error {
		var v T
		if err := json.Unmarshal(b, &v); err != nil {
			return fmt.Errorf("decode %s/%s: %w", bucket, key, err)
		}
		out = append(out, v)
		return nil
	})
	return out, err
}

// CatalogRevision reads the catalog revision (0 before the first catalog write).
func CatalogRevision(tx Tx) (uint64, error) {
	b, err := tx.Get(Meta, CatalogRevisionKey)
	if errors.Is(err, ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseUint(string(b), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("decode %s/%s %q: %w", Meta, CatalogRevisionKey, b, err)
	}
	return n, nil
}

// BumpCatalogRevision adds one to the catalog revision in tx and returns the new value.
// Every transaction that writes a catalog bucket calls it.
func BumpCatalogRevision(tx Tx) (uint64, error) {
	n, err := CatalogRevision(tx)
	if err != nil {
		return 0, err
	}
	n++
	return n, tx.Put(Meta, CatalogRevisionKey, []byte(strconv.FormatUint(n, 10)))
}
