package hostconfig_test

import (
	"slices"
	"strings"
	"testing"

	"deskhost/internal/hostconfig"
	"deskhost/netcfg/config"
)

// TestNetworkYAMLOpensFleetPorts: the network init applies at boot lets a fleet host's
// peers in (fleet port, etcd client and peer ports), keeping ports the config lists; a
// host in no fleet gets init.network as written.
func TestNetworkYAMLOpensFleetPorts(t *testing.T) {
	machine := `hostd:
  dataDir: /perm/hostd
  libvirt: {socket: /run/libvirt/libvirt-sock}
  network: {managementBridge: br-mgmt, primaryBridge: br-primary}
  api:
    socket: /run/deskhost/hostd.sock
    listen: 10.0.0.1:8443
    accessKeys: [{id: AKIAEXAMPLE0000001, secret: abcdefghijklmnopqrstuvwxyz, name: admin}]
  computeTypes:
    VALUE: {vcpus: 1, memoryMiB: 256}
`
	network := `init:
  network:
    stateFile: /perm/netcfg/state.json
    interfaces:
      management: {name: eth0, dhcp: true}
      primary: {name: eth1, dhcp: true}
`
	fleet := "  fleet:\n    advertise: 10.0.0.1\n    join: https://10.0.0.2:7443\n    listen: ':7500'\n    etcdPeerPort: 2390\n"
	ports := func(cfg string) []int {
		t.Helper()
		c, err := hostconfig.Parse([]byte(cfg))
		if err != nil {
			t.Fatalf("%v\n%s", err, cfg)
		}
		b, err := c.NetworkYAML()
		if err != nil {
			t.Fatal(err)
		}
		n, err := config.Decode(b)
		if err != nil {
			t.Fatalf("netcfg refuses it: %v\n%s", err, b)
		}
		if _, err := config.Validate(n); err != nil {
			t.Fatalf("netcfg refuses it: %v\n%s", err, b)
		}
		return n.Host.FleetPorts
	}
	if got := ports(machine + fleet + network); !slices.Equal(got, []int{7500, 2379, 2390}) {
		t.Errorf("fleet host: fleetPorts %v, want [7500 2379 2390]", got)
	}
	withHost := network + "    host:\n      brokerPort: 443\n      fleetPorts: [2390, 9000]\n"
	if got := ports(machine + fleet + withHost); !slices.Equal(got, []int{2390, 9000, 7500, 2379}) {
		t.Errorf("fleet host with its own list: fleetPorts %v, want [2390 9000 7500 2379]", got)
	}
	if got := ports(strings.Replace(machine, "  dataDir:", "  store: /perm/hostd/store.db\n  dataDir:", 1) + network); len(got) != 0 {
		t.Errorf("a host in no fleet: fleetPorts %v", got)
	}
}
