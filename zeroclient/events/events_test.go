package events

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"deskhost/internal/testenv"
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

// TestMain doubles as an unprivileged writer of the logs (TestHandOver): with
// EVENTS_TEST_WRITE set to a directory, it writes enough audit lines there to rotate the
// log twice, as whoever it runs as, and exits.
func TestMain(m *testing.M) {
	if dir := os.Getenv("EVENTS_TEST_WRITE"); dir != "" {
		e, err := Open(Config{Log: filepath.Join(dir, "access.jsonl"), AuditLog: filepath.Join(dir, "audit.jsonl"), RotateSize: 1024, Keep: 2},
			slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		for i := 0; i < 20; i++ {
			e.Audit("authenticate", "AUTH_FAILED", "wrong password", map[string]string{"by": "child"})
		}
		if err := e.Access(Access{ClientIP: "192.0.2.3", DirectoryID: "d-123456789", WorkspaceID: "ws-x", LoginTime: time.Now()}); err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		e.Close()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestHandOver: with an owner (zeroclient.user), the logs' directory and files become that
// user's so that zeroclient can rotate them after dropping root; a directory holding
// anything else is refused and left alone, and a link in a log's place is not followed.
func TestHandOver(t *testing.T) {
	testenv.Root(t)
	base, err := os.MkdirTemp("", "events")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	if err := os.Chmod(base, 0o711); err != nil { // nobody may pass through
		t.Fatal(err)
	}
	const nobody = 65534
	owner := &Owner{UID: nobody, GID: nobody}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	uidMode := func(p string) (int, os.FileMode) {
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		return int(fi.Sys().(*syscall.Stat_t).Uid), fi.Mode().Perm()
	}

	shared := filepath.Join(base, "shared")
	os.Mkdir(shared, 0o755)
	os.WriteFile(filepath.Join(shared, "credentials.db"), []byte("secret"), 0o600)
	if _, err := Open(Config{Log: filepath.Join(shared, "access.jsonl"), Owner: owner}, quiet); err == nil || !strings.Contains(err.Error(), "credentials.db") {
		t.Errorf("a directory holding the credential store was handed over (err %v)", err)
	}
	if uid, mode := uidMode(shared); uid != 0 || mode != 0o755 {
		t.Errorf("the refused directory changed: uid %d mode %o", uid, mode)
	}
	if _, err := os.Lstat(filepath.Join(shared, "access.jsonl")); err == nil {
		t.Error("a log was made in the refused directory")
	}

	dir := filepath.Join(base, "events")
	os.Mkdir(dir, 0o700)
	target := filepath.Join(base, "target")
	os.Symlink(target, filepath.Join(dir, "access.jsonl"))
	if _, err := Open(Config{Log: filepath.Join(dir, "access.jsonl"), Owner: owner}, quiet); err == nil {
		t.Error("a link in the log's place was followed")
	}
	if _, err := os.Lstat(target); err == nil {
		t.Error("the link's target was created")
	}
	os.Remove(filepath.Join(dir, "access.jsonl"))

	e, err := Open(Config{Log: filepath.Join(dir, "access.jsonl"), AuditLog: filepath.Join(dir, "audit.jsonl"), Owner: owner}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	e.Audit("authenticate", "AUTH_FAILED", "wrong password", map[string]string{"by": "root"})
	e.Close()
	for _, p := range []string{dir, filepath.Join(dir, "access.jsonl"), filepath.Join(dir, "audit.jsonl")} {
		if uid, mode := uidMode(p); uid != nobody || mode&0o077 != 0 {
			t.Errorf("%s: uid %d mode %o, want nobody's and private", p, uid, mode)
		}
	}

	// nobody, as zeroclient after the drop, rotates them: the file root made moves to .1.
	exe := filepath.Join(base, "events.test")
	b, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(exe, b, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("setpriv", fmt.Sprintf("--reuid=%d", nobody), fmt.Sprintf("--regid=%d", nobody), "--clear-groups", exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), "EVENTS_TEST_WRITE="+dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("writing the logs as nobody: %v: %s", err, out)
	}
	one, _ := os.ReadFile(filepath.Join(dir, "audit.jsonl.1"))
	two, _ := os.ReadFile(filepath.Join(dir, "audit.jsonl.2"))
	cur, _ := os.ReadFile(filepath.Join(dir, "audit.jsonl"))
	if !strings.Contains(string(one)+string(two), `"root"`) || !strings.Contains(string(cur), `"child"`) {
		t.Errorf("the log was not rotated by nobody:\n.1 %s\n.2 %s\ncurrent %s", one, two, cur)
	}
	if uid, _ := uidMode(filepath.Join(dir, "audit.jsonl")); uid != nobody {
		t.Errorf("the new log belongs to %d", uid)
	}
}
