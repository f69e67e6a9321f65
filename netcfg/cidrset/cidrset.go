// Package cidrset holds sets of IPv4 addresses as sorted, merged ranges: the
// form an nftables interval set stores, so that the union of many IP access
// control rules can be loaded, compared and changed element by element.
package cidrset

import (
	"bytes"
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"unsafe"
)

// Range is an inclusive range of IPv4 addresses as big-endian integers.
type Range struct{ First, Last uint32 }

// Set is a sorted list of disjoint, non-adjacent ranges. The zero value is the
// empty set. Sets are immutable once built: functions return new slices.
type Set []Range

// AddrToU32 converts an IPv4 address (or IPv4-mapped IPv6 address).
func AddrToU32(a netip.Addr) uint32 {
	b := a.Unmap().As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

// U32ToAddr converts back.
func U32ToAddr(v uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// PrefixRange returns the range a masked IPv4 prefix covers.
func PrefixRange(p netip.Prefix) Range {
	p = p.Masked()
	first := AddrToU32(p.Addr())
	host := uint32(0)
	if bits := p.Bits(); bits < 32 {
		host = ^uint32(0) >> bits
	}
	return Range{first, first | host}
}

// FromPrefixes builds a set from IPv4 prefixes (overlaps allowed).
func FromPrefixes(ps []netip.Prefix) Set {
	rs := make([]Range, 0, len(ps))
	for _, p := range ps {
		rs = append(rs, PrefixRange(p))
	}
	return FromRanges(rs)
}

// FromRanges sorts and merges arbitrary ranges. rs is reordered in place.
func FromRanges(rs []Range) Set {
	slices.SortFunc(rs, func(a, b Range) int {
		if c := cmp.Compare(a.First, b.First); c != 0 {
			return c
		}
		return cmp.Compare(a.Last, b.Last)
	})
	return merge(rs)
}

// FromSorted merges ranges already sorted by (First, Last) into a new Set
// (rs is not modified): linear, no sorting.
func FromSorted(rs []Range) Set { return merge(slices.Clone(rs)) }

// Compare orders ranges by First, then Last.
func Compare(a, b Range) int {
	if c := cmp.Compare(a.First, b.First); c != 0 {
		return c
	}
	return cmp.Compare(a.Last, b.Last)
}

// merge merges sorted ranges into a Set (in place).
func merge(rs []Range) Set {
	out := rs[:0]
	for _, r := range rs {
		if n := len(out); n > 0 && (out[n-1].Last == ^uint32(0) || r.First <= out[n-1].Last+1) {
			if r.Last > out[n-1].Last {
				out[n-1].Last = r.Last
			}
			continue
		}
		out = append(out, r)
	}
	if len(out) == 0 {
		return nil
	}
	return Set(out)
}

// Union returns the union of sets, each already a Set, in O(total · log k).
func Union(sets ...Set) Set {
	switch len(sets) {
	case 0:
		return nil
	case 1:
		return slices.Clone(sets[0])
	}
	// Tournament merge: log2(k) passes over the data instead of k.
	cur := slices.Clone(sets)
	for len(cur) > 1 {
		next := cur[:0:0]
		for i := 0; i < len(cur); i += 2 {
			if i+1 == len(cur) {
				next = append(next, cur[i])
				break
			}
			next = append(next, union2(cur[i], cur[i+1]))
		}
		cur = next
	}
	return cur[0]
}

func union2(a, b Set) Set {
	out := make([]Range, 0, len(a)+len(b))
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		var r Range
		if j >= len(b) || (i < len(a) && a[i].First <= b[j].First) {
			r = a[i]
			i++
		} else {
			r = b[j]
			j++
		}
		if n := len(out); n > 0 && (out[n-1].Last == ^uint32(0) || r.First <= out[n-1].Last+1) {
			if r.Last > out[n-1].Last {
				out[n-1].Last = r.Last
			}
			continue
		}
		out = append(out, r)
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// Contains reports whether a is in the set.
func (s Set) Contains(a netip.Addr) bool {
	if !a.Unmap().Is4() {
		return false
	}
	v := AddrToU32(a)
	i, found := slices.BinarySearchFunc(s, v, func(r Range, v uint32) int {
		switch {
		case r.Last < v:
			return -1
		case r.First > v:
			return 1
		}
		return 0
	})
	_ = i
	return found
}

// Equal reports whether two sets hold the same ranges.
func Equal(a, b Set) bool {
	if len(a) != len(b) {
		return false
	}
	if len(a) == 0 || &a[0] == &b[0] {
		return true
	}
	return slices.Equal(a, b)
}

// Diff returns the ranges of old that are not ranges of new (to delete) and
// the ranges of new that are not ranges of old (to add), comparing whole
// ranges, as an interval set stores them. Both inputs must be Sets. Long equal
// stretches are skipped with a memory compare.
func Diff(old, new Set) (removed, added []Range) {
	i, j := 0, 0
	for i < len(old) && j < len(new) {
		if n := commonPrefix(old[i:], new[j:]); n > 0 {
			i += n
			j += n
			continue
		}
		switch o, n := old[i], new[j]; {
		case o.First < n.First || (o.First == n.First && o.Last < n.Last):
			removed = append(removed, o)
			i++
		default:
			added = append(added, n)
			j++
		}
	}
	removed = append(removed, old[i:]...)
	added = append(added, new[j:]...)
	return removed, added
}

// commonPrefix returns how many leading ranges a and b share.
func commonPrefix(a, b Set) int {
	n := min(len(a), len(b))
	done := 0
	for chunk := 64; done < n; {
		c := min(chunk, n-done)
		if !bytes.Equal(asBytes(a[done:done+c]), asBytes(b[done:done+c])) {
			if c == 1 {
				return done
			}
			chunk = max(1, c/8) // narrow down inside the differing chunk
			continue
		}
		done += c
		chunk = min(chunk*2, 1<<14)
	}
	return done
}

func asBytes(s Set) []byte {
	if len(s) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&s[0])), len(s)*int(unsafe.Sizeof(Range{})))
}

