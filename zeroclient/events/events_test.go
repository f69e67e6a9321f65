package events

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestAccessEventIsTheGuides(t *testing.T) {
	dir := t.TempDir()
	got := make(chan []byte, 1)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- b
	}))
	defer hook.Close()
	e, err := Open(Config{Log: filepath.Join(dir, "access.jsonl"), AuditLog: filepath.Join(dir, "audit.jsonl"), Webhook: hook.URL,
		WebhookTimeout: time.Second, Source: "aws.workspaces", Account: "123456789012", Region: "local"}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	login := time.Date(2018, 7, 1, 17, 52, 51, 595_000_000, time.UTC)
	if err := e.Access(Access{ClientIP: "192.0.2.3", ProductName: "Teradici PCoIP Zero Client", Platform: "Teradici PCoIP Zero Client and Tera2",
		DirectoryID: "d-123456789", WorkspaceID: "ws-xyskdga", LoginTime: login}); err != nil {
		t.Fatal(err)
	}
	e.Audit("authenticate", "AUTH_FAILED_UNKNOWN_USERNAME_OR_PASSWORD", "wrong password", map[string]string{"userName": "alice"})
	var hooked []byte
	select {
	case hooked = <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("webhook not called")
	}
	e.Close()
	line, _ := os.ReadFile(filepath.Join(dir, "access.jsonl"))
	if strings.TrimSpace(string(line)) != strings.TrimSpace(string(hooked)) {
		t.Error("the webhook got something else than the log")
	}
	var m map[string]any
	json.Unmarshal(line, &m)
	d := m["detail"].(map[string]any)
	for k, want := range map[string]any{"version": "0", "detail-type": "WorkSpaces Access", "source": "aws.workspaces", "account": "123456789012", "region": "local"} {
		if m[k] != want {
			t.Errorf("%s = %v, want %v", k, m[k], want)
		}
	}
	for k, want := range map[string]any{"clientIpAddress": "192.0.2.3", "actionType": "successfulLogin", "loginTime": "2018-07-01T17:52:51.595Z",
		"clientPlatform": "Teradici PCoIP Zero Client and Tera2", "directoryId": "d-123456789", "workspaceId": "ws-xyskdga",
		"workspacesClientProductName": "Teradici PCoIP Zero Client"} {
		if d[k] != want {
			t.Errorf("detail.%s = %v, want %v", k, d[k], want)
		}
	}
	if len(d) != 7 || len(m) != 9 {
		t.Errorf("fields beyond the guide's: %v", m)
	}
	audit, _ := os.ReadFile(filepath.Join(dir, "audit.jsonl"))
	if !strings.Contains(string(audit), `"reason":"wrong password"`) || strings.Contains(string(audit), "successfulLogin") {
		t.Errorf("audit: %s", audit)
	}
}

// TestRotation: both logs rotate by size (to .1 … .keep, the oldest dropped), no line is
// split, and the files together stay within (keep+1) × the size however much is written.
func TestRotation(t *testing.T) {
	dir := t.TempDir()
	const size, keep = 4096, 3
	e, err := Open(Config{Log: filepath.Join(dir, "access.jsonl"), AuditLog: filepath.Join(dir, "audit.jsonl"), RotateSize: size, Keep: keep},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	const n = 2000 // about 200 KiB of audit lines, 50 times the size
	for i := 0; i < n; i++ {
		e.Audit("authenticate", "AUTH_FAILED_UNKNOWN_USERNAME_OR_PASSWORD", "wrong password", map[string]string{"n": strings.Repeat("x", i%50)})
		if i%10 == 0 {
			if err := e.Access(Access{ClientIP: "192.0.2.3", DirectoryID: "d-123456789", WorkspaceID: "ws-x", LoginTime: time.Now()}); err != nil {
				t.Fatal(err)
			}
		}
	}
	e.Close()
	for _, name := range []string{"audit.jsonl", "access.jsonl"} {
		var total int64
		files := 0
		for i := 0; i <= keep+1; i++ {
			p := filepath.Join(dir, name)
			if i > 0 {
				p += "." + string(rune('0'+i))
			}
			b, err := os.ReadFile(p)
			if err != nil {
				if i <= keep {
					t.Errorf("%s: %v", p, err)
				}
				continue
			}
			if i > keep {
				t.Errorf("%s: more than %d rotated files kept", p, keep)
			}
			files++
			total += int64(len(b))
			if len(b) > size {
				t.Errorf("%s: %d bytes, over the %d-byte rotation size", p, len(b), size)
			}
			for _, line := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
				var m map[string]any
				if err := json.Unmarshal([]byte(line), &m); err != nil {
					t.Fatalf("%s: a line is not whole JSON: %q", p, line)
				}
			}
			if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o600 {
				t.Errorf("%s: mode %v", p, fi.Mode().Perm())
			}
		}
		t.Logf("%s: %d files, %d bytes in all", name, files, total)
		if total > (keep+1)*size {
			t.Errorf("%s: %d bytes kept, over %d", name, total, (keep+1)*size)
		}
	}
}
