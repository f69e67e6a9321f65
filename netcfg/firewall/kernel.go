package firewall

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/mdlayher/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"deskhost/internal/nsutil"
	"deskhost/netcfg/cidrset"
)

const (
	// elemsPerMessage bounds the elements of one NEWSETELEM/DELSETELEM
	// message: google/nftables numbers elements and sizes the element list
	// in 16-bit netlink fields, so one call with 100,000 elements silently
	// loses most of them. 1024 elements are ~25 KiB, well under 64 KiB.
	elemsPerMessage = 1024
	// sockBuf is forced (SO_SNDBUFFORCE) on the netlink socket: a batch of
	// 100,000 ranges is ~5 MiB and must fit one sendmsg.
	sockBuf = 256 << 20
	// DefaultVerifyThreshold: after adding at least this many ranges to a
	// set, Apply reads the set back and compares it with what was intended.
	DefaultVerifyThreshold = 512
)

// Manager applies Rulesets to the kernel of one network namespace. It keeps
// the last applied ruleset and the nftables generation id after its commit;
// when the generation is unchanged at the next Apply, nobody has touched
// nftables since, and the diff is computed against that copy without reading
// the kernel (this is what makes a one-rule change on a 100,000-element set a
// millisecond affair). Otherwise it reads netcfg's tables back first.
// A Manager is not safe for concurrent use.
type Manager struct {
	ns   netns.NsHandle
	log  *slog.Logger
	conn *nftables.Conn
	nl   *netlink.Conn // for NFT_MSG_GETGEN

	applied    *Ruleset
	appliedGen uint32

	// VerifyThreshold: see DefaultVerifyThreshold.
	VerifyThreshold int
	// VerifyFull reads every verified set back completely instead of
	// probing the first and last element of every message sent. A full
	// read of a 100,000-range set costs this kernel over a second (its
	// rbtree dump restarts from the first element for every message), so
	// Apply probes by default and Check reads everything.
	VerifyFull bool
}

// ApplyResult says what an Apply did.
type ApplyResult struct {
	Changed         bool
	ReadKernel      bool // the kernel state was read (cache not usable)
	TablesCreated   int
	TablesDeleted   int
	ChainsCreated   int
	ChainsRewritten int
	ChainsDeleted   int
	SetsCreated     int
	SetsDeleted     int
	RangesAdded     int
	RangesRemoved   int
	Messages        int
	Verified        int // sets read back and compared
	Duration        time.Duration
	// ShrunkSets lists sets from which ranges were removed (or that were
	// deleted or recreated): connections they allowed may need dropping.
	ShrunkSets []string
	// Chains lists the chains created, rewritten or deleted.
	Chains []string
}

func forceBuffers(c *netlink.Conn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		if e := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, sockBuf); e != nil {
			serr = fmt.Errorf("SO_SNDBUFFORCE: %w", e)
			return
		}
		if e := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 16<<20); e != nil {
			serr = fmt.Errorf("SO_RCVBUFFORCE: %w", e)
		}
	})
	if err != nil {
		return err
	}
	return serr
}

// Open connects to nftables in ns (netns.None() for the current namespace).
func Open(ns netns.NsHandle, log *slog.Logger) (*Manager, error) {
	if log == nil {
		log = slog.Default()
	}
	conn, err := nftables.New(nftables.AsLasting(), nftables.WithNetNSFd(nsutil.FD(ns)), nftables.WithSockOptions(forceBuffers))
	if err != nil {
		return nil, fmt.Errorf("firewall: open nftables netlink: %w", err)
	}
	nl, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: nsutil.FD(ns)})
	if err != nil {
		conn.CloseLasting()
		return nil, fmt.Errorf("firewall: open netfilter netlink: %w", err)
	}
	return &Manager{ns: ns, log: log, conn: conn, nl: nl, VerifyThreshold: DefaultVerifyThreshold}, nil
}

// Close releases the netlink sockets.
func (m *Manager) Close() error {
	return errors.Join(m.conn.CloseLasting(), m.nl.Close())
}

