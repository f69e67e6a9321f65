package firewall

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/google/nftables"

	"deskhost/netcfg/cidrset"
	"deskhost/netcfg/config"
	"deskhost/netcfg/internal/testnet"
	"deskhost/netcfg/taps"
)

func testSpec(nVMs int) *Spec {
	s := &Spec{
		MgmtNIC: "eth0", PrimaryBridge: "br-primary", PrimaryUplink: "eth1", VMBridge: "br-mgmt",
		BrokerPort: 443, AdminPort: 8443, PrimaryDHCP: true,
		Directories: []DirectoryACL{
			{ID: "d-1111111111", Restricted: true, Set: cidrset.FromPrefixes([]netip.Prefix{netip.MustParsePrefix("10.1.0.0/24"), netip.MustParsePrefix("10.2.0.7/32")})},
			{ID: "d-2222222222", Restricted: true}, // associated group without rules: deny all
		},
	}
	for i := range nVMs {
		id := fmt.Sprintf("ws-%010d", i)
		m, p, _ := taps.Names(id)
		mm, pm, _ := taps.MACs(id)
		s.VMs = append(s.VMs, VM{
			ID: id, Port: uint16(i + 1), MgmtTap: m, PrimaryTap: p, MgmtMAC: mm, PrimaryMAC: pm,
			MgmtIP: netip.AddrFrom4([4]byte{198, 19, 0, byte(10 + i)}),
			Egress: []config.SGRuleModel{{Proto: config.ProtoTCP, From: 389, To: 389, CIDR: netip.MustParsePrefix("10.0.1.10/32")}},
			Ingress: []config.SGRuleModel{{Proto: config.ProtoTCP, From: 3389, To: 3389, CIDR: netip.MustParsePrefix("10.0.0.0/16")},
				{Proto: config.ProtoICMP, CIDR: netip.MustParsePrefix("10.0.0.0/16")}},
		})
	}
	return s
}

