package api

import (
	"math"
	"sync"
	"time"
)

// Limiter is the guide's API throttle (catalog §22.4): a token bucket per principal that
// starts full at burst tokens and refills at rate tokens a second, never above burst. A
// call takes one token; a call that finds none is throttled (ThrottlingException), and a
// client retrying it later takes a token like any other call. With rate 2 and burst 5 it
// reproduces the guide's nine-second worked table (TestLimiterGuideTable).
type Limiter struct {
	rate  float64
	burst float64
	now   func() time.Time

	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

// NewLimiter returns a Limiter; now may be nil (time.Now).
func NewLimiter(rate float64, burst int, now func() time.Time) *Limiter {
	if now == nil {
		now = time.Now
	}
	return &Limiter{rate: rate, burst: float64(burst), now: now, buckets: map[string]*bucket{}}
}

// refill brings principal's bucket up to now; l.mu is held.
func (l *Limiter) refill(principal string) *bucket {
	now := l.now()
	b, ok := l.buckets[principal]
	if !ok {
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[principal] = b
		return b
	}
	if elapsed := now.Sub(b.last); elapsed > 0 {
		b.tokens = math.Min(l.burst, b.tokens+elapsed.Seconds()*l.rate)
		b.last = now
	}
	return b
}

// Allow takes a token for one call by principal, reporting false if the call is throttled.
func (l *Limiter) Allow(principal string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.refill(principal)
	// A hair of tolerance: 0.5 s at 2/s is 0.99999… tokens in floating point.
	if b.tokens < 1-1e-9 {
		return false
	}
	b.tokens = math.Max(0, b.tokens-1)
	return true
}

// Available is how many calls principal could make now without being throttled: the
// guide's "net requests allowed".
func (l *Limiter) Available(principal string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return int(math.Floor(l.refill(principal).tokens + 1e-9))
}

// RetryAfter is how long principal must wait for its next token.
func (l *Limiter) RetryAfter(principal string) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.refill(principal)
	if b.tokens >= 1 || l.rate <= 0 {
		return 0
	}
	return time.Duration((1 - b.tokens) / l.rate * float64(time.Second))
}
