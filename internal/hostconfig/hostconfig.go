// Package hostconfig is the host configuration file: one YAML document with a section per
// component, decoded strictly (an unknown key is an error naming it), so that a typo never
// silently falls back to a default.
package hostconfig

import (
	"fmt"
	"os"
	"time"

	"go.yaml.in/yaml/v3"

	"deskhost/internal/catalog"
	"deskhost/internal/strictyaml"
)

// Config is the whole host configuration.
type Config struct {
	Hostd      Hostd      `yaml:"hostd"`
	Zeroclient Zeroclient `yaml:"zeroclient"`
	Init       Init       `yaml:"init"`

	hasZeroclient bool
}

// ManagedNetwork reports whether the config describes the host's network (init.network,
// netcfg's desired state): then hostd keeps it applied with its WorkSpaces in it, and the
// WorkSpaces attach to netcfg's taps rather than to hostd.network's bridges.
func (c *Config) ManagedNetwork() bool { return c.Init.Network.Kind != 0 }

// Hostd configures the host daemon.
type Hostd struct {
	// Store holds desired state: a bbolt file path, or the fleet's etcd (store.go).
	Store Store `yaml:"store"`
	// Fleet makes the host one of a fleet (fleet.go); then the store is the fleet's.
	Fleet *Fleet `yaml:"fleet"`
	// DataDir holds WorkSpace volumes (volumes/) and per-VM runtime files (run/: agent and
	// VNC sockets, serial logs).
	DataDir string `yaml:"dataDir"`
	// Libvirt is how hostd reaches libvirtd.
	Libvirt Libvirt `yaml:"libvirt"`
	// API is the admin API's listeners and credentials.
	API API `yaml:"api"`
	// Network names the bridges the VMs' two NICs attach to.
	Network Network `yaml:"network"`
	// ProvisionTimeout bounds PENDING: a WorkSpace whose agent has not answered by then goes
	// to ERROR (the guide: "up to 20 minutes").
	ProvisionTimeout Duration `yaml:"provisionTimeout"`
	// ShutdownTimeout bounds a graceful guest shutdown before it is forced.
	ShutdownTimeout Duration `yaml:"shutdownTimeout"`
	// HealthInterval is how often a running WorkSpace's agent is asked for its status;
	// HealthMisses consecutive misses make it UNHEALTHY (guide §19).
	HealthInterval Duration `yaml:"healthInterval"`
	HealthMisses   int      `yaml:"healthMisses"`
	// HealthTimeout bounds one status request (generous: a busy guest answers late).
	// HealthGrace is how long after a boot, restart or start a WorkSpace is not judged
	// ("If you just rebooted or started your WorkSpace, wait a few minutes").
	HealthTimeout Duration `yaml:"healthTimeout"`
	HealthGrace   Duration `yaml:"healthGrace"`
	// SnapshotInterval is how often a healthy WorkSpace's volumes are snapshotted: the
	// guide's 12 hours unless set (shorter only for labs and tests).
	SnapshotInterval Duration `yaml:"snapshotInterval"`
	// SiteTimeZone is the site's IANA time zone (the guide's "time zone of the AWS
	// Region"), in which the maintenance windows open (hostd/maintenance). Unset: no
	// automatic maintenance, since hostd cannot tell the site's night from its day.
	SiteTimeZone string `yaml:"siteTimeZone"`
	// TerminatedRetention is how long a TERMINATED record stays visible.
	TerminatedRetention Duration `yaml:"terminatedRetention"`
	// Memory is the guest-memory hygiene policy.
	Memory Memory `yaml:"memory"`
	// Guests is how WorkSpaces' qemu processes are confined.
	Guests Guests `yaml:"guests"`
	// Quotas are the guide's defaults, raised per host.
	Quotas Quotas `yaml:"quotas"`
	// Metrics is hostd's Prometheus exporter (hostd/metrics); no listen address: none.
	Metrics HostdMetrics `yaml:"metrics"`

	ComputeTypes map[catalog.ComputeType]catalog.Hardware `yaml:"computeTypes"`

	// The catalog sections of older host configs. The catalog lives in hostd's store now:
	// hostd imports these once (LegacyCatalog) and refuses them afterwards (CatalogMoved).
	Images      []catalog.Image     `yaml:"images"`
	Bundles     []catalog.Bundle    `yaml:"bundles"`
	Directories []catalog.Directory `yaml:"directories"`
}

// Libvirt locates libvirtd.
type Libvirt struct {
	// Socket is libvirtd's read-write unix socket.
	Socket string `yaml:"socket"`
	// Pool is the name of the libvirt storage pool hostd keeps WorkSpace volumes in.
	Pool string `yaml:"pool"`
	// DomainType is "kvm" on hardware that runs guests natively, "qemu" (software
	// emulation, TCG) where it cannot, such as nested development machines.
	DomainType string `yaml:"domainType"`
}

// HostdMetrics configures hostd's Prometheus exporter.
type HostdMetrics struct {
	// Listen is the plain-HTTP address of /metrics, e.g. 127.0.0.1:9171.
	Listen string `yaml:"listen"`
}

