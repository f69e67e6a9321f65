// Package nsutil runs code in a network namespace. netcfg's packages take a
// namespace handle so that tests can drive them inside namespaces they create;
// in production the handle is the host's own namespace (netns.None()).
package nsutil

import (
	"context"
	"fmt"
	"net"
	"runtime"

	"github.com/vishvananda/netns"
)

// Current reports whether ns means "the namespace we are already in".
func Current(ns netns.NsHandle) bool { return ns == netns.None() || ns == 0 }

// FD returns the descriptor to pass to netlink libraries (0 = current).
func FD(ns netns.NsHandle) int {
	if Current(ns) {
		return 0
	}
	return int(ns)
}

// Do runs fn on an OS thread switched into ns. Sockets fn creates stay in ns
// after Do returns. fn must not start goroutines that expect to be in ns.
func Do(ns netns.NsHandle, fn func() error) error {
	if Current(ns) {
		return fn()
	}
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("nsutil: get current netns: %w", err)
	}
	defer orig.Close()
	if err := netns.Set(ns); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("nsutil: enter netns: %w", err)
	}
	ferr := fn()
	if err := netns.Set(orig); err != nil {
		// The thread is in the wrong namespace: leave it locked so that the
		// runtime destroys it when this goroutine exits.
		return fmt.Errorf("nsutil: restore netns: %w", err)
	}
	runtime.UnlockOSThread()
	return ferr
}

// Listen opens a stream listener inside ns.
func Listen(ns netns.NsHandle, network, addr string) (net.Listener, error) {
	var l net.Listener
	err := Do(ns, func() (err error) {
		l, err = net.Listen(network, addr)
		return err
	})
	return l, err
}

// ListenPacket opens a packet listener inside ns.
func ListenPacket(ns netns.NsHandle, network, addr string) (net.PacketConn, error) {
	var c net.PacketConn
	err := Do(ns, func() (err error) {
		c, err = net.ListenPacket(network, addr)
		return err
	})
	return c, err
}

// Dial connects from inside ns. The dial blocks the locked thread, so keep
// d.Timeout short.
func Dial(ctx context.Context, ns netns.NsHandle, d *net.Dialer, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := Do(ns, func() (err error) {
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}
