package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/workspaces"
	"github.com/aws/aws-sdk-go-v2/service/workspaces/types"

	"deskhost/hostd/hostdtest"
	"deskhost/hostd/memscrub"
	"deskhost/hostd/virt"
	"deskhost/internal/hostdclient"
	"deskhost/internal/testenv"
)

var hostdBin string

func TestMain(m *testing.M) {
	dir, err := hostdtest.Build("deskhost/hostd")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	hostdBin = filepath.Join(dir, "hostd")
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// host is a hostd process with its own state directory, pool and bridges.
type host struct {
	t          *testing.T
	dir        string
	config     string
	socket     string
	listen     string
	metrics    string // hostd.metrics.listen
	pool       string
	accessKey  string
	secretKey  string
	proc       *hostdtest.Proc
	conn       *virt.Conn
	libvirtSoc string
	netns      string
	image      string // the desktop image directory
	bundle     string // the bundle WorkSpaces are created from
	legacy     bool   // the config carries catalog sections (imported at the first start)
	hugePages  int64  // the kernel's huge page pool before the test
}

const (
	directoryID = "d-0123456789"
	imageID     = "wsi-desktop001"
	// legacyBundle is the bundle a config's catalog sections define (hostOptions.legacy).
	legacyBundle = "wsb-value00001"
)

// hostOptions vary a host from the default (plain bridges on the shared libvirtd).
type hostOptions struct {
	libvirtSocket string // default: the libvirtd `make test` runs
	netns         string // run hostd in this network namespace
	network       string // init.network (netcfg's config, YAML indented 4): netcfg manages the network
	// legacy writes the catalog into the host config's old sections, for hostd to import
	// at its first start, instead of creating it with hostd's CLI.
	legacy bool
	store  string // hostd.store's value (YAML indented 4 past the key); default: a bbolt file
	hostd  string // more hostd settings (YAML lines indented 2)
}

func newHost(t *testing.T) *host { return newHostWith(t, hostOptions{}) }

func newHostWith(t *testing.T, o hostOptions) *host {
	t.Helper()
	sock := o.libvirtSocket
	if sock == "" {
		sock = testenv.LibvirtSocket(t)
	}
	image := testenv.DesktopImage(t)
	dir, err := os.MkdirTemp("", "dhe")
	if err != nil {
		t.Fatal(err)
	}
	suffix := hostdtest.RandHex(3)
	h := &host{t: t, dir: dir, socket: filepath.Join(dir, "api", "hostd.sock"), pool: "dhe-" + suffix, libvirtSoc: sock,
		accessKey: "AKDHTEST" + strings.ToUpper(hostdtest.RandHex(6)), secretKey: hostdtest.RandHex(20)}
	if pool, err := memscrub.Check(); err == nil {
		h.hugePages = pool.HugePages.Total
	}
	h.netns, h.image, h.legacy = o.netns, image, o.legacy
	mgmt, pri := "dem"+suffix, "dep"+suffix
	network := fmt.Sprintf("network: {managementBridge: %s, primaryBridge: %s}", mgmt, pri)
	if o.network == "" {
		testenv.Bridge(t, mgmt)
		testenv.Bridge(t, pri)
	} else {
		network = "# the network is netcfg's: init.network"
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.listen = ln.Addr().String()
	ln.Close()
	if ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	h.metrics = ln.Addr().String()
	ln.Close()
	h.config = filepath.Join(dir, "deskhost.yaml")
	cfg := fmt.Sprintf(`hostd:
  store: %[1]s/store.db
  dataDir: %[1]s
  libvirt: {socket: %[2]s, pool: %[3]s, domainType: qemu}
  %[4]s
  api:
    socket: %[6]s
    listen: %[7]s
    region: local
    accessKeys: [{id: %[8]s, secret: %[9]s, name: e2e}]
    throttle: {rate: 50, burst: 100}
  provisionTimeout: 4m
  shutdownTimeout: 20s
  healthInterval: 2s
  memory: {requireInitOnFree: false} # this development machine runs without init_on_free=1
  guests: {cgroupLimits: false} # dev machines: cgroup v1 holds cpu and memory (TRAPS.md)
  computeTypes:
    VALUE: {vcpus: 1, memoryMiB: 256}
`, dir, sock, h.pool, network, pri, h.socket, h.listen, h.accessKey, h.secretKey)
	cfg = strings.Replace(cfg, "  provisionTimeout: 4m\n", "  metrics: {listen: \""+h.metrics+"\"}\n  provisionTimeout: 4m\n", 1)
	cfg = strings.Replace(cfg, "  provisionTimeout: 4m\n", o.hostd+"  provisionTimeout: 4m\n", 1)
	if o.legacy {
		cfg += fmt.Sprintf(legacySections, imageID, image, legacyBundle, directoryID)
		h.bundle = legacyBundle
	}
	if o.network != "" {
		cfg += "init:\n  network:\n" + o.network
	}
	if o.store != "" {
		cfg = strings.Replace(cfg, "store: "+dir+"/store.db", "store:"+o.store, 1)
	}
	if err := os.WriteFile(h.config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if h.conn, err = virt.Dial(ctx, sock); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.cleanup)
	return h
}

// legacySections is the catalog as host configs used to carry it (hostd imports it once).
const legacySections = `  images:
    - {id: %[1]s, name: desktop, os: linux, dir: %[2]s}
  bundles:
    - {id: %[3]s, name: Value, image: %[1]s, computeType: VALUE, protocol: PCOIP, rootGiB: 80, userGiB: 10}
  directories:
    - id: %[4]s
      name: corp.example.com
      users:
        - {userName: alice, firstName: Alice, lastName: Test, email: alice@example.com}
        - {userName: bob, firstName: Bob, lastName: Test, email: bob@example.com}
        - {userName: carol, firstName: Carol, lastName: Test, email: carol@example.com}
        - {userName: dave, firstName: Dave, lastName: Test, email: dave@example.com}
`

// directoryYAML is the test directory's definition, for hostd directory put.
const directoryYAML = `id: ` + directoryID + `
name: corp.example.com
users:
  - {userName: alice, firstName: Alice, lastName: Test, email: alice@example.com}
  - {userName: bob, firstName: Bob, lastName: Test, email: bob@example.com}
  - {userName: carol, firstName: Carol, lastName: Test, email: carol@example.com}
  - {userName: dave, firstName: Dave, lastName: Test, email: dave@example.com}
`

// makeCatalog builds the catalog as an operator does, with hostd's CLI on its socket.
func (h *host) makeCatalog() {
	t := h.t
	t.Helper()
	if _, err := h.cli("images", "register", "--dir", h.image, "--id", imageID); err != nil {
		t.Fatal(err)
	}
	out, err := h.cli("bundles", "create", "--name", "Value", "--description", "1 vCPU", "--image", imageID, "--compute", "VALUE", "--user-gib", "10")
	if err != nil {
		t.Fatal(err)
	}
	h.bundle = strings.TrimSpace(out)
	def := filepath.Join(h.dir, "corp.yaml")
	if err := os.WriteFile(def, []byte(directoryYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := h.cli("directory", "put", "--file", def); err != nil {
		t.Fatal(err)
	}
	if _, err := h.cli("directories", "register", directoryID); err != nil {
		t.Fatal(err)
	}
}

// cli runs hostd's CLI on the host's socket.
func (h *host) cli(args ...string) (string, error) {
	cmd := exec.Command(hostdBin, append(args, "--socket", h.socket)...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("hostd %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

// start runs hostd and waits until its socket answers; the first time, it makes the
// catalog (unless the config carries it).
func (h *host) start() {
	h.t.Helper()
	h.startOnly()
	if h.bundle == "" {
		h.makeCatalog()
	}
}

func (h *host) startOnly() {
	h.t.Helper()
	if h.netns != "" {
		h.proc = hostdtest.Start(h.t, "ip", "netns", "exec", h.netns, hostdBin, "serve", "--config", h.config)
	} else {
		h.proc = hostdtest.Start(h.t, hostdBin, "serve", "--config", h.config)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		if c, err := net.Dial("unix", h.socket); err == nil {
			c.Close()
			if _, err := h.client().DescribeWorkspaces(context.Background(), &workspaces.DescribeWorkspacesInput{}); err == nil {
				return
			}
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("hostd did not serve within 60 s:\n%s", h.proc.Output())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// kill ends hostd with SIGKILL: no cleanup of any kind runs.
func (h *host) kill() {
	h.t.Helper()
	h.proc.Kill()
	h.t.Logf("hostd killed (SIGKILL); its log:\n%s", h.proc.Tail(3000))
}

func (h *host) stop() { h.proc.Stop() }

// cleanup stops hostd and removes whatever domains and volumes it left.
func (h *host) cleanup() {
	h.stop()
	if h.t.Failed() && h.proc != nil {
		h.t.Logf("hostd log:\n%s", h.proc.Tail(8000))
	}
	hostdtest.RemoveLeftovers(h.conn, h.dir, h.pool)
	h.conn.Close()
	os.RemoveAll(h.dir)
	// hostd keeps the huge pages it added to the kernel's pool; a test gives them back.
	if now, err := memscrub.Check(); err == nil {
		_ = memscrub.ShrinkHugePages(now.HugePages.Total - h.hugePages)
	}
}

// client is an AWS SDK WorkSpaces client over hostd's unix socket.
func (h *host) client() *hostdclient.Client { return hostdtest.Client(h.socket) }

func (h *host) create(users ...string) []string {
	h.t.Helper()
	var reqs []types.WorkspaceRequest
	for _, u := range users {
		reqs = append(reqs, types.WorkspaceRequest{DirectoryId: aws.String(directoryID), UserName: aws.String(u), BundleId: aws.String(h.bundle)})
	}
	out, err := h.client().CreateWorkspaces(context.Background(), &workspaces.CreateWorkspacesInput{Workspaces: reqs})
	if err != nil || len(out.FailedRequests) > 0 || len(out.PendingRequests) != len(users) {
		h.t.Fatalf("create %v: %v %+v", users, err, out)
	}
	var ids []string
	for _, w := range out.PendingRequests {
		ids = append(ids, *w.WorkspaceId)
	}
	return ids
}

func (h *host) describe(id string) types.Workspace {
	h.t.Helper()
	out, err := h.client().DescribeWorkspaces(context.Background(), &workspaces.DescribeWorkspacesInput{WorkspaceIds: []string{id}})
	if err != nil || len(out.Workspaces) != 1 {
		h.t.Fatalf("describe %s: %v %+v", id, err, out)
	}
	return out.Workspaces[0]
}

func (h *host) waitState(id string, want types.WorkspaceState, within time.Duration) {
	h.t.Helper()
	deadline := time.Now().Add(within)
	var last types.WorkspaceState
	for {
		w := h.describe(id)
		last = w.State
		if last == want {
			return
		}
		if last == types.WorkspaceStateError {
			h.t.Fatalf("%s went to ERROR: %s", id, aws.ToString(w.ErrorMessage))
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("%s is %s after %s, want %s", id, last, within, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// libvirtView is what libvirt itself holds for a WorkSpace.
func (h *host) libvirtView(id string) (virt.DomainState, int) {
	h.t.Helper()
	st, err := h.conn.State(id)
	if err != nil {
		h.t.Fatal(err)
	}
	vols, err := h.conn.Volumes(h.pool, id)
	if err != nil {
		h.t.Fatal(err)
	}
	return st, len(vols)
}

// heldRAM counts the guest-RAM memfds the running hostd holds open.
func (h *host) heldRAM() int {
	h.t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", h.proc.Cmd.Process.Pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		h.t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if l, err := os.Readlink(filepath.Join(dir, e.Name())); err == nil && strings.HasPrefix(l, "/memfd:memory-backend") {
			n++
		}
	}
	return n
}
