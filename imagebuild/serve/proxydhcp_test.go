package serve

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"io"
	"math/rand"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"golang.org/x/sys/unix"
)

// ipxeDiscover is a DHCPDISCOVER frame captured from Debian's iPXE (ipxe-qemu
// 1.0.0+git-20190125.36a4c85-5.1, efi-virtio.rom) under qemu: vendor class
// PXEClient:Arch:00000:UNDI:002001, user class iPXE, iPXE's option 175, a UUID (97).
var ipxeDiscover = mustHex("ffffffffffff5254001234010800450001ac010000004011784200000000ffffffff004400430198ea61010106001eac" +
	"f94a00040000000000000000000000000000000000005254001234010000000000000000000000000000000000000000" +
	"000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000" +
	"000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000" +
	"000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000" +
	"000000000000000000000000000000000000000000000000000000000000000000000000000063825363350101390205" +
	"c05d0200005e030102013c20505845436c69656e743a417263683a30303030303a554e44493a3030323030314d046950" +
	"58453717010306070c0f111a2b3c4243778081828384858687afcbaf30b105011af41000eb0301000017010122010113" +
	"01011101012701011901012901011001022101011501011801011201013d070152540012340161110000000000000000" +
	"000000000000000000ff")

var clientMAC = net.HardwareAddr{0x52, 0x54, 0x00, 0x12, 0x34, 0x01}

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

