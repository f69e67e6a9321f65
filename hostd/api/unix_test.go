package api

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/workspaces"
	"github.com/aws/aws-sdk-go-v2/service/workspaces/types"

	"deskhost/internal/certs"
	"deskhost/internal/hostconfig"
	"deskhost/internal/hostdclient"
)

func TestMain(m *testing.M) {
	if os.Getenv("HOSTD_API_TEST_HELPER") == "unix-client" {
		os.Exit(unixClientHelper(os.Getenv("HOSTD_API_TEST_SOCKET")))
	}
	os.Exit(m.Run())
}

// socketClient is hostd's API client on the unix socket at path, without retries.
func socketClient(t *testing.T, path string) *hostdclient.Client {
	c, err := hostdclient.New(hostdclient.Options{Socket: path, Region: testRegion, MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func unixHTTPClient(path string) *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}
}

// unixClientHelper runs in a child process (as another user): one unsigned call over the
// socket, printing "status type: message".
func unixClientHelper(path string) int {
	req, _ := http.NewRequest(http.MethodPost, "http://hostd/", strings.NewReader(`{}`))
	target := os.Getenv("HOSTD_API_TEST_TARGET")
	if target == "" {
		target = "DescribeWorkspaces"
	}
	req.Header.Set("X-Amz-Target", "WorkspacesService."+target)
	req.Header.Set("Content-Type", ContentType)
	resp, err := unixHTTPClient(path).Do(req)
	if err != nil {
		fmt.Println("dial error:", err)
		return 1
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var eb errorBody
	json.Unmarshal(b, &eb)
	fmt.Printf("%d %s: %s\n", resp.StatusCode, eb.Type, eb.Message)
	return 0
}

func TestUnixSocket(t *testing.T) {
	requireRoot(t, "the peer-credential check needs a root peer and a non-root one")
	e := newEnv(t, envOptions{})
	base := t.TempDir()
	dir := filepath.Join(base, "run", "deskhost")
	path := filepath.Join(dir, "hostd.sock")
	if err := os.MkdirAll(dir, 0o755); err != nil { // too open: ListenUnix narrows it
		t.Fatal(err)
	}
	ln, err := ListenUnix(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.api.ServeUnixListener(ctx, ln) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ServeUnixListener: %v", err)
		}
		if _, err := os.Lstat(path); !os.IsNotExist(err) {
			t.Errorf("the socket outlived the server: %v", err)
		}
	}()

	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("socket directory mode %v (%v), want 0700", fi.Mode().Perm(), err)
	}
	if fi, err := os.Lstat(path); err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v (%v), want a socket with 0600", fi.Mode(), err)
	}

	// Root: accepted without a signature.
	c := socketClient(t, path)
	out, err := c.CreateWorkspaces(context.Background(), &workspaces.CreateWorkspacesInput{Workspaces: []types.WorkspaceRequest{
		{DirectoryId: aws.String(dirID), UserName: aws.String("erin"), BundleId: aws.String(bundleValue)}}})
	if err != nil || len(out.PendingRequests) != 1 {
		t.Fatalf("create over the socket: %v %+v", err, out)
	}
	if !strings.Contains(e.log.String(), `"principal":"local"`) || !strings.Contains(e.log.String(), fmt.Sprintf(`"source":"unix:pid=%d,uid=0"`, os.Getpid())) {
		t.Errorf("audit log lacks the local principal and its peer:\n%s", e.log.String())
	}

	// Another user: refused by SO_PEERCRED, even with the socket opened up to it.
	helper := filepath.Join(base, "helper.test")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(helper, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{filepath.Dir(base), base, filepath.Join(base, "run"), dir} {
		os.Chmod(p, 0o755)
	}
	os.Chmod(path, 0o666)
	cmd := exec.Command(helper)
	cmd.Env = []string{"HOSTD_API_TEST_HELPER=unix-client", "HOSTD_API_TEST_SOCKET=" + path}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	got, err := cmd.CombinedOutput()
	os.Chmod(dir, 0o700)
	os.Chmod(path, 0o600)
	if err != nil {
		t.Fatalf("helper as uid 65534: %v\n%s", err, got)
	}
	if want := "403 AccessDeniedException: the local socket accepts only root and the broker group (peer uid 65534 gid 65534)"; !strings.HasPrefix(string(got), want) {
		t.Errorf("non-root peer got %q, want %q…", got, want)
	}

	// A live socket is not stolen; a stale one is replaced; shared directories are refused.
	if _, err := ListenUnix(path); err == nil || !strings.Contains(err.Error(), "another server is listening") {
		t.Errorf("second ListenUnix on a live socket: %v", err)
	}
	stale := filepath.Join(dir, "stale.sock")
	sl, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	sl.SetUnlinkOnClose(false)
	sl.Close()
	if l2, err := ListenUnix(stale); err != nil {
		t.Errorf("stale socket not replaced: %v", err)
	} else {
		l2.Close()
	}
	if _, err := ListenUnix("/tmp/hostd-api-test.sock"); err == nil || !strings.Contains(err.Error(), "directory of its own") {
		t.Errorf("socket in /tmp: %v", err)
	}
	notSock := filepath.Join(dir, "plain")
	os.WriteFile(notSock, nil, 0o600)
	if _, err := ListenUnix(notSock); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("ListenUnix over a regular file: %v", err)
	}
}

