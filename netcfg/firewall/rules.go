package firewall

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// Rule is one nftables rule: the expressions sent to the kernel and the same
// rule in nft syntax (Text, also stored as the rule's comment so that `nft
// list` and `netcfg show` print it). Rules the compiler built are compared by
// Text (the builder renders every input into it); a rule read back from the
// kernel is compared by Key, its canonical expressions plus comment.
type Rule struct {
	Exprs  []expr.Any
	Text   string
	kernel bool   // read back: Text is only the comment
	key    string // computed on demand
}

// Key is the canonical form of the rule (expressions and comment).
func (r *Rule) Key() string {
	if r.key == "" {
		r.key = Canonical(r.Exprs) + " # " + commentOf(r.Text)
	}
	return r.key
}

// Same reports whether two rules are the same rule.
func (r *Rule) Same(o *Rule) bool {
	if r == o {
		return true
	}
	if !r.kernel && !o.kernel {
		return r.Text == o.Text
	}
	return r.Key() == o.Key()
}

// UserData is the rule's comment in libnftnl's TLV format.
func (r *Rule) UserData() []byte {
	return userdata.AppendString(nil, userdata.TypeComment, commentOf(r.Text))
}

// commentOf turns rule text into a comment nft can print and parse back: at
// most 127 bytes, no double quotes (nft strings have no escapes).
func commentOf(s string) string {
	s = strings.ReplaceAll(s, `"`, `'`)
	if len(s) > 127 {
		return s[:124] + "..."
	}
	return s
}

// rb builds a Rule: every method appends the expressions nft would generate
// for the fragment and the fragment's text.
type rb struct {
	fam   nftables.TableFamily
	exprs []expr.Any
	text  []string
	v4    bool  // IPv4 dependency already emitted
	l4p   int16 // transport protocol dependency already emitted (-1: none)
}

func rule(fam nftables.TableFamily) *rb { return &rb{fam: fam, l4p: -1} }

func (b *rb) add(text string, es ...expr.Any) *rb {
	b.exprs = append(b.exprs, es...)
	if text != "" {
		b.text = append(b.text, text)
	}
	return b
}

func ifname(name string) []byte {
	out := make([]byte, unix.IFNAMSIZ)
	copy(out, name)
	return out
}

func ne32(v uint32) []byte {
	b := make([]byte, 4)
	binary.NativeEndian.PutUint32(b, v)
	return b
}

func be16(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }

func (b *rb) iif(name string) *rb {
	return b.add(fmt.Sprintf("iifname %q", name),
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(name)})
}

func (b *rb) oif(name string) *rb {
	return b.add(fmt.Sprintf("oifname %q", name),
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(name)})
}

// Conntrack state bits (nf_conntrack_common.h).
const (
	ctInvalid     = 1
	ctEstablished = 2
	ctRelated     = 4
)

func (b *rb) ctState(mask uint32, text string) *rb {
	return b.add("ct state "+text,
		&expr.Ct{Key: expr.CtKeySTATE, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: ne32(mask), Xor: ne32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ne32(0)})
}

func (b *rb) established() *rb {
	return b.ctState(ctEstablished|ctRelated, "established,related")
}

var protoName = map[uint8]string{unix.IPPROTO_TCP: "tcp", unix.IPPROTO_UDP: "udp", unix.IPPROTO_ICMP: "icmp"}

func (b *rb) l4(proto uint8, text bool) *rb {
	if b.l4p == int16(proto) && !text {
		return b
	}
	b.l4p = int16(proto)
	t := ""
	if text {
		t = "meta l4proto " + protoName[proto]
	}
	return b.add(t,
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}})
}

// port matches the transport source (offset 0) or destination (offset 2) port.
func (b *rb) port(proto uint8, dst bool, lo, hi uint16) *rb {
	off, dir := uint32(0), "sport"
	if dst {
		off, dir = 2, "dport"
	}
	b.l4(proto, false)
	load := &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: off, Len: 2}
	if lo == hi {
		return b.add(fmt.Sprintf("%s %s %d", protoName[proto], dir, lo), load,
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: be16(lo)})
	}
	return b.add(fmt.Sprintf("%s %s %d-%d", protoName[proto], dir, lo, hi), load,
		&expr.Cmp{Op: expr.CmpOpGte, Register: 1, Data: be16(lo)},
		&expr.Cmp{Op: expr.CmpOpLte, Register: 1, Data: be16(hi)})
}

func (b *rb) dport(proto uint8, lo, hi uint16) *rb { return b.port(proto, true, lo, hi) }
func (b *rb) sport(proto uint8, p uint16) *rb      { return b.port(proto, false, p, p) }

// ipv4 restricts to IPv4. inet: meta nfproto (implied by nft's `ip saddr`,
// so no text). bridge: the Ethernet header's type field, as nft generates for
// an explicit `ether type ip`: unlike meta protocol it still reads 0x8100 when
// the kernel has moved an 802.1Q tag into the packet's metadata, so a tagged
// frame never matches an IPv4 rule.
func (b *rb) ipv4() *rb {
	if b.v4 {
		return b
	}
	b.v4 = true
	if b.fam == nftables.TableFamilyBridge {
		return b.etherType(unix.ETH_P_IP, "ip")
	}
	return b.add("",
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}})
}

// only4 restricts to IPv4 where nothing else in the rule implies it (a DHCP
// rule matches DHCPv4, never UDP 67/68 over IPv6).
func (b *rb) only4() *rb {
	if b.v4 {
		return b
	}
	if b.fam == nftables.TableFamilyBridge {
		return b.ipv4()
	}
	b.ipv4()
	b.text = append(b.text, "meta nfproto ipv4")
	return b
}

