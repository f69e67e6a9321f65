package firewall

import (
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"

	"github.com/google/nftables/expr"
)

// Canonical renders expressions in a stable low-level form (close to
// `nft --debug=netlink`). Two rules are equal when their canonical forms are:
// this is how the rules read back from the kernel are compared with intent.
// Counter values and set ids, which the kernel assigns, are left out.
func Canonical(es []expr.Any) string {
	var b strings.Builder
	for i, e := range es {
		if i > 0 {
			b.WriteString("; ")
		}
		canonOne(&b, e)
	}
	return b.String()
}

func reg(r uint32) string { return "r" + strconv.FormatUint(uint64(r), 10) }

func canonOne(b *strings.Builder, e expr.Any) {
	switch e := e.(type) {
	case *expr.Meta:
		if e.SourceRegister {
			fmt.Fprintf(b, "meta set %d %s", e.Key, reg(e.Register))
		} else {
			fmt.Fprintf(b, "meta load %d => %s", e.Key, reg(e.Register))
		}
	case *expr.Cmp:
		fmt.Fprintf(b, "cmp %d %s %s", e.Op, reg(e.Register), hex.EncodeToString(e.Data))
	case *expr.Payload:
		if e.OperationType == expr.PayloadLoad {
			fmt.Fprintf(b, "payload load %db @ %d + %d => %s", e.Len, e.Base, e.Offset, reg(e.DestRegister))
		} else {
			fmt.Fprintf(b, "payload write %+v", *e)
		}
	case *expr.Bitwise:
		fmt.Fprintf(b, "bitwise %s = (%s & %s) ^ %s len %d", reg(e.DestRegister), reg(e.SourceRegister),
			hex.EncodeToString(e.Mask), hex.EncodeToString(e.Xor), e.Len)
	case *expr.Ct:
		// google/nftables v0.3.0 decodes NFTA_CT_SREG as nothing: a "ct
		// set" read back looks like a load into register 0, which no load
		// uses (register 0 is the verdict). Both print the same, without
		// the source register.
		if e.SourceRegister || e.Register == 0 {
			fmt.Fprintf(b, "ct set %d dir %d", e.Key, e.Direction)
		} else {
			fmt.Fprintf(b, "ct load %d dir %d => %s", e.Key, e.Direction, reg(e.Register))
		}
	case *expr.Lookup:
		fmt.Fprintf(b, "lookup %s set %s inv %v", reg(e.SourceRegister), e.SetName, e.Invert)
		if e.IsDestRegSet {
			fmt.Fprintf(b, " => %s", reg(e.DestRegister))
		}
	case *expr.Verdict:
		fmt.Fprintf(b, "verdict %d", e.Kind)
		if e.Chain != "" {
			b.WriteString(" " + e.Chain)
		}
	case *expr.Immediate:
		fmt.Fprintf(b, "immediate %s %s", reg(e.Register), hex.EncodeToString(e.Data))
	case *expr.Range:
		fmt.Fprintf(b, "range %d %s %s %s", e.Op, reg(e.Register), hex.EncodeToString(e.FromData), hex.EncodeToString(e.ToData))
	case *expr.Counter:
		b.WriteString("counter")
	default:
		fmt.Fprintf(b, "%T%+v", e, e)
	}
}
