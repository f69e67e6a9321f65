package serve

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
)

// ProxyDHCP answers iPXE's DHCP discovery as a ProxyDHCP server (PXE specification 2.1):
// the network's own DHCP server hands out the address, ProxyDHCP only names the boot file.
// iPXE, having received a DHCP server's offer, keeps waiting for a ProxyDHCP offer until
// more than 2 s have passed, which with its 1 s, 2 s retransmission timer is ~3 s on every
// network boot (measured under qemu: DHCPDISCOVER at t, DHCPREQUEST at t+3.05 s). An
// immediate ProxyDHCP offer ends that wait: iPXE requests its address at once.
//
// Only iPXE clients are answered (vendor class "PXEClient" and user class "iPXE" or
// iPXE's option 175): the boot file is an iPXE script URL, which another PXE ROM could not
// use, so other PXE clients on a real network are left to whoever serves them.
//
// ProxyDHCP works on Ethernet frames (HandleFrame): it needs to see broadcasts a client
// without an address sends, and to answer one; QEMUNet carries the frames for a qemu
// guest.
type ProxyDHCP struct {
	// BootFile is what clients boot, e.g. http://10.0.2.2:8089/boot.ipxe.
	BootFile string
	// ServerIP is this server as clients see it: DHCP option 54 and siaddr, and the
	// source of the replies.
	ServerIP net.IP
	// ServerMAC is the replies' Ethernet source address.
	ServerMAC net.HardwareAddr
	// Log, if set, is told about each answer and each PXE client left alone.
	Log func(msg string, args ...any)

	offers, acks atomic.Int64
}

// NewProxyDHCP checks its arguments. mac nil means the qemu user network's convention
// for the host's address: 52:55 followed by the IPv4 address.
func NewProxyDHCP(bootFile string, serverIP net.IP, mac net.HardwareAddr) (*ProxyDHCP, error) {
	ip4 := serverIP.To4()
	if ip4 == nil || ip4.IsUnspecified() {
		return nil, fmt.Errorf("proxydhcp: server address %v is not an IPv4 address", serverIP)
	}
	if bootFile == "" || len(bootFile) > 255 {
		return nil, fmt.Errorf("proxydhcp: boot file %q: want 1 to 255 bytes", bootFile)
	}
	if mac == nil {
		mac = net.HardwareAddr{0x52, 0x55, ip4[0], ip4[1], ip4[2], ip4[3]}
	}
	if len(mac) != 6 {
		return nil, fmt.Errorf("proxydhcp: server MAC %v is not an Ethernet address", mac)
	}
	return &ProxyDHCP{BootFile: bootFile, ServerIP: ip4, ServerMAC: mac}, nil
}

// Answered returns how many ProxyDHCP offers (to DHCPDISCOVERs on port 67) and
// acknowledgements (to DHCPREQUESTs on port 4011) were sent.
func (p *ProxyDHCP) Answered() (offers, acks int64) { return p.offers.Load(), p.acks.Load() }

// DHCP and PXE constants (RFC 2131, RFC 2132, PXE 2.1).
const (
	bootpServerPort = 67
	bootpClientPort = 68
	pxePort         = 4011 // ProxyDHCP's DHCPREQUEST/DHCPACK port

	dhcpDiscover = 1
	dhcpOffer    = 2
	dhcpRequest  = 3
	dhcpAck      = 5

	optPad          = 0
	optVendorSpec   = 43 // PXE: encapsulated vendor options
	optMessageType  = 53
	optServerID     = 54
	optVendorClass  = 60
	optBootFile     = 67
	optUserClass    = 77
	optClientUUID   = 97
	optIPXEEncap    = 175
	optEnd          = 255
	pxeDiscoveryCtl = 6 // PXE vendor sub-option: discovery control
	// Discovery control bit 3: boot the file named in this offer, no boot server
	// discovery and no boot menu.
	pxeBootFileDirect = 0x08

	bootpHeader = 236 // the fixed BOOTP fields
	dhcpMagic   = 0x63825363
	etherIPv4   = 0x0800
	ipProtoUDP  = 17
)

// errNotForUs is a frame ProxyDHCP does not answer (most frames).
var errNotForUs = errors.New("not a PXE DHCP request for us")

