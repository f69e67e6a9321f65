package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"time"
	"unsafe"

	"deskhost/internal/addrpool"
	"deskhost/netcfg/cidrset"
	"deskhost/netcfg/taps"
)

// Fixed ports of the guide (catalog §13.1).
const (
	PCoIPPort = 4172
	WSPPort   = 4195
)

// DefaultCandidates are the guide's management ranges, in order (catalog §12.3).
var DefaultCandidates = []string{"198.19.0.0/16", "192.168.0.0/16", "172.31.0.0/16"}

// FieldError is one problem with one field.
type FieldError struct {
	Field string // dotted path, e.g. "ipGroups[2].rules[0].source"
	Msg   string
}

func (e FieldError) Error() string { return e.Field + ": " + e.Msg }

// ValidationError lists every problem found.
type ValidationError struct{ Errs []FieldError }

func (e *ValidationError) Error() string {
	const max = 20
	var b strings.Builder
	b.WriteString("invalid config: ")
	for i, fe := range e.Errs {
		if i == max {
			fmt.Fprintf(&b, "; and %d more", len(e.Errs)-max)
			break
		}
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(fe.Error())
	}
	return b.String()
}

// Fields returns the names of the offending fields.
func (e *ValidationError) Fields() []string {
	var out []string
	for _, fe := range e.Errs {
		out = append(out, fe.Field)
	}
	return out
}

// Model is a validated config with every value parsed. The reconciler works
// only from a Model.
type Model struct {
	StateFile     string
	Mgmt, Primary NICModel
	BrokerPort    uint16
	AdminPort     uint16
	AdminSources  []netip.Prefix // empty = any
	FleetPorts    []uint16
	Candidates    []netip.Prefix
	LeaseTime     time.Duration
	MgmtMTU       int
	// PrimaryIPv6 lets the WorkSpaces' IPv6 cross br-primary unfiltered
	// (primaryNetwork.ipv6: unfiltered); false drops it.
	PrimaryIPv6 bool
	// PrimaryDHCP is the WorkSpaces' DHCP service on br-primary; nil: none.
	PrimaryDHCP *PrimaryDHCPModel
	Groups      map[string]*GroupModel
	Directories []DirectoryModel
	SGs         map[string]*SGModel
	WorkSpaces  []WorkSpaceModel // sorted by ID
}

// PrimaryDHCPModel is a parsed primaryNetwork.dhcp.
type PrimaryDHCPModel struct {
	Subnet   netip.Prefix
	Pool     addrpool.Range
	Router   netip.Addr // invalid: none
	ServerIP netip.Addr // the host's static address in Subnet
}

// NICModel is a parsed NIC.
type NICModel struct {
	Field     string // "interfaces.management"
	Name      string
	MAC       net.HardwareAddr
	DHCP      bool
	Addresses []netip.Prefix
	Gateway   netip.Addr
	Routes    []RouteModel
	MTU       int
}

// RouteModel is a parsed route.
type RouteModel struct {
	Dst netip.Prefix
	Via netip.Addr
}

// GroupModel is a parsed IP access control group.
type GroupModel struct {
	ID    string
	Rules []IPRule       // as given (compared to detect changes)
	Set   cidrset.Set    // union of its sources
	Pfx   []netip.Prefix // parsed Rules[i].Source
	// sorted holds the ranges of Pfx sorted, unmerged (with duplicates), so
	// that a change of a few rules updates Set without sorting again.
	sorted []cidrset.Range
}

// DirectoryModel is a parsed directory.
type DirectoryModel struct {
	ID              string
	Groups          []string // associated group ids, as given
	Controllers     []netip.Addr
	ClientAddresses []netip.Addr
}

// Restricted reports whether the directory has associated groups (and so an
// allow-list); without any, all sources are allowed.
func (d DirectoryModel) Restricted() bool { return len(d.Groups) > 0 }

// Protocol numbers used by security group rules; ProtoAll matches any.
const (
	ProtoAll  uint8 = 0
	ProtoICMP uint8 = 1
	ProtoTCP  uint8 = 6
	ProtoUDP  uint8 = 17
)

// SGModel is a parsed security group.
type SGModel struct {
	ID              string
	Ingress, Egress []SGRuleModel
}

// SGRuleModel is one parsed allow rule.
type SGRuleModel struct {
	Proto    uint8
	From, To uint16 // tcp/udp only
	CIDR     netip.Prefix
	Desc     string
}

