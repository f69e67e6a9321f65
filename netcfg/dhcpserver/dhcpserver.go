// Package dhcpserver is the DHCPv4 server of br-mgmt, the VMs' management
// network, and (with primaryNetwork.dhcp) of br-primary for the VMs' primary
// NICs. It answers only MACs it knows (every WorkSpace's NIC has a fixed
// address). On br-mgmt it gives no default route: the management network
// carries streaming and management traffic only, so the guest gets its
// management routes as classless static routes (option 121), which a guest
// cannot lose through image drift (catalog §12.5), while its default route
// comes from the primary NIC (Config.Router, option 3).
package dhcpserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
	"github.com/vishvananda/netns"

	"deskhost/internal/nsutil"
)

// Lease is a fixed assignment.
type Lease struct {
	MAC      net.HardwareAddr
	IP       netip.Addr
	Hostname string
}

// Route is a classless static route handed out in option 121.
type Route struct {
	Dst netip.Prefix
	Via netip.Addr // the unspecified address means on-link
}

// Config is the server's network view.
type Config struct {
	Interface string       // br-mgmt
	ServerIP  netip.Addr   // the host's address on it
	Network   netip.Prefix // the management range
	Routes    []Route
	Router    netip.Addr // the default route (option 3); invalid: none
	LeaseTime time.Duration
	MTU       int
}

// Server hands out fixed leases.
type Server struct {
	log *slog.Logger

	mu     sync.RWMutex
	cfg    Config
	leases map[string]Lease // by MAC string
}

// New returns a server; SetLeases and SetConfig may be called at any time.
func New(cfg Config, log *slog.Logger) *Server {
	if log == nil {
		log = slog.Default()
	}
	return &Server{cfg: cfg, log: log.With("component", "dhcpserver"), leases: map[string]Lease{}}
}

// SetConfig replaces the network view.
func (s *Server) SetConfig(cfg Config) {
	s.mu.Lock()
	s.cfg = cfg
	s.mu.Unlock()
}

// SetLeases replaces the table of fixed leases.
func (s *Server) SetLeases(ls []Lease) {
	m := make(map[string]Lease, len(ls))
	for _, l := range ls {
		m[strings.ToLower(l.MAC.String())] = l
	}
	s.mu.Lock()
	s.leases = m
	s.mu.Unlock()
}

// Listen opens the server's socket in ns, bound to the interface.
func Listen(ns netns.NsHandle, ifname string) (net.PacketConn, error) {
	var c net.PacketConn
	err := nsutil.Do(ns, func() (err error) {
		c, err = server4.NewIPv4UDPConn(ifname, &net.UDPAddr{Port: dhcpv4.ServerPort})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("dhcpserver: listen on %s: %w", ifname, err)
	}
	return c, nil
}

// Serve answers requests on conn until ctx ends.
func (s *Server) Serve(ctx context.Context, conn net.PacketConn) error {
	srv, err := server4.NewServer("", nil, s.handle, server4.WithConn(conn))
	if err != nil {
		return fmt.Errorf("dhcpserver: %w", err)
	}
	done := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			srv.Close()
		case <-done:
		}
	}()
	err = srv.Serve()
	close(done)
	if ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("dhcpserver: %w", err)
}

