package tags

import (
	"net/netip"
	"testing"
	"time"
)

func TestTags(t *testing.T) {
	now := time.Date(2026, 1, 1, 9, 0, 0, 0, time.UTC)
	s := NewStore(60*time.Second, func() time.Time { return now })
	var ended []EndReason
	s.OnEnd = func(_ Tag, r EndReason) { ended = append(ended, r) }
	me, other := netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("192.0.2.11")
	issue := func(user string) Tag {
		tag, err := s.Issue(Tag{DirectoryID: "d-1", UserName: user, WorkspaceID: "ws-" + user, Client: me})
		if err != nil {
			t.Fatal(err)
		}
		return tag
	}
	a := issue("alice")
	if len(a.Value) != Length || a.Expires.Sub(a.Issued) != 60*time.Second {
		t.Fatalf("tag %+v", a)
	}
	// Single use, bound to the address.
	if _, err := s.RedeemPlain(a.Value, other); err != ErrInvalid {
		t.Error("redeemed from another address")
	}
	if _, err := s.RedeemPlain(a.Value, me); err != ErrInvalid {
		t.Error("a tag shown to the wrong address must be burnt")
	}
	b := issue("bob")
	if got, err := s.RedeemPlain(b.Value, me); err != nil || got.WorkspaceID != "ws-bob" {
		t.Errorf("redeem: %+v %v", got, err)
	}
	if _, err := s.RedeemPlain(b.Value, me); err != ErrInvalid {
		t.Error("redeemed twice")
	}
	// Expiry at 60 s.
	c := issue("carol")
	now = now.Add(60 * time.Second)
	if _, err := s.RedeemPlain(c.Value, me); err != ErrInvalid {
		t.Error("redeemed after 60 s")
	}
	d := issue("dave")
	now = now.Add(61 * time.Second)
	s.Sweep()
	if s.Outstanding() != 0 {
		t.Errorf("%d tags outstanding after the sweep", s.Outstanding())
	}
	// A new tag for the same user and WorkSpace supersedes the old one.
	e1 := issue("erin")
	e2 := issue("erin")
	if _, err := s.RedeemPlain(e1.Value, me); err != ErrInvalid {
		t.Error("a superseded tag still works")
	}
	// VNC auth: the first 8 characters answer the challenge.
	ch := [16]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	if got, err := s.RedeemVNC(ch, VNCResponse(e2.Value, ch), me); err != nil || got.UserName != "erin" {
		t.Errorf("VNC redeem: %v", err)
	}
	_ = d
	want := []EndReason{Refused, Expired, Expired, Superseded}
	if len(ended) != len(want) {
		t.Fatalf("ended %v, want %v", ended, want)
	}
	for i := range want {
		if ended[i] != want[i] {
			t.Errorf("ended %v, want %v", ended, want)
		}
	}
}

// TestVNCKeyStrength: the 8 characters VNC auth uses carry 48 random bits — no two of many
// tags share them — and the guess budget revokes an address's tags.
func TestVNCKeyStrength(t *testing.T) {
	s := NewStore(time.Minute, nil)
	seen := map[string]bool{}
	for i := 0; i < 5000; i++ {
		tag, _ := s.Issue(Tag{UserName: "u", WorkspaceID: "w", DirectoryID: "d", Client: netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})})
		if seen[tag.Value[:8]] {
			t.Fatal("two tags share their first 8 characters")
		}
		seen[tag.Value[:8]] = true
	}
	me := netip.MustParseAddr("192.0.2.10")
	tag, _ := s.Issue(Tag{UserName: "u", WorkspaceID: "w", DirectoryID: "d", Client: me})
	var ch [16]byte
	for i := 0; i < MaxFailuresPerAddress; i++ {
		if _, err := s.RedeemVNC(ch, VNCResponse("guess"+string(rune('a'+i)), ch), me); err != ErrInvalid {
			t.Fatal("a guess succeeded")
		}
	}
	if _, err := s.RedeemVNC(ch, VNCResponse(tag.Value, ch), me); err != ErrInvalid {
		t.Error("the tag survived the guess budget")
	}
}

// TestNATAddress: many users behind one address each keep their tag; at the cap a new
// allocation is refused (ErrTooMany) and no other user's tag ends; expired ones make room.
func TestNATAddress(t *testing.T) {
	now := time.Date(2026, 1, 1, 9, 0, 0, 0, time.UTC)
	s := NewStore(60*time.Second, func() time.Time { return now })
	var ended []Tag
	s.OnEnd = func(t Tag, _ EndReason) { ended = append(ended, t) }
	nat := netip.MustParseAddr("198.51.100.1")
	var first []Tag
	for i := 0; i < MaxPerAddress; i++ {
		u := "user" + string(rune('A'+i/26)) + string(rune('a'+i%26))
		tag, err := s.Issue(Tag{DirectoryID: "d-1", UserName: u, WorkspaceID: "ws-" + u, Client: nat})
		if err != nil {
			t.Fatalf("tag %d: %v", i, err)
		}
		first = append(first, tag)
	}
	if _, err := s.Issue(Tag{DirectoryID: "d-1", UserName: "latecomer", WorkspaceID: "ws-late", Client: nat}); err != ErrTooMany {
		t.Fatalf("at the cap: %v, want ErrTooMany", err)
	}
	if len(ended) != 0 {
		t.Fatalf("%d other users' tags ended for a new allocation", len(ended))
	}
	if got, err := s.RedeemPlain(first[0].Value, nat); err != nil || got.UserName != first[0].UserName {
		t.Errorf("the oldest user's tag no longer works: %v", err)
	}
	// Expired tags make room.
	now = now.Add(61 * time.Second)
	if _, err := s.Issue(Tag{DirectoryID: "d-1", UserName: "latecomer", WorkspaceID: "ws-late", Client: nat}); err != nil {
		t.Errorf("after the others expired: %v", err)
	}
}

// TestFailuresForgotten: failed VNC authentications are counted only for addresses that
// hold tags, and forgotten with their last tag: guesses from many addresses leave nothing.
func TestFailuresForgotten(t *testing.T) {
	now := time.Date(2026, 1, 1, 9, 0, 0, 0, time.UTC)
	s := NewStore(60*time.Second, func() time.Time { return now })
	var ch [16]byte
	for i := 0; i < 1000; i++ {
		s.RedeemVNC(ch, VNCResponse("guess", ch), netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}))
	}
	if n := s.FailingAddresses(); n != 0 {
		t.Errorf("%d addresses without tags are remembered", n)
	}
	me := netip.MustParseAddr("192.0.2.10")
	s.Issue(Tag{DirectoryID: "d-1", UserName: "u", WorkspaceID: "w", Client: me})
	s.RedeemVNC(ch, VNCResponse("guess", ch), me)
	if n := s.FailingAddresses(); n != 1 {
		t.Errorf("%d failing addresses, want 1", n)
	}
	now = now.Add(61 * time.Second)
	s.Sweep()
	if n := s.FailingAddresses(); n != 0 {
		t.Errorf("the failure count outlived the address's tags (%d)", n)
	}
}
