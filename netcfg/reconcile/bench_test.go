package reconcile

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"deskhost/netcfg/config"
	"deskhost/netcfg/internal/testnet"
)

// bigConfig is a host with 10 WorkSpaces and one directory whose 20
// associated IP access control groups hold 5,000 CIDRs each (100,000).
func bigConfig(b testing.TB, state string) *config.Config {
	r := rand.New(rand.NewPCG(1, 2))
	c := &config.Config{
		StateFile: state,
		Interfaces: config.Interfaces{
			Management: config.NIC{Name: "eth0", Addresses: []string{"203.0.113.10/24"}},
			Primary:    config.NIC{Name: "eth1", Addresses: []string{"10.0.0.5/16"}},
		},
	}
	dir := config.Directory{ID: "d-bench00001", Controllers: []string{"10.0.1.10"}}
	for g := range 20 {
		grp := config.IPGroup{ID: fmt.Sprintf("wsipg-%02d", g)}
		for range 5000 {
			a := r.Uint32()
			src := fmt.Sprintf("%d.%d.%d.%d", a>>24, a>>16&255, a>>8&255, a&255)
			if a&1 == 0 {
				src = fmt.Sprintf("%d.%d.%d.0/24", a>>24, a>>16&255, a>>8&255)
			}
			grp.Rules = append(grp.Rules, config.IPRule{Source: src})
		}
		c.IPGroups = append(c.IPGroups, grp)
		dir.IPGroups = append(dir.IPGroups, grp.ID)
	}
	c.Directories = []config.Directory{dir}
	for i := range 10 {
		c.WorkSpaces = append(c.WorkSpaces, config.WorkSpace{ID: fmt.Sprintf("ws-bench%05d", i), Directory: dir.ID})
	}
	return c
}

// withRule returns a copy of c where rule 1234 of group 7 is src (the group's
// rule slice is copied; everything else is shared, as hostd would build it).
func withRule(c *config.Config, src string) *config.Config {
	d := *c
	d.IPGroups = slices.Clone(c.IPGroups)
	d.IPGroups[7].Rules = slices.Clone(c.IPGroups[7].Rules)
	d.IPGroups[7].Rules[1234].Source = src
	return &d
}

func benchHost(b *testing.B) (*testnet.NS, *Reconciler, string) {
	testnet.RequireRoot(b)
	host := testnet.New(b, "bhost")
	peer := testnet.New(b, "bpeer")
	testnet.Veth(b, host, "eth0", peer, "p0")
	testnet.Veth(b, host, "eth1", peer, "p1")
	r, err := New(Options{NetNS: host.Handle, Logger: quietLog()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { r.Close() })
	return host, r, filepath.Join(b.TempDir(), "state.json")
}

// BenchmarkApplyOneRuleChange100k: hostd changes one IP access control rule
// while 100,000 CIDRs are loaded and calls Apply with the whole desired state.
// Everything is in the figure: validation (only the changed group is
// re-parsed), the directory's union (updated incrementally), the links check,
// the nftables diff and its transaction, and the conntrack check for flows
// the change no longer allows.
func BenchmarkApplyOneRuleChange100k(b *testing.B) {
	_, r, state := benchHost(b)
	base := bigConfig(b, state)
	a, c := withRule(base, "192.0.2.1"), withRule(base, "192.0.2.2")
	t0 := time.Now()
	res, err := r.Apply(context.Background(), a)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("cold apply of 100,000 CIDRs (validate, union, links, %d ranges in one transaction): %v", res.Firewall.RangesAdded, time.Since(t0))
	var prep, lk, fw, fl time.Duration
	defer func() {
		n := time.Duration(b.N)
		b.ReportMetric(float64((prep/n).Microseconds())/1000, "ms-prepare")
		b.ReportMetric(float64((lk/n).Microseconds())/1000, "ms-links")
		b.ReportMetric(float64((fw/n).Microseconds())/1000, "ms-nftables")
		b.ReportMetric(float64((fl/n).Microseconds())/1000, "ms-conntrack")
	}()
	for i := 0; b.Loop(); i++ {
		next := c
		if i%2 == 1 {
			next = a
		}
		res, err := r.Apply(context.Background(), next)
		if err != nil {
			b.Fatal(err)
		}
		prep, lk, fw, fl = prep+res.Prepare, lk+res.LinksTime, fw+res.FirewallTime, fl+res.FlowsTime
		fwr := res.Firewall
		if fwr.ReadKernel || fwr.ChainsRewritten != 0 || fwr.RangesAdded != 1 || fwr.RangesRemoved != 1 || len(res.Links) != 0 {
			b.Fatalf("not incremental: %+v links %v", fwr, res.Links)
		}
	}
}

// BenchmarkApplyNoChange100k: Apply with an unchanged desired state.
func BenchmarkApplyNoChange100k(b *testing.B) {
	host, r, state := benchHost(b)
	c := bigConfig(b, state)
	if _, err := r.Apply(context.Background(), c); err != nil {
		b.Fatal(err)
	}
	gen, _ := r.Firewall().Generation()
	for b.Loop() {
		res, err := r.Apply(context.Background(), c)
		if err != nil || res.Changed {
			b.Fatalf("%+v %v", res, err)
		}
	}
	if g, _ := r.Firewall().Generation(); g != gen {
		b.Fatalf("generation moved: %d -> %d", gen, g)
	}
	_ = host
}