// Reply computes the answer to a request (nil: stay silent).
func (s *Server) Reply(req *dhcpv4.DHCPv4) (*dhcpv4.DHCPv4, error) {
	if req.OpCode != dhcpv4.OpcodeBootRequest {
		return nil, nil
	}
	s.mu.RLock()
	cfg := s.cfg
	lease, known := s.leases[strings.ToLower(req.ClientHWAddr.String())]
	s.mu.RUnlock()
	if !known {
		s.log.Debug("ignoring unknown client", "mac", req.ClientHWAddr)
		return nil, nil
	}
	var typ dhcpv4.MessageType
	switch req.MessageType() {
	case dhcpv4.MessageTypeDiscover:
		typ = dhcpv4.MessageTypeOffer
	case dhcpv4.MessageTypeRequest:
		typ = dhcpv4.MessageTypeAck
		// A client asking for another address (or another server) gets a NAK.
		want := req.RequestedIPAddress()
		if want == nil || want.IsUnspecified() {
			want = req.ClientIPAddr
		}
		if sid := req.ServerIdentifier(); sid != nil && !sid.Equal(net.IP(cfg.ServerIP.AsSlice())) {
			return nil, nil
		}
		if want != nil && !want.IsUnspecified() && !want.Equal(net.IP(lease.IP.AsSlice())) {
			return dhcpv4.NewReplyFromRequest(req,
				dhcpv4.WithMessageType(dhcpv4.MessageTypeNak),
				dhcpv4.WithServerIP(net.IP(cfg.ServerIP.AsSlice())),
				dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IP(cfg.ServerIP.AsSlice()))))
		}
	case dhcpv4.MessageTypeInform:
		typ = dhcpv4.MessageTypeAck
	case dhcpv4.MessageTypeRelease, dhcpv4.MessageTypeDecline:
		return nil, nil
	default:
		return nil, nil
	}
	var routes []*dhcpv4.Route
	for _, r := range cfg.Routes {
		routes = append(routes, &dhcpv4.Route{
			Dest:   &net.IPNet{IP: net.IP(r.Dst.Addr().AsSlice()), Mask: net.CIDRMask(r.Dst.Bits(), 32)},
			Router: net.IP(r.Via.AsSlice()),
		})
	}
	mods := []dhcpv4.Modifier{
		dhcpv4.WithMessageType(typ),
		dhcpv4.WithServerIP(net.IP(cfg.ServerIP.AsSlice())),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IP(cfg.ServerIP.AsSlice()))),
		dhcpv4.WithNetmask(net.CIDRMask(cfg.Network.Bits(), 32)),
		dhcpv4.WithOption(dhcpv4.OptIPAddressLeaseTime(cfg.LeaseTime)),
		dhcpv4.WithOption(dhcpv4.OptRenewTimeValue(cfg.LeaseTime / 2)),
		dhcpv4.WithOption(dhcpv4.OptRebindingTimeValue(cfg.LeaseTime * 7 / 8)),
	}
	if len(routes) > 0 {
		// With option 121 a client ignores option 3 (RFC 3442): one or the other.
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptClasslessStaticRoute(routes...)))
	} else if cfg.Router.IsValid() {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptRouter(net.IP(cfg.Router.AsSlice()))))
	}
	if typ != dhcpv4.MessageTypeAck || req.MessageType() != dhcpv4.MessageTypeInform {
		mods = append(mods, dhcpv4.WithYourIP(net.IP(lease.IP.AsSlice())))
	}
	if cfg.MTU > 0 {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.Option{Code: dhcpv4.OptionInterfaceMTU, Value: dhcpv4.Uint16(cfg.MTU)}))
	}
	if lease.Hostname != "" {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptHostName(lease.Hostname)))
	}
	return dhcpv4.NewReplyFromRequest(req, mods...)
}

func (s *Server) handle(conn net.PacketConn, peer net.Addr, req *dhcpv4.DHCPv4) {
	resp, err := s.Reply(req)
	if err != nil {
		s.log.Warn("cannot build reply", "mac", req.ClientHWAddr, "err", err)
		return
	}
	if resp == nil {
		return
	}
	// Clients without an address (and relays are absent here) get a
	// broadcast; renewing clients a unicast to their address.
	dst := &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ClientPort}
	if !req.ClientIPAddr.IsUnspecified() && req.ClientIPAddr != nil {
		dst = &net.UDPAddr{IP: req.ClientIPAddr, Port: dhcpv4.ClientPort}
	}
	if _, err := conn.WriteTo(resp.ToBytes(), dst); err != nil && !errors.Is(err, net.ErrClosed) {
		s.log.Warn("cannot send reply", "to", dst, "err", err)
		return
	}
	s.log.Debug("replied", "type", resp.MessageType(), "mac", req.ClientHWAddr, "ip", resp.YourIPAddr)
}
