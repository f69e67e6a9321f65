package server_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"deskhost/internal/catalog"
	"deskhost/internal/hostconfig"
	"deskhost/internal/testenv"
	"deskhost/zeroclient/brokerxml"
	"deskhost/zeroclient/client"
	"deskhost/zeroclient/server"
	"deskhost/zeroclient/workspaces"
)

// The test binary doubles as a zeroclient (for measuring one in a process of its own) and
// as an admin-socket caller running under another uid; these say which.
const (
	childEnv = "ZEROCLIENT_TEST_CHILD"
	dialEnv  = "ZEROCLIENT_TEST_ADMIN_DIAL"
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(childEnv); dir != "" {
		os.Exit(runChild(dir))
	}
	if sock := os.Getenv(dialEnv); sock != "" {
		os.Exit(dialAdmin(sock))
	}
	os.Exit(m.Run())
}

type noWorkspaces struct{}

func (noWorkspaces) ForUser(context.Context, string, string) (workspaces.Workspace, bool, error) {
	return workspaces.Workspace{}, false, nil
}
func (noWorkspaces) Describe(context.Context, string) (workspaces.Workspace, error) {
	return workspaces.Workspace{}, io.EOF
}
func (noWorkspaces) Start(context.Context, string) error { return nil }

// testCatalog is the catalog the test zeroclients serve: one local directory (users alice,
// bob).
var testCatalog = server.StaticCatalog([]catalog.Directory{{ID: "d-0000000001", Name: "corp.example.com",
	Users: []catalog.User{{UserName: "alice"}, {UserName: "bob"}}}})

// config is a zeroclient on loopback, its state in dir.
func config(dir string, edit func(*hostconfig.Zeroclient)) *hostconfig.Config {
	c := &hostconfig.Config{
		Hostd: hostconfig.Hostd{DataDir: dir},
		Zeroclient: hostconfig.Zeroclient{
			Broker: hostconfig.ZeroclientBroker{Listen: "127.0.0.1:0", Hostname: "localhost"}, Gateway: hostconfig.ZeroclientGateway{Listen: "127.0.0.1:0"},
			Echo: hostconfig.ZeroclientEcho{Listen: []string{}}, TLS: hostconfig.ZeroclientTLS{SelfSignedDir: filepath.Join(dir, "tls")},
			CredentialStore: filepath.Join(dir, "creds.db"), AuthFailureFloor: hostconfig.Duration{Duration: 100 * time.Millisecond},
			Events: hostconfig.ZeroclientEvents{AuditLog: filepath.Join(dir, "audit.jsonl")},
		},
	}
	if edit != nil {
		edit(&c.Zeroclient)
	}
	return c
}

