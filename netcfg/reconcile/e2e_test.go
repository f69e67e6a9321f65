package reconcile

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"text/template"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"

	"deskhost/internal/dhcpclient"
	"deskhost/internal/nsutil"
	"deskhost/netcfg/config"
	"deskhost/netcfg/dhcpserver"
	"deskhost/netcfg/internal/testnet"
	"deskhost/netcfg/links"
	"deskhost/netcfg/taps"
)

// Addresses of the test topology.
//
//	client ns (c0: 203.0.113.20, .21, .40) --- eth0 [host ns] eth1 --- l0 [lan ns: lanbr 10.0.0.1, "internet" 10.0.9.9] ldc --- d0 [dc ns: DC 10.0.1.10]
//	                                              br-mgmt: wsm-* taps  br-primary: eth1 + wsp-* taps
//	vm ns (eth0 = mgmt, DHCP from netcfg; eth1 = primary 10.0.2.1x)  x2
//
// The LAN is a bridge with the directory controller behind it, so that the
// LAN's neighbour table holds the DC's address (what a guest's forged ARP
// would try to change).
const (
	hostMgmtIP = "203.0.113.10"
	allowedA   = "203.0.113.20"
	allowedB   = "203.0.113.21"
	denied     = "203.0.113.40"
	hostPrimIP = "10.0.0.5"
	dcIP       = "10.0.1.10"
	netIP      = "10.0.9.9"
)

type vmNS struct {
	*testnet.NS
	ID        string
	MgmtMAC   net.HardwareAddr
	PrimMAC   net.HardwareAddr
	primaryIP string
	mgmtIP    string
}

type topo struct {
	t                     *testing.T
	host, client, lan, dc *testnet.NS
	vm1, vm2              *vmNS
	stateFile, configPath string
	r                     *Reconciler
	cancel                context.CancelFunc
}

