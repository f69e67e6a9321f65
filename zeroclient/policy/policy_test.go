package policy

import (
	"net/netip"
	"strings"
	"sync"
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

// memLockouts is an in-memory LockoutStore for this pure-logic test.
type memLockouts struct {
	mu sync.Mutex
	m  map[string]credstore.Lockout
}

func (s *memLockouts) UpdateLockout(key string, fn func(*credstore.Lockout)) (credstore.Lockout, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.m[key]
	fn(&r)
	s.m[key] = r
	return r, nil
}

func (s *memLockouts) ReadLockout(key string) (credstore.Lockout, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[key], nil
}

// TestLockout: 5 failures per user and address within 5 minutes lock that pair for 15
// minutes, with an injected clock.
func TestLockout(t *testing.T) {
	now := time.Date(2026, 1, 1, 9, 0, 0, 0, time.UTC)
	l := &Lockout{Failures: 5, Window: 5 * time.Minute, Duration: 15 * time.Minute, Store: &memLockouts{m: map[string]credstore.Lockout{}},
		Now: func() time.Time { return now }}
	a, b := netip.MustParseAddr("198.51.100.7"), netip.MustParseAddr("203.0.113.9")
	key := LockoutKey("d-1", "Alice", a)
	if key != LockoutKey("d-1", "alice", netip.MustParseAddr("::ffff:198.51.100.7")) {
		t.Error("keys must ignore user-name case and IPv4 mapping")
	}
	// Four failures spread over more than 5 minutes do not lock.
	for i := 0; i < 4; i++ {
		l.Fail(key)
		now = now.Add(2 * time.Minute)
	}
	if locked, _, _ := l.Locked(key); locked {
		t.Fatal("locked by failures outside the window")
	}
	// Five within 5 minutes do: the fifth starts the lockout.
	now = now.Add(10 * time.Minute)
	var started bool
	for i := 0; i < 5; i++ {
		started, _ = l.Fail(key)
		if started != (i == 4) {
			t.Fatalf("failure %d: started=%v", i+1, started)
		}
		now = now.Add(30 * time.Second)
	}
	if locked, until, _ := l.Locked(key); !locked || !started || until.Sub(now) > 15*time.Minute || until.Sub(now) < 14*time.Minute {
		t.Fatalf("after 5 failures: locked=%v started=%v until=%s", locked, started, until)
	}
	if locked, _, _ := l.Locked(LockoutKey("d-1", "alice", b)); locked {
		t.Error("another address is locked out too")
	}
	if locked, _, _ := l.Locked(LockoutKey("d-1", "bob", a)); locked {
		t.Error("another user is locked out too")
	}
	l.Succeed(key) // a correct password while locked is refused by the caller; it must not unlock
	if locked, _, _ := l.Locked(key); !locked {
		t.Error("a success during the lockout ended it")
	}
	now = now.Add(15 * time.Minute)
	if locked, _, _ := l.Locked(key); locked {
		t.Error("still locked after 15 minutes")
	}
	if started, _ := l.Fail(key); started {
		t.Error("one failure after a lockout ended started a new one")
	}
}
