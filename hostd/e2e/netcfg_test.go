package e2e

import (
	"context"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/workspaces"
	"github.com/aws/aws-sdk-go-v2/service/workspaces/types"

	"deskhost/hostd/agent"
	"deskhost/hostd/hostdtest"
	"deskhost/hostd/virt"
	"deskhost/internal/runpaths"
	"deskhost/internal/testenv"
	"deskhost/netcfg/reconcile"
)

// TestNetcfgManagesWorkSpaceNetwork runs hostd as on an appliance, where netcfg owns the
// network: in a namespace of the test's own with two NICs (veth pairs), with libvirtd in
// the same namespace. A WorkSpace's NICs attach to the taps netcfg makes (wsm-/wsp-), its
// guest leases a management address from the DHCP server on br-mgmt through the tap, the
// bridge and the firewall, and on terminate the taps and the WorkSpace's rules go.
func TestNetcfgManagesWorkSpaceNetwork(t *testing.T) {
	testenv.Root(t)
	sfx := hostdtest.RandHex(3)
	ns, peer := "dhn"+sfx, "dhc"+sfx
	run := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	for _, n := range []string{ns, peer} {
		run("ip", "netns", "add", n)
		n := n
		t.Cleanup(func() { exec.Command("ip", "netns", "del", n).Run() })
	}
	// The host's two NICs, each wired to a peer namespace (the clients' side and the LAN).
	run("ip", "link", "add", "mgmt0", "netns", ns, "type", "veth", "peer", "name", "cmgmt", "netns", peer)
	run("ip", "link", "add", "pri0", "netns", ns, "type", "veth", "peer", "name", "lan0", "netns", peer)
	run("ip", "-n", ns, "link", "set", "lo", "up")
	for _, l := range []string{"cmgmt", "lan0"} {
		run("ip", "-n", peer, "link", "set", l, "up")
	}
	run("ip", "-n", peer, "addr", "add", "10.91.0.2/24", "dev", "cmgmt")
	run("ip", "-n", peer, "addr", "add", "10.92.0.2/24", "dev", "lan0")

	// libvirtd in the namespace: qemu opens the taps there.
	lvroot := filepath.Join("/run/deskhost", "lv-"+sfx)
	libvirtrun := filepath.Join(testenv.RepoRoot(), "bin", "libvirtrun")
	if _, err := os.Stat(libvirtrun); err != nil {
		testenv.Missing(t, "bin/libvirtrun is not built (make build)")
	}
	run(libvirtrun, "start", "--root", lvroot, "--netns", ns)
	t.Cleanup(func() {
		exec.Command(libvirtrun, "stop", "--root", lvroot).Run()
		os.RemoveAll(lvroot)
	})

	h := newHostWith(t, hostOptions{
		libvirtSocket: filepath.Join(lvroot, "run", "libvirt-sock"),
		netns:         ns,
		network: `    stateFile: STATE/netcfg-state.json
    interfaces:
      management: {name: mgmt0, addresses: [10.91.0.1/24]}
      primary: {name: pri0, addresses: [10.92.0.1/24]}
    primaryNetwork:
      dhcp: {subnet: 10.92.0.0/24, pool: 10.92.0.100-10.92.0.150, router: 10.92.0.2}
`,
	})
	cfg, _ := os.ReadFile(h.config)
	os.WriteFile(h.config, []byte(strings.ReplaceAll(string(cfg), "STATE", h.dir)), 0o600)
	h.start()

	id := h.create("dave")[0]
	h.waitState(id, types.WorkspaceStateAvailable, boot)
	mgmtTap, priTap, err := reconcile.TapNames(id)
	if err != nil {
		t.Fatal(err)
	}
	mgmtMAC, priMAC, _ := reconcile.MACs(id)

	// libvirt attached the guest's NICs to netcfg's taps, management first.
	d, err := h.conn.XML(id)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{mgmtTap, priTap} {
		n := d.Devices.Interfaces[i]
		if n.Target == nil || n.Target.Dev != want || n.Source == nil || n.Source.Ethernet == nil {
			t.Errorf("NIC %d: %+v %+v, want the tap %s", i, n.Source, n.Target, want)
		}
	}
	// netcfg bridged the taps: wsm- on br-mgmt (isolated), wsp- on br-primary.
	if out := run("ip", "-n", ns, "-d", "link", "show", mgmtTap); !strings.Contains(out, "master br-mgmt") || !strings.Contains(out, "isolated on") {
		t.Errorf("%s: %s", mgmtTap, out)
	}
	if out := run("ip", "-n", ns, "link", "show", priTap); !strings.Contains(out, "master br-primary") {
		t.Errorf("%s: %s", priTap, out)
	}
	chains := "ws_" + strings.TrimPrefix(id, "ws-") + "_" // netcfg's per-WorkSpace chains
	if out := run("ip", "netns", "exec", ns, "nft", "list", "table", "inet", "deskhost"); !strings.Contains(out, chains+"m_to") || !strings.Contains(out, chains+"p_out") {
		t.Errorf("the deskhost table has no chains for %s:\n%s", id, out)
	}

	// The guest leased a management address from br-mgmt's DHCP server, on eth0, whose MAC
	// is the management tap's.
	// One short connection per look: the agent's channel takes one client at a time, and
	// hostd's health checks need it too.
	// A look that finds the channel busy (a health check holding it, on a loaded machine)
	// is tried again until the deadline.
	status := func() (*agent.Status, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		a, err := agent.Dial(ctx, runpaths.AgentSocket(h.dir, id))
		if err != nil {
			return nil, err
		}
		defer a.Close()
		return a.Status(ctx)
	}
	var st *agent.Status
	deadline := time.Now().Add(2 * time.Minute)
	for {
		var err error
		st, err = status()
		if err == nil && st.ManagementAddress != "" {
			break
		}
		if time.Now().After(deadline) {
			serial, _ := os.ReadFile(runpaths.SerialLog(h.dir, id))
			t.Fatalf("the guest never leased a management address: %+v (last error: %v)\nserial:\n%s", st, err, hostdtest.Tail(string(serial), 3000))
		}
		time.Sleep(500 * time.Millisecond)
	}
	addr, err := netip.ParsePrefix(st.ManagementAddress)
	if err != nil {
		t.Fatal(err)
	}
	state, _ := os.ReadFile(filepath.Join(h.dir, "netcfg-state.json"))
	if !strings.Contains(string(state), addr.Addr().String()) {
		t.Errorf("guest address %s is not the one netcfg recorded for it: %s", addr, state)
	}
	macs := map[string]string{}
	for _, i := range st.Interfaces {
		macs[i.Name] = i.MAC
	}
	if macs["eth0"] != mgmtMAC.String() || macs["eth1"] != priMAC.String() {
		t.Errorf("guest NICs %v; want eth0=%s (management) eth1=%s (primary)", macs, mgmtMAC, priMAC)
	}
	t.Logf("guest %s leased %s on eth0 (%s)", id, addr, mgmtMAC)

	// The primary NIC: hostd allocated an address from primaryNetwork.dhcp's pool,
	// DescribeWorkspaces returns it, and the guest's eth1 leased it from netcfg's DHCP
	// service on br-primary (through the tap, the bridge and the anti-spoofing rules).
	d2, err := h.client().DescribeWorkspaces(context.Background(), &workspaces.DescribeWorkspacesInput{WorkspaceIds: []string{id}})
	if err != nil || len(d2.Workspaces) != 1 {
		t.Fatalf("describe: %v", err)
	}
	ip := aws.ToString(d2.Workspaces[0].IpAddress)
	if ip != "10.92.0.100" {
		t.Fatalf("DescribeWorkspaces IpAddress %q, want the pool's first, 10.92.0.100", ip)
	}
	eth1 := func(st *agent.Status) []string {
		for _, i := range st.Interfaces {
			if i.Name == "eth1" {
				return i.Addresses
			}
		}
		return nil
	}
	deadline = time.Now().Add(2 * time.Minute)
	for {
		st, err = status()
		if err == nil && slices.Contains(eth1(st), ip+"/24") {
			break
		}
		if time.Now().After(deadline) {
			serial, _ := os.ReadFile(runpaths.SerialLog(h.dir, id))
			t.Fatalf("the guest's eth1 never had %s/24: %+v (last error: %v)\nserial:\n%s", ip, st, err, hostdtest.Tail(string(serial), 3000))
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("guest %s has %s on eth1 (%s), as DescribeWorkspaces says", id, ip, priMAC)

	// MigrateWorkspace through the real binary: the target has a new id and a new address,
	// which its eth1 leases; the source is TERMINATED, its taps gone, its address free.
	bctx := context.Background()
	nb, err := h.client().CreateWorkspaceBundle(bctx, &workspaces.CreateWorkspaceBundleInput{BundleName: aws.String("Value-50"),
		BundleDescription: aws.String("1 vCPU and 50 GB user"), ImageId: aws.String(imageID),
		ComputeType: &types.ComputeType{Name: types.ComputeValue}, UserStorage: &types.UserStorage{Capacity: aws.String("50")},
		RootStorage: &types.RootStorage{Capacity: aws.String("80")}})
	if err != nil {
		t.Fatal(err)
	}
	mig, err := h.client().MigrateWorkspace(bctx, &workspaces.MigrateWorkspaceInput{SourceWorkspaceId: aws.String(id), BundleId: nb.WorkspaceBundle.BundleId})
	if err != nil {
		t.Fatal(err)
	}
	src, oldMgmtTap, oldPriTap := id, mgmtTap, priTap
	id = aws.ToString(mig.TargetWorkspaceId)
	h.waitState(id, types.WorkspaceStateAvailable, boot)
	h.waitState(src, types.WorkspaceStateTerminated, time.Minute)
	d3, err := h.client().DescribeWorkspaces(bctx, &workspaces.DescribeWorkspacesInput{WorkspaceIds: []string{id}})
	if err != nil || len(d3.Workspaces) != 1 {
		t.Fatalf("describe the target: %v", err)
	}
	newIP := aws.ToString(d3.Workspaces[0].IpAddress)
	if newIP == "" || newIP == ip {
		t.Fatalf("the migrated WorkSpace's IpAddress is %q; the source's was %s: want a new one", newIP, ip)
	}
	deadline = time.Now().Add(2 * time.Minute)
	for {
		st, err = status()
		if err == nil && slices.Contains(eth1(st), newIP+"/24") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the migrated guest's eth1 never had %s/24: %+v (last error: %v)", newIP, st, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	waitFor(t, "the source's taps removed", 30*time.Second, func() bool {
		return exec.Command("ip", "-n", ns, "link", "show", oldMgmtTap).Run() != nil &&
			exec.Command("ip", "-n", ns, "link", "show", oldPriTap).Run() != nil
	})
	t.Logf("migrated %s (%s) to %s (%s): eth1 leased the new address", src, ip, id, newIP)
	if mgmtTap, priTap, err = reconcile.TapNames(id); err != nil {
		t.Fatal(err)
	}
	chains = "ws_" + strings.TrimPrefix(id, "ws-") + "_"

	// The catalog's IP access control groups are netcfg's client sets: a group associated
	// with the directory reaches nftables, and a revoked rule leaves it, without a restart.
	nft := func() string { return run("ip", "netns", "exec", ns, "nft", "list", "table", "inet", "deskhost") }
	ctx := context.Background()
	g, err := h.client().CreateIpGroup(ctx, &workspaces.CreateIpGroupInput{GroupName: aws.String("office"),
		UserRules: []types.IpRuleItem{{IpRule: aws.String("203.0.113.0/24")}, {IpRule: aws.String("198.51.100.7")}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.client().AssociateIpGroups(ctx, &workspaces.AssociateIpGroupsInput{DirectoryId: aws.String(directoryID), GroupIds: []string{*g.GroupId}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the group's ranges in nftables", 5*time.Second, func() bool {
		out := nft()
		return strings.Contains(out, "203.0.113.0/24") && strings.Contains(out, "198.51.100.7")
	})
	start := time.Now()
	if _, err := h.client().RevokeIpRules(ctx, &workspaces.RevokeIpRulesInput{GroupId: g.GroupId, UserRules: []string{"203.0.113.0/24"}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the revoked range gone from nftables", 5*time.Second, func() bool {
		out := nft()
		return !strings.Contains(out, "203.0.113.0/24") && strings.Contains(out, "198.51.100.7")
	})
	t.Logf("revoked rule → gone from netcfg's nftables sets in %v", time.Since(start).Round(time.Millisecond))

	// Terminate: the taps and the WorkSpace's rules go with it.
	if out, err := h.client().TerminateWorkspaces(context.Background(), &workspaces.TerminateWorkspacesInput{
		TerminateWorkspaceRequests: []types.TerminateRequest{{WorkspaceId: aws.String(id)}},
	}); err != nil || len(out.FailedRequests) > 0 {
		t.Fatal(err, out)
	}
	h.waitState(id, types.WorkspaceStateTerminated, time.Minute)
	waitFor(t, "taps removed", 30*time.Second, func() bool {
		return exec.Command("ip", "-n", ns, "link", "show", mgmtTap).Run() != nil &&
			exec.Command("ip", "-n", ns, "link", "show", priTap).Run() != nil
	})
	if out := run("ip", "netns", "exec", ns, "nft", "list", "table", "inet", "deskhost"); strings.Contains(out, chains) {
		t.Errorf("chains for %s remain after terminate", id)
	}
	if st, _ := h.libvirtView(id); st != virt.Missing {
		t.Errorf("domain %s after terminate", st)
	}
}
