// Package nicroles chooses, once per boot, which of the host's NICs is the management NIC
// and which the primary one, so that one image boots any host whatever its MAC addresses.
// In order of precedence:
//
//  1. a pin: the per-host overrides (package hwid) or the host config name the NIC by
//     name or MAC;
//  2. management: the NIC the host network-booted from, as the boot loader says on the
//     kernel command line (BOOTIF=, from the iPXE script `imagebuild build` writes, or
//     pxelinux's IPAPPEND 2);
//  3. management: the first NIC, in the kernel's order, with carrier that gets a DHCP lease;
//  4. primary: another NIC, the first with carrier, else the first.
//
// init resolves the roles and writes the chosen NICs' names and MACs into the config the
// services read, so init, hostd and netcfg never disagree; the console shows each NIC's
// role and the rule that gave it (Result.Lines).
package nicroles

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
)

// Roles.
const (
	Management = "management"
	Primary    = "primary"
)

// NIC is a physical Ethernet interface, in the kernel's order (Index).
type NIC struct {
	Name    string
	MAC     net.HardwareAddr
	Index   int
	Carrier bool
}

// Pin fixes a role to a NIC by name and/or MAC; By says who pinned it ("the host
// config", "the per-host overrides").
type Pin struct {
	Name, MAC string
	By        string
}

// Empty reports whether p pins nothing.
func (p Pin) Empty() bool { return p.Name == "" && p.MAC == "" }

func (p Pin) String() string {
	switch {
	case p.Name != "" && p.MAC != "":
		return p.Name + " (" + p.MAC + ")"
	case p.Name != "":
		return "name " + p.Name
	default:
		return "MAC " + p.MAC
	}
}

// Rules, as the status screen abbreviates them.
const (
	RulePinned   = "pinned"
	RuleBootIF   = "BOOTIF"
	RuleDHCP     = "first DHCP lease"
	RuleOther    = "other NIC"
	RuleFallback = "fallback"
)

// Choice is one role's NIC and why.
type Choice struct {
	Role string
	NIC  NIC
	Rule string // one of the Rule constants
	Why  string // for people: "network-booted from it (BOOTIF)"
}

// Result is the boot's NIC roles.
type Result struct {
	Management, Primary *Choice // nil: no NIC for the role
	NICs                []NIC
	// Problems are what the operator should know (a pin that matched no NIC, no lease
	// anywhere); init raises them as alarms.
	Problems []string
}

// Role returns the choice for role, or nil.
func (r *Result) Role(role string) *Choice {
	if role == Management {
		return r.Management
	}
	if role == Primary {
		return r.Primary
	}
	return nil
}

// Lines describes every NIC, one line each, e.g.
// "eth1 52:54:00:12:34:56: management - network-booted from it (BOOTIF)".
func (r *Result) Lines() []string {
	var out []string
	for _, n := range r.NICs {
		role := "unused"
		for _, c := range []*Choice{r.Management, r.Primary} {
			if c != nil && c.NIC.Name == n.Name {
				role = c.Role + " - " + c.Why
			}
		}
		if role == "unused" && !n.Carrier {
			role = "unused (no carrier)"
		}
		out = append(out, fmt.Sprintf("%s %s: %s", n.Name, n.MAC, role))
	}
	return out
}

// Input is what Resolve decides from.
type Input struct {
	// NICs are the candidates, in the kernel's order (List).
	NICs []NIC
	// BootIF is the MAC the host network-booted from (ParseBootIF), nil if none.
	BootIF net.HardwareAddr
	// Management and Primary are pins; empty ones leave the role to the rules.
	Management, Primary Pin
	// FirstLease returns the first of nics, in order, with carrier that gets a DHCP
	// lease (DHCPProbe). It is called only when the management NIC is left to that rule.
	FirstLease func(ctx context.Context, nics []NIC) (NIC, error)
}

