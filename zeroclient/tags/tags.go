// Package tags issues and redeems connect tags: the one-time credential a client gets from
// allocate-resource and presents to the streaming gateway. A tag is 128 random bits,
// written as 22 URL-safe base64 characters; it is single use, valid for a short TTL (60 s),
// and bound to the user, the WorkSpace and the client's address. Tags live in memory only
// (the guide: credentials are never persisted on the appliance side).
//
// RFB's VNC authentication uses only the first 8 characters of a password (its DES key), so
// the tag is written so that those 8 carry 48 random bits, and a tag redeemed that way is
// additionally protected by the address binding, the TTL and a guess budget: after
// MaxFailuresPerAddress failed VNC authentications from an address, every tag bound to
// that address is revoked. VeNCrypt Plain carries the whole tag (128 bits).
package tags

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"net/netip"
	"sync"
	"time"

	"deskhost/zeroclient/rfb"
)

// Length is the number of characters in a tag.
const Length = 22

// MaxFailuresPerAddress is how many failed VNC-auth attempts an address gets before its tags
// are revoked.
const MaxFailuresPerAddress = 3

// MaxPerAddress bounds outstanding tags per address (and so the work of one VNC-auth
// check): generous, because many users may share one NAT address.
const MaxPerAddress = 64

// ErrInvalid is returned for an unknown, used, expired, revoked or foreign tag; the gateway
// tells the client nothing more.
var ErrInvalid = errors.New("connect tag is not valid")

// ErrTooMany is returned when an address holds MaxPerAddress outstanding tags: the new
// allocation is refused rather than ending another user's tag behind the same NAT.
var ErrTooMany = errors.New("too many outstanding connect tags for this client address")

// Tag is an issued connect tag and what it grants.
type Tag struct {
	Value       string
	SessionID   string
	DirectoryID string
	UserName    string
	WorkspaceID string
	Client      netip.Addr
	Issued      time.Time
	Expires     time.Time
}

// EndReason says why a tag left the store without being redeemed.
type EndReason string

const (
	Expired    EndReason = "expired"
	Superseded EndReason = "superseded" // a newer tag was issued for the same user, WorkSpace and address
	Revoked    EndReason = "revoked"    // too many failed authentications from its address
	Refused    EndReason = "refused"    // presented from another address or too late
)

// Store holds outstanding tags.
type Store struct {
	ttl time.Duration
	now func() time.Time
	// OnEnd is called (outside the lock) for every tag that ends unredeemed.
	OnEnd func(Tag, EndReason)

	mu     sync.Mutex
	byHash map[[32]byte]*Tag
	byAddr map[netip.Addr][]*Tag
	// fails counts failed VNC authentications of addresses that hold tags (only those can
	// be guessed at); an address's count goes when its last tag does.
	fails map[netip.Addr]int
}

// NewStore makes a store whose tags live ttl.
func NewStore(ttl time.Duration, now func() time.Time) *Store {
	if now == nil {
		now = time.Now
	}
	return &Store{ttl: ttl, now: now, byHash: map[[32]byte]*Tag{}, byAddr: map[netip.Addr][]*Tag{}, fails: map[netip.Addr]int{}}
}

// Issue makes a fresh tag for t's user, WorkSpace and client address (t.Value, Issued and
// Expires are filled in). An earlier unredeemed tag for the same user and WorkSpace at the
// same address ends. Other users' tags never end for a new one: with MaxPerAddress
// outstanding at the address, expired ones are dropped, and if none was, ErrTooMany.
func (s *Store) Issue(t Tag) (Tag, error) {
	var raw [16]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return Tag{}, err
	}
	t.Value = base64.RawURLEncoding.EncodeToString(raw[:])
	t.Client = t.Client.Unmap()
	t.Issued = s.now()
	t.Expires = t.Issued.Add(s.ttl)
	var ended []Tag
	var reasons []EndReason
	s.mu.Lock()
	for _, old := range s.byAddr[t.Client] {
		if old.UserName == t.UserName && old.WorkspaceID == t.WorkspaceID && old.DirectoryID == t.DirectoryID {
			ended, reasons = append(ended, *old), append(reasons, Superseded)
		}
	}
	for _, old := range ended {
		s.removeLocked(old.Value)
	}
	if len(s.byAddr[t.Client]) >= MaxPerAddress {
		for _, old := range append([]*Tag(nil), s.byAddr[t.Client]...) {
			if !t.Issued.Before(old.Expires) {
				ended, reasons = append(ended, *old), append(reasons, Expired)
				s.removeLocked(old.Value)
			}
		}
	}
	if len(s.byAddr[t.Client]) >= MaxPerAddress {
		s.mu.Unlock()
		s.notify(ended, reasons)
		return Tag{}, ErrTooMany
	}
	c := t
	s.byHash[sha256.Sum256([]byte(t.Value))] = &c
	s.byAddr[t.Client] = append(s.byAddr[t.Client], &c)
	s.mu.Unlock()
	s.notify(ended, reasons)
	return t, nil
}

