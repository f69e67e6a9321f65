// Command benchgen writes a netcfg config for scripts/bench/netcfg.sh: one
// directory whose associated IP access control groups hold -cidrs CIDRs in
// groups of -per-group, 10 WorkSpaces, NICs eth0 (management) and eth1
// (primary). With -change N it alters rule N of group 7 (a one-rule change).
package main

import (
	"bufio"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
)

func main() {
	cidrs := flag.Int("cidrs", 100000, "number of CIDRs")
	per := flag.Int("per-group", 5000, "CIDRs per group")
	state := flag.String("state", "/tmp/netcfg-bench-state.json", "stateFile")
	change := flag.Int("change", -1, "rule of group 7 to change (-1: none)")
	flag.Parse()
	w := bufio.NewWriter(os.Stdout)
	defer w.Flush()
	fmt.Fprintf(w, "stateFile: %s\ninterfaces:\n  management: {name: eth0, addresses: [203.0.113.10/24]}\n  primary: {name: eth1, addresses: [10.0.0.5/16]}\nipGroups:\n", *state)
	r := rand.New(rand.NewPCG(1, 2))
	groups := (*cidrs + *per - 1) / *per
	n := 0
	for g := range groups {
		fmt.Fprintf(w, "  - id: wsipg-%04d\n    rules:\n", g)
		for i := 0; i < *per && n < *cidrs; i, n = i+1, n+1 {
			a := r.Uint32()
			if g == 7 && i == *change {
				fmt.Fprintf(w, "      - {source: 192.0.2.%d}\n", 1+i%254)
				continue
			}
			if a&1 == 0 {
				fmt.Fprintf(w, "      - {source: %d.%d.%d.0/24}\n", a>>24, a>>16&255, a>>8&255)
			} else {
				fmt.Fprintf(w, "      - {source: %d.%d.%d.%d}\n", a>>24, a>>16&255, a>>8&255, a&255)
			}
		}
	}
	fmt.Fprintf(w, "directories:\n  - id: d-bench00001\n    controllers: [10.0.1.10]\n    ipGroups: [")
	for g := range groups {
		if g > 0 {
			fmt.Fprint(w, ", ")
		}
		fmt.Fprintf(w, "wsipg-%04d", g)
	}
	fmt.Fprintln(w, "]\nworkspaces:")
	for i := range 10 {
		fmt.Fprintf(w, "  - {id: ws-bench%05d, directory: d-bench00001}\n", i)
	}
}
