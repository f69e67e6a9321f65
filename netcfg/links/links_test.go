package links

import (
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"testing"

	"deskhost/netcfg/config"
	"deskhost/netcfg/internal/testnet"
)

func TestLinksApplyIdempotent(t *testing.T) {
	testnet.RequireRoot(t)
	ns := testnet.New(t, "links")
	peer := testnet.New(t, "peer")
	testnet.Veth(t, ns, "eth0", peer, "p0")
	testnet.Veth(t, ns, "eth1", peer, "p1")
	// a stale tap from an earlier WorkSpace and a foreign bridge port
	ns.IP("tuntap add dev wsm-stale00001 mode tap")
	testnet.Veth(t, ns, "foreign0", peer, "p2")

	m, err := Open(ns.Handle, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()

	if _, err := m.Resolve(config.NICModel{Field: "interfaces.primary", Name: "eth7"}); err == nil || !strings.Contains(err.Error(), "interfaces.primary.name: unknown interface") {
		t.Fatalf("unknown name: %v", err)
	}
	mac := ns.MAC("eth1")
	l, err := m.Resolve(config.NICModel{Field: "interfaces.primary", MAC: mac})
	if err != nil || l.Attrs().Name != "eth1" {
		t.Fatalf("resolve by MAC: %v %v", l, err)
	}
	var ue *UnknownInterfaceError
	if _, err := m.Resolve(config.NICModel{Field: "interfaces.primary", MAC: append(mac[:5:5], mac[5]^1)}); !errors.As(err, &ue) || ue.Field != "interfaces.primary.mac" {
		t.Fatalf("unknown MAC: %v", err)
	}

	d := Desired{
		Mgmt:          NIC{Link: "eth0", Static: true, Addrs: []netip.Prefix{netip.MustParsePrefix("203.0.113.10/24")}, Gateway: netip.MustParseAddr("203.0.113.1"), MTU: 1400},
		PrimaryUplink: "eth1",
		Primary:       NIC{Static: true, Addrs: []netip.Prefix{netip.MustParsePrefix("10.0.0.5/16")}},
		MgmtBridge:    NIC{Addrs: []netip.Prefix{netip.MustParsePrefix("198.19.0.1/16"), netip.MustParsePrefix("169.254.169.254/32")}, MTU: 1500},
		Taps: []Tap{
			{Name: "wsm-abc0000001", Bridge: MgmtBridge, Isolated: true},
			{Name: "wsp-abc0000001", Bridge: PrimaryBridge},
		},
	}
	// foreign0 sits in br-primary before netcfg runs: create the bridge first
	ns.IP("link add br-primary type bridge")
	ns.IP("link set foreign0 master br-primary")

	drift, err := m.Check(d, nil)
	if err != nil || len(drift) == 0 {
		t.Fatalf("check before apply: %v %v", drift, err)
	}
	ch, err := m.Apply(d, nil)
	if err != nil {
		t.Fatal(err)
	}
	joined := strings.Join(ch, "\n")
	for _, want := range []string{"create bridge br-mgmt", "create tap wsm-abc0000001", "delete stale tap wsm-stale00001", "release foreign port foreign0 from br-primary", "enable br_netfilter calls on br-primary"} {
		if !strings.Contains(joined, want) {
			t.Errorf("changes lack %q:\n%s", want, joined)
		}
	}
	out := ns.IP("-d link show wsm-abc0000001")
	if !strings.Contains(out, "tap") || !strings.Contains(out, "master br-mgmt") || !strings.Contains(out, "isolated on") {
		t.Fatalf("tap: %s", out)
	}
	if out := ns.IP("-d link show wsp-abc0000001"); !strings.Contains(out, "master br-primary") || !strings.Contains(out, "isolated off") {
		t.Fatalf("primary tap: %s", out)
	}
	if out := ns.IP("addr show br-primary"); !strings.Contains(out, "10.0.0.5/16") {
		t.Fatalf("br-primary: %s", out)
	}
	if out := ns.IP("link show br-primary"); !strings.Contains(out, mac.String()) {
		t.Fatalf("br-primary does not carry the primary NIC's MAC %s: %s", mac, out)
	}
	if out := ns.IP("route show default"); !strings.Contains(out, "via 203.0.113.1 dev eth0") {
		t.Fatalf("default route: %s", out)
	}

	// second apply: nothing to do; check agrees
	if ch, err := m.Apply(d, nil); err != nil || len(ch) != 0 {
		t.Fatalf("second apply changed %v %v", ch, err)
	}
	if drift, err := m.Check(d, nil); err != nil || len(drift) != 0 {
		t.Fatalf("drift after apply: %v %v", drift, err)
	}
	// a WorkSpace leaves: its taps go
	d.Taps = nil
	ch, err = m.Apply(d, nil)
	if err != nil || len(ch) != 2 {
		t.Fatalf("removing taps: %v %v", ch, err)
	}
}

func TestSetLease(t *testing.T) {
	testnet.RequireRoot(t)
	ns := testnet.New(t, "lease")
	peer := testnet.New(t, "leasep")
	testnet.Veth(t, ns, "eth0", peer, "p0")
	m, err := Open(ns.Handle, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ns.IP("addr add 192.0.2.9/24 dev eth0")
	ch, err := m.SetLease("eth0", Lease{Addr: netip.MustParsePrefix("10.1.0.5/16"), Router: netip.MustParseAddr("10.1.0.1"), MTU: 1400, Lifetime: 3600 * 1e9}, 100)
	if err != nil {
		t.Fatal(err)
	}
	out := ns.IP("addr show eth0")
	if !strings.Contains(out, "10.1.0.5/16") || strings.Contains(out, "192.0.2.9") || !strings.Contains(out, "valid_lft 3600sec") && !strings.Contains(out, "valid_lft 359") {
		t.Fatalf("after lease (%v):\n%s", ch, out)
	}
	if out := ns.IP("route show default"); !strings.Contains(out, "via 10.1.0.1 dev eth0") || !strings.Contains(out, "metric 100") {
		t.Fatalf("default route: %s", out)
	}
	// renewing the same lease is not a change
	ch, err = m.SetLease("eth0", Lease{Addr: netip.MustParsePrefix("10.1.0.5/16"), Router: netip.MustParseAddr("10.1.0.1"), MTU: 1400, Lifetime: 3600 * 1e9}, 100)
	if err != nil || len(ch) != 0 {
		t.Fatalf("renewal: %v %v", ch, err)
	}
}
