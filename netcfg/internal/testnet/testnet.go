// Package testnet builds throw-away network namespaces for netcfg's tests and
// sends real traffic through them. Nothing here touches the host's own
// namespace: links are created directly inside the test namespaces.
package testnet

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"deskhost/internal/nsutil"
)

// RequireRoot skips (outside CI) or fails (CI=true) when the test cannot
// create namespaces, naming what is missing.
func RequireRoot(t testing.TB) {
	t.Helper()
	why := ""
	if os.Geteuid() != 0 {
		why = "needs root (network namespaces, nftables, bridges)"
	} else {
		for _, bin := range []string{"ip", "nft"} {
			if _, err := exec.LookPath(bin); err != nil {
				why = fmt.Sprintf("needs %s (Debian packages iproute2 and nftables; see scripts/packages/netcfg.txt)", bin)
			}
		}
	}
	if why == "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI=true and this test %s", why)
	}
	t.Skipf("skipping: this test %s (set CI=true to make this a failure)", why)
}

var seq atomic.Int64

// NS is a network namespace created for one test.
type NS struct {
	Name   string
	Handle netns.NsHandle
	t      testing.TB
}

// New creates a namespace named after the test process and role; it is
// deleted (with every link inside) when the test ends. Loopback is up.
func New(t testing.TB, role string) *NS {
	t.Helper()
	name := fmt.Sprintf("nc%d-%d-%s", os.Getpid()%100000, seq.Add(1), role)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	h, err := netns.GetFromName(name)
	if err != nil {
		exec.Command("ip", "netns", "del", name).Run()
		t.Fatalf("open netns %s: %v", name, err)
	}
	n := &NS{Name: name, Handle: h, t: t}
	t.Cleanup(func() {
		h.Close()
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	n.IP("link set lo up")
	return n
}

// IP runs `ip -n NS args...` and fails the test on error.
func (n *NS) IP(args string) string {
	n.t.Helper()
	return n.Run("ip", append([]string{"-n", n.Name}, strings.Fields(args)...)...)
}

// Run runs a command and fails the test on error.
func (n *NS) Run(name string, args ...string) string {
	n.t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		n.t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Exec runs a command inside the namespace (ip netns exec) and returns its
// output and error.
func (n *NS) Exec(stdin []byte, name string, args ...string) (string, error) {
	cmd := exec.Command("ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// Veth connects a.aName with b.bName (both created inside their namespaces).
func Veth(t testing.TB, a *NS, aName string, b *NS, bName string) {
	t.Helper()
	a.Run("ip", "-n", a.Name, "link", "add", aName, "type", "veth", "peer", "name", bName, "netns", b.Name)
}

// MAC returns the MAC address of a link in the namespace.
func (n *NS) MAC(link string) net.HardwareAddr {
	n.t.Helper()
	out := n.IP("-br link show dev " + link)
	f := strings.Fields(out)
	if len(f) < 3 {
		n.t.Fatalf("no MAC in %q", out)
	}
	mac, err := net.ParseMAC(f[2])
	if err != nil {
		n.t.Fatalf("parse MAC %q: %v", f[2], err)
	}
	return mac
}

// Listen opens a TCP listener inside the namespace that echoes every line it
// receives; it is closed when the test ends.
func (n *NS) EchoTCP(addr string) net.Listener {
	n.t.Helper()
	l, err := nsutil.Listen(n.Handle, "tcp4", addr)
	if err != nil {
		n.t.Fatalf("listen %s in %s: %v", addr, n.Name, err)
	}
	n.t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	return l
}

// EchoUDP opens a UDP echo socket inside the namespace.
func (n *NS) EchoUDP(addr string) net.PacketConn {
	n.t.Helper()
	pc, err := nsutil.ListenPacket(n.Handle, "udp4", addr)
	if err != nil {
		n.t.Fatalf("listen udp %s in %s: %v", addr, n.Name, err)
	}
	n.t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			k, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:k], from)
		}
	}()
	return pc
}

// Timeout is how long a probe waits before calling a port filtered.
const Timeout = 300 * time.Millisecond

// DialTCP connects from src (may be "") to dst inside the namespace.
func (n *NS) DialTCP(src, dst string, timeout time.Duration) (net.Conn, error) {
	d := &net.Dialer{Timeout: timeout}
	if src != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return nsutil.Dial(ctx, n.Handle, d, "tcp4", dst)
}

// TCPEcho reports whether a TCP round trip from src to dst succeeds.
func (n *NS) TCPEcho(src, dst string) error {
	c, err := n.DialTCP(src, dst, Timeout)
	if err != nil {
		return err
	}
	defer c.Close()
	return RoundTrip(c, Timeout)
}

// RoundTrip writes a line and expects it back.
func RoundTrip(c net.Conn, timeout time.Duration) error {
	c.SetDeadline(time.Now().Add(timeout))
	msg := []byte("ping\n")
	if _, err := c.Write(msg); err != nil {
		return err
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if !bytes.Equal(buf, msg) {
		return fmt.Errorf("echo mismatch: %q", buf)
	}
	return nil
}

// UDPEcho reports whether a UDP round trip from src to dst succeeds.
func (n *NS) UDPEcho(src, dst string) error {
	laddr := "0.0.0.0:0"
	if src != "" {
		laddr = src + ":0"
	}
	var pc net.PacketConn
	err := nsutil.Do(n.Handle, func() (err error) {
		pc, err = net.ListenPacket("udp4", laddr)
		return err
	})
	if err != nil {
		return err
	}
	defer pc.Close()
	ua, err := net.ResolveUDPAddr("udp4", dst)
	if err != nil {
		return err
	}
	pc.SetDeadline(time.Now().Add(Timeout))
	if _, err := pc.WriteTo([]byte("ping"), ua); err != nil {
		return err
	}
	buf := make([]byte, 16)
	k, _, err := pc.ReadFrom(buf)
	if err != nil {
		return err
	}
	if string(buf[:k]) != "ping" {
		return fmt.Errorf("udp echo mismatch %q", buf[:k])
	}
	return nil
}

// Probe is one expected outcome of a connection attempt.
type Probe struct {
	Name    string
	NS      *NS
	Proto   string // "tcp" or "udp"
	Src     string // source address, "" for any
	Dst     string // host:port
	Allowed bool
}

// Check runs probes in parallel (each blocked probe costs a timeout) and
// reports every one whose outcome differs from what was expected.
func Check(t testing.TB, probes []Probe) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make([]error, len(probes))
	for i, p := range probes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			if p.Proto == "udp" {
				err = p.NS.UDPEcho(p.Src, p.Dst)
			} else {
				err = p.NS.TCPEcho(p.Src, p.Dst)
			}
			switch {
			case p.Allowed && err != nil:
				errs[i] = fmt.Errorf("%s: %s %s -> %s should connect: %v", p.Name, p.Proto, p.Src, p.Dst, err)
			case !p.Allowed && err == nil:
				errs[i] = fmt.Errorf("%s: %s %s -> %s should be blocked but connected", p.Name, p.Proto, p.Src, p.Dst)
			case !p.Allowed && !isTimeout(err):
				errs[i] = fmt.Errorf("%s: %s %s -> %s should time out (dropped), got %v", p.Name, p.Proto, p.Src, p.Dst, err)
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// SendFrame writes one raw Ethernet frame (header included) to a link in the
// namespace, as a guest's kernel would put it on the wire: nothing in the
// namespace's own stack judges it.
func (n *NS) SendFrame(link string, frame []byte) error {
	return nsutil.Do(n.Handle, func() error {
		ifi, err := net.InterfaceByName(link)
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("packet socket: %w", err)
		}
		defer unix.Close(fd)
		sa := &unix.SockaddrLinklayer{Ifindex: ifi.Index, Halen: 6}
		copy(sa.Addr[:], frame[:6])
		if err := unix.Sendto(fd, frame, 0, sa); err != nil {
			return fmt.Errorf("send frame on %s: %w", link, err)
		}
		return nil
	})
}

// Recorder is a UDP socket that remembers the source of every datagram that
// arrives: the test asserts what reached it, not what a reply says.
type Recorder struct {
	mu   sync.Mutex
	from map[string]int // source address (no port) -> datagrams
	seen chan struct{}
}

// Record opens a recording UDP socket ("udp4" or "udp6") in the namespace.
func (n *NS) Record(network, addr string) *Recorder {
	n.t.Helper()
	pc, err := nsutil.ListenPacket(n.Handle, network, addr)
	if err != nil {
		n.t.Fatalf("listen %s %s in %s: %v", network, addr, n.Name, err)
	}
	n.t.Cleanup(func() { pc.Close() })
	r := &Recorder{from: map[string]int{}, seen: make(chan struct{}, 1)}
	go func() {
		buf := make([]byte, 2048)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			ip := from.(*net.UDPAddr).IP.String()
			r.mu.Lock()
			r.from[ip]++
			r.mu.Unlock()
			select {
			case r.seen <- struct{}{}:
			default:
			}
		}
	}()
	return r
}

// Got reports whether a datagram from src arrived within wait.
func (r *Recorder) Got(src string, wait time.Duration) bool {
	deadline := time.After(wait)
	for {
		r.mu.Lock()
		n := r.from[src]
		r.mu.Unlock()
		if n > 0 {
			return true
		}
		select {
		case <-r.seen:
		case <-deadline:
			return false
		}
	}
}

// Sources lists who sent something so far.
func (r *Recorder) Sources() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for s := range r.from {
		out = append(out, s)
	}
	return out
}