func (s *Store) notify(ended []Tag, reasons []EndReason) {
	if s.OnEnd == nil {
		return
	}
	for i, t := range ended {
		s.OnEnd(t, reasons[i])
	}
}

// removeLocked drops a tag from both indexes.
func (s *Store) removeLocked(value string) {
	h := sha256.Sum256([]byte(value))
	t, ok := s.byHash[h]
	if !ok {
		return
	}
	delete(s.byHash, h)
	list := s.byAddr[t.Client]
	for i, x := range list {
		if x == t {
			list = append(list[:i:i], list[i+1:]...)
			break
		}
	}
	if len(list) == 0 {
		delete(s.byAddr, t.Client)
		delete(s.fails, t.Client) // nothing left to guess at
	} else {
		s.byAddr[t.Client] = list
	}
}

// RedeemPlain uses the tag whose full value is value, presented from address from. The
// tag is consumed whether or not it is then accepted: a tag shown to the wrong address or
// too late is burnt.
func (s *Store) RedeemPlain(value string, from netip.Addr) (Tag, error) {
	from = from.Unmap()
	h := sha256.Sum256([]byte(value))
	s.mu.Lock()
	t, ok := s.byHash[h]
	if !ok {
		s.mu.Unlock()
		return Tag{}, ErrInvalid
	}
	tag := *t
	s.removeLocked(tag.Value)
	s.mu.Unlock()
	if !s.now().Before(tag.Expires) {
		s.notify([]Tag{tag}, []EndReason{Expired})
		return Tag{}, ErrInvalid
	}
	if tag.Client != from {
		s.notify([]Tag{tag}, []EndReason{Refused})
		return Tag{}, ErrInvalid
	}
	return tag, nil
}

// RedeemVNC finds the tag, among those bound to address from, whose first 8 characters
// answer the VNC-auth challenge with response, and consumes it. A failure counts toward
// the address's guess budget.
func (s *Store) RedeemVNC(challenge, response [16]byte, from netip.Addr) (Tag, error) {
	from = from.Unmap()
	now := s.now()
	var ended []Tag
	var reasons []EndReason
	s.mu.Lock()
	var match *Tag
	for _, t := range s.byAddr[from] {
		want := VNCResponse(t.Value, challenge)
		if subtle.ConstantTimeCompare(want[:], response[:]) == 1 && match == nil {
			match = t
		}
	}
	if match != nil && now.Before(match.Expires) {
		tag := *match
		s.removeLocked(tag.Value)
		delete(s.fails, from)
		s.mu.Unlock()
		return tag, nil
	}
	if match != nil {
		ended, reasons = append(ended, *match), append(reasons, Expired)
		s.removeLocked(match.Value) // expired: burnt
	}
	if len(s.byAddr[from]) > 0 {
		s.fails[from]++
	}
	if s.fails[from] >= MaxFailuresPerAddress {
		for _, t := range append([]*Tag(nil), s.byAddr[from]...) {
			ended, reasons = append(ended, *t), append(reasons, Revoked)
			s.removeLocked(t.Value)
		}
		delete(s.fails, from)
	}
	s.mu.Unlock()
	s.notify(ended, reasons)
	return Tag{}, ErrInvalid
}

// Sweep ends expired tags (call it periodically).
func (s *Store) Sweep() {
	now := s.now()
	var ended []Tag
	var reasons []EndReason
	s.mu.Lock()
	for _, t := range s.byHash {
		if !now.Before(t.Expires) {
			ended, reasons = append(ended, *t), append(reasons, Expired)
		}
	}
	for _, t := range ended {
		s.removeLocked(t.Value)
	}
	s.mu.Unlock()
	s.notify(ended, reasons)
}

// FailingAddresses is the number of addresses whose failed VNC authentications are being
// counted (tests: it must not grow with addresses that hold no tags).
func (s *Store) FailingAddresses() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.fails)
}

// Outstanding is the number of unredeemed tags.
func (s *Store) Outstanding() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.byHash)
}

// VNCResponse is RFB's VNC authentication response for password (see rfb.VNCResponse).
func VNCResponse(password string, challenge [16]byte) [16]byte {
	return rfb.VNCResponse(password, challenge)
}
