package policy

import (
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"deskhost/internal/catalog"
	"deskhost/zeroclient/credstore"
)

// TestPasswordPolicy is the guide's policy exactly (catalog §10.4 and acceptance item 1).
func TestPasswordPolicy(t *testing.T) {
	three := catalog.PasswordPolicy{}
	four := catalog.PasswordPolicy{RequiredClasses: 4}
	for _, tc := range []struct {
		pw       string
		ok3, ok4 bool
	}{
		{"abcdEF1", false, false},                       // 7 characters
		{"Aa1" + strings.Repeat("x", 61), true, false},  // 64: accepted
		{"Aa1" + strings.Repeat("x", 62), false, false}, // 65: rejected
		{"abcdefgh", false, false},                      // one class
		{"abcdEFGH", false, false},                      // two classes
		{"abcdEF12", true, false},                       // three
		{"abcd!@12", true, false},                       // three, with specials
		{"abCD!@12", true, true},                        // four
		{"abcdéèàü", false, false},                      // accented letters count toward no class
		{"ab  CD 12", true, false},                      // spaces are allowed, count toward none
		{`aB\"'<>,.`, true, false},                      // the special set includes \ " ' < > , .
		{"abcdEFG€", false, false},                      // € is not in the special set
		{"ABCD1234~", true, false},
	} {
		if err := CheckPassword(tc.pw, three); (err == nil) != tc.ok3 {
			t.Errorf("3 of 4: %q: %v, want ok=%v", tc.pw, err, tc.ok3)
		}
		if err := CheckPassword(tc.pw, four); (err == nil) != tc.ok4 {
			t.Errorf("4 of 4: %q: %v, want ok=%v", tc.pw, err, tc.ok4)
		}
	}
	if len(SpecialCharacters) != 32 {
		t.Errorf("the guide's special set has 32 characters, this has %d", len(SpecialCharacters))
	}
}

func TestClassifyAndFirmware(t *testing.T) {
	for _, tc := range []struct {
		ci   ClientInfo
		want catalog.DeviceType
	}{
		{ClientInfo{ProductName: "Teradici PCoIP Zero Client", Platform: "Tera2"}, catalog.DeviceZeroClient},
		{ClientInfo{ProductName: "Dell Wyse PCoIP Client", Platform: "Tera2"}, catalog.DeviceZeroClient},
		{ClientInfo{ProductName: "Teradici PCoIP Desktop Client", Platform: "CentOS Linux 7 (Core) linux 3.10.0 x86_64"}, catalog.DeviceLinux},
		{ClientInfo{ProductName: "Teradici PCoIP Desktop Client", Platform: "Windows 10"}, catalog.DeviceWindows},
		{ClientInfo{ProductName: "WorkSpaces", Platform: "macOS 10.15"}, catalog.DeviceMacOS},
		{ClientInfo{ProductName: "WorkSpaces", Platform: "Android 10"}, catalog.DeviceAndroid},
		{ClientInfo{ProductName: "WorkSpaces", Platform: "iPadOS"}, catalog.DeviceIOS},
		{ClientInfo{ProductName: "WorkSpaces Web client", Platform: "Chrome 80"}, catalog.DeviceWeb},
		{ClientInfo{ProductName: "x", Platform: "PlayStation"}, catalog.DeviceUnknown},
	} {
		if got := ClassifyDevice(tc.ci); got != tc.want {
			t.Errorf("%+v: %s, want %s", tc.ci, got, tc.want)
		}
	}
	for _, tc := range []struct {
		v  string
		ok bool
	}{{"6.0.0", true}, {"4.6.0", true}, {"4.5.9", false}, {"20.07.1", true}, {"4.6", true}, {"3.9.9", false}, {"banana", false}, {"", false}} {
		if err := CheckFirmware(catalog.DeviceZeroClient, tc.v); (err == nil) != tc.ok {
			t.Errorf("firmware %q: %v, want ok=%v", tc.v, err, tc.ok)
		}
	}
	if err := CheckFirmware(catalog.DeviceWindows, "1.0"); err != nil {
		t.Errorf("firmware gating applies to zero clients only: %v", err)
	}
	if EventPlatform(catalog.DeviceZeroClient) != "Teradici PCoIP Zero Client and Tera2" || EventPlatform(catalog.DeviceMacOS) != "OSX" {
		t.Error("event platform names are not the guide's")
	}
}