// HandleFrame returns the reply to an Ethernet frame, or nil when the frame is not an
// iPXE client's DHCPDISCOVER (to port 67) or DHCPREQUEST (to port 4011 of ServerIP).
func (p *ProxyDHCP) HandleFrame(frame []byte) []byte {
	reply, err := p.handle(frame)
	if err != nil {
		return nil
	}
	return reply
}

func (p *ProxyDHCP) handle(frame []byte) ([]byte, error) {
	if len(frame) < 14+20+8 || binary.BigEndian.Uint16(frame[12:]) != etherIPv4 {
		return nil, errNotForUs
	}
	ip := frame[14:]
	ihl := int(ip[0]&0x0f) * 4
	if ip[0]>>4 != 4 || ihl < 20 || len(ip) < ihl+8 || ip[9] != ipProtoUDP {
		return nil, errNotForUs
	}
	if binary.BigEndian.Uint16(ip[6:])&0x3fff != 0 { // a fragment
		return nil, errNotForUs
	}
	total := int(binary.BigEndian.Uint16(ip[2:]))
	if total < ihl+8 || total > len(ip) {
		return nil, errNotForUs
	}
	ip = ip[:total]
	udp := ip[ihl:]
	sport, dport := binary.BigEndian.Uint16(udp[0:]), binary.BigEndian.Uint16(udp[2:])
	ulen := int(binary.BigEndian.Uint16(udp[4:]))
	if ulen < 8 || ulen > len(udp) {
		return nil, errNotForUs
	}
	dst := net.IP(ip[16:20])
	switch {
	case dport == bootpServerPort && sport == bootpClientPort:
	case dport == pxePort && dst.Equal(p.ServerIP):
	default:
		return nil, errNotForUs
	}
	req, err := parseDHCP(udp[8:ulen])
	if err != nil {
		return nil, err
	}
	if !req.pxeClient {
		return nil, errNotForUs
	}
	client := net.HardwareAddr(frame[6:12])
	if !req.ipxe {
		p.logf("proxydhcp: leaving a PXE client that is not iPXE alone", "client", client.String())
		return nil, errNotForUs
	}
	switch {
	case dport == bootpServerPort && req.msgType == dhcpDiscover:
		// The client has no address yet: broadcast, as the DHCP server's offer is.
		out := p.reply(req, dhcpOffer)
		p.offers.Add(1)
		p.logf("proxydhcp: offer", "client", client.String(), "bootfile", p.BootFile)
		return p.frame(broadcastMAC, net.IPv4bcast, bootpServerPort, bootpClientPort, out), nil
	case dport == pxePort && req.msgType == dhcpRequest:
		// The client has its address now and asks this server directly.
		src := net.IP(ip[12:16])
		out := p.reply(req, dhcpAck)
		p.acks.Add(1)
		p.logf("proxydhcp: ack", "client", client.String(), "address", src.String(), "bootfile", p.BootFile)
		return p.frame(client, src, pxePort, sport, out), nil
	}
	return nil, errNotForUs
}

func (p *ProxyDHCP) logf(msg string, args ...any) {
	if p.Log != nil {
		p.Log(msg, args...)
	}
}

var broadcastMAC = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// dhcpRequestInfo is what ProxyDHCP needs from a client's packet.
type dhcpRequestInfo struct {
	raw       []byte // the BOOTP header (236 bytes)
	msgType   byte
	pxeClient bool   // option 60 starts with "PXEClient"
	ipxe      bool   // option 77 is "iPXE" or option 175 is present
	uuid      []byte // option 97, echoed as PXE requires
}

func parseDHCP(b []byte) (*dhcpRequestInfo, error) {
	if len(b) < bootpHeader+4 || b[0] != 1 /* BOOTREQUEST */ || b[1] != 1 || b[2] != 6 {
		return nil, errNotForUs
	}
	if binary.BigEndian.Uint32(b[bootpHeader:]) != dhcpMagic {
		return nil, errNotForUs
	}
	r := &dhcpRequestInfo{raw: b[:bootpHeader]}
	opts := b[bootpHeader+4:]
	for i := 0; i < len(opts); {
		code := opts[i]
		if code == optEnd {
			break
		}
		if code == optPad {
			i++
			continue
		}
		if i+1 >= len(opts) || i+2+int(opts[i+1]) > len(opts) {
			return nil, errNotForUs // truncated
		}
		v := opts[i+2 : i+2+int(opts[i+1])]
		switch code {
		case optMessageType:
			if len(v) == 1 {
				r.msgType = v[0]
			}
		case optVendorClass:
			r.pxeClient = bytes.HasPrefix(v, []byte("PXEClient"))
		case optUserClass:
			if bytes.Equal(v, []byte("iPXE")) {
				r.ipxe = true
			}
		case optIPXEEncap:
			r.ipxe = true
		case optClientUUID:
			r.uuid = v
		}
		i += 2 + len(v)
	}
	if r.msgType == 0 {
		return nil, errNotForUs // BOOTP, not DHCP
	}
	return r, nil
}

