package main

import (
	"strings"
	"testing"

	"deskhost/internal/hostconfig"
	"deskhost/netcfg/config"
)

const hostYAML = `# operator's comment stays
hostd:
  store: /perm/hostd/store.db
  dataDir: /perm/hostd
  libvirt: {socket: /run/libvirt/libvirt-sock, domainType: qemu}
  network: {managementBridge: br-mgmt, primaryBridge: br-primary}
  api: {socket: /run/deskhost/hostd.sock}
init:
  hostname: h1
  network:
    stateFile: /perm/netcfg/state.json
    interfaces:
      management:
        mac: "52:54:00:12:34:01"
        dhcp: true
        mtu: 1500
      primary: {mac: "52:54:00:12:34:02", dhcp: true}
    managementNetwork: {candidates: [198.19.0.0/16]}
`

// The console's management-address setting edits init.network in place: everything
// else stays, and the result is valid for hostconfig and netcfg.
func TestEffectiveConfig(t *testing.T) {
	cfg, err := hostconfig.Parse([]byte(hostYAML))
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := effectiveConfig([]byte(hostYAML), cfg, nil); string(b) != hostYAML {
		t.Error("no override changed the config")
	}
	b, err := effectiveConfig([]byte(hostYAML), cfg, &override{Address: "10.0.2.16/24", Gateway: "10.0.2.2"})
	if err != nil {
		t.Fatal(err)
	}
	c2, err := hostconfig.Parse(b)
	if err != nil {
		t.Fatalf("edited config does not load: %v\n%s", err, b)
	}
	nb, _ := c2.Init.NetworkYAML()
	nc, err := config.Decode(nb)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := config.Validate(nc); err != nil {
		t.Fatalf("netcfg refuses the edited network: %v", err)
	}
	m := nc.Interfaces.Management
	if m.DHCP || len(m.Addresses) != 1 || m.Addresses[0] != "10.0.2.16/24" || m.Gateway != "10.0.2.2" || m.MTU != 1500 || m.MAC != "52:54:00:12:34:01" {
		t.Errorf("management NIC %+v", m)
	}
	if !strings.Contains(string(b), "# operator's comment stays") || c2.Init.Hostname != "h1" {
		t.Errorf("the rest of the config changed:\n%s", b)
	}
	back, err := effectiveConfig(b, c2, &override{DHCP: true})
	if err != nil {
		t.Fatal(err)
	}
	c3, _ := hostconfig.Parse(back)
	nb, _ = c3.Init.NetworkYAML()
	nc, _ = config.Decode(nb)
	if !nc.Interfaces.Management.DHCP || len(nc.Interfaces.Management.Addresses) != 0 || nc.Interfaces.Management.Gateway != "" {
		t.Errorf("back to DHCP: %+v", nc.Interfaces.Management)
	}
}
