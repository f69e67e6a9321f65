// Package store keeps hostd's desired state. The interface is a small transactional
// key-value store, so that the embedded bbolt file used on a single host can later be
// replaced by a distributed store (etcd) for a fleet without touching callers.
package store

import (
	"encoding/json"
	"errors"
	"fmt"
)

// ErrNotFound is returned by Get for a missing key.
var ErrNotFound = errors.New("not found")

// Buckets hostd uses.
const (
	Workspaces  = "workspaces"
	Directories = "directories"
	Meta        = "meta"
)

// Store is a transactional key-value store with named buckets.
type Store interface {
	// View runs fn in a read-only transaction.
	View(fn func(Tx) error) error
	// Update runs fn in a read-write transaction, committed if fn returns nil.
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
