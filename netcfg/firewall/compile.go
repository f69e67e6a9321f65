// Package firewall compiles netcfg's desired state into the one nftables
// ruleset netcfg owns (table inet "deskhost", plus table bridge "deskhost" for
// the per-port work only the bridge hooks can do) and keeps the kernel equal to
// it: every apply is one netlink transaction holding only the difference
// between what the kernel has and what is wanted (nothing at all when they are
// equal); large set loads are split into messages google/nftables can encode
// (its 16-bit element fields silently drop elements beyond) and verified by
// reading them back; the netlink socket's send buffer is forced large enough
// (SO_SNDBUFFORCE) for a 100,000-range batch. Other tables are never read
// into the plan and never touched.
//
// Packet paths (br_netfilter runs bridged IPv4/IPv6 through the inet hooks;
// the bridge table marks each packet with the VM port it came from and goes
// to, since inet chains only see the bridge as the interface):
//
//	client -> mgmt NIC -> inet input: host_mgmt -> client_acl (IP access control sets;
//	        accepted flows get conntrack mark ClientFlowMark)
//	admin -> mgmt NIC -> inet input: host_mgmt (admin port, from AdminSources if set)
//	fleet peer -> mgmt NIC -> inet input: host_mgmt (FleetPorts, any source: mutual TLS)
//	host client port -> client (a new flow) -> inet output: host_mgmt_out -> client_acl_out
//	guest eth0 -> wsm tap -> bridge prerouting: <vm>_m_port (MAC/IP/ARP anti-spoof, mark)
//	        -> inet input: vmnet_in -> <vm>_m_from (DHCP, metadata, KMS, 50002/55002)
//	host -> br-mgmt -> inet output: vmnet_out -> <vm>_m_to (4172, 4195, 4489, 8200, 8201-8250)
//	guest <-> guest on br-mgmt: dropped (bridge forward; the ports are also isolated)
//	guest eth1 -> wsp tap -> bridge prerouting: <vm>_p_port (MAC/IP/ARP anti-spoof, mark)
//	guest eth1 <-> LAN or guest over br-primary: bridge forward marks the out port and,
//	        towards a VM, primary_rx (untagged IPv4 and ARP only), then
//	        inet forward: primary_fwd -> <dst vm>_p_in (security group ingress, returns
//	        when allowed) then <src vm>_p_out (egress, accepts when allowed); stateful
//
// Anti-spoofing (portRules): each guest NIC may send only frames from its own
// MAC: ARP whose sender MAC and IP are its own, IPv4 from its own IP, and a
// DHCP client's broadcast from 0.0.0.0; every other frame is dropped at the
// bridge port, before any forwarding: 802.1Q/802.1ad-tagged frames (matched
// on the Ethernet type field, which shows the tag even when the kernel has
// moved it into metadata; meta protocol would show the inner type), IPv6 and
// every other ethertype. Frames bridged towards a guest's primary NIC pass
// the same type filter (primary_rx), so a VLAN trunk on the LAN reaches no
// guest. The management IP is netcfg's own allocation. The primary IP is
// VM.PrimaryIP, the WorkSpace's primaryAddress in netcfg's config (hostd's
// to pass); until it is known the primary NIC has no IPv4 address of its own:
// it can send DHCP requests and ARP probes (sender 0.0.0.0) and nothing else,
// so a guest cannot use an address netcfg has not been told about, a lease
// from the LAN's DHCP server included (netcfg does no DHCP snooping).
//
// IPv6 is dropped on both networks: br-mgmt never carries it (nothing there
// speaks it), and on br-primary it passes only with Spec.PrimaryIPv6
// (primaryNetwork.ipv6: unfiltered), from the VM's own MAC, judged by no
// security group (they are IPv4 only): the bridge ports let it through and
// primary_fwd accepts it. Without it, the bridge ports drop it; primary_fwd's
// per-VM chains, whose rules all match IPv4, would drop it too.
//
// A directory's allow-list is one logical set stored in 1, 8 or 32 interval
// sets (see Shards): this kernel rebuilds an interval set's lookup array on
// every commit that changes it, so one 100,000-range set costs ~20 ms per
// change while a 3,000-range shard costs well under a millisecond.
package firewall

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"math/bits"
	"net"
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"

	"deskhost/netcfg/cidrset"
	"deskhost/netcfg/config"
)

