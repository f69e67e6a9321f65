package firewall

import (
	"bytes"
	"cmp"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"deskhost/internal/nsutil"
	"deskhost/netcfg/cidrset"
	"deskhost/netcfg/internal/testnet"
)

// nftFile runs `nft -f file` inside ns (forked from a thread in ns, so no
// `ip netns exec` overhead is counted against nft).
func nftFile(b *testing.B, ns *testnet.NS, file string) time.Duration {
	b.Helper()
	var out bytes.Buffer
	cmd := exec.Command("nft", "-f", file)
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := nsutil.Do(ns.Handle, cmd.Start); err != nil {
		b.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		b.Fatalf("nft -f: %v: %s", err, out.String())
	}
	return time.Since(start)
}

func writeScript(b *testing.B, rs *Ruleset, replace bool) string {
	b.Helper()
	var buf bytes.Buffer
	if err := WriteScript(&buf, rs, replace); err != nil {
		b.Fatal(err)
	}
	p := filepath.Join(b.TempDir(), "ruleset.nft")
	if err := os.WriteFile(p, buf.Bytes(), 0o600); err != nil {
		b.Fatal(err)
	}
	return p
}

func deleteTables(b *testing.B, ns *testnet.NS) {
	b.Helper()
	ns.Exec(nil, "nft", "delete table inet deskhost; delete table bridge deskhost")
}

// BenchmarkLoad100k measures loading a ruleset whose IP access control set
// holds 100,000 ranges (and 20 VMs' chains) in one transaction, against
// `nft -f` of the same ruleset, alternating both in every iteration:
//
//	fresh:   no deskhost table before (Apply by a new Manager, nft -f creating)
//	replace: the table holds another 100,000 ranges (Apply by a warm Manager
//	         diffing two disjoint sets; nft -f deleting and re-creating the
//	         table in its file)
func BenchmarkLoad100k(b *testing.B) {
	testnet.RequireRoot(b)
	ns := testnet.New(b, "bench")
	specA, specB := testSpec(20), testSpec(20)
	specA.Directories[0].Set = randomSet(100000, 11)
	specB.Directories[0].Set = randomSet(100000, 12)
	rsA, rsB := mustCompile(b, specA), mustCompile(b, specB)
	b.Logf("set A %d ranges, set B %d ranges, %d elements per message", len(specA.Directories[0].Set), len(specB.Directories[0].Set), elemsPerMessage)

	b.Run("fresh", func(b *testing.B) {
		script := writeScript(b, rsA, false)
		var ours, nft time.Duration
		for b.Loop() {
			deleteTables(b, ns)
			m := open(b, ns)
			t0 := time.Now()
			res, err := m.Apply(rsA)
			ours += time.Since(t0)
			if err != nil || res.RangesAdded != len(specA.Directories[0].Set) || res.Verified != specA.Directories[0].Shards() {
				b.Fatalf("%+v %v", res, err)
			}
			m.Close()
			deleteTables(b, ns)
			nft += nftFile(b, ns, script)
		}
		report(b, ours, nft)
	})
	b.Run("replace", func(b *testing.B) {
		scriptA, scriptB := writeScript(b, rsA, true), writeScript(b, rsB, true)
		m := open(b, ns)
		deleteTables(b, ns)
		if _, err := m.Apply(rsA); err != nil {
			b.Fatal(err)
		}
		var ours, nft time.Duration
		cur := 0
		for b.Loop() {
			next, script := rsB, scriptB
			if cur == 1 {
				next, script = rsA, scriptA
			}
			t0 := time.Now()
			res, err := m.Apply(next)
			ours += time.Since(t0)
			if err != nil || res.ReadKernel || res.RangesAdded < 99000 {
				b.Fatalf("%+v %v", res, err)
			}
			// nft replaces the table holding the other set, as we just did
			prev := scriptA
			if cur == 1 {
				prev = scriptB
			}
			nftFile(b, ns, prev)
			nft += nftFile(b, ns, script)
			m.Forget()
			if _, err := m.Apply(next); err != nil { // re-sync our cache (not timed)
				b.Fatal(err)
			}
			cur = 1 - cur
		}
		report(b, ours, nft)
	})
}

func report(b *testing.B, ours, nft time.Duration) {
	n := float64(b.N)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(float64(ours.Microseconds())/1000/n, "ms/apply")
	b.ReportMetric(float64(nft.Microseconds())/1000/n, "ms/nft-f")
	b.ReportMetric(float64(ours)/float64(nft), "ratio")
}

// BenchmarkChangeOneRule100k measures an IP access control change of one
// range while 100,000 are loaded: one Apply of the whole ruleset by a warm
// Manager (the diff against its copy, checked by the nftables generation id,
// turns it into a 2-element transaction). The baseline is `nft delete element`
// / `nft add element` of that one range in the same run.
func BenchmarkChangeOneRule100k(b *testing.B) {
	testnet.RequireRoot(b)
	ns := testnet.New(b, "bench1")
	spec := testSpec(20)
	full := randomSet(100000, 21)
	spec.Directories[0].Set = full
	rsFull := mustCompile(b, spec)
	victim := full[50000]
	spec.Directories[0].Set = cidrset.Subtract(full, cidrset.Set{victim})
	rsLess := mustCompile(b, spec)
	m := open(b, ns)
	if _, err := m.Apply(rsFull); err != nil {
		b.Fatal(err)
	}
	// nft works on a copy in its own namespace: its changes would (rightly)
	// invalidate our Manager's copy in ns.
	nsNft := testnet.New(b, "bench1nft")
	mn := open(b, nsNft)
	if _, err := mn.Apply(rsFull); err != nil {
		b.Fatal(err)
	}
	var set string
	for i, sh := range (DirectoryACL{ID: spec.Directories[0].ID, Restricted: true, Set: full}).ShardSets() {
		if _, found := slices.BinarySearchFunc(sh, victim, func(a, b cidrset.Range) int { return cmp.Compare(a.First, b.First) }); found {
			set = spec.Directories[0].SetNames()[i]
		}
	}
	dir := b.TempDir()
	del, add := filepath.Join(dir, "del.nft"), filepath.Join(dir, "add.nft")
	os.WriteFile(del, []byte("delete element inet deskhost "+set+" { "+victim.String()+" }\n"), 0o600)
	os.WriteFile(add, []byte("add element inet deskhost "+set+" { "+victim.String()+" }\n"), 0o600)
	var ours, nft time.Duration
	for i := 0; b.Loop(); i++ {
		next := rsLess
		if i%2 == 1 {
			next = rsFull
		}
		t0 := time.Now()
		res, err := m.Apply(next)
		ours += time.Since(t0)
		if err != nil || res.ReadKernel || res.RangesAdded+res.RangesRemoved != 1 || res.ChainsRewritten != 0 {
			b.Fatalf("%+v %v", res, err)
		}
		// nft: the same single change and back (timing the first of them)
		if i%2 == 0 {
			nft += nftFile(b, nsNft, del)
			nftFile(b, nsNft, add)
		}
	}
	n := float64(b.N)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(float64(ours.Microseconds())/1000/n, "ms/apply")
	b.ReportMetric(float64(nft.Microseconds())/1000/(n/2+0.5), "ms/nft-element")
	b.ReportMetric(float64(ours)/float64(nft)*((n/2+0.5)/n), "ratio")
}
