package nicroles

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
)

func nic(name, mac string, index int, carrier bool) NIC {
	m, _ := net.ParseMAC(mac)
	return NIC{Name: name, MAC: m, Index: index, Carrier: carrier}
}

var three = []NIC{
	nic("eth0", "52:54:00:aa:00:00", 2, true),
	nic("eth1", "52:54:00:aa:00:01", 3, true),
	nic("eth2", "52:54:00:aa:00:02", 4, false),
}

// leaseOn is a FirstLease that gives the first of nics named in leased (pure logic: the
// real probe is TestDHCPProbe).
func leaseOn(calls *int, leased ...string) func(context.Context, []NIC) (NIC, error) {
	return func(_ context.Context, nics []NIC) (NIC, error) {
		*calls++
		for _, n := range nics {
			for _, l := range leased {
				if n.Name == l {
					return n, nil
				}
			}
		}
		return NIC{}, errors.New("no lease")
	}
}

func TestResolve(t *testing.T) {
	ctx := context.Background()
	bootif, _ := ParseBootIF("01-52-54-00-AA-00-01")
	for _, tc := range []struct {
		name         string
		in           Input
		mgmt, prim   string
		rule, why    string
		probes       int
		problem      string
		primRuleWant string
	}{
		{name: "BOOTIF", in: Input{NICs: three, BootIF: bootif}, mgmt: "eth1", prim: "eth0", rule: RuleBootIF, why: "network-booted from it (BOOTIF)", primRuleWant: RuleOther},
		{name: "DHCP", in: Input{NICs: three}, mgmt: "eth0", prim: "eth1", rule: RuleDHCP, probes: 1, primRuleWant: RuleOther},
		{name: "DHCP on the second", in: Input{NICs: three}, mgmt: "eth1", prim: "eth0", rule: RuleDHCP, probes: 1},
		{name: "BOOTIF of no NIC", in: Input{NICs: three, BootIF: net.HardwareAddr{2, 0, 0, 0, 0, 9}}, mgmt: "eth0", prim: "eth1", rule: RuleDHCP, probes: 1, problem: "BOOTIF=02:00:00:00:00:09"},
		{name: "pinned by MAC beats BOOTIF", in: Input{NICs: three, BootIF: bootif, Management: Pin{MAC: "52:54:00:AA:00:02", By: "the host config"}}, mgmt: "eth2", prim: "eth0", rule: RulePinned, why: "pinned by MAC 52:54:00:AA:00:02 in the host config"},
		{name: "pinned primary leaves management to the rules", in: Input{NICs: three, Primary: Pin{Name: "eth0", By: "the per-host overrides"}}, mgmt: "eth1", prim: "eth0", rule: RuleDHCP, probes: 1, primRuleWant: RulePinned},
		{name: "pin of a missing NIC", in: Input{NICs: three, BootIF: bootif, Management: Pin{MAC: "52:54:00:12:34:01", By: "the host config"}}, mgmt: "eth1", prim: "eth0", rule: RuleBootIF, problem: "pins the management NIC to MAC 52:54:00:12:34:01"},
		{name: "name and MAC disagree", in: Input{NICs: three, Management: Pin{Name: "eth0", MAC: "52:54:00:aa:00:01", By: "the host config"}}, mgmt: "eth0", rule: RuleDHCP, probes: 1, problem: "eth0 has MAC 52:54:00:aa:00:00"},
		{name: "no lease anywhere", in: Input{NICs: three}, mgmt: "eth0", prim: "eth1", rule: RuleFallback, probes: 1, problem: "no lease"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			calls := 0
			leased := []string{"eth0", "eth1"}
			switch tc.name {
			case "DHCP on the second":
				leased = []string{"eth1"}
			case "no lease anywhere":
				leased = nil
			}
			tc.in.FirstLease = leaseOn(&calls, leased...)
			r := Resolve(ctx, tc.in)
			if r.Management == nil || r.Management.NIC.Name != tc.mgmt || r.Management.Rule != tc.rule {
				t.Fatalf("management %+v, want %s by %s", r.Management, tc.mgmt, tc.rule)
			}
			if tc.why != "" && r.Management.Why != tc.why {
				t.Errorf("why %q, want %q", r.Management.Why, tc.why)
			}
			if tc.prim != "" && (r.Primary == nil || r.Primary.NIC.Name != tc.prim) {
				t.Errorf("primary %+v, want %s", r.Primary, tc.prim)
			}
			if tc.primRuleWant != "" && r.Primary.Rule != tc.primRuleWant {
				t.Errorf("primary rule %s, want %s", r.Primary.Rule, tc.primRuleWant)
			}
			if calls != tc.probes {
				t.Errorf("DHCP probed %d times, want %d", calls, tc.probes)
			}
			p := strings.Join(r.Problems, "; ")
			if (tc.problem == "") != (p == "") || !strings.Contains(p, tc.problem) {
				t.Errorf("problems %q, want %q", p, tc.problem)
			}
			if r.Primary != nil && r.Primary.NIC.Name == r.Management.NIC.Name {
				t.Errorf("one NIC for both roles: %s", r.Primary.NIC.Name)
			}
		})
	}
	// The console's lines.
	r := Resolve(ctx, Input{NICs: three, BootIF: bootif})
	lines := strings.Join(r.Lines(), "\n")
	for _, want := range []string{
		"eth1 52:54:00:aa:00:01: management - network-booted from it (BOOTIF)",
		"eth0 52:54:00:aa:00:00: primary - the first other NIC with carrier",
		"eth2 52:54:00:aa:00:02: unused (no carrier)",
	} {
		if !strings.Contains(lines, want) {
			t.Errorf("lines lack %q:\n%s", want, lines)
		}
	}
	// One NIC: management, and a problem for primary; no NIC at all: a problem.
	r = Resolve(ctx, Input{NICs: three[:1], FirstLease: leaseOn(new(int), "eth0")})
	if r.Management == nil || r.Primary != nil || !strings.Contains(strings.Join(r.Problems, ""), "no NIC besides") {
		t.Errorf("one NIC: %+v %+v %q", r.Management, r.Primary, r.Problems)
	}
	if r := Resolve(ctx, Input{}); r.Management != nil || len(r.Problems) == 0 {
		t.Errorf("no NIC: %+v", r)
	}
}

func TestParseBootIF(t *testing.T) {
	for in, want := range map[string]string{
		"52:54:00:12:34:56":    "52:54:00:12:34:56",
		"52-54-00-12-34-56":    "52:54:00:12:34:56",
		"01-52-54-00-12-34-56": "52:54:00:12:34:56",
		"01-AA-BB-CC-DD-EE-FF": "aa:bb:cc:dd:ee:ff",
	} {
		if m, err := ParseBootIF(in); err != nil || m.String() != want {
			t.Errorf("%s: %v %v", in, m, err)
		}
	}
	for _, in := range []string{"", "20-52-54-00-12-34-56", "52:54:00:12:34", "${net0/mac}", "01-52-54-00-12-34-56-78-9a"} {
		if m, err := ParseBootIF(in); err == nil {
			t.Errorf("%q accepted as %v", in, m)
		}
	}
}

// FuzzParseBootIF: the command line is anyone's who controls the boot loader; BOOTIF
// never panics and what it accepts is one Ethernet MAC.
func FuzzParseBootIF(f *testing.F) {
	for _, s := range []string{"52:54:00:12:34:56", "01-52-54-00-12-34-56", "20-00", "", "::::::", "01-01-01-01-01-01-01"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParseBootIF(s)
		if err == nil && len(m) != 6 {
			t.Fatalf("%q gave %v", s, m)
		}
	})
}
