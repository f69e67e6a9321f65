package session

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestLimits(t *testing.T) {
	now := time.Date(2026, 1, 1, 9, 0, 0, 0, time.UTC)
	s := NewStore(Limits{IdleBeforeLogin: 2 * time.Minute, IdleAfterLogin: 20 * time.Minute, Absolute: time.Hour, Max: 3},
		func() time.Time { return now })
	ip := netip.MustParseAddr("192.0.2.1")
	a, _ := s.New(ip, "")
	now = now.Add(119 * time.Second)
	if _, ok := s.Get(a.ID, ip); !ok {
		t.Fatal("gone before the pre-login idle limit")
	}
	now = now.Add(time.Second)
	if _, ok := s.Get(a.ID, ip); ok {
		t.Fatal("alive after 2 minutes idle before login")
	}
	b, _ := s.New(ip, "")
	b.SetStage(Authenticated)
	for i := 0; i < 3; i++ { // kept alive by use, 19 minutes apart
		now = now.Add(19 * time.Minute)
		x, ok := s.Get(b.ID, ip)
		if !ok {
			t.Fatalf("logged-in session gone after %d × 19 min of use", i+1)
		}
		s.Touch(x)
	}
	now = now.Add(4 * time.Minute) // 61 minutes old
	if _, ok := s.Get(b.ID, ip); ok {
		t.Fatal("alive past the absolute limit")
	}
	// Bye.
	c, _ := s.New(ip, "")
	s.Delete(c.ID)
	if _, ok := s.Get(c.ID, ip); ok {
		t.Fatal("alive after bye")
	}
	// At the limit, a new session evicts the oldest not logged in, never a logged-in one.
	l1, _ := s.New(ip, "")
	l1.SetStage(Authenticated)
	l2, _ := s.New(ip, "")
	l2.SetStage(Authenticated)
	u, _ := s.New(ip, "")
	l3, err := s.New(ip, "")
	if err != nil {
		t.Fatal(err)
	}
	l3.SetStage(Authenticated)
	if _, ok := s.Get(u.ID, ip); ok {
		t.Error("the unauthenticated session was not evicted")
	}
	if _, ok := s.Get(l1.ID, ip); !ok {
		t.Error("a logged-in session was evicted")
	}
	if _, err := s.New(ip, ""); err != ErrFull {
		t.Errorf("with only logged-in sessions: %v, want ErrFull", err)
	}
}

// TestBoundToAddress: a session is found only from the address that made it, by cookie or
// by Client-Log-Id; a hello with the same log id starts over.
func TestBoundToAddress(t *testing.T) {
	now := time.Date(2026, 1, 1, 9, 0, 0, 0, time.UTC)
	s := NewStore(Limits{IdleBeforeLogin: 2 * time.Minute, IdleAfterLogin: 20 * time.Minute, Absolute: time.Hour, Max: 100},
		func() time.Time { return now })
	ip, other := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	a, _ := s.New(ip, "a1ff3a80-8801-1038-a9bd-00505680aded")
	if _, ok := s.Get(a.ID, other); ok {
		t.Error("a session was found from another address")
	}
	if x, ok := s.Get(a.ID, netip.MustParseAddr("::ffff:192.0.2.1")); !ok || x != a {
		t.Error("the session is not found from its own (IPv4-mapped) address")
	}
	if x, ok := s.ByLogID("a1ff3a80-8801-1038-a9bd-00505680aded", ip); !ok || x != a {
		t.Error("not found by its Client-Log-Id")
	}
	if _, ok := s.ByLogID("a1ff3a80-8801-1038-a9bd-00505680aded", other); ok {
		t.Error("found by Client-Log-Id from another address")
	}
	b, _ := s.New(ip, "a1ff3a80-8801-1038-a9bd-00505680aded")
	if _, ok := s.Get(a.ID, ip); ok {
		t.Error("a new hello with the same Client-Log-Id left the old session")
	}
	if x, _ := s.ByLogID("a1ff3a80-8801-1038-a9bd-00505680aded", ip); x != b {
		t.Error("the log id does not lead to the new session")
	}
	s.Delete(b.ID)
	if _, ok := s.ByLogID("a1ff3a80-8801-1038-a9bd-00505680aded", ip); ok {
		t.Error("found by log id after bye")
	}
	for _, tc := range []struct {
		h  string
		ok bool
	}{{"a1ff3a80-8801-1038-a9bd-00505680aded", true}, {"short", false}, {"has space in it", false}, {"x\r\nSet-Cookie:1", false},
		{strings.Repeat("a", MaxLogID), true}, {strings.Repeat("a", MaxLogID+1), false}} {
		if _, ok := ParseLogID(tc.h); ok != tc.ok {
			t.Errorf("ParseLogID(%q) = %v", tc.h, ok)
		}
	}
}