// TableName is the name of netcfg's tables (inet and bridge families).
const TableName = "deskhost"

// Mark layout: the low 16 bits carry the VM port a packet entered from, the
// high 16 bits the VM port a bridged packet leaves through. The uplink (the
// host's primary NIC) is port 0xffff.
const (
	markInMask  = 0x0000ffff
	markOutMask = 0xffff0000
	uplinkMark  = 0x0000ffff
)

// ClientFlowMark is the conntrack mark of every flow accepted on a
// client-facing port: the flows an IP access control change may have to cut.
const ClientFlowMark = 0x00004e43

// Well-known addresses of the management network (catalog §13.3).
var (
	MetadataAddr = netip.MustParseAddr("169.254.169.254")
	KMSAddrs     = []netip.Addr{netip.MustParseAddr("169.254.169.250"), netip.MustParseAddr("169.254.169.251")}
)

// Spec is the resolved input of the compiler: interface names are real,
// addresses are allocated, sets are merged.
type Spec struct {
	MgmtNIC       string // the host's client-facing NIC
	MgmtDHCP      bool
	PrimaryBridge string // br-primary
	PrimaryUplink string // the host's primary NIC, a port of PrimaryBridge
	PrimaryDHCP   bool
	// PrimaryDHCPServer: netcfg serves the WorkSpaces' primary NICs by DHCP on
	// br-primary (primaryNetwork.dhcp), so the host accepts their requests there.
	PrimaryDHCPServer bool
	VMBridge          string // br-mgmt
	PrimaryIPv6       bool   // the VMs' IPv6 crosses br-primary unfiltered (else dropped)
	BrokerPort        uint16
	AdminPort         uint16
	AdminSources      cidrset.Set // nil: any source
	FleetPorts        []uint16    // TCP, any source: the fleet's peers (mutual TLS)
	Directories       []DirectoryACL
	VMs               []VM
}

// DirectoryACL is one directory's IP access control: Restricted with Set the
// union of its associated groups (possibly empty = deny all), or not
// Restricted (no group associated = allow all).
type DirectoryACL struct {
	ID              string
	Restricted      bool
	Set             cidrset.Set
	ClientAddresses []netip.Addr
}

// A directory's allow-list is one logical set, stored in Shards() interval
// sets: on this kernel an interval (rbtree) set rebuilds its packet-path
// lookup array over all its elements on every commit that changes it, which
// for 100,000 ranges costs ~20 ms per change. Spreading the ranges over up
// to 32 sets by a hash of their first address keeps a one-rule change to one
// small set (and the rule count per new connection to at most 32 lookups);
// small allow-lists stay in one set (each modified set also pins a lookup
// array of at least ~160 KiB in the kernel).
const (
	shardMin = 4096  // below: one set
	shardMid = 32768 // below: 8 sets, else 32
)

// Shards returns how many sets hold the directory's allow-list.
func (d DirectoryACL) Shards() int {
	switch n := len(d.Set); {
	case n < shardMin:
		return 1
	case n < shardMid:
		return 8
	default:
		return 32
	}
}

// SetNames returns the names of the directory's sets, in shard order.
func (d DirectoryACL) SetNames() []string {
	base := "acl_" + config.SetName(d.ID)
	k := d.Shards()
	if k == 1 {
		return []string{base}
	}
	out := make([]string, k)
	for i := range out {
		out[i] = fmt.Sprintf("%s_s%02d", base, i)
	}
	return out
}

// ShardSets splits the allow-list over its sets (a range goes to the set
// chosen by a multiplicative hash of its first address).
func (d DirectoryACL) ShardSets() []cidrset.Set {
	k := d.Shards()
	if k == 1 {
		return []cidrset.Set{d.Set}
	}
	shift := 32 - bits.TrailingZeros(uint(k))
	out := make([]cidrset.Set, k)
	for i := range out {
		out[i] = make(cidrset.Set, 0, len(d.Set)/k+len(d.Set)/(4*k)+16)
	}
	for _, r := range d.Set {
		i := (r.First * 2654435761) >> shift
		out[i] = append(out[i], r)
	}
	return out
}

