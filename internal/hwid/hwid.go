// Package hwid is a host's hardware identity, and the per-host overrides keyed by it.
//
// One generic image boots every host, so whatever belongs to one machine (which NIC is
// which, its host name) cannot be in the image. It is found by rule at boot, and where the
// rule is not enough it is overridden per host, keyed by the hardware identity: the DMI
// system UUID (/sys/class/dmi/id/product_uuid), or, when the firmware reports none or a
// placeholder, the management NIC's MAC.
//
// The overrides are a small file on /perm (OverridesFile) that init reads at boot before
// it chooses the NICs. It is the hook for the fleet: hostd, which will hold every host's
// overrides in the fleet store, writes this file (WriteOverrides) for the host it runs
// on, and init applies it at the next boot. An operator may also write it by hand.
package hwid

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"

	"deskhost/internal/atomicfile"
	"deskhost/internal/strictyaml"
)

// Kinds of identity.
const (
	KindDMI = "dmi-uuid"
	KindMAC = "mac"
)

// ID is a hardware identity, written "dmi-uuid:4c4c4544-..." or "mac:52:54:00:12:34:56".
type ID struct {
	Kind  string
	Value string
}

func (id ID) String() string {
	if id.Kind == "" {
		return ""
	}
	return id.Kind + ":" + id.Value
}

// IsZero reports whether id is unknown.
func (id ID) IsZero() bool { return id.Kind == "" }

var uuidRe = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// Placeholders firmware reports instead of a real system UUID: no two hosts must share an
// identity, so these count as none.
var placeholderUUIDs = map[string]bool{
	"00000000-0000-0000-0000-000000000000": true,
	"ffffffff-ffff-ffff-ffff-ffffffffffff": true,
	"03000200-0400-0500-0006-000700080009": true, // a common OEM default ("To be filled by O.E.M.")
	"12345678-1234-5678-90ab-cddeefaabbcc": true,
}

// ParseID parses an ID's String form.
func ParseID(s string) (ID, error) {
	kind, v, ok := strings.Cut(strings.TrimSpace(s), ":")
	switch {
	case !ok:
	case kind == KindDMI:
		v = strings.ToLower(v)
		if uuidRe.MatchString(v) && !placeholderUUIDs[v] {
			return ID{KindDMI, v}, nil
		}
	case kind == KindMAC:
		if mac, err := net.ParseMAC(v); err == nil && len(mac) == 6 {
			return ID{KindMAC, mac.String()}, nil
		}
	}
	return ID{}, fmt.Errorf("hardware id %q: want dmi-uuid:UUID or mac:aa:bb:cc:dd:ee:ff", s)
}

// DMIPath is where Linux shows the firmware's system UUID (root may read it).
const DMIPath = "class/dmi/id/product_uuid"

// Read returns the host's identity: the DMI system UUID below sysRoot (normally /sys),
// else mgmtMAC. It fails only when there is neither.
func Read(sysRoot string, mgmtMAC net.HardwareAddr) (ID, error) {
	b, err := os.ReadFile(filepath.Join(sysRoot, DMIPath))
	if err == nil {
		if id, err := ParseID(KindDMI + ":" + strings.TrimSpace(string(b))); err == nil {
			return id, nil
		}
	}
	if len(mgmtMAC) == 6 {
		return ID{KindMAC, mgmtMAC.String()}, nil
	}
	return ID{}, errors.New("hardware id: the firmware reports no system UUID and there is no management NIC")
}

// OverridesFile is where init reads a host's overrides.
const OverridesFile = "/perm/init/overrides.yaml"

// Overrides are the settings of one host that a shared config cannot hold.
//
//	hardwareId: dmi-uuid:4c4c4544-0042-3510-8052-b4c04f565931
//	hostname: rack3-u12
//	management: {mac: "3c:ec:ef:01:02:03"}
//	primary: {name: enp65s0f1}
type Overrides struct {
	// HardwareID is the host these are for: on another host (a disk moved) they are
	// ignored.
	HardwareID string `yaml:"hardwareId"`
	// Hostname replaces the config's init.hostname.
	Hostname string `yaml:"hostname"`
	// Management and Primary pin a NIC role by name or MAC (both must agree).
	Management NIC `yaml:"management"`
	Primary    NIC `yaml:"primary"`
}

// NIC pins a NIC by name and/or MAC.
type NIC struct {
	Name string `yaml:"name"`
	MAC  string `yaml:"mac"`
}

// Empty reports whether the NIC is not pinned.
func (n NIC) Empty() bool { return n.Name == "" && n.MAC == "" }

var (
	hostnameRe = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	ifnameRe   = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,15}$`)
)

// ParseOverrides decodes and checks an overrides file strictly; errors name the field.
func ParseOverrides(b []byte) (*Overrides, error) {
	var o Overrides
	if err := strictyaml.Decode(b, &o); err != nil {
		return nil, fmt.Errorf("overrides: %w", err)
	}
	return &o, o.Validate()
}

// Validate checks the overrides; every error names its field.
func (o *Overrides) Validate() error {
	var errs []error
	if _, err := ParseID(o.HardwareID); err != nil {
		errs = append(errs, fmt.Errorf("overrides: hardwareId: %w", err))
	}
	if o.Hostname != "" && !hostnameRe.MatchString(o.Hostname) {
		errs = append(errs, fmt.Errorf("overrides: hostname %q: lower-case letters, digits and '-', at most 63", o.Hostname))
	}
	for _, n := range []struct {
		field string
		nic   NIC
	}{{"management", o.Management}, {"primary", o.Primary}} {
		if n.nic.Name != "" && (!ifnameRe.MatchString(n.nic.Name) || n.nic.Name == "." || n.nic.Name == "..") {
			errs = append(errs, fmt.Errorf("overrides: %s.name %q: an interface name", n.field, n.nic.Name))
		}
		if n.nic.MAC != "" {
			if mac, err := net.ParseMAC(n.nic.MAC); err != nil || len(mac) != 6 {
				errs = append(errs, fmt.Errorf("overrides: %s.mac %q: an Ethernet MAC address", n.field, n.nic.MAC))
			}
		}
	}
	if !o.Management.Empty() && o.Management == o.Primary {
		errs = append(errs, errors.New("overrides: management and primary pin the same NIC"))
	}
	return errors.Join(errs...)
}

// LoadOverrides reads the overrides file for host id. It returns nil without an error
// when there is no file; a file for another host is an error that says so (the caller
// ignores it and tells the operator).
func LoadOverrides(path string, id ID) (*Overrides, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	o, err := ParseOverrides(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if want, _ := ParseID(o.HardwareID); want != id {
		return nil, fmt.Errorf("%s is for host %s, this is %s: ignored", path, want, id)
	}
	return o, nil
}

// WriteOverrides writes the overrides file (0600), replacing it whole. hostd calls it with
// what the fleet store holds for its host; init applies it at the next boot.
func WriteOverrides(path string, o *Overrides) error {
	if err := o.Validate(); err != nil {
		return err
	}
	b, err := yaml.Marshal(o)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return atomicfile.WriteFile(path, b, 0o600)
}
