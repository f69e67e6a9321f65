package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"deskhost/internal/catalog"
)

func newEtcd(t *testing.T) *Etcd {
	t.Helper()
	s := openEtcd(t, sharedCluster(t), fmt.Sprintf("/%s-%d/", t.Name(), prefixes.Add(1)))
	t.Cleanup(func() { s.Close() })
	return s
}

// TestEtcdConflicts makes another writer commit between an Update's read and its commit,
// in each way that must make the Update run again: the key it read changed, a key
// appeared in a bucket it listed, a key of a bucket it listed was deleted.
func TestEtcdConflicts(t *testing.T) {
	s := newEtcd(t)
	other := newEtcd(t)
	other.cfg.Prefix = s.cfg.Prefix
	put := func(b, k, v string) {
		t.Helper()
		if err := other.Update(func(tx Tx) error { return tx.Put(b, k, []byte(v)) }); err != nil {
			t.Fatal(err)
		}
	}
	put("b", "k", "1")
	put("list", "x", "")
	for _, c := range []struct {
		name  string
		read  func(tx Tx) (string, error)
		race  func()
		wantB string // what the second run reads
	}{
		{"changed key", func(tx Tx) (string, error) { v, err := tx.Get("b", "k"); return string(v), err },
			func() { put("b", "k", "2") }, "2"},
		{"absent key created", func(tx Tx) (string, error) {
			v, err := tx.Get("b", "absent")
			if errors.Is(err, ErrNotFound) {
				return "none", nil
			}
			return string(v), err
		}, func() { put("b", "absent", "here") }, "here"},
		{"key added to listed bucket", countKeys, func() { put("list", "y", "") }, "2"},
		{"key deleted from listed bucket", countKeys, func() {
			if err := other.Update(func(tx Tx) error { return tx.Delete("list", "x") }); err != nil {
				t.Fatal(err)
			}
		}, "1"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var runs []string
			err := s.Update(func(tx Tx) error {
				v, err := c.read(tx)
				if err != nil {
					return err
				}
				runs = append(runs, v)
				if len(runs) == 1 {
					c.race() // commits before this transaction does
				}
				return tx.Put("out", "result", []byte(v))
			})
			if err != nil {
				t.Fatal(err)
			}
			if len(runs) != 2 || runs[1] != c.wantB {
				t.Fatalf("runs saw %q, want a second run seeing %q", runs, c.wantB)
			}
			var got []byte
			s.View(func(tx Tx) error { got, _ = tx.Get("out", "result"); return nil })
			if string(got) != c.wantB {
				t.Fatalf("committed %q, want %q (the first run's write must not land)", got, c.wantB)
			}
		})
	}
	// A writer that always loses gives up with ErrConflict after its attempts, applying nothing.
	s.cfg.Attempts = 3
	n := 0
	err := s.Update(func(tx Tx) error {
		if _, err := tx.Get("b", "k"); err != nil {
			return err
		}
		n++
		put("b", "k", strconv.Itoa(100+n))
		return tx.Put("b", "loser", []byte("x"))
	})
	if !errors.Is(err, ErrConflict) || n != 3 {
		t.Fatalf("err %v after %d runs, want ErrConflict after 3", err, n)
	}
	if err := s.View(func(tx Tx) error { _, err := tx.Get("b", "loser"); return err }); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the loser's write: %v", err)
	}
}

func countKeys(tx Tx) (string, error) {
	n := 0
	err := tx.ForEach("list", func(string, []byte) error { n++; return nil })
	return strconv.Itoa(n), err
}

// TestEtcdViewIsSnapshot: every read of a View is at the revision of its first read.
func TestEtcdViewIsSnapshot(t *testing.T) {
	s := newEtcd(t)
	set := func(a, b string) {
		if err := s.Update(func(tx Tx) error {
			if err := tx.Put("snap", "a", []byte(a)); err != nil {
				return err
			}
			return tx.Put("snap", "b", []byte(b))
		}); err != nil {
			t.Fatal(err)
		}
	}
	set("1", "1")
	var a, b []byte
	var listed []string
	if err := s.View(func(tx Tx) error {
		var err error
		if a, err = tx.Get("snap", "a"); err != nil {
			return err
		}
		set("2", "2")
		if err := s.Update(func(tx Tx) error { return tx.Put("snap", "c", nil) }); err != nil {
			return err
		}
		if b, err = tx.Get("snap", "b"); err != nil {
			return err
		}
		return tx.ForEach("snap", func(k string, v []byte) error { listed = append(listed, k+"="+string(v)); return nil })
	}); err != nil {
		t.Fatal(err)
	}
	if string(a) != "1" || string(b) != "1" || strings.Join(listed, ",") != "a=1,b=1" {
		t.Fatalf("View saw a=%s b=%s list %v: not one snapshot", a, b, listed)
	}
}