// VM is one WorkSpace's network identity and security group rules.
type VM struct {
	ID                  string
	Port                uint16 // 1..0xfffe, unique: the mark of its taps
	MgmtTap, PrimaryTap string
	MgmtMAC, PrimaryMAC net.HardwareAddr
	MgmtIP              netip.Addr
	PrimaryIP           netip.Addr // invalid: not known (DHCP only)
	Ingress, Egress     []config.SGRuleModel
}

// ClientPorts are the client-facing ports subject to IP access control.
func (s *Spec) ClientPorts() []struct {
	Proto uint8
	Port  uint16
} {
	return []struct {
		Proto uint8
		Port  uint16
	}{
		{unix.IPPROTO_TCP, s.BrokerPort},
		{unix.IPPROTO_TCP, config.PCoIPPort}, {unix.IPPROTO_UDP, config.PCoIPPort},
		{unix.IPPROTO_TCP, config.WSPPort}, {unix.IPPROTO_UDP, config.WSPPort},
	}
}

// Ruleset is the complete intended (or read back) content of netcfg's tables.
type Ruleset struct {
	Tables []*Table
}

// Table is one nftables table.
type Table struct {
	Family nftables.TableFamily
	Name   string
	Sets   []*Set
	Chains []*Chain
}

// Set is an IPv4 interval set.
type Set struct {
	Name   string
	Ranges cidrset.Set
	def    string // read back: a definition other than an IPv4 interval set
}

// Chain is a chain; Hook is nil for regular chains.
type Chain struct {
	Name  string
	Hook  *Hook
	Rules []*Rule
}

// Hook makes a base chain.
type Hook struct {
	Type     nftables.ChainType
	Num      nftables.ChainHook
	Priority int32
	Policy   nftables.ChainPolicy
}

// Table returns the table of a family, or nil.
func (r *Ruleset) Table(fam nftables.TableFamily) *Table {
	for _, t := range r.Tables {
		if t.Family == fam {
			return t
		}
	}
	return nil
}