// TestBrokerGroup: with a broker group, the socket's directory and the socket are open to
// that group, whose members (zeroclient after it dropped root) may make the broker's calls
// and no others; a peer outside the group is refused as before.
func TestBrokerGroup(t *testing.T) {
	requireRoot(t, "the peer-credential check needs peers of other users")
	const nogroup = 65534
	e := newEnv(t, envOptions{brokerGID: nogroup, broker: true})
	base, err := os.MkdirTemp("", "hostd-api") // t.TempDir's parent is root-only
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	os.Chmod(base, 0o755)
	path := filepath.Join(base, "run", "hostd.sock")
	ln, err := ListenUnixGroup(path, nogroup)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.api.ServeUnixListener(ctx, ln) }()
	defer func() { cancel(); <-done }()
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Dir(path), &st); err != nil || st.Mode&0o7777 != 0o710 || st.Gid != nogroup {
		t.Errorf("socket directory mode %o group %d, want 0710 and the broker group", st.Mode&0o7777, st.Gid)
	}
	if err := syscall.Stat(path, &st); err != nil || st.Mode&0o7777 != 0o660 || st.Gid != nogroup {
		t.Errorf("socket mode %o group %d, want 0660 and the broker group", st.Mode&0o7777, st.Gid)
	}
	helper := filepath.Join(base, "helper.test")
	exe, _ := os.Executable()
	bin, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(helper, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	call := func(gid uint32, target string) string {
		cmd := exec.Command(helper)
		cmd.Env = []string{"HOSTD_API_TEST_HELPER=unix-client", "HOSTD_API_TEST_SOCKET=" + path, "HOSTD_API_TEST_TARGET=" + target}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: gid, Groups: []uint32{}}}
		out, _ := cmd.CombinedOutput()
		return strings.TrimSpace(string(out))
	}
	for _, op := range []string{"DescribeWorkspaces", "StartWorkspaces", "ReportConnections", "DescribeCatalog", "FindWorkspace", "IssueConnectTag"} {
		if got := call(nogroup, op); strings.HasPrefix(got, "403") || strings.HasPrefix(got, "dial error") {
			t.Errorf("broker call %s refused: %s", op, got)
		}
	}
	if got := call(nogroup, "TerminateWorkspaces"); !strings.HasPrefix(got, "403 AccessDeniedException: TerminateWorkspaces: the connection broker may call only") {
		t.Errorf("broker calling TerminateWorkspaces: %s", got)
	}
	if got := call(nogroup-1, "DescribeWorkspaces"); !strings.Contains(got, "permission denied") {
		t.Errorf("a peer outside the broker group: %s", got)
	}
	if !strings.Contains(e.log.String(), `"principal":"broker"`) {
		t.Errorf("audit log lacks the broker principal:\n%s", e.log.String())
	}
}

// TestHandlerWithoutPeerNeedsSignature: the bare Handler (no unix peer) demands SigV4, so
// mounting it elsewhere never opens the local shortcut.
func TestHandlerWithoutPeerNeedsSignature(t *testing.T) {
	e := newEnv(t, envOptions{})
	r := e.raw(rawCall{target: "WorkspacesService.DescribeWorkspaces", unsigned: true, body: []byte(`{}`)})
	if r.errType != "MissingAuthenticationTokenException" {
		t.Errorf("got %s", r.errType)
	}
}

// TestRunFromConfig: Run opens both listeners from the config's api section, serves signed
// HTTPS and root's socket, and returns nil once the context ends.
func TestRunFromConfig(t *testing.T) {
	requireRoot(t, "the socket accepts only root peers")
	e := newEnv(t, envOptions{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	dir := t.TempDir()
	cfg := hostconfig.API{Listen: addr, Socket: filepath.Join(dir, "run", "hostd.sock"), Region: testRegion}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.api.Run(ctx, cfg, filepath.Join(dir, "tls")) }()
	defer func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(ShutdownTimeout + 5*time.Second):
			t.Errorf("Run did not return")
		}
	}()
	var pem []byte
	for i := 0; i < 100 && pem == nil; i++ {
		pem, _ = os.ReadFile(filepath.Join(dir, "tls", certs.CAFile))
		time.Sleep(20 * time.Millisecond)
	}
	https := &env{t: t, url: "https://" + addr, roots: x509.NewCertPool(), region: testRegion}
	https.roots.AppendCertsFromPEM(pem)
	var lastErr error
	for i := 0; i < 100; i++ {
		if _, lastErr = https.client(accessKeyID, secretKey).DescribeWorkspaces(context.Background(), &workspaces.DescribeWorkspacesInput{}); lastErr == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if lastErr != nil {
		t.Fatalf("HTTPS from config: %v", lastErr)
	}
	c := socketClient(t, cfg.Socket)
	if _, err := c.DescribeWorkspaceBundles(context.Background(), &workspaces.DescribeWorkspaceBundlesInput{}); err != nil {
		t.Errorf("socket from config: %v", err)
	}
	if err := e.api.Run(context.Background(), hostconfig.API{Listen: "256.0.0.1:1"}, dir); err == nil {
		t.Errorf("Run with a bad address returned nil")
	}
}
