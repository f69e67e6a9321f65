package server

import (
	"crypto/tls"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"
)

// connLimiter bounds the broker's connections: max in all, perAddr from one client
// address. At a bound, the longest-idle kept-alive connection (of that address, for the
// per-address bound) is closed to make room; with none idle, the new connection is closed
// at once. Kept-alive connections so cannot hold the broker full, and one address (one
// NAT) cannot take every slot.
type connLimiter struct {
	max, perAddr int
	log          *slog.Logger

	mu     sync.Mutex
	total  int
	byAddr map[netip.Addr]int
	idle   map[*countedConn]time.Time
	warned time.Time
}

func newConnLimiter(max, perAddr int, log *slog.Logger) *connLimiter {
	return &connLimiter{max: max, perAddr: perAddr, log: log, byAddr: map[netip.Addr]int{}, idle: map[*countedConn]time.Time{}}
}

// countedConn is an admitted connection; closing it gives its slot back.
type countedConn struct {
	net.Conn
	c    *connLimiter
	addr netip.Addr
	once sync.Once
}

// NetConn is the admitted connection itself (the gateway reads its TCP round trip).
func (cc *countedConn) NetConn() net.Conn { return cc.Conn }

func (cc *countedConn) Close() error {
	err := cc.Conn.Close()
	cc.once.Do(func() { cc.c.release(cc) })
	return err
}

type limitedListener struct {
	net.Listener
	c *connLimiter
}

func (c *connLimiter) listener(l net.Listener) net.Listener { return &limitedListener{l, c} }

func (l *limitedListener) Accept() (net.Conn, error) {
	for {
		conn, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		addr := netip.Addr{}
		if ap, err := netip.ParseAddrPort(conn.RemoteAddr().String()); err == nil {
			addr = ap.Addr().Unmap()
		}
		cc := &countedConn{Conn: conn, c: l.c, addr: addr}
		if l.c.admit(cc) {
			return cc, nil
		}
		conn.Close()
	}
}

// admit takes a slot for cc, closing an idle connection to make room if it must.
func (c *connLimiter) admit(cc *countedConn) bool {
	for {
		c.mu.Lock()
		var victim *countedConn
		switch {
		case c.byAddr[cc.addr] >= c.perAddr:
			victim = c.oldestIdleLocked(func(x *countedConn) bool { return x.addr == cc.addr })
		case c.total >= c.max:
			victim = c.oldestIdleLocked(func(*countedConn) bool { return true })
		default:
			c.total++
			c.byAddr[cc.addr]++
			c.mu.Unlock()
			return true
		}
		if victim == nil {
			if now := time.Now(); now.Sub(c.warned) > 10*time.Second {
				c.warned = now
				c.log.Warn("broker: connection limit reached; refusing connections", "client", cc.addr.String(),
					"connections", c.total, "from_address", c.byAddr[cc.addr], "max", c.max, "max_per_address", c.perAddr)
			}
			c.mu.Unlock()
			return false
		}
		delete(c.idle, victim)
		c.mu.Unlock()
		victim.Close() // the TCP connection itself: immediate, and it gives the slot back
	}
}

func (c *connLimiter) oldestIdleLocked(match func(*countedConn) bool) *countedConn {
	var oldest *countedConn
	var at time.Time
	for x, t := range c.idle {
		if match(x) && (oldest == nil || t.Before(at)) {
			oldest, at = x, t
		}
	}
	return oldest
}

func (c *connLimiter) release(cc *countedConn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.idle, cc)
	c.total--
	if c.byAddr[cc.addr]--; c.byAddr[cc.addr] <= 0 {
		delete(c.byAddr, cc.addr)
	}
}

// connState is the http.Server's ConnState hook: it tracks which connections are idle
// between requests (those may be closed to make room).
func (c *connLimiter) connState(conn net.Conn, st http.ConnState) {
	if tc, ok := conn.(*tls.Conn); ok {
		conn = tc.NetConn()
	}
	cc, ok := conn.(*countedConn)
	if !ok {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if st == http.StateIdle {
		c.idle[cc] = time.Now()
	} else {
		delete(c.idle, cc)
	}
}

// count is the number of connections held (tests).
func (c *connLimiter) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.total
}
