package store

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"deskhost/hostd/etcdmember"
	"deskhost/hostd/etcdmember/etcdtest"
)

func TestMain(m *testing.M) {
	etcdmember.RunIfChild() // the members the tests start are this binary, serving etcd
	code := m.Run()
	if shared != nil {
		shared.Close()
		os.RemoveAll(shared.Dir)
	}
	os.Exit(code)
}

var (
	sharedOnce sync.Once
	shared     *etcdmember.Cluster
	sharedErr  error
	prefixes   atomic.Int64
)

// startCluster starts a real 3-member etcd cluster with mutual TLS on loopback, each
// member its own process.
func startCluster(t testing.TB) *etcdmember.Cluster {
	return etcdtest.Cluster(t, 90*time.Second)
}

// sharedCluster is one cluster for the tests that do not stop members; each test gets
// its own key prefix in it.
func sharedCluster(t testing.TB) *etcdmember.Cluster {
	t.Helper()
	sharedOnce.Do(func() {
		dir, err := os.MkdirTemp("", "etcd")
		if err != nil {
			sharedErr = err
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		cmd, env := etcdmember.TestCommand()
		shared, sharedErr = etcdmember.StartCluster(ctx, dir, 3, cmd, env)
	})
	if sharedErr != nil {
		t.Fatal(sharedErr)
	}
	return shared
}

func openEtcd(t testing.TB, c *etcdmember.Cluster, prefix string) *Etcd {
	t.Helper()
	s, err := OpenEtcd(EtcdConfig{Endpoints: c.Endpoints(), CAFile: c.CAFile, CertFile: c.ClientCert, KeyFile: c.ClientKey, Prefix: prefix, Timeout: 3 * time.Second, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// impl is one Store implementation under the contract test. open opens the same store
// again each time it is called (a reopen must see what was committed).
type impl struct {
	name string
	open func(t testing.TB) Store
}

func impls(t testing.TB) []impl {
	return []impl{
		{"bolt", func() func(testing.TB) Store {
			path := filepath.Join(t.TempDir(), "store.db")
			return func(t testing.TB) Store {
				s, err := OpenBolt(path)
				if err != nil {
					t.Fatal(err)
				}
				return s
			}
		}()},
		{"etcd", func() func(testing.TB) Store {
			prefix := fmt.Sprintf("/t%d-%d/", os.Getpid(), prefixes.Add(1))
			return func(t testing.TB) Store { return openEtcd(t, sharedCluster(t), prefix) }
		}()},
	}
}
