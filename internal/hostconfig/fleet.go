package hostconfig

import (
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"time"
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
