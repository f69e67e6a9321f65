package policy

import (
	"net/netip"
	"strings"
	"time"

	"deskhost/zeroclient/credstore"
)

// LockoutStore keeps lockout records (credstore.Store in production): the records an
// attempt is charged to are read, changed and written in one transaction, so concurrent
// attempts all count.
type LockoutStore interface {
	UpdateLockouts(keys []string, fn func([]*credstore.Lockout) bool) error
	ReadLockout(key string) (credstore.Lockout, error)
	SweepLockouts(dead func(credstore.Lockout) bool) (int, error)
}

// Lockout is the brute-force lockout. Three counts are kept, each locking for Duration
// once it reaches its limit within Window:
//
//   - a user's password failures from one address (an IPv6 address counts as its /64):
//     Failures. The pair locks, not the user alone, so that a guesser at one address
//     cannot lock a user out everywhere; an unknown user name locks exactly like a known
//     one, so the lockout says nothing about who exists. A correct password clears it.
//   - a user's MFA failures from anywhere: Failures. Only a completed login clears it, never
//     a correct password alone: otherwise "password right, passcode wrong" could be
//     repeated without end by anyone who knows the password.
//   - every failure of a user from anywhere: UserFailures, the ceiling for a guesser with
//     many addresses. It is never cleared, only outlived.
//
// Every attempt is charged to its counts before the credential is checked and given back
// when it succeeds (Attempt): parallel guesses cannot all slip in under the limit, and a
// store that cannot be written refuses the login instead of letting a guess go uncounted.
type Lockout struct {
	Failures     int
	UserFailures int
	Window       time.Duration
	Duration     time.Duration
	Store        LockoutStore
	Now          func() time.Time
}

// userPart is the user name as it appears in keys: lower-cased (AD compares names
// case-insensitively), with "/" escaped so that no typed name can reach into another
// user's keys.
func userPart(user string) string {
	return strings.ReplaceAll(strings.ToLower(user), "/", "%2F")
}

// UserPrefix is the start of every key of a user's records (operator unlock).
func UserPrefix(dir, user string) string { return dir + "/" + userPart(user) + "/" }

// AddressKey is the part of a pair key that names the client: an IPv4 address, or the /64
// of an IPv6 one (a single subscriber is commonly given a whole /64).
func AddressKey(addr netip.Addr) string {
	addr = addr.Unmap()
	if addr.Is6() {
		return netip.PrefixFrom(addr, 64).Masked().String()
	}
	return addr.String()
}

// PairKey is the record of a user's password failures at an address.
func PairKey(dir, user string, addr netip.Addr) string {
	return UserPrefix(dir, user) + AddressKey(addr)
}

// UserKey is the record of all of a user's failures, from every address.
func UserKey(dir, user string) string { return UserPrefix(dir, user) + "*" }

// MFAKey is the record of a user's MFA failures, from every address.
func MFAKey(dir, user string) string { return UserPrefix(dir, user) + "mfa" }

// counter is one count an attempt is charged to.
type counter struct {
	key   string
	limit int
	// clear: a success clears the whole count (else it takes back only its own charge).
	clear bool
}

// Attempt is one login step charged in advance. Its charge stands as a failure unless
// Succeeded or Void says otherwise.
type Attempt struct {
	l        *Lockout
	at       time.Time
	counters []counter
	started  []bool // this attempt's charge started the counter's lockout
	done     bool
}

// Locked is returned with a nil Attempt when a count is locked: nothing was charged.
type Locked struct{ Until time.Time }

// BeginPassword charges a password check for user at addr.
func (l *Lockout) BeginPassword(dir, user string, addr netip.Addr) (*Attempt, *Locked, error) {
	return l.begin([]counter{{PairKey(dir, user, addr), l.Failures, true}, {UserKey(dir, user), l.userLimit(), false}})
}