func mustCompile(t testing.TB, s *Spec) *Ruleset {
	t.Helper()
	rs, err := Compile(s)
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

func open(t testing.TB, ns *testnet.NS) *Manager {
	t.Helper()
	m, err := Open(ns.Handle, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func diffRulesets(want, got *Ruleset) []string { return Drift(want, got) }

const otherTable = `table inet other {
	set s {
		type ipv4_addr
		elements = { 1.2.3.4 }
	}
	chain c {
		type filter hook input priority 10; policy accept;
		ip saddr @s counter accept
	}
}
table bridge deskhost_not_ours {
	chain c {
	}
}
`

func TestApplyReadBackIdempotent(t *testing.T) {
	testnet.RequireRoot(t)
	ns := testnet.New(t, "fw")
	if out, err := ns.Exec([]byte(otherTable), "nft", "-f", "-"); err != nil {
		t.Fatalf("nft: %v %s", err, out)
	}
	before, _ := ns.Exec(nil, "nft", "list", "table", "inet", "other")
	m := open(t, ns)
	want := mustCompile(t, testSpec(3))

	res, err := m.Apply(want)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Changed || res.TablesCreated != 2 || res.RangesAdded != 2 {
		t.Fatalf("first apply: %+v", res)
	}
	got, err := m.ReadBack()
	if err != nil {
		t.Fatal(err)
	}
	if d := diffRulesets(want, got); len(d) > 0 {
		t.Fatalf("read back differs from intent:\n%s", strings.Join(d, "\n"))
	}
	// Read back through nft's own JSON, too.
	js, err := ns.Exec(nil, "nft", "-j", "list", "ruleset")
	if err != nil {
		t.Fatalf("nft -j: %v %s", err, js)
	}
	checkNftJSON(t, js, want)

	// Other tables untouched.
	after, _ := ns.Exec(nil, "nft", "list", "table", "inet", "other")
	if before != after {
		t.Fatalf("table inet other changed:\n%s\n---\n%s", before, after)
	}
	if out, err := ns.Exec(nil, "nft", "list", "table", "bridge", "deskhost_not_ours"); err != nil {
		t.Fatalf("foreign bridge table gone: %v %s", err, out)
	}

	// Idempotent: a second apply (new Manager: no cache) sends nothing and
	// the generation stays.
	gen, _ := m.Generation()
	m2 := open(t, ns)
	res, err = m2.Apply(mustCompile(t, testSpec(3)))
	if err != nil || res.Changed || !res.ReadKernel {
		t.Fatalf("second apply: %+v %v", res, err)
	}
	res, err = m2.Apply(mustCompile(t, testSpec(3)))
	if err != nil || res.Changed || res.ReadKernel {
		t.Fatalf("third apply (cached): %+v %v", res, err)
	}
	if g2, _ := m.Generation(); g2 != gen {
		t.Fatalf("generation moved %d -> %d on a no-op apply", gen, g2)
	}

	// Drop a VM and change an ACL: only the affected chains and elements move.
	s := testSpec(2)
	s.Directories[0].Set = cidrset.FromPrefixes([]netip.Prefix{netip.MustParsePrefix("10.1.0.0/24")})
	want2 := mustCompile(t, s)
	res, err = m2.Apply(want2)
	if err != nil {
		t.Fatal(err)
	}
	if res.ChainsDeleted != 6 || res.RangesRemoved != 1 || res.RangesAdded != 0 || res.TablesCreated != 0 || len(res.ShrunkSets) != 1 {
		t.Fatalf("incremental apply: %+v", res)
	}
	got, _ = m2.ReadBack()
	if d := diffRulesets(want2, got); len(d) > 0 {
		t.Fatalf("after incremental apply:\n%s", strings.Join(d, "\n"))
	}

	// Someone edits our table behind our back: the generation moves, the next
	// apply reads the kernel and repairs exactly that.
	if out, err := ns.Exec(nil, "nft", "flush", "chain", "inet", "deskhost", "host_mgmt"); err != nil {
		t.Fatal(err, out)
	}
	if out, err := ns.Exec(nil, "nft", "add", "element", "inet", "deskhost", "acl_d_1111111111", "{", "192.0.2.1", "}"); err != nil {
		t.Fatal(err, out)
	}
	res, err = m2.Apply(want2)
	if err != nil || !res.ReadKernel || res.ChainsRewritten != 1 || res.RangesRemoved != 1 {
		t.Fatalf("repair: %+v %v", res, err)
	}
	got, _ = m2.ReadBack()
	if d := diffRulesets(want2, got); len(d) > 0 {
		t.Fatalf("after repair:\n%s", strings.Join(d, "\n"))
	}
	after, _ = ns.Exec(nil, "nft", "list", "table", "inet", "other")
	if before != after {
		t.Fatal("table inet other changed")
	}
}

// checkNftJSON checks `nft -j list ruleset`: our chains with the right number
// of rules and our sets with the right elements.
func checkNftJSON(t *testing.T, js string, want *Ruleset) {
	t.Helper()
	var doc struct {
		Nftables []map[string]json.RawMessage `json:"nftables"`
	}
	if err := json.Unmarshal([]byte(js), &doc); err != nil {
		t.Fatal(err)
	}
	rules := map[string]int{}
	chains := map[string]bool{}
	elems := map[string]int{}
	for _, obj := range doc.Nftables {
		if raw, ok := obj["rule"]; ok {
			var r struct{ Family, Table, Chain string }
			json.Unmarshal(raw, &r)
			if r.Table == TableName {
				rules[r.Family+"/"+r.Chain]++
			}
		}
		if raw, ok := obj["chain"]; ok {
			var c struct{ Family, Table, Name string }
			json.Unmarshal(raw, &c)
			if c.Table == TableName {
				chains[c.Family+"/"+c.Name] = true
			}
		}
		if raw, ok := obj["set"]; ok {
			var s struct {
				Family, Table, Name string
				Elem                []json.RawMessage `json:"elem"`
			}
			json.Unmarshal(raw, &s)
			if s.Table == TableName {
				elems[s.Family+"/"+s.Name] = len(s.Elem)
			}
		}
	}
	for _, tb := range want.Tables {
		fam := FamilyName(tb.Family)
		for _, c := range tb.Chains {
			if !chains[fam+"/"+c.Name] || rules[fam+"/"+c.Name] != len(c.Rules) {
				t.Errorf("nft -j: chain %s/%s present=%v rules=%d, want %d", fam, c.Name, chains[fam+"/"+c.Name], rules[fam+"/"+c.Name], len(c.Rules))
			}
		}
		for _, s := range tb.Sets {
			if elems[fam+"/"+s.Name] != len(s.Ranges) {
				t.Errorf("nft -j: set %s has %d elements, want %d", s.Name, elems[fam+"/"+s.Name], len(s.Ranges))
			}
		}
		if len(chains) == 0 {
			t.Error("nft -j shows no deskhost chains")
		}
	}
}

// TestFailedApplyChangesNothing: a transaction the kernel rejects leaves the
// ruleset exactly as it was (one transaction, all or nothing).
func TestFailedApplyChangesNothing(t *testing.T) {
	testnet.RequireRoot(t)
	ns := testnet.New(t, "fwfail")
	m := open(t, ns)
	if _, err := m.Apply(mustCompile(t, testSpec(2))); err != nil {
		t.Fatal(err)
	}
	before, _ := ns.Exec(nil, "nft", "list", "ruleset")
	bad := mustCompile(t, testSpec(3))
	tb := bad.Table(inet)
	c := tb.Chain("host_mgmt")
	c.Rules = append(c.Rules, rule(inet).jump("no_such_chain"))
	bad.Tables[0].Sets = append(bad.Tables[0].Sets, &Set{Name: "acl_new", Ranges: cidrset.FromPrefixes([]netip.Prefix{netip.MustParsePrefix("10.9.0.0/16")})})
	if _, err := m.Apply(bad); err == nil {
		t.Fatal("apply with a jump to a missing chain succeeded")
	}
	after, _ := ns.Exec(nil, "nft", "list", "ruleset")
	if before != after {
		t.Fatalf("failed apply changed the ruleset:\n%s\n---\n%s", before, after)
	}
	// and the manager recovers
	if _, err := m.Apply(mustCompile(t, testSpec(3))); err != nil {
		t.Fatal(err)
	}
}

func randomSet(n int, seed uint64) cidrset.Set {
	r := rand.New(rand.NewPCG(seed, 7))
	ps := make([]netip.Prefix, 0, n)
	for len(ps) < n {
		ps = append(ps, netip.PrefixFrom(cidrset.U32ToAddr(r.Uint32()&^0xff|uint32(r.IntN(2))*0x10), 28+r.IntN(5)).Masked())
	}
	return cidrset.FromPrefixes(ps)
}

// TestLargeSet loads 100,000 ranges in one transaction and checks the kernel
// holds all of them (google/nftables alone would leave a fraction).
func TestLargeSet(t *testing.T) {
	testnet.RequireRoot(t)
	if testing.Short() {
		t.Skip("short")
	}
	ns := testnet.New(t, "fwbig")
	m := open(t, ns)
	s := testSpec(2)
	s.Directories[0].Set = randomSet(100000, 1)
	if n := len(s.Directories[0].Set); n < 99000 {
		t.Fatalf("only %d ranges generated", n)
	}
	res, err := m.Apply(mustCompile(t, s))
	if err != nil {
		t.Fatal(err)
	}
	if res.Verified != s.Directories[0].Shards() || res.Verified != 32 {
		t.Fatalf("large sets not verified: %+v", res)
	}
	t.Logf("loaded %d ranges in %d messages, %v", res.RangesAdded, res.Messages, res.Duration)
	// Read back with nft itself: every range is there.
	js, err := ns.Exec(nil, "nft", "-j", "list", "table", "inet", TableName)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Nftables []struct {
			Set *struct {
				Name string
				Elem []json.RawMessage `json:"elem"`
			} `json:"set"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal([]byte(js), &doc); err != nil {
		t.Fatal(err)
	}
	n, sets := 0, 0
	for _, o := range doc.Nftables {
		if o.Set != nil && strings.HasPrefix(o.Set.Name, "acl_d_1111111111") {
			n += len(o.Set.Elem)
			sets++
		}
	}
	if n != len(s.Directories[0].Set) || sets != s.Directories[0].Shards() {
		t.Fatalf("nft lists %d elements in %d sets, want %d in %d", n, sets, len(s.Directories[0].Set), s.Directories[0].Shards())
	}
	// change one range: incremental
	s.Directories[0].Set = cidrset.Subtract(s.Directories[0].Set, s.Directories[0].Set[500:501])
	res, err = m.Apply(mustCompile(t, s))
	if err != nil || res.RangesRemoved != 1 || res.RangesAdded != 0 || res.ReadKernel || res.ChainsRewritten != 0 || res.Messages != 1 {
		t.Fatalf("one-range change: %+v %v", res, err)
	}
	got, err := m.ReadBack()
	if err != nil {
		t.Fatal(err)
	}
	var union []cidrset.Set
	for _, name := range s.Directories[0].SetNames() {
		union = append(union, got.Table(inet).Set(name).Ranges)
	}
	if !cidrset.Equal(cidrset.Union(union...), s.Directories[0].Set) {
		t.Fatal("kernel sets differ after one-range change")
	}
}

// TestScriptEquivalent: the `nft -f` script of a ruleset (the benchmark's
// baseline) creates the same chains, rule comments and set contents.
func TestScriptEquivalent(t *testing.T) {
	testnet.RequireRoot(t)
	ns := testnet.New(t, "fwnft")
	want := mustCompile(t, testSpec(2))
	var buf bytes.Buffer
	if err := WriteScript(&buf, want, true); err != nil {
		t.Fatal(err)
	}
	if out, err := ns.Exec(buf.Bytes(), "nft", "-f", "-"); err != nil {
		t.Fatalf("nft -f: %v\n%s\n%s", err, out, buf.String())
	}
	m := open(t, ns)
	got, err := m.ReadBack()
	if err != nil {
		t.Fatal(err)
	}
	for _, wt := range want.Tables {
		gt := got.Table(wt.Family)
		for _, wc := range wt.Chains {
			gc := gt.Chain(wc.Name)
			if gc == nil || len(gc.Rules) != len(wc.Rules) {
				t.Fatalf("chain %s: nft made %v", wc.Name, gc)
			}
			for i := range wc.Rules {
				if gc.Rules[i].Text != commentOf(wc.Rules[i].Text) {
					t.Errorf("chain %s rule %d: comment %q want %q", wc.Name, i, gc.Rules[i].Text, wc.Rules[i].Text)
				}
			}
		}
		for _, ws := range wt.Sets {
			if gs := gt.Set(ws.Name); gs == nil || !cidrset.Equal(gs.Ranges, ws.Ranges) {
				t.Errorf("set %s differs", ws.Name)
			}
		}
	}
	// Our Apply over nft's ruleset converges (rule expressions differ in
	// form, so chains are rewritten once) and is then a no-op.
	if _, err := m.Apply(want); err != nil {
		t.Fatal(err)
	}
	if res, err := m.Apply(want); err != nil || res.Changed {
		t.Fatalf("%+v %v", res, err)
	}
	if _, err := exec.LookPath("nft"); err != nil {
		t.Fatal(err)
	}
}

// TestTrapDetected reproduces the google/nftables trap (one SetAddElements
// call with 20,000 elements: no error, most elements lost) and checks that
// the read-back verification Apply uses catches it, while Apply's own
// chunking loads everything.
func TestTrapDetected(t *testing.T) {
	testnet.RequireRoot(t)
	ns := testnet.New(t, "fwtrap")
	m := open(t, ns)
	tbl := &nftables.Table{Name: "trap", Family: nftables.TableFamilyINet}
	set := &nftables.Set{Table: tbl, Name: "s", KeyType: nftables.TypeIPAddr, Interval: true}
	rs := randomSet(10000, 5)
	m.conn.AddTable(tbl)
	if err := m.conn.AddSet(set, nil); err != nil {
		t.Fatal(err)
	}
	els := rangeElems(rs)
	if err := m.conn.SetAddElements(set, els); err != nil { // one call: the trap
		t.Fatal(err)
	}
	if err := m.conn.Flush(); err != nil {
		t.Fatalf("flush: %v", err)
	}
	got, err := dumpRanges(ns.Handle, uint8(tbl.Family), tbl.Name, set.Name)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("one call with %d elements left %d of %d ranges", len(els), len(got), len(rs))
	if len(got) == len(rs) {
		t.Skip("this google/nftables no longer loses elements")
	}
	last := els[len(els)-1]
	probe := []elemEvent{{binary.BigEndian.Uint32(last.Key), last.IntervalEnd}}
	if err := probeElements(ns.Handle, uint8(tbl.Family), tbl.Name, set.Name, probe); err == nil {
		t.Fatal("probe did not notice the missing element")
	}
	// Apply splits and verifies: everything arrives.
	s := testSpec(1)
	s.Directories[0].Set = rs
	if _, err := m.Apply(mustCompile(t, s)); err != nil {
		t.Fatal(err)
	}
	back, err := m.ReadBack()
	if err != nil {
		t.Fatal(err)
	}
	var union []cidrset.Set
	for _, name := range s.Directories[0].SetNames() {
		union = append(union, back.Table(inet).Set(name).Ranges)
	}
	if !cidrset.Equal(cidrset.Union(union...), rs) {
		t.Fatal("Apply lost ranges")
	}
}

func ruleTexts(c *Chain) []string {
	var out []string
	for _, r := range c.Rules {
		out = append(out, r.Text)
	}
	return out
}

// TestPortRules: what a VM's bridge ports let through, by what netcfg knows
// (the traffic itself is proven in reconcile's TestPrimaryAntiSpoofing), and
// that a change of the primary address or the IPv6 mode rebuilds the VM.
func TestPortRules(t *testing.T) {
	s := testSpec(1)
	v := &s.VMs[0]
	c := NewCompiler()
	rs, err := c.Compile(s)
	if err != nil {
		t.Fatal(err)
	}
	br := rs.Table(bridge)
	pp := strings.Join(ruleTexts(br.Chain(vmChain(v.ID, "p_port"))), "\n")
	// no primary address known: DHCP and ARP probes only
	for _, want := range []string{
		"ether saddr != " + v.PrimaryMAC.String() + " drop",
		"arp saddr ether " + v.PrimaryMAC.String() + " arp saddr ip 0.0.0.0 accept",
		"ether type ip ip saddr 0.0.0.0 ip daddr 255.255.255.255 udp sport 68 udp dport 67 accept",
	} {
		if !strings.Contains(pp, want) {
			t.Errorf("p_port without an address lacks %q:\n%s", want, pp)
		}
	}
	if strings.Contains(pp, "ip6") || strings.Count(pp, "accept") != 2 || !strings.HasSuffix(pp, "\ndrop") {
		t.Errorf("p_port without an address lets more through:\n%s", pp)
	}
	if rx := ruleTexts(br.Chain("primary_rx")); strings.Join(rx, "|") != "ether type ip return|ether type arp return|drop" {
		t.Errorf("primary_rx %q", rx)
	}
	before := br.Chain(vmChain(v.ID, "p_port"))

	v.PrimaryIP = netip.MustParseAddr("10.0.2.11")
	s.PrimaryIPv6 = true
	rs, err = c.Compile(s)
	if err != nil {
		t.Fatal(err)
	}
	br = rs.Table(bridge)
	if br.Chain(vmChain(v.ID, "p_port")) == before {
		t.Fatal("a new primary address did not rebuild the VM's rules")
	}
	pp = strings.Join(ruleTexts(br.Chain(vmChain(v.ID, "p_port"))), "\n")
	for _, want := range []string{
		"arp saddr ether " + v.PrimaryMAC.String() + " arp saddr ip 10.0.2.11 accept",
		"ether type ip ip saddr 10.0.2.11 accept",
		"ether type ip6 accept",
	} {
		if !strings.Contains(pp, want) {
			t.Errorf("p_port lacks %q:\n%s", want, pp)
		}
	}
	if rx := ruleTexts(br.Chain("primary_rx")); strings.Join(rx, "|") != "ether type ip return|ether type arp return|ether type ip6 return|drop" {
		t.Errorf("primary_rx (IPv6 unfiltered) %q", rx)
	}
	if pf := ruleTexts(rs.Table(inet).Chain("primary_fwd")); pf[1] != "meta nfproto ipv6 accept" {
		t.Errorf("primary_fwd (IPv6 unfiltered) %q", pf)
	}
	// the management port never passes IPv6
	if mp := strings.Join(ruleTexts(br.Chain(vmChain(v.ID, "m_port"))), "\n"); strings.Contains(mp, "ip6") {
		t.Errorf("m_port passes IPv6:\n%s", mp)
	}

	v.PrimaryIP = netip.MustParseAddr("fd00::11")
	if _, err := c.Compile(s); err == nil || !strings.Contains(err.Error(), "primary IP") {
		t.Fatalf("IPv6 primary IP accepted: %v", err)
	}
}
