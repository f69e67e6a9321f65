// Package links makes the host's interfaces match the desired state: the two
// NICs (found by name or MAC), the bridges br-mgmt and br-primary, and the
// VMs' taps. It compares before it writes, so applying an unchanged state
// sends no netlink change at all.
//
// Ownership: netcfg owns br-mgmt, br-primary, every link whose name starts
// with "wsm-" or "wsp-", the addresses and routes it puts on the NICs and
// bridges, and the bridges' membership (a port nobody asked for is released).
package links

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"deskhost/internal/nsutil"
	"deskhost/netcfg/config"
	"deskhost/netcfg/taps"
)

// Bridge names.
const (
	MgmtBridge    = "br-mgmt"
	PrimaryBridge = "br-primary"
)

// Manager changes links in one network namespace.
type Manager struct {
	ns   netns.NsHandle
	h    *netlink.Handle
	log  *slog.Logger
	sock map[int]*nl.SocketHandle // raw rtnetlink requests (bridge options)
}

// Open returns a Manager for ns (netns.None() for the current namespace).
func Open(ns netns.NsHandle, log *slog.Logger) (*Manager, error) {
	if log == nil {
		log = slog.Default()
	}
	var h *netlink.Handle
	var err error
	if nsutil.Current(ns) {
		h, err = netlink.NewHandle()
	} else {
		h, err = netlink.NewHandleAt(ns)
	}
	if err != nil {
		return nil, fmt.Errorf("links: open rtnetlink: %w", err)
	}
	sock, err := nl.GetNetlinkSocketAt(ns, netns.None(), unix.NETLINK_ROUTE)
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("links: open rtnetlink: %w", err)
	}
	return &Manager{ns: ns, h: h, log: log, sock: map[int]*nl.SocketHandle{unix.NETLINK_ROUTE: {Socket: sock}}}, nil
}

// Close releases the netlink sockets.
func (m *Manager) Close() {
	m.h.Close()
	m.sock[unix.NETLINK_ROUTE].Close()
}

func (m *Manager) request(typ, flags int) *nl.NetlinkRequest {
	req := nl.NewNetlinkRequest(typ, flags)
	req.Sockets = m.sock
	return req
}

// Snapshot is the namespace's links, addresses, routes and bridge options,
// read in five dumps (instead of a request per link and question).
type Snapshot struct {
	byName   map[string]netlink.Link
	addrs    map[int][]netlink.Addr
	routes   map[int][]netlink.Route
	nfcall   map[int]bool // bridges with nf_call_iptables and nf_call_ip6tables on
	isolated map[int]bool // bridge ports with the isolated flag
}

// Snapshot reads the current state.
func (m *Manager) Snapshot() (*Snapshot, error) {
	s := &Snapshot{byName: map[string]netlink.Link{}, addrs: map[int][]netlink.Addr{}, routes: map[int][]netlink.Route{}}
	all, err := m.h.LinkList()
	if err != nil {
		return nil, fmt.Errorf("links: list: %w", err)
	}
	for _, l := range all {
		s.byName[l.Attrs().Name] = l
	}
	addrs, err := m.h.AddrList(nil, unix.AF_INET)
	if err != nil {
		return nil, fmt.Errorf("links: list addresses: %w", err)
	}
	for _, a := range addrs {
		s.addrs[a.LinkIndex] = append(s.addrs[a.LinkIndex], a)
	}
	routes, err := m.h.RouteList(nil, unix.AF_INET)
	if err != nil {
		return nil, fmt.Errorf("links: list routes: %w", err)
	}
	for _, r := range routes {
		s.routes[r.LinkIndex] = append(s.routes[r.LinkIndex], r)
	}
	if s.nfcall, err = m.nfCalls(); err != nil {
		return nil, err
	}
	if s.isolated, err = m.portIsolation(); err != nil {
		return nil, err
	}
	return s, nil
}

// Link returns a link by name.
func (s *Snapshot) Link(name string) (netlink.Link, bool) {
	l, ok := s.byName[name]
	return l, ok
}

