package metadata

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func do(t *testing.T, s *Server, method, path, from string, hdr map[string]string) (int, string) {
	t.Helper()
	r := httptest.NewRequest(method, path, nil)
	r.RemoteAddr = from
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	s.ServeHTTP(w, r)
	b, _ := io.ReadAll(w.Result().Body)
	return w.Code, string(b)
}

func TestMetadata(t *testing.T) {
	s := New(nil)
	s.SetInstances([]Instance{{WorkspaceID: "ws-abc", DirectoryID: "d-1", IP: netip.MustParseAddr("198.19.0.10"), MAC: "02:d5:00:00:00:01", UserData: "#cloud-config\n"}})
	const me = "198.19.0.10:40000"
	if c, b := do(t, s, "GET", "/latest/meta-data/instance-id", me, nil); c != 200 || b != "ws-abc" {
		t.Fatalf("instance-id: %d %q", c, b)
	}
	if c, b := do(t, s, "GET", "/latest/user-data", me, nil); c != 200 || !strings.HasPrefix(b, "#cloud-config") {
		t.Fatalf("user-data: %d %q", c, b)
	}
	if c, b := do(t, s, "GET", "/latest/dynamic/instance-identity/document", me, nil); c != 200 || !strings.Contains(b, `"directoryId": "d-1"`) {
		t.Fatalf("document: %d %q", c, b)
	}
	if c, _ := do(t, s, "GET", "/latest/meta-data/instance-id", "198.19.0.11:1", nil); c != 404 {
		t.Fatalf("unknown source: %d", c)
	}
	if c, _ := do(t, s, "GET", "/latest/meta-data/instance-id", me, map[string]string{"X-Forwarded-For": "1.2.3.4"}); c != 403 {
		t.Fatalf("proxied: %d", c)
	}
	// IMDSv2
	s.RequireToken = true
	if c, _ := do(t, s, "GET", "/latest/meta-data/instance-id", me, nil); c != 401 {
		t.Fatalf("no token: %d", c)
	}
	if c, _ := do(t, s, "PUT", "/latest/api/token", me, nil); c != 400 {
		t.Fatalf("token without ttl: %d", c)
	}
	c, tok := do(t, s, "PUT", "/latest/api/token", me, map[string]string{tokenTTLHeader: "60"})
	if c != 200 || len(tok) < 20 {
		t.Fatalf("token: %d %q", c, tok)
	}
	if c, b := do(t, s, "GET", "/latest/meta-data/local-ipv4", me, map[string]string{tokenHeader: tok}); c != 200 || b != "198.19.0.10" {
		t.Fatalf("with token: %d %q", c, b)
	}
	s.SetInstances([]Instance{{WorkspaceID: "ws-abc", IP: netip.MustParseAddr("198.19.0.10")}, {WorkspaceID: "ws-def", IP: netip.MustParseAddr("198.19.0.11")}})
	if c, _ := do(t, s, "GET", "/latest/meta-data/instance-id", "198.19.0.11:5", map[string]string{tokenHeader: tok}); c != 401 {
		t.Fatalf("token of another instance accepted: %d", c)
	}
	if c, _ := do(t, s, "POST", "/latest/meta-data/", me, map[string]string{tokenHeader: tok}); c != http.StatusMethodNotAllowed {
		t.Fatalf("POST: %d", c)
	}
}

// clock is an injected time source.
type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

func newTokenServer(t *testing.T) (*Server, *clock) {
	t.Helper()
	s := New(slog.New(slog.NewTextHandler(io.Discard, nil)))
	c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	s.now = c.now
	s.RequireToken = true
	s.SetInstances([]Instance{
		{WorkspaceID: "ws-abc", IP: netip.MustParseAddr("198.19.0.10")},
		{WorkspaceID: "ws-def", IP: netip.MustParseAddr("198.19.0.11")},
	})
	return s, c
}

func getToken(t *testing.T, s *Server, from, ttl string) string {
	t.Helper()
	c, tok := do(t, s, "PUT", "/latest/api/token", from, map[string]string{tokenTTLHeader: ttl})
	if c != 200 || len(tok) < 40 {
		t.Fatalf("token from %s: %d %q", from, c, tok)
	}
	return tok
}

