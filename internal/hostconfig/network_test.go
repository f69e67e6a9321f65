package hostconfig

import (
	"errors"
	"strings"
	"testing"
)

// Parse checks init.network with the validator netcfg registers, and names the section
// in its error; without init.network the validator is not asked.
func TestNetworkValidator(t *testing.T) {
	var got []string
	RegisterNetworkValidator(func(b []byte) error {
		got = append(got, string(b))
		if strings.Contains(string(b), "bad") {
			return errors.New("interfaces.management.mac: not a MAC address")
		}
		return nil
	})
	defer RegisterNetworkValidator(nil)

	if _, err := Parse([]byte(minimalHostd)); err != nil || len(got) != 0 {
		t.Fatalf("no init.network: %v, validator called with %q", err, got)
	}
	if _, err := Parse([]byte(minimalHostd + "init:\n  network: {interfaces: {management: {mac: good}}}\n")); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || !strings.Contains(got[0], "mac: good") {
		t.Fatalf("the validator got %q, want init.network as YAML", got)
	}
	_, err := Parse([]byte(minimalHostd + "init:\n  network: {interfaces: {management: {mac: bad}}}\n"))
	if err == nil || !strings.Contains(err.Error(), "init.network: interfaces.management.mac: not a MAC address") {
		t.Fatalf("bad init.network: %v", err)
	}
}

func TestHasZeroclient(t *testing.T) {
	c, err := Parse([]byte(minimalHostd))
	if err != nil || c.HasZeroclient() {
		t.Fatalf("without the section: %v %v", err, c.HasZeroclient())
	}
	c, err = Parse([]byte(minimalHostd + "zeroclient:\n  tls: {selfSignedDir: /tmp/tls}\n"))
	if err != nil || !c.HasZeroclient() {
		t.Fatalf("with the section: %v %v", err, c.HasZeroclient())
	}
}

// A NIC with neither name nor mac is left to init's rules: Parse checks the rest of the
// section as if it were pinned, NICsByRule names the roles, and pinning one leaves the rest.
func TestNICsByRule(t *testing.T) {
	var got []string
	RegisterNetworkValidator(func(b []byte) error {
		got = append(got, string(b))
		if !strings.Contains(string(b), "name:") && !strings.Contains(string(b), "mac:") {
			return errors.New("interfaces.management: name or mac required")
		}
		return nil
	})
	defer RegisterNetworkValidator(nil)
	c, err := Parse([]byte(minimalHostd + "init:\n  network:\n    stateFile: /perm/s.json\n    interfaces:\n      management: {dhcp: true}\n      primary: {mac: \"52:54:00:aa:bb:cc\", dhcp: true}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if r := c.Init.NICsByRule(); len(r) != 1 || r[0] != RoleManagement {
		t.Errorf("NICsByRule: %v", r)
	}
	if strings.Contains(string(mustNetworkYAML(t, c.Init)), "by-rule") {
		t.Error("the placeholder leaked into the section")
	}
	n := withNICKey(withNICName(c.Init.Network, RoleManagement, "eth1"), RoleManagement, "mac", "52:54:00:11:22:33")
	b, _ := networkYAML(n)
	if !strings.Contains(string(b), `name: "eth1"`) || !strings.Contains(string(b), `mac: "52:54:00:11:22:33"`) || !strings.Contains(string(b), "dhcp: true") {
		t.Errorf("pinned:\n%s", b)
	}
	if r := c.Init.NICsByRule(); len(r) != 1 {
		t.Error("pinning changed the config it was given")
	}
	// No interfaces at all: both roles by rule; pinning adds the mapping.
	c, err = Parse([]byte(minimalHostd + "init:\n  network: {stateFile: /perm/s.json}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if r := c.Init.NICsByRule(); len(r) != 2 {
		t.Errorf("NICsByRule without interfaces: %v", r)
	}
	c.Init.Network = withNICName(c.Init.Network, RolePrimary, "eth0")
	if r := c.Init.NICsByRule(); len(r) != 1 || r[0] != RoleManagement {
		t.Errorf("after pinning primary: %v", r)
	}
}

func mustNetworkYAML(t *testing.T, i Init) []byte {
	t.Helper()
	b, err := i.NetworkYAML()
	if err != nil {
		t.Fatal(err)
	}
	return b
}