// Addresses returns the IPv4 addresses of a link (nil if it does not exist).
func (s *Snapshot) Addresses(name string) []netip.Prefix {
	l, ok := s.byName[name]
	if !ok {
		return nil
	}
	var out []netip.Prefix
	for _, a := range s.addrs[l.Attrs().Index] {
		out = append(out, prefixOf(a.IPNet))
	}
	return out
}

// Routes returns the IPv4 destinations routed through a link, default route
// excluded.
func (s *Snapshot) Routes(name string) []netip.Prefix {
	l, ok := s.byName[name]
	if !ok {
		return nil
	}
	var out []netip.Prefix
	for _, r := range s.routes[l.Attrs().Index] {
		if r.Dst != nil {
			if p := prefixOf(r.Dst); p.Bits() > 0 {
				out = append(out, p)
			}
		}
	}
	return out
}

// UnknownInterfaceError says a configured NIC does not exist.
type UnknownInterfaceError struct {
	Field string
	What  string
}

func (e *UnknownInterfaceError) Error() string {
	return fmt.Sprintf("%s: unknown interface: %s", e.Field, e.What)
}

func ours(name string) bool {
	return name == MgmtBridge || name == PrimaryBridge || strings.HasPrefix(name, taps.MgmtPrefix) || strings.HasPrefix(name, taps.PrimaryPrefix)
}

// Resolve finds a NIC by name and/or MAC. Bridges and netcfg's own links are
// never matched by MAC (br-primary carries the primary NIC's MAC).
func (m *Manager) Resolve(n config.NICModel) (netlink.Link, error) {
	snap, err := m.Snapshot()
	if err != nil {
		return nil, err
	}
	return snap.Resolve(n)
}

// Resolve finds a NIC by name and/or MAC in the snapshot.
func (s *Snapshot) Resolve(n config.NICModel) (netlink.Link, error) {
	if n.Name != "" {
		l, ok := s.byName[n.Name]
		if !ok {
			return nil, &UnknownInterfaceError{n.Field + ".name", fmt.Sprintf("no interface named %q", n.Name)}
		}
		if n.MAC != nil && !sameMAC(l.Attrs().HardwareAddr, n.MAC) {
			return nil, &UnknownInterfaceError{n.Field + ".mac", fmt.Sprintf("interface %q has MAC %s, not %s", n.Name, l.Attrs().HardwareAddr, n.MAC)}
		}
		return l, nil
	}
	for _, l := range s.byName {
		if ours(l.Attrs().Name) || l.Type() == "bridge" {
			continue
		}
		if sameMAC(l.Attrs().HardwareAddr, n.MAC) {
			return l, nil
		}
	}
	return nil, &UnknownInterfaceError{n.Field + ".mac", fmt.Sprintf("no interface with MAC %s", n.MAC)}
}

func sameMAC(a, b net.HardwareAddr) bool { return strings.EqualFold(a.String(), b.String()) }

// NIC is the desired state of one physical NIC (or of the bridge carrying
// its addresses).
type NIC struct {
	Link   string // resolved name
	Static bool   // addresses below are authoritative (false: DHCP manages them)
	Addrs  []netip.Prefix
	Routes []config.RouteModel
	// Gateway adds a default route through this NIC.
	Gateway netip.Addr
	MTU     int
}

// Tap is a VM NIC's host device.
type Tap struct {
	Name     string
	Bridge   string
	Isolated bool
}

// Desired is the whole link state netcfg owns.
type Desired struct {
	Mgmt          NIC // on the management NIC itself
	PrimaryUplink string
	Primary       NIC // addresses and routes go on br-primary; Link is the uplink
	MgmtBridge    NIC // br-mgmt: host address in the management range, metadata address
	Taps          []Tap
}

// Apply makes the links match d and returns what it changed. snap may be a
// snapshot taken just before (nil: take one).
func (m *Manager) Apply(d Desired, snap *Snapshot) ([]string, error) {
	a := &applier{m: m, snap: snap}
	if err := a.run(d); err != nil {
		return a.changes, err
	}
	if len(a.changes) > 0 {
		m.log.Info("links changed", "changes", a.changes)
	}
	return a.changes, nil
}