// WorkSpaceModel is a parsed WorkSpace.
type WorkSpaceModel struct {
	ID, Directory       string
	MgmtTap, PrimaryTap string
	MgmtMAC, PrimaryMAC net.HardwareAddr
	PrimaryAddr         netip.Addr // invalid: none known yet
	SecurityGroups      []string   // effective: the directory's members group first
	Hostname            string
	UserName            string
	UserData            string
}

// MembersGroup and ControllersGroup name a directory's two default groups.
func MembersGroup(dir string) string     { return dir + "_workspacesMembers" }
func ControllersGroup(dir string) string { return dir + "_controllers" }

// DirectoryControllerRules are catalog §13.4: ports between WorkSpaces and
// their directory controllers, in both directions.
var DirectoryControllerRules = []struct {
	Proto    uint8
	From, To uint16
	Desc     string
}{
	{ProtoTCP, 53, 53, "DNS"}, {ProtoUDP, 53, 53, "DNS"},
	{ProtoTCP, 88, 88, "Kerberos"}, {ProtoUDP, 88, 88, "Kerberos"},
	{ProtoUDP, 123, 123, "NTP"},
	{ProtoTCP, 135, 135, "RPC"},
	{ProtoUDP, 137, 138, "Netlogon"},
	{ProtoTCP, 139, 139, "Netlogon"},
	{ProtoTCP, 389, 389, "LDAP"}, {ProtoUDP, 389, 389, "LDAP"},
	{ProtoTCP, 445, 445, "SMB"}, {ProtoUDP, 445, 445, "SMB"},
	{ProtoTCP, 1024, 65535, "RPC dynamic ports"},
}

// Validate checks a config and returns its parsed Model. Every problem is
// reported with its field path in a *ValidationError.
func Validate(c *Config) (*Model, error) {
	var v Validator
	return v.Validate(c)
}

// Validator validates configs and remembers the IP access control groups it
// parsed last time: with 100,000 CIDRs loaded, re-validating a config where one
// rule changed only re-parses the group that changed. The zero value is ready.
// Not safe for concurrent use.
type Validator struct {
	groups map[string]*GroupModel
}

type errs struct{ list []FieldError }

func (e *errs) add(field, format string, a ...any) {
	e.list = append(e.list, FieldError{field, fmt.Sprintf(format, a...)})
}

// Validate checks c; see the package Validate.
func (v *Validator) Validate(c *Config) (*Model, error) {
	if c == nil {
		return nil, errors.New("invalid config: nil")
	}
	var e errs
	m := &Model{
		Groups: map[string]*GroupModel{},
		SGs:    map[string]*SGModel{},
	}

	if c.StateFile == "" {
		e.add("stateFile", "required (where the write-once management range is kept)")
	} else if !filepath.IsAbs(c.StateFile) {
		e.add("stateFile", "must be an absolute path, got %q", c.StateFile)
	}
	m.StateFile = c.StateFile

	m.Mgmt = parseNIC(&e, "interfaces.management", c.Interfaces.Management)
	m.Primary = parseNIC(&e, "interfaces.primary", c.Interfaces.Primary)
	if m.Mgmt.Name != "" && m.Mgmt.Name == m.Primary.Name {
		e.add("interfaces.primary.name", "same interface %q as interfaces.management.name", m.Primary.Name)
	}
	if m.Mgmt.MAC != nil && m.Primary.MAC != nil && m.Mgmt.MAC.String() == m.Primary.MAC.String() {
		e.add("interfaces.primary.mac", "same interface %s as interfaces.management.mac", m.Primary.MAC)
	}
	if m.Mgmt.Gateway.IsValid() && m.Primary.Gateway.IsValid() {
		e.add("interfaces.primary.gateway", "only one NIC may carry the default route (interfaces.management.gateway is set)")
	}

	m.BrokerPort = port(&e, "host.brokerPort", c.Host.BrokerPort, 443)
	m.AdminPort = port(&e, "host.adminPort", c.Host.AdminPort, 8443)
	for _, p := range []uint16{PCoIPPort, WSPPort} {
		if m.AdminPort == p {
			e.add("host.adminPort", "%d is a streaming port", p)
		}
		if m.BrokerPort == p {
			e.add("host.brokerPort", "%d is a streaming port", p)
		}
	}
	if m.AdminPort != 0 && m.AdminPort == m.BrokerPort {
		e.add("host.adminPort", "same port %d as host.brokerPort", m.AdminPort)
	}
	for i, fp := range c.Host.FleetPorts {
		field := fmt.Sprintf("host.fleetPorts[%d]", i)
		if fp == 0 {
			e.add(field, "port 0 is not a TCP port")
			continue
		}
		p := port(&e, field, fp, 0)
		switch {
		case p == 0:
		case p == PCoIPPort || p == WSPPort:
			e.add(field, "%d is a streaming port", p)
		case p == m.AdminPort || p == m.BrokerPort:
			e.add(field, "%d is the admin or broker port, which IP access control guards", p)
		case slices.Contains(m.FleetPorts, p):
			e.add(field, "%d is listed twice", p)
		default:
			m.FleetPorts = append(m.FleetPorts, p)
		}
	}
	for i, s := range c.Host.AdminSources {
		if p, ok := cidr4(&e, fmt.Sprintf("host.adminSources[%d]", i), s); ok {
			m.AdminSources = append(m.AdminSources, p)
		}
	}

	validateMgmtNet(&e, c, m)
	switch c.PrimaryNetwork.IPv6 {
	case "", IPv6Drop:
	case IPv6Unfiltered:
		m.PrimaryIPv6 = true
	default:
		e.add("primaryNetwork.ipv6", "unknown value %q (%s or %s)", c.PrimaryNetwork.IPv6, IPv6Drop, IPv6Unfiltered)
	}
	validatePrimaryDHCP(&e, c, m)
	v.validateGroups(&e, c, m)
	validateDirectories(&e, c, m)
	validateSGs(&e, c, m)
	validateWorkSpaces(&e, c, m)

	if len(e.list) > 0 {
		return nil, &ValidationError{Errs: e.list}
	}
	// remember parsed groups for the next call
	v.groups = m.Groups
	return m, nil
}

