package dhcpserver

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

func TestReply(t *testing.T) {
	host := netip.MustParseAddr("198.19.0.1")
	s := New(Config{Interface: "br-mgmt", ServerIP: host, Network: netip.MustParsePrefix("198.19.0.0/16"), LeaseTime: time.Hour, MTU: 1500,
		Routes: []Route{{Dst: netip.MustParsePrefix("198.19.0.0/16"), Via: netip.IPv4Unspecified()}, {Dst: netip.MustParsePrefix("169.254.169.254/32"), Via: host}}}, nil)
	known := net.HardwareAddr{2, 0xd5, 1, 2, 3, 4}
	s.SetLeases([]Lease{{MAC: known, IP: netip.MustParseAddr("198.19.0.10"), Hostname: "vm"}})

	disc, _ := dhcpv4.NewDiscovery(known)
	offer, err := s.Reply(disc)
	if err != nil || offer == nil || offer.MessageType() != dhcpv4.MessageTypeOffer {
		t.Fatalf("offer: %v %v", offer, err)
	}
	if !offer.YourIPAddr.Equal(net.ParseIP("198.19.0.10")) || offer.Router() != nil {
		t.Fatalf("offer %s router %v", offer.YourIPAddr, offer.Router())
	}
	rs := offer.ClasslessStaticRoute()
	if len(rs) != 2 || rs[1].Dest.String() != "169.254.169.254/32" || !rs[1].Router.Equal(net.ParseIP("198.19.0.1")) {
		t.Fatalf("option 121: %v", rs)
	}
	if ones, _ := offer.SubnetMask().Size(); ones != 16 || offer.HostName() != "vm" {
		t.Fatalf("mask /%d host %q", ones, offer.HostName())
	}
	req, _ := dhcpv4.NewRequestFromOffer(offer)
	ack, _ := s.Reply(req)
	if ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck {
		t.Fatalf("ack: %v", ack)
	}
	// asking for another address: NAK
	bad, _ := dhcpv4.NewRequestFromOffer(offer, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP("198.19.0.99"))))
	if nak, _ := s.Reply(bad); nak == nil || nak.MessageType() != dhcpv4.MessageTypeNak {
		t.Fatalf("nak: %v", nak)
	}
	// unknown MACs get nothing
	other, _ := dhcpv4.NewDiscovery(net.HardwareAddr{2, 0xd5, 9, 9, 9, 9})
	if r, _ := s.Reply(other); r != nil {
		t.Fatalf("unknown client answered: %v", r)
	}
}

// TestReplyPrimary: on br-primary the server hands out the default route (option 3) and
// no classless routes, which would make clients ignore it.
func TestReplyPrimary(t *testing.T) {
	s := New(Config{Interface: "br-primary", ServerIP: netip.MustParseAddr("10.92.0.1"), Network: netip.MustParsePrefix("10.92.0.0/24"),
		Router: netip.MustParseAddr("10.92.0.254"), LeaseTime: time.Hour}, nil)
	mac := net.HardwareAddr{2, 0xd6, 1, 2, 3, 4}
	s.SetLeases([]Lease{{MAC: mac, IP: netip.MustParseAddr("10.92.0.100")}})
	disc, _ := dhcpv4.NewDiscovery(mac)
	offer, err := s.Reply(disc)
	if err != nil || offer == nil {
		t.Fatalf("offer: %v %v", offer, err)
	}
	if !offer.YourIPAddr.Equal(net.ParseIP("10.92.0.100")) || len(offer.Router()) != 1 || !offer.Router()[0].Equal(net.ParseIP("10.92.0.254")) {
		t.Fatalf("offer %s router %v", offer.YourIPAddr, offer.Router())
	}
	if rs := offer.ClasslessStaticRoute(); len(rs) != 0 || offer.Options.Has(dhcpv4.OptionClasslessStaticRoute) {
		t.Fatalf("option 121 on the primary network: %v", rs)
	}
	if ones, _ := offer.SubnetMask().Size(); ones != 24 {
		t.Fatalf("mask /%d", ones)
	}
}
