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
