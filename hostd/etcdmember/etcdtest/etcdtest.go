// Package etcdtest starts real etcd clusters for tests: members are processes of the test
// binary itself (etcdmember.TestCommand), so its TestMain must call etcdmember.RunIfChild.
package etcdtest

import (
	"context"
	"os"
	"testing"
	"time"

	"deskhost/hostd/etcdmember"
)

// Cluster starts a 3-member cluster with mutual TLS on loopback, each member its own
// process, waiting up to startWithin for it; it is stopped and removed when t ends.
func Cluster(t testing.TB, startWithin time.Duration) *etcdmember.Cluster {
	t.Helper()
	dir, err := os.MkdirTemp("", "etcd")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), startWithin)
	defer cancel()
	cmd, env := etcdmember.TestCommand()
	c, err := etcdmember.StartCluster(ctx, dir, 3, cmd, env)
	if err != nil {
		os.RemoveAll(dir)
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); os.RemoveAll(dir) })
	return c
}
