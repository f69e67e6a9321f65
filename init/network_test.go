package main

import (
	"context"
	"net"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"deskhost/init/hostcfg"
	"deskhost/init/nicroles"
	"deskhost/netcfg/config"
)

// A host with no config of its own gets init's defaults: valid for hostd, init and
// netcfg, with both NICs left to the rules.
func TestDefaultConfig(t *testing.T) {
	c, err := hostcfg.Parse(defaultConfig())
	if err != nil {
		t.Fatalf("init's defaults do not load: %v\n%s", err, defaultConfig())
	}
	if r := c.Init.NICsByRule(); len(r) != 2 {
		t.Errorf("NICs by rule: %v", r)
	}
	if !c.HasZeroclient() || c.Hostd.API.Socket == "" || !c.ManagedNetwork() {
		t.Errorf("defaults: %+v", c)
	}
	if secrets := c.InlineSecrets(); len(secrets) != 0 {
		t.Errorf("defaults hold secrets: %v", secrets)
	}
}

// pinNICs writes the boot's choices into the config: the services read concrete NICs,
// what the operator wrote stays.
func TestPinNICs(t *testing.T) {
	mac := func(s string) net.HardwareAddr { m, _ := net.ParseMAC(s); return m }
	nics := []nicroles.NIC{{Name: "eth0", MAC: mac("52:54:00:aa:00:00"), Index: 2, Carrier: true}, {Name: "eth1", MAC: mac("52:54:00:aa:00:01"), Index: 3, Carrier: true}}
	res := nicroles.Resolve(context.Background(), nicroles.Input{NICs: nics, BootIF: nics[1].MAC})
	for name, raw := range map[string][]byte{
		"defaults": defaultConfig(),
		"config":   []byte(strings.Replace(strings.Replace(hostYAML, `mac: "52:54:00:12:34:01"`, "", 1), `{mac: "52:54:00:12:34:02", dhcp: true}`, "{dhcp: true}", 1)),
	} {
		b, err := pinNICs(raw, res)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		c, err := hostcfg.Parse(b)
		if err != nil {
			t.Fatalf("%s: the pinned config does not load: %v\n%s", name, err, b)
		}
		if r := c.Init.NICsByRule(); len(r) != 0 {
			t.Errorf("%s: still by rule: %v", name, r)
		}
		nb, _ := c.Init.NetworkYAML()
		nc, err := config.Decode(nb)
		if err != nil {
			t.Fatal(err)
		}
		if m := nc.Interfaces.Management; m.Name != "eth1" || m.MAC != "52:54:00:aa:00:01" || !m.DHCP {
			t.Errorf("%s: management %+v", name, m)
		}
		if p := nc.Interfaces.Primary; p.Name != "eth0" || p.MAC != "52:54:00:aa:00:00" {
			t.Errorf("%s: primary %+v", name, p)
		}
		if !strings.Contains(string(b), "chosen at boot: network-booted from it (BOOTIF)") {
			t.Errorf("%s: the config does not say why:\n%s", name, b)
		}
		if name == "config" && (!strings.Contains(string(b), "# operator's comment stays") || c.Init.Hostname != "h1") {
			t.Errorf("the rest of the config changed:\n%s", b)
		}
	}
	// A config pinned by MAC keeps its MAC and gains the name.
	pinned := nicroles.Resolve(context.Background(), nicroles.Input{NICs: nics, Management: nicroles.Pin{MAC: "52:54:00:aa:00:00", By: "the host config"}})
	b, _ := pinNICs([]byte(hostYAML), pinned)
	if !strings.Contains(string(b), `name: "eth0"`) {
		t.Errorf("pinned by MAC:\n%s", b)
	}
	// No init.network: nothing to pin.
	none := []byte("hostd: {store: /s}\n")
	if b, err := pinNICs(none, res); err != nil || string(b) != string(none) {
		t.Errorf("without init.network: %q %v", b, err)
	}
}

func TestHostnames(t *testing.T) {
	if h := configHostname([]byte(hostYAML)); h != "h1" {
		t.Errorf("configHostname: %q", h)
	}
	if h := configHostname(defaultConfig()); h != "" {
		t.Errorf("configHostname of the defaults: %q", h)
	}
	mac, _ := net.ParseMAC("52:54:00:12:ab:cd")
	st := nicState{res: nicroles.Result{Management: &nicroles.Choice{NIC: nicroles.NIC{Name: "eth1", MAC: mac}}}}
	if h := defaultHostname(st); h != "deskhost-12abcd" {
		t.Errorf("defaultHostname: %q", h)
	}
	if h := defaultHostname(nicState{}); h != "deskhost" {
		t.Errorf("defaultHostname without a NIC: %q", h)
	}
}

// FuzzPinNICs: for any config init accepts, pinning the boot's NIC roles gives a config
// init still accepts, with no role left to the rules.
func FuzzPinNICs(f *testing.F) {
	f.Add(defaultConfig())
	f.Add([]byte(hostYAML))
	f.Add([]byte("hostd: {store: /s, dataDir: /d, libvirt: {socket: /l}, api: {socket: /h}}\ninit:\n  network: {stateFile: /s, interfaces: {primary: {name: eth7}}}\n"))
	f.Add([]byte("hostd: {store: /s, dataDir: /d, libvirt: {socket: /l}, api: {socket: /h}}\ninit:\n  network: {stateFile: /s, interfaces: {management: ~, primary: {}}}\n"))
	mac := func(s string) net.HardwareAddr { m, _ := net.ParseMAC(s); return m }
	nics := []nicroles.NIC{{Name: "eth0", MAC: mac("52:54:00:aa:00:00"), Index: 2, Carrier: true}, {Name: "eth1", MAC: mac("52:54:00:aa:00:01"), Index: 3, Carrier: true}}
	res := nicroles.Resolve(context.Background(), nicroles.Input{NICs: nics, BootIF: nics[1].MAC})
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := hostcfg.Parse(b)
		if err != nil || !c.ManagedNetwork() {
			return
		}
		// yaml.v3 does not round-trip every document (an anchor on a key comes back as
		// an empty key): what pinNICs adds is what is tested, on what survives the trip.
		var doc yaml.Node
		if yaml.Unmarshal(b, &doc) != nil {
			return
		}
		if rt, err := yaml.Marshal(&doc); err != nil {
			return
		} else if _, err := hostcfg.Parse(rt); err != nil {
			return
		}
		pinned, err := pinNICs(b, res)
		if err != nil {
			t.Fatalf("pinNICs: %v", err)
		}
		c2, err := hostcfg.Parse(pinned)
		if err != nil {
			// A pin may clash with what the config says about the other role (both
			// roles on one NIC): netcfg's refusal is the right outcome, never a panic.
			if strings.Contains(err.Error(), "same interface") || strings.Contains(err.Error(), "has MAC") {
				return
			}
			t.Fatalf("the pinned config does not load: %v\n%s\n---\n%s", err, b, pinned)
		}
		if r := c2.Init.NICsByRule(); len(r) != 0 {
			t.Fatalf("still by rule after pinning: %v\n%s", r, pinned)
		}
	})
}
