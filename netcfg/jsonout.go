package main

import (
	"encoding/json"
	"io"
	"time"

	"deskhost/netcfg/firewall"
	"deskhost/netcfg/reconcile"
)

// The --json forms of show and check: what the text forms print, as stable field names for
// scripts and monitoring.

type showJSON struct {
	StateFile       string            `json:"stateFile,omitempty"`
	ManagementRange string            `json:"managementRange,omitempty"` // "" until chosen
	ChosenAt        *time.Time        `json:"chosenAt,omitempty"`
	Addresses       map[string]string `json:"addresses,omitempty"` // WorkSpace id -> management address
	Links           []linkJSON        `json:"links"`
	Generation      uint32            `json:"generation"` // nftables ruleset generation
	Tables          []tableJSON       `json:"tables"`
}

type linkJSON struct {
	Name     string   `json:"name"`
	Type     string   `json:"type"`
	MAC      string   `json:"mac,omitempty"`
	MTU      int      `json:"mtu"`
	Up       bool     `json:"up"`
	Master   string   `json:"master,omitempty"`
	Isolated bool     `json:"isolated"`
	Addrs    []string `json:"addresses"`
}

type tableJSON struct {
	Family string      `json:"family"`
	Name   string      `json:"name"`
	Sets   []setJSON   `json:"sets"`
	Chains []chainJSON `json:"chains"`
}

type setJSON struct {
	Name      string   `json:"name"`
	Ranges    []string `json:"ranges"`
	Addresses uint64   `json:"addresses"`
}

type chainJSON struct {
	Name     string   `json:"name"`
	Hook     string   `json:"hook,omitempty"`
	Type     string   `json:"type,omitempty"`
	Priority *int32   `json:"priority,omitempty"`
	Policy   string   `json:"policy,omitempty"`
	Rules    []string `json:"rules"`
}

type checkJSON struct {
	InSync bool     `json:"inSync"`
	Drift  []string `json:"drift"`
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func statusJSON(st *reconcile.Status) showJSON {
	out := showJSON{StateFile: st.StateFile, Generation: st.Generation, Links: []linkJSON{}, Tables: []tableJSON{}}
	if st.State != nil {
		if st.State.Range.IsValid() {
			out.ManagementRange = st.State.Range.String()
			at := st.State.ChosenAt.UTC()
			out.ChosenAt = &at
		}
		if len(st.State.Addresses) > 0 {
			out.Addresses = map[string]string{}
			for id, a := range st.State.Addresses {
				out.Addresses[id] = a.String()
			}
		}
	}
	if st.Links != nil {
		for _, l := range st.Links.Links {
			addrs := l.Addrs
			if addrs == nil {
				addrs = []string{}
			}
			out.Links = append(out.Links, linkJSON{Name: l.Name, Type: l.Type, MAC: l.MAC, MTU: l.MTU, Up: l.Up,
				Master: l.Master, Isolated: l.Isolated, Addrs: addrs})
		}
	}
	if st.Ruleset != nil {
		for _, t := range st.Ruleset.Tables {
			tj := tableJSON{Family: firewall.FamilyName(t.Family), Name: t.Name, Sets: []setJSON{}, Chains: []chainJSON{}}
			for _, s := range t.Sets {
				ranges := make([]string, 0, len(s.Ranges))
				for _, r := range s.Ranges {
					ranges = append(ranges, r.String())
				}
				tj.Sets = append(tj.Sets, setJSON{Name: s.Name, Ranges: ranges, Addresses: s.Ranges.Size()})
			}
			for _, c := range t.Chains {
				cj := chainJSON{Name: c.Name, Rules: []string{}}
				if c.Hook != nil {
					prio := c.Hook.Priority
					cj.Hook, cj.Type, cj.Priority, cj.Policy = firewall.HookName(c.Hook.Num), string(c.Hook.Type), &prio, firewall.PolicyName(c.Hook.Policy)
				}
				for _, r := range c.Rules {
					text := r.Text
					if text == "" {
						text = "[no comment: not written by netcfg] " + firewall.Canonical(r.Exprs)
					}
					cj.Rules = append(cj.Rules, text)
				}
				tj.Chains = append(tj.Chains, cj)
			}
			out.Tables = append(out.Tables, tj)
		}
	}
	return out
}
