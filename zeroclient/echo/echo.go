// Package echo is the health-check responder on the streaming ports (the guide: clients
// "perform health checks over 4172 (PCoIP) and 4195 (WSP)" over TCP and UDP): UDP
// datagrams come back unchanged to their sender, TCP connections are echoed. Replies are
// never larger than requests (no amplification), datagrams over 1200 bytes are dropped
// (the guide's minimum path MTU), and a global rate limit bounds the work. Classify turns a
// measured round trip into the guide's verdict.
package echo

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"
)

// MaxDatagram is the largest datagram echoed: the guide's VPN MTU floor, 1200 bytes.
const MaxDatagram = 1200

// UDP echoes datagrams on pc until it is closed. At most rate replies per second are sent.
func UDP(pc net.PacketConn, rate int, log *slog.Logger) error {
	buf := make([]byte, MaxDatagram+1)
	var mu sync.Mutex
	tokens, last := float64(rate), time.Now()
	for {
		n, addr, err := pc.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			log.Warn("echo: udp read", "err", err)
			continue
		}
		if n > MaxDatagram || n == 0 {
			continue
		}
		mu.Lock()
		now := time.Now()
		tokens += now.Sub(last).Seconds() * float64(rate)
		if tokens > float64(rate) {
			tokens = float64(rate)
		}
		last = now
		ok := tokens >= 1
		if ok {
			tokens--
		}
		mu.Unlock()
		if ok {
			pc.WriteTo(buf[:n], addr)
		}
	}
}

// TCP echoes each connection on l (64 KiB or 10 s each) until l is closed.
func TCP(l net.Listener) error {
	for {
		c, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			time.Sleep(50 * time.Millisecond)
			continue
		}
		go func() {
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			io.Copy(c, io.LimitReader(c, 64<<10))
		}()
	}
}

// Protocol is a streaming protocol with its own RTT guidance.
type Protocol string

const (
	PCoIP Protocol = "PCoIP"
	WSP   Protocol = "WSP"
)

// Verdict is the guide's reading of a round trip.
type Verdict string

const (
	Good     Verdict = "good"
	Degraded Verdict = "degraded"
	Poor     Verdict = "poor"
)

// Classify applies the guide's RTT bands (catalog §27): PCoIP good below 100 ms, degraded
// to 250 ms; WSP good below 250 ms, degraded to 400 ms; poor beyond.
func Classify(p Protocol, rtt time.Duration) Verdict {
	good, degraded := 100*time.Millisecond, 250*time.Millisecond
	if p == WSP {
		good, degraded = 250*time.Millisecond, 400*time.Millisecond
	}
	switch {
	case rtt < good:
		return Good
	case rtt <= degraded:
		return Degraded
	}
	return Poor
}