// TestHelloFloodKeepsMidLogin: a flood of hellos, from one address or from many, never
// evicts a session whose password was accepted (MFA under way) or that is logged in.
func TestHelloFloodKeepsMidLogin(t *testing.T) {
	now := time.Date(2026, 1, 1, 9, 0, 0, 0, time.UTC)
	s := NewStore(Limits{IdleBeforeLogin: 2 * time.Minute, IdleAfterLogin: 20 * time.Minute, Absolute: time.Hour, Max: 50, MaxPerAddress: 10},
		func() time.Time { return now })
	user := netip.MustParseAddr("198.51.100.7")
	mfa, _ := s.New(user, "")
	mfa.SetStage(NeedPasscode)
	in, _ := s.New(user, "")
	in.SetStage(Authenticated)
	greeted, _ := s.New(netip.MustParseAddr("198.51.100.8"), "")
	// From the user's own address (a NAT): only that address's greeted sessions churn.
	for i := 0; i < 100; i++ {
		now = now.Add(time.Millisecond)
		if _, err := s.New(user, ""); err != nil {
			t.Fatalf("hello %d from the shared address: %v", i, err)
		}
	}
	if _, ok := s.Get(greeted.ID, netip.MustParseAddr("198.51.100.8")); !ok {
		t.Error("a flood from one address evicted another address's session")
	}
	// From many addresses.
	for i := 0; i < 1000; i++ {
		now = now.Add(time.Millisecond)
		s.New(netip.AddrFrom4([4]byte{203, 0, byte(i >> 8), byte(i)}), "")
	}
	if _, ok := s.Get(mfa.ID, user); !ok {
		t.Error("the flood evicted a session in the middle of MFA")
	}
	if _, ok := s.Get(in.ID, user); !ok {
		t.Error("the flood evicted a logged-in session")
	}
	if n := s.Len(); n > 50 {
		t.Errorf("%d sessions, over the limit of 50", n)
	}
}

// FuzzParseLogID: a Client-Log-Id header is taken only when it is 8–128 characters of
// the safe set (nothing that could split a header or a log line), and then unchanged.
func FuzzParseLogID(f *testing.F) {
	for _, s := range []string{"a1ff3a80-8801-1038-a9bd-00505680aded", "", "x\r\nSet-Cookie: a=b", "abc:def.ghi_jkl", strings.Repeat("9", 200)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		id, ok := ParseLogID(h)
		if !ok {
			if id != "" {
				t.Fatalf("refused %q but returned %q", h, id)
			}
			return
		}
		if id != h || len(id) < 8 || len(id) > MaxLogID {
			t.Fatalf("ParseLogID(%q) = %q", h, id)
		}
		if strings.ContainsAny(id, " \t\r\n;,=\"'<>&\\/") {
			t.Fatalf("accepted %q", id)
		}
	})
}

// TestResumeWhileStreaming: a logged-in session does not go idle while the gateway relays
// its WorkSpace, however long; the directory's resume timeout runs from the moment the
// relay ends; a session that timed out is reported once as ended by the timeout.
func TestResumeWhileStreaming(t *testing.T) {
	now := time.Date(2026, 1, 1, 9, 0, 0, 0, time.UTC)
	s := NewStore(Limits{IdleBeforeLogin: 2 * time.Minute, IdleAfterLogin: time.Hour, Absolute: 12 * time.Hour, Max: 10},
		func() time.Time { return now })
	ip := netip.MustParseAddr("192.0.2.1")
	a, _ := s.New(ip, "")
	s.LoggedIn(a, 5*time.Minute)
	s.Allocated(a, "ws-a")
	s.Streaming([]string{"ws-a", "ws-other"})
	now = now.Add(3 * time.Hour) // streaming: no broker request for hours
	if _, ok := s.Get(a.ID, ip); !ok {
		t.Fatal("a session went idle while its WorkSpace was being relayed")
	}
	s.Streaming([]string{"ws-other"}) // the connection dropped now
	now = now.Add(5*time.Minute - time.Second)
	if _, ok := s.Get(a.ID, ip); !ok {
		t.Fatal("gone within the 5-minute resume timeout after the drop")
	}
	now = now.Add(time.Second)
	if _, ok := s.Get(a.ID, ip); ok {
		t.Fatal("alive 5 minutes after the drop (resume timeout 5 minutes)")
	}
	if e, ok := s.EndedByTimeout(a.ID); !ok || e.ResumeTimeout != 5*time.Minute {
		t.Fatalf("ended: %+v %v", e, ok)
	}
	if _, ok := s.EndedByTimeout(a.ID); ok {
		t.Error("the ended session is reported twice")
	}
	// A session that never logged in leaves nothing behind.
	b, _ := s.New(ip, "")
	now = now.Add(time.Hour)
	s.Sweep()
	if _, ok := s.EndedByTimeout(b.ID); ok {
		t.Error("a pre-login session is reported as ended by the resume timeout")
	}
}
