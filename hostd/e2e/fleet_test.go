package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/workspaces"
	"github.com/aws/aws-sdk-go-v2/service/workspaces/types"
	"github.com/aws/smithy-go"

	"deskhost/hostd/fleet"
	"deskhost/hostd/hostdtest"
	"deskhost/hostd/virt"
	"deskhost/internal/certs"
	"deskhost/internal/hostdclient"
	"deskhost/internal/testenv"
)

// fleetHost is one host of TestFleet: a network namespace of its own with its own
// libvirtd (a libvirtrun root), and a hostd whose store is the fleet's etcd (its member,
// if it runs one, is a process of its own that hostd starts and that outlives it).
type fleetHost struct {
	t       *testing.T
	n       int
	ns      string
	addr    string // on the fleet's network
	dir     string
	config  string
	socket  string
	pool    string
	lvroot  string
	conn    *virt.Conn
	proc    *hostdtest.Proc
	zc      *hostdtest.Proc // its zeroclient (broker and gateway)
	id      string          // its host id, once it is in the fleet
	starts  int
	outputs []string // logs of earlier runs
}

var joinCodeRe = regexp.MustCompile(`deskhost: join code (\S+):`)

func (h *fleetHost) fleetDir() string { return filepath.Join(h.dir, "fleet") }

// memberPID is the pid of the host's etcd member (0 if it runs none or it is gone).
func (h *fleetHost) memberPID() int {
	pid := fleet.MemberPID(h.fleetDir())
	if pid <= 0 || syscall.Kill(pid, 0) != nil {
		return 0
	}
	return pid
}

func (h *fleetHost) start() {
	h.t.Helper()
	if h.proc != nil {
		h.outputs = append(h.outputs, h.proc.Output())
	}
	h.starts++
	h.proc = hostdtest.Start(h.t, "ip", "netns", "exec", h.ns, hostdBin, "serve", "--config", h.config)
}

