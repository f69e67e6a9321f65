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
