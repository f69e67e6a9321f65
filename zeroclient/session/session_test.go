package session

import (
	"net/netip"
	"testing"
	"time"
)

func TestLimits(t *testing.T) {
	now := time.Date(2026, 1, 1, 9, 0, 0, 0, time.UTC)
	s := NewStore(Limits{IdleBeforeLogin: 2 * time.Minute, IdleAfterLogin: 20 * time.Minute, Absolute: time.Hour, Max: 3},
		func() time.Time { return now })
	ip := netip.MustParseAddr("192.0.2.1")
	a, _ := s.New(ip)
	now = now.Add(119 * time.Second)
	if _, ok := s.Get(a.ID); !ok {
		t.Fatal("gone before the pre-login idle limit")
	}
	now = now.Add(time.Second)
	if _, ok := s.Get(a.ID); ok {
		t.Fatal("alive after 2 minutes idle before login")
	}
	b, _ := s.New(ip)
	b.Stage = Authenticated
	for i := 0; i < 3; i++ { // kept alive by use, 19 minutes apart
		now = now.Add(19 * time.Minute)
		x, ok := s.Get(b.ID)
		if !ok {
			t.Fatalf("logged-in session gone after %d × 19 min of use", i+1)
		}
		s.Touch(x)
	}
	now = now.Add(4 * time.Minute) // 61 minutes old
	if _, ok := s.Get(b.ID); ok {
		t.Fatal("alive past the absolute limit")
	}
	// Bye.
	c, _ := s.New(ip)
	s.Delete(c.ID)
	if _, ok := s.Get(c.ID); ok {
		t.Fatal("alive after bye")
	}
	// At the limit, a new session evicts the oldest not logged in, never a logged-in one.
	l1, _ := s.New(ip)
	l1.Stage = Authenticated
	l2, _ := s.New(ip)
	l2.Stage = Authenticated
	u, _ := s.New(ip)
	l3, err := s.New(ip)
	if err != nil {
		t.Fatal(err)
	}
	l3.Stage = Authenticated
	if _, ok := s.Get(u.ID); ok {
		t.Error("the unauthenticated session was not evicted")
	}
	if _, ok := s.Get(l1.ID); !ok {
		t.Error("a logged-in session was evicted")
	}
	if _, err := s.New(ip); err != ErrFull {
		t.Errorf("with only logged-in sessions: %v, want ErrFull", err)
	}
}