// Generation returns the nftables ruleset generation id, which the kernel
// bumps on every committed change by anyone.
func (m *Manager) Generation() (uint32, error) {
	req := netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETGEN), Flags: netlink.Request},
		Data:   []byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, 0, 0},
	}
	msgs, err := m.nl.Execute(req)
	if err != nil {
		return 0, fmt.Errorf("firewall: get nftables generation: %w", err)
	}
	for _, msg := range msgs {
		if len(msg.Data) < 4 {
			continue
		}
		ad, err := netlink.NewAttributeDecoder(msg.Data[4:])
		if err != nil {
			return 0, fmt.Errorf("firewall: decode generation: %w", err)
		}
		ad.ByteOrder = binary.BigEndian
		for ad.Next() {
			if ad.Type() == unix.NFTA_GEN_ID {
				return ad.Uint32(), nil
			}
		}
	}
	return 0, errors.New("firewall: no generation id in reply")
}

// Forget drops the cached applied state: the next Apply reads the kernel.
func (m *Manager) Forget() { m.applied = nil }

// Applied returns the last applied ruleset (nil if unknown).
func (m *Manager) Applied() *Ruleset { return m.applied }

const setDef = "ipv4_addr interval"

// ReadBack reads netcfg's tables (and nothing else) from the kernel.
func (m *Manager) ReadBack() (*Ruleset, error) {
	tables, err := m.conn.ListTables()
	if err != nil {
		return nil, fmt.Errorf("firewall: list tables: %w", err)
	}
	rs := &Ruleset{}
	var chains []*nftables.Chain
	chainsListed := false
	for _, kt := range tables {
		if kt.Name != TableName || (kt.Family != inet && kt.Family != bridge) {
			continue
		}
		if !chainsListed {
			if chains, err = m.conn.ListChains(); err != nil {
				return nil, fmt.Errorf("firewall: list chains: %w", err)
			}
			chainsListed = true
		}
		t := &Table{Family: kt.Family, Name: kt.Name}
		sets, err := m.conn.GetSets(kt)
		if err != nil {
			return nil, fmt.Errorf("firewall: list sets of %s %s: %w", FamilyName(kt.Family), kt.Name, err)
		}
		for _, ks := range sets {
			s, err := m.readSet(kt, ks)
			if err != nil {
				return nil, err
			}
			t.Sets = append(t.Sets, s)
		}
		for _, kc := range chains {
			if kc.Table.Name != kt.Name || kc.Table.Family != kt.Family {
				continue
			}
			c := &Chain{Name: kc.Name}
			if kc.Hooknum != nil {
				c.Hook = &Hook{Type: kc.Type, Num: *kc.Hooknum}
				if kc.Priority != nil {
					c.Hook.Priority = int32(*kc.Priority)
				}
				if kc.Policy != nil {
					c.Hook.Policy = *kc.Policy
				}
			}
			rules, err := m.conn.GetRules(kt, kc)
			if err != nil {
				return nil, fmt.Errorf("firewall: list rules of chain %s: %w", kc.Name, err)
			}
			for _, kr := range rules {
				comment, _ := userdata.GetString(kr.UserData, userdata.TypeComment)
				c.Rules = append(c.Rules, &Rule{Exprs: kr.Exprs, Text: comment, kernel: true})
			}
			t.Chains = append(t.Chains, c)
		}
		rs.Tables = append(rs.Tables, t)
	}
	return rs, nil
}

// readSet reads a set; a set that is not an IPv4 interval set gets a Def
// that differs from ours, so that Apply recreates it.
func (m *Manager) readSet(kt *nftables.Table, ks *nftables.Set) (*Set, error) {
	s := &Set{Name: ks.Name}
	if ks.KeyType.Name != nftables.TypeIPAddr.Name || !ks.Interval || ks.IsMap {
		s.def = fmt.Sprintf("%s interval=%v map=%v", ks.KeyType.Name, ks.Interval, ks.IsMap)
		return s, nil
	}
	r, err := dumpRanges(m.ns, uint8(kt.Family), kt.Name, ks.Name)
	if err != nil {
		return nil, fmt.Errorf("firewall: set %s: %w", ks.Name, err)
	}
	s.Ranges = r
	return s, nil
}