// Check returns the differences between the links and d without changing
// anything.
func (m *Manager) Check(d Desired, snap *Snapshot) ([]string, error) {
	a := &applier{m: m, dry: true, snap: snap}
	err := a.run(d)
	return a.changes, err
}

type applier struct {
	m       *Manager
	dry     bool
	changes []string
	snap    *Snapshot
}

// refresh re-reads one link after a change.
func (a *applier) refresh(name string) (netlink.Link, error) {
	l, err := a.m.h.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("links: %s: %w", name, err)
	}
	a.snap.byName[name] = l
	return l, nil
}

func (a *applier) change(format string, args ...any) bool {
	a.changes = append(a.changes, fmt.Sprintf(format, args...))
	return !a.dry
}

func (a *applier) run(d Desired) error {
	h := a.m.h
	var err error
	if a.snap == nil {
		if a.snap, err = a.m.Snapshot(); err != nil {
			return err
		}
	}
	mgmt, ok := a.snap.Link(d.Mgmt.Link)
	if !ok {
		return fmt.Errorf("links: management NIC %s not found", d.Mgmt.Link)
	}
	if err := a.nic(mgmt, d.Mgmt, 100); err != nil {
		return err
	}

	uplink, ok := a.snap.Link(d.PrimaryUplink)
	if !ok {
		return fmt.Errorf("links: primary NIC %s not found", d.PrimaryUplink)
	}
	brp, err := a.bridge(PrimaryBridge, uplink.Attrs().HardwareAddr, d.Primary.MTU)
	if err != nil {
		return err
	}
	if brp != nil {
		if err := a.port(uplink, brp, false, d.Primary.MTU); err != nil {
			return err
		}
		// the uplink is a bridge port now: its own IPv4 addresses go
		for _, ad := range a.snap.addrs[uplink.Attrs().Index] {
			if a.change("remove address %s from bridge port %s", ad.IPNet, d.PrimaryUplink) {
				if err := h.AddrDel(uplink, &ad); err != nil {
					return fmt.Errorf("links: remove %s from %s: %w", ad.IPNet, d.PrimaryUplink, err)
				}
			}
		}
		pn := d.Primary
		pn.Link = PrimaryBridge
		if err := a.nic(brp, pn, 200); err != nil {
			return err
		}
	}

	brm, err := a.bridge(MgmtBridge, nil, d.MgmtBridge.MTU)
	if err != nil {
		return err
	}
	if brm != nil {
		mb := d.MgmtBridge
		mb.Link = MgmtBridge
		mb.Static = true
		if err := a.nic(brm, mb, 0); err != nil {
			return err
		}
	}
	bridges := map[string]netlink.Link{PrimaryBridge: brp, MgmtBridge: brm}
	mtus := map[string]int{PrimaryBridge: d.Primary.MTU, MgmtBridge: d.MgmtBridge.MTU}

	want := map[string]bool{}
	for _, t := range d.Taps {
		want[t.Name] = true
		l, err := a.tap(t.Name)
		if err != nil {
			return err
		}
		if l == nil || bridges[t.Bridge] == nil {
			continue // dry run: not created
		}
		if err := a.port(l, bridges[t.Bridge], t.Isolated, mtus[t.Bridge]); err != nil {
			return err
		}
	}

	// Stale taps, foreign bridge ports.
	for _, l := range a.snap.byName {
		name := l.Attrs().Name
		if _, _, ok := taps.Parse(name); ok && !want[name] {
			if a.change("delete stale tap %s", name) {
				if err := h.LinkDel(l); err != nil {
					return fmt.Errorf("links: delete %s: %w", name, err)
				}
			}
			continue
		}
		for bname, br := range bridges {
			if br == nil || l.Attrs().MasterIndex != br.Attrs().Index || want[name] || (bname == PrimaryBridge && name == d.PrimaryUplink) {
				continue
			}
			if a.change("release foreign port %s from %s", name, bname) {
				if err := h.LinkSetNoMaster(l); err != nil {
					return fmt.Errorf("links: release %s: %w", name, err)
				}
			}
		}
	}
	return nil
}