// Size returns the number of addresses in the set (as uint64: up to 2^32).
func (s Set) Size() uint64 {
	var n uint64
	for _, r := range s {
		n += uint64(r.Last-r.First) + 1
	}
	return n
}

// String renders a range the way nft accepts it: "a.b.c.d", "a.b.c.d/n" or
// "a.b.c.d-e.f.g.h".
func (r Range) String() string {
	if r.First == r.Last {
		return U32ToAddr(r.First).String()
	}
	span := r.Last - r.First
	if span&(span+1) == 0 && r.First&span == 0 { // aligned power-of-two block
		bits := 32
		for m := span; m != 0; m >>= 1 {
			bits--
		}
		return netip.PrefixFrom(U32ToAddr(r.First), bits).String()
	}
	return U32ToAddr(r.First).String() + "-" + U32ToAddr(r.Last).String()
}

// String renders the set in nft element syntax, comma separated.
func (s Set) String() string {
	var b strings.Builder
	for i, r := range s {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(r.String())
	}
	return b.String()
}

// Validate checks the Set invariants (sorted, disjoint, non-adjacent).
func (s Set) Validate() error {
	for i, r := range s {
		if r.Last < r.First {
			return fmt.Errorf("range %d: last %s before first %s", i, U32ToAddr(r.Last), U32ToAddr(r.First))
		}
		if i > 0 && (s[i-1].Last == ^uint32(0) || r.First <= s[i-1].Last+1) {
			return fmt.Errorf("range %d (%s) overlaps or touches range %d (%s)", i, r, i-1, s[i-1])
		}
	}
	return nil
}