// SendUDP sends a few datagrams from src (an address of the namespace) to
// dst (host:port) and returns without waiting for anything.
func (n *NS) SendUDP(network, src, dst string) error {
	var pc net.PacketConn
	err := nsutil.Do(n.Handle, func() (err error) {
		pc, err = net.ListenPacket(network, net.JoinHostPort(src, "0"))
		return err
	})
	if err != nil {
		return err
	}
	defer pc.Close()
	ua, err := net.ResolveUDPAddr(network, dst)
	if err != nil {
		return err
	}
	for range 3 {
		if _, err := pc.WriteTo([]byte("probe"), ua); err != nil {
			return err
		}
	}
	return nil
}

// Reset forgets what arrived so far.
func (r *Recorder) Reset() {
	r.mu.Lock()
	clear(r.from)
	r.mu.Unlock()
}

// Capture watches every frame a link receives (a packet socket, so frames
// the namespace's stack would ignore are seen too) for one that matches.
type Capture struct {
	mu    sync.Mutex
	match func([]byte) bool
	hits  int
}

// Capture starts watching link; it stops when the test ends.
func (n *NS) Capture(link string, match func(frame []byte) bool) *Capture {
	n.t.Helper()
	var fd int
	err := nsutil.Do(n.Handle, func() error {
		ifi, err := net.InterfaceByName(link)
		if err != nil {
			return err
		}
		proto := int(htons(unix.ETH_P_ALL))
		if fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto); err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
			unix.Close(fd)
			return err
		}
		tv := unix.NsecToTimeval((50 * time.Millisecond).Nanoseconds())
		return unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	})
	if err != nil {
		n.t.Fatalf("capture on %s in %s: %v", link, n.Name, err)
	}
	c := &Capture{match: match}
	var stop atomic.Bool
	done := make(chan struct{})
	n.t.Cleanup(func() { stop.Store(true); <-done; unix.Close(fd) })
	go func() {
		defer close(done)
		buf := make([]byte, 65536)
		for !stop.Load() {
			k, _, err := unix.Recvfrom(fd, buf, 0)
			if err != nil || k <= 0 {
				continue
			}
			if match(buf[:k]) {
				c.mu.Lock()
				c.hits++
				c.mu.Unlock()
			}
		}
	}()
	return c
}

// Seen reports whether a matching frame arrived within wait.
func (c *Capture) Seen(wait time.Duration) bool {
	deadline := time.Now().Add(wait)
	for {
		c.mu.Lock()
		h := c.hits
		c.mu.Unlock()
		if h > 0 {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// htons is the protocol number in network byte order, as AF_PACKET wants it.
func htons(v uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return binary.NativeEndian.Uint16(b[:])
}