func works(t *testing.T, s *Server, from, tok string) bool {
	t.Helper()
	c, _ := do(t, s, "GET", "/latest/meta-data/instance-id", from, map[string]string{tokenHeader: tok})
	return c == 200
}

// checkIndex verifies the token index's invariants: every token is listed
// exactly once under its own source, and no source holds more than the cap.
func checkIndex(t testing.TB, s *Server) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	listed := 0
	for ip, src := range s.sources {
		if len(src.tokens) == 0 || len(src.tokens) > max(s.MaxTokens, 1) {
			t.Fatalf("source %s holds %d tokens (cap %d)", ip, len(src.tokens), s.MaxTokens)
		}
		for _, k := range src.tokens {
			tk := s.tokens[k]
			if tk == nil || tk.src != ip || tk.ws != src.ws {
				t.Fatalf("source %s lists token %q as %+v", ip, k, tk)
			}
		}
		listed += len(src.tokens)
	}
	if listed != len(s.tokens) {
		t.Fatalf("%d tokens, %d listed under sources", len(s.tokens), listed)
	}
}

// TestTokenCap: a guest asking for tokens without end keeps at most
// MaxTokens; the newest work, the oldest are replaced, and another guest's
// tokens are untouched.
func TestTokenCap(t *testing.T) {
	s, _ := newTokenServer(t)
	const me, other = "198.19.0.10:40000", "198.19.0.11:40000"
	theirs := getToken(t, s, other, "21600")
	var mine []string
	for range 10 * MaxTokensPerSource {
		mine = append(mine, getToken(t, s, me, "21600"))
	}
	checkIndex(t, s)
	if n := len(s.sources[netip.MustParseAddr("198.19.0.10")].tokens); n != MaxTokensPerSource {
		t.Fatalf("source holds %d tokens, want the cap %d", n, MaxTokensPerSource)
	}
	if len(s.tokens) != MaxTokensPerSource+1 {
		t.Fatalf("%d tokens in all, want %d", len(s.tokens), MaxTokensPerSource+1)
	}
	for i, tok := range mine {
		live := i >= len(mine)-MaxTokensPerSource
		if works(t, s, me, tok) != live {
			t.Fatalf("token %d of %d: works=%v, want %v", i, len(mine), !live, live)
		}
	}
	if !works(t, s, other, theirs) {
		t.Fatal("another WorkSpace's token was evicted by this one's requests")
	}
	if works(t, s, other, mine[len(mine)-1]) || works(t, s, me, theirs) {
		t.Fatal("a token works from another WorkSpace's address")
	}
	// a smaller configured cap holds too
	s.MaxTokens = 3
	for range 5 {
		getToken(t, s, me, "60")
	}
	checkIndex(t, s)
	if n := len(s.sources[netip.MustParseAddr("198.19.0.10")].tokens); n != 3 {
		t.Fatalf("MaxTokens 3: source holds %d", n)
	}
}

// TestTokenExpiry: a token stops working at its TTL (injected clock), and
// expired tokens are forgotten: by the source's next request, by a lookup of
// the token, and by Sweep for sources that never come back.
func TestTokenExpiry(t *testing.T) {
	s, c := newTokenServer(t)
	const me, other = "198.19.0.10:40000", "198.19.0.11:40000"
	short := getToken(t, s, me, "60")
	long := getToken(t, s, me, "3600")
	c.advance(59 * time.Second)
	if !works(t, s, me, short) {
		t.Fatal("token dead before its TTL")
	}
	c.advance(time.Second)
	if works(t, s, me, short) {
		t.Fatal("token works at its TTL")
	}
	if _, ok := s.tokens[short]; ok {
		t.Fatal("looking up an expired token did not forget it")
	}
	if !works(t, s, me, long) {
		t.Fatal("the longer token died with the short one")
	}
	// expiry on the source's next request
	for range 5 {
		getToken(t, s, me, "10")
	}
	c.advance(11 * time.Second)
	getToken(t, s, me, "10")
	checkIndex(t, s)
	if n := len(s.sources[netip.MustParseAddr("198.19.0.10")].tokens); n != 2 { // long + the new one
		t.Fatalf("after expiry the source holds %d tokens, want 2", n)
	}
	// a source that never returns: Sweep
	for range 20 {
		getToken(t, s, other, "30")
	}
	c.advance(31 * time.Second)
	s.Sweep()
	checkIndex(t, s)
	if _, ok := s.sources[netip.MustParseAddr("198.19.0.11")]; ok {
		t.Fatal("Sweep left an expired source")
	}
	c.advance(time.Hour)
	s.Sweep()
	if len(s.tokens) != 0 || len(s.sources) != 0 {
		t.Fatalf("after every TTL: %d tokens, %d sources", len(s.tokens), len(s.sources))
	}
}