func (s *Set) definition() string {
	if s.def != "" {
		return s.def
	}
	return setDef
}

// elementsToRanges turns interval set elements (start keys, and end keys one
// past the last address) back into ranges.
func elementsToRanges(els []nftables.SetElement) (cidrset.Set, error) {
	evs := make([]elemEvent, 0, len(els))
	for _, e := range els {
		if len(e.Key) != 4 {
			return nil, fmt.Errorf("element key of %d bytes", len(e.Key))
		}
		evs = append(evs, elemEvent{binary.BigEndian.Uint32(e.Key), e.IntervalEnd})
	}
	return eventsToRanges(evs)
}

type elemEvent struct {
	k   uint32
	end bool
}

func eventsToRanges(evs []elemEvent) (cidrset.Set, error) {
	slices.SortFunc(evs, func(a, b elemEvent) int {
		if a.k != b.k {
			if a.k < b.k {
				return -1
			}
			return 1
		}
		switch {
		case a.end == b.end:
			return 0
		case a.end:
			return -1
		}
		return 1
	})
	out := make([]cidrset.Range, 0, len(evs)/2+1)
	open, have := uint32(0), false
	for _, e := range evs {
		switch {
		case e.end && have:
			if e.k == 0 {
				return nil, errors.New("interval ends at 0.0.0.0")
			}
			out = append(out, cidrset.Range{First: open, Last: e.k - 1})
			have = false
		case e.end: // nft's leading "0.0.0.0 end" marker, or a stray end
		case have:
			return nil, fmt.Errorf("interval starting at %s has no end before %s", cidrset.U32ToAddr(open), cidrset.U32ToAddr(e.k))
		default:
			open, have = e.k, true
		}
	}
	if have {
		out = append(out, cidrset.Range{First: open, Last: ^uint32(0)})
	}
	return cidrset.FromRanges(out), nil
}

func rangeElems(rs []cidrset.Range) []nftables.SetElement {
	out := make([]nftables.SetElement, 0, 2*len(rs))
	for _, r := range rs {
		out = append(out, nftables.SetElement{Key: binary.BigEndian.AppendUint32(nil, r.First)})
		if r.Last != ^uint32(0) {
			out = append(out, nftables.SetElement{Key: binary.BigEndian.AppendUint32(nil, r.Last+1), IntervalEnd: true})
		}
	}
	return out
}

// Apply makes the kernel hold want, in one transaction.
func (m *Manager) Apply(want *Ruleset) (ApplyResult, error) {
	start := time.Now()
	var res ApplyResult
	gen, err := m.Generation()
	if err != nil {
		return res, err
	}
	cur := m.applied
	if cur == nil || gen != m.appliedGen {
		res.ReadKernel = true
		if cur, err = m.ReadBack(); err != nil {
			return res, err
		}
	}
	b := &batch{m: m, res: &res}
	if err := b.plan(cur, want); err != nil {
		return res, err
	}
	if b.empty() {
		m.applied, m.appliedGen = want, gen
		res.Duration = time.Since(start)
		return res, nil
	}
	res.Changed = true
	if err := b.run(); err != nil {
		m.applied = nil
		return res, fmt.Errorf("firewall: commit nftables transaction (%d messages; nothing was changed): %w", b.messages, err)
	}
	after, gerr := m.Generation()
	if gerr == nil && after == gen+1 {
		m.applied, m.appliedGen = want, after
	} else {
		m.applied = nil // somebody else committed too: read back next time
	}
	if err := m.verify(want, b.verifySets); err != nil {
		m.applied = nil
		return res, err
	}
	res.Verified = len(b.verifySets)
	res.Duration = time.Since(start)
	m.log.Debug("nftables applied", "messages", res.Messages, "chainsRewritten", res.ChainsRewritten,
		"chainsCreated", res.ChainsCreated, "rangesAdded", res.RangesAdded, "rangesRemoved", res.RangesRemoved,
		"readKernel", res.ReadKernel, "duration", res.Duration)
	return res, nil
}

