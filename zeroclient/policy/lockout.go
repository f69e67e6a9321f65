package policy

import (
	"net/netip"
	"strings"
	"time"

	"deskhost/zeroclient/credstore"
)

// LockoutStore keeps lockout records (credstore.Store in production): read-modify-write in
// one transaction, so concurrent failures all count.
type LockoutStore interface {
	UpdateLockout(key string, fn func(*credstore.Lockout)) (credstore.Lockout, error)
	ReadLockout(key string) (credstore.Lockout, error)
}

// Lockout locks a (user, address) pair out for Duration after Failures failed logins
// within Window. The pair — not the user alone — is what locks, so that a guesser at one
// address cannot lock a user out everywhere; an unknown user name locks exactly like a
// known one, so the lockout itself says nothing about who exists.
type Lockout struct {
	Failures int
	Window   time.Duration
	Duration time.Duration
	Store    LockoutStore
	Now      func() time.Time
}

// LockoutKey is the record key for a user at an address: directory/user/address, with the
// user name lower-cased (AD compares names case-insensitively).
func LockoutKey(dir, user string, addr netip.Addr) string {
	return dir + "/" + strings.ToLower(user) + "/" + addr.Unmap().String()
}

// Locked reports whether key is locked out now, and until when.
func (l *Lockout) Locked(key string) (bool, time.Time, error) {
	r, err := l.Store.ReadLockout(key)
	if err != nil {
		return false, time.Time{}, err
	}
	if now := l.Now(); !r.Until.IsZero() && now.Before(r.Until) {
		return true, r.Until, nil
	}
	return false, time.Time{}, nil
}

// Fail records a failed login; it returns true when this failure starts a lockout.
func (l *Lockout) Fail(key string) (bool, error) {
	now := l.Now()
	started := false
	_, err := l.Store.UpdateLockout(key, func(r *credstore.Lockout) {
		if !r.Until.IsZero() && !now.Before(r.Until) {
			r.Until = time.Time{} // an old lockout has ended: start counting afresh
			r.Failures = nil
		}
		recent := r.Failures[:0]
		for _, t := range r.Failures {
			if now.Sub(t) < l.Window {
				recent = append(recent, t)
			}
		}
		r.Failures = append(recent, now)
		if r.Until.IsZero() && len(r.Failures) >= l.Failures {
			r.Until = now.Add(l.Duration)
			r.Failures = nil
			started = true
		}
	})
	return started, err
}

// Succeed clears the failures of key (a successful login resets the count). With no
// record there is nothing to write (and no fsync to wait for on the login path).
func (l *Lockout) Succeed(key string) error {
	if r, err := l.Store.ReadLockout(key); err == nil && len(r.Failures) == 0 && r.Until.IsZero() {
		return nil
	}
	_, err := l.Store.UpdateLockout(key, func(r *credstore.Lockout) {
		r.Failures = nil
		if !r.Until.IsZero() && !l.Now().Before(r.Until) {
			r.Until = time.Time{}
		}
	})
	return err
}