// API configures the admin API.
type API struct {
	// Listen is the HTTPS address on the management network, e.g. 10.0.0.1:8443; empty
	// disables HTTPS.
	Listen string `yaml:"listen"`
	// Socket is the root-only unix socket the local console and CLI use.
	Socket string `yaml:"socket"`
	// BrokerGroup, if set, also lets processes whose primary group it is use the socket,
	// for the calls a connection broker makes (DescribeWorkspaces, StartWorkspaces,
	// ReportConnections, DescribeCatalog): zeroclient, once it has dropped root, runs in
	// this group.
	BrokerGroup string `yaml:"brokerGroup"`
	// TLSCert and TLSKey are PEM files; if both are empty a self-signed certificate is
	// made and kept under DataDir.
	TLSCert string `yaml:"tlsCert"`
	TLSKey  string `yaml:"tlsKey"`
	// Region is the SigV4 region clients sign for.
	Region     string      `yaml:"region"`
	AccessKeys []AccessKey `yaml:"accessKeys"`
	// Throttle is the per-access-key token bucket (guide: 2 calls/s, burst 5).
	Throttle Throttle `yaml:"throttle"`
}

// AccessKey is an administrator's credential for SigV4. The secret is given inline
// (Secret) or, on an appliance, as a file of its own on /perm (SecretFile, mode 0600):
// an image or PXE bundle never carries it (imagebuild refuses an inline one).
type AccessKey struct {
	ID         string `yaml:"id"`
	Secret     string `yaml:"secret"`
	SecretFile string `yaml:"secretFile"`
	Name       string `yaml:"name"`
}

// Throttle is a token bucket.
type Throttle struct {
	Rate  float64 `yaml:"rate"`
	Burst int     `yaml:"burst"`
}

// Network names the VM bridges WorkSpaces attach to when netcfg does not manage the host's
// network (development machines, tests).
type Network struct {
	ManagementBridge string `yaml:"managementBridge"`
	PrimaryBridge    string `yaml:"primaryBridge"`
}

// Memory is the guest-memory hygiene policy.
type Memory struct {
	// RequireInitOnFree refuses to start WorkSpaces unless the kernel runs with
	// init_on_free=1. Default true (the appliance image sets it); test harnesses on
	// development machines, which may not, set it to false explicitly.
	RequireInitOnFree *bool `yaml:"requireInitOnFree"`
	// HugePages backs guest RAM with 2 MiB pages (default true): the teardown scrub runs at
	// memory speed, and hostd grows the kernel's huge page pool as WorkSpaces start. false
	// uses 4 KiB pages, whose scrub is several times slower.
	HugePages *bool `yaml:"hugePages"`
}

// Guests is how WorkSpaces' qemu processes are confined (hostd/confine).
type Guests struct {
	// User and Group run qemu; they must be libvirt's qemu.conf user and group. Default
	// libvirt-qemu and that user's group. qemu never runs as root.
	User  string `yaml:"user"`
	Group string `yaml:"group"`
	// DisplayGroup may connect to WorkSpaces' VNC sockets: the group zeroclient's gateway
	// runs in. Empty: only root may.
	DisplayGroup string `yaml:"displayGroup"`
	// CgroupLimits puts each WorkSpace under cgroup v2 limits, CPU time of its vCPU count
	// and host memory of its RAM plus qemu's overhead (default true). Needs cgroup v2 with
	// the cpu and memory controllers; hostd refuses to start WorkSpaces without them.
	CgroupLimits *bool `yaml:"cgroupLimits"`
}

// InitOnFreeRequired is RequireInitOnFree with its default (true).
func (m Memory) InitOnFreeRequired() bool { return m.RequireInitOnFree == nil || *m.RequireInitOnFree }

// Quotas are per-host limits.
type Quotas struct {
	Workspaces int `yaml:"workspaces"`
	// Graphics and GraphicsPro cap live WorkSpaces of those compute types; the guide's
	// default is 0 (guide-catalog §23): raise them once the host has the GPUs.
	Graphics    int `yaml:"graphics"`
	GraphicsPro int `yaml:"graphicsPro"`
}

// Duration is a time.Duration written as "20m" in YAML.
type Duration struct{ time.Duration }

func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("line %d: duration %q: %w", n.Line, s, err)
	}
	if v < 0 {
		return fmt.Errorf("line %d: duration %q is negative", n.Line, s)
	}
	d.Duration = v
	return nil
}

func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// Load reads and validates the config file at path.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("host config: %w", err)
	}
	c, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("host config %s: %w", path, err)
	}
	return c, nil
}

// Parse decodes a config strictly, fills defaults and validates it: it is the one
// validator of the host config, for every component and their check-config commands.
// Every section it is given is checked: hostd, init (while decoding), init.network (by
// netcfg's rules, see RegisterNetworkValidator) and zeroclient.
func Parse(b []byte) (*Config, error) {
	var c Config
	if err := strictyaml.Decode(b, &c); err != nil {
		return nil, err
	}
	c.Hostd.defaults()
	if err := c.Hostd.validate(c.ManagedNetwork()); err != nil {
		return nil, err
	}
	if err := c.validateNetwork(); err != nil {
		return nil, err
	}
	var top map[string]yaml.Node
	if err := yaml.Unmarshal(b, &top); err == nil {
		if _, ok := top["zeroclient"]; ok { // a host without the broker has no section
			c.hasZeroclient = true
			if _, err := c.Zeroclient.Resolved(); err != nil {
				return nil, err
			}
		}
	}
	return &c, nil
}

// HasZeroclient reports whether the config has a zeroclient section (a host without the
// broker has none).
func (c *Config) HasZeroclient() bool { return c.hasZeroclient }
