package hostconfig

import (
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Fleet makes the host one of a fleet sharing one store: the fleet's etcd cluster, whose
// members run on the first hosts, under a CA the fleet makes itself (hostd/fleet). With
// it, hostd.store is the fleet's and is not written in the config.
//
//	hostd:
//	  fleet:
//	    advertise: 10.0.0.3           # this host's address on the management network
//	    bootstrap: true               # the first host: make the fleet
//	    join: https://10.0.0.1:7443   # or: a fleet host to ask to join (kernel command line: deskhost.join=)
//	    caFingerprint: sha256:…       # optional: the fleet CA to expect (deskhost.fleetca=)
//	    name: rack1-3                 # default: the host name
//	    listen: ":7443"               # the fleet port: joins, hosts' calls to each other
//	    members: 3                    # etcd members the fleet keeps (1, 3 or 5)
//	    etcdClientPort: 2379
//	    etcdPeerPort: 2380
//	    capacity: {vcpus: 16, memoryMiB: 61440}   # default: the host's CPUs, its memory less 2 GiB
//	    hardwareId: dmi-uuid:…        # default: the hardware's (internal/hwid)
//	    leaseTTL: 10s
//	    dir: /perm/fleet              # default: <dataDir>/fleet
type Fleet struct {
	Dir            string    `yaml:"dir"`
	Name           string    `yaml:"name"`
	Advertise      string    `yaml:"advertise"`
	Listen         string    `yaml:"listen"`
	Bootstrap      bool      `yaml:"bootstrap"`
	Join           string    `yaml:"join"`
	CAFingerprint  string    `yaml:"caFingerprint"`
	Members        int       `yaml:"members"`
	EtcdClientPort int       `yaml:"etcdClientPort"`
	EtcdPeerPort   int       `yaml:"etcdPeerPort"`
	Capacity       *Capacity `yaml:"capacity"`
	HardwareID     string    `yaml:"hardwareId"`
	LeaseTTL       Duration  `yaml:"leaseTTL"`
	// Timeout bounds every etcd call (default 5 s).
	Timeout Duration `yaml:"timeout"`
}

// Capacity is what a host gives WorkSpaces.
type Capacity struct {
	VCPUs     int `yaml:"vcpus"`
	MemoryMiB int `yaml:"memoryMiB"`
}

// Fleet defaults.
const (
	DefaultFleetPort      = 7443
	DefaultFleetMembers   = 3
	DefaultEtcdClientPort = 2379
	DefaultEtcdPeerPort   = 2380
	DefaultLeaseTTL       = 10 * time.Second
)

func (f *Fleet) defaults(dataDir string) {
	if f.Dir == "" && dataDir != "" {
		f.Dir = filepath.Join(dataDir, "fleet")
	}
	if f.Listen == "" {
		f.Listen = fmt.Sprintf(":%d", DefaultFleetPort)
	}
	if f.Members == 0 {
		f.Members = DefaultFleetMembers
	}
	if f.EtcdClientPort == 0 {
		f.EtcdClientPort = DefaultEtcdClientPort
	}
	if f.EtcdPeerPort == 0 {
		f.EtcdPeerPort = DefaultEtcdPeerPort
	}
	if f.LeaseTTL.Duration == 0 {
		f.LeaseTTL.Duration = DefaultLeaseTTL
	}
	if f.Timeout.Duration == 0 {
		f.Timeout.Duration = 5 * time.Second
	}
}

func (f *Fleet) validate() []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if f.Advertise == "" || net.ParseIP(f.Advertise) == nil {
		bad("hostd.fleet.advertise %q: this host's IP address on the management network is required (the other hosts reach it there)", f.Advertise)
	}
	if _, _, err := net.SplitHostPort(f.Listen); err != nil {
		bad("hostd.fleet.listen %q: %v", f.Listen, err)
	}
	if f.Bootstrap && f.Join != "" {
		bad("hostd.fleet: bootstrap (make a new fleet) and join (join one) exclude each other")
	}
	if f.Join != "" {
		if err := CheckJoinURL(f.Join); err != nil {
			bad("hostd.fleet.join: %v", err)
		}
	}
	if f.CAFingerprint != "" {
		if err := CheckFingerprint(f.CAFingerprint); err != nil {
			bad("hostd.fleet.caFingerprint: %v", err)
		}
	}
	if f.Members != 1 && f.Members != 3 && f.Members != 5 {
		bad("hostd.fleet.members %d: 3 or 5 (an odd number keeps a majority when one or two are lost; 1 only for a trial)", f.Members)
	}
	for name, p := range map[string]int{"etcdClientPort": f.EtcdClientPort, "etcdPeerPort": f.EtcdPeerPort} {
		if p < 1 || p > 65535 {
			bad("hostd.fleet.%s %d: not a TCP port", name, p)
		}
	}
	if c := f.Capacity; c != nil && (c.VCPUs < 1 || c.MemoryMiB < 64) {
		bad("hostd.fleet.capacity: vcpus ≥ 1 and memoryMiB ≥ 64 required")
	}
	if f.LeaseTTL.Duration < 2*time.Second || f.LeaseTTL.Duration > 5*time.Minute {
		bad("hostd.fleet.leaseTTL %s: between 2s and 5m", f.LeaseTTL.Duration)
	}
	return errs
}