// runChild is a zeroclient serving config(dir) until its stdin closes; it prints
// "READY <broker address>" once it serves.
func runChild(dir string) int {
	c := config(dir, func(z *hostconfig.Zeroclient) {
		z.Broker.MaxConnectionsPerAddress = 512 // the load comes from few addresses; memory is what is measured
	})
	s, err := server.New(c, slog.New(slog.NewTextHandler(io.Discard, nil)), server.Options{Workspaces: noWorkspaces{}, Catalog: testCatalog})
	if err != nil {
		fmt.Println("ERROR", err)
		return 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { io.Copy(io.Discard, os.Stdin); cancel() }()
	fmt.Println("READY", s.BrokerAddr)
	s.Run(ctx)
	return 0
}

// procKiB is a field of /proc/<pid>/status in KiB (VmRSS: now; VmHWM: the peak).
func procKiB(t *testing.T, pid int, field string) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return n
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// TestConcurrentBadLoginsMemory: 300 bad logins at once (unknown user names: each costs an
// argon2id computation of 19 MiB) keep the zeroclient process's peak RSS (VmHWM, measured
// in a process of its own) within its idle RSS plus what the bounded computations take:
// the default of 4 at once, 19 MiB each, three times over (the live ones, and the Go
// heap's room to grow to twice its live size before it collects: GOGC=100), plus 64 KiB
// per connection. Unbounded, 300 computations would hold 5.6 GiB. Every
// answer is the usual failure or "busy" (the excess waits no more than 3 s for a turn).
func TestConcurrentBadLoginsMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("a load test")
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+dir)
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { stdin.Close(); cmd.Wait() }()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "READY ")
	if err != nil || !ok {
		t.Fatalf("zeroclient child: %q %v", line, err)
	}
	tlsCfg, err := client.TLSConfig(filepath.Join(dir, "tls", "ca.pem"), "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	// Warm up (one login of each kind), then the idle figure.
	b, _ := client.NewBroker("https://"+addr, tlsCfg)
	b.Hello(client.Identity)
	b.Login("nobody", "Wrong-Passw0rd", "corp.example.com", nil, nil)
	b.CloseIdle()
	time.Sleep(500 * time.Millisecond)
	idle := procKiB(t, cmd.Process.Pid, "VmRSS")

	const n = 300
	var mu sync.Mutex
	results := map[string]int{}
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b, _ := client.NewBroker("https://"+addr, tlsCfg)
			b.BindLocal(net.IPv4(127, 0, 3, byte(1+i%10)))
			<-start
			id := "error"
			if _, err := b.Hello(client.Identity); err == nil {
				err := b.Login(fmt.Sprintf("nobody%03d", i), "Wrong-Passw0rd", "corp.example.com", nil, nil)
				if le, ok := err.(*client.LoginError); ok {
					id = le.Result.ID
				} else if err != nil {
					id = "error: " + err.Error()
				}
			}
			mu.Lock()
			results[id]++
			mu.Unlock()
			b.CloseIdle()
		}()
	}
	began := time.Now()
	close(start)
	wg.Wait()
	took := time.Since(began)
	peak := procKiB(t, cmd.Process.Pid, "VmHWM")
	const perHash, concurrency, perConn = 19 * 1024, hostconfig.DefaultHashConcurrency, 64
	bound := idle + 3*concurrency*perHash + n*perConn
	t.Logf("%d bad logins at once in %s: %v; idle RSS %d KiB, peak RSS %d KiB (%.2f× idle), bound %d KiB (unbounded argon2id: %d KiB)",
		n, took.Round(time.Millisecond), results, idle, peak, float64(peak)/float64(idle), bound, idle+n*perHash)
	if peak > bound {
		t.Errorf("peak RSS %d KiB is over the bound of %d KiB", peak, bound)
	}
	if results[brokerxml.AuthFailed]+results[brokerxml.AuthFailedBusy] != n {
		t.Errorf("answers: %v; want each to be %s or %s", results, brokerxml.AuthFailed, brokerxml.AuthFailedBusy)
	}
	if results[brokerxml.AuthFailed] == 0 {
		t.Error("no login was checked at all")
	}
}

// rawConn opens a TCP connection from 127.0.0.<n> and reports whether the server keeps it
// (true) or closes it at once (false).
func rawConn(t *testing.T, addr string, n int) (net.Conn, bool) {
	t.Helper()
	c, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(n))}}).Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(700 * time.Millisecond))
	var b [1]byte
	_, err = c.Read(b[:])
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		c.SetReadDeadline(time.Time{})
		return c, true
	}
	c.Close()
	return nil, false
}

func start(t *testing.T, edit func(*hostconfig.Zeroclient)) (*server.Server, string) {
	t.Helper()
	dir := t.TempDir()
	s, err := server.New(config(dir, edit), slog.New(slog.NewTextHandler(io.Discard, nil)), server.Options{Workspaces: noWorkspaces{}, Catalog: testCatalog})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return s, dir
}