func testProxy(t *testing.T) *ProxyDHCP {
	t.Helper()
	p, err := NewProxyDHCP("http://10.0.2.2:8089/boot.ipxe", net.IPv4(10, 0, 2, 2), nil)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// udpFrame wraps a UDP payload in Ethernet and IPv4 headers (UDP checksum 0: none).
func udpFrame(src net.HardwareAddr, srcIP, dstIP net.IP, sport, dport uint16, payload []byte) []byte {
	f := make([]byte, 42+len(payload))
	copy(f[0:6], broadcastMAC)
	copy(f[6:12], src)
	binary.BigEndian.PutUint16(f[12:], etherIPv4)
	ip := f[14:34]
	ip[0], ip[8], ip[9] = 0x45, 64, ipProtoUDP
	binary.BigEndian.PutUint16(ip[2:], uint16(28+len(payload)))
	copy(ip[12:16], srcIP.To4())
	copy(ip[16:20], dstIP.To4())
	binary.BigEndian.PutUint16(ip[10:], ^onesSum(0, ip))
	binary.BigEndian.PutUint16(f[34:], sport)
	binary.BigEndian.PutUint16(f[36:], dport)
	binary.BigEndian.PutUint16(f[38:], uint16(8+len(payload)))
	copy(f[42:], payload)
	return f
}

// decoded is a reply frame taken apart, its checksums verified.
type decoded struct {
	dstMAC, srcMAC net.HardwareAddr
	srcIP, dstIP   net.IP
	sport, dport   uint16
	dhcp           *dhcpv4.DHCPv4
}

func decode(t *testing.T, f []byte) decoded {
	t.Helper()
	if len(f) < 42 || binary.BigEndian.Uint16(f[12:]) != etherIPv4 {
		t.Fatalf("not an IPv4 frame: %x", f)
	}
	ip := f[14:34]
	if ^onesSum(0, ip) != 0 {
		t.Errorf("IP header checksum is wrong")
	}
	if int(binary.BigEndian.Uint16(ip[2:])) != len(f)-14 {
		t.Errorf("IP total length %d, frame carries %d", binary.BigEndian.Uint16(ip[2:]), len(f)-14)
	}
	udp := f[34:]
	var pseudo [12]byte
	copy(pseudo[0:8], ip[12:20])
	pseudo[9] = ipProtoUDP
	binary.BigEndian.PutUint16(pseudo[10:], uint16(len(udp)))
	if ^onesSum(onesSum(0, pseudo[:]), udp) != 0 {
		t.Errorf("UDP checksum is wrong")
	}
	d, err := dhcpv4.FromBytes(udp[8:])
	if err != nil {
		t.Fatalf("the reply does not parse as DHCP: %v", err)
	}
	return decoded{dstMAC: net.HardwareAddr(f[0:6]), srcMAC: net.HardwareAddr(f[6:12]), srcIP: net.IP(ip[12:16]), dstIP: net.IP(ip[16:20]),
		sport: binary.BigEndian.Uint16(udp[0:]), dport: binary.BigEndian.Uint16(udp[2:]), dhcp: d}
}

// checkProxyReply checks what every ProxyDHCP answer must say.
func checkProxyReply(t *testing.T, r decoded, xid dhcpv4.TransactionID, typ dhcpv4.MessageType) {
	t.Helper()
	d := r.dhcp
	if d.OpCode != dhcpv4.OpcodeBootReply || d.TransactionID != xid || d.MessageType() != typ {
		t.Errorf("op %v xid %v type %v; want BootReply %v %v", d.OpCode, d.TransactionID, d.MessageType(), xid, typ)
	}
	if !d.YourIPAddr.IsUnspecified() {
		t.Errorf("a ProxyDHCP reply offers no address; yiaddr %v", d.YourIPAddr)
	}
	if !d.ServerIdentifier().Equal(net.IPv4(10, 0, 2, 2)) || !d.ServerIPAddr.Equal(net.IPv4(10, 0, 2, 2)) {
		t.Errorf("server id %v, siaddr %v; want 10.0.2.2", d.ServerIdentifier(), d.ServerIPAddr)
	}
	if d.ClassIdentifier() != "PXEClient" {
		t.Errorf("vendor class %q", d.ClassIdentifier())
	}
	if d.BootFileName != "http://10.0.2.2:8089/boot.ipxe" || d.BootFileNameOption() != d.BootFileName {
		t.Errorf("boot file %q, option 67 %q", d.BootFileName, d.BootFileNameOption())
	}
	if v := d.GetOneOption(dhcpv4.OptionVendorSpecificInformation); !bytes.Equal(v, []byte{6, 1, 8, 255}) {
		t.Errorf("PXE vendor options %x; want discovery control 8 (boot the file, no menu)", v)
	}
	if !bytes.Equal(d.ClientHWAddr, clientMAC) {
		t.Errorf("chaddr %v", d.ClientHWAddr)
	}
	if !bytes.Equal(r.srcMAC, net.HardwareAddr{0x52, 0x55, 10, 0, 2, 2}) || !r.srcIP.Equal(net.IPv4(10, 0, 2, 2)) {
		t.Errorf("from %v %v; want qemu's host 52:55:0a:00:02:02 10.0.2.2", r.srcMAC, r.srcIP)
	}
}

func TestProxyDHCPOffersToIPXE(t *testing.T) {
	p := testProxy(t)
	out := p.HandleFrame(ipxeDiscover)
	if out == nil {
		t.Fatal("no answer to iPXE's DHCPDISCOVER")
	}
	r := decode(t, out)
	checkProxyReply(t, r, dhcpv4.TransactionID{0x1e, 0xac, 0xf9, 0x4a}, dhcpv4.MessageTypeOffer)
	if !bytes.Equal(r.dstMAC, broadcastMAC) || !r.dstIP.Equal(net.IPv4bcast) || r.sport != 67 || r.dport != 68 {
		t.Errorf("offer sent %v %v %d->%d; want a broadcast from port 67 to 68", r.dstMAC, r.dstIP, r.sport, r.dport)
	}
	if u := r.dhcp.GetOneOption(dhcpv4.OptionClientMachineIdentifier); len(u) != 17 {
		t.Errorf("the client's UUID (option 97) is not echoed: %x", u)
	}
	if offers, acks := p.Answered(); offers != 1 || acks != 0 {
		t.Errorf("answered %d offers, %d acks", offers, acks)
	}
}

func TestProxyDHCPAcksOnPort4011(t *testing.T) {
	p := testProxy(t)
	req, err := dhcpv4.New(dhcpv4.WithHwAddr(clientMAC), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
		dhcpv4.WithClientIP(net.IPv4(10, 0, 2, 15)), dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00000:UNDI:002001")),
		dhcpv4.WithOption(dhcpv4.OptUserClass("iPXE")))
	if err != nil {
		t.Fatal(err)
	}
	out := p.HandleFrame(udpFrame(clientMAC, net.IPv4(10, 0, 2, 15), net.IPv4(10, 0, 2, 2), 68, 4011, req.ToBytes()))
	if out == nil {
		t.Fatal("no answer to a ProxyDHCPREQUEST")
	}
	r := decode(t, out)
	checkProxyReply(t, r, req.TransactionID, dhcpv4.MessageTypeAck)
	if !bytes.Equal(r.dstMAC, clientMAC) || !r.dstIP.Equal(net.IPv4(10, 0, 2, 15)) || r.sport != 4011 || r.dport != 68 {
		t.Errorf("ack sent to %v %v %d->%d; want the client, from port 4011 to 68", r.dstMAC, r.dstIP, r.sport, r.dport)
	}
	if offers, acks := p.Answered(); offers != 0 || acks != 1 {
		t.Errorf("answered %d offers, %d acks", offers, acks)
	}
}

// Everything else on the wire is left alone: other DHCP clients (the appliance's own
// netcfg), PXE ROMs that are not iPXE, the DHCP server's replies, requests to other
// servers, and frames that are not DHCP at all.
func TestProxyDHCPIgnores(t *testing.T) {
	p := testProxy(t)
	zero, bcast, us, other := net.IPv4zero, net.IPv4bcast, net.IPv4(10, 0, 2, 2), net.IPv4(10, 0, 2, 3)
	client := net.IPv4(10, 0, 2, 15)
	msg := func(typ dhcpv4.MessageType, mods ...dhcpv4.Modifier) []byte {
		d, err := dhcpv4.New(append([]dhcpv4.Modifier{dhcpv4.WithHwAddr(clientMAC), dhcpv4.WithMessageType(typ)}, mods...)...)
		if err != nil {
			t.Fatal(err)
		}
		return d.ToBytes()
	}
	pxe := dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00000:UNDI:002001"))
	ipxe := dhcpv4.WithOption(dhcpv4.OptUserClass("iPXE"))
	reply := func() []byte { // qemu's DHCPOFFER
		d, _ := dhcpv4.New(dhcpv4.WithReply(&dhcpv4.DHCPv4{OpCode: dhcpv4.OpcodeBootRequest, HWType: 1}), dhcpv4.WithHwAddr(clientMAC),
			dhcpv4.WithMessageType(dhcpv4.MessageTypeOffer), pxe, ipxe)
		return d.ToBytes()
	}()
	arp := append(append(append([]byte{}, broadcastMAC...), clientMAC...), 0x08, 0x06)
	arp = append(arp, make([]byte, 28)...)
	fragment := udpFrame(clientMAC, zero, bcast, 68, 67, msg(dhcpv4.MessageTypeDiscover, pxe, ipxe))
	fragment[14+6] = 0x20 // more fragments
	for name, f := range map[string][]byte{
		"a DHCPDISCOVER without PXEClient": udpFrame(clientMAC, zero, bcast, 68, 67, msg(dhcpv4.MessageTypeDiscover, ipxe)),
		"a PXE ROM that is not iPXE":       udpFrame(clientMAC, zero, bcast, 68, 67, msg(dhcpv4.MessageTypeDiscover, pxe)),
		"iPXE's DHCPREQUEST to the server": udpFrame(clientMAC, zero, bcast, 68, 67, msg(dhcpv4.MessageTypeRequest, pxe, ipxe)),
		"a DHCPREQUEST to another 4011":    udpFrame(clientMAC, client, other, 68, 4011, msg(dhcpv4.MessageTypeRequest, pxe, ipxe)),
		"a DHCPDISCOVER to port 4011":      udpFrame(clientMAC, client, us, 68, 4011, msg(dhcpv4.MessageTypeDiscover, pxe, ipxe)),
		"the DHCP server's offer":          udpFrame(clientMAC, us, bcast, 67, 68, reply),
		"a fragment":                       fragment,
		"an ARP request":                   arp,
		"an empty frame":                   {},
	} {
		if out := p.HandleFrame(f); out != nil {
			t.Errorf("%s was answered", name)
		}
	}
	if offers, acks := p.Answered(); offers != 0 || acks != 0 {
		t.Errorf("answered %d offers, %d acks", offers, acks)
	}
}

// No frame, however cut or corrupted, makes it panic; a cut one is not answered.
func TestProxyDHCPMalformed(t *testing.T) {
	p := testProxy(t)
	for n := 0; n < len(ipxeDiscover); n++ {
		if out := p.HandleFrame(ipxeDiscover[:n]); out != nil {
			t.Fatalf("a DHCPDISCOVER cut to %d bytes was answered", n)
		}
	}
	rng := rand.New(rand.NewSource(1))
	for i := 0; i < 20000; i++ {
		f := append([]byte(nil), ipxeDiscover...)
		for j := 0; j < 1+rng.Intn(8); j++ {
			f[rng.Intn(len(f))] = byte(rng.Intn(256))
		}
		p.HandleFrame(f[:rng.Intn(len(f)+1)])
	}
}

func TestNewProxyDHCPChecks(t *testing.T) {
	for _, tc := range []struct {
		url string
		ip  net.IP
		mac net.HardwareAddr
	}{
		{"", net.IPv4(10, 0, 2, 2), nil},
		{"http://x/" + strings.Repeat("a", 300), net.IPv4(10, 0, 2, 2), nil},
		{"http://10.0.2.2/boot.ipxe", nil, nil},
		{"http://10.0.2.2/boot.ipxe", net.ParseIP("fe80::1"), nil},
		{"http://10.0.2.2/boot.ipxe", net.IPv4zero, nil},
		{"http://10.0.2.2/boot.ipxe", net.IPv4(10, 0, 2, 2), net.HardwareAddr{1, 2, 3}},
	} {
		if _, err := NewProxyDHCP(tc.url, tc.ip, tc.mac); err == nil {
			t.Errorf("NewProxyDHCP(%q, %v, %v) worked", tc.url, tc.ip, tc.mac)
		}
	}
	// A boot file too long for the BOOTP file field goes in option 67 only.
	long := "http://10.0.2.2:8089/" + strings.Repeat("d/", 60) + "boot.ipxe"
	p, err := NewProxyDHCP(long, net.IPv4(10, 0, 2, 2), nil)
	if err != nil {
		t.Fatal(err)
	}
	d := decode(t, p.HandleFrame(ipxeDiscover)).dhcp
	if d.BootFileName != "" || d.BootFileNameOption() != long {
		t.Errorf("file %q, option 67 %q", d.BootFileName, d.BootFileNameOption())
	}
}

// fakeQEMU plays qemu's part for QEMUNet: filter-dump writing the guest's frames to the
// pcap file, filter-redirector connected to the socket.
type fakeQEMU struct {
	t    *testing.T
	pcap *os.File
	conn net.Conn
}

// startFakeQEMU connects as qemu does at its start, waits for QEMUNet to count its
// connection (the conns-th), then starts the capture.
func startFakeQEMU(t *testing.T, q *QEMUNet, dir string, conns int) *fakeQEMU {
	t.Helper()
	c, err := net.Dial("unix", filepath.Join(dir, QEMUSocketFile))
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		if n, _ := q.Stats(); n == conns {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("QEMUNet did not accept connection %d", conns)
		}
	}
	// qemu's filter-dump: O_TRUNC, then the pcap header (little-endian on x86).
	f, err := os.OpenFile(filepath.Join(dir, QEMUPcapFile), os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	hdr := make([]byte, 24)
	binary.LittleEndian.PutUint32(hdr[0:], 0xa1b2c3d4)
	binary.LittleEndian.PutUint16(hdr[4:], 2)
	binary.LittleEndian.PutUint16(hdr[6:], 4)
	binary.LittleEndian.PutUint32(hdr[16:], qemuSnapLen)
	binary.LittleEndian.PutUint32(hdr[20:], 1)
	f.Write(hdr)
	fq := &fakeQEMU{t: t, pcap: f, conn: c}
	t.Cleanup(func() { f.Close(); c.Close() })
	return fq
}

// send is the guest sending a frame: filter-dump records at most qemuSnapLen bytes.
func (q *fakeQEMU) send(frame []byte) {
	capl := min(len(frame), qemuSnapLen)
	rec := make([]byte, 16, 16+capl)
	binary.LittleEndian.PutUint32(rec[8:], uint32(capl))
	binary.LittleEndian.PutUint32(rec[12:], uint32(len(frame)))
	if _, err := q.pcap.Write(append(rec, frame[:capl]...)); err != nil {
		q.t.Fatal(err)
	}
}

// receive is a frame filter-redirector reads from the socket.
func (q *fakeQEMU) receive(timeout time.Duration) []byte {
	q.t.Helper()
	q.conn.SetReadDeadline(time.Now().Add(timeout))
	var n [4]byte
	if _, err := io.ReadFull(q.conn, n[:]); err != nil {
		q.t.Fatalf("no frame from QEMUNet: %v", err)
	}
	f := make([]byte, binary.BigEndian.Uint32(n[:]))
	if _, err := io.ReadFull(q.conn, f); err != nil {
		q.t.Fatal(err)
	}
	return f
}

func withXID(frame []byte, xid uint32) []byte {
	f := append([]byte(nil), frame...)
	binary.BigEndian.PutUint32(f[42+4:], xid)
	return f
}

func TestQEMUNet(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pxe-net")
	p := testProxy(t)
	q, err := ListenQEMU(dir, p)
	if err != nil {
		t.Fatal(err)
	}
	q.PollInterval = 5 * time.Millisecond
	args := strings.Join(q.Args("mgmt"), " ")
	for _, want := range []string{
		"-object filter-dump,id=mgmt-pxe-dump,netdev=mgmt,queue=rx,maxlen=1024,file=" + filepath.Join(dir, QEMUPcapFile),
		"-chardev socket,id=mgmt-pxe-inject,path=" + filepath.Join(dir, QEMUSocketFile),
		"-object filter-redirector,id=mgmt-pxe-redirect,netdev=mgmt,queue=tx,indev=mgmt-pxe-inject",
	} {
		if !strings.Contains(args, want) {
			t.Errorf("qemu options %q lack %q", args, want)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- q.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()

	// A guest's traffic: an ARP request, a big frame, iPXE's DHCPDISCOVER.
	qemu := startFakeQEMU(t, q, dir, 1)
	arp := append(append(append([]byte{}, broadcastMAC...), clientMAC...), 0x08, 0x06)
	qemu.send(append(arp, make([]byte, 28)...))
	qemu.send(make([]byte, 1514))
	qemu.send(ipxeDiscover)
	r := decode(t, qemu.receive(5*time.Second))
	checkProxyReply(t, r, dhcpv4.TransactionID{0x1e, 0xac, 0xf9, 0x4a}, dhcpv4.MessageTypeOffer)

	// Enough frames for QEMUNet to release what it has read.
	for i := 0; i < 1500; i++ {
		qemu.send(make([]byte, 1514))
	}
	qemu.send(withXID(ipxeDiscover, 0x01020304))
	checkProxyReply(t, decode(t, qemu.receive(5*time.Second)), dhcpv4.TransactionID{1, 2, 3, 4}, dhcpv4.MessageTypeOffer)
	if punchHoleWorks(t) {
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			var st syscall.Stat_t
			if err := syscall.Stat(filepath.Join(dir, QEMUPcapFile), &st); err != nil {
				t.Fatal(err)
			}
			if st.Blocks*512 <= st.Size/2 {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("guest.pcap: %d bytes on disk of %d: what was read was not released", st.Blocks*512, st.Size)
				break
			}
		}
	}

	// qemu ends and a new one starts: it truncates the capture and connects again.
	qemu.conn.Close()
	qemu.pcap.Close()
	time.Sleep(20 * time.Millisecond)
	qemu = startFakeQEMU(t, q, dir, 2)
	qemu.send(withXID(ipxeDiscover, 0x0a0b0c0d))
	checkProxyReply(t, decode(t, qemu.receive(5*time.Second)), dhcpv4.TransactionID{10, 11, 12, 13}, dhcpv4.MessageTypeOffer)
	deadline := time.Now().Add(5 * time.Second)
	for {
		conns, frames := q.Stats()
		if conns == 2 && frames >= 1504 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stats: %d connections, %d frames", conns, frames)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if offers, _ := p.Answered(); offers != 3 {
		t.Errorf("%d offers; want 3", offers)
	}
}

// punchHoleWorks says whether the temporary directory's file system releases a hole.
func punchHoleWorks(t *testing.T) bool {
	f, err := os.CreateTemp(t.TempDir(), "hole")
	if err != nil {
		return false
	}
	defer f.Close()
	f.Write(make([]byte, 2<<20))
	f.Sync()
	return unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 0, 1<<20) == nil
}

func TestListenQEMUChecks(t *testing.T) {
	if _, err := ListenQEMU(t.TempDir(), nil); err == nil {
		t.Error("ListenQEMU without a ProxyDHCP worked")
	}
	long := filepath.Join(t.TempDir(), strings.Repeat("d", 100))
	if _, err := ListenQEMU(long, testProxy(t)); err == nil || !strings.Contains(err.Error(), "too long") {
		t.Errorf("a socket path over 107 bytes: %v", err)
	}
}

// FuzzHandleFrame: ProxyDHCP reads frames any machine on the network sends. Whatever
// they hold, it must not panic, and an answer is always a well-formed DHCP reply to an
// iPXE client (go test -fuzz FuzzHandleFrame ./imagebuild/serve).
func FuzzHandleFrame(f *testing.F) {
	f.Add(ipxeDiscover)
	f.Add(ipxeDiscover[:len(ipxeDiscover)/2])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, frame []byte) {
		p := testProxy(t)
		out := p.HandleFrame(frame)
		if out == nil {
			return
		}
		r := decode(t, out)
		if r.dhcp.OpCode != dhcpv4.OpcodeBootReply || !r.dhcp.YourIPAddr.IsUnspecified() {
			t.Fatalf("answer is not a ProxyDHCP reply: %v", r.dhcp)
		}
	})
}