// CheckJoinURL checks the address of a fleet host to join through: https://host:port.
func CheckJoinURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.Port() == "" || (u.Path != "" && u.Path != "/") {
		return fmt.Errorf("%q: want https://HOST:PORT, a fleet host's fleet port", s)
	}
	return nil
}

// CheckFingerprint checks a CA fingerprint as `hostd hosts` prints it: sha256:64 hex digits.
func CheckFingerprint(s string) error {
	h, ok := strings.CutPrefix(strings.ToLower(s), "sha256:")
	if !ok || len(h) != 64 || strings.Trim(h, "0123456789abcdef") != "" {
		return fmt.Errorf("%q: want sha256: and 64 hex digits (the fleet CA's fingerprint)", s)
	}
	return nil
}

// Ports are the TCP ports this host's fleet peers reach it on: its fleet port and its etcd
// member's client and peer ports (defaults applied by Parse).
func (f *Fleet) Ports() []int {
	_, p, _ := net.SplitHostPort(f.Listen) // validated
	port, _ := strconv.Atoi(p)
	return []int{port, f.EtcdClientPort, f.EtcdPeerPort}
}

// NetworkYAML is netcfg's config as init applies it at boot: init.network, with a fleet
// host's peer ports in host.fleetPorts. The boot-time firewall must let the peers in
// before hostd runs: a joining host's hostd waits for its etcd member to be reached by
// the others before it serves (and only then applies the network itself), so a firewall
// without those ports would keep it out of the fleet for good.
func (c *Config) NetworkYAML() ([]byte, error) {
	if c.Hostd.Fleet == nil || c.Init.Network.Kind == 0 {
		return c.Init.NetworkYAML()
	}
	n := blockStyle(c.Init.Network)
	m := &n
	if m.Kind == yaml.DocumentNode && len(m.Content) == 1 {
		m = m.Content[0]
	}
	if m.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("init.network: a mapping is required")
	}
	host := ensure(m, "host", yaml.MappingNode, "!!map")
	if host.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("init.network.host: a mapping is required")
	}
	ports := ensure(host, "fleetPorts", yaml.SequenceNode, "!!seq")
	if ports.Kind != yaml.SequenceNode {
		return nil, fmt.Errorf("init.network.host.fleetPorts: a list of ports is required")
	}
	have := map[string]bool{}
	for _, p := range ports.Content {
		have[p.Value] = true
	}
	for _, p := range c.Hostd.Fleet.Ports() {
		if s := strconv.Itoa(p); !have[s] {
			ports.Content = append(ports.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: s})
			have[s] = true
		}
	}
	b, err := yaml.Marshal(&n)
	if err != nil {
		return nil, fmt.Errorf("init.network: %w", err)
	}
	return b, nil
}

// ensure is m's value for key, added empty (of kind, tagged tag) when m has none.
func ensure(m *yaml.Node, key string, kind yaml.Kind, tag string) *yaml.Node {
	if v := value(m, key); v != nil {
		return v
	}
	v := &yaml.Node{Kind: kind, Tag: tag}
	m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key}, v)
	return v
}
