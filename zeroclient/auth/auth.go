// Package auth decides whether a user's credentials are good: it finds the directory from
// what the client typed (user, NETBIOS\user, fqdn\user, or the domain field), checks the
// password against the directory (argon2id hashes in zeroclient's store for local
// directories, a bind for LDAP ones), runs the MFA step (RADIUS with Access-Challenge, or
// TOTP for local users), and applies the lockout. Every failure looks the same to the
// client and takes at least the configured floor, whatever failed: an unknown user and a
// wrong password cannot be told apart by message or by timing.
package auth

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"sync/atomic"
	"time"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"

	"deskhost/internal/catalog"
	"deskhost/zeroclient/credstore"
	"deskhost/zeroclient/ldapauth"
	"deskhost/zeroclient/policy"
	"deskhost/zeroclient/radius"
)

// Directory is a configured directory with its clients.
type Directory struct {
	catalog.Directory
	ldap   *ldapauth.Authenticator
	radius *radius.Client
}

// MFAEnabled reports whether logins need a second step.
func (d *Directory) MFAEnabled() bool { return d.Login.MFA != nil }

// MFAReady reports whether MFA, when configured, is Enabled (logins are refused otherwise).
func (d *Directory) MFAReady() bool {
	return d.Login.MFA == nil || d.Login.MFA.MFAStatusOrDefault() == catalog.MFAEnabled
}

// Service checks credentials.
type Service struct {
	// dirs is the directories as hostd's catalog last said, replaced whole by Update; a
	// login holds on to the *Directory it resolved.
	dirs    atomic.Pointer[[]*Directory]
	creds   *credstore.Store
	lockout *policy.Lockout
	floor   time.Duration
	now     func() time.Time
	sleep   func(time.Duration)
	hashes  chan struct{} // a slot per argon2id computation allowed at once
	wait    time.Duration
}

// Config builds a Service.
type Config struct {
	Directories []catalog.Directory
	Creds       *credstore.Store
	Lockout     *policy.Lockout
	// Floor is the least time a failed check takes.
	Floor time.Duration
	Now   func() time.Time
	// HashConcurrency bounds the argon2id computations running at once (each holds 19 MiB
	// while it runs); HashWait is how long a check waits for a turn before it is answered
	// Busy. Defaults: DefaultHashConcurrency, DefaultHashWait.
	HashConcurrency int
	HashWait        time.Duration
}

// Defaults for the argon2id bound: a few at once keep both cores busy, and a check that
// cannot start within a few seconds is better told to come back.
const (
	DefaultHashConcurrency = 4
	DefaultHashWait        = 3 * time.Second
)

// New validates the directories' login settings and prepares their LDAP and RADIUS clients.
func New(cfg Config) (*Service, error) {
	s := &Service{creds: cfg.Creds, lockout: cfg.Lockout, floor: cfg.Floor, now: cfg.Now, sleep: time.Sleep, wait: cfg.HashWait}
	if s.now == nil {
		s.now = time.Now
	}
	n := cfg.HashConcurrency
	if n <= 0 {
		n = DefaultHashConcurrency
	}
	s.hashes = make(chan struct{}, n)
	if s.wait <= 0 {
		s.wait = DefaultHashWait
	}
	s.dirs.Store(&[]*Directory{})
	if _, err := s.Update(cfg.Directories); err != nil {
		return nil, err
	}
	return s, nil
}

// retireAfter is how long a replaced directory's LDAP and RADIUS clients stay open for the
// logins already using them.
const retireAfter = time.Minute