// Chain returns a chain by name, or nil.
func (t *Table) Chain(name string) *Chain {
	for _, c := range t.Chains {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// Set returns a set by name, or nil.
func (t *Table) Set(name string) *Set {
	for _, s := range t.Sets {
		if s.Name == name {
			return s
		}
	}
	return nil
}

func vmChain(id, suffix string) string { return config.SetName(id) + "_" + suffix }

// Validate checks a Spec for what the compiler relies on.
func (s *Spec) Validate() error {
	if s.MgmtNIC == "" || s.PrimaryBridge == "" || s.PrimaryUplink == "" || s.VMBridge == "" {
		return fmt.Errorf("firewall: interface names missing: mgmt %q primary bridge %q uplink %q vm bridge %q",
			s.MgmtNIC, s.PrimaryBridge, s.PrimaryUplink, s.VMBridge)
	}
	ports := map[uint16]string{}
	for _, v := range s.VMs {
		if v.Port == 0 || v.Port >= uplinkMark {
			return fmt.Errorf("firewall: VM %s: port mark %d out of range", v.ID, v.Port)
		}
		if o, dup := ports[v.Port]; dup {
			return fmt.Errorf("firewall: VMs %s and %s share port mark %d", o, v.ID, v.Port)
		}
		ports[v.Port] = v.ID
		if !v.MgmtIP.Is4() || len(v.MgmtMAC) != 6 || len(v.PrimaryMAC) != 6 {
			return fmt.Errorf("firewall: VM %s: management IP or MACs missing", v.ID)
		}
		if v.PrimaryIP.IsValid() && (!v.PrimaryIP.Is4() || v.PrimaryIP.IsUnspecified()) {
			return fmt.Errorf("firewall: VM %s: primary IP %s is not an IPv4 unicast address", v.ID, v.PrimaryIP)
		}
	}
	for _, d := range s.Directories {
		if err := d.Set.Validate(); err != nil {
			return fmt.Errorf("firewall: directory %s: %w", d.ID, err)
		}
	}
	return nil
}

// Compile builds the ruleset for a Spec.
func Compile(s *Spec) (*Ruleset, error) { return NewCompiler().Compile(s) }

// Compiler compiles Specs and remembers what it built for the previous one:
// a VM whose inputs did not change gets the very same Rule values (compared
// by pointer, never rebuilt), and a directory's allow-list whose union changed
// by a few ranges only has the affected shards rebuilt. hostd calls Apply on
// every change; this keeps the cost of an apply proportional to the change.
// Not safe for concurrent use.
type Compiler struct {
	vms, vmsNext       map[string]*vmRules
	shards, shardsNext map[string]*shardState
}

// NewCompiler returns an empty Compiler.
func NewCompiler() *Compiler {
	return &Compiler{vms: map[string]*vmRules{}, shards: map[string]*shardState{}}
}

// Compile builds the ruleset for a Spec.
func (c *Compiler) Compile(s *Spec) (*Ruleset, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	c.vmsNext, c.shardsNext = map[string]*vmRules{}, map[string]*shardState{}
	vms := make([]*vmRules, len(s.VMs))
	for i, v := range s.VMs {
		vms[i] = c.vm(v, s.PrimaryIPv6)
	}
	in := c.compileInet(s, vms)
	br := compileBridge(s, vms)
	c.vms, c.shards = c.vmsNext, c.shardsNext
	return &Ruleset{Tables: []*Table{in, br}}, nil
}

// vmRules are the rules of one VM, in every chain that has some.
type vmRules struct {
	mFrom, mTo, pIn, pOut, mPort, pPort *Chain
	vmnetIn, vmnetOut, fwdIn, fwdOut    *Rule   // dispatch, inet
	pre, brFwd                          []*Rule // dispatch, bridge
}

func vmKey(v VM, ipv6 bool) string {
	b := make([]byte, 0, 256)
	if ipv6 {
		b = append(b, '6')
	}
	b = append(b, v.ID...)
	b = append(b, 0)
	b = binary.BigEndian.AppendUint16(b, v.Port)
	b = append(b, v.MgmtTap...)
	b = append(b, 0)
	b = append(b, v.PrimaryTap...)
	b = append(b, 0)
	b = append(b, v.MgmtMAC...)
	b = append(b, v.PrimaryMAC...)
	b = v.MgmtIP.AppendTo(b)
	b = append(b, 0)
	b = v.PrimaryIP.AppendTo(b)
	for _, rs := range [][]config.SGRuleModel{v.Ingress, v.Egress} {
		b = append(b, '|')
		for _, r := range rs {
			b = append(b, r.Proto)
			b = binary.BigEndian.AppendUint16(b, r.From)
			b = binary.BigEndian.AppendUint16(b, r.To)
			b = r.CIDR.AppendTo(b)
			b = append(b, 0)
		}
	}
	return string(b)
}

func (c *Compiler) vm(v VM, ipv6 bool) *vmRules {
	k := vmKey(v, ipv6)
	if r, ok := c.vms[k]; ok {
		c.vmsNext[k] = r
		return r
	}
	r := buildVM(v, ipv6)
	c.vmsNext[k] = r
	return r
}

// shardState is a directory's allow-list as last split into shards.
type shardState struct {
	union  cidrset.Set
	shards []cidrset.Set
}

// shardSets splits d's allow-list, reusing the previous split: when the union
// changed by a few ranges only the shards those ranges hash to are rebuilt
// and the others are the same slices (which the diff recognises in O(1)).
func (c *Compiler) shardSets(d DirectoryACL) []cidrset.Set {
	prev := c.shards[d.ID]
	var out []cidrset.Set
	switch {
	case prev == nil || len(prev.shards) != d.Shards():
		out = d.ShardSets()
	case cidrset.Equal(prev.union, d.Set):
		out = prev.shards
	default:
		removed, added := cidrset.Diff(prev.union, d.Set)
		k := len(prev.shards)
		shift := 32 - bits.TrailingZeros(uint(k))
		rem := make(map[uint32][]cidrset.Range)
		add := make(map[uint32][]cidrset.Range)
		for _, r := range removed {
			i := uint32(0)
			if k > 1 {
				i = (r.First * 2654435761) >> shift
			}
			rem[i] = append(rem[i], r)
		}
		for _, r := range added {
			i := uint32(0)
			if k > 1 {
				i = (r.First * 2654435761) >> shift
			}
			add[i] = append(add[i], r)
		}
		out = slices.Clone(prev.shards)
		for i := range out {
			r, a := rem[uint32(i)], add[uint32(i)]
			if len(r) == 0 && len(a) == 0 {
				continue
			}
			// ranges of one shard are disjoint and non-adjacent members of
			// the union: removing and adding whole ranges keeps that true
			sh := slices.DeleteFunc(slices.Clone(out[i]), func(x cidrset.Range) bool {
				_, found := slices.BinarySearchFunc(r, x, cmpRange)
				return found
			})
			sh = append(sh, a...)
			slices.SortFunc(sh, cmpRange)
			out[i] = sh
		}
	}
	c.shardsNext[d.ID] = &shardState{union: d.Set, shards: out}
	return out
}

func cmpRange(a, b cidrset.Range) int {
	if a.First != b.First {
		return cmp.Compare(a.First, b.First)
	}
	return cmp.Compare(a.Last, b.Last)
}

const (
	inet   = nftables.TableFamilyINet
	bridge = nftables.TableFamilyBridge
	tcp    = unix.IPPROTO_TCP
	udp    = unix.IPPROTO_UDP
)

func (c *Compiler) compileInet(s *Spec, vms []*vmRules) *Table {
	t := &Table{Family: inet, Name: TableName}
	base := func(name string, hook nftables.ChainHook, policy nftables.ChainPolicy) *Chain {
		c := &Chain{Name: name, Hook: &Hook{Type: nftables.ChainTypeFilter, Num: hook, Priority: 0, Policy: policy}}
		t.Chains = append(t.Chains, c)
		return c
	}
	chain := func(name string) *Chain {
		c := &Chain{Name: name}
		t.Chains = append(t.Chains, c)
		return c
	}
	R := func() *rb { return rule(inet) }

	// Sets first (rules reference them).
	if len(s.AdminSources) > 0 {
		t.Sets = append(t.Sets, &Set{Name: "admin_src", Ranges: s.AdminSources})
	}
	for _, d := range s.Directories {
		if d.Restricted {
			names, shards := d.SetNames(), c.shardSets(d)
			for i := range names {
				t.Sets = append(t.Sets, &Set{Name: names[i], Ranges: shards[i]})
			}
		}
	}

	// input: the host itself.
	input := base("input", *nftables.ChainHookInput, nftables.ChainPolicyDrop)
	input.Rules = []*Rule{
		R().established().accept(),
		R().ctState(ctInvalid, "invalid").drop(),
		R().iif("lo").accept(),
		R().iif(s.MgmtNIC).jump("host_mgmt"),
		R().iif(s.PrimaryBridge).jump("host_primary"),
		R().iif(s.VMBridge).jump("vmnet_in"),
	}

	hm := chain("host_mgmt")
	admin := R().dport(tcp, s.AdminPort, s.AdminPort)
	if len(s.AdminSources) > 0 {
		admin.saddrSet("admin_src")
	}
	hm.Rules = append(hm.Rules, admin.accept())
	for _, p := range s.FleetPorts {
		hm.Rules = append(hm.Rules, R().dport(tcp, p, p).accept())
	}
	for _, cp := range s.ClientPorts() {
		hm.Rules = append(hm.Rules, R().dport(cp.Proto, cp.Port, cp.Port).jump("client_acl"))
	}
	if s.MgmtDHCP {
		hm.Rules = append(hm.Rules, R().only4().sport(udp, 67).dport(udp, 68, 68).accept())
	}

	// client_acl: the union over directories of their allow-lists.
	acl := chain("client_acl")
	acl.Rules = aclRules(s, false)

	hp := chain("host_primary")
	if s.PrimaryDHCP {
		hp.Rules = append(hp.Rules, R().only4().sport(udp, 67).dport(udp, 68, 68).accept())
	}
	if s.PrimaryDHCPServer {
		hp.Rules = append(hp.Rules, R().only4().sport(udp, 68).dport(udp, 67, 67).accept())
	}

	// Guests to the host over br-mgmt, by the port mark of their tap.
	vin := chain("vmnet_in")
	for _, v := range vms {
		vin.Rules = append(vin.Rules, v.vmnetIn)
	}

	// output: the host to guests over br-mgmt.
	output := base("output", *nftables.ChainHookOutput, nftables.ChainPolicyAccept)
	output.Rules = []*Rule{R().oif(s.VMBridge).jump("vmnet_out"), R().oif(s.MgmtNIC).jump("host_mgmt_out")}

	// The host's client-facing services may not open a flow towards a client
	// the allow-lists reject either: after an IP access control rule is
	// removed and the flow's conntrack entry dropped, a server pushing data
	// (streaming) would otherwise re-create the flow from its side and the
	// client's packets would pass as replies.
	hmo := chain("host_mgmt_out")
	hmo.Rules = append(hmo.Rules, R().established().accept())
	for _, cp := range s.ClientPorts() {
		hmo.Rules = append(hmo.Rules, R().sport(cp.Proto, cp.Port).jump("client_acl_out"))
	}
	aclOut := chain("client_acl_out")
	aclOut.Rules = append(aclRules(s, true), R().drop())
	vout := chain("vmnet_out")
	vout.Rules = append(vout.Rules,
		R().established().accept(),
		R().only4().sport(udp, 67).dport(udp, 68, 68).accept())
	for _, v := range vms {
		vout.Rules = append(vout.Rules, v.vmnetOut)
	}
	vout.Rules = append(vout.Rules, R().drop())

	// forward: the host routes nothing; bridged primary traffic is filtered
	// per VM, bridged management traffic never gets here (dropped in the
	// bridge table).
	fwd := base("forward", *nftables.ChainHookForward, nftables.ChainPolicyDrop)
	fwd.Rules = []*Rule{R().iif(s.PrimaryBridge).oif(s.PrimaryBridge).jump("primary_fwd")}
	pf := chain("primary_fwd")
	pf.Rules = append(pf.Rules, R().established().accept())
	if s.PrimaryIPv6 {
		// primaryNetwork.ipv6: unfiltered (security groups are IPv4 only);
		// the bridge table has already tied the frames to the VMs' MACs.
		pf.Rules = append(pf.Rules, R().nfproto6().accept())
	}
	for _, v := range vms {
		pf.Rules = append(pf.Rules, v.fwdIn)
	}
	for _, v := range vms {
		pf.Rules = append(pf.Rules, v.fwdOut)
	}
	pf.Rules = append(pf.Rules, R().markIs(markInMask, uplinkMark, false).accept())

	for _, v := range vms {
		t.Chains = append(t.Chains, v.mFrom, v.mTo, v.pIn, v.pOut)
	}
	return t
}

// aclRules are the allow-list rules of client_acl (towards the host) or of
// client_acl_out (from the host: source and destination swap).
func aclRules(s *Spec, out bool) []*Rule {
	var rules []*Rule
	for _, d := range s.Directories {
		hosts := []netip.Addr{{}}
		if len(d.ClientAddresses) > 0 {
			hosts = d.ClientAddresses
		}
		for _, h := range hosts {
			if !d.Restricted {
				r := rule(inet)
				if h.IsValid() {
					r.ipAddr(out, host(h), false)
				}
				rules = append(rules, r.ctMarkSet(ClientFlowMark).accept())
				continue
			}
			for _, set := range d.SetNames() {
				r := rule(inet)
				if h.IsValid() {
					r.ipAddr(out, host(h), false)
				}
				if out {
					r.daddrSet(set)
				} else {
					r.saddrSet(set)
				}
				rules = append(rules, r.ctMarkSet(ClientFlowMark).accept())
			}
		}
	}
	return rules
}

func dedupe(rs []config.SGRuleModel) []config.SGRuleModel {
	type k struct {
		p    uint8
		f, t uint16
		c    netip.Prefix
	}
	seen := map[k]bool{}
	var out []config.SGRuleModel
	for _, r := range rs {
		key := k{r.Proto, r.From, r.To, r.CIDR}
		if seen[key] {
			continue
		}
		seen[key] = true
		out = append(out, r)
	}
	return out
}

// sgRule matches a security group rule: the peer (source for ingress,
// destination for egress), then protocol and port range.
func sgRule(b *rb, ingress bool, r config.SGRuleModel) *rb {
	b.ipAddr(ingress, r.CIDR, false)
	switch r.Proto {
	case config.ProtoTCP, config.ProtoUDP:
		b.dport(r.Proto, r.From, r.To)
	case config.ProtoAll:
	default:
		b.l4(r.Proto, true)
	}
	return b
}

func compileBridge(s *Spec, vms []*vmRules) *Table {
	t := &Table{Family: bridge, Name: TableName}
	// Bridge filter priority is -200; br_netfilter hooks at 0 (prerouting)
	// and -1 (forward), so these chains run before the inet chains see the
	// packet and the marks they set are visible there.
	pre := &Chain{Name: "prerouting", Hook: &Hook{Type: nftables.ChainTypeFilter, Num: *nftables.ChainHookPrerouting, Priority: -200, Policy: nftables.ChainPolicyAccept}}
	fwd := &Chain{Name: "forward", Hook: &Hook{Type: nftables.ChainTypeFilter, Num: *nftables.ChainHookForward, Priority: -200, Policy: nftables.ChainPolicyAccept}}
	// Frames bridged to a VM's primary tap: IPv4 and ARP (IPv6 when
	// configured), untagged; nothing else reaches a guest's eth1.
	rx := &Chain{Name: "primary_rx", Rules: []*Rule{
		rule(bridge).etherType(unix.ETH_P_IP, "ip").ret(),
		rule(bridge).etherType(unix.ETH_P_ARP, "arp").ret(),
	}}
	if s.PrimaryIPv6 {
		rx.Rules = append(rx.Rules, rule(bridge).etherType(unix.ETH_P_IPV6, "ip6").ret())
	}
	rx.Rules = append(rx.Rules, rule(bridge).drop())
	t.Chains = append(t.Chains, pre, fwd, rx)
	for _, v := range vms {
		pre.Rules = append(pre.Rules, v.pre...)
		fwd.Rules = append(fwd.Rules, v.brFwd...)
		t.Chains = append(t.Chains, v.mPort, v.pPort)
	}
	pre.Rules = append(pre.Rules, rule(bridge).iif(s.PrimaryUplink).setMark(uplinkMark).continue_())
	return t
}
func buildVM(v VM, ipv6 bool) *vmRules {
	R := func() *rb { return rule(inet) }
	B := func() *rb { return rule(bridge) }
	out := &vmRules{}
	chain := func(name string) *Chain { return &Chain{Name: vmChain(v.ID, name)} }
	{
		mf := chain("m_from")
		mf.Rules = []*Rule{
			R().only4().sport(udp, 68).dport(udp, 67, 67).accept(),
			R().ipAddr(true, host(v.MgmtIP), true).drop(),
			R().daddr(host(MetadataAddr)).dport(tcp, 80, 80).accept(),
		}
		for _, k := range KMSAddrs {
			mf.Rules = append(mf.Rules, R().daddr(host(k)).dport(tcp, 1688, 1688).accept())
		}
		mf.Rules = append(mf.Rules,
			R().dport(udp, 50002, 50002).accept(),
			R().dport(udp, 55002, 55002).accept(),
			R().drop())

		mt := chain("m_to")
		for _, p := range []struct {
			proto  uint8
			lo, hi uint16
		}{{tcp, 4172, 4172}, {udp, 4172, 4172}, {tcp, 4195, 4195}, {udp, 4195, 4195}, {tcp, 4489, 4489}, {tcp, 8200, 8200}, {tcp, 8201, 8250}} {
			mt.Rules = append(mt.Rules, R().dport(p.proto, p.lo, p.hi).accept())
		}
		mt.Rules = append(mt.Rules, R().drop())

		pin := chain("p_in")
		pin.Rules = append(pin.Rules, R().only4().sport(udp, 67).dport(udp, 68, 68).ret())
		for _, sr := range dedupe(v.Ingress) {
			pin.Rules = append(pin.Rules, sgRule(R(), true, sr).ret())
		}
		pin.Rules = append(pin.Rules, R().drop())

		pout := chain("p_out")
		pout.Rules = append(pout.Rules, R().only4().sport(udp, 68).dport(udp, 67, 67).accept())
		for _, sr := range dedupe(v.Egress) {
			pout.Rules = append(pout.Rules, sgRule(R(), false, sr).accept())
		}
		pout.Rules = append(pout.Rules, R().drop())
		out.mFrom, out.mTo, out.pIn, out.pOut = mf, mt, pin, pout
	}
	out.vmnetIn = R().markIs(^uint32(0), uint32(v.Port), false).jump(vmChain(v.ID, "m_from"))
	out.vmnetOut = R().daddr(host(v.MgmtIP)).jump(vmChain(v.ID, "m_to"))
	out.fwdIn = R().markIs(markOutMask, uint32(v.Port)<<16, false).jump(vmChain(v.ID, "p_in"))
	out.fwdOut = R().markIs(markInMask, uint32(v.Port), false).jump(vmChain(v.ID, "p_out"))

	// Bridge: each port marks its frames, then lets through only what the
	// VM may send (see portRules).
	mp, pp := vmChain(v.ID, "m_port"), vmChain(v.ID, "p_port")
	out.pre = []*Rule{B().iif(v.MgmtTap).jump(mp), B().iif(v.PrimaryTap).jump(pp)}
	out.mPort = &Chain{Name: mp, Rules: portRules(v.Port, v.MgmtMAC, v.MgmtIP, false)}
	out.pPort = &Chain{Name: pp, Rules: portRules(v.Port, v.PrimaryMAC, v.PrimaryIP, ipv6)}
	out.brFwd = []*Rule{
		B().iif(v.MgmtTap).drop(),
		B().oif(v.MgmtTap).drop(),
		B().oif(v.PrimaryTap).orMark(uint32(v.Port) << 16).jump("primary_rx"),
	}
	return out
}

// portRules are the rules of a VM's bridge port (m_port, p_port): what a
// guest NIC may send. First the mark (the VM's port), then, in order:
//
//   - a source MAC other than the NIC's own: dropped;
//   - ARP (untagged, Ethernet/IPv4 layout) with the NIC's own MAC as sender
//     and its own IP, or 0.0.0.0 (an RFC 5227 probe, which updates no
//     neighbour table), as sender IP: accepted;
//   - IPv4 (untagged) from its own IP: accepted;
//   - a DHCP client's broadcast from 0.0.0.0 (UDP 68 -> 255.255.255.255:67):
//     accepted, so that a NIC without an address can get one;
//   - IPv6 (untagged), only with ipv6 (primaryNetwork.ipv6: unfiltered);
//   - everything else: dropped. That is every 802.1Q/802.1ad-tagged frame
//     (the type field reads 0x8100/0x88a8, see ipv4) and every other
//     ethertype.
//
// Without an IP (a primary NIC whose address netcfg does not know yet) only
// the DHCP broadcast and ARP probes pass.
func portRules(port uint16, mac net.HardwareAddr, ip netip.Addr, ipv6 bool) []*Rule {
	B := func() *rb { return rule(bridge) }
	any4 := netip.IPv4Unspecified()
	rs := []*Rule{
		B().setMark(uint32(port)).continue_(),
		B().etherSaddrNeq(mac).drop(),
	}
	if ip.IsValid() {
		rs = append(rs, B().arpSender(mac, ip).accept())
	}
	rs = append(rs, B().arpSender(mac, any4).accept())
	if ip.IsValid() {
		rs = append(rs, B().saddr(host(ip)).accept())
	}
	rs = append(rs, B().saddr(host(any4)).daddr(host(netip.AddrFrom4([4]byte{255, 255, 255, 255}))).
		sport(udp, 68).dport(udp, 67, 67).accept())
	if ipv6 {
		rs = append(rs, B().etherType(unix.ETH_P_IPV6, "ip6").accept())
	}
	return append(rs, B().drop())
}

// ElementCount is the number of ranges in all sets.
func (r *Ruleset) ElementCount() int {
	n := 0
	for _, t := range r.Tables {
		for _, s := range t.Sets {
			n += len(s.Ranges)
		}
	}
	return n
}

// Clone returns a shallow copy whose slices can be modified.
func (r *Ruleset) Clone() *Ruleset {
	out := &Ruleset{}
	for _, t := range r.Tables {
		nt := *t
		nt.Sets = slices.Clone(t.Sets)
		nt.Chains = slices.Clone(t.Chains)
		out.Tables = append(out.Tables, &nt)
	}
	return out
}
