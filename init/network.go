package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"

	"github.com/vishvananda/netns"
	"go.yaml.in/yaml/v3"

	"deskhost/init/nicroles"
	"deskhost/internal/hostconfig"
	"deskhost/internal/hwid"
	"deskhost/internal/imagelayout"
	"deskhost/netcfg/config"
)

// defaultConfig is the host config of a host that has none of its own (nothing on the
// command line, nothing baked into the image, nothing on /perm): hostd with its state on
// /perm, the broker with a certificate it makes itself, and both NICs by rule with DHCP.
// Guests run under KVM when the host has it, else emulated.
func defaultConfig() []byte {
	domain := "qemu"
	if _, err := os.Stat("/dev/kvm"); err == nil {
		domain = "kvm"
	}
	return []byte(`# init's defaults: this host has no host config of its own.
hostd:
  store: /perm/hostd/store.db
  dataDir: /perm/hostd
  libvirt: {socket: /run/libvirt/libvirt-sock, domainType: ` + domain + `}
  api: {socket: /run/deskhost/hostd.sock}
zeroclient:
  tls: {selfSignedDir: /perm/zeroclient/tls}
init:
  network:
    stateFile: /perm/netcfg/state.json
    interfaces:
      management: {dhcp: true}
      primary: {dhcp: true}
`)
}

// nicState is the boot's NIC roles, as the console shows them.
type nicState struct {
	res    nicroles.Result
	hwid   hwid.ID
	bootIF string
	note   string // why there are no roles
}

// pinsFromConfig are the NICs init.network pins by name or MAC.
func pinsFromConfig(cfg *hostconfig.Config) (mgmt, primary nicroles.Pin) {
	b, err := cfg.Init.NetworkYAML()
	if err != nil || b == nil {
		return
	}
	c, err := config.Decode(b)
	if err != nil {
		return
	}
	by := "the host config"
	return nicroles.Pin{Name: c.Interfaces.Management.Name, MAC: c.Interfaces.Management.MAC, By: by},
		nicroles.Pin{Name: c.Interfaces.Primary.Name, MAC: c.Interfaces.Primary.MAC, By: by}
}

// resolveNICs chooses the NIC roles for this boot (package nicroles), the hardware
// identity, and the per-host overrides for it. leased are the NICs the config fetch's
// bootstrap network got leases on (reused instead of asking DHCP again).
func (h *host) resolveNICs(params map[string]string, cfg *hostconfig.Config, leased []string) (nicState, *hwid.Overrides) {
	var st nicState
	nics, err := nicroles.List(netns.None())
	if err != nil {
		st.note = err.Error()
		return st, nil
	}
	// Carrier is a rule's input, and known only once a NIC is up.
	nics, _ = nicroles.Up(netns.None(), nics, nicroles.CarrierWait)
	in := nicroles.Input{NICs: nics}
	if s, ok := params[imagelayout.ParamBootIF]; ok {
		st.bootIF = s
		if mac, err := nicroles.ParseBootIF(s); err != nil {
			h.alarm("nics", err.Error())
		} else {
			in.BootIF = mac
		}
	}
	in.Management, in.Primary = pinsFromConfig(cfg)
	probe := nicroles.DHCPProbe(netns.None(), slog.Default())
	if len(leased) > 0 {
		// The bootstrap network already asked every NIC: the first in order with a lease.
		got := map[string]bool{}
		for _, n := range leased {
			got[n] = true
		}
		probe = func(_ context.Context, cands []nicroles.NIC) (nicroles.NIC, error) {
			for _, n := range cands {
				if got[n.Name] {
					return n, nil
				}
			}
			return nicroles.NIC{}, fmt.Errorf("no DHCP lease on %d NICs", len(cands))
		}
	}
	// One probe per boot, whichever resolution asks.
	var once sync.Once
	var probed nicroles.NIC
	var probeErr error
	in.FirstLease = func(ctx context.Context, cands []nicroles.NIC) (nicroles.NIC, error) {
		once.Do(func() { probed, probeErr = probe(ctx, cands) })
		return probed, probeErr
	}
	ctx := context.Background()
	st.res = nicroles.Resolve(ctx, in)

	// The hardware identity, and the overrides kept for it.
	var mgmtMAC net.HardwareAddr
	if st.res.Management != nil {
		mgmtMAC = st.res.Management.NIC.MAC
	}
	id, err := hwid.Read("/sys", mgmtMAC)
	if err != nil {
		h.initLog.Printf("hardware id: %v", err)
		return st, nil
	}
	st.hwid = id
	o, err := hwid.LoadOverrides(hwid.OverridesFile, id)
	if err != nil {
		h.alarm("overrides", "per-host overrides: "+err.Error())
	}
	if o != nil && (!o.Management.Empty() || !o.Primary.Empty()) {
		by := "the per-host overrides"
		if !o.Management.Empty() {
			in.Management = nicroles.Pin{Name: o.Management.Name, MAC: o.Management.MAC, By: by}
		}
		if !o.Primary.Empty() {
			in.Primary = nicroles.Pin{Name: o.Primary.Name, MAC: o.Primary.MAC, By: by}
		}
		st.res = nicroles.Resolve(ctx, in)
	}
	return st, o
}

