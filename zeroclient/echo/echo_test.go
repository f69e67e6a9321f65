package echo

import (
	"bytes"
	"io"
	"log/slog"
	"net"
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
	go UDP(pc, 100, slog.New(slog.NewTextHandler(io.Discard, nil)))
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