// TestTokenTTLHeader: only one plain decimal value in range.
func TestTokenTTLHeader(t *testing.T) {
	s, _ := newTokenServer(t)
	const me = "198.19.0.10:40000"
	for _, bad := range []string{"", "0", "21601", "+60", "-1", " 60", "60 ", "0x3c", "6e1", "999999", "1.5"} {
		if c, _ := do(t, s, "PUT", "/latest/api/token", me, map[string]string{tokenTTLHeader: bad}); c != 400 {
			t.Errorf("TTL %q: %d", bad, c)
		}
	}
	r := httptest.NewRequest("PUT", "/latest/api/token", nil)
	r.RemoteAddr = me
	r.Header.Add(tokenTTLHeader, "60")
	r.Header.Add(tokenTTLHeader, "60")
	w := httptest.NewRecorder()
	s.ServeHTTP(w, r)
	if w.Code != 400 {
		t.Errorf("two TTL headers: %d", w.Code)
	}
	for _, good := range []string{"1", "21600", "00060"} {
		getToken(t, s, me, good)
	}
}

// TestTokensFollowInstances: a WorkSpace that leaves loses its tokens, and a
// new WorkSpace given its address never inherits them.
func TestTokensFollowInstances(t *testing.T) {
	s, _ := newTokenServer(t)
	const me = "198.19.0.10:40000"
	tok := getToken(t, s, me, "600")
	s.SetInstances([]Instance{{WorkspaceID: "ws-new", IP: netip.MustParseAddr("198.19.0.10")}})
	if works(t, s, me, tok) {
		t.Fatal("the address's new WorkSpace can use the old one's token")
	}
	if len(s.tokens) != 0 {
		t.Fatalf("%d tokens left after their WorkSpace left", len(s.tokens))
	}
	tok = getToken(t, s, me, "600")
	s.SetInstances(nil)
	if len(s.tokens) != 0 || len(s.sources) != 0 {
		t.Fatal("tokens of a removed WorkSpace kept")
	}
	s.SetInstances([]Instance{{WorkspaceID: "ws-new", IP: netip.MustParseAddr("198.19.0.10")}})
	if works(t, s, me, tok) {
		t.Fatal("a token survived its WorkSpace's removal")
	}
}

// BenchmarkTokenLookup: a lookup with many WorkSpaces each at the cap costs
// the same as with one token (a map access, no sweep).
func BenchmarkTokenLookup(b *testing.B) {
	for _, n := range []int{1, 1000} {
		b.Run(fmt.Sprintf("workspaces=%d", n), func(b *testing.B) {
			s := New(slog.New(slog.NewTextHandler(io.Discard, nil)))
			var is []Instance
			for i := range n {
				is = append(is, Instance{WorkspaceID: fmt.Sprintf("ws-%d", i), IP: netip.AddrFrom4([4]byte{198, 19, byte(i >> 8), byte(i)})})
			}
			s.SetInstances(is)
			now := time.Now()
			per := 1
			if n > 1 {
				per = MaxTokensPerSource
			}
			var last string
			for _, in := range is {
				for j := range per {
					last = fmt.Sprintf("%s-%d", in.WorkspaceID, j)
					s.add(last, in.IP, in.WorkspaceID, now.Add(time.Hour), now)
				}
			}
			ip, ws := is[len(is)-1].IP, is[len(is)-1].WorkspaceID
			b.ResetTimer()
			for range b.N {
				if !s.valid(last, ip, ws, now) {
					b.Fatal("token not valid")
				}
			}
		})
	}
}
