package addrpool

import (
	"net/netip"
	"slices"
	"testing"
)

func TestParse(t *testing.T) {
	r, err := Parse("10.0.2.254 - 10.0.3.1")
	if err != nil {
		t.Fatal(err)
	}
	got := slices.Collect(r.All())
	want := []netip.Addr{netip.MustParseAddr("10.0.2.254"), netip.MustParseAddr("10.0.2.255"), netip.MustParseAddr("10.0.3.0"), netip.MustParseAddr("10.0.3.1")}
	if !slices.Equal(got, want) || r.Size() != 4 {
		t.Fatalf("%v (%d), want %v", got, r.Size(), want)
	}
	if !r.Within(netip.MustParsePrefix("10.0.0.0/16")) || r.Within(netip.MustParsePrefix("10.0.2.0/24")) {
		t.Fatal("Within")
	}
	if one, err := Parse("192.168.1.5"); err != nil || one.Size() != 1 {
		t.Fatalf("single address: %v %v", one, err)
	}
	for _, bad := range []string{"", "10.0.0.9-10.0.0.1", "10.0.0.1-fe80::1", "10.0.0.0-10.2.0.0", "x-10.0.0.1", "10.0.0.1-"} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
	// The last address of the IPv4 space ends the walk.
	top, _ := Parse("255.255.255.254-255.255.255.255")
	if n := len(slices.Collect(top.All())); n != 2 {
		t.Fatalf("top of the space: %d addresses", n)
	}
}
