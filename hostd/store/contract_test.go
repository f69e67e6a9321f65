package store

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"
)

type rec struct {
	ID    string `json:"id"`
	State string `json:"state"`
}

// TestContract holds both implementations to the Store contract callers rely on.
func TestContract(t *testing.T) {
	for _, im := range impls(t) {
		t.Run(im.name, func(t *testing.T) {
			t.Run("RoundTripAndRollback", func(t *testing.T) { roundTrip(t, im.open) })
			t.Run("KeyOrder", func(t *testing.T) { keyOrder(t, im.open(t)) })
			t.Run("ReadsYourWrites", func(t *testing.T) { readsYourWrites(t, im.open(t)) })
			t.Run("ConcurrentUpdatesNeverBothWin", func(t *testing.T) { concurrent(t, im.open(t)) })
			t.Run("Watch", func(t *testing.T) { watch(t, im.open(t)) })
		})
	}
}

func roundTrip(t *testing.T, open func(testing.TB) Store) {
	s := open(t)
	if err := s.Update(func(tx Tx) error {
		for _, id := range []string{"ws-b", "ws-a"} {
			if err := PutJSON(tx, Workspaces, id, rec{id, "PENDING"}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// A failed transaction leaves nothing behind: not its change, not its new key, not its
	// deletion.
	boom := errors.New("boom")
	if err := s.Update(func(tx Tx) error {
		if err := PutJSON(tx, Workspaces, "ws-a", rec{"ws-a", "AVAILABLE"}); err != nil {
			return err
		}
		if err := PutJSON(tx, Workspaces, "ws-c", rec{"ws-c", "PENDING"}); err != nil {
			return err
		}
		if err := tx.Delete(Workspaces, "ws-b"); err != nil {
			return err
		}
		return boom
	}); !errors.Is(err, boom) {
		t.Fatalf("Update returned %v", err)
	}
	// Reopen: what was committed is durable, in key order.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t)
	defer s.Close()
	var got []rec
	if err := s.View(func(tx Tx) error {
		var err error
		got, err = ListJSON[rec](tx, Workspaces)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].ID != "ws-a" || got[0].State != "PENDING" || got[1].ID != "ws-b" {
		t.Fatalf("got %+v", got)
	}
	if err := s.View(func(tx Tx) error {
		_, err := GetJSON[rec](tx, Workspaces, "ws-zzz")
		return err
	}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing key: %v", err)
	}
	if err := s.Update(func(tx Tx) error { return tx.Delete(Workspaces, "ws-a") }); err != nil {
		t.Fatal(err)
	}
	if err := s.View(func(tx Tx) error { _, err := tx.Get(Workspaces, "ws-a"); return err }); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleted key: %v", err)
	}
	// An empty bucket lists nothing; a missing key deletes without error.
	if err := s.View(func(tx Tx) error {
		return tx.ForEach("nothing", func(k string, _ []byte) error { return fmt.Errorf("key %s in an empty bucket", k) })
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.Update(func(tx Tx) error { return tx.Delete(Workspaces, "ws-never") }); err != nil {
		t.Fatal(err)
	}
}

func keys(t *testing.T, s Store, bucket string) []string {
	t.Helper()
	var out []string
	if err := s.View(func(tx Tx) error {
		return tx.ForEach(bucket, func(k string, _ []byte) error { out = append(out, k); return nil })
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func keyOrder(t *testing.T, s Store) {
	defer s.Close()
	in := []string{"ws-2", "b", "ws-10", "a0", "a", "ws-1", "Z", "a/b", "ws-1-root"}
	if err := s.Update(func(tx Tx) error {
		for _, k := range in {
			if err := tx.Put("order", k, []byte(k)); err != nil {
				return err
			}
		}
		return tx.Put("order2", "x", []byte("another bucket"))
	}); err != nil {
		t.Fatal(err)
	}
	want := slices.Clone(in)
	slices.Sort(want) // byte order, as bbolt keeps keys
	if got := keys(t, s, "order"); !slices.Equal(got, want) {
		t.Fatalf("ForEach order %v, want %v", got, want)
	}
	// Many more keys than one etcd range page, still in order and all there.
	if err := s.Update(func(tx Tx) error {
		for i := range 1200 {
			if err := tx.Put("many", fmt.Sprintf("k%05d", 1199-i), []byte(strconv.Itoa(i))); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	got := keys(t, s, "many")
	if len(got) != 1200 || !slices.IsSorted(got) {
		t.Fatalf("%d keys, sorted %v", len(got), slices.IsSorted(got))
	}
}

func readsYourWrites(t *testing.T, s Store) {
	defer s.Close()
	if err := s.Update(func(tx Tx) error {
		for _, k := range []string{"a", "c", "e"} {
			if err := tx.Put("ryw", k, []byte("old-"+k)); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.Update(func(tx Tx) error {
		if err := tx.Put("ryw", "a", []byte("new-a")); err != nil {
			return err
		}
		if err := tx.Put("ryw", "b", []byte("new-b")); err != nil {
			return err
		}
		if err := tx.Delete("ryw", "c"); err != nil {
			return err
		}
		if v, err := tx.Get("ryw", "a"); err != nil || string(v) != "new-a" {
			return fmt.Errorf("Get a after Put: %q %v", v, err)
		}
		if v, err := tx.Get("ryw", "b"); err != nil || string(v) != "new-b" {
			return fmt.Errorf("Get b after Put: %q %v", v, err)
		}
		if _, err := tx.Get("ryw", "c"); !errors.Is(err, ErrNotFound) {
			return fmt.Errorf("Get c after Delete: %v", err)
		}
		var seen []string
		if err := tx.ForEach("ryw", func(k string, v []byte) error { seen = append(seen, k+"="+string(v)); return nil }); err != nil {
			return err
		}
		if want := []string{"a=new-a", "b=new-b", "e=old-e"}; !slices.Equal(seen, want) {
			return fmt.Errorf("ForEach inside Update: %v, want %v", seen, want)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if got := keys(t, s, "ryw"); !slices.Equal(got, []string{"a", "b", "e"}) {
		t.Fatalf("after commit: %v", got)
	}
}

// concurrent: read-modify-write from many goroutines loses no update, a create-if-absent
// has exactly one winner, and a count-limited insert never overshoots the limit.
func concurrent(t *testing.T, s Store) {
	defer s.Close()
	const workers, rounds = 8, 10
	var wg sync.WaitGroup
	var mu sync.Mutex
	var winners int
	errs := make(chan error, workers*(rounds+2))
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range rounds {
				errs <- s.Update(func(tx Tx) error {
					n := 0
					if v, err := tx.Get("conc", "counter"); err == nil {
						n, _ = strconv.Atoi(string(v))
					} else if !errors.Is(err, ErrNotFound) {
						return err
					}
					return tx.Put("conc", "counter", []byte(strconv.Itoa(n+1)))
				})
			}
			won := false
			errs <- s.Update(func(tx Tx) error {
				won = false // fn may run again: its effects start afresh
				if _, err := tx.Get("conc", "lock"); err == nil {
					return nil
				} else if !errors.Is(err, ErrNotFound) {
					return err
				}
				won = true
				return tx.Put("conc", "lock", []byte(strconv.Itoa(w)))
			})
			if won {
				mu.Lock()
				winners++
				mu.Unlock()
			}
			// At most 3 keys in bucket "quota", whoever inserts.
			errs <- s.Update(func(tx Tx) error {
				n := 0
				if err := tx.ForEach("quota", func(string, []byte) error { n++; return nil }); err != nil {
					return err
				}
				if n >= 3 {
					return nil
				}
				return tx.Put("quota", fmt.Sprintf("w%d", w), nil)
			})
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	var counter []byte
	if err := s.View(func(tx Tx) error { var err error; counter, err = tx.Get("conc", "counter"); return err }); err != nil {
		t.Fatal(err)
	}
	if string(counter) != strconv.Itoa(workers*rounds) {
		t.Errorf("counter %s after %d increments: updates were lost", counter, workers*rounds)
	}
	if winners != 1 {
		t.Errorf("%d create-if-absent winners, want 1", winners)
	}
	if n := len(keys(t, s, "quota")); n != 3 {
		t.Errorf("%d keys in a bucket limited to 3", n)
	}
}

func watch(t *testing.T, s Store) {
	defer s.Close()
	w, ok := s.(Watcher)
	if !ok {
		t.Fatal("the store is not a Watcher")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	all := w.Watch(ctx, "watched", "", 0)
	mine := w.Watch(ctx, "watched", "host-1/", 0)
	time.Sleep(200 * time.Millisecond) // the watches are established (etcd's asynchronously)
	steps := []func(Tx) error{
		func(tx Tx) error { return tx.Put("watched", "host-1/ws-a", []byte("1")) },
		func(tx Tx) error { return tx.Put("other", "host-1/ws-a", []byte("other bucket")) },
		func(tx Tx) error { return tx.Put("watched", "host-2/ws-b", []byte("2")) },
		func(tx Tx) error { return tx.Delete("watched", "host-1/ws-a") },
	}
	for _, fn := range steps {
		if err := s.Update(fn); err != nil {
			t.Fatal(err)
		}
	}
	recv := func(ch <-chan Event, n int) []Event {
		t.Helper()
		var out []Event
		for len(out) < n {
			select {
			case ev, ok := <-ch:
				if !ok {
					t.Fatalf("watch closed after %v", out)
				}
				if ev.Err != nil {
					t.Fatalf("watch error %v", ev.Err)
				}
				out = append(out, ev)
			case <-time.After(10 * time.Second):
				t.Fatalf("got %d events of %d: %+v", len(out), n, out)
			}
		}
		return out
	}
	evs := recv(all, 3)
	if evs[0].Key != "host-1/ws-a" || string(evs[0].Value) != "1" || evs[0].Deleted ||
		evs[1].Key != "host-2/ws-b" || string(evs[1].Value) != "2" ||
		evs[2].Key != "host-1/ws-a" || !evs[2].Deleted || evs[2].Value != nil {
		t.Fatalf("events %+v", evs)
	}
	if !(evs[0].Revision < evs[1].Revision && evs[1].Revision < evs[2].Revision) {
		t.Fatalf("revisions not increasing: %+v", evs)
	}
	m := recv(mine, 2)
	if m[0].Key != "host-1/ws-a" || m[1].Key != "host-1/ws-a" || !m[1].Deleted {
		t.Fatalf("prefix watch: %+v", m)
	}
	// Resumed after the first event: the later two, nothing before.
	resumed := recv(w.Watch(ctx, "watched", "", evs[0].Revision), 2)
	if resumed[0].Revision != evs[1].Revision || resumed[1].Revision != evs[2].Revision {
		t.Fatalf("resumed %+v, want revisions %d, %d", resumed, evs[1].Revision, evs[2].Revision)
	}
	// Ending the context closes the channel.
	c2, cancel2 := context.WithCancel(ctx)
	ch := w.Watch(c2, "watched", "", 0)
	cancel2()
	select {
	case _, ok := <-ch:
		for ok {
			_, ok = <-ch
		}
	case <-time.After(5 * time.Second):
		t.Fatal("watch not closed after its context ended")
	}
}

func TestBoltSecondOpenFailsFast(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store.db")
	s, err := OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := OpenBolt(path); err == nil {
		t.Fatal("a second open of a locked store succeeded")
	}
}

// TestBoltWatchResumeBeyondHistory: bbolt keeps a short history in memory; a watch from
// before it is told so, not silently given a gap.
func TestBoltWatchResumeBeyondHistory(t *testing.T) {
	s, err := OpenBolt(filepath.Join(t.TempDir(), "store.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := range historyLen + 10 {
		if err := s.Update(func(tx Tx) error { return tx.Put("b", strconv.Itoa(i), nil) }); err != nil {
			t.Fatal(err)
		}
	}
	ev := <-s.Watch(context.Background(), "b", "", 1)
	if !errors.Is(ev.Err, ErrCompacted) {
		t.Fatalf("got %+v, want ErrCompacted", ev)
	}
	// Close ends watches with ErrClosed.
	ch := s.Watch(context.Background(), "b", "", 0)
	s.Close()
	if ev := <-ch; !errors.Is(ev.Err, ErrClosed) {
		t.Fatalf("after Close: %+v", ev)
	}
}