func TestEtcdBadBucket(t *testing.T) {
	s := newEtcd(t)
	for _, b := range []string{"", "a/b"} {
		if err := s.Update(func(tx Tx) error { return tx.Put(b, "k", nil) }); err == nil || !strings.Contains(err.Error(), "bucket name") {
			t.Errorf("bucket %q: %v", b, err)
		}
	}
}

// TestEtcdWithoutQuorum stops 2 of 3 members: a write is refused within the call
// deadline with an error that says there is no quorum (a 503 ServiceUnavailableException
// through the API), none of it is applied, and once the members are back everything
// written before is there.
func TestEtcdWithoutQuorum(t *testing.T) {
	c := startCluster(t)
	s := openEtcd(t, c, "/quorum/")
	defer s.Close()
	const n = 50
	if err := s.Update(func(tx Tx) error {
		for i := range n {
			if err := PutJSON(tx, Workspaces, fmt.Sprintf("ws-%03d", i), rec{fmt.Sprintf("ws-%03d", i), "AVAILABLE"}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, m := range c.Members[1:] {
		if err := m.Kill(); err != nil {
			t.Fatal(err)
		}
	}
	// A transaction touching several keys: all or nothing.
	write := func() error {
		return s.Update(func(tx Tx) error {
			if err := PutJSON(tx, Workspaces, "ws-000", rec{"ws-000", "TERMINATING"}); err != nil {
				return err
			}
			if err := tx.Delete(Workspaces, "ws-001"); err != nil {
				return err
			}
			return PutJSON(tx, Workspaces, "ws-new", rec{"ws-new", "PENDING"})
		})
	}
	// Until the survivor's election timeout passes it may still believe in its leader: a
	// write sent then times out with its outcome unknown (it may be applied once quorum is
	// back, whole). So the probing is done with writes of their own (probe-N records);
	// once the survivor says at once that there is no quorum, the multi-key write is tried
	// and must be refused with nothing changed.
	deadline := time.Now().Add(20 * time.Second)
	var err error
	for i := 0; ; i++ {
		t0 := time.Now()
		err = s.Update(func(tx Tx) error { return PutJSON(tx, Workspaces, fmt.Sprintf("probe-%d", i), rec{"probe", "PENDING"}) })
		took := time.Since(t0)
		if err == nil {
			t.Fatal("a write was accepted by 1 of 3 members")
		}
		if !errors.Is(err, ErrUnavailable) {
			t.Fatalf("write without quorum: %v, want ErrUnavailable", err)
		}
		if took > s.cfg.Timeout*3+2*time.Second {
			t.Fatalf("a refused write took %s; the deadline is %s per call", took, s.cfg.Timeout)
		}
		if strings.Contains(err.Error(), "no quorum") || time.Now().After(deadline) {
			t.Logf("probe refused in %s: %v", took, err)
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	t0 := time.Now()
	err = write()
	if err == nil {
		t.Fatal("a write was accepted by 1 of 3 members")
	}
	t.Logf("refused in %s: %v", time.Since(t0), err)
	if !strings.Contains(err.Error(), "no quorum") || !strings.Contains(err.Error(), "nothing was changed") {
		t.Fatalf("the error does not say there is no quorum and nothing changed: %v", err)
	}
	if e := catalog.AsError(fmt.Errorf("create: %w", err)); e.Type != catalog.ServiceUnavailableException || !strings.Contains(e.Message, "no quorum") {
		t.Fatalf("through the API it would be %s: %s", e.Type, e.Message)
	}
	if err := s.View(func(tx Tx) error { _, err := tx.Get(Workspaces, "ws-000"); return err }); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("a linearizable read without quorum: %v", err)
	}

	for _, m := range c.Members[1:] {
		if err := m.Restart(); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.WaitServing(ctx); err != nil {
		t.Fatal(err)
	}
	var all, got []rec
	if err := s.View(func(tx Tx) error { var err error; all, err = ListJSON[rec](tx, Workspaces); return err }); err != nil {
		t.Fatal(err)
	}
	for _, r := range all {
		if r.ID != "probe" { // the probes' outcomes were unknown: either is right
			got = append(got, r)
		}
	}
	if len(got) != n {
		t.Fatalf("%d records after quorum returned, want %d", len(got), n)
	}
	for i, r := range got {
		if r.ID != fmt.Sprintf("ws-%03d", i) || r.State != "AVAILABLE" {
			t.Fatalf("record %d is %+v: the refused write was applied, or data was lost", i, r)
		}
	}
	if err := write(); err != nil {
		t.Fatalf("a write after quorum returned: %v", err)
	}
}
