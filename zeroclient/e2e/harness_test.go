package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"image"
	"image/color"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/workspaces"
	"github.com/aws/aws-sdk-go-v2/service/workspaces/types"

	"deskhost/hostd/hostdtest"
	"deskhost/hostd/virt"
	"deskhost/internal/hostdclient"
	"deskhost/internal/testenv"
	"deskhost/zeroclient/internal/testsvc"
)

var binDir string

// TestMain builds the real hostd and zeroclient binaries the tests run.
func TestMain(m *testing.M) {
	dir, err := hostdtest.Build("deskhost/hostd", "deskhost/zeroclient")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

const (
	directoryID = "d-0123456789"
	imageID     = "wsi-desktop001"
	alicePW     = "Corr3ct-Horse!"
	alicePIN    = "4321"
	aliceCode   = "246810"
)

// env is the whole host: slapd, FreeRADIUS, hostd with one WorkSpace, zeroclient.
type env struct {
	t          *testing.T
	dir        string
	config     string
	hostdSock  string
	pool       string
	conn       *virt.Conn
	ldap       *testsvc.LDAP
	rad        *testsvc.RADIUS
	brokerPort int
	gwPort     int
	echoPort   int
	metrics    int
	webhook    *webhook
	hostd      *hostdtest.Proc
	zc         *hostdtest.Proc
	wsID       string
	dirID      string // the directory of the WorkSpace's user
	bundle     string // made with hostd's CLI
	regCode    string // the directory's registration code, made at registration
}

// webhook records the events POSTed to it.
type webhook struct {
	mu     sync.Mutex
	bodies [][]byte
	srv    *http.Server
	port   int
}

func newWebhook(t *testing.T) *webhook {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	w := &webhook{port: l.Addr().(*net.TCPAddr).Port}
	w.srv = &http.Server{Handler: http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.mu.Lock()
		w.bodies = append(w.bodies, b)
		w.mu.Unlock()
	})}
	go w.srv.Serve(l)
	t.Cleanup(func() { w.srv.Close() })
	return w
}

func (w *webhook) got() [][]byte {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([][]byte(nil), w.bodies...)
}

// spec is what an env's directory is: its definition (for hostd directory put) and the
// user whose WorkSpace is made; ldap: slapd and FreeRADIUS are started for it.
type spec struct {
	directory func(e *env) string
	user      string
	ldap      bool
}

// ldapSpec is the LDAP directory with RADIUS MFA most tests use, and alice.
var ldapSpec = spec{directory: ldapDirectory, user: "alice", ldap: true}

// newEnv starts everything and waits until alice's WorkSpace is AVAILABLE.
func newEnv(t *testing.T) *env { return newEnvFor(t, ldapSpec) }