// TestBrokerConnectionCap: the broker holds at most maxConnections, and at most
// maxConnectionsPerAddress from one address; past them a new connection is closed at once
// unless an idle kept-alive one can make room.
func TestBrokerConnectionCap(t *testing.T) {
	s, dir := start(t, func(z *hostconfig.Zeroclient) {
		z.Broker.MaxConnections, z.Broker.MaxConnectionsPerAddress = 4, 3
	})
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	// Connections that never finish a handshake are not idle: they cannot be closed early.
	for i := 0; i < 3; i++ {
		c, ok := rawConn(t, s.BrokerAddr, 1)
		if !ok {
			t.Fatalf("connection %d from 127.0.0.1 refused under the cap", i+1)
		}
		held = append(held, c)
	}
	if _, ok := rawConn(t, s.BrokerAddr, 1); ok {
		t.Error("a 4th connection from one address was kept (per-address cap 3)")
	}
	c, ok := rawConn(t, s.BrokerAddr, 2)
	if !ok {
		t.Fatal("a connection from another address was refused under the total cap")
	}
	held = append(held, c)
	if _, ok := rawConn(t, s.BrokerAddr, 3); ok {
		t.Error("a 5th connection was kept (total cap 4)")
	}
	for _, c := range held {
		c.Close()
	}
	held = nil
	// Kept-alive idle connections make room for new clients.
	tlsCfg, _ := client.TLSConfig(filepath.Join(dir, "tls", "ca.pem"), "127.0.0.1")
	deadline := time.Now().Add(5 * time.Second)
	for i := 1; i <= 6; i++ {
		b, _ := client.NewBroker("https://"+s.BrokerAddr, tlsCfg)
		b.BindLocal(net.IPv4(127, 0, 0, byte(10+i)))
		for {
			_, err := b.Hello(client.Identity)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("client %d: %v (idle connections did not make room)", i, err)
			}
			time.Sleep(50 * time.Millisecond) // the closed raw connections are still being let go
		}
	}
}

// dialAdmin (the test binary run under another uid) posts to the admin socket and prints
// the HTTP status.
func dialAdmin(sock string) int {
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	r, err := hc.Post("http://zeroclient/unlock", "application/json", strings.NewReader(`{"directoryId":"d-0000000001","userName":"alice"}`))
	if err != nil {
		fmt.Println("ERROR", err)
		return 1
	}
	r.Body.Close()
	fmt.Println("STATUS", r.StatusCode)
	return 0
}

// TestAdminSocket: the admin socket is 0600 in a 0700 directory of its own (a wider
// existing one is narrowed; a shared one is refused), and even a caller who can reach it
// is answered only if it is root or zeroclient's own user (SO_PEERCRED).
func TestAdminSocket(t *testing.T) {
	// Not t.TempDir: its parent is 0700, and another uid must be able to reach this one.
	base, err := os.MkdirTemp("", "zc-admin-test")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(base)
	sockDir := filepath.Join(base, "zc")
	os.MkdirAll(sockDir, 0o755)
	sock := filepath.Join(sockDir, "admin.sock")
	start(t, func(z *hostconfig.Zeroclient) { z.AdminSocket = sock })
	if fi, err := os.Stat(sockDir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("socket directory: %v %v, want 0700", fi.Mode().Perm(), err)
	}
	if fi, err := os.Lstat(sock); err != nil || fi.Mode().Perm() != 0o600 || fi.Mode()&os.ModeSocket == 0 {
		t.Errorf("socket: %v %v, want a 0600 socket", fi.Mode(), err)
	}
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	r, err := hc.Post("http://zeroclient/unlock", "application/json", strings.NewReader(`{"directoryId":"d-0000000001","userName":"alice"}`))
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	json.NewDecoder(r.Body).Decode(&out)
	r.Body.Close()
	if r.StatusCode != http.StatusOK {
		t.Errorf("our own user: HTTP %d %v", r.StatusCode, out)
	}
	for _, shared := range []string{"/tmp/zc.sock", "/run/zc.sock"} {
		dir := t.TempDir()
		if _, err := server.New(config(dir, func(z *hostconfig.Zeroclient) { z.AdminSocket = shared }),
			slog.New(slog.NewTextHandler(io.Discard, nil)), server.Options{Workspaces: noWorkspaces{}, Catalog: testCatalog}); err == nil || !strings.Contains(err.Error(), "directory of its own") {
			t.Errorf("admin socket %s: %v", shared, err)
		}
	}

	// Another user who can reach the socket (its modes widened by a mistake) is refused.
	if os.Geteuid() != 0 {
		testenv.Missing(t, "running a caller under another uid needs root")
		return
	}
	os.Chmod(base, 0o755)
	os.Chmod(sockDir, 0o755)
	os.Chmod(sock, 0o666)
	// A copy of the test binary that uid 65534 may run (go test keeps it in a 0700 directory).
	bin := filepath.Join(base, "caller")
	self, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, self, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Dir = base
	cmd.Env = append(os.Environ(), dialEnv+"="+sock)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	got, err := cmd.CombinedOutput()
	if err != nil && !strings.Contains(string(got), "STATUS") {
		t.Fatalf("caller as uid 65534: %v\n%s", err, got)
	}
	if !strings.Contains(string(got), "STATUS 403") {
		t.Errorf("a caller with uid 65534: %s, want STATUS 403", got)
	}
}

