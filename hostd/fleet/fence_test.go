package fleet

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"deskhost/hostd/etcdmember"
	"deskhost/hostd/etcdmember/etcdtest"
	"deskhost/hostd/store"
	"deskhost/hostd/workspace"
	"deskhost/internal/catalog"
)

func TestMain(m *testing.M) {
	etcdmember.RunIfChild() // the members the tests start are this binary, serving etcd
	os.Exit(m.Run())
}

var prefixes atomic.Int64

// cluster starts a real 3-member etcd cluster (processes, mutual TLS) on loopback.
func cluster(t *testing.T) *etcdmember.Cluster {
	return etcdtest.Cluster(t, 90*time.Second)
}

func openStore(t *testing.T, c *etcdmember.Cluster, prefix string) *store.Etcd {
	t.Helper()
	st, err := store.OpenEtcd(store.EtcdConfig{Endpoints: c.Endpoints(), CAFile: c.CAFile, CertFile: c.ClientCert, KeyFile: c.ClientKey,
		Prefix: prefix, Timeout: 3 * time.Second, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func testLog(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

func join(t *testing.T, st store.Store, id string, ttl time.Duration) *Node {
	t.Helper()
	n, err := Join(context.Background(), Config{Store: st, Self: host(id, 4, 2048), LeaseTTL: ttl, Log: testLog(t).With("host", id)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Close)
	return n
}

func putWorkspace(t *testing.T, st store.Store, id, owner string, state workspace.State) {
	t.Helper()
	w := workspace.Workspace{ID: id, Host: owner, DirectoryID: "d-0123456789", UserName: id, Properties: workspace.Properties{ComputeTypeName: "VALUE"}}
	w.SetState(state, time.Now())
	if err := st.Update(func(tx store.Tx) error { return store.PutJSON(tx, store.Workspaces, id, w) }); err != nil {
		t.Fatal(err)
	}
}

func getWorkspace(t *testing.T, st store.Store, id string) workspace.Workspace {
	t.Helper()
	var w workspace.Workspace
	if err := st.View(func(tx store.Tx) error {
		var err error
		w, err = store.GetJSON[workspace.Workspace](tx, store.Workspaces, id)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return w
}

// ownerWrite is a write the owning host makes to one of its WorkSpaces (what the
// controller's transition does): fenced by its lease, then the record changed.
func ownerWrite(st store.Store, host, id string, between func()) error {
	first := true
	return st.Update(func(tx store.Tx) error {
		if err := Fence(tx, host); err != nil {
			return err
		}
		w, err := store.GetJSON[workspace.Workspace](tx, store.Workspaces, id)
		if err != nil {
			return err
		}
		if first && between != nil {
			first = false
			between()
		}
		w.BootedAt = time.Now()
		return store.PutJSON(tx, store.Workspaces, id, w)
	})
}

// TestFencing: a host whose lease expired cannot write its records — neither when the
// lease is gone before it looks, nor when it expires between its look and its commit (the
// commit is guarded by the alive key it read, so the transaction runs again and refuses).
// With a lease again, it writes.
func TestFencing(t *testing.T) {
	c := cluster(t)
	st := openStore(t, c, fmt.Sprintf("/fence%d/", prefixes.Add(1)))
	a := join(t, st, "host-a", 5*time.Second)
	putWorkspace(t, st, "ws-a0000001", "host-a", workspace.Available)
	if err := ownerWrite(st, "host-a", "ws-a0000001", nil); err != nil {
		t.Fatalf("a live host's write: %v", err)
	}
	before := getWorkspace(t, st, "ws-a0000001")

	// The lease expires (revoked: what etcd does when its TTL runs out) between the fence
	// check and the commit.
	a.Close() // stop the keepalive, so it is not granted again under the test
	revoke := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := st.Client().Revoke(ctx, clientv3.LeaseID(a.lease.id.Load())); err != nil {
			t.Error(err)
		}
	}
	err := ownerWrite(st, "host-a", "ws-a0000001", revoke)
	if !IsFenced(err) {
		t.Fatalf("a write whose lease expired before its commit: %v, want a FencedError", err)
	}
	if !catalog.IsError(err, catalog.ServiceUnavailableException) {
		t.Errorf("the API would not answer the refusal as 503: %v", err)
	}
	if after := getWorkspace(t, st, "ws-a0000001"); !after.BootedAt.Equal(before.BootedAt) {
		t.Fatalf("the fenced write was applied: %v → %v", before.BootedAt, after.BootedAt)
	}
	// And plainly: no lease, no write.
	if err := ownerWrite(st, "host-a", "ws-a0000001", nil); !IsFenced(err) {
		t.Fatalf("a host without a lease: %v", err)
	}
	// Back with a new lease, it writes again.
	join(t, st, "host-a", 5*time.Second)
	if err := ownerWrite(st, "host-a", "ws-a0000001", nil); err != nil {
		t.Fatalf("back with a lease: %v", err)
	}
}

// TestHostDown: when a host's lease expires, a surviving host marks it down and its
// AVAILABLE WorkSpaces UNHEALTHY (others keep their state), within the lease's TTL and a
// little; several marking at once commit once. When the host is back, it is up again.
func TestHostDown(t *testing.T) {
	c := cluster(t)
	st := openStore(t, c, fmt.Sprintf("/down%d/", prefixes.Add(1)))
	join(t, st, "host-a", 3*time.Second)
	b := join(t, st, "host-b", 3*time.Second)
	putWorkspace(t, st, "ws-b0000001", "host-b", workspace.Available)
	putWorkspace(t, st, "ws-b0000002", "host-b", workspace.Pending)
	putWorkspace(t, st, "ws-a0000001", "host-a", workspace.Available)
	// host-b stops keeping its lease (kill -9): it expires by itself.
	b.Close()
	t0 := time.Now()
	deadline := t0.Add(30 * time.Second)
	for getWorkspace(t, st, "ws-b0000001").State != workspace.Unhealthy {
		if time.Now().After(deadline) {
			t.Fatal("host-b's WorkSpace is not UNHEALTHY 30 s after it stopped")
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("UNHEALTHY %s after the last keepalive (TTL 3 s)", time.Since(t0).Round(100*time.Millisecond))
	if w := getWorkspace(t, st, "ws-b0000001"); w.ErrorMessage == "" {
		t.Error("no reason given")
	}
	if w := getWorkspace(t, st, "ws-b0000002"); w.State != workspace.Pending {
		t.Errorf("a PENDING WorkSpace of the down host: %s", w.State)
	}
	if w := getWorkspace(t, st, "ws-a0000001"); w.State != workspace.Available {
		t.Errorf("the survivor's WorkSpace: %s", w.State)
	}
	views := describe(t, st)
	if views["host-b"].State != Down || views["host-a"].State != Ready {
		t.Errorf("states: %+v", views)
	}

	// Several hosts marking one down at once: one commits, the others find it done.
	j := join(t, st, "host-c", 3*time.Second)
	putWorkspace(t, st, "ws-c0000001", "host-c", workspace.Available)
	j.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	st.Client().Revoke(ctx, clientv3.LeaseID(j.lease.id.Load()))
	cancel()
	var wg sync.WaitGroup
	var commits atomic.Int64
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if marked, err := MarkDown(st, "host-c", time.Now()); err != nil {
				t.Error(err)
			} else if len(marked) > 0 {
				commits.Add(1)
			}
		}()
	}
	wg.Wait()
	if n := commits.Load(); n > 1 {
		t.Errorf("%d concurrent markings each marked the WorkSpaces", n)
	}

	// host-b is back: its record says so (the controller's health checks bring its
	// WorkSpaces back).
	join(t, st, "host-b", 3*time.Second)
	if v := describe(t, st)["host-b"]; v.State != Ready || v.Down || !v.Alive {
		t.Errorf("host-b back: %+v", v)
	}
}

func describe(t *testing.T, st store.Store) map[string]HostView {
	t.Helper()
	out := map[string]HostView{}
	if err := st.View(func(tx store.Tx) error {
		vs, err := Describe(tx)
		for _, v := range vs {
			out[v.ID] = v
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return out
}
