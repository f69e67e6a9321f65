package store

import (
	"context"
	"strings"
	"sync"
)

// hub fans committed changes out to in-process watchers (the bbolt store's Watch). A
// commit never waits for a watcher: each has its own unbounded queue, drained by a
// goroutine into its channel.
type hub struct {
	mu      sync.Mutex
	subs    map[*sub]struct{}
	history []Event // the last historyLen changes, so a watch can resume shortly after
	rev     int64   // the last published revision
	closed  bool
}

const historyLen = 1024

type sub struct {
	bucket, prefix string
	mu             sync.Mutex
	queue          []Event
	wake           chan struct{}
}

func (s *sub) matches(ev Event) bool {
	return ev.Bucket == s.bucket && strings.HasPrefix(ev.Key, s.prefix)
}

func (s *sub) push(evs ...Event) {
	s.mu.Lock()
	s.queue = append(s.queue, evs...)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// publish hands one commit's changes to the watchers. Callers serialise commits and call
// it in commit order.
func (h *hub) publish(rev int64, evs []Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.rev = rev
	for _, ev := range evs {
		h.history = append(h.history, ev)
	}
	if n := len(h.history) - historyLen; n > 0 {
		h.history = append([]Event(nil), h.history[n:]...)
	}
	for s := range h.subs {
		var mine []Event
		for _, ev := range evs {
			if s.matches(ev) {
				mine = append(mine, ev)
			}
		}
		if len(mine) > 0 {
			s.push(mine...)
		}
	}
}

// watch starts a watcher. current is the store's revision now (used when nothing was
// published yet in this process).
func (h *hub) watch(ctx context.Context, bucket, prefix string, from, current int64) <-chan Event {
	out := make(chan Event)
	s := &sub{bucket: bucket, prefix: prefix, wake: make(chan struct{}, 1)}
	h.mu.Lock()
	if h.rev < current {
		h.rev = current
	}
	switch {
	case h.closed:
		s.push(Event{Bucket: bucket, Err: ErrClosed})
	case from > 0 && from < h.rev:
		// Replay from history, if it reaches back far enough.
		oldest := h.rev + 1
		if len(h.history) > 0 {
			oldest = h.history[0].Revision
		}
		if from+1 < oldest {
			s.push(Event{Bucket: bucket, Err: ErrCompacted})
			break
		}
		for _, ev := range h.history {
			if ev.Revision > from && s.matches(ev) {
				s.push(ev)
			}
		}
		fallthrough
	default:
		if h.subs == nil {
			h.subs = map[*sub]struct{}{}
		}
		h.subs[s] = struct{}{}
	}
	h.mu.Unlock()
	go func() {
		defer close(out)
		defer func() {
			h.mu.Lock()
			delete(h.subs, s)
			h.mu.Unlock()
		}()
		for {
			s.mu.Lock()
			q := s.queue
			s.queue = nil
			s.mu.Unlock()
			for _, ev := range q {
				select {
				case out <- ev:
				case <-ctx.Done():
					return
				}
				if ev.Err != nil {
					return
				}
			}
			select {
			case <-s.wake:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}

// close ends every watch with ErrClosed.
func (h *hub) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for s := range h.subs {
		s.push(Event{Bucket: s.bucket, Err: ErrClosed})
		delete(h.subs, s)
	}
}