// verify reads back what was added to large sets: the first and last
// element of every message (where a truncated message would lose them), or
// the whole set with VerifyFull.
func (m *Manager) verify(want *Ruleset, sets []setRef) error {
	for _, ref := range sets {
		t := want.Table(ref.fam)
		if m.VerifyFull {
			ws := t.Set(ref.name)
			got, err := dumpRanges(m.ns, uint8(t.Family), t.Name, ref.name)
			if err != nil {
				return fmt.Errorf("firewall: verify set %s: %w", ref.name, err)
			}
			if !cidrset.Equal(got, ws.Ranges) {
				return fmt.Errorf("firewall: verify set %s: kernel holds %d ranges, intended %d", ref.name, len(got), len(ws.Ranges))
			}
			continue
		}
		if err := probeElements(m.ns, uint8(t.Family), t.Name, ref.name, ref.probe); err != nil {
			return fmt.Errorf("firewall: verify set %s: %w", ref.name, err)
		}
	}
	return nil
}

type setRef struct {
	fam   nftables.TableFamily
	name  string
	probe []elemEvent // elements to look up after the commit
}

// batch is the plan of one transaction, executed in a safe order.
type batch struct {
	m        *Manager
	res      *ApplyResult
	messages int

	delTables  []*nftables.Table
	addTables  []*nftables.Table
	addSets    []*nftables.Set // new, or recreated after delSets
	addChains  []*nftables.Chain
	flush      []*nftables.Chain
	delChains  []*nftables.Chain
	delSets    []*nftables.Set
	recreate   []*nftables.Set
	flushSets  []*nftables.Set
	delElems   []elemOp
	addElems   []elemOp
	addRules   []*nftables.Rule
	verifySets []setRef
}

type elemOp struct {
	set   *nftables.Set
	elems []nftables.SetElement
}

func (b *batch) empty() bool {
	return len(b.delTables)+len(b.addTables)+len(b.addSets)+len(b.addChains)+len(b.flush)+len(b.delChains)+
		len(b.delSets)+len(b.recreate)+len(b.flushSets)+len(b.delElems)+len(b.addElems)+len(b.addRules) == 0
}

func rulesEqual(a, b []*Rule) bool {
	return slices.EqualFunc(a, b, (*Rule).Same)
}

func hooksEqual(a, b *Hook) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Type == b.Type && a.Num == b.Num && a.Priority == b.Priority
}

// referencedSets lists the sets a chain's rules look up.
func referencedSets(c *Chain) []string {
	var out []string
	for _, r := range c.Rules {
		for _, e := range r.Exprs {
			if l, ok := e.(*expr.Lookup); ok {
				out = append(out, l.SetName)
			}
		}
	}
	return out
}

func (b *batch) plan(cur, want *Ruleset) error {
	for _, ct := range cur.Tables {
		if want.Table(ct.Family) == nil {
			b.delTables = append(b.delTables, &nftables.Table{Name: ct.Name, Family: ct.Family})
			b.res.TablesDeleted++
		}
	}
	for _, wt := range want.Tables {
		ct := cur.Table(wt.Family)
		if ct != nil && !b.compatible(ct, wt) {
			// A base chain changed hook or kind, or a chain became base:
			// replace the whole table, still in this one transaction.
			b.delTables = append(b.delTables, &nftables.Table{Name: ct.Name, Family: ct.Family})
			b.res.TablesDeleted++
			ct = nil
		}
		b.planTable(ct, wt)
	}
	return nil
}

// compatible reports whether ct can be changed into wt chain by chain.
func (b *batch) compatible(ct, wt *Table) bool {
	for _, wc := range wt.Chains {
		if cc := ct.Chain(wc.Name); cc != nil && !hooksEqual(cc.Hook, wc.Hook) {
			return false
		}
	}
	return true
}