func newLockout(t *testing.T, now *time.Time) *Lockout {
	st, err := credstore.Open(filepath.Join(t.TempDir(), "creds.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return &Lockout{Failures: 5, UserFailures: 20, Window: 5 * time.Minute, Duration: 15 * time.Minute, Store: st,
		Now: func() time.Time { return *now }}
}

// fail charges a password attempt that fails; it reports whether the attempt was refused
// as locked.
func failPassword(t *testing.T, l *Lockout, user string, addr netip.Addr) bool {
	t.Helper()
	a, locked, err := l.BeginPassword("d-1", user, addr)
	if err != nil {
		t.Fatal(err)
	}
	return a == nil && locked != nil
}

// TestLockout: 5 failures per user and address within 5 minutes lock that pair for 15
// minutes, with an injected clock; a success takes its own charge back.
func TestLockout(t *testing.T) {
	now := time.Date(2026, 1, 1, 9, 0, 0, 0, time.UTC)
	l := newLockout(t, &now)
	a, b := netip.MustParseAddr("198.51.100.7"), netip.MustParseAddr("203.0.113.9")
	if PairKey("d-1", "Alice", a) != PairKey("d-1", "alice", netip.MustParseAddr("::ffff:198.51.100.7")) {
		t.Error("keys must ignore user-name case and IPv4 mapping")
	}
	locked := func(user string, addr netip.Addr) bool {
		t.Helper()
		att, lk, err := l.BeginPassword("d-1", user, addr)
		if err != nil {
			t.Fatal(err)
		}
		if att != nil {
			att.Void() // a probe, not an attempt
		}
		return lk != nil
	}
	// Four failures spread over more than 5 minutes do not lock.
	for i := 0; i < 4; i++ {
		failPassword(t, l, "alice", a)
		now = now.Add(2 * time.Minute)
	}
	if locked("alice", a) {
		t.Fatal("locked by failures outside the window")
	}
	// Five within 5 minutes do: the fifth is still checked, the sixth is refused.
	now = now.Add(10 * time.Minute)
	for i := 0; i < 5; i++ {
		if failPassword(t, l, "alice", a) {
			t.Fatalf("attempt %d refused", i+1)
		}
		now = now.Add(30 * time.Second)
	}
	if !failPassword(t, l, "alice", a) {
		t.Fatal("the sixth attempt within 5 minutes was let through")
	}
	if locked("alice", b) {
		t.Error("another address is locked out too")
	}
	if locked("bob", a) {
		t.Error("another user is locked out too")
	}
	now = now.Add(15 * time.Minute)
	if locked("alice", a) {
		t.Error("still locked after 15 minutes")
	}
	// A correct password clears the pair's failures.
	for i := 0; i < 4; i++ {
		failPassword(t, l, "carol", a)
	}
	att, _, _ := l.BeginPassword("d-1", "carol", a)
	if err := att.Succeeded(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 4; i++ {
		if failPassword(t, l, "carol", a) {
			t.Fatal("a success did not clear the failures before it")
		}
	}
	// The fifth attempt starts the lockout; when it turns out right, the lockout it started
	// ends with it.
	att, _, _ = l.BeginPassword("d-1", "carol", a)
	att.Succeeded()
	if locked("carol", a) {
		t.Error("the lockout started by an attempt that succeeded is still in force")
	}
}

// TestIPv6Slash64: the addresses of one /64 count as one.
func TestIPv6Slash64(t *testing.T) {
	now := time.Date(2026, 1, 1, 9, 0, 0, 0, time.UTC)
	l := newLockout(t, &now)
	for i := 0; i < 5; i++ {
		addr := netip.MustParseAddr("2001:db8:1:2::" + string(rune('a'+i)))
		if failPassword(t, l, "alice", addr) {
			t.Fatalf("attempt %d refused", i+1)
		}
	}
	if !failPassword(t, l, "alice", netip.MustParseAddr("2001:db8:1:2:ffff:ffff:ffff:ffff")) {
		t.Error("a sixth address of the same /64 got a sixth guess")
	}
	if failPassword(t, l, "alice", netip.MustParseAddr("2001:db8:1:3::1")) {
		t.Error("the next /64 is locked too")
	}
}

// TestUserCeiling: guesses at one user from many addresses stop at UserFailures, however
// many addresses there are; a correct password does not reset the ceiling's count.
func TestUserCeiling(t *testing.T) {
	now := time.Date(2026, 1, 1, 9, 0, 0, 0, time.UTC)
	l := newLockout(t, &now)
	guesses := 0
	for i := 0; i < 100; i++ {
		addr := netip.AddrFrom4([4]byte{198, 51, 100, byte(i)})
		for j := 0; j < 5; j++ {
			if !failPassword(t, l, "alice", addr) {
				guesses++
			}
		}
		if i == 1 { // the real user logs in in between
			att, _, _ := l.BeginPassword("d-1", "alice", netip.MustParseAddr("192.0.2.1"))
			att.Succeeded()
		}
	}
	if guesses != l.UserFailures {
		t.Errorf("%d guesses from 100 addresses, want the ceiling of %d", guesses, l.UserFailures)
	}
}

// TestMFAFailures: wrong MFA codes lock the user out from every address, and a correct
// password (which alone never clears them) cannot be used to start over; only a completed
// MFA step does.
func TestMFAFailures(t *testing.T) {
	now := time.Date(2026, 1, 1, 9, 0, 0, 0, time.UTC)
	l := newLockout(t, &now)
	addr := netip.MustParseAddr("198.51.100.7")
	for i := 0; i < 5; i++ {
		// The password is right every time...
		att, lk, err := l.BeginPassword("d-1", "alice", netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}))
		if err != nil || lk != nil {
			t.Fatalf("password step %d: %v %v", i+1, lk, err)
		}
		att.Succeeded()
		// ...and the code wrong.
		if m, lk, err := l.BeginMFA("d-1", "alice"); err != nil || lk != nil || m == nil {
			t.Fatalf("MFA step %d refused: %v %v", i+1, lk, err)
		}
	}
	if lk, _ := l.MFALocked("d-1", "alice"); lk == nil {
		t.Fatal("5 wrong MFA codes did not lock the user")
	}
	if _, lk, _ := l.BeginMFA("d-1", "alice"); lk == nil {
		t.Error("a sixth MFA code was checked")
	}
	att, _, _ := l.BeginPassword("d-1", "alice", addr)
	att.Succeeded()
	if lk, _ := l.MFALocked("d-1", "alice"); lk == nil {
		t.Error("a correct password ended the MFA lockout")
	}
	now = now.Add(15 * time.Minute)
	if lk, _ := l.MFALocked("d-1", "alice"); lk != nil {
		t.Error("still locked after 15 minutes")
	}
	// A challenge round is not a failure; a completed MFA step clears the count.
	for i := 0; i < 4; i++ {
		l.BeginMFA("d-1", "alice")
	}
	m, _, _ := l.BeginMFA("d-1", "alice")
	m.Void()
	m, _, _ = l.BeginMFA("d-1", "alice")
	m.Succeeded()
	for i := 0; i < 4; i++ {
		if _, lk, _ := l.BeginMFA("d-1", "alice"); lk != nil {
			t.Fatal("a completed MFA step did not clear the count")
		}
	}
}

// TestSweep: records with no failure in the window and no lockout in force go; the
// others stay.
func TestSweep(t *testing.T) {
	now := time.Date(2026, 1, 1, 9, 0, 0, 0, time.UTC)
	l := newLockout(t, &now)
	for i := 0; i < 50; i++ {
		failPassword(t, l, "nobody"+string(rune('a'+i%26))+string(rune('a'+i/26)), netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}))
	}
	for i := 0; i < 5; i++ {
		failPassword(t, l, "alice", netip.MustParseAddr("192.0.2.1"))
	}
	now = now.Add(6 * time.Minute)
	failPassword(t, l, "bob", netip.MustParseAddr("192.0.2.1"))
	n, err := l.Sweep()
	if err != nil {
		t.Fatal(err)
	}
	// 50 pair + 50 user records of unknown names go, and alice's user record (5 failures,
	// all out of the window); alice's locked pair and bob's two records stay.
	if n != 101 {
		t.Errorf("swept %d records, want 101", n)
	}
	if failPassword(t, l, "alice", netip.MustParseAddr("192.0.2.1")) == false {
		t.Error("the sweep ended a lockout in force")
	}
}
