// Package config is netcfg's desired network state: the YAML file that
// `netcfg apply --config FILE` reads, and the struct hostd fills in and hands
// to the reconciler. Decode is strict (unknown keys, duplicate keys, trailing
// documents and wrong types are errors) and Validate names the offending field
// in every error, e.g. `interfaces.primary.addresses[0]: invalid CIDR "10.0.0.300/24"`.
//
// A config that fails Decode or Validate must never reach the kernel: the
// reconciler validates first and changes nothing on error.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Config is the whole desired network state of one host.
type Config struct {
	// StateFile is where netcfg persists what must never change once chosen:
	// the management range (write-once) and each WorkSpace's management address.
	StateFile string `yaml:"stateFile"`
	// Interfaces are the host's two physical NICs.
	Interfaces Interfaces `yaml:"interfaces"`
	// Host lists the host's own listeners on the management (client-facing) NIC.
	Host HostServices `yaml:"host"`
	// ManagementNetwork is br-mgmt, the internal network of the VMs' eth0.
	ManagementNetwork ManagementNetwork `yaml:"managementNetwork"`
	// PrimaryNetwork is br-primary as the VMs' eth1 see it.
	PrimaryNetwork PrimaryNetwork `yaml:"primaryNetwork"`
	// IPGroups are IP access control groups (client source allow-lists).
	IPGroups []IPGroup `yaml:"ipGroups"`
	// Directories are the registered directories with their associated groups.
	Directories []Directory `yaml:"directories"`
	// SecurityGroups are primary-NIC firewalls. Every directory gets
	// "<id>_workspacesMembers" (directory-controller ports, undeletable) and
	// "<id>_controllers" implicitly; listing them here adds rules to them.
	SecurityGroups []SecurityGroup `yaml:"securityGroups"`
	// WorkSpaces are the VMs whose taps, addresses and chains netcfg maintains.
	WorkSpaces []WorkSpace `yaml:"workspaces"`
}

// Interfaces names the host's two NICs.
type Interfaces struct {
	// Management is the client-facing NIC: broker (443), streaming (4172/4195)
	// and the admin API.
	Management NIC `yaml:"management"`
	// Primary is the customer LAN NIC. It becomes a port of br-primary and its
	// addresses move to br-primary.
	Primary NIC `yaml:"primary"`
}

// NIC selects a physical interface by name or MAC (or both, which must agree)
// and says how it is addressed.
type NIC struct {
	Name      string   `yaml:"name"`
	MAC       string   `yaml:"mac"`
	DHCP      bool     `yaml:"dhcp"`
	Addresses []string `yaml:"addresses"` // "10.0.0.5/24"
	Gateway   string   `yaml:"gateway"`   // default route; at most one NIC
	Routes    []Route  `yaml:"routes"`
	MTU       int      `yaml:"mtu"` // 0 keeps the current MTU
}

// Route is a static route through a NIC.
type Route struct {
	Destination string `yaml:"destination"` // CIDR
	Via         string `yaml:"via"`         // gateway address
}

// HostServices are the ports the host itself answers on its management NIC.
// Streaming (TCP/UDP 4172 and 4195) is always open to allowed clients.
type HostServices struct {
	BrokerPort   int      `yaml:"brokerPort"`   // default 443
	AdminPort    int      `yaml:"adminPort"`    // default 8443
	AdminSources []string `yaml:"adminSources"` // CIDRs; empty = any source
	// FleetPorts are the TCP ports a fleet host's peers reach it on (its fleet port, its
	// etcd member's client and peer ports), open to any source on the management NIC:
	// the fleet's etcd authenticates peers by the fleet CA's mutual TLS, and a host that
	// asks to join gets nothing until an administrator approves it. hostd adds its own
	// when it keeps the network; a host whose network netcfg's service keeps lists them.
	FleetPorts []int `yaml:"fleetPorts"`
}

// ManagementNetwork configures br-mgmt.
type ManagementNetwork struct {
	// Candidates is the ordered list of ranges to pick br-mgmt's range from;
	// the first not overlapping the host's networks is chosen once and kept.
	Candidates   []string `yaml:"candidates"`
	LeaseSeconds int      `yaml:"leaseSeconds"` // DHCP lease time, default 86400
	MTU          int      `yaml:"mtu"`          // 0 = 1500
}