// newEnvFor starts everything for a directory and waits until its user's WorkSpace is
// AVAILABLE.
func newEnvFor(t *testing.T, sp spec) *env {
	t.Helper()
	testenv.Root(t)
	sock := testenv.LibvirtSocket(t)
	image := testenv.DesktopImage(t)
	dir, err := os.MkdirTemp("", "zce")
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, dir: dir, hostdSock: filepath.Join(dir, "api", "hostd.sock"), pool: "zce-" + hostdtest.RandHex(3)}
	t.Cleanup(e.cleanup)
	if sp.ldap {
		e.ldap = testsvc.Slapd(t, "corp.example.com", []testsvc.LDAPUser{{UID: "alice", Password: alicePW, GivenName: "Alice"}, {UID: "bob", Password: "B0b-Secret!"}})
		e.rad = testsvc.FreeRADIUS(t, testsvc.RADIUSConfig{Challenges: map[string]testsvc.Challenge{"alice": {PIN: alicePIN, Code: aliceCode}},
			Passcodes: map[string]string{"bob": "111111"}})
	}
	e.webhook = newWebhook(t)
	suffix := hostdtest.RandHex(3)
	mgmt, pri := "zem"+suffix, "zep"+suffix
	testenv.Bridge(t, mgmt)
	testenv.Bridge(t, pri)
	e.brokerPort, e.gwPort, e.echoPort, e.metrics = testsvc.FreePort(t, "tcp"), testsvc.FreePort(t, "tcp"), testsvc.FreePort(t, "tcp"), testsvc.FreePort(t, "tcp")
	e.config = filepath.Join(dir, "deskhost.yaml")
	cfg := fmt.Sprintf(`hostd:
  store: %[1]s/store.db
  dataDir: %[1]s
  libvirt: {socket: %[2]s, pool: %[3]s, domainType: qemu}
  network: {managementBridge: %[4]s, primaryBridge: %[5]s}
  api: {socket: %[6]s, throttle: {rate: 5000, burst: 5000}, brokerGroup: nogroup}
  provisionTimeout: 4m
  shutdownTimeout: 20s
  healthInterval: 2s
  memory: {requireInitOnFree: false, hugePages: false} # dev machine without init_on_free=1; the broker's tests leave the huge page pool alone
  # zeroclient runs as nobody (primary group nogroup), standing in for the appliance's
  # zeroclient user: nogroup may use hostd's socket as the broker and reach the displays.
  guests: {displayGroup: nogroup, cgroupLimits: false} # dev machines: cgroup v1 holds cpu and memory (TRAPS.md)
  computeTypes:
    VALUE: {vcpus: 1, memoryMiB: 256}
zeroclient:
  broker: {listen: "127.0.0.1:%[7]d", hostname: localhost}
  gateway: {listen: "127.0.0.1:%[8]d"}
  echo: {listen: ["127.0.0.1:%[8]d", "127.0.0.1:%[9]d"]}
  tls: {selfSignedDir: %[1]s/zc/tls}
  events: {log: %[1]s/zc/events/access.jsonl, auditLog: %[1]s/zc/events/audit.jsonl, webhook: "http://127.0.0.1:%[10]d/events"}
  metrics: {listen: "127.0.0.1:%[11]d"}
  credentialStore: %[1]s/zc/credentials.db
  hostdSocket: %[6]s
  adminSocket: %[1]s/zc/admin.sock
  authFailureFloor: 200ms
  startWait: 150s
  user: nobody
`, dir, sock, e.pool, mgmt, pri, e.hostdSock,
		e.brokerPort, e.gwPort, e.echoPort, e.webhook.port, e.metrics)
	if err := os.WriteFile(e.config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if e.conn, err = virt.Dial(ctx, sock); err != nil {
		t.Fatal(err)
	}
	e.hostd = hostdtest.Start(t, filepath.Join(binDir, "hostd"), "serve", "--config", e.config)
	e.waitFor("hostd", 60*time.Second, func() bool {
		_, err := e.api().DescribeWorkspaces(context.Background(), &workspaces.DescribeWorkspacesInput{})
		return err == nil
	})
	e.dirID = e.makeCatalog(image, sp.directory(e))
	out, err := e.api().CreateWorkspaces(context.Background(), &workspaces.CreateWorkspacesInput{Workspaces: []types.WorkspaceRequest{{
		DirectoryId: aws.String(e.dirID), UserName: aws.String(sp.user), BundleId: aws.String(e.bundle),
		WorkspaceProperties: &types.WorkspaceProperties{RunningMode: types.RunningModeAutoStop, RunningModeAutoStopTimeoutInMinutes: aws.Int32(60)}}}})
	if err != nil || len(out.PendingRequests) != 1 {
		t.Fatalf("create WorkSpace: %v %+v\n%s", err, out, e.hostd.Output())
	}
	e.wsID = aws.ToString(out.PendingRequests[0].WorkspaceId)
	e.zc = hostdtest.Start(t, filepath.Join(binDir, "zeroclient"), "serve", "--config", e.config)
	e.waitFor("zeroclient", 30*time.Second, func() bool {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", e.brokerPort))
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	// zeroclient faces clients: it serves them as nobody, with no capabilities. (Its ports
	// answer a moment before it drops root.)
	var status []byte
	e.waitFor("zeroclient to drop root", 10*time.Second, func() bool {
		status, _ = os.ReadFile(fmt.Sprintf("/proc/%d/status", e.zc.Cmd.Process.Pid))
		return strings.Contains(string(status), "Uid:\t65534\t")
	})
	for _, want := range []string{"Uid:\t65534\t65534\t65534\t65534", "Gid:\t65534\t65534\t65534\t65534", "CapEff:\t0000000000000000", "NoNewPrivs:\t1"} {
		if !strings.Contains(string(status), want) {
			t.Fatalf("zeroclient did not drop root: no %q in its /proc status:\n%s\n%s", want, status, e.zc.Output())
		}
	}
	e.waitState(types.WorkspaceStateAvailable, 4*time.Minute)
	return e
}

// makeCatalog builds the catalog as an operator does, with hostd's CLI on its socket: the
// desktop image, a bundle, the directory (def, a definition for hostd directory put) and
// its registration. It returns the directory's id.
func (e *env) makeCatalog(image, def string) string {
	t := e.t
	t.Helper()
	if _, err := e.hostdCLI("images", "register", "--dir", image, "--id", imageID); err != nil {
		t.Fatal(err)
	}
	out, err := e.hostdCLI("bundles", "create", "--name", "Value", "--description", "1 vCPU (TCG)", "--image", imageID, "--compute", "VALUE", "--user-gib", "10")
	if err != nil {
		t.Fatal(err)
	}
	e.bundle = strings.TrimSpace(out)
	var d struct{ ID string }
	for _, line := range strings.Split(def, "\n") {
		if v, ok := strings.CutPrefix(line, "id: "); ok {
			d.ID = strings.TrimSpace(v)
		}
	}
	if d.ID == "" {
		t.Fatalf("directory definition without an id line:\n%s", def)
	}
	file := filepath.Join(e.dir, "directory.yaml")
	if err := os.WriteFile(file, []byte(def), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := e.hostdCLI("directory", "put", "--file", file); err != nil {
		t.Fatal(err)
	}
	if _, err := e.hostdCLI("directories", "register", d.ID); err != nil {
		t.Fatal(err)
	}
	dirs, err := e.api().DescribeWorkspaceDirectories(context.Background(), &workspaces.DescribeWorkspaceDirectoriesInput{DirectoryIds: []string{d.ID}})
	if err != nil || len(dirs.Directories) != 1 {
		t.Fatalf("DescribeWorkspaceDirectories: %v %+v", err, dirs)
	}
	e.regCode = aws.ToString(dirs.Directories[0].RegistrationCode)
	return d.ID
}

// ldapDirectory is the directory of most tests: LDAP (the test's slapd) with RADIUS MFA
// (its FreeRADIUS), users alice and bob.
func ldapDirectory(e *env) string {
	return fmt.Sprintf(`id: %s
name: corp.example.com
alias: corp
users:
  - {userName: alice, firstName: Alice, lastName: Test, email: alice@example.com}
  - {userName: bob, firstName: Bob, lastName: Test, email: bob@example.com}
login:
  type: ldap
  netbiosName: CORP
  ldap:
    url: %s
    startTLS: true
    caFile: %s
    bindDN: "%s"
    bindPassword: "%s"
    userBase: "%s"
    userAttribute: uid
    userFilter: "(objectClass=inetOrgPerson)"
  mfa:
    type: radius
    radius: {servers: "127.0.0.1", port: %d, sharedSecret: "%s", timeoutSeconds: 3, retries: 1}
`, directoryID, e.ldap.URL, e.ldap.CAFile, e.ldap.ServiceDN, e.ldap.ServicePassword, e.ldap.UserBase, e.rad.Port, e.rad.Secret)
}

// hostdCLI runs hostd's CLI on the test hostd's socket.
func (e *env) hostdCLI(args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(binDir, "hostd"), append(args, "--socket", e.hostdSock)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("hostd %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

func (e *env) waitFor(what string, within time.Duration, ok func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(within)
	for !ok() {
		if time.Now().After(deadline) {
			e.t.Fatalf("%s not ready within %s\nhostd:\n%s\nzeroclient:\n%s", what, within, e.hostd.Tail(6000), e.zc.Tail(6000))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (e *env) api() *hostdclient.Client { return hostdtest.Client(e.hostdSock) }

func (e *env) state() types.WorkspaceState {
	out, err := e.api().DescribeWorkspaces(context.Background(), &workspaces.DescribeWorkspacesInput{WorkspaceIds: []string{e.wsID}})
	if err != nil || len(out.Workspaces) != 1 {
		e.t.Fatalf("describe: %v", err)
	}
	return out.Workspaces[0].State
}

func (e *env) waitState(want types.WorkspaceState, within time.Duration) {
	e.t.Helper()
	deadline := time.Now().Add(within)
	for {
		s := e.state()
		if s == want {
			return
		}
		if s == types.WorkspaceStateError || time.Now().After(deadline) {
			e.t.Fatalf("%s is %s, want %s\nhostd:\n%s", e.wsID, s, want, e.hostd.Tail(6000))
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// waitConnection waits until hostd reports the WorkSpace's connection state as want.
func (e *env) waitConnection(want types.ConnectionState, within time.Duration) types.WorkspaceConnectionStatus {
	e.t.Helper()
	deadline := time.Now().Add(within)
	for {
		out, err := e.api().DescribeWorkspacesConnectionStatus(context.Background(), &workspaces.DescribeWorkspacesConnectionStatusInput{WorkspaceIds: []string{e.wsID}})
		if err != nil || len(out.WorkspacesConnectionStatus) != 1 {
			e.t.Fatalf("DescribeWorkspacesConnectionStatus: %v %+v", err, out)
		}
		st := out.WorkspacesConnectionStatus[0]
		if st.ConnectionState == want {
			return st
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("hostd says %s is %s after %s, want %s\nzeroclient:\n%s", e.wsID, st.ConnectionState, within, want, e.zc.Tail(3000))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (e *env) caFile() string { return filepath.Join(e.dir, "zc", "tls", "ca.pem") }

func (e *env) brokerURL() string { return fmt.Sprintf("https://127.0.0.1:%d", e.brokerPort) }

// zeroclient runs the zeroclient binary (the reference client and operator commands).
func (e *env) zeroclient(args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(binDir, "zeroclient"), args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return stdout.String(), fmt.Errorf("%v: %s", err, stderr.String())
	}
	return stdout.String(), nil
}

// cleanup terminates the WorkSpace, stops zeroclient and hostd, and removes whatever
// domains and volumes are left.
func (e *env) cleanup() {
	e.zc.Stop()
	if e.hostd != nil && e.wsID != "" {
		e.api().TerminateWorkspaces(context.Background(), &workspaces.TerminateWorkspacesInput{TerminateWorkspaceRequests: []types.TerminateRequest{{WorkspaceId: aws.String(e.wsID)}}})
		deadline := time.Now().Add(60 * time.Second)
		for time.Now().Before(deadline) {
			out, err := e.api().DescribeWorkspaces(context.Background(), &workspaces.DescribeWorkspacesInput{WorkspaceIds: []string{e.wsID}})
			if err != nil || len(out.Workspaces) == 0 || out.Workspaces[0].State == types.WorkspaceStateTerminated {
				break
			}
			time.Sleep(250 * time.Millisecond)
		}
	}
	e.hostd.Stop()
	if e.t.Failed() {
		e.t.Logf("hostd log:\n%s\nzeroclient log:\n%s", e.hostd.Tail(6000), e.zc.Tail(6000))
	}
	if e.conn != nil {
		hostdtest.RemoveLeftovers(e.conn, e.dir, e.pool)
		e.conn.Close()
	}
	os.RemoveAll(e.dir)
}

// metric returns the sum of a metric's samples whose labels contain all of match.
func (e *env) metric(name string, match ...string) float64 {
	r, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", e.metrics))
	if err != nil {
		e.t.Fatal(err)
	}
	defer r.Body.Close()
	sum := 0.0
	sc := bufio.NewScanner(r.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		ok := true
		for _, m := range match {
			ok = ok && strings.Contains(line, m)
		}
		if ok {
			var v float64
			fmt.Sscanf(line[strings.LastIndexByte(line, ' ')+1:], "%g", &v)
			sum += v
		}
	}
	return sum
}

// readXWD decodes an xwd dump (ZPixmap, 32 bits per pixel, as Xvfb's 24-bit screens are).
func readXWD(b []byte) (image.Image, error) {
	if len(b) < 100 {
		return nil, errors.New("xwd: short")
	}
	u := func(i int) uint32 { return binary.BigEndian.Uint32(b[i*4:]) }
	hdr, w, h, byteOrder, bpp, bpl, ncolors := u(0), u(4), u(5), u(7), u(11), u(12), u(19)
	if u(1) != 7 || bpp != 32 {
		return nil, fmt.Errorf("xwd: version %d, %d bits per pixel; want 7 and 32", u(1), bpp)
	}
	off := int(hdr) + int(ncolors)*12
	if len(b) < off+int(bpl*h) {
		return nil, errors.New("xwd: truncated")
	}
	img := image.NewRGBA(image.Rect(0, 0, int(w), int(h)))
	for y := 0; y < int(h); y++ {
		for x := 0; x < int(w); x++ {
			p := b[off+y*int(bpl)+x*4:]
			var v uint32
			if byteOrder == 0 {
				v = binary.LittleEndian.Uint32(p)
			} else {
				v = binary.BigEndian.Uint32(p)
			}
			img.SetRGBA(x, y, color.RGBA{uint8(v >> 16), uint8(v >> 8), uint8(v), 255})
		}
	}
	return img, nil
}