func validatePrimaryDHCP(e *errs, c *Config, m *Model) {
	d := c.PrimaryNetwork.DHCP
	if d == nil {
		return
	}
	const f = "primaryNetwork.dhcp"
	dm := &PrimaryDHCPModel{}
	ok := true
	if p, good := cidr4(e, f+".subnet", d.Subnet); good {
		dm.Subnet = p.Masked()
	} else {
		ok = false
	}
	if r, err := addrpool.Parse(d.Pool); err != nil {
		e.add(f+".pool", "%v", err)
		ok = false
	} else {
		dm.Pool = r
	}
	if d.Router != "" {
		if a, good := addr4(e, f+".router", d.Router); good {
			dm.Router = a
		} else {
			ok = false
		}
	}
	if !ok {
		return
	}
	if !dm.Pool.Within(dm.Subnet) {
		e.add(f+".pool", "%s is not inside subnet %s", dm.Pool, dm.Subnet)
		ok = false
	}
	if dm.Pool.Contains(dm.Subnet.Addr()) || dm.Pool.Contains(lastAddr(dm.Subnet)) {
		e.add(f+".pool", "%s holds the network or broadcast address of %s", dm.Pool, dm.Subnet)
		ok = false
	}
	if dm.Router.IsValid() && (!dm.Subnet.Contains(dm.Router) || dm.Pool.Contains(dm.Router)) {
		e.add(f+".router", "%s must be in subnet %s and outside the pool", dm.Router, dm.Subnet)
		ok = false
	}
	for _, a := range m.Primary.Addresses {
		if dm.Subnet.Contains(a.Addr()) && !dm.ServerIP.IsValid() {
			dm.ServerIP = a.Addr()
		}
		if dm.Pool.Contains(a.Addr()) {
			e.add(f+".pool", "%s holds the host's own address %s (interfaces.primary.addresses)", dm.Pool, a.Addr())
			ok = false
		}
	}
	if !dm.ServerIP.IsValid() {
		e.add(f, "needs a static address of the host in subnet %s (interfaces.primary.addresses), to answer from", dm.Subnet)
		ok = false
	}
	if ok {
		m.PrimaryDHCP = dm
	}
}