// PrimaryNetwork configures what WorkSpaces may send and receive on
// br-primary beyond IPv4 and ARP for their own addresses.
type PrimaryNetwork struct {
	// IPv6 is what happens to the WorkSpaces' IPv6 on br-primary: "drop" (the
	// default; also when empty) or "unfiltered": IPv6 frames with the
	// WorkSpace's own MAC cross br-primary in both directions, judged by no
	// security group (security groups are IPv4 only) and no source address
	// check. The management network never carries IPv6.
	IPv6 string `yaml:"ipv6"`
	// DHCP, when set, has netcfg serve the WorkSpaces' primary NICs their addresses on
	// br-primary: each WorkSpace's primaryAddress, which hostd allocates from Pool.
	DHCP *PrimaryDHCP `yaml:"dhcp"`
}

// PrimaryDHCP is the DHCP service netcfg runs on br-primary for the WorkSpaces' primary
// NICs. It answers only the WorkSpaces' primary MACs, each with its fixed address; the
// host answers from its own static address in Subnet (interfaces.primary.addresses).
type PrimaryDHCP struct {
	Subnet string `yaml:"subnet"` // "10.0.2.0/24": the mask the guests get
	Pool   string `yaml:"pool"`   // "10.0.2.100-10.0.2.199": the WorkSpaces' addresses
	Router string `yaml:"router"` // the guests' default route; empty: none
}

// Values of PrimaryNetwork.IPv6.
const (
	IPv6Drop       = "drop"
	IPv6Unfiltered = "unfiltered"
)

// IPGroup is an IP access control group.
type IPGroup struct {
	ID          string   `yaml:"id"`
	Name        string   `yaml:"name"`
	Description string   `yaml:"description"`
	Rules       []IPRule `yaml:"rules"`
}

// IPRule allows one source (an address or a CIDR).
type IPRule struct {
	Source      string `yaml:"source"`
	Description string `yaml:"description"`
}

// Directory is a registered directory.
type Directory struct {
	ID string `yaml:"id"`
	// IPGroups are the associated IP access control groups. None = all
	// sources allowed; associated groups without rules = all denied.
	IPGroups []string `yaml:"ipGroups"`
	// Controllers are the directory controllers' addresses (DNS, Kerberos,
	// LDAP, SMB, RPC...), the destinations of the default members group.
	Controllers []string `yaml:"controllers"`
	// ClientAddresses optionally restricts the directory's allow-list to these
	// host addresses (when directories' clients use distinct host addresses).
	// Without it the client ports accept the union over all directories.
	ClientAddresses []string `yaml:"clientAddresses"`
}

// SecurityGroup is a stateful allow-list on a VM's primary NIC.
type SecurityGroup struct {
	ID          string   `yaml:"id"`
	Description string   `yaml:"description"`
	Presets     []string `yaml:"presets"` // "internet": TCP 80 and 443 to 0.0.0.0/0
	Ingress     []SGRule `yaml:"ingress"`
	Egress      []SGRule `yaml:"egress"`
}

// SGRule allows a protocol and port range from (ingress) or to (egress) a CIDR.
type SGRule struct {
	Protocol    string `yaml:"protocol"` // tcp, udp, icmp, all
	FromPort    int    `yaml:"fromPort"` // tcp/udp: 1-65535
	ToPort      int    `yaml:"toPort"`   // default FromPort
	CIDR        string `yaml:"cidr"`
	Description string `yaml:"description"`
}

