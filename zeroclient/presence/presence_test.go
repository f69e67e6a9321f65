package presence

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"
)

type fakeHostd struct {
	mu      sync.Mutex
	reports [][]string
	fail    bool
	got     chan []string
}

func (f *fakeHostd) ReportConnections(ctx context.Context, ids []string) error {
	f.mu.Lock()
	fail := f.fail
	f.mu.Unlock()
	if fail {
		f.got <- nil
		return errors.New("hostd is down")
	}
	f.mu.Lock()
	f.reports = append(f.reports, ids)
	f.mu.Unlock()
	f.got <- ids
	return nil
}

func (f *fakeHostd) next(t *testing.T, within time.Duration) []string {
	t.Helper()
	select {
	case ids := <-f.got:
		return ids
	case <-time.After(within):
		t.Fatalf("no report within %s", within)
		return nil
	}
}

// TestReporter: a report at start, one at each change, one every interval, retries while
// hostd fails, and a last one when stopped.
func TestReporter(t *testing.T) {
	var mu sync.Mutex
	list := []string{}
	set := func(ids ...string) {
		mu.Lock()
		list = ids
		mu.Unlock()
	}
	get := func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(list)
	}
	h := &fakeHostd{got: make(chan []string, 16)}
	r := New(get, h, 300*time.Millisecond, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()

	if ids := h.next(t, time.Second); len(ids) != 0 {
		t.Fatalf("first report %v, want none connected", ids)
	}
	set("ws-aaaaaaaaaa")
	start := time.Now()
	r.Changed()
	if ids := h.next(t, 100*time.Millisecond); !slices.Equal(ids, []string{"ws-aaaaaaaaaa"}) {
		t.Fatalf("after a session began: %v", ids)
	}
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Errorf("a change was reported after %s", d)
	}
	// Unchanged: the list goes again after the interval.
	start = time.Now()
	if ids := h.next(t, time.Second); !slices.Equal(ids, []string{"ws-aaaaaaaaaa"}) || time.Since(start) < 250*time.Millisecond {
		t.Fatalf("periodic report %v after %s", ids, time.Since(start))
	}
	// hostd fails: retried (after retryAfter, sooner than nothing), and the change still arrives.
	h.mu.Lock()
	h.fail = true
	h.mu.Unlock()
	set()
	r.Changed()
	if ids := h.next(t, time.Second); ids != nil {
		t.Fatalf("expected a failed attempt, got %v", ids)
	}
	h.mu.Lock()
	h.fail = false
	h.mu.Unlock()
	if ids := h.next(t, retryAfter+time.Second); len(ids) != 0 {
		t.Fatalf("after hostd came back: %v, want none connected", ids)
	}
	set("ws-bbbbbbbbbb")
	cancel()
	<-done
	var last []string
	for len(h.got) > 0 {
		last = <-h.got
	}
	if !slices.Equal(last, []string{"ws-bbbbbbbbbb"}) {
		t.Errorf("last report when stopped: %v", last)
	}
	// Changed on a nil reporter (no backend to tell) is harmless.
	var none *Reporter
	none.Changed()
}
