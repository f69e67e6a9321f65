// Package echo is the health-check responder on the streaming ports (the guide: clients
// "perform health checks over 4172 (PCoIP) and 4195 (WSP)" over TCP and UDP): UDP
// datagrams come back unchanged to their sender, TCP connections are echoed. Replies are
// never larger than requests (no amplification), datagrams over 1200 bytes are dropped
// (the guide's minimum path MTU), and the work is bounded by a global rate and a rate per
// source address. A datagram from port 4172 or 4195 (another host's echo: a spoofed probe
// would bounce between the two for ever) or from a port below 1024 (a service such as
// echo, chargen, DNS or NTP, which would answer back) is never answered. Classify turns a
// measured round trip into the guide's verdict.
package echo

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"
)

// MaxDatagram is the largest datagram echoed: the guide's VPN MTU floor, 1200 bytes.
const MaxDatagram = 1200

// Limits bound the UDP echo's replies: Total per second from all sources, PerSource per
// second from one address, an IPv6 one counting as its /64 (each with a burst of one
// second's worth).
type Limits struct {
	Total, PerSource int
}

// DefaultLimits: plenty for clients probing a few times a second, little for a flood.
var DefaultLimits = Limits{Total: 1000, PerSource: 20}

// maxSources bounds the per-source buckets kept; beyond it, idle ones are dropped first,
// and a source that finds no room is answered only within the global rate.
const maxSources = 8192

// Answers reports whether a datagram from src may be answered at all: never from another
// echo's ports (4172, 4195) or from a well-known service port (below 1024).
func Answers(src netip.AddrPort) bool {
	p := src.Port()
	return p >= 1024 && p != 4172 && p != 4195
}

type bucket struct {
	tokens float64
	last   time.Time
}

// limiter is a token bucket per source address plus a global one.
type limiter struct {
	lim     Limits
	mu      sync.Mutex
	global  bucket
	sources map[netip.Addr]*bucket
}

func newLimiter(l Limits, now time.Time) *limiter {
	return &limiter{lim: l, global: bucket{float64(l.Total), now}, sources: map[netip.Addr]*bucket{}}
}

func take(b *bucket, rate int, now time.Time) bool {
	b.tokens += now.Sub(b.last).Seconds() * float64(rate)
	if b.tokens > float64(rate) {
		b.tokens = float64(rate)
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

func (l *limiter) allow(src netip.Addr, now time.Time) bool {
	if src.Is6() {
		src = netip.PrefixFrom(src, 64).Masked().Addr() // one subscriber's many addresses
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.sources[src]
	if b == nil {
		if len(l.sources) >= maxSources {
			for a, x := range l.sources {
				if now.Sub(x.last) > time.Second { // full again: forgetting it changes nothing
					delete(l.sources, a)
				}
			}
		}
		if len(l.sources) >= maxSources {
			return false
		}
		b = &bucket{float64(l.lim.PerSource), now}
		l.sources[src] = b
	}
	if !take(b, l.lim.PerSource, now) {
		return false
	}
	return take(&l.global, l.lim.Total, now)
}

// UDP echoes datagrams on pc until it is closed, within lim.
func UDP(pc net.PacketConn, lim Limits, log *slog.Logger) error {
	buf := make([]byte, MaxDatagram+1)
	l := newLimiter(lim, time.Now())
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
		ua, ok := addr.(*net.UDPAddr)
		if !ok {
			continue
		}
		src := ua.AddrPort()
		src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
		if !Answers(src) || !l.allow(src.Addr(), time.Now()) {
			continue
		}
		pc.WriteTo(buf[:n], addr)
	}
}

// maxTCP bounds the TCP echo connections served at once.
const maxTCP = 256

// TCP echoes each connection on l (64 KiB or 10 s each, at most maxTCP at once) until l is
// closed.
func TCP(l net.Listener) error {
	slots := make(chan struct{}, maxTCP)
	for {
		c, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			time.Sleep(50 * time.Millisecond)
			continue
		}
		select {
		case slots <- struct{}{}:
		default:
			c.Close() // busy: a health probe can try again
			continue
		}
		go func() {
			defer func() { <-slots }()
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