// WorkSpace is one VM.
type WorkSpace struct {
	ID             string   `yaml:"id"`        // ws- + 1..11 [a-z0-9]; names the taps
	Directory      string   `yaml:"directory"` // its directory
	SecurityGroups []string `yaml:"securityGroups"`
	ManagementMAC  string   `yaml:"managementMAC"` // default taps.MACs
	PrimaryMAC     string   `yaml:"primaryMAC"`
	// PrimaryAddress is the WorkSpace's IPv4 address on the primary network
	// (guest eth1), e.g. "10.0.2.11": the only source address, and the only
	// ARP sender address, its primary NIC may use. Empty (netcfg does not
	// know one yet): the NIC may send nothing but DHCP requests from 0.0.0.0
	// to 255.255.255.255 and ARP probes (sender 0.0.0.0) until one is set.
	PrimaryAddress string `yaml:"primaryAddress"`
	Hostname       string `yaml:"hostname"`
	UserName       string `yaml:"userName"` // served by the metadata service (workspaces/user-name)
	UserData       string `yaml:"userData"` // served by the metadata service
}

// MaxSize bounds a config file (100,000 ACL rules fit comfortably).
const MaxSize = 64 << 20

// Load reads and strictly decodes a config file (it does not Validate).
func Load(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("config: read %s: %w", path, err)
	}
	if len(data) > MaxSize {
		return nil, fmt.Errorf("config: %s is larger than %d bytes", path, MaxSize)
	}
	c, err := Decode(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// Decode strictly decodes YAML: unknown keys are errors naming their path,
// as are duplicate keys, wrong types and more than one document.
func Decode(data []byte) (*Config, error) {
	var root yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("config: empty document")
		}
		return nil, fmt.Errorf("config: %w", err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
		return nil, fmt.Errorf("config: line %d: more than one YAML document", extra.Line)
	}
	if err := checkKnown(&root, reflect.TypeOf(Config{}), "", 0); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	var c Config
	if err := root.Decode(&c); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return &c, nil
}

// checkKnown walks the YAML tree against the Go type and reports the first
// mapping key that has no field, with its dotted path.
func checkKnown(n *yaml.Node, t reflect.Type, path string, depth int) error {
	if depth > 64 {
		return fmt.Errorf("%s: nested too deeply", orRoot(path))
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			if err := checkKnown(c, t, path, depth+1); err != nil {
				return err
			}
		}
		return nil
	case yaml.AliasNode:
		return fmt.Errorf("line %d: %s: YAML aliases are not allowed", n.Line, orRoot(path))
	case yaml.MappingNode:
		switch t.Kind() {
		case reflect.Struct:
			fields := map[string]reflect.Type{}
			for i := 0; i < t.NumField(); i++ {
				f := t.Field(i)
				name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
				if name == "" || name == "-" {
					continue
				}
				fields[name] = f.Type
			}
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				ft, ok := fields[k.Value]
				if !ok || k.Kind != yaml.ScalarNode {
					return fmt.Errorf("line %d: %s: unknown field %q", k.Line, join(path, k.Value), k.Value)
				}
				if err := checkKnown(v, ft, join(path, k.Value), depth+1); err != nil {
					return err
				}
			}
			return nil
		case reflect.Map:
			for i := 0; i+1 < len(n.Content); i += 2 {
				if err := checkKnown(n.Content[i+1], t.Elem(), join(path, n.Content[i].Value), depth+1); err != nil {
					return err
				}
			}
			return nil
		default:
			return fmt.Errorf("line %d: %s: expected %s, got a mapping", n.Line, orRoot(path), kindName(t))
		}
	case yaml.SequenceNode:
		if t.Kind() != reflect.Slice {
			return fmt.Errorf("line %d: %s: expected %s, got a list", n.Line, orRoot(path), kindName(t))
		}
		for i, c := range n.Content {
			if err := checkKnown(c, t.Elem(), fmt.Sprintf("%s[%d]", path, i), depth+1); err != nil {
				return err
			}
		}
		return nil
	case yaml.ScalarNode:
		if (t.Kind() == reflect.Struct || t.Kind() == reflect.Slice || t.Kind() == reflect.Map) && n.Tag != "!!null" {
			return fmt.Errorf("line %d: %s: expected %s, got %q", n.Line, orRoot(path), kindName(t), n.Value)
		}
	}
	return nil
}

func kindName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Struct, reflect.Map:
		return "a mapping"
	case reflect.Slice:
		return "a list"
	case reflect.Bool:
		return "true or false"
	case reflect.Int:
		return "a number"
	}
	return "a string"
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func orRoot(path string) string {
	if path == "" {
		return "(document)"
	}
	return path
}
