// Package session keeps broker sessions (the JSESSIONID cookie's state) in memory, with the
// three limits the issue names: idle before login, idle after login, and an absolute
// lifetime; bye removes one. A session belongs to the client address that made it: from
// any other address it is not found. Clients that drop the cookie are found by their
// Client-Log-Id header (with the same address). The clock is injected for tests.
package session

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"
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
	// LogID is the client's Client-Log-Id header at hello ("" if it sent none).
	LogID    string
	Created  time.Time
	lastSeen time.Time
	stage    atomic.Int32 // the store reads it (eviction) without the session's Mu

	// From hello.
	ProductName, ProductVersion, Platform, Hostname string
	Device                                          catalog.DeviceType

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

	// Guarded by the store's mu (the store reads them to expire sessions):
	// resume is the directory's session resume timeout, set at login (0: the store's
	// IdleAfterLogin); workspaceID is the WorkSpace this login was last given a tag for;
	// streaming says the gateway is relaying that WorkSpace now.
	resume      time.Duration
	workspaceID string
	streaming   bool
}

// Ended is what is left of a logged-in session that ended because its user stayed away
// longer than the directory's resume timeout: enough for the broker to say why.
type Ended struct {
	At            time.Time
	ResumeTimeout time.Duration
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

// Stage is how far the session has got.
func (sess *Session) Stage() Stage { return Stage(sess.stage.Load()) }

// SetStage moves the session on (or back).
func (sess *Session) SetStage(st Stage) { sess.stage.Store(int32(st)) }

// Limits bound sessions.
type Limits struct {
	IdleBeforeLogin, IdleAfterLogin, Absolute time.Duration
	Max                                       int
	// MaxPerAddress bounds one client address's sessions (default DefaultMaxPerAddress).
	MaxPerAddress int
}

// DefaultMaxPerAddress is generous for the users behind one NAT address and small against
// the store's Max: a flood of hellos from one address churns its own sessions only.
const DefaultMaxPerAddress = 256

// ErrFull is returned when no session can be made room for.
var ErrFull = errors.New("too many broker sessions")

type logKey struct {
	ip netip.Addr
	id string
}

// Store holds sessions.
type Store struct {
	limits Limits
	now    func() time.Time
	mu     sync.Mutex
	m      map[string]*Session
	byAddr map[netip.Addr]map[string]*Session
	byLog  map[logKey]*Session
	ended  map[string]Ended // by session id; bounded by Limits.Max, kept endedFor
}

// endedFor is how long the store remembers why a session ended.
const endedFor = 24 * time.Hour

// NewStore makes a store.
func NewStore(l Limits, now func() time.Time) *Store {
	if now == nil {
		now = time.Now
	}
	if l.MaxPerAddress <= 0 {
		l.MaxPerAddress = DefaultMaxPerAddress
	}
	return &Store{limits: l, now: now, m: map[string]*Session{}, byAddr: map[netip.Addr]map[string]*Session{}, byLog: map[logKey]*Session{}, ended: map[string]Ended{}}
}

// MaxLogID bounds a Client-Log-Id header.
const MaxLogID = 128

// ParseLogID checks a Client-Log-Id header: 8 to 128 characters of letters, digits and
// "-", "_", ".", ":" (clients send a UUID-like id). ok is false for anything else, which
// the broker then ignores.
func ParseLogID(h string) (string, bool) {
	if len(h) < 8 || len(h) > MaxLogID {
		return "", false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_', c == '.', c == ':':
		default:
			return "", false
		}
	}
	return h, true
}

// New starts a session for a client at ip (logID: its Client-Log-Id, or ""). A session
// with the same log id from the same address ends: the client has started over. To make
// room, expired sessions go first, then the client address's own oldest session that has
// only said hello (when it has MaxPerAddress), then the oldest one that has only said
// hello anywhere. Sessions that have got further (a password accepted, MFA under way,
// logged in) are never evicted: a flood of hellos cannot push out users in mid-login.
func (s *Store) New(ip netip.Addr, logID string) (*Session, error) {
	var raw [24]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return nil, err
	}
	ip = ip.Unmap()
	now := s.now()
	sess := &Session{ID: base64.RawURLEncoding.EncodeToString(raw[:]), ClientIP: ip, LogID: logID, Created: now, lastSeen: now}
	s.mu.Lock()
	defer s.mu.Unlock()
	if logID != "" {
		if old := s.byLog[logKey{ip, logID}]; old != nil {
			s.deleteLocked(old)
		}
	}
	if len(s.byAddr[ip]) >= s.limits.MaxPerAddress {
		s.sweepLocked(now)
	}
	if own := s.byAddr[ip]; len(own) >= s.limits.MaxPerAddress {
		victim := oldestGreeted(own)
		if victim == nil {
			return nil, ErrFull
		}
		s.deleteLocked(victim)
	}
	if len(s.m) >= s.limits.Max {
		s.sweepLocked(now)
	}
	if len(s.m) >= s.limits.Max {
		victim := oldestGreeted(s.m)
		if victim == nil {
			return nil, ErrFull
		}
		s.deleteLocked(victim)
	}
	s.m[sess.ID] = sess
	if s.byAddr[ip] == nil {
		s.byAddr[ip] = map[string]*Session{}
	}
	s.byAddr[ip][sess.ID] = sess
	if logID != "" {
		s.byLog[logKey{ip, logID}] = sess
	}
	return sess, nil
}