// Resolve chooses the roles. It never fails: what it cannot do well it does as well as
// it can and says so in Problems.
func Resolve(ctx context.Context, in Input) Result {
	r := Result{NICs: in.NICs}
	if len(in.NICs) == 0 {
		r.Problems = append(r.Problems, "no Ethernet NIC found (are its drivers in the image?)")
		return r
	}
	// Pins first.
	if !in.Management.Empty() {
		if n, err := find(in.NICs, in.Management); err != nil {
			r.Problems = append(r.Problems, fmt.Sprintf("%s pins the management NIC to %s: %v; choosing it by rule instead", in.Management.By, in.Management, err))
		} else {
			r.Management = &Choice{Management, n, RulePinned, "pinned by " + in.Management.String() + " in " + in.Management.By}
		}
	}
	if !in.Primary.Empty() {
		if n, err := find(in.NICs, in.Primary); err != nil {
			r.Problems = append(r.Problems, fmt.Sprintf("%s pins the primary NIC to %s: %v; choosing it by rule instead", in.Primary.By, in.Primary, err))
		} else if r.Management != nil && r.Management.NIC.Name == n.Name {
			r.Problems = append(r.Problems, fmt.Sprintf("%s pins the primary NIC to %s, the management NIC; choosing it by rule instead", in.Primary.By, in.Primary))
		} else {
			r.Primary = &Choice{Primary, n, RulePinned, "pinned by " + in.Primary.String() + " in " + in.Primary.By}
		}
	}
	others := func(exclude *Choice) []NIC {
		var out []NIC
		for _, n := range in.NICs {
			if exclude == nil || n.Name != exclude.NIC.Name {
				out = append(out, n)
			}
		}
		return out
	}
	if r.Management == nil {
		cands := others(r.Primary)
		if in.BootIF != nil {
			if n, ok := byMAC(cands, in.BootIF); ok {
				r.Management = &Choice{Management, n, RuleBootIF, "network-booted from it (BOOTIF)"}
			} else {
				r.Problems = append(r.Problems, fmt.Sprintf("BOOTIF=%s (the NIC the host network-booted from) is not among the NICs %s; choosing the management NIC by DHCP instead", in.BootIF, names(cands)))
			}
		}
		if r.Management == nil && len(cands) > 0 {
			var err error
			var n NIC
			if in.FirstLease == nil {
				err = errors.New("no DHCP probe")
			} else {
				n, err = in.FirstLease(ctx, cands)
			}
			if err == nil {
				r.Management = &Choice{Management, n, RuleDHCP, "first NIC with carrier to get a DHCP lease"}
			} else {
				n := firstWithCarrier(cands)
				why := "no NIC got a DHCP lease; the first NIC with carrier"
				if !n.Carrier {
					why = "no NIC got a DHCP lease or has carrier; the first NIC"
				}
				r.Management = &Choice{Management, n, RuleFallback, why}
				r.Problems = append(r.Problems, fmt.Sprintf("management NIC: %v; took %s (%s)", err, n.Name, why))
			}
		}
	}
	if r.Primary == nil {
		cands := others(r.Management)
		if len(cands) == 0 {
			r.Problems = append(r.Problems, "primary NIC: there is no NIC besides the management NIC; WorkSpaces get no primary network")
		} else {
			n := firstWithCarrier(cands)
			why := "the first other NIC with carrier"
			if !n.Carrier {
				why = "the first other NIC (none has carrier)"
			}
			r.Primary = &Choice{Primary, n, RuleOther, why}
		}
	}
	return r
}

func find(nics []NIC, p Pin) (NIC, error) {
	var mac net.HardwareAddr
	if p.MAC != "" {
		m, err := net.ParseMAC(p.MAC)
		if err != nil {
			return NIC{}, fmt.Errorf("MAC %q: %w", p.MAC, err)
		}
		mac = m
	}
	for _, n := range nics {
		if p.Name != "" && n.Name != p.Name {
			continue
		}
		if mac != nil && !sameMAC(n.MAC, mac) {
			if p.Name != "" {
				return NIC{}, fmt.Errorf("%s has MAC %s", n.Name, n.MAC)
			}
			continue
		}
		return n, nil
	}
	return NIC{}, fmt.Errorf("no such NIC among %s", names(nics))
}

func byMAC(nics []NIC, mac net.HardwareAddr) (NIC, bool) {
	for _, n := range nics {
		if sameMAC(n.MAC, mac) {
			return n, true
		}
	}
	return NIC{}, false
}

func sameMAC(a, b net.HardwareAddr) bool { return strings.EqualFold(a.String(), b.String()) }

func firstWithCarrier(nics []NIC) NIC {
	for _, n := range nics {
		if n.Carrier {
			return n
		}
	}
	return nics[0]
}

func names(nics []NIC) string {
	var s []string
	for _, n := range nics {
		s = append(s, n.Name+" "+n.MAC.String())
	}
	if len(s) == 0 {
		return "(none)"
	}
	return strings.Join(s, ", ")
}

// ParseBootIF parses the kernel command line's BOOTIF: iPXE's ${netX/mac}
// ("52:54:00:12:34:56", or with hyphens) or pxelinux's "01-52-54-00-12-34-56", whose
// first byte is the ARP hardware type (1, Ethernet).
func ParseBootIF(s string) (net.HardwareAddr, error) {
	v := strings.TrimSpace(s)
	if parts := strings.FieldsFunc(v, func(r rune) bool { return r == '-' || r == ':' }); len(parts) == 7 {
		if parts[0] != "01" {
			return nil, fmt.Errorf("BOOTIF=%s: hardware type %s is not Ethernet (01)", s, parts[0])
		}
		v = strings.Join(parts[1:], ":")
	}
	mac, err := net.ParseMAC(strings.ReplaceAll(v, "-", ":"))
	if err != nil || len(mac) != 6 {
		return nil, fmt.Errorf("BOOTIF=%s: want a MAC address (aa:bb:cc:dd:ee:ff or pxelinux's 01-aa-bb-cc-dd-ee-ff)", s)
	}
	return mac, nil
}
