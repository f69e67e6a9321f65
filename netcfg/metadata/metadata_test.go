package metadata

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
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
