package config

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

const good = `
stateFile: /var/lib/netcfg/state.json
interfaces:
  management:
    name: eth0
    addresses: [203.0.113.10/24]
    gateway: 203.0.113.1
  primary:
    mac: "02:00:00:00:00:02"
    addresses: [10.0.0.5/16]
host:
  adminPort: 8443
  fleetPorts: [7443, 2379, 2380]
primaryNetwork:
  ipv6: drop
  dhcp: {subnet: 10.0.0.0/16, pool: 10.0.3.0-10.0.3.254, router: 10.0.0.1}
ipGroups:
  - id: wsipg-corp
    rules:
      - {source: 198.51.100.0/24, description: HQ}
      - {source: 192.0.2.7}
directories:
  - id: d-926720fc18
    ipGroups: [wsipg-corp]
    controllers: [10.0.1.10]
securityGroups:
  - id: sg-web
    presets: [internet]
    ingress:
      - {protocol: tcp, fromPort: 3389, cidr: 10.0.0.0/16, description: RDP}
workspaces:
  - id: ws-a1b2c3d4e5
    directory: d-926720fc18
    securityGroups: [sg-web]
    primaryAddress: 10.0.2.11
`

func mustModel(t *testing.T, y string) *Model {
	t.Helper()
	c, err := Decode([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	m, err := Validate(c)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestGood(t *testing.T) {
	m := mustModel(t, good)
	if m.BrokerPort != 443 || m.AdminPort != 8443 || fmt.Sprint(m.FleetPorts) != "[7443 2379 2380]" {
		t.Fatalf("ports %d %d %v", m.BrokerPort, m.AdminPort, m.FleetPorts)
	}
	if g := m.Groups["wsipg-corp"]; g.Set.String() != "192.0.2.7, 198.51.100.0/24" {
		t.Fatalf("group set %s", g.Set)
	}
	ws := m.WorkSpaces[0]
	if ws.MgmtTap != "wsm-a1b2c3d4e5" || ws.SecurityGroups[0] != "d-926720fc18_workspacesMembers" || ws.SecurityGroups[1] != "sg-web" {
		t.Fatalf("workspace %+v", ws)
	}
	mem := m.SGs["d-926720fc18_workspacesMembers"]
	if len(mem.Egress) != len(DirectoryControllerRules) {
		t.Fatalf("members group has %d egress rules", len(mem.Egress))
	}
	for _, r := range mem.Egress {
		if r.From == 80 || r.From == 443 {
			t.Fatalf("members group must not open internet egress: %+v", r)
		}
	}
	if _, ok := m.SGs["d-926720fc18_controllers"]; !ok {
		t.Fatal("controllers group missing")
	}
	if len(m.Candidates) != 3 || m.Candidates[0].String() != "198.19.0.0/16" {
		t.Fatalf("candidates %v", m.Candidates)
	}
	if d := m.PrimaryDHCP; d == nil || d.Subnet.String() != "10.0.0.0/16" || d.Pool.String() != "10.0.3.0-10.0.3.254" ||
		d.Router.String() != "10.0.0.1" || d.ServerIP.String() != "10.0.0.5" {
		t.Fatalf("primary DHCP %+v", d)
	}
	if ws.PrimaryAddr.String() != "10.0.2.11" || m.PrimaryIPv6 {
		t.Fatalf("primary address %s, IPv6 %v", ws.PrimaryAddr, m.PrimaryIPv6)
	}
	// both are optional: no address known, IPv6 dropped
	m = mustModel(t, strings.NewReplacer("    primaryAddress: 10.0.2.11\n", "", "primaryNetwork:\n  ipv6: drop\n  dhcp: {subnet: 10.0.0.0/16, pool: 10.0.3.0-10.0.3.254, router: 10.0.0.1}\n", "").Replace(good))
	if m.WorkSpaces[0].PrimaryAddr.IsValid() || m.PrimaryIPv6 || m.PrimaryDHCP != nil {
		t.Fatalf("defaults: primary address %s, IPv6 %v", m.WorkSpaces[0].PrimaryAddr, m.PrimaryIPv6)
	}
	if m = mustModel(t, strings.Replace(good, "ipv6: drop", "ipv6: unfiltered", 1)); !m.PrimaryIPv6 {
		t.Fatal("ipv6: unfiltered not taken")
	}
}

func TestExampleConfigValid(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	path := filepath.Join(filepath.Dir(file), "..", "..", "configs", "netcfg-example.yaml")
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Validate(c); err != nil {
		t.Fatal(err)
	}
}

// TestBadConfigs: every error names its field.
func TestBadConfigs(t *testing.T) {
	cases := []struct{ name, from, to, field string }{
		{"invalid CIDR", "198.51.100.0/24", "198.51.100.300/24", "ipGroups[0].rules[0].source"},
		{"host bits", "198.51.100.0/24", "198.51.100.1/24", "ipGroups[0].rules[0].source"},
		{"ipv6 source", "192.0.2.7}", "2001:db8::1}", "ipGroups[0].rules[1].source"},
		{"port 0", "fromPort: 3389", "fromPort: 0", "securityGroups[0].ingress[0].fromPort"},
		{"port too big", "fromPort: 3389", "fromPort: 70000", "securityGroups[0].ingress[0].fromPort"},
		{"admin port too big", "adminPort: 8443", "adminPort: 65536", "host.adminPort"},
		{"admin port streaming", "adminPort: 8443", "adminPort: 4172", "host.adminPort"},
		{"fleet port 0", "[7443, 2379, 2380]", "[7443, 0, 2380]", "host.fleetPorts[1]"},
		{"fleet port too big", "[7443, 2379, 2380]", "[7443, 2379, 70000]", "host.fleetPorts[2]"},
		{"fleet port streaming", "[7443, 2379, 2380]", "[4172]", "host.fleetPorts[0]"},
		{"fleet port is the admin port", "[7443, 2379, 2380]", "[7443, 8443]", "host.fleetPorts[1]"},
		{"fleet port twice", "[7443, 2379, 2380]", "[7443, 2379, 7443]", "host.fleetPorts[2]"},
		{"bad address", "10.0.0.5/16", "10.0.0.5/40", "interfaces.primary.addresses[0]"},
		{"bad mac", `"02:00:00:00:00:02"`, `"02:00:00:00:00"`, "interfaces.primary.mac"},
		{"gateway outside", "gateway: 203.0.113.1", "gateway: 10.9.9.9", "interfaces.management.gateway"},
		{"unknown group", "ipGroups: [wsipg-corp]", "ipGroups: [wsipg-nope]", "directories[0].ipGroups[0]"},
		{"unknown directory", "directory: d-926720fc18", "directory: d-nope", "workspaces[0].directory"},
		{"unknown sg", "securityGroups: [sg-web]", "securityGroups: [sg-nope]", "workspaces[0].securityGroups[0]"},
		{"bad ws id", "id: ws-a1b2c3d4e5", "id: ws-THIS_IS_BAD", "workspaces[0].id"},
		{"bad protocol", "protocol: tcp", "protocol: sctp", "securityGroups[0].ingress[0].protocol"},
		{"overlapping management range", "[10.0.0.5/16]", "[198.19.0.5/16]\n    routes: [{destination: 192.168.0.0/16, via: 198.19.0.1}, {destination: 172.16.0.0/12, via: 198.19.0.1}]", "managementNetwork.candidates"},
		{"relative state file", "/var/lib/netcfg/state.json", "state.json", "stateFile"},
		{"ipv6 knob unknown value", "ipv6: drop", "ipv6: allow", "primaryNetwork.ipv6"},
		{"ipv6 knob boolean", "ipv6: drop", "ipv6: true", "primaryNetwork.ipv6"},
		{"primary dhcp bad subnet", "subnet: 10.0.0.0/16", "subnet: 10.0.0.0/33", "primaryNetwork.dhcp.subnet"},
		{"primary dhcp bad pool", "pool: 10.0.3.0-10.0.3.254", "pool: 10.0.3.9-10.0.3.1", "primaryNetwork.dhcp.pool"},
		{"primary dhcp pool outside", "pool: 10.0.3.0-10.0.3.254", "pool: 10.1.3.0-10.1.3.254", "primaryNetwork.dhcp.pool"},
		{"primary dhcp pool holds the host", "pool: 10.0.3.0-10.0.3.254", "pool: 10.0.0.2-10.0.0.9", "primaryNetwork.dhcp.pool"},
		{"primary dhcp pool holds the network", "pool: 10.0.3.0-10.0.3.254", "pool: 10.0.0.0-10.0.0.4", "primaryNetwork.dhcp.pool"},
		{"primary dhcp router in the pool", "router: 10.0.0.1}", "router: 10.0.3.7}", "primaryNetwork.dhcp.router"},
		{"primary dhcp no host address", "subnet: 10.0.0.0/16, pool: 10.0.3.0-10.0.3.254, router: 10.0.0.1", "subnet: 10.9.0.0/16, pool: 10.9.3.0-10.9.3.254", "primaryNetwork.dhcp"},
		{"primary address not an address", "primaryAddress: 10.0.2.11", "primaryAddress: 10.0.2.0/24", "workspaces[0].primaryAddress"},
		{"primary address IPv6", "primaryAddress: 10.0.2.11", "primaryAddress: fd00::11", "workspaces[0].primaryAddress"},
		{"primary address multicast", "primaryAddress: 10.0.2.11", "primaryAddress: 224.0.0.251", "workspaces[0].primaryAddress"},
		{"primary address broadcast", "primaryAddress: 10.0.2.11", "primaryAddress: 255.255.255.255", "workspaces[0].primaryAddress"},
		{"primary address unspecified", "primaryAddress: 10.0.2.11", "primaryAddress: 0.0.0.0", "workspaces[0].primaryAddress"},
		{"primary address loopback", "primaryAddress: 10.0.2.11", "primaryAddress: 127.0.0.1", "workspaces[0].primaryAddress"},
		{"primary address link-local", "primaryAddress: 10.0.2.11", "primaryAddress: 169.254.169.254", "workspaces[0].primaryAddress"},
		{"primary address is the DC", "primaryAddress: 10.0.2.11", "primaryAddress: 10.0.1.10", "workspaces[0].primaryAddress"},
		{"primary address is the host", "primaryAddress: 10.0.2.11", "primaryAddress: 10.0.0.5", "workspaces[0].primaryAddress"},
		{"user name with a newline", "primaryAddress: 10.0.2.11", "primaryAddress: 10.0.2.11\n    userName: \"alice\\nroot\"", "workspaces[0].userName"},
		{"user name too long", "primaryAddress: 10.0.2.11", "primaryAddress: 10.0.2.11\n    userName: " + strings.Repeat("a", 64), "workspaces[0].userName"},
		{"primary address twice", "    primaryAddress: 10.0.2.11\n", "    primaryAddress: 10.0.2.11\n  - id: ws-b\n    directory: d-926720fc18\n    primaryAddress: 10.0.2.11\n", "workspaces[1].primaryAddress"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			y := strings.Replace(good, tc.from, tc.to, 1)
			if y == good {
				t.Fatalf("replacement %q not found", tc.from)
			}
			c, err := Decode([]byte(y))
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			_, err = Validate(c)
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("want ValidationError, got %v", err)
			}
			found := false
			for _, f := range ve.Fields() {
				if f == tc.field {
					found = true
				}
			}
			if !found || !strings.Contains(err.Error(), tc.field+":") {
				t.Fatalf("error does not name %s: %v", tc.field, err)
			}
		})
	}
}

func TestCandidatesSkipOverlap(t *testing.T) {
	y := strings.Replace(good, "10.0.0.5/16", "198.19.7.5/16", 1)
	y = strings.Replace(y, "subnet: 10.0.0.0/16, pool: 10.0.3.0-10.0.3.254, router: 10.0.0.1", "subnet: 198.19.0.0/16, pool: 198.19.3.0-198.19.3.254", 1)
	m := mustModel(t, y)
	if len(m.Candidates) != 3 {
		t.Fatalf("candidates %v", m.Candidates)
	}
	// the conflict is resolved by picking later (mgmtnet); the config is valid
	y = strings.Replace(good, "stateFile:", "managementNetwork:\n  candidates: [10.0.0.0/16]\nstateFile:", 1)
	c, _ := Decode([]byte(y))
	if _, err := Validate(c); err == nil || !strings.Contains(err.Error(), "interfaces.primary.addresses[0]") {
		t.Fatalf("overlap not reported with its source: %v", err)
	}
}

func TestStrictDecode(t *testing.T) {
	cases := map[string]string{
		"unknown key":        strings.Replace(good, "    gateway: 203.0.113.1", "    gateway: 203.0.113.1\n    gatway: 1.2.3.4", 1),
		"unknown nested key": strings.Replace(good, "{source: 192.0.2.7}", "{source: 192.0.2.7, sauce: x}", 1),
		"duplicate key":      strings.Replace(good, "host:\n", "host:\n  adminPort: 1\n", 1),
		"two documents":      good + "\n---\nstateFile: /x\n",
		"wrong type":         strings.Replace(good, "adminPort: 8443", "adminPort: [1]", 1),
		"string for int":     strings.Replace(good, "adminPort: 8443", "adminPort: eighty", 1),
		"empty":              "",
		"alias":              "stateFile: &a /x\ninterfaces:\n  management:\n    name: *a\n",
	}
	wantIn := map[string]string{
		"unknown key":        "interfaces.management.gatway",
		"unknown nested key": "ipGroups[0].rules[1].sauce",
	}
	for name, y := range cases {
		_, err := Decode([]byte(y))
		if err == nil {
			t.Errorf("%s: decoded", name)
			continue
		}
		if w := wantIn[name]; w != "" && !strings.Contains(err.Error(), w) {
			t.Errorf("%s: error %q does not name %s", name, err, w)
		}
	}
}

func TestValidatorCachesGroups(t *testing.T) {
	var v Validator
	c, _ := Decode([]byte(good))
	m1, err := v.Validate(c)
	if err != nil {
		t.Fatal(err)
	}
	m2, _ := v.Validate(c)
	if m1.Groups["wsipg-corp"] != m2.Groups["wsipg-corp"] {
		t.Fatal("unchanged group re-parsed")
	}
	c.IPGroups[0].Rules[1].Source = "192.0.2.8"
	m3, _ := v.Validate(c)
	if m3.Groups["wsipg-corp"] == m2.Groups["wsipg-corp"] || m3.Groups["wsipg-corp"].Set.String() != "192.0.2.8, 198.51.100.0/24" {
		t.Fatalf("changed group not updated: %s", m3.Groups["wsipg-corp"].Set)
	}
	// an in-place change to an invalid source is still reported by index
	c.IPGroups[0].Rules[0].Source = "198.51.100.0/33"
	if _, err := v.Validate(c); err == nil || !strings.Contains(err.Error(), "ipGroups[0].rules[0].source: invalid CIDR") {
		t.Fatalf("incremental validation missed the error: %v", err)
	}
	// overlapping rules in one group: removing one keeps what the other covers
	c.IPGroups[0].Rules = []IPRule{{Source: "10.0.0.0/8"}, {Source: "10.1.0.0/16"}, {Source: "10.1.0.0/16"}}
	v.Validate(c)
	c.IPGroups[0].Rules[1].Source = "192.0.2.1"
	m4, _ := v.Validate(c)
	c.IPGroups[0].Rules[0].Source = "192.0.2.2"
	m5, _ := v.Validate(c)
	if m4.Groups["wsipg-corp"].Set.String() != "10.0.0.0/8, 192.0.2.1" || m5.Groups["wsipg-corp"].Set.String() != "10.1.0.0/16, 192.0.2.1-192.0.2.2" {
		t.Fatalf("incremental group sets: %s | %s", m4.Groups["wsipg-corp"].Set, m5.Groups["wsipg-corp"].Set)
	}
}

func TestLoadLimits(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "c.yaml")
	var b strings.Builder
	b.WriteString(good)
	b.WriteString("\n")
	if err := os.WriteFile(p, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(p); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(filepath.Join(dir, "missing.yaml")); err == nil {
		t.Fatal("missing file loaded")
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte(good))
	f.Add([]byte("stateFile: /x\n"))
	f.Add([]byte("ipGroups: [{id: a, rules: [{source: 1.2.3.4/33}]}]"))
	f.Add([]byte("workspaces: [{id: ws-abc, directory: d}]\ndirectories: [{id: d}]"))
	f.Add([]byte("{"))
	f.Add([]byte("stateFile: /s\ninterfaces: {management: {name: a}, primary: {name: b}}\nprimaryNetwork: {ipv6: unfiltered}\ndirectories: [{id: d, controllers: [10.0.1.10]}]\nworkspaces: [{id: ws-a, directory: d, primaryAddress: 10.0.2.11}, {id: ws-b, directory: d, primaryAddress: 10.0.1.10}]"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Decode(data)
		if err != nil {
			if c != nil {
				t.Fatal("config returned with error")
			}
			return
		}
		m, err := Validate(c)
		if err != nil {
			var ve *ValidationError
			if !errors.As(err, &ve) || len(ve.Errs) == 0 {
				t.Fatalf("validation error without fields: %v", err)
			}
			for _, fe := range ve.Errs {
				if fe.Field == "" {
					t.Fatalf("error without field: %v", fe)
				}
			}
			return
		}
		// A valid model is internally consistent.
		primary := map[netip.Addr]bool{}
		for _, w := range m.WorkSpaces {
			if a := w.PrimaryAddr; a.IsValid() {
				if !a.Is4() || notUnicast(a) != "" || primary[a] {
					t.Fatalf("primary address %s accepted (unicast: %q, duplicate: %v)", a, notUnicast(a), primary[a])
				}
				primary[a] = true
			}
		}
		for _, d := range m.Directories {
			for _, c := range d.Controllers {
				if primary[c] {
					t.Fatalf("a WorkSpace claims directory controller %s", c)
				}
			}
		}
		if c.PrimaryNetwork.IPv6 != "" && m.PrimaryIPv6 != (c.PrimaryNetwork.IPv6 == IPv6Unfiltered) {
			t.Fatalf("ipv6 %q gave PrimaryIPv6 %v", c.PrimaryNetwork.IPv6, m.PrimaryIPv6)
		}
		for _, w := range m.WorkSpaces {
			if len(w.MgmtTap) > 15 || len(w.PrimaryTap) > 15 {
				t.Fatalf("tap name too long: %+v", w)
			}
			for _, sg := range w.SecurityGroups {
				if m.SGs[sg] == nil {
					t.Fatalf("dangling security group %q", sg)
				}
			}
		}
		for _, d := range m.Directories {
			for _, g := range d.Groups {
				if m.Groups[g] == nil {
					t.Fatalf("dangling group %q", g)
				}
			}
		}
		for _, g := range m.Groups {
			if err := g.Set.Validate(); err != nil {
				t.Fatal(err)
			}
		}
		_ = fmt.Sprint(m.BrokerPort)
	})
}