// Add returns s ∪ t. When t is small it copies the untouched stretches of s
// in bulk, so an incremental change to a 100,000-range set costs well under a
// millisecond.
func Add(s, t Set) Set {
	if len(t) == 0 {
		return s
	}
	if len(s) == 0 {
		return t
	}
	if len(t)*16 > len(s) {
		return union2(s, t)
	}
	out := make([]Range, 0, len(s)+len(t))
	i := 0
	for _, r := range t {
		// s[i:k] lies entirely below r and does not touch it: copy in bulk.
		k := i + searchLastGE(s[i:], satSub(r.First))
		out = append(out, s[i:k]...)
		i = k
		// merge r with every s range that overlaps or touches it
		for i < len(s) && s[i].First <= satAdd(r.Last) {
			r.First = min(r.First, s[i].First)
			r.Last = max(r.Last, s[i].Last)
			i++
		}
		if n := len(out); n > 0 && (out[n-1].Last == ^uint32(0) || r.First <= out[n-1].Last+1) {
			out[n-1].Last = max(out[n-1].Last, r.Last)
			continue
		}
		out = append(out, r)
	}
	out = append(out, s[i:]...)
	return out
}

func satSub(v uint32) uint32 {
	if v == 0 {
		return 0
	}
	return v - 1
}

func satAdd(v uint32) uint32 {
	if v == ^uint32(0) {
		return v
	}
	return v + 1
}

// Patch returns s minus remove plus add in one allocation (add is inserted in
// place, so it should be small): the incremental update of a large set.
func Patch(s, remove, add Set) Set {
	var out Set
	if len(remove) == 0 || len(s) == 0 || len(s)*16 < len(remove) {
		// subtract would return s itself or a tight slice: work on a copy
		out = append(make(Set, 0, len(s)+len(add)), Subtract(s, remove)...)
	} else {
		out = subtract(s, remove, len(add))
	}
	if len(add) == 0 {
		if len(out) == 0 {
			return nil
		}
		return out
	}
	if len(out) == 0 {
		return slices.Clone(add)
	}
	for _, r := range add {
		i := searchLastGE(out, satSub(r.First))
		// merge with the neighbours it overlaps or touches
		j := i
		for j < len(out) && out[j].First <= satAdd(r.Last) {
			r.First = min(r.First, out[j].First)
			r.Last = max(r.Last, out[j].Last)
			j++
		}
		if j == i {
			out = slices.Insert(out, i, r)
		} else {
			out[i] = r
			out = slices.Delete(out, i+1, j)
		}
	}
	return out
}

// Subtract returns s minus t, copying untouched stretches of s in bulk.
func Subtract(s, t Set) Set { return subtract(s, t, 0) }

func subtract(s, t Set, extra int) Set {
	if len(s) == 0 || len(t) == 0 {
		return s
	}
	if len(s)*16 < len(t) {
		return subtractSmall(s, t)
	}
	out := make([]Range, 0, len(s)+len(t)+extra)
	i := 0
	var cur Range // a range of s, possibly trimmed, not yet emitted
	have := false
	for _, x := range t {
		if have && cur.Last < x.First {
			out = append(out, cur)
			have = false
		}
		if !have {
			k := i + searchLastGE(s[i:], x.First)
			out = append(out, s[i:k]...)
			i = k
		}
		for {
			if !have {
				if i >= len(s) || s[i].First > x.Last {
					break
				}
				cur, have = s[i], true
				i++
			}
			if cur.First > x.Last {
				break
			}
			if cur.First < x.First {
				out = append(out, Range{cur.First, x.First - 1})
			}
			if cur.Last > x.Last {
				cur.First = x.Last + 1
				break
			}
			have = false
		}
	}
	if have {
		out = append(out, cur)
	}
	out = append(out, s[i:]...)
	if len(out) == 0 {
		return nil
	}
	return out
}

// subtractSmall is Subtract for a small s: it looks up the few ranges of t
// that overlap each range of s instead of walking all of t.
func subtractSmall(s, t Set) Set {
	var out []Range
	for _, r := range s {
		k := searchLastGE(t, r.First)
		cur, alive := r, true
		for ; k < len(t) && t[k].First <= cur.Last; k++ {
			x := t[k]
			if x.First > cur.First {
				out = append(out, Range{cur.First, x.First - 1})
			}
			if x.Last >= cur.Last {
				alive = false
				break
			}
			cur.First = x.Last + 1
		}
		if alive {
			out = append(out, cur)
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// searchLastGE returns the first index i with t[i].Last >= v.
func searchLastGE(t Set, v uint32) int {
	lo, hi := 0, len(t)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if t[m].Last < v {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}