// bridge ensures a bridge exists with br_netfilter calls on (the inet
// table's per-VM rules depend on them), the given MAC and MTU, and is up.
func (a *applier) bridge(name string, mac net.HardwareAddr, mtu int) (netlink.Link, error) {
	h := a.m.h
	l, exists := a.snap.Link(name)
	changed := false
	switch {
	case !exists:
		if !a.change("create bridge %s", name) {
			return nil, nil
		}
		off := false
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}, MulticastSnooping: &off}
		if err := h.LinkAdd(br); err != nil {
			return nil, fmt.Errorf("links: create bridge %s: %w", name, err)
		}
		var err error
		if l, err = a.refresh(name); err != nil {
			return nil, err
		}
	case l.Type() != "bridge":
		return nil, fmt.Errorf("links: %s exists and is a %s, not a bridge", name, l.Type())
	}
	if !a.snap.nfcall[l.Attrs().Index] && a.change("enable br_netfilter calls on %s", name) {
		changed = true
		if err := a.m.setNFCall(l.Attrs().Index); err != nil {
			return nil, err
		}
	}
	if mac != nil && !sameMAC(l.Attrs().HardwareAddr, mac) && a.change("set %s MAC %s", name, mac) {
		changed = true
		if err := h.LinkSetHardwareAddr(l, mac); err != nil {
			return nil, fmt.Errorf("links: set %s MAC: %w", name, err)
		}
	}
	if mtu != 0 && l.Attrs().MTU != mtu && a.change("set %s MTU %d", name, mtu) {
		changed = true
		if err := h.LinkSetMTU(l, mtu); err != nil {
			return nil, fmt.Errorf("links: set %s MTU: %w", name, err)
		}
	}
	if l.Attrs().Flags&net.FlagUp == 0 && a.change("set %s up", name) {
		changed = true
		if err := h.LinkSetUp(l); err != nil {
			return nil, fmt.Errorf("links: set %s up: %w", name, err)
		}
	}
	if changed {
		return a.refresh(name) // fresh flags, MAC and MTU
	}
	return l, nil
}

// tap returns the link of a tap, creating a persistent tap if it does not
// exist. An existing link of another type is used as it is (tests stand in
// veth pairs for VMs).
func (a *applier) tap(name string) (netlink.Link, error) {
	if l, ok := a.snap.Link(name); ok {
		return l, nil
	}
	if !a.change("create tap %s", name) {
		return nil, nil
	}
	err := nsutil.Do(a.m.ns, func() error {
		return netlink.LinkAdd(&netlink.Tuntap{
			LinkAttrs: netlink.LinkAttrs{Name: name},
			Mode:      netlink.TUNTAP_MODE_TAP,
			Flags:     netlink.TUNTAP_NO_PI | netlink.TUNTAP_VNET_HDR | netlink.TUNTAP_ONE_QUEUE,
			Queues:    1,
		})
	})
	if err != nil {
		return nil, fmt.Errorf("links: create tap %s: %w", name, err)
	}
	return a.refresh(name)
}

