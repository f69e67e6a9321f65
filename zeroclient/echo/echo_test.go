package echo

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"
)

func TestClassifyIsTheGuides(t *testing.T) {
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	for _, tc := range []struct {
		p    Protocol
		rtt  time.Duration
		want Verdict
	}{{PCoIP, ms(99), Good}, {PCoIP, ms(100), Degraded}, {PCoIP, ms(250), Degraded}, {PCoIP, ms(251), Poor},
		{WSP, ms(249), Good}, {WSP, ms(250), Degraded}, {WSP, ms(400), Degraded}, {WSP, ms(401), Poor}} {
		if got := Classify(tc.p, tc.rtt); got != tc.want {
			t.Errorf("%s %s: %s, want %s", tc.p, tc.rtt, got, tc.want)
		}
	}
}

func TestEcho(t *testing.T) {
	pc, _ := net.ListenPacket("udp", "127.0.0.1:0")
	defer pc.Close()
	go UDP(pc, Limits{Total: 100, PerSource: 100}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	c, _ := net.Dial("udp", pc.LocalAddr().String())
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	c.Write([]byte("probe"))
	buf := make([]byte, 2000)
	if n, err := c.Read(buf); err != nil || string(buf[:n]) != "probe" {
		t.Fatalf("udp echo: %q %v", buf[:n], err)
	}
	c.Write(bytes.Repeat([]byte("x"), MaxDatagram+1)) // over the guide's 1200-byte MTU: dropped
	c.SetDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := c.Read(buf); err == nil {
		t.Error("a datagram over 1200 bytes was echoed")
	}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	defer l.Close()
	go TCP(l)
	tc, _ := net.Dial("tcp", l.Addr().String())
	defer tc.Close()
	tc.SetDeadline(time.Now().Add(2 * time.Second))
	tc.Write([]byte("ping"))
	got := make([]byte, 4)
	if _, err := io.ReadFull(tc, got); err != nil || string(got) != "ping" {
		t.Errorf("tcp echo: %q %v", got, err)
	}
}

// TestUDPRefusesLoopsAndFloods: a datagram from another echo's port (4172, 4195) or a
// service port (below 1024) is never answered, so a spoofed probe cannot bounce between
// two hosts; one source gets its per-source rate and no more, while another source is
// still answered.
func TestUDPRefusesLoopsAndFloods(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	go UDP(pc, Limits{Total: 1000, PerSource: 10}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	echoAddr := pc.LocalAddr().(*net.UDPAddr)
	// Sources on an address of our own in 127/8, so the fixed ports are free.
	from := func(port int) *net.UDPConn {
		t.Helper()
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 47, 23, 11), Port: port})
		if err != nil {
			t.Fatalf("bind source port %d: %v", port, err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	replies := func(c *net.UDPConn, n int) int {
		for i := 0; i < n; i++ {
			c.WriteTo([]byte("probe"), echoAddr)
		}
		got := 0
		buf := make([]byte, 64)
		for {
			c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			if _, _, err := c.ReadFrom(buf); err != nil {
				return got
			}
			got++
		}
	}
	ports := []int{4172, 4195}
	if os.Geteuid() == 0 { // binding a port below 1024 needs root
		ports = append(ports, 123, 7)
	}
	for _, port := range ports {
		if n := replies(from(port), 3); n != 0 {
			t.Errorf("source port %d: %d replies, want none", port, n)
		}
	}
	flood := from(0)
	if n := replies(flood, 100); n < 5 || n > 15 {
		t.Errorf("100 probes from one source in a burst: %d replies, want about 10 (its per-source rate)", n)
	}
	other, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 47, 23, 12)})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if n := replies(other, 3); n != 3 {
		t.Errorf("another source while the first is limited: %d of 3 replies", n)
	}
}

// TestPerSourceIPv6: the addresses of one IPv6 /64 share one source's rate.
func TestPerSourceIPv6(t *testing.T) {
	now := time.Date(2026, 1, 1, 9, 0, 0, 0, time.UTC)
	l := newLimiter(Limits{Total: 1000, PerSource: 10}, now)
	got := 0
	for i := 0; i < 100; i++ {
		if l.allow(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 1, 15: byte(i)}), now) {
			got++
		}
	}
	if got != 10 {
		t.Errorf("100 addresses of one /64: %d answered, want 10", got)
	}
	if !l.allow(netip.MustParseAddr("2001:db8:0:2::1"), now) {
		t.Error("the next /64 is limited too")
	}
}
