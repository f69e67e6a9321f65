package sntp

import (
	"context"
	"net"
	"testing"
	"time"
)

func TestQueryAgainstServe(t *testing.T) {
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go Serve(c)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	r, err := Query(ctx, c.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	// Same clock on both ends: the offset is tiny.
	if r.Offset > 50*time.Millisecond || r.Offset < -50*time.Millisecond || r.Stratum != 2 || r.RTT < 0 {
		t.Errorf("result %+v", r)
	}
	if _, err := Sync(ctx, nil); err == nil {
		t.Error("Sync without servers succeeded")
	}
}

func TestQueryNoServer(t *testing.T) {
	c, _ := net.ListenPacket("udp", "127.0.0.1:0")
	addr := c.LocalAddr().String()
	c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if _, err := Query(ctx, addr); err == nil {
		t.Error("no server, no error")
	}
}

func TestTimestamps(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 678900000, time.UTC)
	if got := fromNTP(toNTP(now)); got.Sub(now).Abs() > time.Microsecond {
		t.Errorf("round trip %v -> %v", now, got)
	}
}
