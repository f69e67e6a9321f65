package fleet

import (
	"fmt"
	"slices"
	"strings"

	"deskhost/hostd/store"
	"deskhost/hostd/workspace"
	"deskhost/internal/catalog"
)

// Candidate is a host as placement sees it.
type Candidate struct {
	Host  Host
	Alive bool
	Load  Load
}

// Place chooses the host for a new WorkSpace of compute type ct (pure logic): among the
// hosts that are alive, ready (not draining, not down) and offer ct, one where the
// WorkSpace's hardware still fits beside what its WorkSpaces reserve; of those the one
// left least full (the larger of its vCPU and memory fractions once the WorkSpace is on
// it), then the one with fewer WorkSpaces, then the lower id: new WorkSpaces spread across
// the fleet. When none fits, the error says why of each host.
func Place(cands []Candidate, ct catalog.ComputeType) (Host, error) {
	type scored struct {
		h     Host
		fill  float64
		count int
	}
	var ok []scored
	var why []string
	for _, c := range cands {
		h := c.Host
		hw, offers := h.ComputeTypes[ct]
		need := Resources{hw.VCPUs, hw.MemoryMiB}
		after := c.Load.Reserved.add(need)
		switch {
		case !c.Alive || h.Down:
			why = append(why, h.ID+" is down")
		case h.Draining:
			why = append(why, h.ID+" is draining")
		case !offers:
			why = append(why, fmt.Sprintf("%s has no hardware for compute type %s", h.ID, ct))
		case !after.fits(h.Capacity):
			why = append(why, fmt.Sprintf("%s has %s free of %s; a %s WorkSpace needs %s", h.ID,
				Resources{h.Capacity.VCPUs - c.Load.Reserved.VCPUs, h.Capacity.MemoryMiB - c.Load.Reserved.MemoryMiB}, h.Capacity, ct, need))
		default:
			ok = append(ok, scored{h, max(frac(after.VCPUs, h.Capacity.VCPUs), frac(after.MemoryMiB, h.Capacity.MemoryMiB)), c.Load.Workspaces})
		}
	}
	if len(ok) == 0 {
		if len(cands) == 0 {
			return Host{}, catalog.Errorf(catalog.ResourceUnavailable, "no host is registered to run WorkSpaces")
		}
		return Host{}, catalog.Errorf(catalog.ResourceUnavailable, "no host can take a %s WorkSpace now: %s", ct, strings.Join(why, "; "))
	}
	best := slices.MinFunc(ok, func(a, b scored) int {
		switch {
		case a.fill != b.fill:
			if a.fill < b.fill {
				return -1
			}
			return 1
		case a.count != b.count:
			return a.count - b.count
		}
		return strings.Compare(a.h.ID, b.h.ID)
	})
	return best.h, nil
}

func frac(n, of int) float64 {
	if of <= 0 {
		return 1
	}
	return float64(n) / float64(of)
}

// PlaceTx places a WorkSpace of compute type ct on hosts as tx sees them, all being every
// WorkSpace record. Inside an Update, what was read (hosts, alive keys, WorkSpaces)
// guards the commit, so two hosts placing at once cannot both take the last room.
func PlaceTx(tx store.Tx, hosts []Host, all []workspace.Workspace, ct catalog.ComputeType) (Host, error) {
	alive, err := AliveSet(tx)
	if err != nil {
		return Host{}, err
	}
	loads := Loads(hosts, all)
	cands := make([]Candidate, len(hosts))
	for i, h := range hosts {
		cands[i] = Candidate{Host: h, Alive: alive[h.ID], Load: loads[h.ID]}
	}
	return Place(cands, ct)
}
