// Package session keeps broker sessions (the JSESSIONID cookie's state) in memory, with the
// three limits the issue names: idle before login, idle after login, and an absolute
// lifetime; bye removes one. The clock is injected for tests.
package session

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"net/netip"
	"sync"
	"time"

	"deskhost/internal/catalog"
	"deskhost/zeroclient/workspaces"
)

// Stage is how far a session has got.
type Stage int

const (
	// Greeted: hello received, not logged in.
	Greeted Stage = iota
	// NeedPasscode: password accepted, the MFA passcode is next.
	NeedPasscode
	// Authenticated: logged in.
	Authenticated
)

// Session is one client's broker session. The broker holds Mu while it handles a request,
// so one session's requests never interleave.
type Session struct {
	Mu sync.Mutex

	ID       string
	ClientIP netip.Addr
	Created  time.Time
	lastSeen time.Time

	// From hello.
	ProductName, ProductVersion, Platform, Hostname string
	Device                                          catalog.DeviceType

	Stage       Stage
	DirectoryID string
	UserName    string // the directory's spelling
	LoginTime   time.Time
	// RADIUSState is the State of an outstanding Access-Challenge; Rounds counts them.
	RADIUSState []byte
	Rounds      int
	// AccessEmitted: this login's "WorkSpaces Access" event was sent (once per login).
	AccessEmitted bool
	// Lookup is hostd's answer about this login's WorkSpace, asked for by the broker in the
	// background once the password is accepted; nil when there is none.
	Lookup *WorkspaceLookup
}

// WorkspaceLookup is one question to hostd about a user's WorkSpace. Done is closed once
// the answer (WS, OK, Err) and the time it came (At) are set; they do not change after.
type WorkspaceLookup struct {
	DirectoryID, UserName string
	Done                  chan struct{}
	WS                    workspaces.Workspace
	OK                    bool
	Err                   error
	At                    time.Time
}

// Limits bound sessions.
type Limits struct {
	IdleBeforeLogin, IdleAfterLogin, Absolute time.Duration
	Max                                       int
}

// ErrFull is returned when Max sessions exist and none can be evicted.
var ErrFull = errors.New("too many broker sessions")

// Store holds sessions.
type Store struct {
	limits Limits
	now    func() time.Time
	mu     sync.Mutex
	m      map[string]*Session
}

// NewStore makes a store.
func NewStore(l Limits, now func() time.Time) *Store {
	if now == nil {
		now = time.Now
	}
	return &Store{limits: l, now: now, m: map[string]*Session{}}
}

// New starts a session for a client. At the limit, expired sessions go first, then the
// oldest session that has not logged in; logged-in sessions are never evicted for a new one.
func (s *Store) New(ip netip.Addr) (*Session, error) {
	var raw [24]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return nil, err
	}
	now := s.now()
	sess := &Session{ID: base64.RawURLEncoding.EncodeToString(raw[:]), ClientIP: ip.Unmap(), Created: now, lastSeen: now}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.m) >= s.limits.Max {
		s.sweepLocked(now)
	}
	if len(s.m) >= s.limits.Max {
		var oldest *Session
		for _, x := range s.m {
			if x.Stage != Authenticated && (oldest == nil || x.lastSeen.Before(oldest.lastSeen)) {
				oldest = x
			}
		}
		if oldest == nil {
			return nil, ErrFull
		}
		delete(s.m, oldest.ID)
	}
	s.m[sess.ID] = sess
	return sess, nil
}

// Get returns a live session without marking it used; an expired one is removed.
func (s *Store) Get(id string) (*Session, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sess, ok := s.m[id]
	if !ok {
		return nil, false
	}
	if s.expired(sess, s.now()) {
		delete(s.m, id)
		return nil, false
	}
	return sess, true
}

// Touch marks a session used now (its idle timer restarts).
func (s *Store) Touch(sess *Session) {
	s.mu.Lock()
	sess.lastSeen = s.now()
	s.mu.Unlock()
}

func (s *Store) expired(sess *Session, now time.Time) bool {
	idle := s.limits.IdleBeforeLogin
	if sess.Stage == Authenticated {
		idle = s.limits.IdleAfterLogin
	}
	return now.Sub(sess.lastSeen) >= idle || now.Sub(sess.Created) >= s.limits.Absolute
}

// Delete removes a session.
func (s *Store) Delete(id string) {
	s.mu.Lock()
	delete(s.m, id)
	s.mu.Unlock()
}

// Sweep removes expired sessions.
func (s *Store) Sweep() {
	s.mu.Lock()
	s.sweepLocked(s.now())
	s.mu.Unlock()
}

func (s *Store) sweepLocked(now time.Time) {
	for id, sess := range s.m {
		if s.expired(sess, now) {
			delete(s.m, id)
		}
	}
}

// Len is the number of sessions held.
func (s *Store) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}
