package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"deskhost/hostd/agent"
	"deskhost/internal/dhcpclient"
)

// managementNIC is the guest NIC on the host's management network (guide: "an ENI for
// management and streaming (eth0)"): the domain puts it in the first NIC slot. primaryNIC
// is the second, on the primary network (the customer LAN).
const (
	managementNIC = "eth0"
	primaryNIC    = "eth1"
)

// bringUpNetwork brings up loopback and the NICs, then keeps a DHCP lease on each NIC in the
// background: the management NIC's from the host (netcfg's server on br-mgmt), the primary
// NIC's from the primary network (netcfg's server on br-primary when the host serves it,
// or the LAN's own). Without a DHCP server (a development host with plain bridges) a NIC
// simply has no address.
func (g *guest) bringUpNetwork() {
	for _, name := range []string{"lo", managementNIC, primaryNIC} {
		if l, err := netlink.LinkByName(name); err == nil {
			if err := netlink.LinkSetUp(l); err != nil {
				g.fail("bring up %s: %v", name, err)
			}
		}
	}
	for _, nic := range []string{managementNIC, primaryNIC} {
		if _, err := netlink.LinkByName(nic); err != nil {
			continue
		}
		go g.keepLease(nic)
	}
}

// keepLease obtains and renews nic's lease, forever.
func (g *guest) keepLease(nic string) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	apply := func(l *dhcpclient.Lease) error { return g.applyLease(nic, l) }
	for delay := time.Second; ; delay = min(2*delay, time.Minute) {
		c, err := dhcpclient.New(netns.None(), nic, quiet)
		if err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			var l *dhcpclient.Lease
			l, err = c.Acquire(ctx)
			cancel()
			if err == nil {
				if err = apply(l); err == nil {
					g.log.Printf("address %s on %s (router %v)", l.Addr, nic, l.Router)
					_ = c.Keep(context.Background(), l, apply)
				}
			}
			c.Close()
		}
		g.log.Printf("no address on %s yet (%v); retrying in %s", nic, err, delay)
		time.Sleep(delay)
	}
}

// applyLease puts the lease's address and classless static routes on nic; the primary
// NIC's router, if the lease names one (and no classless routes, which replace it: RFC
// 3442), becomes the default route.
func (g *guest) applyLease(nic string, l *dhcpclient.Lease) error {
	link, err := netlink.LinkByName(nic)
	if err != nil {
		return err
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: l.Addr.Addr().AsSlice(), Mask: net.CIDRMask(l.Addr.Bits(), 32)}}
	if err := netlink.AddrReplace(link, addr); err != nil {
		return fmt.Errorf("address %s on %s: %w", l.Addr, nic, err)
	}
	// On-link routes first: the gatewayed ones need their gateway reachable.
	routes := slices.Clone(l.Routes)
	if len(routes) == 0 && nic == primaryNIC && l.Router.IsValid() && !l.Router.IsUnspecified() {
		routes = []dhcpclient.Route{{Dst: netip.PrefixFrom(netip.IPv4Unspecified(), 0), Via: l.Router}}
	}
	onLinkFirst := func(r dhcpclient.Route) int {
		if r.Via.IsUnspecified() {
			return 0
		}
		return 1
	}
	slices.SortStableFunc(routes, func(a, b dhcpclient.Route) int { return onLinkFirst(a) - onLinkFirst(b) })
	for _, r := range routes {
		dst := &net.IPNet{IP: r.Dst.Addr().AsSlice(), Mask: net.CIDRMask(r.Dst.Bits(), 32)}
		rt := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: dst, Scope: netlink.SCOPE_LINK}
		if !r.Via.IsUnspecified() {
			rt.Gw, rt.Scope = r.Via.AsSlice(), netlink.SCOPE_UNIVERSE
		}
		if err := netlink.RouteReplace(rt); err != nil {
			return fmt.Errorf("route %s via %s on %s: %w", r.Dst, r.Via, nic, err)
		}
	}
	if nic == managementNIC {
		g.mu.Lock()
		g.mgmtAddr = l.Addr.String()
		g.mu.Unlock()
	}
	return nil
}

// interfaces reports the guest's NICs for status.
func interfaces() []agent.Interface {
	links, err := netlink.LinkList()
	if err != nil {
		return nil
	}
	var out []agent.Interface
	for _, l := range links {
		a := l.Attrs()
		if a.Name == "lo" {
			continue
		}
		i := agent.Interface{Name: a.Name, MAC: a.HardwareAddr.String()}
		if addrs, err := netlink.AddrList(l, netlink.FAMILY_V4); err == nil {
			for _, ad := range addrs {
				i.Addresses = append(i.Addresses, ad.IPNet.String())
			}
		}
		out = append(out, i)
	}
	return out
}
