// Package dhcpclient obtains and renews DHCPv4 leases for the host's NICs
// (github.com/insomniacslk/dhcp's nclient4, a raw-socket client that works on
// an unconfigured interface).
package dhcpclient

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/vishvananda/netns"

	"deskhost/internal/nsutil"
)

// Lease is what the host needs from a DHCP ACK.
type Lease struct {
	Addr      netip.Prefix
	Router    netip.Addr
	Server    netip.Addr
	MTU       int
	Duration  time.Duration
	Renew     time.Duration
	Routes    []Route // option 121, if any
	Obtained  time.Time
	ack       *nclient4.Lease
	Interface string
}

// Route is a classless static route from option 121.
type Route struct {
	Dst netip.Prefix
	Via netip.Addr
}

// Client holds an interface's DHCP conversation.
type Client struct {
	ifname string
	c      *nclient4.Client
	log    *slog.Logger
	lease  *nclient4.Lease
}

// New opens a client for ifname inside ns.
func New(ns netns.NsHandle, ifname string, log *slog.Logger) (*Client, error) {
	if log == nil {
		log = slog.Default()
	}
	var c *nclient4.Client
	err := nsutil.Do(ns, func() (err error) {
		c, err = nclient4.New(ifname, nclient4.WithTimeout(2*time.Second), nclient4.WithRetry(3))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("dhcpclient: %s: %w", ifname, err)
	}
	return &Client{ifname: ifname, c: c, log: log.With("component", "dhcpclient", "interface", ifname)}, nil
}

// Close releases the socket.
func (c *Client) Close() error { return c.c.Close() }

// Acquire runs DISCOVER/OFFER/REQUEST/ACK.
func (c *Client) Acquire(ctx context.Context) (*Lease, error) {
	l, err := c.c.Request(ctx)
	if err != nil {
		return nil, fmt.Errorf("dhcpclient: %s: no lease: %w", c.ifname, err)
	}
	c.lease = l
	return c.parse(l)
}

// Renew renews the current lease.
func (c *Client) Renew(ctx context.Context) (*Lease, error) {
	if c.lease == nil {
		return c.Acquire(ctx)
	}
	l, err := c.c.Renew(ctx, c.lease)
	if err != nil {
		return nil, fmt.Errorf("dhcpclient: %s: renew: %w", c.ifname, err)
	}
	c.lease = l
	return c.parse(l)
}

func (c *Client) parse(l *nclient4.Lease) (*Lease, error) {
	ack := l.ACK
	ip, ok := netip.AddrFromSlice(ack.YourIPAddr.To4())
	if !ok || ip.IsUnspecified() {
		return nil, errors.New("dhcpclient: ACK without an address")
	}
	mask := ack.SubnetMask()
	bits := 24
	if mask != nil {
		bits, _ = mask.Size()
	}
	out := &Lease{Addr: netip.PrefixFrom(ip, bits), Obtained: time.Now(), ack: l, Interface: c.ifname}
	if rs := ack.Router(); len(rs) > 0 {
		out.Router, _ = netip.AddrFromSlice(rs[0].To4())
	}
	if sid := ack.ServerIdentifier(); sid != nil {
		out.Server, _ = netip.AddrFromSlice(sid.To4())
	}
	out.Duration = ack.IPAddressLeaseTime(time.Hour)
	out.Renew = ack.IPAddressRenewalTime(out.Duration / 2)
	if v := ack.Options.Get(dhcpv4.OptionInterfaceMTU); len(v) == 2 {
		out.MTU = int(v[0])<<8 | int(v[1])
	}
	for _, r := range ack.ClasslessStaticRoute() {
		ones, _ := r.Dest.Mask.Size()
		dst, _ := netip.AddrFromSlice(r.Dest.IP.To4())
		via, _ := netip.AddrFromSlice(r.Router.To4())
		out.Routes = append(out.Routes, Route{Dst: netip.PrefixFrom(dst, ones), Via: via})
	}
	return out, nil
}

// Keep renews the lease at its renewal time and calls apply with every new
// lease, until ctx ends. A failed renewal is retried every 30 s; once the
// lease has expired it starts over with a new request.
func (c *Client) Keep(ctx context.Context, first *Lease, apply func(*Lease) error) error {
	expires := first.Obtained.Add(first.Duration)
	next := first.Obtained.Add(first.Renew)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(max(time.Until(next), time.Second)):
		}
		var l *Lease
		var err error
		if time.Now().After(expires) {
			l, err = c.Acquire(ctx)
		} else {
			l, err = c.Renew(ctx)
		}
		if err != nil {
			c.log.Warn("lease not renewed", "err", err, "expires", expires)
			next = time.Now().Add(30 * time.Second)
			continue
		}
		if err := apply(l); err != nil {
			c.log.Warn("cannot apply lease", "err", err)
		}
		expires, next = l.Obtained.Add(l.Duration), l.Obtained.Add(l.Renew)
	}
}