// lastAddr is p's broadcast address.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := (uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func parseNIC(e *errs, field string, n NIC) NICModel {
	m := NICModel{Field: field, Name: n.Name, DHCP: n.DHCP, MTU: n.MTU}
	if n.Name == "" && n.MAC == "" {
		e.add(field, "name or mac required")
	}
	if n.Name != "" && !validIfName(n.Name) {
		e.add(field+".name", "invalid interface name %q", n.Name)
	}
	if n.MAC != "" {
		mac, err := net.ParseMAC(n.MAC)
		if err != nil || len(mac) != 6 {
			e.add(field+".mac", "invalid MAC %q", n.MAC)
		} else {
			m.MAC = mac
		}
	}
	if n.DHCP && len(n.Addresses) > 0 {
		e.add(field+".addresses", "set together with dhcp: true; use one or the other")
	}
	if n.DHCP && n.Gateway != "" {
		e.add(field+".gateway", "set together with dhcp: true (the lease gives the router)")
	}
	for i, a := range n.Addresses {
		f := fmt.Sprintf("%s.addresses[%d]", field, i)
		p, err := netip.ParsePrefix(a)
		if err != nil || !p.Addr().Is4() {
			e.add(f, "invalid CIDR %q (want an IPv4 address with prefix length, e.g. 10.0.0.5/24)", a)
			continue
		}
		if p.Bits() == 32 || p.Addr() == p.Masked().Addr() {
			e.add(f, "%q is not a host address in a network", a)
			continue
		}
		m.Addresses = append(m.Addresses, p)
	}
	if n.Gateway != "" {
		g, err := netip.ParseAddr(n.Gateway)
		switch {
		case err != nil || !g.Is4():
			e.add(field+".gateway", "invalid IPv4 address %q", n.Gateway)
		case !anyContains(m.Addresses, g):
			e.add(field+".gateway", "%s is not in any of %s.addresses", g, field)
		default:
			m.Gateway = g
		}
	}
	for i, r := range n.Routes {
		f := fmt.Sprintf("%s.routes[%d]", field, i)
		var rm RouteModel
		var ok bool
		if rm.Dst, ok = cidr4(e, f+".destination", r.Destination); !ok {
			continue
		}
		via, err := netip.ParseAddr(r.Via)
		if err != nil || !via.Is4() {
			e.add(f+".via", "invalid IPv4 address %q", r.Via)
			continue
		}
		rm.Via = via
		m.Routes = append(m.Routes, rm)
	}
	if n.MTU != 0 && (n.MTU < 576 || n.MTU > 9216) {
		e.add(field+".mtu", "%d out of range 576-9216", n.MTU)
	}
	return m
}

func anyContains(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Masked().Contains(a) {
			return true
		}
	}
	return false
}

func validIfName(s string) bool {
	if len(s) == 0 || len(s) > 15 || s == "." || s == ".." {
		return false
	}
	for _, c := range s {
		if c <= ' ' || c == '/' || c == ':' || c > '~' {
			return false
		}
	}
	return true
}

func port(e *errs, field string, v, def int) uint16 {
	if v == 0 {
		return uint16(def)
	}
	if v < 1 || v > 65535 {
		e.add(field, "port %d out of range 1-65535", v)
		return 0
	}
	return uint16(v)
}

// cidr4 parses an IPv4 CIDR or single address (stored as /32).
func cidr4(e *errs, field, s string) (netip.Prefix, bool) {
	s = strings.TrimSpace(s)
	var p netip.Prefix
	var err error
	if strings.Contains(s, "/") {
		p, err = netip.ParsePrefix(s)
	} else {
		var a netip.Addr
		a, err = netip.ParseAddr(s)
		if err == nil {
			p = netip.PrefixFrom(a, a.BitLen())
		}
	}
	if err != nil {
		e.add(field, "invalid CIDR %q", s)
		return netip.Prefix{}, false
	}
	if !p.Addr().Is4() {
		e.add(field, "invalid CIDR %q: only IPv4 is supported (clients do not use IPv6)", s)
		return netip.Prefix{}, false
	}
	if p.Masked() != p {
		e.add(field, "invalid CIDR %q: host bits set (did you mean %s?)", s, p.Masked())
		return netip.Prefix{}, false
	}
	return p, true
}

func addr4(e *errs, field, s string) (netip.Addr, bool) {
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is4() {
		e.add(field, "invalid IPv4 address %q", s)
		return netip.Addr{}, false
	}
	return a, true
}

// reserved ranges a management candidate may not overlap.
var reserved = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("224.0.0.0/3"),
}

// HostNetworks lists the networks a management range must not overlap: the
// static addresses and routes of both NICs, each with the field it came from.
func (m *Model) HostNetworks() []Network {
	var out []Network
	for _, n := range []NICModel{m.Mgmt, m.Primary} {
		for i, a := range n.Addresses {
			out = append(out, Network{a.Masked(), fmt.Sprintf("%s.addresses[%d]", n.Field, i)})
		}
		for i, r := range n.Routes {
			if r.Dst.Bits() > 0 { // a default route overlaps everything; ignore
				out = append(out, Network{r.Dst, fmt.Sprintf("%s.routes[%d].destination", n.Field, i)})
			}
		}
	}
	return out
}

// Network is a prefix and the config field it came from.
type Network struct {
	Prefix netip.Prefix
	Source string
}

