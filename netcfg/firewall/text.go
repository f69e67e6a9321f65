package firewall

import (
	"fmt"
	"io"
	"strings"

	"github.com/google/nftables"
)

// FamilyName is nft's name of a table family.
func FamilyName(f nftables.TableFamily) string {
	switch f {
	case nftables.TableFamilyINet:
		return "inet"
	case nftables.TableFamilyBridge:
		return "bridge"
	case nftables.TableFamilyIPv4:
		return "ip"
	case nftables.TableFamilyIPv6:
		return "ip6"
	case nftables.TableFamilyARP:
		return "arp"
	case nftables.TableFamilyNetdev:
		return "netdev"
	}
	return fmt.Sprintf("family%d", f)
}

// HookName is nft's name of a chain hook.
func HookName(h nftables.ChainHook) string {
	switch h {
	case *nftables.ChainHookPrerouting:
		return "prerouting"
	case *nftables.ChainHookInput:
		return "input"
	case *nftables.ChainHookForward:
		return "forward"
	case *nftables.ChainHookOutput:
		return "output"
	case *nftables.ChainHookPostrouting:
		return "postrouting"
	}
	return fmt.Sprintf("hook%d", h)
}

// PolicyName is nft's name of a chain policy.
func PolicyName(p nftables.ChainPolicy) string {
	if p == nftables.ChainPolicyDrop {
		return "drop"
	}
	return "accept"
}

// WriteScript writes the ruleset as an `nft -f` script. With replace, the
// script first deletes netcfg's tables, so that the whole file replaces them
// in one transaction, as Apply does (this is the baseline Apply is measured
// against).
func WriteScript(w io.Writer, rs *Ruleset, replace bool) error {
	var b strings.Builder
	for _, t := range rs.Tables {
		fam := FamilyName(t.Family)
		if replace {
			fmt.Fprintf(&b, "table %s %s {}\ndelete table %s %s\n", fam, t.Name, fam, t.Name)
		}
		// declare every chain first: rules may jump to chains defined later
		fmt.Fprintf(&b, "table %s %s {\n", fam, t.Name)
		for _, c := range t.Chains {
			fmt.Fprintf(&b, "\tchain %s {\n", c.Name)
			if c.Hook != nil {
				fmt.Fprintf(&b, "\t\ttype %s hook %s priority %d; policy %s;\n", c.Hook.Type, HookName(c.Hook.Num), c.Hook.Priority, PolicyName(c.Hook.Policy))
			}
			b.WriteString("\t}\n")
		}
		for _, s := range t.Sets {
			fmt.Fprintf(&b, "\tset %s {\n\t\ttype ipv4_addr\n\t\tflags interval\n", s.Name)
			if len(s.Ranges) > 0 {
				b.WriteString("\t\telements = { ")
				for i, r := range s.Ranges {
					if i > 0 {
						b.WriteString(",\n\t\t\t")
					}
					b.WriteString(r.String())
				}
				b.WriteString(" }\n")
			}
			b.WriteString("\t}\n")
		}
		b.WriteString("}\n")
		for _, c := range t.Chains {
			for _, r := range c.Rules {
				fmt.Fprintf(&b, "add rule %s %s %s %s comment \"%s\"\n", fam, t.Name, c.Name, r.Text, commentOf(r.Text))
			}
		}
		if _, err := io.WriteString(w, b.String()); err != nil {
			return err
		}
		b.Reset()
	}
	return nil
}