// startZeroclient runs the host's zeroclient (its broker and gateway) and waits until its
// broker accepts connections.
func (h *fleetHost) startZeroclient(bin string) {
	h.t.Helper()
	h.zc = hostdtest.Start(h.t, "ip", "netns", "exec", h.ns, bin, "serve", "--config", h.config)
	deadline := time.Now().Add(time.Minute)
	for {
		if err := exec.Command("ip", "netns", "exec", h.ns, "bash", "-c", "exec 3<>/dev/tcp/"+h.addr+"/9443").Run(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("host %d: zeroclient's broker is not up within a minute:\n%s", h.n, h.zc.Tail(6000))
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// waitServing waits until hostd's socket answers DescribeWorkspaces.
func (h *fleetHost) waitServing(within time.Duration) {
	h.t.Helper()
	deadline := time.Now().Add(within)
	for {
		if h.exited() {
			h.t.Fatalf("host %d: hostd exited:\n%s", h.n, h.proc.Tail(6000))
		}
		{
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err := h.client().DescribeWorkspaces(ctx, &workspaces.DescribeWorkspacesInput{})
			cancel()
			if err == nil {
				return
			}
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("host %d: hostd did not serve within %s:\n%s", h.n, within, h.proc.Tail(6000))
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// exited reports whether hostd has exited (a zombie until the test waits for it).
func (h *fleetHost) exited() bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", h.proc.Cmd.Process.Pid))
	if err != nil {
		return true
	}
	_, rest, _ := strings.Cut(string(b), ") ")
	return strings.HasPrefix(rest, "Z")
}

// joinCode waits for the code the joining host shows (on its console: its stdout).
func (h *fleetHost) joinCode(within time.Duration) string {
	h.t.Helper()
	deadline := time.Now().Add(within)
	for {
		if m := joinCodeRe.FindStringSubmatch(h.proc.Output()); m != nil {
			return m[1]
		}
		if h.exited() {
			h.t.Fatalf("host %d: hostd exited:\n%s", h.n, h.proc.Tail(6000))
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("host %d showed no join code within %s:\n%s", h.n, within, h.proc.Tail(6000))
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func (h *fleetHost) cli(args ...string) (string, error) {
	cmd := exec.Command(hostdBin, append(args, "--socket", h.socket)...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String() + stderr.String(), fmt.Errorf("host %d: hostd %s: %v: %s", h.n, strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

func (h *fleetHost) must(args ...string) string {
	h.t.Helper()
	out, err := h.cli(args...)
	if err != nil {
		h.t.Fatal(err)
	}
	return out
}

func (h *fleetHost) client() *hostdclient.Client { return hostdtest.Client(h.socket) }

// hosts is `hostd hosts --json` on this host.
func (h *fleetHost) hosts() map[string]hostdclient.Host {
	h.t.Helper()
	var hs []hostdclient.Host
	if err := json.Unmarshal([]byte(h.must("hosts", "--json")), &hs); err != nil {
		h.t.Fatal(err)
	}
	out := map[string]hostdclient.Host{}
	for _, x := range hs {
		if x.HostId == "" {
			out["code:"+x.JoinCode] = x
		} else {
			out[x.HostId] = x
		}
	}
	return out
}

// kill ends the host as a power cut would: hostd and its etcd member with SIGKILL. Its
// libvirtd and guests are left running (a hostd crash; the domains are what it finds when
// it is back).
func (h *fleetHost) kill() {
	h.t.Helper()
	pid := h.memberPID()
	h.proc.Kill()
	h.zc.Kill()
	if pid > 0 {
		syscall.Kill(pid, syscall.SIGKILL)
		for i := 0; i < 100 && syscall.Kill(pid, 0) == nil; i++ {
			time.Sleep(50 * time.Millisecond)
		}
	}
}

func (h *fleetHost) cleanup() {
	h.zc.Stop()
	h.proc.Stop()
	if pid := h.memberPID(); pid > 0 {
		syscall.Kill(pid, syscall.SIGTERM)
		for i := 0; i < 100 && syscall.Kill(pid, 0) == nil; i++ {
			time.Sleep(100 * time.Millisecond)
		}
		syscall.Kill(pid, syscall.SIGKILL)
	}
	if h.t.Failed() {
		for i, o := range h.outputs {
			h.t.Logf("host %d, run %d, hostd log:\n%s", h.n, i+1, hostdtest.Tail(o, 4000))
		}
		h.t.Logf("host %d, last run, hostd log:\n%s", h.n, h.proc.Tail(12000))
		h.t.Logf("host %d, last run, zeroclient log:\n%s", h.n, h.zc.Tail(4000))
	}
	if h.conn != nil {
		hostdtest.RemoveLeftovers(h.conn, h.dir, h.pool)
		h.conn.Close()
	}
	os.RemoveAll(h.dir)
}

// TestFleet runs three hosts on this machine, each in a network namespace of its own with
// its own hostd and libvirtd, wired by one switch, forming one fleet whose store is the
// 3-member etcd cluster the hosts make themselves:
//   - host 1 makes the fleet; hosts 2 and 3 join by the code their consoles show, once an
//     administrator approves it (on host 1, then on host 2: any host approves), and become
//     etcd members (3 voters); before the approval a joining host has no credentials;
//   - hosts 2 and 3 hold host 1's key store master key (fetched from it as they joined);
//   - 6 WorkSpaces created through host 1's API spread across the 3 hosts, 2 on each, 3
//     of them encrypted with a key made through host 1's API (those on hosts 2 and 3 open
//     their data keys with the fleet's master key);
//     host 3's API describes them all; each runs (AVAILABLE, its domain running) on its
//     owner only, the image fetched by content hash from host 1;
//   - a zero client logs in at host 2's broker and streams from host 3's gateway, which
//     runs its WorkSpace: the tag is host 3's gateway's, refused at host 1's;
//   - host 2's hostd frozen past its lease (SIGSTOP): down, its WorkSpace UNHEALTHY; thawed,
//     it takes a new lease before it changes anything, is ready, its WorkSpaces AVAILABLE;
//   - host 3 killed (hostd, zeroclient and its etcd member, SIGKILL): its WorkSpaces are
//     UNHEALTHY within 30 s on the survivors' APIs and host 3 is down, the others stay
//     AVAILABLE and a user of host 1's still streams through host 2's broker;
//   - host 3 back: its WorkSpaces are AVAILABLE again, reconciled, and no WorkSpace has a
//     domain on more than one host;
//   - 2 of the 3 etcd members killed: a create is refused saying there is no quorum, and
//     nothing of it is written once the quorum is back.
func TestFleet(t *testing.T) {
	testenv.Root(t)
	image := testenv.DesktopImage(t)
	libvirtrun := filepath.Join(testenv.RepoRoot(), "bin", "libvirtrun")
	if env := os.Getenv("DESKHOST_BIN"); env != "" {
		libvirtrun = filepath.Join(env, "libvirtrun")
	}
	if _, err := os.Stat(libvirtrun); err != nil {
		testenv.Missing(t, libvirtrun+" is not built (make build)")
	}
	zbin, err := hostdtest.Build("deskhost/zeroclient")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(zbin) })
	zeroclient := filepath.Join(zbin, "zeroclient")
	// One certificate for every host's broker and gateway (the fleet's), so that a client
	// that trusts its CA streams from any host's gateway.
	tlsDir, err := os.MkdirTemp("", "dfltls")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(tlsDir) })
	if _, err := certs.SelfSigned(tlsDir, []string{"10.77.0.1", "10.77.0.2", "10.77.0.3", "fleet1.test", "fleet2.test", "fleet3.test"}, time.Now()); err != nil {
		t.Fatal(err)
	}
	sfx := hostdtest.RandHex(3)
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	// The fleet's network: a switch (a bridge in a namespace of its own) and a veth from it
	// to each host. Nothing leaves these namespaces.
	sw := "dfl" + sfx + "s"
	run("ip", "netns", "add", sw)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", sw).Run() })
	run("ip", "-n", sw, "link", "add", "sw0", "type", "bridge")
	run("ip", "-n", sw, "link", "set", "sw0", "up")
	run("ip", "-n", sw, "link", "set", "lo", "up")
	run("ip", "-n", sw, "addr", "add", "10.77.0.100/24", "dev", "sw0") // the zero client's

	hosts := make([]*fleetHost, 3)
	for i := range hosts {
		n := i + 1
		dir, err := os.MkdirTemp("", "dfl")
		if err != nil {
			t.Fatal(err)
		}
		h := &fleetHost{t: t, n: n, ns: fmt.Sprintf("dfl%s%d", sfx, n), addr: fmt.Sprintf("10.77.0.%d", n), dir: dir,
			config: filepath.Join(dir, "deskhost.yaml"), socket: filepath.Join(dir, "api", "hostd.sock"), pool: fmt.Sprintf("dfl%s%d", sfx, n),
			lvroot: filepath.Join("/run/deskhost-fleet", sfx+fmt.Sprint(n))}
		hosts[i] = h
		run("ip", "netns", "add", h.ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", h.ns).Run() })
		run("ip", "link", "add", "fl0", "netns", h.ns, "type", "veth", "peer", "name", fmt.Sprintf("p%d", n), "netns", sw)
		run("ip", "-n", sw, "link", "set", fmt.Sprintf("p%d", n), "master", "sw0", "up")
		run("ip", "-n", h.ns, "addr", "add", h.addr+"/24", "dev", "fl0")
		run("ip", "-n", h.ns, "link", "set", "fl0", "up")
		run("ip", "-n", h.ns, "link", "set", "lo", "up")
		// The WorkSpaces' bridges, in the host's namespace (libvirtd there attaches the taps).
		for _, br := range []string{"brm", "brp"} {
			run("ip", "-n", h.ns, "link", "add", br, "type", "bridge")
			run("ip", "-n", h.ns, "link", "set", br, "up")
		}
		run(libvirtrun, "start", "--root", h.lvroot, "--netns", h.ns)
		t.Cleanup(func() {
			exec.Command(libvirtrun, "stop", "--root", h.lvroot).Run()
			os.RemoveAll(h.lvroot)
		})
		sock := filepath.Join(h.lvroot, "run", "libvirt-sock")
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		h.conn, err = virt.Dial(ctx, sock)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		how := "bootstrap: true"
		if n > 1 {
			how = "join: https://10.77.0.1:7443"
		}
		cfg := fmt.Sprintf(`hostd:
  dataDir: %[1]s
  libvirt: {socket: %[2]s, pool: %[3]s, domainType: qemu}
  network: {managementBridge: brm, primaryBridge: brp}
  api:
    socket: %[4]s
    listen: %[5]s:8443
    region: local
    accessKeys: [{id: AKDHFLEETHOST00%[6]d, secret: %[7]s, name: e2e}]
  provisionTimeout: 8m
  shutdownTimeout: 20s
  healthInterval: 2s
  memory: {requireInitOnFree: false} # this development machine runs without init_on_free=1
  guests: {cgroupLimits: false}      # dev machines: cgroup v1 holds cpu and memory
  computeTypes:
    VALUE: {vcpus: 1, memoryMiB: 256}
  fleet:
    advertise: %[5]s
    %[8]s
    name: fleet%[6]d
    hardwareId: mac:52:54:00:77:00:0%[6]d
    capacity: {vcpus: 3, memoryMiB: 1024} # room for 3 VALUE WorkSpaces: 6 spread 2 per host, and room left for the create refused without quorum
    leaseTTL: 5s
zeroclient:
  broker: {listen: "%[5]s:9443", hostname: fleet%[6]d.test}
  gateway: {listen: "%[5]s:4172"}
  echo: {listen: ["%[5]s:4172"]}
  tls: {cert: %[9]s/cert.pem, key: %[9]s/key.pem}
  events: {log: %[1]s/zc/access.jsonl, auditLog: %[1]s/zc/audit.jsonl}
  credentialStore: %[1]s/zc/credentials.db
  hostdSocket: %[4]s
  adminSocket: %[1]s/zc/admin.sock
  startWait: 60s
`, dir, sock, h.pool, h.socket, h.addr, n, hostdtest.RandHex(20), how, tlsDir)
		if err := os.WriteFile(h.config, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(h.cleanup)
	}
	h1, h2, h3 := hosts[0], hosts[1], hosts[2]

	// Host 1 makes the fleet; the catalog is made on it.
	h1.start()
	h1.waitServing(3 * time.Minute)
	h1.must("images", "register", "--dir", image, "--id", imageID)
	bundle := strings.TrimSpace(h1.must("bundles", "create", "--name", "Value", "--description", "1 vCPU", "--image", imageID, "--compute", "VALUE", "--user-gib", "10"))
	def := filepath.Join(h1.dir, "corp.yaml")
	if err := os.WriteFile(def, []byte(directoryYAML+fleetUsers), 0o600); err != nil {
		t.Fatal(err)
	}
	h1.must("directory", "put", "--file", def)
	h1.must("directories", "register", directoryID)

	// Hosts 2 and 3 join: each shows a code, is listed as joining under it, gets nothing
	// until it is approved (its API does not serve), and is ready once it is.
	for i, h := range []*fleetHost{h2, h3} {
		approver := hosts[i] // host 1 approves host 2, host 2 approves host 3
		h.start()
		code := h.joinCode(2 * time.Minute)
		t.Logf("host %d shows join code %s", h.n, code)
		deadline := time.Now().Add(time.Minute)
		for {
			if j, ok := approver.hosts()["code:"+code]; ok {
				if j.State != "joining" || j.HardwareId != fmt.Sprintf("mac:52:54:00:77:00:0%d", h.n) {
					t.Fatalf("the joining host as listed: %+v", j)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("host %d's join code %s is not listed on host %d:\n%s", h.n, code, approver.n, approver.must("hosts"))
			}
			time.Sleep(250 * time.Millisecond)
		}
		if _, err := os.Stat(fleet.Local{Dir: h.fleetDir()}.CertFile()); err == nil {
			t.Fatalf("host %d has a certificate before it was approved", h.n)
		}
		if c, err := net.Dial("unix", h.socket); err == nil {
			c.Close()
			t.Fatalf("host %d serves its API before it was approved", h.n)
		}
		t0 := time.Now()
		out := approver.must("hosts", "approve", code)
		t.Logf("host %d approves: %s", approver.n, strings.TrimSpace(out))
		h.waitServing(4 * time.Minute)
		t.Logf("host %d serving %s after its approval", h.n, time.Since(t0).Round(100*time.Millisecond))
	}
	// Every host in the fleet, ready, an etcd member each (3 voters), as any host lists it.
	var byName = map[string]string{}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		hs := h3.hosts()
		ok := len(hs) == 3
		for id, x := range hs {
			ok = ok && x.State == "ready" && x.EtcdMember
			byName[x.Name] = id
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the fleet as host 3 lists it:\n%s", h3.must("hosts"))
		}
		time.Sleep(500 * time.Millisecond)
	}
	for _, h := range hosts {
		h.id = byName[fmt.Sprintf("fleet%d", h.n)]
		if h.id == "" {
			t.Fatalf("host %d is not listed by its name: %v", h.n, byName)
		}
	}
	t.Logf("the fleet:\n%s", h1.must("hosts"))
	for _, h := range hosts {
		h.startZeroclient(zeroclient)
	}

	// One key store master key in the fleet: hosts 2 and 3 fetched host 1's when they
	// joined (its file is the same on every host).
	var master string
	for _, h := range hosts {
		b, err := os.ReadFile(filepath.Join(h.dir, "keystore", "master.key"))
		if err != nil {
			t.Fatalf("host %d's master key: %v", h.n, err)
		}
		if h.n == 1 {
			master = string(b)
		} else if string(b) != master {
			t.Fatalf("host %d's key store master key is not host 1's", h.n)
		}
	}
	// A key made through host 1's API encrypts 3 of the WorkSpaces: at most 2 land on host
	// 1, so at least one is owned by a host that must open its data key with the master
	// key host 1 sealed the key with.
	key, err := h1.client().CreateKey(context.Background(), &hostdclient.CreateKeyInput{Alias: "alias/fleet"})
	if err != nil {
		t.Fatalf("CreateKey on host 1: %v", err)
	}
	encrypted := map[string]bool{"alice": true, "carol": true, "frank": true}

	// 6 WorkSpaces through host 1's API: two on each host (spread), all described by host 3.
	tCreate := time.Now()
	var reqs []types.WorkspaceRequest
	for _, u := range []string{"alice", "bob", "carol", "erin", "frank", "grace"} {
		r := types.WorkspaceRequest{DirectoryId: aws.String(directoryID), UserName: aws.String(u), BundleId: aws.String(bundle)}
		if encrypted[u] {
			r.RootVolumeEncryptionEnabled, r.UserVolumeEncryptionEnabled = aws.Bool(true), aws.Bool(true)
			r.VolumeEncryptionKey = aws.String(key.Key.KeyId)
		}
		reqs = append(reqs, r)
	}
	out, err := h1.client().CreateWorkspaces(context.Background(), &workspaces.CreateWorkspacesInput{Workspaces: reqs})
	if err != nil || len(out.FailedRequests) > 0 || len(out.PendingRequests) != len(reqs) {
		t.Fatalf("create: %v %+v", err, out)
	}
	var ids []string
	userOf := map[string]string{}
	for _, w := range out.PendingRequests {
		ids = append(ids, aws.ToString(w.WorkspaceId))
		userOf[aws.ToString(w.WorkspaceId)] = aws.ToString(w.UserName)
	}
	pl, err := h3.client().DescribeWorkspaceHosts(context.Background(), &hostdclient.WorkspaceHostsInput{WorkspaceIds: ids})
	if err != nil || len(pl.Placements) != len(ids) {
		t.Fatalf("DescribeWorkspaceHosts on host 3: %v %+v", err, pl)
	}
	owner := map[string]*fleetHost{} // WorkSpace → its host
	onHosts := map[int][]string{}    // host → its WorkSpaces
	for _, p := range pl.Placements {
		for _, h := range hosts {
			if h.id == p.HostId {
				owner[p.WorkspaceId] = h
				onHosts[h.n] = append(onHosts[h.n], p.WorkspaceId)
			}
		}
	}
	if len(owner) != len(ids) || len(onHosts[1]) != 2 || len(onHosts[2]) != 2 || len(onHosts[3]) != 2 {
		t.Fatalf("6 WorkSpaces on 3 hosts of room for 3 each: not spread 2 per host: %v", onHosts)
	}
	onHost := map[int]string{} // host → the first of its WorkSpaces, the one its users stream
	for n, ws := range onHosts {
		onHost[n] = ws[0]
	}
	t.Logf("placements: %v on host 1, %v on host 2, %v on host 3", onHosts[1], onHosts[2], onHosts[3])
	all := func(h *fleetHost) map[string]types.Workspace {
		t.Helper()
		o, err := h.client().DescribeWorkspaces(context.Background(), &workspaces.DescribeWorkspacesInput{})
		if err != nil {
			t.Fatalf("host %d: DescribeWorkspaces: %v", h.n, err)
		}
		m := map[string]types.Workspace{}
		for _, w := range o.Workspaces {
			m[aws.ToString(w.WorkspaceId)] = w
		}
		return m
	}
	waitStates := func(h *fleetHost, want map[string]types.WorkspaceState, within time.Duration) {
		t.Helper()
		deadline := time.Now().Add(within)
		for {
			ws := all(h)
			ok := true
			for id, st := range want {
				if ws[id].State == types.WorkspaceStateError {
					t.Fatalf("%s (on host %d) went to ERROR: %s", id, owner[id].n, aws.ToString(ws[id].ErrorMessage))
				}
				ok = ok && ws[id].State == st
			}
			if ok {
				return
			}
			if time.Now().After(deadline) {
				var got []string
				for id := range want {
					got = append(got, fmt.Sprintf("%s (host %d): %s %s", id, owner[id].n, ws[id].State, aws.ToString(ws[id].ErrorMessage)))
				}
				t.Fatalf("on host %d after %s: %s; want %v", h.n, within, strings.Join(got, "; "), want)
			}
			time.Sleep(time.Second)
		}
	}
	available := map[string]types.WorkspaceState{}
	for _, id := range ids {
		available[id] = types.WorkspaceStateAvailable
	}
	if got := all(h3); len(got) != len(ids) {
		t.Fatalf("host 3 describes %d WorkSpaces, want the %d made on host 1", len(got), len(ids))
	}
	waitStates(h3, available, 12*time.Minute)
	t.Logf("%d WorkSpaces AVAILABLE, 2 per host, %s after the create", len(ids), time.Since(tCreate).Round(time.Second))
	for _, id := range ids {
		if encrypted[userOf[id]] && owner[id] != h1 {
			t.Logf("%s, encrypted with host 1's key, AVAILABLE on host %d", id, owner[id].n)
		}
	}
	// Each runs on its owner, and only there; hosts 2 and 3 hold the image by its digest.
	checkDomains := func() {
		t.Helper()
		for _, id := range ids {
			for _, h := range hosts {
				st, err := h.conn.State(id)
				if err != nil {
					t.Fatal(err)
				}
				if h == owner[id] && st != virt.Running {
					t.Errorf("%s on its host %d: domain %s", id, h.n, st)
				}
				if h != owner[id] && st != virt.Missing {
					t.Errorf("%s (host %d's) has a domain on host %d too: %s", id, owner[id].n, h.n, st)
				}
			}
		}
	}
	checkDomains()
	for _, h := range []*fleetHost{h2, h3} {
		if x := h1.hosts()[h.id]; x.Images != 1 {
			t.Errorf("host %d holds %d images, want the one it fetched", h.n, x.Images)
		}
	}

	// A zero client (on the switch) logs in at host 2's broker as the users of host 3's and
	// host 1's WorkSpaces: each streams from the gateway of the host that runs it.
	caFile := filepath.Join(tlsDir, certs.CAFile)
	inClient := func(args ...string) (string, error) {
		cmd := exec.Command("ip", append([]string{"netns", "exec", sw, zeroclient}, args...)...)
		var stdout, stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		return stdout.String() + stderr.String(), err
	}
	password := "Fl33t-" + hostdtest.RandHex(6)
	held := onHosts[1][1] // its user streams on while host 3 is killed
	for _, id := range []string{onHost[3], onHost[1], held} {
		out, err := exec.Command(zeroclient, "invite", "--socket", filepath.Join(h2.dir, "zc", "admin.sock"), "--directory", directoryID, "--user", userOf[id]).CombinedOutput()
		if err != nil {
			t.Fatalf("invite %s at host 2: %v: %s", userOf[id], err, out)
		}
		var inv struct{ ActivationCode string }
		if err := json.Unmarshal(out, &inv); err != nil || inv.ActivationCode == "" {
			t.Fatalf("invite %s: %v: %s", userOf[id], err, out)
		}
		if out, err := inClient("activate", "--broker", "https://10.77.0.2:9443", "--ca", caFile, "--code", inv.ActivationCode, "--password", password); err != nil {
			t.Fatalf("activate %s at host 2's broker: %v: %s", userOf[id], err, out)
		}
	}
	type connected struct {
		WorkspaceID, Gateway string
		Width, Height        int
		Updates              int
		HeldSeconds          float64
	}
	connect := func(user string, extra ...string) (connected, string, error) {
		out, err := inClient(append([]string{"connect", "--broker", "https://10.77.0.2:9443", "--ca", caFile, "--user", user, "--password", password, "--timeout", "90s"}, extra...)...)
		var c connected
		if err == nil {
			err = json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &c)
		}
		return c, out, err
	}
	// The tag host 3's gateway issued is refused at host 1's gateway.
	if _, out, err := connect(userOf[onHost[3]], "--gateway", "10.77.0.1:4172"); err == nil || !strings.Contains(out, "stream") {
		t.Fatalf("host 3's tag presented at host 1's gateway: %v: %s, want a refused stream", err, out)
	} else {
		t.Logf("host 3's tag at host 1's gateway: %s", strings.TrimSpace(out))
	}
	c, cOut, err := connect(userOf[onHost[3]])
	if err != nil || c.WorkspaceID != onHost[3] || c.Gateway != "10.77.0.3:4172" || c.Width == 0 {
		t.Fatalf("%s through host 2's broker: %v: %s, want a frame of %s from host 3's gateway", userOf[onHost[3]], err, cOut, onHost[3])
	}
	t.Logf("%s logged in at host 2's broker, streamed %dx%d from host 3's gateway %s", userOf[onHost[3]], c.Width, c.Height, c.Gateway)

	// statesOf are the states host h describes the WorkSpaces ws in, and whether all are st.
	statesOf := func(h *fleetHost, ws []string, st types.WorkspaceState) ([]types.WorkspaceState, bool) {
		t.Helper()
		got, m, ok := []types.WorkspaceState{}, all(h), true
		for _, id := range ws {
			got = append(got, m[id].State)
			ok = ok && m[id].State == st
		}
		return got, ok
	}
	// Host 2's hostd freezes (SIGSTOP: a hang or a partition; its etcd member serves on)
	// past its lease: it is down and its WorkSpaces UNHEALTHY. Thawed, it finds its lease
	// gone, changes nothing until it has a new one, and is back: ready, its WorkSpaces
	// AVAILABLE, on it alone.
	h2.proc.Cmd.Process.Signal(syscall.SIGSTOP)
	tStop := time.Now()
	deadline = tStop.Add(30 * time.Second)
	for {
		got, ok := statesOf(h1, onHosts[2], types.WorkspaceStateUnhealthy)
		if ok {
			break
		}
		if time.Now().After(deadline) {
			h2.proc.Cmd.Process.Signal(syscall.SIGCONT)
			t.Fatalf("host 2 frozen 30 s, its WorkSpaces are %v:\n%s", got, h1.must("hosts"))
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("host 2 frozen: its WorkSpaces UNHEALTHY after %s", time.Since(tStop).Round(100*time.Millisecond))
	if x := h1.hosts()[h2.id]; x.State != "down" {
		t.Errorf("host 2 frozen, listed as %q, want down", x.State)
	}
	h2.proc.Cmd.Process.Signal(syscall.SIGCONT)
	tCont := time.Now()
	waitStates(h1, available, 2*time.Minute)
	t.Logf("host 2 thawed: its WorkSpaces AVAILABLE again after %s", time.Since(tCont).Round(100*time.Millisecond))
	if out := h2.proc.Output(); !strings.Contains(out, "lease granted again") {
		t.Errorf("host 2 thawed without taking a new lease:\n%s", h2.proc.Tail(4000))
	}
	if x := h1.hosts()[h2.id]; x.State != "ready" {
		t.Errorf("host 2 thawed, listed as %q", x.State)
	}
	checkDomains()

	// Host 3 dies: its WorkSpaces are UNHEALTHY within 30 s on the survivors, host 3 is
	// down, the others stay AVAILABLE, the survivors' APIs answer, and a stream from host
	// 1 (through host 2's broker) that was running before the kill runs on after it.
	const hold = 45 * time.Second
	type heldResult struct {
		c   connected
		out string
		err error
		end time.Time
	}
	heldDone := make(chan heldResult, 1)
	go func() {
		c, out, err := connect(userOf[held], "--hold", hold.String())
		heldDone <- heldResult{c, out, err, time.Now()}
	}()
	time.Sleep(10 * time.Second) // its login and first frame take about a second
	h3.kill()
	tKill := time.Now()
	deadline = tKill.Add(30 * time.Second)
	for {
		got, ok := statesOf(h1, onHosts[3], types.WorkspaceStateUnhealthy)
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("host 3's WorkSpaces %v are %v 30 s after host 3 was killed:\n%s", onHosts[3], got, h1.must("hosts"))
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("host 3 killed: its WorkSpaces UNHEALTHY after %s (lease TTL 5 s)", time.Since(tKill).Round(100*time.Millisecond))
	for _, dead := range onHosts[3] {
		if w := all(h2)[dead]; w.State != types.WorkspaceStateUnhealthy || aws.ToString(w.ErrorMessage) == "" {
			t.Errorf("host 2 describes host 3's WorkSpace %s as %s %q, want UNHEALTHY with a reason", dead, w.State, aws.ToString(w.ErrorMessage))
		}
	}
	if x := h2.hosts()[h3.id]; x.State != "down" {
		t.Errorf("host 3 listed as %q, want down", x.State)
	}
	survivors := map[string]types.WorkspaceState{}
	for _, id := range append(append([]string{}, onHosts[1]...), onHosts[2]...) {
		survivors[id] = types.WorkspaceStateAvailable
	}
	waitStates(h1, survivors, time.Second)
	waitStates(h2, survivors, time.Second)
	hr := <-heldDone
	if hr.err != nil || hr.c.WorkspaceID != held || hr.c.Gateway != "10.77.0.1:4172" || hr.c.HeldSeconds < (hold-2*time.Second).Seconds() {
		t.Fatalf("%s's stream from host 1, held %s across host 3's kill: %v: %s", userOf[held], hold, hr.err, hr.out)
	}
	if began := hr.end.Add(-time.Duration(hr.c.HeldSeconds * float64(time.Second))); !began.Before(tKill) {
		t.Fatalf("%s's held stream began %s after host 3 was killed: it shows nothing about the kill", userOf[held], began.Sub(tKill))
	}
	t.Logf("%s's stream from host 1's gateway ran on across host 3's kill: %.0f s held, %d updates, %.0f s of them after the kill",
		userOf[held], hr.c.HeldSeconds, hr.c.Updates, hr.end.Sub(tKill).Seconds())
	if c, out, err := connect(userOf[onHost[1]]); err != nil || c.WorkspaceID != onHost[1] || c.Gateway != "10.77.0.1:4172" || c.Width == 0 {
		t.Fatalf("with host 3 down, %s through host 2's broker: %v: %s, want a frame of %s from host 1's gateway", userOf[onHost[1]], err, out, onHost[1])
	}
	t.Logf("with host 3 down, %s streamed from host 1's gateway through host 2's broker", userOf[onHost[1]])

	// Host 3 is back: it is up, its WorkSpaces AVAILABLE again (their guests ran on), and no
	// WorkSpace has a domain on two hosts.
	tBack := time.Now()
	h3.start()
	h3.waitServing(4 * time.Minute)
	h3.startZeroclient(zeroclient)
	waitStates(h1, available, 3*time.Minute)
	t.Logf("host 3 back: its WorkSpaces AVAILABLE %s after its restart", time.Since(tBack).Round(100*time.Millisecond))
	if x := h1.hosts()[h3.id]; x.State != "ready" {
		t.Errorf("host 3 back, listed as %q", x.State)
	}
	checkDomains()

	// Without quorum (2 of the 3 members killed), a write is refused saying so, and
	// nothing of it is written.
	for _, h := range []*fleetHost{h2, h3} {
		pid := h.memberPID()
		if pid == 0 {
			t.Fatalf("host %d runs no etcd member", h.n)
		}
		syscall.Kill(pid, syscall.SIGKILL)
	}
	time.Sleep(4 * time.Second) // host 1's member's election timeout: it knows it has no leader
	cl := workspaces.New(h1.client().Options(), func(o *workspaces.Options) { o.RetryMaxAttempts = 1 })
	cout, err := cl.CreateWorkspaces(context.Background(), &workspaces.CreateWorkspacesInput{Workspaces: []types.WorkspaceRequest{
		{DirectoryId: aws.String(directoryID), UserName: aws.String("dave"), BundleId: aws.String(bundle)}}})
	var ae smithy.APIError
	switch {
	case err == nil && len(cout.FailedRequests) == 1 && strings.Contains(aws.ToString(cout.FailedRequests[0].ErrorMessage), "no quorum"):
		t.Logf("create without quorum: %s: %s", aws.ToString(cout.FailedRequests[0].ErrorCode), aws.ToString(cout.FailedRequests[0].ErrorMessage))
	case errors.As(err, &ae) && ae.ErrorCode() == "ServiceUnavailableException" && strings.Contains(ae.ErrorMessage(), "no quorum"):
		t.Logf("create without quorum: %v", err)
	default:
		t.Fatalf("create without quorum: %v %+v, want a refusal saying there is no quorum", err, cout)
	}
	// The members back (a hostd starts its member when it starts), and nothing of dave's.
	for _, h := range []*fleetHost{h2, h3} {
		h.proc.Stop()
		h.start()
	}
	for _, h := range []*fleetHost{h2, h3} {
		h.waitServing(4 * time.Minute)
	}
	ws := all(h1)
	if len(ws) != len(ids) {
		t.Fatalf("after the quorum is back, host 1 describes %d WorkSpaces, want the %d", len(ws), len(ids))
	}
	for _, w := range ws {
		if aws.ToString(w.UserName) == "dave" {
			t.Fatalf("the create refused without quorum was written: %+v", w)
		}
	}
	waitStates(h1, available, 3*time.Minute)
	checkDomains()
}

// fleetUsers are the test directory's users beyond directoryYAML's, for TestFleet's 6
// WorkSpaces (one per user) and the create refused without quorum (dave's).
const fleetUsers = `  - {userName: erin, firstName: Erin, lastName: Test, email: erin@example.com}
  - {userName: frank, firstName: Frank, lastName: Test, email: frank@example.com}
  - {userName: grace, firstName: Grace, lastName: Test, email: grace@example.com}
`