func quietLog() *slog.Logger {
	lvl := slog.LevelWarn
	if os.Getenv("NETCFG_TEST_DEBUG") != "" {
		lvl = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
}

// newTopo builds the namespaces and links; the host has no netcfg state yet.
func newTopo(t *testing.T) *topo {
	t.Helper()
	testnet.RequireRoot(t)
	tp := &topo{t: t}
	tp.host = testnet.New(t, "host")
	tp.client = testnet.New(t, "client")
	tp.lan = testnet.New(t, "lan")
	tp.dc = testnet.New(t, "dc")
	testnet.Veth(t, tp.host, "eth0", tp.client, "c0")
	testnet.Veth(t, tp.host, "eth1", tp.lan, "l0")
	testnet.Veth(t, tp.lan, "ldc", tp.dc, "d0")
	tp.client.IP("addr add " + allowedA + "/24 dev c0")
	tp.client.IP("addr add " + allowedB + "/24 dev c0")
	tp.client.IP("addr add " + denied + "/24 dev c0")
	tp.client.IP("link set c0 up")
	tp.lan.IP("link add lanbr type bridge")
	for _, l := range []string{"l0", "ldc"} {
		tp.lan.IP("link set " + l + " master lanbr")
		tp.lan.IP("link set " + l + " up")
	}
	for _, a := range []string{"10.0.0.1/16", netIP + "/16"} {
		tp.lan.IP("addr add " + a + " dev lanbr")
	}
	tp.lan.IP("link set lanbr up")
	tp.dc.IP("addr add " + dcIP + "/16 dev d0")
	tp.dc.IP("link set d0 up")
	for i, v := range []**vmNS{&tp.vm1, &tp.vm2} {
		id := fmt.Sprintf("ws-e2evm%05d", i+1)
		mt, pt, _ := taps.Names(id)
		ns := testnet.New(t, fmt.Sprintf("vm%d", i+1))
		// veth pairs stand in for the taps a VM's qemu would hold
		testnet.Veth(t, tp.host, mt, ns, "eth0")
		testnet.Veth(t, tp.host, pt, ns, "eth1")
		vm := &vmNS{NS: ns, ID: id, primaryIP: fmt.Sprintf("10.0.2.%d", 11+i)}
		ns.IP("link set eth0 up")
		ns.IP("link set eth1 up")
		ns.IP("addr add " + vm.primaryIP + "/16 dev eth1")
		vm.MgmtMAC, vm.PrimMAC = ns.MAC("eth0"), ns.MAC("eth1")
		*v = vm
	}
	dir := t.TempDir()
	tp.stateFile = filepath.Join(dir, "state", "netcfg.json")
	tp.configPath = filepath.Join(dir, "netcfg.yaml")
	return tp
}

// lanDHCP serves the host's primary address from the LAN (exercising the
// host's DHCP client on br-primary), and vm1's (a guest asking the LAN).
func (tp *topo) lanDHCP(ctx context.Context) {
	tp.t.Helper()
	srv := dhcpserver.New(dhcpserver.Config{Interface: "lanbr", ServerIP: netip.MustParseAddr("10.0.0.1"),
		Network: netip.MustParsePrefix("10.0.0.0/16"), LeaseTime: time.Hour}, quietLog())
	srv.SetLeases([]dhcpserver.Lease{{MAC: tp.host.MAC("eth1"), IP: netip.MustParseAddr(hostPrimIP)},
		{MAC: tp.vm1.PrimMAC, IP: netip.MustParseAddr(tp.vm1.primaryIP)}})
	conn, err := dhcpserver.Listen(tp.lan.Handle, "lanbr")
	if err != nil {
		tp.t.Fatal(err)
	}
	go srv.Serve(ctx, conn)
}

type cfgParams struct {
	StateFile           string
	VM1, VM2            *vmNS
	GroupA, GroupB      []string
	Associated          []string
	Candidates          string
	PrimaryAddr         string
	AdminPort, SGPort   int
	PrimaryName, Source string
	VM1Addr, VM2Addr    string // the WorkSpaces' primaryAddress ("" = unknown)
	IPv6                string // primaryNetwork.ipv6
	PrimaryDHCP         string // primaryNetwork.dhcp (a YAML flow mapping)
}

const cfgTmpl = `
stateFile: {{.StateFile}}
interfaces:
  management:
    name: eth0
    addresses: [HOSTMGMT/24]
  primary:
    name: {{.PrimaryName}}
{{- if .PrimaryAddr}}
    addresses: [{{.PrimaryAddr}}]
{{- else}}
    dhcp: true
{{- end}}
host:
  adminPort: {{.AdminPort}}
  adminSources: [DENIED/32]
  fleetPorts: [7443]
{{- if .Candidates}}
managementNetwork:
  candidates: [{{.Candidates}}]
{{- end}}
{{- if or .IPv6 .PrimaryDHCP}}
primaryNetwork:
{{- if .IPv6}}
  ipv6: {{.IPv6}}
{{- end}}
{{- if .PrimaryDHCP}}
  dhcp: {{.PrimaryDHCP}}
{{- end}}
{{- end}}
ipGroups:
  - id: wsipg-a
    rules:
{{- range .GroupA}}
      - {source: {{.}}}
{{- end}}
  - id: wsipg-b
    rules:
{{- range .GroupB}}
      - {source: {{.}}}
{{- end}}
  - id: wsipg-empty
directories:
  - id: d-e2e0000001
    ipGroups: [{{range $i, $g := .Associated}}{{if $i}}, {{end}}{{$g}}{{end}}]
    controllers: [DCADDR]
securityGroups:
  - id: sg-internet
    presets: [internet]
  - id: d-e2e0000001_workspacesMembers
    ingress:
      - {protocol: tcp, fromPort: {{.SGPort}}, cidr: 10.0.0.0/16, description: RDP from the LAN}
workspaces:
  - id: {{.VM1.ID}}
    directory: d-e2e0000001
    managementMAC: "{{.VM1.MgmtMAC}}"
    primaryMAC: "{{.VM1.PrimMAC}}"
{{- if .VM1Addr}}
    primaryAddress: {{.VM1Addr}}
{{- end}}
    hostname: vm-one
    userName: "Alice Smith"
    userData: "#cloud-config for {{.VM1.ID}}"
  - id: {{.VM2.ID}}
    directory: d-e2e0000001
    securityGroups: [sg-internet]
    managementMAC: "{{.VM2.MgmtMAC}}"
    primaryMAC: "{{.VM2.PrimMAC}}"
{{- if .VM2Addr}}
    primaryAddress: {{.VM2Addr}}
{{- end}}
`

func (tp *topo) params() cfgParams {
	return cfgParams{StateFile: tp.stateFile, VM1: tp.vm1, VM2: tp.vm2,
		GroupA: []string{allowedA}, GroupB: []string{allowedB, "198.51.100.0/24"},
		Associated: []string{"wsipg-a", "wsipg-b"}, AdminPort: 8443, SGPort: 3389, PrimaryName: "eth1",
		VM1Addr: tp.vm1.primaryIP, VM2Addr: tp.vm2.primaryIP}
}

func (tp *topo) render(p cfgParams) []byte {
	tp.t.Helper()
	var b bytes.Buffer
	if err := template.Must(template.New("c").Parse(cfgTmpl)).Execute(&b, p); err != nil {
		tp.t.Fatal(err)
	}
	return []byte(strings.NewReplacer("HOSTMGMT", hostMgmtIP, "DENIED", denied, "DCADDR", dcIP).Replace(b.String()))
}

func (tp *topo) config(p cfgParams) *config.Config {
	tp.t.Helper()
	c, err := config.Decode(tp.render(p))
	if err != nil {
		tp.t.Fatalf("%v\n%s", err, tp.render(p))
	}
	return c
}

// start creates the reconciler, applies the first config and serves.
func (tp *topo) start(c *config.Config) *Result {
	tp.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	tp.cancel = cancel
	tp.t.Cleanup(cancel)
	tp.lanDHCP(ctx)
	r, err := New(Options{NetNS: tp.host.Handle, Logger: quietLog(), DHCPTimeout: 5 * time.Second})
	if err != nil {
		tp.t.Fatal(err)
	}
	tp.t.Cleanup(func() { r.Close() })
	tp.r = r
	res, err := r.Apply(ctx, c)
	if err != nil {
		tp.t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- r.Serve(ctx) }()
	select {
	case <-r.Listening():
	case err := <-served:
		tp.t.Fatalf("Serve: %v", err)
	}
	tp.t.Cleanup(func() {
		cancel()
		select {
		case <-served:
		case <-time.After(3 * time.Second):
			tp.t.Error("Serve did not stop")
		}
	})
	return res
}

// guestDHCP runs DHCP inside a VM namespace on eth0 and configures the lease
// and its classless static routes the way a guest would.
func (vm *vmNS) guestDHCP(t *testing.T) *dhcpclient.Lease {
	t.Helper()
	var c *nclient4.Client
	err := nsutil.Do(vm.Handle, func() (err error) {
		c, err = nclient4.New("eth0", nclient4.WithTimeout(time.Second), nclient4.WithRetry(3))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	dc, err := dhcpclient.New(vm.Handle, "eth0", quietLog())
	if err != nil {
		t.Fatal(err)
	}
	defer dc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	l, err := dc.Acquire(ctx)
	if err != nil {
		t.Fatalf("%s: DHCP on the management NIC: %v", vm.ID, err)
	}
	vm.mgmtIP = l.Addr.Addr().String()
	vm.IP("addr add " + l.Addr.String() + " dev eth0")
	for _, r := range l.Routes {
		if r.Via.IsUnspecified() {
			continue
		}
		vm.IP(fmt.Sprintf("route add %s via %s dev eth0", r.Dst, r.Via))
	}
	return l
}

func (tp *topo) listeners() {
	// host services on every address: only the firewall decides
	for _, p := range []string{"443", "4172", "4195", "8443", "8080", "7443"} {
		tp.host.EchoTCP("0.0.0.0:" + p)
	}
	tp.host.EchoUDP("0.0.0.0:4172")
	tp.host.EchoUDP("0.0.0.0:4195")
	for _, p := range []string{"389", "22", "443"} {
		tp.lan.EchoTCP("0.0.0.0:" + p)
		tp.dc.EchoTCP("0.0.0.0:" + p)
	}
	tp.dc.EchoUDP(dcIP + ":53") // bound: replies must come from the DC address
	for _, vm := range []*vmNS{tp.vm1, tp.vm2} {
		for _, p := range []string{"4172", "8200", "8225", "22", "3389"} {
			vm.EchoTCP("0.0.0.0:" + p)
		}
		vm.EchoUDP("0.0.0.0:4172")
	}
}

func hp(host, port string) string { return net.JoinHostPort(host, port) }

func TestEndToEnd(t *testing.T) {
	tp := newTopo(t)
	// another table that must survive every apply untouched
	if out, err := tp.host.Exec([]byte("table inet other {\n\tchain c {\n\t\ttype filter hook input priority 10; policy accept;\n\t\ttcp dport 9999 accept\n\t}\n}\n"), "nft", "-f", "-"); err != nil {
		t.Fatal(err, out)
	}
	otherBefore, _ := tp.host.Exec(nil, "nft", "list", "table", "inet", "other")
	cfg := tp.config(tp.params())
	res := tp.start(cfg)
	if res.ManagementRange.String() != "198.19.0.0/16" || !res.Firewall.Changed {
		t.Fatalf("first apply: %+v", res)
	}

	// links: taps on their bridges, management ports isolated, br_netfilter on
	out := tp.host.IP("-d link show " + taps.MgmtPrefix + tp.vm1.ID[3:])
	if !strings.Contains(out, "master br-mgmt") || !strings.Contains(out, "isolated on") {
		t.Fatalf("management tap not an isolated br-mgmt port:\n%s", out)
	}
	out = tp.host.IP("-d link show br-primary")
	if !strings.Contains(out, "nf_call_iptables 1") {
		t.Fatalf("br-primary without nf_call_iptables:\n%s", out)
	}
	if !strings.Contains(tp.host.IP("-d link show eth1"), "master br-primary") {
		t.Fatal("primary NIC not in br-primary")
	}
	if !strings.Contains(tp.host.IP("addr show br-primary"), hostPrimIP+"/16") {
		t.Fatalf("br-primary has no DHCP address:\n%s", tp.host.IP("addr show br-primary"))
	}

	// guests get their management address and routes by DHCP (option 121)
	l1 := tp.vm1.guestDHCP(t)
	tp.vm2.guestDHCP(t)
	if l1.Addr.String() != "198.19.0.10/16" || l1.Router.IsValid() {
		t.Fatalf("vm1 lease %+v: want 198.19.0.10/16 and no default router", l1)
	}
	wantRoutes := []string{"198.19.0.0/16 via 0.0.0.0", "169.254.169.254/32 via 198.19.0.1", "169.254.169.250/32 via 198.19.0.1", "169.254.169.251/32 via 198.19.0.1"}
	var gotRoutes []string
	for _, r := range l1.Routes {
		gotRoutes = append(gotRoutes, r.Dst.String()+" via "+r.Via.String())
	}
	if !slices.Equal(gotRoutes, wantRoutes) {
		t.Fatalf("option 121 routes %v, want %v", gotRoutes, wantRoutes)
	}

	tp.listeners()
	c, l, n, v1, v2 := tp.client, tp.lan, tp.host, tp.vm1, tp.vm2
	H := func(p string) string { return hp(hostMgmtIP, p) }
	testnet.Check(t, []testnet.Probe{
		// host input, management NIC
		{Name: "allowed client, broker", NS: c, Proto: "tcp", Src: allowedA, Dst: H("443"), Allowed: true},
		{Name: "allowed client, PCoIP tcp", NS: c, Proto: "tcp", Src: allowedB, Dst: H("4172"), Allowed: true},
		{Name: "allowed client, PCoIP udp", NS: c, Proto: "udp", Src: allowedA, Dst: H("4172"), Allowed: true},
		{Name: "allowed client, WSP udp", NS: c, Proto: "udp", Src: allowedA, Dst: H("4195"), Allowed: true},
		{Name: "denied client, broker", NS: c, Proto: "tcp", Src: denied, Dst: H("443"), Allowed: false},
		{Name: "denied client, WSP tcp", NS: c, Proto: "tcp", Src: denied, Dst: H("4195"), Allowed: false},
		{Name: "denied client, PCoIP udp", NS: c, Proto: "udp", Src: denied, Dst: H("4172"), Allowed: false},
		{Name: "admin API from admin source", NS: c, Proto: "tcp", Src: denied, Dst: H("8443"), Allowed: true},
		{Name: "admin API from elsewhere", NS: c, Proto: "tcp", Src: allowedA, Dst: H("8443"), Allowed: false},
		{Name: "closed port (listener, not listed)", NS: c, Proto: "tcp", Src: allowedA, Dst: H("8080"), Allowed: false},
		{Name: "fleet port from any source", NS: c, Proto: "tcp", Src: denied, Dst: H("7443"), Allowed: true},
		{Name: "fleet port from a client", NS: c, Proto: "tcp", Src: allowedA, Dst: H("7443"), Allowed: true},
		{Name: "fleet port, primary side", NS: l, Proto: "tcp", Src: "10.0.0.1", Dst: hp(hostPrimIP, "7443"), Allowed: false},
		// host input, primary side: nothing but established and DHCP
		{Name: "LAN to host broker port", NS: l, Proto: "tcp", Src: "10.0.0.1", Dst: hp(hostPrimIP, "443"), Allowed: false},
		{Name: "LAN to host streaming", NS: l, Proto: "udp", Src: "10.0.0.1", Dst: hp(hostPrimIP, "4172"), Allowed: false},
		// management network
		{Name: "host to guest PCoIP", NS: n, Proto: "tcp", Dst: hp(v1.mgmtIP, "4172"), Allowed: true},
		{Name: "host to guest PCoIP udp", NS: n, Proto: "udp", Dst: hp(v1.mgmtIP, "4172"), Allowed: true},
		{Name: "host to guest agent 8200", NS: n, Proto: "tcp", Dst: hp(v1.mgmtIP, "8200"), Allowed: true},
		{Name: "host to guest WSP 8225", NS: n, Proto: "tcp", Dst: hp(v2.mgmtIP, "8225"), Allowed: true},
		{Name: "host to guest ssh (not listed)", NS: n, Proto: "tcp", Dst: hp(v1.mgmtIP, "22"), Allowed: false},
		{Name: "guest to guest over br-mgmt", NS: v1.NS, Proto: "tcp", Dst: hp(v2.mgmtIP, "4172"), Allowed: false},
		{Name: "guest to guest udp over br-mgmt", NS: v2.NS, Proto: "udp", Dst: hp(v1.mgmtIP, "4172"), Allowed: false},
		{Name: "guest to host broker", NS: v1.NS, Proto: "tcp", Dst: hp("198.19.0.1", "443"), Allowed: false},
		// primary network: security groups
		{Name: "guest to DC LDAP (members group)", NS: v1.NS, Proto: "tcp", Dst: hp(dcIP, "389"), Allowed: true},
		{Name: "guest to DC DNS udp (members group)", NS: v1.NS, Proto: "udp", Dst: hp(dcIP, "53"), Allowed: true},
		{Name: "guest to DC ssh (not in group)", NS: v1.NS, Proto: "tcp", Dst: hp(dcIP, "22"), Allowed: false},
		{Name: "guest without internet preset to 443", NS: v1.NS, Proto: "tcp", Dst: hp(netIP, "443"), Allowed: false},
		{Name: "guest with internet preset to 443", NS: v2.NS, Proto: "tcp", Dst: hp(netIP, "443"), Allowed: true},
		{Name: "LAN to guest RDP (ingress rule)", NS: l, Proto: "tcp", Dst: hp(v1.primaryIP, "3389"), Allowed: true},
		{Name: "LAN to guest ssh", NS: l, Proto: "tcp", Dst: hp(v1.primaryIP, "22"), Allowed: false},
		{Name: "guest to guest RDP (no egress rule)", NS: v1.NS, Proto: "tcp", Dst: hp(v2.primaryIP, "3389"), Allowed: false},
	})

	// metadata over real HTTP from a guest, identified by its address
	for _, vm := range []*vmNS{v1, v2} {
		body := httpGet(t, vm, "http://169.254.169.254/latest/meta-data/instance-id")
		if body != vm.ID {
			t.Fatalf("%s: metadata instance-id %q", vm.ID, body)
		}
	}
	if ud := httpGet(t, v1, "http://169.254.169.254/latest/user-data"); ud != "#cloud-config for "+v1.ID {
		t.Fatalf("user-data %q", ud)
	}
	// the graphical desktop image creates this user at first boot
	if u := httpGet(t, v1, "http://169.254.169.254/latest/meta-data/workspaces/user-name"); u != "Alice Smith" {
		t.Fatalf("user-name %q", u)
	}
	// IMDSv2 over the real path: a token works for the guest that asked for
	// it and for no other
	code, tok := httpDo(t, v1, "PUT", "http://169.254.169.254/latest/api/token", map[string]string{"X-aws-ec2-metadata-token-ttl-seconds": "60"})
	if code != 200 || len(tok) < 40 {
		t.Fatalf("IMDSv2 token: %d %q", code, tok)
	}
	hdr := map[string]string{"X-aws-ec2-metadata-token": tok}
	if code, id := httpDo(t, v1, "GET", "http://169.254.169.254/latest/meta-data/instance-id", hdr); code != 200 || id != v1.ID {
		t.Fatalf("with its token: %d %q", code, id)
	}
	if code, _ := httpDo(t, v2, "GET", "http://169.254.169.254/latest/meta-data/instance-id", hdr); code != 401 {
		t.Fatalf("another guest's token: %d, want 401", code)
	}

	// read back equals intent; other tables untouched
	drift, err := tp.r.Check(context.Background(), cfg)
	if err != nil || len(drift) > 0 {
		t.Fatalf("drift after apply: %v %v", drift, err)
	}
	if otherAfter, _ := n.Exec(nil, "nft", "list", "table", "inet", "other"); otherAfter != otherBefore {
		t.Fatal("table inet other changed")
	}

	// idempotent: a second apply changes nothing, bumps no generation and
	// drops no established connection
	live, err := c.DialTCP(allowedA, H("4172"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	if err := testnet.RoundTrip(live, time.Second); err != nil {
		t.Fatal(err)
	}
	gen, _ := tp.r.Firewall().Generation()
	res2, err := tp.r.Apply(context.Background(), tp.config(tp.params()))
	if err != nil || res2.Changed || res2.Firewall.Messages != 0 || len(res2.Links) != 0 {
		t.Fatalf("second apply changed something: %+v %v", res2, err)
	}
	if g2, _ := tp.r.Firewall().Generation(); g2 != gen {
		t.Fatalf("nftables generation moved on a no-op apply: %d -> %d", gen, g2)
	}
	if err := testnet.RoundTrip(live, time.Second); err != nil {
		t.Fatalf("established connection dropped by a no-op apply: %v", err)
	}

	// a fresh reconciler (as after a restart) also finds nothing to do
	r2, err := New(Options{NetNS: n.Handle, Logger: quietLog(), DHCPTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	res3, err := r2.Apply(context.Background(), tp.config(tp.params()))
	if err != nil || res3.Firewall.Changed || !res3.Firewall.ReadKernel {
		t.Fatalf("fresh reconciler apply: %+v %v", res3, err)
	}
}

func lineDiff(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	var out []string
	for i := range max(len(al), len(bl)) {
		var x, y string
		if i < len(al) {
			x = al[i]
		}
		if i < len(bl) {
			y = bl[i]
		}
		if x != y {
			out = append(out, fmt.Sprintf("- %s\n+ %s", x, y))
		}
	}
	return strings.Join(out, "\n")
}

// httpDo sends one request from inside a VM namespace.
func httpDo(t *testing.T, vm *vmNS, method, url string, hdr map[string]string) (int, string) {
	t.Helper()
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		return nsutil.Dial(ctx, vm.Handle, &net.Dialer{Timeout: time.Second}, network, addr)
	}}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := (&http.Client{Transport: tr, Timeout: 2 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("%s: %s %s: %v", vm.ID, method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func httpGet(t *testing.T, vm *vmNS, url string) string {
	t.Helper()
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		return nsutil.Dial(ctx, vm.Handle, &net.Dialer{Timeout: time.Second}, network, addr)
	}}
	defer tr.CloseIdleConnections()
	cl := &http.Client{Transport: tr, Timeout: 2 * time.Second}
	resp, err := cl.Get(url)
	if err != nil {
		t.Fatalf("%s: GET %s: %v", vm.ID, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("%s: GET %s: %s %s", vm.ID, url, resp.Status, b)
	}
	return string(b)
}

// pusher accepts connections on the host and remembers them, so that the test
// can push data from the host side (as a streaming gateway does).
type pusher struct {
	mu    sync.Mutex
	conns map[string]net.Conn // by client address
}

func newPusher(t *testing.T, ns *testnet.NS, addr string) *pusher {
	l, err := nsutil.Listen(ns.Handle, "tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	p := &pusher{conns: map[string]net.Conn{}}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			p.conns[c.RemoteAddr().(*net.TCPAddr).IP.String()] = c
			p.mu.Unlock()
			t.Cleanup(func() { c.Close() })
		}
	}()
	return p
}

func (p *pusher) conn(ip string) net.Conn {
	for range 100 {
		p.mu.Lock()
		c := p.conns[ip]
		p.mu.Unlock()
		if c != nil {
			return c
		}
		time.Sleep(5 * time.Millisecond)
	}
	return nil
}

// streamAlive sends a chunk each way and reports whether both arrived.
func streamAlive(client, server net.Conn) error {
	for _, dir := range []struct{ from, to net.Conn }{{client, server}, {server, client}} {
		dir.from.SetWriteDeadline(time.Now().Add(testnet.Timeout))
		if _, err := dir.from.Write([]byte("frame")); err != nil {
			return err
		}
		dir.to.SetReadDeadline(time.Now().Add(testnet.Timeout))
		buf := make([]byte, 5)
		if _, err := io.ReadFull(dir.to, buf); err != nil {
			return err
		}
	}
	return nil
}

// TestIPAccessControlDisconnects: removing the rule that allowed a client
// kills its live stream (conntrack entry dropped, new packets judged and
// dropped in both directions) and leaves other clients' streams alone; an
// associated group without rules denies everyone.
func TestIPAccessControlDisconnects(t *testing.T) {
	tp := newTopo(t)
	p := tp.params()
	p.PrimaryAddr = hostPrimIP + "/16"
	tp.start(tp.config(p))
	push := newPusher(t, tp.host, "0.0.0.0:4172")
	tp.host.EchoUDP("0.0.0.0:4195")
	tp.host.EchoTCP("0.0.0.0:443")

	dial := func(src string) (net.Conn, net.Conn) {
		c, err := tp.client.DialTCP(src, hp(hostMgmtIP, "4172"), time.Second)
		if err != nil {
			t.Fatalf("%s: %v", src, err)
		}
		t.Cleanup(func() { c.Close() })
		s := push.conn(src)
		if s == nil {
			t.Fatalf("%s: no server side", src)
		}
		if err := streamAlive(c, s); err != nil {
			t.Fatalf("%s: stream not working before the change: %v", src, err)
		}
		return c, s
	}
	ca, sa := dial(allowedA)
	cb, sb := dial(allowedB)
	// a UDP "stream" from A (conntrack keeps it established)
	var udpA net.PacketConn
	if err := nsutil.Do(tp.client.Handle, func() (err error) {
		udpA, err = net.ListenPacket("udp4", allowedA+":0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer udpA.Close()
	udpEcho := func() error {
		udpA.SetDeadline(time.Now().Add(testnet.Timeout))
		if _, err := udpA.WriteTo([]byte("x"), &net.UDPAddr{IP: net.ParseIP(hostMgmtIP), Port: 4195}); err != nil {
			return err
		}
		_, _, err := udpA.ReadFrom(make([]byte, 8))
		return err
	}
	if err := udpEcho(); err != nil {
		t.Fatal(err)
	}

	// Remove A's rule: one range leaves the set, nothing else is rewritten.
	p.GroupA = nil
	res, err := tp.r.Apply(context.Background(), tp.config(p))
	if err != nil {
		t.Fatal(err)
	}
	// (A's .20 and B's .21 were one merged range; it shrinks to .21)
	if res.Firewall.RangesRemoved != 1 || res.Firewall.RangesAdded != 1 || res.Firewall.Messages != 2 || res.Firewall.ChainsRewritten != 0 || res.Firewall.ReadKernel {
		t.Fatalf("one-rule removal was not incremental: %+v", res.Firewall)
	}
	var dropped []string
	for _, f := range res.DroppedFlows {
		dropped = append(dropped, f.String())
	}
	if len(res.DroppedFlows) != 2 || !strings.Contains(strings.Join(dropped, " "), allowedA) || strings.Contains(strings.Join(dropped, " "), allowedB) {
		t.Fatalf("dropped flows %v: want A's TCP and UDP flows only", dropped)
	}
	if err := streamAlive(ca, sa); err == nil {
		t.Fatal("A's stream survived the removal of the rule that allowed it")
	}
	// the server pushing alone must not get through either
	sa.SetWriteDeadline(time.Now().Add(testnet.Timeout))
	sa.Write([]byte("frame"))
	ca.SetReadDeadline(time.Now().Add(testnet.Timeout))
	if _, err := ca.Read(make([]byte, 5)); err == nil {
		t.Fatal("host-side push reached the disallowed client")
	}
	if err := udpEcho(); err == nil {
		t.Fatal("A's UDP flow survived")
	}
	if err := streamAlive(cb, sb); err != nil {
		t.Fatalf("B's stream (still allowed) died: %v", err)
	}
	testnet.Check(t, []testnet.Probe{
		{Name: "A after its rule was removed", NS: tp.client, Proto: "tcp", Src: allowedA, Dst: hp(hostMgmtIP, "443")},
		{Name: "B still allowed", NS: tp.client, Proto: "tcp", Src: allowedB, Dst: hp(hostMgmtIP, "443"), Allowed: true},
	})

	// An associated group with no rules: with only it associated, all denied.
	p.Associated = []string{"wsipg-empty"}
	res, err = tp.r.Apply(context.Background(), tp.config(p))
	if err != nil {
		t.Fatal(err)
	}
	if err := streamAlive(cb, sb); err == nil {
		t.Fatal("B's stream survived association of an empty group")
	}
	testnet.Check(t, []testnet.Probe{
		{Name: "B after empty group", NS: tp.client, Proto: "tcp", Src: allowedB, Dst: hp(hostMgmtIP, "443")},
		{Name: "A after empty group", NS: tp.client, Proto: "tcp", Src: allowedA, Dst: hp(hostMgmtIP, "443")},
	})
	// No group associated: everybody.
	p.Associated = nil
	if _, err := tp.r.Apply(context.Background(), tp.config(p)); err != nil {
		t.Fatal(err)
	}
	testnet.Check(t, []testnet.Probe{
		{Name: "denied client, no group associated", NS: tp.client, Proto: "tcp", Src: denied, Dst: hp(hostMgmtIP, "443"), Allowed: true},
	})
}

// TestBadConfigChangesNothing: each bad config is an error naming the field,
// and the ruleset, links and state file stay exactly as they were.
func TestBadConfigChangesNothing(t *testing.T) {
	tp := newTopo(t)
	p := tp.params()
	p.PrimaryAddr = hostPrimIP + "/16"
	good := tp.config(p)
	tp.start(good)
	snapshot := func() string {
		rs, _ := tp.host.Exec(nil, "nft", "list", "ruleset")
		// links: configuration only (carrier and timers move on their own)
		obs, err := tp.r.links.Observe("eth0", "eth1")
		if err != nil {
			t.Fatal(err)
		}
		var lk strings.Builder
		for _, l := range obs.Links {
			fmt.Fprintf(&lk, "%+v\n", l)
		}
		rt, _ := tp.host.Exec(nil, "ip", "route")
		st, _ := os.ReadFile(tp.stateFile)
		return rs + lk.String() + rt + string(st)
	}
	before := snapshot()
	type bad struct {
		name, field string
		mut         func(*cfgParams)
	}
	cases := []bad{
		{"invalid CIDR", "ipGroups[0].rules[0].source", func(p *cfgParams) { p.GroupA = []string{"203.0.113.300/32"} }},
		{"port 0", "securityGroups[1].ingress[0].fromPort", func(p *cfgParams) { p.SGPort = 0 }},
		{"port above 65535", "host.adminPort", func(p *cfgParams) { p.AdminPort = 70000 }},
		{"overlapping management range (candidates)", "managementNetwork.candidates", func(p *cfgParams) {
			p.Candidates = "10.0.0.0/16"
		}},
		{"overlapping management range (chosen)", "managementNetwork", func(p *cfgParams) { p.PrimaryAddr = "198.19.7.5/16" }},
		{"unknown interface", "interfaces.primary.name", func(p *cfgParams) { p.PrimaryName = "eth9" }},
	}
	for _, bc := range cases {
		q := tp.params()
		q.PrimaryAddr = hostPrimIP + "/16"
		bc.mut(&q)
		c, err := config.Decode(tp.render(q))
		if err != nil {
			t.Fatalf("%s: decode: %v", bc.name, err)
		}
		_, err = tp.r.Apply(context.Background(), c)
		if err == nil {
			t.Errorf("%s: applied", bc.name)
			continue
		}
		if !strings.Contains(err.Error(), bc.field+":") {
			t.Errorf("%s: error does not name %s: %v", bc.name, bc.field, err)
		}
		var ue *links.UnknownInterfaceError
		if bc.name == "unknown interface" && !errors.As(err, &ue) {
			t.Errorf("unknown interface: %T %v", err, err)
		}
		if after := snapshot(); after != before {
			t.Errorf("%s: the kernel or state changed:\n%s", bc.name, lineDiff(before, after))
		}
	}
	// write-once: reordering the candidates keeps the chosen range
	q := tp.params()
	q.PrimaryAddr = hostPrimIP + "/16"
	q.Candidates = "172.31.0.0/16, 198.19.0.0/16"
	res, err := tp.r.Apply(context.Background(), tp.config(q))
	if err != nil || res.ManagementRange.String() != "198.19.0.0/16" || res.Changed {
		t.Fatalf("reordered candidates: %+v %v", res, err)
	}
}