// Update replaces the directories with those hostd's catalog lists now. A directory whose
// LDAP or RADIUS settings did not change keeps its kept connections; the others' are
// closed once the logins using them are done. A directory whose settings are invalid is
// left out (and named in the error); the rest still take effect. It reports whether any
// directory's IP access control groups, device access or registration changed: live
// sessions may need checking again.
func (s *Service) Update(dirs []catalog.Directory) (accessChanged bool, err error) {
	old := map[string]*Directory{}
	for _, d := range *s.dirs.Load() {
		old[d.ID] = d
	}
	var errs []error
	next := make([]*Directory, 0, len(dirs))
	kept := map[any]bool{}
	for _, d := range dirs {
		if err := d.Login.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("directory %s: %w", d.ID, err))
			continue
		}
		dir := &Directory{Directory: d}
		prev := old[d.ID]
		if prev == nil || !reflect.DeepEqual(prev.Login.IPGroups, d.Login.IPGroups) || prev.Login.Deregistered != d.Login.Deregistered ||
			!reflect.DeepEqual(prev.Login.DeviceAccess, d.Login.DeviceAccess) {
			accessChanged = true
		}
		if d.Login.Kind() == catalog.TypeLDAP {
			if prev != nil && prev.ldap != nil && reflect.DeepEqual(prev.Login.LDAP, d.Login.LDAP) {
				dir.ldap, kept[prev.ldap] = prev.ldap, true
			} else if dir.ldap, err = ldapauth.New(d.Login.LDAP); err != nil {
				errs = append(errs, fmt.Errorf("directory %s: %w", d.ID, err))
				continue
			}
		}
		if m := d.Login.MFA; m != nil && m.Type == catalog.MFARADIUS {
			if prev != nil && prev.radius != nil && reflect.DeepEqual(prev.Login.MFA.RADIUS, m.RADIUS) {
				dir.radius, kept[prev.radius] = prev.radius, true
			} else if dir.radius, err = radius.New(m.RADIUS); err != nil {
				if dir.ldap != nil && !kept[dir.ldap] {
					dir.ldap.Close()
				}
				errs = append(errs, fmt.Errorf("directory %s: %w", d.ID, err))
				continue
			}
		}
		next = append(next, dir)
	}
	if len(next) != len(old) {
		accessChanged = true
	}
	s.dirs.Store(&next)
	var retired []*Directory
	for _, d := range old {
		if d.ldap != nil && !kept[d.ldap] || d.radius != nil && !kept[d.radius] {
			retired = append(retired, d)
		}
	}
	if len(retired) > 0 {
		time.AfterFunc(retireAfter, func() {
			for _, d := range retired {
				if d.ldap != nil && !kept[d.ldap] {
					d.ldap.Close()
				}
				if d.radius != nil && !kept[d.radius] {
					d.radius.Close()
				}
			}
		})
	}
	return accessChanged, errors.Join(errs...)
}

// Close closes the directories' kept connections.
func (s *Service) Close() {
	for _, d := range *s.dirs.Load() {
		if d.ldap != nil {
			d.ldap.Close()
		}
		if d.radius != nil {
			d.radius.Close()
		}
	}
}

// Directories lists the directories.
func (s *Service) Directories() []*Directory { return *s.dirs.Load() }

// ByID returns a directory by id.
func (s *Service) ByID(id string) *Directory {
	for _, d := range s.Directories() {
		if d.ID == id {
			return d
		}
	}
	return nil
}

// ByRegistrationCode returns the registered directory with this code (nil for an unknown
// code or a deregistered directory).
func (s *Service) ByRegistrationCode(code string) *Directory {
	code = strings.TrimSpace(code)
	if code == "" {
		return nil
	}
	for _, d := range s.Directories() {
		if d.RegistrationCode != "" && subtle.ConstantTimeCompare([]byte(strings.ToUpper(d.RegistrationCode)), []byte(strings.ToUpper(code))) == 1 {
			if d.Login.Deregistered {
				return nil
			}
			return d
		}
	}
	return nil
}