// BeginMFA charges an MFA step (a passcode or TOTP code) for user.
func (l *Lockout) BeginMFA(dir, user string) (*Attempt, *Locked, error) {
	return l.begin([]counter{{MFAKey(dir, user), l.Failures, true}, {UserKey(dir, user), l.userLimit(), false}})
}

// MFALocked reports whether user's MFA failures have locked the user out.
func (l *Lockout) MFALocked(dir, user string) (*Locked, error) {
	r, err := l.Store.ReadLockout(MFAKey(dir, user))
	if err != nil {
		return nil, err
	}
	if !r.Until.IsZero() && l.Now().Before(r.Until) {
		return &Locked{Until: r.Until}, nil
	}
	return nil, nil
}

func (l *Lockout) userLimit() int {
	if l.UserFailures > 0 {
		return l.UserFailures
	}
	return 4 * l.Failures
}

func (l *Lockout) begin(cs []counter) (*Attempt, *Locked, error) {
	now := l.Now()
	a := &Attempt{l: l, at: now, counters: cs, started: make([]bool, len(cs))}
	var locked *Locked
	keys := make([]string, len(cs))
	for i, c := range cs {
		keys[i] = c.key
	}
	err := l.Store.UpdateLockouts(keys, func(recs []*credstore.Lockout) bool {
		locked = nil
		for i := range recs {
			a.started[i] = false
			r := recs[i]
			if !r.Until.IsZero() && !now.Before(r.Until) {
				*r = credstore.Lockout{} // an old lockout has ended: count afresh
			}
			if !r.Until.IsZero() && (locked == nil || r.Until.After(locked.Until)) {
				locked = &Locked{Until: r.Until}
			}
		}
		if locked != nil {
			return false // a locked attempt is refused and not counted
		}
		for i, r := range recs {
			recent := r.Failures[:0]
			for _, t := range r.Failures {
				if now.Sub(t) < l.Window {
					recent = append(recent, t)
				}
			}
			r.Failures = append(recent, now)
			if len(r.Failures) >= cs[i].limit {
				// This is the last attempt the count allows; it is still checked.
				r.Until = now.Add(l.Duration)
				a.started[i] = true
			}
		}
		return true
	})
	if err != nil {
		return nil, nil, err
	}
	if locked != nil {
		return nil, locked, nil
	}
	return a, nil, nil
}

// Succeeded takes the attempt's charge back: counts that a success clears are cleared,
// the others lose this attempt's failure. A lockout this attempt started ends; one another
// attempt started stays.
func (a *Attempt) Succeeded() error { return a.finish(true) }

// Void takes back the attempt's charge: it was not a failure (a RADIUS challenge asks for
// more; the directory could not be asked; the broker was too busy to check).
func (a *Attempt) Void() error { return a.finish(false) }

func (a *Attempt) finish(success bool) error {
	if a == nil || a.done {
		return nil
	}
	a.done = true
	keys := make([]string, len(a.counters))
	for i, c := range a.counters {
		keys[i] = c.key
	}
	return a.l.Store.UpdateLockouts(keys, func(recs []*credstore.Lockout) bool {
		for i, r := range recs {
			if success && a.counters[i].clear {
				r.Failures = nil
			} else {
				for j, t := range r.Failures {
					if t.Equal(a.at) {
						r.Failures = append(r.Failures[:j:j], r.Failures[j+1:]...)
						break
					}
				}
			}
			if a.started[i] && r.Until.Equal(a.at.Add(a.l.Duration)) {
				r.Until = time.Time{}
			}
		}
		return true
	})
}

// Sweep deletes the records that no longer matter (no failure within Window and no
// lockout in force): guesses at names that exist nowhere leave one each.
func (l *Lockout) Sweep() (int, error) {
	now := l.Now()
	return l.Store.SweepLockouts(func(r credstore.Lockout) bool {
		if !r.Until.IsZero() {
			return !now.Before(r.Until) // an ended lockout's failures count no more
		}
		for _, t := range r.Failures {
			if now.Sub(t) < l.Window {
				return false
			}
		}
		return true
	})
}
