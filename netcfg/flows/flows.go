// Package flows drops live connections that an IP access control change no
// longer allows. The guide: "If you remove a rule that was used to allow a
// connection to a WorkSpace, the user is disconnected from the WorkSpace."
// nftables only judges new connections (established ones are accepted before
// any allow-list is consulted), so after a change that shrinks an allow-list
// netcfg deletes the conntrack entries of the flows it no longer allows; their
// next packet is then judged as new and dropped.
package flows

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"

	"github.com/mdlayher/netlink"
	"github.com/ti-mo/conntrack"
	"github.com/ti-mo/netfilter"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"deskhost/internal/nsutil"
)

// Port is a transport protocol (6 or 17) and destination port.
type Port struct {
	Proto uint8
	Port  uint16
}

// Allowed reports whether a client at src may still reach the host at dst.
type Allowed func(src, dst netip.Addr) bool

// Result counts what DropDisallowed saw and did.
type Result struct {
	Examined int
	Dropped  []Flow
}

// Flow identifies a dropped connection.
type Flow struct {
	Proto    uint8
	Src, Dst netip.AddrPort
}

func (f Flow) String() string {
	p := "tcp"
	if f.Proto == 17 {
		p = "udp"
	}
	return fmt.Sprintf("%s %s -> %s", p, f.Src, f.Dst)
}

// DropDisallowed deletes the conntrack entries, in namespace ns, of IPv4
// client flows (conntrack mark mark, set by the rule that accepted them) to or
// from one of ports that allowed rejects.
func DropDisallowed(ns netns.NsHandle, mark uint32, ports []Port, allowed Allowed) (Result, error) {
	var res Result
	c, err := conntrack.Dial(&netlink.Config{NetNS: nsutil.FD(ns)})
	if err != nil {
		return res, fmt.Errorf("flows: open conntrack: %w", err)
	}
	defer c.Close()
	all, err := c.DumpFilter(conntrack.NewFilter().Mark(mark), nil)
	if err != nil {
		return res, fmt.Errorf("flows: dump conntrack: %w", err)
	}
	want := map[Port]bool{}
	for _, p := range ports {
		want[p] = true
	}
	for _, f := range all {
		o := f.TupleOrig
		if !o.IP.SourceAddress.Is4() || f.Mark != mark {
			continue
		}
		res.Examined++
		// client -> host service, or (a flow the host side opened) service -> client
		var client, host netip.Addr
		switch {
		case want[Port{o.Proto.Protocol, o.Proto.DestinationPort}]:
			client, host = o.IP.SourceAddress, o.IP.DestinationAddress
		case want[Port{o.Proto.Protocol, o.Proto.SourcePort}]:
			client, host = o.IP.DestinationAddress, o.IP.SourceAddress
		default:
			continue
		}
		if allowed(client, host) {
			continue
		}
		if err := c.Delete(f); err != nil && !errors.Is(err, unix.ENOENT) {
			return res, fmt.Errorf("flows: delete %v: %w", f.TupleOrig, err)
		}
		res.Dropped = append(res.Dropped, Flow{o.Proto.Protocol,
			netip.AddrPortFrom(o.IP.SourceAddress, o.Proto.SourcePort),
			netip.AddrPortFrom(o.IP.DestinationAddress, o.Proto.DestinationPort)})
	}
	return res, nil
}

type flowKey struct {
	proto        uint8
	src, dst     netip.Addr
	sport, dport uint16
}

// Tracker keeps an index of live client flows from conntrack events, so that
// an allow-list change deletes the flows it no longer allows by their exact
// tuple instead of dumping the conntrack table: a dump walks every bucket of
// the (host-wide) conntrack hash table, ~9 ms for 262,144 buckets here even
// when it is empty. The index is seeded with one dump when the Tracker
// starts; flows whose NEW event arrives after a change are judged by the
// latest policy as they arrive. If events are lost (socket overrun) the
// Tracker falls back to dumping until it has re-seeded.
type Tracker struct {
	ns    netns.NsHandle
	mark  uint32
	ports map[Port]bool
	log   *slog.Logger

	mu      sync.Mutex
	flows   map[flowKey]conntrack.Flow
	synced  bool
	dead    bool
	allowed Allowed // latest policy
	cmd     *conntrack.Conn
	listen  *conntrack.Conn
	stop    context.CancelFunc
}