func validateMgmtNet(e *errs, c *Config, m *Model) {
	cands := c.ManagementNetwork.Candidates
	if len(cands) == 0 {
		cands = DefaultCandidates
	}
	for i, s := range cands {
		f := fmt.Sprintf("managementNetwork.candidates[%d]", i)
		p, ok := cidr4(e, f, s)
		if !ok {
			continue
		}
		if p.Bits() < 16 || p.Bits() > 24 {
			e.add(f, "prefix length /%d out of range /16-/24", p.Bits())
			continue
		}
		for _, r := range reserved {
			if r.Overlaps(p) {
				e.add(f, "%s overlaps reserved range %s", p, r)
				ok = false
			}
		}
		for j, q := range m.Candidates {
			if q.Overlaps(p) {
				e.add(f, "overlaps managementNetwork.candidates[%d] %s", j, q)
				ok = false
			}
		}
		if ok {
			m.Candidates = append(m.Candidates, p)
		}
	}
	// At least one candidate must be free of the host's static networks.
	if len(m.Candidates) > 0 {
		nets := m.HostNetworks()
		var conflicts []string
		free := false
		for _, p := range m.Candidates {
			clash := ""
			for _, n := range nets {
				if n.Prefix.Overlaps(p) {
					clash = fmt.Sprintf("%s overlaps %s (%s)", p, n.Prefix, n.Source)
					break
				}
			}
			if clash == "" {
				free = true
				break
			}
			conflicts = append(conflicts, clash)
		}
		if !free {
			e.add("managementNetwork.candidates", "every candidate overlaps a host network: %s", strings.Join(conflicts, "; "))
		}
	}
	lease := c.ManagementNetwork.LeaseSeconds
	switch {
	case lease == 0:
		m.LeaseTime = 24 * time.Hour
	case lease < 60 || lease > 1<<30:
		e.add("managementNetwork.leaseSeconds", "%d out of range 60-%d", lease, 1<<30)
	default:
		m.LeaseTime = time.Duration(lease) * time.Second
	}
	m.MgmtMTU = c.ManagementNetwork.MTU
	if m.MgmtMTU == 0 {
		m.MgmtMTU = 1500
	} else if m.MgmtMTU < 1280 || m.MgmtMTU > 9000 {
		e.add("managementNetwork.mtu", "%d out of range 1280-9000", m.MgmtMTU)
	}
}

// notUnicast says why a is no address a host may use as its own ("" when it
// may).
func notUnicast(a netip.Addr) string {
	switch {
	case a.IsUnspecified() || netip.MustParsePrefix("0.0.0.0/8").Contains(a):
		return "in 0.0.0.0/8 (this network)"
	case a.IsLoopback():
		return "a loopback address"
	case a.IsLinkLocalUnicast():
		return "a link-local address"
	case a.IsMulticast():
		return "a multicast address"
	case netip.MustParsePrefix("240.0.0.0/4").Contains(a):
		return "reserved or broadcast"
	}
	return ""
}

func validID(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

func (v *Validator) validateGroups(e *errs, c *Config, m *Model) {
	for i, g := range c.IPGroups {
		f := fmt.Sprintf("ipGroups[%d]", i)
		if !validID(g.ID) {
			e.add(f+".id", "invalid id %q (1-64 of [A-Za-z0-9._-])", g.ID)
			continue
		}
		if _, dup := m.Groups[g.ID]; dup {
			e.add(f+".id", "duplicate id %q", g.ID)
			continue
		}
		if len(g.Description) > 255 {
			e.add(f+".description", "longer than 255 characters")
		}
		// Unchanged since the last successful Validate: reuse the parsed set;
		// a few rules changed: re-parse only those.
		if prev, ok := v.groups[g.ID]; ok {
			if rulesEqual(prev.Rules, g.Rules) {
				m.Groups[g.ID] = prev
				continue
			}
			if gm, ok := updateGroup(e, f, prev, g); ok {
				m.Groups[g.ID] = gm
				continue
			}
		}
		gm := &GroupModel{ID: g.ID, Rules: slices.Clone(g.Rules)}
		before := len(e.list)
		for j, r := range g.Rules {
			rf := fmt.Sprintf("%s.rules[%d]", f, j)
			if p, ok := cidr4(e, rf+".source", r.Source); ok {
				gm.Pfx = append(gm.Pfx, p)
			}
			if len(r.Description) > 255 {
				e.add(rf+".description", "longer than 255 characters")
			}
			if len(e.list)-before > 50 {
				e.add(f+".rules", "too many errors, stopping")
				break
			}
		}
		gm.sorted = make([]cidrset.Range, len(gm.Pfx))
		for i, p := range gm.Pfx {
			gm.sorted[i] = cidrset.PrefixRange(p)
		}
		slices.SortFunc(gm.sorted, cidrset.Compare)
		gm.Set = cidrset.FromSorted(gm.sorted)
		m.Groups[g.ID] = gm
	}
}

// rulesEqual compares rule lists; strings that share their bytes (the usual
// case: the caller passes the same strings again) compare by pointer.
func rulesEqual(a, b []IPRule) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !sameString(a[i].Source, b[i].Source) || !sameString(a[i].Description, b[i].Description) {
			return false
		}
	}
	return true
}