// port enslaves l to br with the isolation flag, MTU, and brings it up.
func (a *applier) port(l, br netlink.Link, isolated bool, mtu int) error {
	h := a.m.h
	name := l.Attrs().Name
	if l.Attrs().MasterIndex != br.Attrs().Index && a.change("add %s to %s", name, br.Attrs().Name) {
		if err := h.LinkSetMaster(l, br); err != nil {
			return fmt.Errorf("links: add %s to %s: %w", name, br.Attrs().Name, err)
		}
	}
	if !a.dry || l.Attrs().MasterIndex == br.Attrs().Index {
		// a port enslaved just now is not isolated
		if a.snap.isolated[l.Attrs().Index] != isolated && a.change("set %s isolated=%v", name, isolated) {
			if err := h.LinkSetIsolated(l, isolated); err != nil {
				return fmt.Errorf("links: isolate %s: %w", name, err)
			}
		}
	}
	if mtu != 0 && l.Attrs().MTU != mtu && a.change("set %s MTU %d", name, mtu) {
		if err := h.LinkSetMTU(l, mtu); err != nil {
			return fmt.Errorf("links: set %s MTU: %w", name, err)
		}
	}
	if l.Attrs().Flags&net.FlagUp == 0 && a.change("set %s up", name) {
		if err := h.LinkSetUp(l); err != nil {
			return fmt.Errorf("links: set %s up: %w", name, err)
		}
	}
	return nil
}

// nic brings l up with the MTU, static addresses (exactly: others removed),
// gateway and routes. metric is the default route's metric.
func (a *applier) nic(l netlink.Link, n NIC, metric int) error {
	h := a.m.h
	name := l.Attrs().Name
	if n.MTU != 0 && l.Attrs().MTU != n.MTU && a.change("set %s MTU %d", name, n.MTU) {
		if err := h.LinkSetMTU(l, n.MTU); err != nil {
			return fmt.Errorf("links: set %s MTU: %w", name, err)
		}
	}
	if l.Attrs().Flags&net.FlagUp == 0 && a.change("set %s up", name) {
		if err := h.LinkSetUp(l); err != nil {
			return fmt.Errorf("links: set %s up: %w", name, err)
		}
	}
	if n.Static {
		have := a.snap.addrs[l.Attrs().Index]
		got := map[netip.Prefix]bool{}
		for _, ad := range have {
			p := prefixOf(ad.IPNet)
			got[p] = true
			if !slices.Contains(n.Addrs, p) && a.change("remove address %s from %s", p, name) {
				if err := h.AddrDel(l, &ad); err != nil {
					return fmt.Errorf("links: remove %s from %s: %w", p, name, err)
				}
			}
		}
		for _, p := range n.Addrs {
			if !got[p] && a.change("add address %s to %s", p, name) {
				if err := h.AddrAdd(l, &netlink.Addr{IPNet: ipnet(p)}); err != nil {
					return fmt.Errorf("links: add %s to %s: %w", p, name, err)
				}
			}
		}
	}
	if n.Gateway.IsValid() {
		if err := a.route(l, netip.MustParsePrefix("0.0.0.0/0"), n.Gateway, metric); err != nil {
			return err
		}
	}
	for _, r := range n.Routes {
		if err := a.route(l, r.Dst, r.Via, 0); err != nil {
			return err
		}
	}
	return nil
}

func (a *applier) route(l netlink.Link, dst netip.Prefix, via netip.Addr, metric int) error {
	h := a.m.h
	for _, r := range a.snap.routes[l.Attrs().Index] {
		d := netip.MustParsePrefix("0.0.0.0/0")
		if r.Dst != nil {
			d = prefixOf(r.Dst)
		}
		if d == dst.Masked() && r.Gw != nil && r.Gw.Equal(net.IP(via.AsSlice())) && r.Priority == metric {
			return nil
		}
	}
	if !a.change("route %s via %s dev %s metric %d", dst, via, l.Attrs().Name, metric) {
		return nil
	}
	err := h.RouteReplace(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: ipnet(dst.Masked()), Gw: net.IP(via.AsSlice()), Priority: metric})
	if err != nil {
		return fmt.Errorf("links: route %s via %s dev %s: %w", dst, via, l.Attrs().Name, err)
	}
	return nil
}

func prefixOf(n *net.IPNet) netip.Prefix {
	a, _ := netip.AddrFromSlice(n.IP)
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones)
}

func ipnet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), 32)}
}