func oldestGreeted(m map[string]*Session) *Session {
	var oldest *Session
	for _, x := range m {
		if x.Stage() == Greeted && (oldest == nil || x.lastSeen.Before(oldest.lastSeen)) {
			oldest = x
		}
	}
	return oldest
}

// Get returns the live session with this id if it belongs to ip, without marking it used;
// an expired one is removed.
func (s *Store) Get(id string, ip netip.Addr) (*Session, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.liveLocked(s.m[id], ip)
}

// ByLogID returns the live session ip made with this Client-Log-Id.
func (s *Store) ByLogID(logID string, ip netip.Addr) (*Session, bool) {
	if logID == "" {
		return nil, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.liveLocked(s.byLog[logKey{ip.Unmap(), logID}], ip)
}

func (s *Store) liveLocked(sess *Session, ip netip.Addr) (*Session, bool) {
	if sess == nil || sess.ClientIP != ip.Unmap() {
		return nil, false
	}
	if now := s.now(); s.expired(sess, now) {
		s.endLocked(sess, now)
		return nil, false
	}
	return sess, true
}

// endLocked removes an expired session, remembering a logged-in one's resume timeout.
func (s *Store) endLocked(sess *Session, now time.Time) {
	if sess.Stage() == Authenticated && now.Sub(sess.Created) < s.limits.Absolute {
		if len(s.ended) >= s.limits.Max {
			for id, e := range s.ended {
				if now.Sub(e.At) >= endedFor || len(s.ended) >= s.limits.Max {
					delete(s.ended, id)
				}
			}
		}
		s.ended[sess.ID] = Ended{At: now, ResumeTimeout: s.idleAfterLogin(sess)}
	}
	s.deleteLocked(sess)
}

// EndedByTimeout tells whether the session with this id ended because its user was away
// longer than the resume timeout, and forgets it (the next login starts afresh).
func (s *Store) EndedByTimeout(id string) (Ended, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.ended[id]
	delete(s.ended, id)
	return e, ok && s.now().Sub(e.At) < endedFor
}

// LoggedIn marks sess logged in, with its directory's session resume timeout (0: the
// store's IdleAfterLogin): after a dropped connection the user may come back without
// logging in again for that long.
func (s *Store) LoggedIn(sess *Session, resume time.Duration) {
	s.mu.Lock()
	sess.resume, sess.workspaceID, sess.streaming = resume, "", false
	sess.lastSeen = s.now()
	s.mu.Unlock()
	sess.SetStage(Authenticated)
}

// Allocated records that sess was given a tag for a WorkSpace: while the gateway relays
// it, the session does not go idle.
func (s *Store) Allocated(sess *Session, workspaceID string) {
	s.mu.Lock()
	sess.workspaceID = workspaceID
	s.mu.Unlock()
}

// Streaming is the gateway's list of the WorkSpaces it relays now. A logged-in session
// whose WorkSpace is on it does not go idle; one whose WorkSpace has left it was
// disconnected now, and its resume timeout runs from now.
func (s *Store) Streaming(workspaceIDs []string) {
	on := make(map[string]bool, len(workspaceIDs))
	for _, id := range workspaceIDs {
		on[id] = true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	for _, sess := range s.m {
		if sess.workspaceID == "" || sess.Stage() != Authenticated {
			continue
		}
		if was := sess.streaming; on[sess.workspaceID] || was {
			sess.lastSeen = now
		}
		sess.streaming = on[sess.workspaceID]
	}
}

func (s *Store) idleAfterLogin(sess *Session) time.Duration {
	if sess.resume > 0 {
		return sess.resume
	}
	return s.limits.IdleAfterLogin
}

func (s *Store) deleteLocked(sess *Session) {
	if s.m[sess.ID] != sess {
		return
	}
	delete(s.m, sess.ID)
	if own := s.byAddr[sess.ClientIP]; own != nil {
		delete(own, sess.ID)
		if len(own) == 0 {
			delete(s.byAddr, sess.ClientIP)
		}
	}
	if sess.LogID != "" && s.byLog[logKey{sess.ClientIP, sess.LogID}] == sess {
		delete(s.byLog, logKey{sess.ClientIP, sess.LogID})
	}
}

// Touch marks a session used now (its idle timer restarts).
func (s *Store) Touch(sess *Session) {
	s.mu.Lock()
	sess.lastSeen = s.now()
	s.mu.Unlock()
}

func (s *Store) expired(sess *Session, now time.Time) bool {
	if now.Sub(sess.Created) >= s.limits.Absolute {
		return true
	}
	idle := s.limits.IdleBeforeLogin
	if sess.Stage() == Authenticated {
		if sess.streaming {
			return false // connected: not idle, however long since the last broker request
		}
		idle = s.idleAfterLogin(sess)
	}
	return now.Sub(sess.lastSeen) >= idle
}

// Delete removes a session.
func (s *Store) Delete(id string) {
	s.mu.Lock()
	if sess := s.m[id]; sess != nil {
		s.deleteLocked(sess)
	}
	s.mu.Unlock()
}

// Sweep removes expired sessions.
func (s *Store) Sweep() {
	s.mu.Lock()
	s.sweepLocked(s.now())
	s.mu.Unlock()
}

func (s *Store) sweepLocked(now time.Time) {
	for _, sess := range s.m {
		if s.expired(sess, now) {
			s.endLocked(sess, now)
		}
	}
	for id, e := range s.ended {
		if now.Sub(e.At) >= endedFor {
			delete(s.ended, id)
		}
	}
}

// Len is the number of sessions held.
func (s *Store) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}