func sameString(a, b string) bool {
	return len(a) == len(b) && (unsafe.StringData(a) == unsafe.StringData(b) || a == b)
}

// updateGroup derives a group from its previous version when only a few rules
// changed in place (same count); ok is false when a full parse is better.
func updateGroup(e *errs, f string, prev *GroupModel, g IPGroup) (*GroupModel, bool) {
	if len(prev.Rules) != len(g.Rules) || len(prev.Pfx) != len(prev.Rules) || len(prev.sorted) != len(prev.Rules) {
		return nil, false
	}
	var changed []int
	for i := range g.Rules {
		if g.Rules[i] != prev.Rules[i] {
			if changed = append(changed, i); len(changed) > 64 {
				return nil, false
			}
		}
	}
	gm := &GroupModel{ID: g.ID, Rules: slices.Clone(g.Rules), Pfx: slices.Clone(prev.Pfx), sorted: slices.Clone(prev.sorted)}
	bad := false
	for _, i := range changed {
		rf := fmt.Sprintf("%s.rules[%d]", f, i)
		if len(g.Rules[i].Description) > 255 {
			e.add(rf+".description", "longer than 255 characters")
			bad = true
		}
		p, ok := cidr4(e, rf+".source", g.Rules[i].Source)
		if !ok {
			bad = true
			continue
		}
		old := cidrset.PrefixRange(gm.Pfx[i])
		if j, found := slices.BinarySearchFunc(gm.sorted, old, cidrset.Compare); found {
			gm.sorted = slices.Delete(gm.sorted, j, j+1)
		}
		nr := cidrset.PrefixRange(p)
		j, _ := slices.BinarySearchFunc(gm.sorted, nr, cidrset.Compare)
		gm.sorted = slices.Insert(gm.sorted, j, nr)
		gm.Pfx[i] = p
	}
	if bad {
		return gm, true // errors recorded; the model is discarded
	}
	gm.Set = cidrset.FromSorted(gm.sorted)
	return gm, true
}

// SetName turns an id into an nftables-safe identifier fragment.
func SetName(id string) string {
	return strings.Map(func(r rune) rune {
		if r == '-' || r == '.' {
			return '_'
		}
		return r
	}, id)
}

func validateDirectories(e *errs, c *Config, m *Model) {
	seen := map[string]string{}
	for i, d := range c.Directories {
		f := fmt.Sprintf("directories[%d]", i)
		if !validID(d.ID) || len(d.ID) > 40 {
			e.add(f+".id", "invalid id %q (1-40 of [A-Za-z0-9._-])", d.ID)
			continue
		}
		if prev, dup := seen[SetName(d.ID)]; dup {
			e.add(f+".id", "id %q collides with directory %q", d.ID, prev)
			continue
		}
		seen[SetName(d.ID)] = d.ID
		dm := DirectoryModel{ID: d.ID}
		inDir := map[string]bool{}
		for j, g := range d.IPGroups {
			gf := fmt.Sprintf("%s.ipGroups[%d]", f, j)
			if _, ok := m.Groups[g]; !ok {
				if !slices.ContainsFunc(c.IPGroups, func(x IPGroup) bool { return x.ID == g }) {
					e.add(gf, "unknown IP access control group %q", g)
				}
				continue
			}
			if inDir[g] {
				e.add(gf, "group %q associated twice", g)
				continue
			}
			inDir[g] = true
			dm.Groups = append(dm.Groups, g)
		}
		if len(d.IPGroups) > 0 && len(dm.Groups) == 0 {
			// every association was invalid; errors are already recorded
			dm.Groups = d.IPGroups
		}
		for j, s := range d.Controllers {
			if a, ok := addr4(e, fmt.Sprintf("%s.controllers[%d]", f, j), s); ok {
				dm.Controllers = append(dm.Controllers, a)
			}
		}
		for j, s := range d.ClientAddresses {
			af := fmt.Sprintf("%s.clientAddresses[%d]", f, j)
			if a, ok := addr4(e, af, s); ok {
				if !m.Mgmt.DHCP && len(m.Mgmt.Addresses) > 0 && !slices.ContainsFunc(m.Mgmt.Addresses, func(p netip.Prefix) bool { return p.Addr() == a }) {
					e.add(af, "%s is not an address of interfaces.management", a)
					continue
				}
				dm.ClientAddresses = append(dm.ClientAddresses, a)
			}
		}
		m.Directories = append(m.Directories, dm)
	}
}

