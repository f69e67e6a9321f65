package metadata

import (
	"bufio"
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// FuzzServeHTTP feeds raw HTTP requests (as a guest's socket would deliver
// them) from a known WorkSpace, another one, an unknown source or a garbage
// address. "@TOKEN@" in the input becomes a live token of the first
// WorkSpace, so that the fuzzer reaches the paths behind a token.
//
// Invariants: no panic; an unknown source never gets 200; with RequireToken
// a metadata read succeeds only with the first WorkSpace's token from its own
// address; no source holds more than MaxTokens; the token index stays
// consistent; a token issued here works only for its own source.
func FuzzServeHTTP(f *testing.F) {
	for _, seed := range []string{
		"GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n",
		"GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\nX-aws-ec2-metadata-token: @TOKEN@\r\n\r\n",
		"PUT /latest/api/token HTTP/1.1\r\nHost: 169.254.169.254\r\nX-aws-ec2-metadata-token-ttl-seconds: 21600\r\n\r\n",
		"PUT /latest/api/token HTTP/1.1\r\nHost: x\r\nX-aws-ec2-metadata-token-ttl-seconds: +60\r\n\r\n",
		"PUT /latest/api/token HTTP/1.1\r\nHost: x\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\n\r\n",
		"PUT /latest/api/token HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 1.2.3.4\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\n\r\n",
		"HEAD /latest/user-data HTTP/1.0\r\n\r\n",
		"POST /latest/meta-data/ HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
		"GET http://169.254.169.254/latest/dynamic/instance-identity/document HTTP/1.1\r\nHost: y\r\n\r\n",
		"GET /latest/meta-data/../user-data HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /latest/meta-data/workspaces/ HTTP/1.1\r\nHost: x\r\nX-aws-ec2-metadata-token: \r\n\r\n",
		"GET /%2e%2e/latest/meta-data/mac HTTP/1.1\r\nHost: x\r\n\r\n",
	} {
		for _, from := range []uint8{0, 1, 2, 3, 0x80, 0x81} {
			f.Add([]byte(seed), from)
		}
	}
	f.Fuzz(func(t *testing.T, raw []byte, from uint8) {
		s := New(slog.New(slog.NewTextHandler(io.Discard, nil)))
		now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		s.now = func() time.Time { return now }
		s.MaxTokens = 3
		a, b := netip.MustParseAddr("198.19.0.10"), netip.MustParseAddr("198.19.0.11")
		s.SetInstances([]Instance{{WorkspaceID: "ws-a", IP: a, UserData: "#x"}, {WorkspaceID: "ws-b", IP: b}})
		// a live token of ws-a, and a full cap for ws-b
		tok := issue(t, s, a.String()+":1", "600")
		for range 3 {
			issue(t, s, b.String()+":1", "600")
		}
		s.RequireToken = from&0x80 != 0
		raw = bytes.ReplaceAll(raw, []byte("@TOKEN@"), []byte(tok))

		req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(raw)))
		if err != nil {
			return
		}
		remote := []string{a.String() + ":40000", b.String() + ":40000", "10.9.9.9:1", "garbage"}[from&3]
		req.RemoteAddr = remote
		w := httptest.NewRecorder()
		s.ServeHTTP(w, req)
		code, body := w.Code, w.Body.String()

		ap, perr := netip.ParseAddrPort(remote)
		known := perr == nil && (ap.Addr() == a || ap.Addr() == b)
		if !known && code == http.StatusOK {
			t.Fatalf("unknown source %q got 200: %q", remote, body)
		}
		isToken := req.URL.Path == "/latest/api/token"
		if code == http.StatusOK && s.RequireToken && !isToken {
			if req.Header.Get(tokenHeader) != tok || ap.Addr() != a {
				t.Fatalf("metadata read without a valid token (from %s, token %q): %q", remote, req.Header.Get(tokenHeader), body)
			}
		}
		if code == http.StatusOK && isToken {
			if req.Method != http.MethodPut || len(body) < 40 {
				t.Fatalf("token response %q to %s", body, req.Method)
			}
			other := map[netip.Addr]netip.Addr{a: b, b: a}[ap.Addr()]
			self := ap.Addr() == a
			wsID := map[bool]string{true: "ws-a", false: "ws-b"}[self]
			if !s.valid(body, ap.Addr(), wsID, now) || s.valid(body, other, "ws-a", now) || s.valid(body, other, "ws-b", now) {
				t.Fatalf("issued token not bound to its source %s", ap.Addr())
			}
		}
		if code == http.StatusOK && strings.Contains(body, "ws-b") && ap.Addr() != b {
			t.Fatalf("%s learned ws-b's metadata: %q", remote, body)
		}
		checkIndex(t, s)
	})
}

func issue(t *testing.T, s *Server, from, ttl string) string {
	t.Helper()
	r := httptest.NewRequest("PUT", "/latest/api/token", nil)
	r.RemoteAddr = from
	r.Header.Set(tokenTTLHeader, ttl)
	w := httptest.NewRecorder()
	s.ServeHTTP(w, r)
	if w.Code != 200 {
		t.Fatalf("token: %d %s", w.Code, w.Body)
	}
	return w.Body.String()
}
