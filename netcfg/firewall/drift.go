package firewall

import (
	"fmt"

	"deskhost/netcfg/cidrset"
)

// Drift lists how got (read back from the kernel) differs from want; empty
// means the kernel holds exactly the intended ruleset.
func Drift(want, got *Ruleset) []string {
	var out []string
	for _, gt := range got.Tables {
		if want.Table(gt.Family) == nil {
			out = append(out, fmt.Sprintf("table %s %s: present, not intended", FamilyName(gt.Family), gt.Name))
		}
	}
	for _, wt := range want.Tables {
		fam := FamilyName(wt.Family)
		gt := got.Table(wt.Family)
		if gt == nil {
			out = append(out, fmt.Sprintf("table %s %s: missing", fam, wt.Name))
			continue
		}
		for _, wc := range wt.Chains {
			gc := gt.Chain(wc.Name)
			if gc == nil {
				out = append(out, fmt.Sprintf("chain %s %s: missing", fam, wc.Name))
				continue
			}
			if !hooksEqual(wc.Hook, gc.Hook) || (wc.Hook != nil && wc.Hook.Policy != gc.Hook.Policy) {
				out = append(out, fmt.Sprintf("chain %s %s: hook %+v, intended %+v", fam, wc.Name, gc.Hook, wc.Hook))
			}
			if rulesEqual(wc.Rules, gc.Rules) {
				continue
			}
			if len(wc.Rules) != len(gc.Rules) {
				out = append(out, fmt.Sprintf("chain %s %s: %d rules, intended %d", fam, wc.Name, len(gc.Rules), len(wc.Rules)))
				continue
			}
			for i := range wc.Rules {
				if !wc.Rules[i].Same(gc.Rules[i]) {
					if commentOf(wc.Rules[i].Text) == gc.Rules[i].Text {
						// same comment, different expressions: show them
						out = append(out, fmt.Sprintf("chain %s %s rule %d (%s): expressions [%s], intended [%s]", fam, wc.Name, i,
							wc.Rules[i].Text, Canonical(gc.Rules[i].Exprs), Canonical(wc.Rules[i].Exprs)))
					} else {
						out = append(out, fmt.Sprintf("chain %s %s rule %d: %q, intended %q", fam, wc.Name, i, gc.Rules[i].Text, wc.Rules[i].Text))
					}
					break
				}
			}
		}
		for _, gc := range gt.Chains {
			if wt.Chain(gc.Name) == nil {
				out = append(out, fmt.Sprintf("chain %s %s: present, not intended", fam, gc.Name))
			}
		}
		for _, ws := range wt.Sets {
			gs := gt.Set(ws.Name)
			switch {
			case gs == nil:
				out = append(out, fmt.Sprintf("set %s %s: missing", fam, ws.Name))
			case gs.definition() != ws.definition():
				out = append(out, fmt.Sprintf("set %s %s: is %s, intended %s", fam, ws.Name, gs.definition(), ws.definition()))
			case !cidrset.Equal(gs.Ranges, ws.Ranges):
				removed, added := cidrset.Diff(gs.Ranges, ws.Ranges)
				out = append(out, fmt.Sprintf("set %s %s: %d ranges missing, %d not intended", fam, ws.Name, len(added), len(removed)))
			}
		}
		for _, gs := range gt.Sets {
			if wt.Set(gs.Name) == nil {
				out = append(out, fmt.Sprintf("set %s %s: present, not intended", fam, gs.Name))
			}
		}
	}
	return out
}