// reply builds a ProxyDHCPOFFER or ProxyDHCPACK: no address (yiaddr 0), this server's
// identity, vendor class PXEClient, the boot file, and PXE options saying "boot this
// file" so the client neither discovers boot servers nor shows a menu.
func (p *ProxyDHCP) reply(req *dhcpRequestInfo, msgType byte) []byte {
	b := make([]byte, bootpHeader, 400)
	b[0] = 2 // BOOTREPLY
	b[1], b[2] = req.raw[1], req.raw[2]
	copy(b[4:8], req.raw[4:8])       // xid
	copy(b[10:12], req.raw[10:12])   // flags (broadcast)
	copy(b[20:24], p.ServerIP.To4()) // siaddr: the next server
	copy(b[24:28], req.raw[24:28])   // giaddr
	copy(b[28:44], req.raw[28:44])   // chaddr
	if len(p.BootFile) < 128 {
		copy(b[108:236], p.BootFile)
	}
	b = binary.BigEndian.AppendUint32(b, dhcpMagic)
	b = append(b, optMessageType, 1, msgType)
	b = append(b, optServerID, 4)
	b = append(b, p.ServerIP.To4()...)
	b = append(b, optVendorClass, 9)
	b = append(b, "PXEClient"...)
	b = append(b, optVendorSpec, 4, pxeDiscoveryCtl, 1, pxeBootFileDirect, optEnd)
	b = append(b, optBootFile, byte(len(p.BootFile)))
	b = append(b, p.BootFile...)
	if len(req.uuid) > 0 {
		b = append(b, optClientUUID, byte(len(req.uuid)))
		b = append(b, req.uuid...)
	}
	b = append(b, optEnd)
	for len(b) < 300 { // the minimum BOOTP message some clients insist on
		b = append(b, optPad)
	}
	return b
}

// frame wraps a UDP payload from ServerIP:sport into an Ethernet frame.
func (p *ProxyDHCP) frame(dstMAC net.HardwareAddr, dstIP net.IP, sport, dport uint16, payload []byte) []byte {
	f := make([]byte, 14+20+8+len(payload))
	copy(f[0:6], dstMAC)
	copy(f[6:12], p.ServerMAC)
	binary.BigEndian.PutUint16(f[12:], etherIPv4)
	ip := f[14:34]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(20+8+len(payload)))
	ip[8] = 64 // TTL
	ip[9] = ipProtoUDP
	copy(ip[12:16], p.ServerIP.To4())
	copy(ip[16:20], dstIP.To4())
	binary.BigEndian.PutUint16(ip[10:], ^onesSum(0, ip))
	udp := f[34:]
	binary.BigEndian.PutUint16(udp[0:], sport)
	binary.BigEndian.PutUint16(udp[2:], dport)
	binary.BigEndian.PutUint16(udp[4:], uint16(8+len(payload)))
	copy(udp[8:], payload)
	// The UDP checksum covers a pseudo header: addresses, protocol and length.
	var pseudo [12]byte
	copy(pseudo[0:4], ip[12:16])
	copy(pseudo[4:8], ip[16:20])
	pseudo[9] = ipProtoUDP
	binary.BigEndian.PutUint16(pseudo[10:], uint16(len(udp)))
	sum := ^onesSum(onesSum(0, pseudo[:]), udp)
	if sum == 0 {
		sum = 0xffff
	}
	binary.BigEndian.PutUint16(udp[6:], sum)
	return f
}

// onesSum adds b to the one's complement sum s (RFC 1071).
func onesSum(s uint16, b []byte) uint16 {
	acc := uint32(s)
	for i := 0; i+1 < len(b); i += 2 {
		acc += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		acc += uint32(b[len(b)-1]) << 8
	}
	for acc>>16 != 0 {
		acc = acc&0xffff + acc>>16
	}
	return uint16(acc)
}