func validateSGs(e *errs, c *Config, m *Model) {
	dirs := map[string]bool{}
	for _, d := range m.Directories {
		dirs[d.ID] = true
		// implicit default groups
		mem := &SGModel{ID: MembersGroup(d.ID)}
		for _, dc := range d.Controllers {
			for _, r := range DirectoryControllerRules {
				rm := SGRuleModel{Proto: r.Proto, From: r.From, To: r.To, CIDR: netip.PrefixFrom(dc, 32), Desc: "directory controller " + r.Desc}
				mem.Egress = append(mem.Egress, rm)
				mem.Ingress = append(mem.Ingress, rm)
			}
		}
		m.SGs[mem.ID] = mem
		m.SGs[ControllersGroup(d.ID)] = &SGModel{ID: ControllersGroup(d.ID)}
	}
	given := map[string]bool{}
	for i, g := range c.SecurityGroups {
		f := fmt.Sprintf("securityGroups[%d]", i)
		if !validID(g.ID) {
			e.add(f+".id", "invalid id %q (1-64 of [A-Za-z0-9._-])", g.ID)
			continue
		}
		if given[g.ID] {
			e.add(f+".id", "duplicate id %q", g.ID)
			continue
		}
		given[g.ID] = true
		for _, suffix := range []string{"_workspacesMembers", "_controllers"} {
			if d, ok := strings.CutSuffix(g.ID, suffix); ok && !dirs[d] {
				e.add(f+".id", "%q names a default group of unknown directory %q", g.ID, d)
			}
		}
		sg := m.SGs[g.ID]
		if sg == nil {
			sg = &SGModel{ID: g.ID}
			m.SGs[g.ID] = sg
		}
		for j, p := range g.Presets {
			switch p {
			case "internet":
				any4 := netip.MustParsePrefix("0.0.0.0/0")
				sg.Egress = append(sg.Egress,
					SGRuleModel{Proto: ProtoTCP, From: 80, To: 80, CIDR: any4, Desc: "internet HTTP"},
					SGRuleModel{Proto: ProtoTCP, From: 443, To: 443, CIDR: any4, Desc: "internet HTTPS"})
			default:
				e.add(fmt.Sprintf("%s.presets[%d]", f, j), "unknown preset %q (known: internet)", p)
			}
		}
		for j, r := range g.Ingress {
			if rm, ok := parseSGRule(e, fmt.Sprintf("%s.ingress[%d]", f, j), r); ok {
				sg.Ingress = append(sg.Ingress, rm)
			}
		}
		for j, r := range g.Egress {
			if rm, ok := parseSGRule(e, fmt.Sprintf("%s.egress[%d]", f, j), r); ok {
				sg.Egress = append(sg.Egress, rm)
			}
		}
	}
}

func parseSGRule(e *errs, f string, r SGRule) (SGRuleModel, bool) {
	var rm SGRuleModel
	ok := true
	switch strings.ToLower(r.Protocol) {
	case "tcp":
		rm.Proto = ProtoTCP
	case "udp":
		rm.Proto = ProtoUDP
	case "icmp":
		rm.Proto = ProtoICMP
	case "all", "-1":
		rm.Proto = ProtoAll
	default:
		e.add(f+".protocol", "unknown protocol %q (tcp, udp, icmp, all)", r.Protocol)
		ok = false
	}
	if rm.Proto == ProtoTCP || rm.Proto == ProtoUDP {
		if r.FromPort < 1 || r.FromPort > 65535 {
			e.add(f+".fromPort", "port %d out of range 1-65535", r.FromPort)
			ok = false
		}
		to := r.ToPort
		if to == 0 {
			to = r.FromPort
		}
		if to < 1 || to > 65535 {
			e.add(f+".toPort", "port %d out of range 1-65535", r.ToPort)
			ok = false
		} else if to < r.FromPort {
			e.add(f+".toPort", "%d is below fromPort %d", to, r.FromPort)
			ok = false
		}
		if ok {
			rm.From, rm.To = uint16(r.FromPort), uint16(to)
		}
	} else if ok && (r.FromPort != 0 || r.ToPort != 0) {
		e.add(f+".fromPort", "ports only apply to tcp and udp")
		ok = false
	}
	if r.CIDR == "" {
		e.add(f+".cidr", "required")
		ok = false
	} else if p, good := cidr4(e, f+".cidr", r.CIDR); good {
		rm.CIDR = p
	} else {
		ok = false
	}
	if len(r.Description) > 255 {
		e.add(f+".description", "longer than 255 characters")
	}
	rm.Desc = r.Description
	return rm, ok
}

