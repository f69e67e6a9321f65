package gateway

import (
	"context"
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// LatencyInterval is how often a live session's round trip is sampled for the
// InSessionLatency metric.
const LatencyInterval = 5 * time.Second

// The round trip between client and WorkSpace is the client's TCP connection's: the
// display's end is a local socket. The kernel's smoothed RTT (TCP_INFO) of that connection
// measures it from the session's own traffic and acknowledgements, with nothing sent for
// it, so it works for every client (VNC viewers, zero clients, browsers) alike.

// tcpRTT returns the smoothed round-trip time of the TCP connection under c, unwrapping
// TLS and the gateway's own wrappers; false when c runs over no TCP connection.
func tcpRTT(c net.Conn) (time.Duration, bool) {
	for c != nil {
		switch v := c.(type) {
		case *net.TCPConn:
			raw, err := v.SyscallConn()
			if err != nil {
				return 0, false
			}
			var info *unix.TCPInfo
			var serr error
			if err := raw.Control(func(fd uintptr) { info, serr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) }); err != nil || serr != nil {
				return 0, false
			}
			return time.Duration(info.Rtt) * time.Microsecond, true
		case interface{ NetConn() net.Conn }:
			c = v.NetConn()
		default:
			return 0, false
		}
	}
	return 0, false
}

// NetConn is the connection the coalescer writes to.
func (c *coalescer) NetConn() net.Conn { return c.Conn }

type transportKey struct{}

// WithTransport records in ctx the connection an HTTP request arrived on (for an
// http.Server's ConnContext), so that a Web Access session relayed over a WebSocket can
// measure its round trip (ServeWeb).
func WithTransport(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, transportKey{}, c)
}

// Transport returns the connection WithTransport recorded, or nil.
func Transport(ctx context.Context) net.Conn {
	c, _ := ctx.Value(transportKey{}).(net.Conn)
	return c
}

// sampleLatency records r's round trip every interval until stop closes.
func (r *relay) sampleLatency(g *Gateway, labels []string, stop <-chan struct{}) {
	conn := r.transport
	if conn == nil {
		conn = r.raw
	}
	t := time.NewTicker(g.c.LatencyInterval)
	defer t.Stop()
	for {
		if rtt, ok := tcpRTT(conn); ok {
			g.c.Metrics.InSessionLatency.WithLabelValues(labels...).Set(rtt.Seconds())
		}
		select {
		case <-stop:
			return
		case <-t.C:
		}
	}
}