// pinNICs writes the boot's NIC roles into the host config document b: each role's
// init.network.interfaces entry gets the chosen NIC's name and MAC, so every reader of
// the config (hostd, netcfg, the console) works on the NICs init chose. The YAML tree is
// edited, so everything else (comments included) stays as written.
func pinNICs(b []byte, res nicroles.Result) ([]byte, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, err
	}
	if len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, errors.New("not a YAML mapping")
	}
	ifs := child(child(doc.Content[0], "init"), "network")
	if ifs == nil || ifs.Kind != yaml.MappingNode {
		return b, nil
	}
	if n := child(ifs, "interfaces"); n == nil || n.Kind != yaml.MappingNode {
		// Absent, or empty (null): a mapping of its own. Anything else netcfg refused.
		del(ifs, "interfaces")
		put(ifs, "interfaces", &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"})
	}
	ifs = child(ifs, "interfaces")
	for _, c := range []*nicroles.Choice{res.Management, res.Primary} {
		if c == nil {
			continue
		}
		n := child(ifs, c.Role)
		if n == nil || n.Kind != yaml.MappingNode {
			if n != nil {
				del(ifs, c.Role)
			}
			n = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
			put(ifs, c.Role, n)
		}
		del(n, "name")
		del(n, "mac")
		put(n, "name", &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: c.NIC.Name, Style: yaml.DoubleQuotedStyle})
		put(n, "mac", &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: c.NIC.MAC.String(), Style: yaml.DoubleQuotedStyle,
			LineComment: "chosen at boot: " + c.Why})
	}
	return yaml.Marshal(&doc)
}

// defaultHostname names a host that was given no name: "deskhost-" and the last three
// bytes of its management NIC's MAC, so hosts booted from one image tell apart.
func defaultHostname(st nicState) string {
	if m := st.res.Management; m != nil && len(m.NIC.MAC) == 6 {
		return fmt.Sprintf("%s-%02x%02x%02x", hostconfig.DefaultHostname, m.NIC.MAC[3], m.NIC.MAC[4], m.NIC.MAC[5])
	}
	return hostconfig.DefaultHostname
}

// configHostname is init.hostname as written in the document b ("" if not set).
func configHostname(b []byte) string {
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil || len(doc.Content) == 0 {
		return ""
	}
	if n := child(child(doc.Content[0], "init"), "hostname"); n != nil && n.Kind == yaml.ScalarNode {
		return n.Value
	}
	return ""
}

// nicLines are the console's lines about the NICs: each NIC's role and the rule behind it,
// and the hardware identity.
func (st nicState) lines() []string {
	if st.note != "" {
		return []string{"NIC roles: " + st.note}
	}
	out := st.res.Lines()
	if len(out) == 0 {
		out = append(out, "no Ethernet NIC found")
	}
	if !st.hwid.IsZero() {
		out = append(out, "Hardware id "+st.hwid.String())
	}
	return out
}

// ruleOf is the status screen's short note of how a role's NIC was chosen.
func (st nicState) ruleOf(role string) string {
	if c := st.res.Role(role); c != nil {
		return c.Rule
	}
	return ""
}