// nfproto6 matches IPv6 (inet).
func (b *rb) nfproto6() *rb {
	return b.add("meta nfproto ipv6",
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV6}})
}

// ipAddr matches the IPv4 source or destination against a prefix.
func (b *rb) ipAddr(src bool, p netip.Prefix, neq bool) *rb {
	off, dir := uint32(16), "daddr"
	if src {
		off, dir = 12, "saddr"
	}
	b.ipv4()
	op, opText := expr.CmpOpEq, ""
	if neq {
		op, opText = expr.CmpOpNeq, "!= "
	}
	val := p.Addr().String()
	if p.Bits() < 32 {
		val = p.String()
	}
	if p.Bits() == 0 && !neq {
		return b.add("ip " + dir + " 0.0.0.0/0")
	}
	es := []expr.Any{&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: 4}}
	a := p.Masked().Addr().As4()
	if p.Bits() < 32 {
		m := net.CIDRMask(p.Bits(), 32)
		es = append(es, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: []byte(m), Xor: []byte{0, 0, 0, 0}})
	}
	es = append(es, &expr.Cmp{Op: op, Register: 1, Data: a[:]})
	return b.add(fmt.Sprintf("ip %s %s%s", dir, opText, val), es...)
}

func (b *rb) saddr(p netip.Prefix) *rb { return b.ipAddr(true, p, false) }
func (b *rb) daddr(p netip.Prefix) *rb { return b.ipAddr(false, p, false) }

func host(a netip.Addr) netip.Prefix { return netip.PrefixFrom(a, 32) }

func (b *rb) saddrSet(set string) *rb { return b.addrSet(12, "saddr", set) }
func (b *rb) daddrSet(set string) *rb { return b.addrSet(16, "daddr", set) }

func (b *rb) addrSet(off uint32, dir, set string) *rb {
	b.ipv4()
	return b.add("ip "+dir+" @"+set,
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: 4},
		&expr.Lookup{SourceRegister: 1, SetName: set})
}

func (b *rb) etherSaddrNeq(mac net.HardwareAddr) *rb {
	return b.add("ether saddr != "+mac.String(),
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseLLHeader, Offset: 6, Len: 6},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte(mac)})
}

func (b *rb) etherType(t uint16, name string) *rb {
	return b.add("ether type "+name,
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseLLHeader, Offset: 12, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: be16(t)})
}

// arpSender matches a well-formed Ethernet/IPv4 ARP packet (hardware type
// 1, protocol type IPv4, address lengths 6 and 4: the layout the sender
// fields are read at) whose sender MAC and sender IP are the given ones.
func (b *rb) arpSender(mac net.HardwareAddr, a netip.Addr) *rb {
	b.etherType(unix.ETH_P_ARP, "arp")
	v := a.As4()
	return b.add(fmt.Sprintf("arp htype 1 arp ptype ip arp hlen 6 arp plen 4 arp saddr ether %s arp saddr ip %s", mac, a),
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 0, Len: 6},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0, 1, 0x08, 0x00, 6, 4}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 8, Len: 10},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: append(slices.Clone([]byte(mac)), v[:]...)})
}

// markIs matches (meta mark & mask) op value.
func (b *rb) markIs(mask, value uint32, neq bool) *rb {
	op, opText := expr.CmpOpEq, "=="
	if neq {
		op, opText = expr.CmpOpNeq, "!="
	}
	if mask == ^uint32(0) && !neq {
		return b.add(fmt.Sprintf("meta mark 0x%08x", value),
			&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
			&expr.Cmp{Op: op, Register: 1, Data: ne32(value)})
	}
	return b.add(fmt.Sprintf("meta mark & 0x%08x %s 0x%08x", mask, opText, value),
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: ne32(mask), Xor: ne32(0)},
		&expr.Cmp{Op: op, Register: 1, Data: ne32(value)})
}

func (b *rb) setMark(v uint32) *rb {
	return b.add(fmt.Sprintf("meta mark set 0x%08x", v),
		&expr.Immediate{Register: 1, Data: ne32(v)},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1})
}

func (b *rb) orMark(v uint32) *rb {
	return b.add(fmt.Sprintf("meta mark set meta mark | 0x%08x", v),
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: ne32(^v), Xor: ne32(v)},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1})
}

// ctMarkSet sets the connection's mark.
func (b *rb) ctMarkSet(v uint32) *rb {
	return b.add(fmt.Sprintf("ct mark set 0x%08x", v),
		&expr.Immediate{Register: 1, Data: ne32(v)},
		&expr.Ct{Key: expr.CtKeyMARK, Register: 1, SourceRegister: true})
}

// Verdicts end the rule.
func (b *rb) verdict(k expr.VerdictKind, chain, text string) *Rule {
	b.add(text, &expr.Verdict{Kind: k, Chain: chain})
	return &Rule{Exprs: b.exprs, Text: strings.Join(b.text, " ")}
}

func (b *rb) accept() *Rule { return b.verdict(expr.VerdictAccept, "", "accept") }
func (b *rb) drop() *Rule   { return b.verdict(expr.VerdictDrop, "", "drop") }
func (b *rb) ret() *Rule    { return b.verdict(expr.VerdictReturn, "", "return") }
func (b *rb) continue_() *Rule {
	return &Rule{Exprs: b.exprs, Text: strings.Join(b.text, " ")}
}
func (b *rb) jump(chain string) *Rule { return b.verdict(expr.VerdictJump, chain, "jump "+chain) }