// portIsolation reads the isolation flag of every bridge port in one
// AF_BRIDGE dump (LinkGetProtinfo dumps all links for each port asked).
func (m *Manager) portIsolation() (map[int]bool, error) {
	out := map[int]bool{}
	err := func() error {
		req := m.request(unix.RTM_GETLINK, unix.NLM_F_DUMP)
		req.AddData(nl.NewIfInfomsg(unix.AF_BRIDGE))
		msgs, err := req.Execute(unix.NETLINK_ROUTE, unix.RTM_NEWLINK)
		if err != nil {
			return err
		}
		for _, raw := range msgs {
			info := nl.DeserializeIfInfomsg(raw)
			attrs, err := nl.ParseRouteAttr(raw[unix.SizeofIfInfomsg:])
			if err != nil {
				return err
			}
			for _, at := range attrs {
				if at.Attr.Type&^unix.NLA_F_NESTED != unix.IFLA_PROTINFO {
					continue
				}
				pis, err := nl.ParseRouteAttr(at.Value)
				if err != nil {
					return err
				}
				for _, pi := range pis {
					if pi.Attr.Type == unix.IFLA_BRPORT_ISOLATED && len(pi.Value) > 0 {
						out[int(info.Index)] = pi.Value[0] == 1
					}
				}
			}
		}
		return nil
	}()
	if err != nil {
		return nil, fmt.Errorf("links: read bridge port flags: %w", err)
	}
	return out, nil
}

// nfCalls reads, in one dump, which bridges have nf_call_iptables and
// nf_call_ip6tables on (netlink.Bridge does not carry these options).
func (m *Manager) nfCalls() (map[int]bool, error) {
	out := map[int]bool{}
	req := m.request(unix.RTM_GETLINK, unix.NLM_F_DUMP)
	req.AddData(nl.NewIfInfomsg(unix.AF_UNSPEC))
	msgs, err := req.Execute(unix.NETLINK_ROUTE, unix.RTM_NEWLINK)
	if err != nil {
		return nil, fmt.Errorf("links: read bridge options: %w", err)
	}
	for _, raw := range msgs {
		info := nl.DeserializeIfInfomsg(raw)
		attrs, err := nl.ParseRouteAttr(raw[unix.SizeofIfInfomsg:])
		if err != nil {
			return nil, fmt.Errorf("links: read bridge options: %w", err)
		}
		for _, at := range attrs {
			if at.Attr.Type&^unix.NLA_F_NESTED != unix.IFLA_LINKINFO {
				continue
			}
			infos, err := nl.ParseRouteAttr(at.Value)
			if err != nil {
				return nil, fmt.Errorf("links: read bridge options: %w", err)
			}
			for _, in := range infos {
				if in.Attr.Type&^unix.NLA_F_NESTED != unix.IFLA_INFO_DATA {
					continue
				}
				data, err := nl.ParseRouteAttr(in.Value)
				if err != nil {
					return nil, fmt.Errorf("links: read bridge options: %w", err)
				}
				v4, v6 := false, false
				for _, d := range data {
					switch d.Attr.Type {
					case unix.IFLA_BR_NF_CALL_IPTABLES:
						v4 = len(d.Value) > 0 && d.Value[0] == 1
					case unix.IFLA_BR_NF_CALL_IP6TABLES:
						v6 = len(d.Value) > 0 && d.Value[0] == 1
					}
				}
				if v4 && v6 {
					out[int(info.Index)] = true
				}
			}
		}
	}
	return out, nil
}

// setNFCall turns on nf_call_iptables and nf_call_ip6tables on a bridge, so
// that bridged IPv4/IPv6 traverse the inet hooks (per bridge, not the
// namespace-wide sysctl).
func (m *Manager) setNFCall(index int) error {
	err := func() error {
		req := m.request(unix.RTM_NEWLINK, unix.NLM_F_ACK)
		msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
		msg.Index = int32(index)
		req.AddData(msg)
		li := nl.NewRtAttr(unix.IFLA_LINKINFO, nil)
		li.AddRtAttr(nl.IFLA_INFO_KIND, nl.NonZeroTerminated("bridge"))
		data := li.AddRtAttr(nl.IFLA_INFO_DATA, nil)
		data.AddRtAttr(unix.IFLA_BR_NF_CALL_IPTABLES, []byte{1})
		data.AddRtAttr(unix.IFLA_BR_NF_CALL_IP6TABLES, []byte{1})
		req.AddData(li)
		_, err := req.Execute(unix.NETLINK_ROUTE, 0)
		return err
	}()
	if err != nil {
		return fmt.Errorf("links: enable br_netfilter on bridge %d: %w", index, err)
	}
	return nil
}

