package mgmtnet

import (
	"errors"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"deskhost/netcfg/config"
)

var cands = []netip.Prefix{
	netip.MustParsePrefix("198.19.0.0/16"),
	netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("172.31.0.0/16"),
}

func TestResolveWriteOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "state.json")
	st, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	primary := []config.Network{{Prefix: netip.MustParsePrefix("198.19.4.0/24"), Source: "interfaces.primary.addresses[0]"}}
	r, changed, err := Resolve(st, cands, primary, time.Now())
	if err != nil || !changed || r != cands[1] {
		t.Fatalf("Resolve = %v %v %v, want 192.168.0.0/16", r, changed, err)
	}
	if err := Save(path, st); err != nil {
		t.Fatal(err)
	}
	st2, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	// Once chosen, a different candidate order or a free first candidate changes nothing.
	r2, changed, err := Resolve(st2, cands, nil, time.Now())
	if err != nil || changed || r2 != cands[1] {
		t.Fatalf("second Resolve = %v %v %v", r2, changed, err)
	}
	// A conflict with the chosen range is an error naming the network.
	_, _, err = Resolve(st2, cands, []config.Network{{Prefix: netip.MustParsePrefix("192.168.1.0/24"), Source: "interfaces.primary.addresses[0]"}}, time.Now())
	var ce *ConflictError
	if !errors.As(err, &ce) || !ce.Chosen || !strings.Contains(err.Error(), "interfaces.primary.addresses[0]") {
		t.Fatalf("conflict not reported: %v", err)
	}
}

func TestResolveAllConflict(t *testing.T) {
	st := &State{Addresses: map[string]netip.Addr{}}
	nets := []config.Network{{Prefix: netip.MustParsePrefix("128.0.0.0/1"), Source: "interfaces.primary.routes[0].destination"}}
	_, _, err := Resolve(st, cands, nets, time.Now())
	if err == nil || !strings.Contains(err.Error(), "every candidate") {
		t.Fatalf("want all-conflict error, got %v", err)
	}
	if st.Range.IsValid() {
		t.Fatal("range chosen despite conflicts")
	}
}

func TestAllocateStable(t *testing.T) {
	st := &State{Addresses: map[string]netip.Addr{}}
	r := cands[0]
	a, changed, err := Allocate(st, r, []string{"ws-b", "ws-a"})
	if err != nil || !changed {
		t.Fatal(err)
	}
	if a["ws-a"].String() != "198.19.0.10" || a["ws-b"].String() != "198.19.0.11" {
		t.Fatalf("allocations %v", a)
	}
	// ws-a leaves, ws-c arrives: ws-b keeps its address, ws-c takes the free one.
	a, _, _ = Allocate(st, r, []string{"ws-b", "ws-c"})
	if a["ws-b"].String() != "198.19.0.11" || a["ws-c"].String() != "198.19.0.10" {
		t.Fatalf("allocations %v", a)
	}
	_, changed, _ = Allocate(st, r, []string{"ws-b", "ws-c"})
	if changed {
		t.Fatal("no-op allocation reported a change")
	}
	if HostAddr(r).String() != "198.19.0.1" {
		t.Fatal(HostAddr(r))
	}
	small := netip.MustParsePrefix("10.0.0.0/28")
	var ids []string
	for _, c := range "abcdefgh" {
		ids = append(ids, "ws-"+string(c))
	}
	if _, _, err := Allocate(&State{Addresses: map[string]netip.Addr{}}, small, ids); err == nil {
		t.Fatal("overfull range allocated")
	}
}
