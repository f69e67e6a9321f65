package cidrset

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
)

func mp(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

func TestFromPrefixesMerges(t *testing.T) {
	s := FromPrefixes(mp("10.0.0.0/8", "10.1.0.0/16", "192.168.1.0/25", "192.168.1.128/25", "1.2.3.4/32", "0.0.0.0/32"))
	want := "0.0.0.0, 1.2.3.4, 10.0.0.0/8, 192.168.1.0/24"
	if s.String() != want {
		t.Fatalf("got %q want %q", s, want)
	}
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	all := FromPrefixes(mp("0.0.0.0/1", "128.0.0.0/1"))
	if all.String() != "0.0.0.0/0" || all.Size() != 1<<32 {
		t.Fatalf("full space: %q %d", all, all.Size())
	}
	if !all.Contains(netip.MustParseAddr("255.255.255.255")) {
		t.Fatal("full space misses broadcast")
	}
	if FromPrefixes(nil) != nil {
		t.Fatal("empty set not nil")
	}
}

func TestContainsAndRangeString(t *testing.T) {
	s := FromRanges([]Range{{AddrToU32(netip.MustParseAddr("10.0.0.5")), AddrToU32(netip.MustParseAddr("10.0.0.9"))}})
	if s.String() != "10.0.0.5-10.0.0.9" {
		t.Fatalf("got %q", s)
	}
	for a, want := range map[string]bool{"10.0.0.4": false, "10.0.0.5": true, "10.0.0.9": true, "10.0.0.10": false, "::1": false} {
		if got := s.Contains(netip.MustParseAddr(a)); got != want {
			t.Errorf("Contains(%s) = %v", a, got)
		}
	}
}

// TestUnionDiffRandom checks Union and Diff against a brute-force model.
func TestUnionDiffRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	randSet := func(n int) Set {
		var ps []netip.Prefix
		for range n {
			a := netip.AddrFrom4([4]byte{10, 0, byte(r.IntN(4)), byte(r.IntN(256))})
			ps = append(ps, netip.PrefixFrom(a, 24+r.IntN(9)).Masked())
		}
		return FromPrefixes(ps)
	}
	for iter := 0; iter < 200; iter++ {
		a, b, c := randSet(r.IntN(20)), randSet(r.IntN(20)), randSet(r.IntN(20))
		u := Union(a, b, c)
		if err := u.Validate(); err != nil {
			t.Fatal(err)
		}
		for v := uint32(0x0a000000); v < 0x0a000400; v++ {
			addr := U32ToAddr(v)
			if got, want := u.Contains(addr), a.Contains(addr) || b.Contains(addr) || c.Contains(addr); got != want {
				t.Fatalf("union contains %s = %v, want %v", addr, got, want)
			}
		}
		removed, added := Diff(a, u)
		// applying the diff to a must give u
		m := map[Range]bool{}
		for _, x := range a {
			m[x] = true
		}
		for _, x := range removed {
			if !m[x] {
				t.Fatalf("removed %s not in old", x)
			}
			delete(m, x)
		}
		for _, x := range added {
			if m[x] {
				t.Fatalf("added %s already present", x)
			}
			m[x] = true
		}
		if len(m) != len(u) {
			t.Fatalf("diff result has %d ranges, want %d", len(m), len(u))
		}
		for _, x := range u {
			if !m[x] {
				t.Fatalf("diff result misses %s", x)
			}
		}
	}
}

func BenchmarkUnion100k(b *testing.B) {
	r := rand.New(rand.NewPCG(3, 4))
	var sets []Set
	for range 20 {
		var ps []netip.Prefix
		for range 5000 {
			ps = append(ps, netip.PrefixFrom(U32ToAddr(r.Uint32()), 32))
		}
		sets = append(sets, FromPrefixes(ps))
	}
	b.ResetTimer()
	for b.Loop() {
		Union(sets...)
	}
}

func TestSubtractAddRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	randSet := func(n int) Set {
		var ps []netip.Prefix
		for range n {
			a := netip.AddrFrom4([4]byte{10, 0, byte(r.IntN(4)), byte(r.IntN(256))})
			ps = append(ps, netip.PrefixFrom(a, 24+r.IntN(9)).Masked())
		}
		return FromPrefixes(ps)
	}
	for iter := 0; iter < 300; iter++ {
		a, b := randSet(r.IntN(30)), randSet(r.IntN(30))
		d, u := Subtract(a, b), Add(a, b)
		c := randSet(r.IntN(4))
		a0, b0, c0 := slices.Clone(a), slices.Clone(b), slices.Clone(c)
		pt := Patch(a, b, c)
		if !slices.Equal(a, a0) || !slices.Equal(b, b0) || !slices.Equal(c, c0) {
			t.Fatal("Patch modified its inputs")
		}
		if err := pt.Validate(); err != nil {
			t.Fatalf("patch: %v", err)
		}
		for v := uint32(0x0a000000); v < 0x0a000400; v++ {
			addr := U32ToAddr(v)
			if pt.Contains(addr) != ((a.Contains(addr) && !b.Contains(addr)) || c.Contains(addr)) {
				t.Fatalf("Patch(%s, %s, %s) = %s wrong at %s", a, b, c, pt, addr)
			}
		}
		ds := subtractSmall(a, b)
		if err := ds.Validate(); err != nil {
			t.Fatalf("subtractSmall: %v", err)
		}
		if err := d.Validate(); err != nil {
			t.Fatalf("subtract: %v", err)
		}
		if err := u.Validate(); err != nil {
			t.Fatalf("add: %v", err)
		}
		for v := uint32(0x0a000000); v < 0x0a000400; v++ {
			addr := U32ToAddr(v)
			ina, inb := a.Contains(addr), b.Contains(addr)
			if ds.Contains(addr) != (ina && !inb) {
				t.Fatalf("subtractSmall %s - %s: wrong at %s", a, b, addr)
			}
			if d.Contains(addr) != (ina && !inb) {
				t.Fatalf("%s - %s: wrong at %s (got %s)", a, b, addr, d)
			}
			if u.Contains(addr) != (ina || inb) {
				t.Fatalf("%s + %s: wrong at %s", a, b, addr)
			}
		}
	}
}

func BenchmarkIncremental100k(b *testing.B) {
	r := rand.New(rand.NewPCG(3, 4))
	var ps []netip.Prefix
	for range 100000 {
		ps = append(ps, netip.PrefixFrom(U32ToAddr(r.Uint32()), 32))
	}
	big := FromPrefixes(ps)
	small := FromPrefixes(ps[5:6])
	b.ResetTimer()
	for b.Loop() {
		x := Subtract(big, small)
		y := Add(x, FromPrefixes([]netip.Prefix{netip.MustParsePrefix("1.2.3.4/32")}))
		Diff(big, y)
	}
}
