// Package addrpool is a range of IPv4 addresses handed out one per WorkSpace: the primary
// network's addresses, which netcfg serves by DHCP and hostd allocates in its store. Both
// parse the range from netcfg's config (primaryNetwork.dhcp.pool) with Parse.
package addrpool

import (
	"fmt"
	"iter"
	"net/netip"
	"strings"
)

// MaxSize bounds a pool: an allocation walks it.
const MaxSize = 1 << 16

// Range is First to Last, both included.
type Range struct {
	First, Last netip.Addr
}

// Parse reads "10.0.2.100-10.0.2.199" (or a single address).
func Parse(s string) (Range, error) {
	a, b, ok := strings.Cut(strings.TrimSpace(s), "-")
	if !ok {
		b = a
	}
	first, err := netip.ParseAddr(strings.TrimSpace(a))
	if err != nil || !first.Is4() {
		return Range{}, fmt.Errorf("pool %q: %q is not an IPv4 address", s, a)
	}
	last, err := netip.ParseAddr(strings.TrimSpace(b))
	if err != nil || !last.Is4() {
		return Range{}, fmt.Errorf("pool %q: %q is not an IPv4 address", s, b)
	}
	r := Range{first, last}
	if last.Less(first) {
		return Range{}, fmt.Errorf("pool %q: %s comes before %s", s, last, first)
	}
	if r.Size() > MaxSize {
		return Range{}, fmt.Errorf("pool %q: %d addresses; at most %d", s, r.Size(), MaxSize)
	}
	return r, nil
}

func u32(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

// Size is how many addresses r holds.
func (r Range) Size() int { return int(u32(r.Last)-u32(r.First)) + 1 }

// Contains reports whether a is in r.
func (r Range) Contains(a netip.Addr) bool {
	return a.Is4() && !a.Less(r.First) && !r.Last.Less(a)
}

// Within reports whether all of r lies in p.
func (r Range) Within(p netip.Prefix) bool { return p.Contains(r.First) && p.Contains(r.Last) }

// All yields r's addresses in order.
func (r Range) All() iter.Seq[netip.Addr] {
	return func(yield func(netip.Addr) bool) {
		for a := r.First; r.Contains(a); a = a.Next() {
			if !yield(a) {
				return
			}
		}
	}
}

func (r Range) String() string { return r.First.String() + "-" + r.Last.String() }