// Resolve finds the directory and the bare user name from what the client typed: the
// guide's "username, corp\username, or corp.example.com\username", with the domain field
// as the other way to name the directory. With one registered directory, a bare name is
// in it. A deregistered directory is not found.
func (s *Service) Resolve(username, domain string) (*Directory, string) {
	user := strings.TrimSpace(username)
	dom := strings.TrimSpace(domain)
	if prefix, rest, ok := strings.Cut(user, `\`); ok {
		dom, user = prefix, rest
	}
	if user == "" || strings.ContainsAny(user, `\`) {
		return nil, ""
	}
	var match []*Directory
	for _, d := range s.Directories() {
		if d.Login.Deregistered {
			continue
		}
		if dom == "" || strings.EqualFold(dom, d.Name) || strings.EqualFold(dom, d.NetBIOS()) ||
			(d.Alias != "" && strings.EqualFold(dom, d.Alias)) || dom == d.ID {
			match = append(match, d)
		}
	}
	if len(match) != 1 {
		return nil, user
	}
	return match[0], user
}

// Outcome is the result of a check.
type Outcome int

const (
	// OK: logged in.
	OK Outcome = iota
	// NeedPasscode: the password is right; the MFA passcode is next.
	NeedPasscode
	// Failed: unknown user, wrong password, wrong passcode — never said which.
	Failed
	// Locked: too many failures for this user from this address.
	Locked
	// MFANotReady: the directory's MFA is being set up; nobody logs in.
	MFANotReady
	// Unavailable: the directory or MFA server cannot be asked, or the lockout store cannot
	// be written (a failure that could not be counted must not be checked at all).
	Unavailable
	// Busy: too many password checks are running; nothing was checked or counted.
	Busy
)

// ErrBusy is returned when no argon2id computation could start in time.
var ErrBusy = errors.New("too many password checks at once")

// hash runs fn (an argon2id computation) when a slot is free, waiting up to the service's
// wait: the computations' memory is bounded however many logins arrive at once.
func (s *Service) hash(ctx context.Context, fn func()) error {
	t := time.NewTimer(s.wait)
	defer t.Stop()
	select {
	case s.hashes <- struct{}{}:
	case <-t.C:
		return ErrBusy
	case <-ctx.Done():
		return ErrBusy
	}
	defer func() { <-s.hashes }()
	fn()
	return nil
}

// HashPassword is credstore.HashPassword within the bound on argon2id computations.
func (s *Service) HashPassword(ctx context.Context, password string) (h string, err error) {
	if berr := s.hash(ctx, func() { h, err = credstore.HashPassword(password) }); berr != nil {
		return "", berr
	}
	return h, err
}

// Result is a check's outcome.
type Result struct {
	Outcome  Outcome
	UserName string // the directory's spelling, on success
	// Prompt and State go with NeedPasscode.
	Prompt string
	State  []byte
	// Reason is for logs and the audit trail, never for the client.
	Reason string
	// KnownUser: the typed name is a user of the directory. Names that are not are kept
	// out of the audit trail and logs: they are often passwords typed in the wrong field.
	KnownUser bool
}

// TOTPPrompt is what a local user with TOTP is asked for.
const TOTPPrompt = "Enter the 6-digit code from your authenticator app"

// RADIUSPrompt is the first MFA prompt with RADIUS.
const RADIUSPrompt = "Enter your MFA code"

// Password checks a user's password. dir is from Resolve (nil: no such directory, which
// fails like a wrong password).
func (s *Service) Password(ctx context.Context, dir *Directory, user, password string, from netip.Addr) Result {
	start := time.Now()
	r := s.password(ctx, dir, user, password, from)
	if r.Outcome != OK && r.Outcome != NeedPasscode {
		s.waitFloor(start)
	}
	return r
}

func (s *Service) password(ctx context.Context, dir *Directory, user, password string, from netip.Addr) Result {
	dirID := ""
	if dir != nil {
		dirID = dir.ID
	}
	if dir != nil && !dir.MFAReady() {
		return Result{Outcome: MFANotReady, Reason: "MFA status is " + string(dir.Login.MFA.MFAStatusOrDefault())}
	}
	known := false
	if dir != nil && dir.Login.Kind() == catalog.TypeLocal {
		_, known = dir.FindUser(user)
	}
	// The attempt is counted before the password is looked at: if it cannot be counted,
	// it is not checked.
	att, locked, err := s.lockout.BeginPassword(dirID, user, from)
	if err != nil {
		return Result{Outcome: Unavailable, Reason: "lockout store: " + err.Error(), KnownUser: known}
	}
	if locked != nil {
		s.hash(ctx, func() { credstore.VerifyPassword("", password) }) // same work as a real check
		return Result{Outcome: Locked, Reason: "locked out until " + locked.Until.UTC().Format(time.RFC3339), KnownUser: known}
	}
	var name string
	switch {
	case dir == nil:
		err = errors.New("no such directory")
		if berr := s.hash(ctx, func() { credstore.VerifyPassword("", password) }); berr != nil {
			err = berr
		}
	case dir.Login.Kind() == catalog.TypeLDAP:
		var u ldapauth.User
		u, err = dir.ldap.Authenticate(ctx, user, password)
		name = u.Name
		known = err == nil || errors.Is(err, ldapauth.ErrWrongPassword)
		if err != nil && !errors.Is(err, ldapauth.ErrBadCredentials) {
			att.Void()
			return Result{Outcome: Unavailable, Reason: err.Error(), KnownUser: known}
		}
	default:
		name, err = s.local(ctx, dir, user, password)
	}
	switch {
	case errors.Is(err, ErrBusy):
		att.Void()
		return Result{Outcome: Busy, Reason: err.Error(), KnownUser: known}
	case err != nil:
		return Result{Outcome: Failed, Reason: err.Error(), KnownUser: known} // counted already
	}
	if err := att.Succeeded(); err != nil {
		return Result{Outcome: Unavailable, Reason: "lockout store: " + err.Error(), KnownUser: true}
	}
	if dir.MFAEnabled() {
		// MFA failures lock the user out whatever the password: only those who know it
		// learn that.
		if locked, err := s.lockout.MFALocked(dir.ID, name); err != nil {
			return Result{Outcome: Unavailable, Reason: "lockout store: " + err.Error(), KnownUser: true}
		} else if locked != nil {
			return Result{Outcome: Locked, Reason: "MFA failures: locked out until " + locked.Until.UTC().Format(time.RFC3339), KnownUser: true}
		}
		prompt := RADIUSPrompt
		if dir.Login.MFA.Type == catalog.MFATOTP {
			prompt = TOTPPrompt
		}
		return Result{Outcome: NeedPasscode, UserName: name, Prompt: prompt, KnownUser: true}
	}
	return Result{Outcome: OK, UserName: name, KnownUser: true}
}

// local checks a local directory user's password against the stored argon2id hash. An
// unknown or never-activated user costs the same hash computation.
func (s *Service) local(ctx context.Context, dir *Directory, user, password string) (string, error) {
	u, known := dir.FindUser(user)
	hash := ""
	if known {
		c, ok, err := s.creds.Credential(dir.ID, u.UserName)
		if err != nil {
			return "", err
		}
		if ok {
			hash = c.Hash
		}
	}
	var good bool
	if err := s.hash(ctx, func() { good = credstore.VerifyPassword(hash, password) }); err != nil {
		return "", err
	}
	if !good {
		switch {
		case !known:
			return "", errors.New("no such user")
		case hash == "":
			return "", errors.New("user has not activated")
		}
		return "", errors.New("wrong password")
	}
	return u.UserName, nil
}

// Passcode checks the MFA step for a user whose password was accepted. state is the
// RADIUS State of an outstanding challenge (nil for the first passcode).
func (s *Service) Passcode(ctx context.Context, dir *Directory, user, passcode string, state []byte, from netip.Addr) Result {
	start := time.Now()
	r := s.passcode(ctx, dir, user, passcode, state, from)
	if r.Outcome != OK && r.Outcome != NeedPasscode {
		s.waitFloor(start)
	}
	return r
}

func (s *Service) passcode(ctx context.Context, dir *Directory, user, passcode string, state []byte, from netip.Addr) Result {
	if !dir.MFAReady() {
		return Result{Outcome: MFANotReady, Reason: "MFA status is " + string(dir.Login.MFA.MFAStatusOrDefault()), KnownUser: true}
	}
	att, locked, err := s.lockout.BeginMFA(dir.ID, user)
	if err != nil {
		return Result{Outcome: Unavailable, Reason: "lockout store: " + err.Error(), KnownUser: true}
	}
	if locked != nil {
		return Result{Outcome: Locked, Reason: "locked out until " + locked.Until.UTC().Format(time.RFC3339), KnownUser: true}
	}
	fail := func(reason string) Result { return Result{Outcome: Failed, Reason: reason, KnownUser: true} } // counted already
	ok := func() Result {
		if err := att.Succeeded(); err != nil {
			return Result{Outcome: Unavailable, Reason: "lockout store: " + err.Error(), KnownUser: true}
		}
		return Result{Outcome: OK, UserName: user, KnownUser: true}
	}
	switch dir.Login.MFA.Type {
	case catalog.MFARADIUS:
		resp, err := dir.radius.Authenticate(ctx, user, passcode, state)
		if err != nil {
			att.Void()
			return Result{Outcome: Unavailable, Reason: err.Error(), KnownUser: true}
		}
		switch resp.Outcome {
		case radius.Accept:
			return ok()
		case radius.Challenge:
			att.Void() // not a failure: the server asks for more
			prompt := resp.Message
			if prompt == "" {
				prompt = RADIUSPrompt
			}
			return Result{Outcome: NeedPasscode, UserName: user, Prompt: prompt, State: resp.State, KnownUser: true}
		}
		return fail("RADIUS Access-Reject")
	case catalog.MFATOTP:
		c, found, err := s.creds.Credential(dir.ID, user)
		if err != nil {
			att.Void()
			return Result{Outcome: Unavailable, Reason: err.Error(), KnownUser: true}
		}
		if !found || c.TOTPSecret == "" {
			return fail("no TOTP secret enrolled")
		}
		step, good := CheckTOTP(c.TOTPSecret, passcode, s.now())
		if !good {
			return fail("wrong TOTP code")
		}
		fresh, err := s.creds.UseTOTPStep(dir.ID, user, step)
		if err != nil {
			att.Void()
			return Result{Outcome: Unavailable, Reason: err.Error(), KnownUser: true}
		}
		if !fresh {
			return fail("TOTP code already used")
		}
		return ok()
	}
	return fail("no MFA method")
}

// TOTP settings: RFC 6238 defaults, which every authenticator app uses.
var totpOpts = totp.ValidateOpts{Period: 30, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1}

// CheckTOTP checks code against secret at now, allowing one 30 s step of clock skew either
// way, and returns the matching time step.
func CheckTOTP(secret, code string, now time.Time) (int64, bool) {
	code = strings.TrimSpace(code)
	if len(code) != 6 {
		return 0, false
	}
	for _, skew := range []int64{0, -1, 1} {
		t := now.Add(time.Duration(skew) * 30 * time.Second)
		want, err := totp.GenerateCodeCustom(secret, t, totpOpts)
		if err == nil && subtle.ConstantTimeCompare([]byte(want), []byte(code)) == 1 {
			return t.Unix() / 30, true
		}
	}
	return 0, false
}

// TOTPCode is the current code for secret (for the reference client and tests).
func TOTPCode(secret string, now time.Time) (string, error) {
	return totp.GenerateCodeCustom(secret, now, totpOpts)
}

// NewTOTPSecret enrolls a user: a fresh secret and its otpauth:// URI for an app.
func NewTOTPSecret(issuer, account string) (secret, uri string, err error) {
	k, err := totp.Generate(totp.GenerateOpts{Issuer: issuer, AccountName: account, Period: 30, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1})
	if err != nil {
		return "", "", err
	}
	return k.Secret(), k.URL(), nil
}

// waitFloor sleeps until the floor has passed since start.
func (s *Service) waitFloor(start time.Time) {
	if d := s.floor - time.Since(start); d > 0 {
		s.sleep(d)
	}
}