func validateWorkSpaces(e *errs, c *Config, m *Model) {
	dirs := map[string]bool{}
	for _, d := range m.Directories {
		dirs[d.ID] = true
	}
	ids := map[string]bool{}
	macs := map[string]string{}
	// Addresses a WorkSpace's primary NIC must never claim: another
	// WorkSpace's, a directory controller's, the host's own.
	claimed := map[netip.Addr]string{}
	for i, d := range m.Directories {
		for j, a := range d.Controllers {
			claimed[a] = fmt.Sprintf("directories[%d].controllers[%d]", i, j)
		}
	}
	for i, a := range m.Primary.Addresses {
		claimed[a.Addr()] = fmt.Sprintf("interfaces.primary.addresses[%d]", i)
	}
	for i, w := range c.WorkSpaces {
		f := fmt.Sprintf("workspaces[%d]", i)
		if err := taps.ValidateID(w.ID); err != nil {
			e.add(f+".id", "%v", err)
			continue
		}
		if ids[w.ID] {
			e.add(f+".id", "duplicate id %q", w.ID)
			continue
		}
		ids[w.ID] = true
		wm := WorkSpaceModel{ID: w.ID, Directory: w.Directory, Hostname: w.Hostname, UserName: w.UserName, UserData: w.UserData}
		wm.MgmtTap, wm.PrimaryTap, _ = taps.Names(w.ID)
		wm.MgmtMAC, wm.PrimaryMAC, _ = taps.MACs(w.ID)
		if w.Directory == "" {
			e.add(f+".directory", "required")
		} else if !dirs[w.Directory] {
			e.add(f+".directory", "unknown directory %q", w.Directory)
		} else {
			wm.SecurityGroups = append(wm.SecurityGroups, MembersGroup(w.Directory))
		}
		for j, sg := range w.SecurityGroups {
			if _, ok := m.SGs[sg]; !ok {
				e.add(fmt.Sprintf("%s.securityGroups[%d]", f, j), "unknown security group %q", sg)
				continue
			}
			if !slices.Contains(wm.SecurityGroups, sg) {
				wm.SecurityGroups = append(wm.SecurityGroups, sg)
			}
		}
		for _, x := range []struct {
			field, s string
			dst      *net.HardwareAddr
		}{{f + ".managementMAC", w.ManagementMAC, &wm.MgmtMAC}, {f + ".primaryMAC", w.PrimaryMAC, &wm.PrimaryMAC}} {
			if x.s == "" {
				continue
			}
			mac, err := net.ParseMAC(x.s)
			if err != nil || len(mac) != 6 || mac[0]&1 != 0 {
				e.add(x.field, "invalid unicast MAC %q", x.s)
				continue
			}
			*x.dst = mac
		}
		for _, x := range []struct {
			field string
			mac   net.HardwareAddr
		}{{f + ".managementMAC", wm.MgmtMAC}, {f + ".primaryMAC", wm.PrimaryMAC}} {
			if other, dup := macs[x.mac.String()]; dup {
				e.add(x.field, "MAC %s already used by %s", x.mac, other)
			}
			macs[x.mac.String()] = x.field
		}
		if w.PrimaryAddress != "" {
			pf := f + ".primaryAddress"
			if a, ok := addr4(e, pf, w.PrimaryAddress); ok {
				if why := notUnicast(a); why != "" {
					e.add(pf, "%s is %s, not a WorkSpace's address", a, why)
				} else if other, dup := claimed[a]; dup {
					e.add(pf, "%s is already %s", a, other)
				} else {
					claimed[a] = f + ".primaryAddress"
					wm.PrimaryAddr = a
				}
			}
		}
		if len(w.Hostname) > 63 {
			e.add(f+".hostname", "longer than 63 characters")
		}
		if len(w.UserData) > 16<<10 {
			e.add(f+".userData", "larger than 16 KiB")
		}
		// The guide's user names are at most 63 characters; no control characters (the
		// metadata service returns it as a line of text).
		if len(w.UserName) > 63 || strings.ContainsFunc(w.UserName, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			e.add(f+".userName", "longer than 63 characters or holds control characters")
		}
		m.WorkSpaces = append(m.WorkSpaces, wm)
	}
	slices.SortFunc(m.WorkSpaces, func(a, b WorkSpaceModel) int { return strings.Compare(a.ID, b.ID) })
}