func (b *batch) planTable(ct, wt *Table) {
	tbl := &nftables.Table{Name: wt.Name, Family: wt.Family}
	if ct == nil {
		b.addTables = append(b.addTables, tbl)
		b.res.TablesCreated++
		ct = &Table{Family: wt.Family, Name: wt.Name}
	}
	kset := func(name string) *nftables.Set {
		return &nftables.Set{Table: tbl, Name: name, KeyType: nftables.TypeIPAddr, Interval: true}
	}
	kchain := func(c *Chain) *nftables.Chain {
		kc := &nftables.Chain{Name: c.Name, Table: tbl}
		if c.Hook != nil {
			num, prio, pol := c.Hook.Num, nftables.ChainPriority(c.Hook.Priority), c.Hook.Policy
			kc.Hooknum, kc.Priority, kc.Policy, kc.Type = &num, &prio, &pol, c.Hook.Type
		}
		return kc
	}

	// Sets.
	dropped := map[string]bool{} // sets deleted or recreated: chains using them are rewritten
	for _, ws := range wt.Sets {
		cs := ct.Set(ws.Name)
		ks := kset(ws.Name)
		switch {
		case cs == nil:
			b.addSets = append(b.addSets, ks)
			b.res.SetsCreated++
			b.addRanges(ks, ws.Ranges)
		case cs.definition() != ws.definition():
			dropped[ws.Name] = true
			b.delSets = append(b.delSets, kset(ws.Name))
			b.recreate = append(b.recreate, ks)
			b.res.SetsCreated++
			b.res.SetsDeleted++
			b.res.ShrunkSets = append(b.res.ShrunkSets, ws.Name)
			b.addRanges(ks, ws.Ranges)
		default:
			if cidrset.Equal(cs.Ranges, ws.Ranges) {
				continue
			}
			removed, added := cidrset.Diff(cs.Ranges, ws.Ranges)
			if len(removed) >= elemsPerMessage && len(removed) >= len(cs.Ranges)/2 {
				// Most of the set goes: flushing it and loading the new
				// content is cheaper than deleting element by element.
				b.flushSets = append(b.flushSets, ks)
				b.res.RangesRemoved += len(cs.Ranges)
				b.res.ShrunkSets = append(b.res.ShrunkSets, ws.Name)
				b.addRanges(ks, ws.Ranges)
				continue
			}
			if len(removed) > 0 {
				b.delElems = appendChunks(b.delElems, ks, rangeElems(removed))
				b.res.RangesRemoved += len(removed)
				b.res.ShrunkSets = append(b.res.ShrunkSets, ws.Name)
			}
			b.addRanges(ks, added)
		}
	}
	for _, cs := range ct.Sets {
		if wt.Set(cs.Name) == nil {
			dropped[cs.Name] = true
			b.delSets = append(b.delSets, kset(cs.Name))
			b.res.SetsDeleted++
			b.res.ShrunkSets = append(b.res.ShrunkSets, cs.Name)
		}
	}

	// Chains.
	for _, wc := range wt.Chains {
		cc := ct.Chain(wc.Name)
		kc := kchain(wc)
		switch {
		case cc == nil:
			b.addChains = append(b.addChains, kc)
			b.res.ChainsCreated++
			b.res.Chains = append(b.res.Chains, wc.Name)
		default:
			if wc.Hook != nil && cc.Hook.Policy != wc.Hook.Policy {
				b.addChains = append(b.addChains, kc) // NEWCHAIN updates the policy
			}
			usesDropped := false
			for _, s := range referencedSets(cc) {
				usesDropped = usesDropped || dropped[s]
			}
			if rulesEqual(cc.Rules, wc.Rules) && !usesDropped {
				continue
			}
			b.flush = append(b.flush, kc)
			b.res.ChainsRewritten++
			b.res.Chains = append(b.res.Chains, wc.Name)
		}
		for _, r := range wc.Rules {
			b.addRules = append(b.addRules, &nftables.Rule{Table: tbl, Chain: kc, Exprs: r.Exprs, UserData: r.UserData()})
		}
	}
	// Rules of unchanged chains were queued above; keep only those of new or
	// rewritten chains.
	keep := map[string]bool{}
	for _, c := range b.addChains {
		if c.Table == tbl && ct.Chain(c.Name) == nil {
			keep[c.Name] = true
		}
	}
	for _, c := range b.flush {
		if c.Table == tbl {
			keep[c.Name] = true
		}
	}
	b.addRules = slices.DeleteFunc(b.addRules, func(r *nftables.Rule) bool { return r.Table == tbl && !keep[r.Chain.Name] })

	for _, cc := range ct.Chains {
		if wt.Chain(cc.Name) == nil {
			kc := &nftables.Chain{Name: cc.Name, Table: tbl}
			b.flush = append(b.flush, kc)
			b.delChains = append(b.delChains, kc)
			b.res.ChainsDeleted++
			b.res.Chains = append(b.res.Chains, cc.Name)
		}
	}
}

