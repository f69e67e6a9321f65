package nicroles

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"deskhost/internal/dhcpclient"
)

// List returns the physical Ethernet NICs in ns (netns.None(): the current namespace) in
// the kernel's order (by interface index, which follows the order the drivers found the
// devices), with their carrier as it is now. types are the link types that count as
// physical; nil means "device" (a real NIC's driver). Tests pass "veth".
func List(ns netns.NsHandle, types ...string) ([]NIC, error) {
	h, err := handle(ns)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	if len(types) == 0 {
		types = []string{"device"}
	}
	want := map[string]bool{}
	for _, t := range types {
		want[t] = true
	}
	links, err := h.LinkList()
	if err != nil {
		return nil, fmt.Errorf("nicroles: list links: %w", err)
	}
	var out []NIC
	for _, l := range links {
		a := l.Attrs()
		if !want[l.Type()] || a.Flags&net.FlagLoopback != 0 || len(a.HardwareAddr) != 6 {
			continue
		}
		out = append(out, NIC{Name: a.Name, MAC: append(net.HardwareAddr(nil), a.HardwareAddr...), Index: a.Index, Carrier: carrier(a)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Index < out[j].Index })
	return out, nil
}

func handle(ns netns.NsHandle) (*netlink.Handle, error) {
	if ns == netns.None() || ns == 0 {
		return netlink.NewHandle()
	}
	return netlink.NewHandleAt(ns)
}

// carrier: the link is up and the kernel sees a carrier (IFF_LOWER_UP, or an operational
// state of up).
func carrier(a *netlink.LinkAttrs) bool {
	return a.RawFlags&0x10000 != 0 || a.OperState == netlink.OperUp // IFF_LOWER_UP
}

// Up brings nics up and waits, at most wait, until every one sees a carrier (a NIC's
// carrier is only known once it is up; an uncabled one never gets one). It returns nics
// with their carrier as it is then.
func Up(ns netns.NsHandle, nics []NIC, wait time.Duration) ([]NIC, error) {
	h, err := handle(ns)
	if err != nil {
		return nics, err
	}
	defer h.Close()
	out := append([]NIC(nil), nics...)
	for _, n := range out {
		if l, err := h.LinkByName(n.Name); err == nil {
			_ = h.LinkSetUp(l)
		}
	}
	deadline := time.Now().Add(wait)
	for {
		all := true
		for i := range out {
			if l, err := h.LinkByName(out[i].Name); err == nil {
				out[i].Carrier = carrier(l.Attrs())
			}
			all = all && out[i].Carrier
		}
		if all || time.Now().After(deadline) {
			return out, nil
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Probe timings.
var (
	// CarrierWait is how long a NIC brought up is given to see a carrier (a real NIC
	// negotiates its link in one to three seconds).
	CarrierWait = 5 * time.Second
	// LeaseTimeout bounds the whole probe.
	LeaseTimeout = 30 * time.Second
	// LeaseGrace is how long a later NIC's lease waits for earlier NICs to answer: the
	// first NIC in order wins, not the fastest DHCP server.
	LeaseGrace = 3 * time.Second
)

// DHCPProbe returns a FirstLease for Resolve that asks DHCP on every candidate at once,
// in ns. It brings each NIC up, waits for its carrier, and asks for a lease without
// configuring it (netcfg configures the management NIC afterwards, with its own DHCP
// client, and gets the same address for the same MAC). The first NIC in order with a
// lease wins as soon as every NIC before it has failed; a later NIC's lease waits
// LeaseGrace for them.
func DHCPProbe(ns netns.NsHandle, log *slog.Logger) func(ctx context.Context, nics []NIC) (NIC, error) {
	if log == nil {
		log = slog.Default()
	}
	return func(ctx context.Context, nics []NIC) (NIC, error) {
		h, err := handle(ns)
		if err != nil {
			return NIC{}, err
		}
		defer h.Close()
		ctx, cancel := context.WithTimeout(ctx, LeaseTimeout)
		defer cancel()
		type result struct {
			i   int
			err error
		}
		results := make(chan result, len(nics))
		for i, n := range nics {
			go func(i int, n NIC) {
				results <- result{i, probeOne(ctx, ns, h, n, log)}
			}(i, n)
		}
		state := make([]int, len(nics)) // 0 asking, 1 leased, 2 failed
		var errs []error
		var grace <-chan time.Time
		decide := func(final bool) (NIC, bool) {
			for i, s := range state {
				switch {
				case s == 1:
					return nics[i], true
				case s == 0 && !final:
					return NIC{}, false // an earlier NIC may still answer
				}
			}
			return NIC{}, false
		}
	collect:
		for range nics {
			select {
			case r := <-results:
				if r.err != nil {
					state[r.i] = 2
					errs = append(errs, r.err)
				} else {
					state[r.i] = 1
					if grace == nil {
						grace = time.After(LeaseGrace)
					}
				}
				if n, ok := decide(false); ok {
					return n, nil
				}
			case <-grace:
				break collect
			}
		}
		if n, ok := decide(true); ok {
			return n, nil
		}
		return NIC{}, fmt.Errorf("no DHCP lease on %s: %w", names(nics), errors.Join(errs...))
	}
}

func probeOne(ctx context.Context, ns netns.NsHandle, h *netlink.Handle, n NIC, log *slog.Logger) error {
	l, err := h.LinkByName(n.Name)
	if err != nil {
		return fmt.Errorf("%s: %w", n.Name, err)
	}
	if err := h.LinkSetUp(l); err != nil {
		return fmt.Errorf("%s: link up: %w", n.Name, err)
	}
	deadline := time.Now().Add(CarrierWait)
	for {
		l, err = h.LinkByName(n.Name)
		if err == nil && carrier(l.Attrs()) {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: no carrier after %v", n.Name, CarrierWait)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w", n.Name, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
	c, err := dhcpclient.New(ns, n.Name, log)
	if err != nil {
		return err
	}
	defer c.Close()
	lease, err := c.Acquire(ctx)
	if err != nil {
		return err
	}
	log.Info("nic probe: lease", "interface", n.Name, "address", lease.Addr.String())
	return nil
}