// Lease is an address learnt by DHCP, to be put on a link.
type Lease struct {
	Addr     netip.Prefix
	Router   netip.Addr
	MTU      int
	Lifetime time.Duration
}

// SetLease puts a DHCP address on link (with the lease's lifetime, so that it
// disappears if not renewed), replaces other IPv4 addresses, sets the MTU and
// the default route through the router with metric.
func (m *Manager) SetLease(link string, l Lease, metric int) ([]string, error) {
	snap, err := m.Snapshot()
	if err != nil {
		return nil, err
	}
	a := &applier{m: m, snap: snap}
	ln, ok := snap.Link(link)
	if !ok {
		return nil, fmt.Errorf("links: %s not found", link)
	}
	have := snap.addrs[ln.Attrs().Index]
	present := false
	for _, ad := range have {
		if prefixOf(ad.IPNet) == l.Addr {
			present = true
			continue
		}
		a.change("remove address %s from %s", prefixOf(ad.IPNet), link)
		if err := m.h.AddrDel(ln, &ad); err != nil {
			return a.changes, fmt.Errorf("links: remove address: %w", err)
		}
	}
	lft := int(l.Lifetime / time.Second)
	if !present {
		a.change("lease %s on %s for %ds", l.Addr, link, lft)
	}
	// (re)set the lifetime: a renewed lease is not a change
	if err := m.h.AddrReplace(ln, &netlink.Addr{IPNet: ipnet(l.Addr), ValidLft: lft, PreferedLft: lft}); err != nil {
		return a.changes, fmt.Errorf("links: set leased address %s on %s: %w", l.Addr, link, err)
	}
	n := NIC{MTU: l.MTU}
	if l.Router.IsValid() {
		n.Gateway = l.Router
	}
	if err := a.nic(ln, n, metric); err != nil {
		return a.changes, err
	}
	return a.changes, nil
}

// Observed is what `netcfg show` prints about links.
type Observed struct {
	Links []ObservedLink
}

// ObservedLink is one link netcfg cares about.
type ObservedLink struct {
	Name, Type, Master string
	Up, Isolated       bool
	MTU                int
	MAC                string
	Addrs              []string
}

// Observe reports the bridges, their ports and the given NICs.
func (m *Manager) Observe(nics ...string) (*Observed, error) {
	snap, err := m.Snapshot()
	if err != nil {
		return nil, err
	}
	byIndex := map[int]string{}
	for name, l := range snap.byName {
		byIndex[l.Attrs().Index] = name
	}
	names := make([]string, 0, len(snap.byName))
	for name := range snap.byName {
		names = append(names, name)
	}
	slices.SortFunc(names, func(a, b string) int { return snap.byName[a].Attrs().Index - snap.byName[b].Attrs().Index })
	o := &Observed{}
	for _, name := range names {
		l := snap.byName[name]
		at := l.Attrs()
		master := byIndex[at.MasterIndex]
		if !ours(at.Name) && !slices.Contains(nics, at.Name) && master != MgmtBridge && master != PrimaryBridge {
			continue
		}
		ol := ObservedLink{Name: at.Name, Type: l.Type(), Master: master, Up: at.Flags&net.FlagUp != 0, MTU: at.MTU,
			MAC: at.HardwareAddr.String(), Isolated: snap.isolated[at.Index]}
		for _, p := range snap.Addresses(name) {
			ol.Addrs = append(ol.Addrs, p.String())
		}
		o.Links = append(o.Links, ol)
	}
	return o, nil
}