func (b *batch) addRanges(ks *nftables.Set, rs []cidrset.Range) {
	if len(rs) == 0 {
		return
	}
	first := len(b.addElems)
	b.addElems = appendChunks(b.addElems, ks, rangeElems(rs))
	b.res.RangesAdded += len(rs)
	if len(rs) >= b.m.VerifyThreshold {
		ref := setRef{fam: ks.Table.Family, name: ks.Name}
		for _, op := range b.addElems[first:] {
			for _, e := range []nftables.SetElement{op.elems[0], op.elems[len(op.elems)-1]} {
				ref.probe = append(ref.probe, elemEvent{binary.BigEndian.Uint32(e.Key), e.IntervalEnd})
			}
		}
		b.verifySets = append(b.verifySets, ref)
	}
}

func appendChunks(ops []elemOp, s *nftables.Set, els []nftables.SetElement) []elemOp {
	for len(els) > 0 {
		n := min(len(els), elemsPerMessage)
		// never split an interval's start from its end
		if n < len(els) && els[n].IntervalEnd {
			n++
		}
		ops = append(ops, elemOp{s, els[:n]})
		els = els[n:]
	}
	return ops
}

// run queues the plan in a safe order and commits it as one transaction.
func (b *batch) run() error {
	c := b.m.conn
	n := 0
	for _, t := range b.delTables {
		c.DelTable(t)
		n++
	}
	for _, t := range b.addTables {
		c.AddTable(t)
		n++
	}
	for _, s := range b.addSets {
		if err := c.AddSet(s, nil); err != nil {
			return fmt.Errorf("add set %s: %w", s.Name, err)
		}
		n++
	}
	for _, ch := range b.addChains {
		c.AddChain(ch)
		n++
	}
	for _, ch := range b.flush {
		c.FlushChain(ch)
		n++
	}
	for _, ch := range b.delChains {
		c.DelChain(ch)
		n++
	}
	for _, s := range b.delSets {
		c.DelSet(s)
		n++
	}
	for _, s := range b.recreate {
		if err := c.AddSet(s, nil); err != nil {
			return fmt.Errorf("add set %s: %w", s.Name, err)
		}
		n++
	}
	for _, s := range b.flushSets {
		c.FlushSet(s)
		n++
	}
	for _, op := range b.delElems {
		if err := c.SetDeleteElements(op.set, op.elems); err != nil {
			return fmt.Errorf("delete elements of %s: %w", op.set.Name, err)
		}
		n++
	}
	for _, op := range b.addElems {
		if err := c.SetAddElements(op.set, op.elems); err != nil {
			return fmt.Errorf("add elements to %s: %w", op.set.Name, err)
		}
		n++
	}
	for _, r := range b.addRules {
		c.AddRule(r)
		n++
	}
	b.messages = n
	b.res.Messages = n
	return c.Flush()
}