// TestAdminTags: the admin socket's /tags issues a connect tag at this host's gateway for a
// user another host's broker logged in (hostd asks it for the peer): the tag is in this
// gateway's store, redeemable from the client's address only; a request missing a field,
// with an unknown key or an address that is none is refused and issues nothing.
func TestAdminTags(t *testing.T) {
	base, err := os.MkdirTemp("", "zc-tags-test")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(base)
	sock := filepath.Join(base, "zc", "admin.sock")
	s, _ := start(t, func(z *hostconfig.Zeroclient) { z.AdminSocket = sock })
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	post := func(body string) (int, map[string]any) {
		t.Helper()
		r, err := hc.Post("http://zeroclient/tags", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer r.Body.Close()
		var out map[string]any
		json.NewDecoder(r.Body).Decode(&out)
		return r.StatusCode, out
	}
	for _, bad := range []string{
		`{"directoryId":"d-0000000001","userName":"alice","workspaceId":"ws-abcdefgh12","client":"192.0.2.7"}`,
		`{"directoryId":"d-0000000001","userName":"alice","workspaceId":"ws-abcdefgh12","client":"nowhere","sessionId":"42"}`,
		`{"directoryId":"d-0000000001","userName":"alice","workspaceId":"ws-abcdefgh12","client":"192.0.2.7","sessionId":"42","admin":true}`,
	} {
		if code, out := post(bad); code != http.StatusBadRequest || out["error"] == "" {
			t.Errorf("%s: HTTP %d %v, want 400 with an error", bad, code, out)
		}
	}
	if n := s.Tags.Outstanding(); n != 0 {
		t.Fatalf("refused requests left %d tags", n)
	}
	code, out := post(`{"directoryId":"d-0000000001","userName":"alice","workspaceId":"ws-abcdefgh12","client":"192.0.2.7","sessionId":"42"}`)
	tag, _ := out["connectTag"].(string)
	if code != http.StatusOK || tag == "" || out["sessionId"] != "42" || out["hostname"] != "localhost" {
		t.Fatalf("HTTP %d %v", code, out)
	}
	if _, err := s.Tags.RedeemPlain(tag, netip.MustParseAddr("198.51.100.1")); err == nil {
		t.Error("the tag was redeemed from another address")
	}
	code, out = post(`{"directoryId":"d-0000000001","userName":"alice","workspaceId":"ws-abcdefgh12","client":"192.0.2.7","sessionId":"43"}`)
	tag, _ = out["connectTag"].(string)
	got, err := s.Tags.RedeemPlain(tag, netip.MustParseAddr("192.0.2.7"))
	if code != http.StatusOK || err != nil || got.UserName != "alice" || got.WorkspaceID != "ws-abcdefgh12" || got.SessionID != "43" {
		t.Errorf("redeem from the client's address: HTTP %d %v: %+v %v", code, out, got, err)
	}
}