// StartTracker listens to conntrack NEW and DESTROY events in ns until ctx
// ends. Flows with conntrack mark mark to or from one of ports are indexed.
func StartTracker(ctx context.Context, ns netns.NsHandle, mark uint32, ports []Port, log *slog.Logger) (*Tracker, error) {
	if log == nil {
		log = slog.Default()
	}
	ctx, stop := context.WithCancel(ctx)
	t := &Tracker{ns: ns, mark: mark, ports: map[Port]bool{}, log: log.With("component", "flows"), flows: map[flowKey]conntrack.Flow{}, stop: stop}
	for _, p := range ports {
		t.ports[p] = true
	}
	var err error
	if t.cmd, err = conntrack.Dial(&netlink.Config{NetNS: nsutil.FD(ns)}); err != nil {
		stop()
		return nil, fmt.Errorf("flows: open conntrack: %w", err)
	}
	if t.listen, err = conntrack.Dial(&netlink.Config{NetNS: nsutil.FD(ns)}); err != nil {
		t.cmd.Close()
		return nil, fmt.Errorf("flows: open conntrack: %w", err)
	}
	_ = t.listen.SetReadBuffer(8 << 20)
	evc := make(chan conntrack.Event, 4096)
	errc, err := t.listen.Listen(evc, 1, []netfilter.NetlinkGroup{netfilter.GroupCTNew, netfilter.GroupCTDestroy})
	if err != nil {
		t.cmd.Close()
		t.listen.Close()
		return nil, fmt.Errorf("flows: listen to conntrack events: %w", err)
	}
	if err := t.seed(); err != nil {
		t.cmd.Close()
		t.listen.Close()
		return nil, err
	}
	go t.loop(ctx, evc, errc)
	return t, nil
}

func (t *Tracker) match(f *conntrack.Flow) (flowKey, netip.Addr, netip.Addr, bool) {
	o := f.TupleOrig
	if !o.IP.SourceAddress.Is4() || f.Mark != t.mark {
		return flowKey{}, netip.Addr{}, netip.Addr{}, false
	}
	k := flowKey{o.Proto.Protocol, o.IP.SourceAddress, o.IP.DestinationAddress, o.Proto.SourcePort, o.Proto.DestinationPort}
	switch {
	case t.ports[Port{o.Proto.Protocol, o.Proto.DestinationPort}]:
		return k, o.IP.SourceAddress, o.IP.DestinationAddress, true
	case t.ports[Port{o.Proto.Protocol, o.Proto.SourcePort}]:
		return k, o.IP.DestinationAddress, o.IP.SourceAddress, true
	}
	return k, netip.Addr{}, netip.Addr{}, false
}

func (t *Tracker) seed() error {
	all, err := t.cmd.DumpFilter(conntrack.NewFilter().Mark(t.mark), nil)
	if err != nil {
		return fmt.Errorf("flows: dump conntrack: %w", err)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, f := range all {
		if k, _, _, ok := t.match(&f); ok {
			t.flows[k] = f
		}
	}
	t.synced = true
	return nil
}

func (t *Tracker) loop(ctx context.Context, evc chan conntrack.Event, errc chan error) {
	defer func() {
		t.mu.Lock()
		t.synced, t.dead = false, true
		t.listen.Close()
		t.cmd.Close()
		t.mu.Unlock()
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case err := <-errc:
			// Lost events (or a dead socket): the owner starts a new Tracker.
			t.log.Warn("conntrack events lost; the index will be rebuilt", "err", err)
			return
		case ev := <-evc:
			if ev.Flow == nil {
				continue
			}
			k, client, host, ok := t.match(ev.Flow)
			if !ok {
				continue
			}
			t.mu.Lock()
			switch ev.Type {
			case conntrack.EventNew:
				if t.allowed != nil && !t.allowed(client, host) {
					// created just before the change that forbids it
					if err := t.cmd.Delete(*ev.Flow); err == nil {
						t.log.Info("disconnected a client no longer allowed", "flow", toFlow(k).String())
					}
				} else {
					t.flows[k] = *ev.Flow
				}
			case conntrack.EventDestroy:
				delete(t.flows, k)
			}
			t.mu.Unlock()
		}
	}
}

func toFlow(k flowKey) Flow {
	return Flow{k.proto, netip.AddrPortFrom(k.src, k.sport), netip.AddrPortFrom(k.dst, k.dport)}
}

// Stop ends the Tracker.
func (t *Tracker) Stop() { t.stop() }

// Alive reports whether the Tracker still follows events.
func (t *Tracker) Alive() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return !t.dead
}

// Drop deletes the indexed flows that allowed rejects and remembers allowed
// for flows announced later. Without a synced index it dumps the table.
func (t *Tracker) Drop(allowed Allowed) (Result, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.allowed = allowed
	if !t.synced || t.dead {
		ports := make([]Port, 0, len(t.ports))
		for p := range t.ports {
			ports = append(ports, p)
		}
		return DropDisallowed(t.ns, t.mark, ports, allowed)
	}
	var res Result
	for k, f := range t.flows {
		res.Examined++
		_, client, host, _ := t.match(&f)
		if allowed(client, host) {
			continue
		}
		delete(t.flows, k)
		if err := t.cmd.Delete(f); err != nil {
			if errors.Is(err, unix.ENOENT) {
				continue // already gone
			}
			return res, fmt.Errorf("flows: delete %v: %w", toFlow(k), err)
		}
		res.Dropped = append(res.Dropped, toFlow(k))
	}
	return res, nil
}

// Len returns the number of indexed flows.
func (t *Tracker) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.flows)
}
