// Package mgmtnet chooses and keeps br-mgmt's address range and the
// management addresses of WorkSpaces.
//
// The range is picked once, from an ordered candidate list (default
// 198.19.0.0/16, 192.168.0.0/16, 172.31.0.0/16, the guide's management
// ranges), as the first candidate that overlaps none of the host's networks.
// It is then written to the state file and never changed: a later conflict
// (the primary network moved into it) is an error, not a silent re-pick, as
// the guide warns ("If you change the route tables in your VPC after the
// directory is registered, you might cause a conflict").
//
// Layout of a range R (e.g. 198.19.0.0/16): R+1 is the host (gateway, DHCP
// server), R+2..R+9 are reserved, WorkSpaces get R+10 upwards; an address
// stays with its WorkSpace until the WorkSpace leaves the desired state.
package mgmtnet

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"deskhost/netcfg/config"
)

// State is the persisted, write-once part of netcfg's configuration.
type State struct {
	Version int `json:"version"`
	// Range is br-mgmt's range, chosen once.
	Range netip.Prefix `json:"managementRange"`
	// ChosenAt records when Range was chosen.
	ChosenAt time.Time `json:"chosenAt"`
	// Addresses maps WorkSpace ids to their management addresses.
	Addresses map[string]netip.Addr `json:"addresses"`
}

// Load reads the state file; a missing file is an empty state.
func Load(path string) (*State, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &State{Version: 1, Addresses: map[string]netip.Addr{}}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("mgmtnet: read state: %w", err)
	}
	var s State
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("mgmtnet: state file %s is corrupt: %w", path, err)
	}
	if s.Addresses == nil {
		s.Addresses = map[string]netip.Addr{}
	}
	if s.Range.IsValid() {
		for id, a := range s.Addresses {
			if !s.Range.Contains(a) {
				return nil, fmt.Errorf("mgmtnet: state file %s: address %s of %s is outside %s", path, a, id, s.Range)
			}
		}
	}
	return &s, nil
}

// Save writes the state atomically (temp file, fsync, rename, fsync dir).
func Save(path string, s *State) error {
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("mgmtnet: encode state: %w", err)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("mgmtnet: %w", err)
	}
	f, err := os.CreateTemp(dir, ".netcfg-state-*")
	if err != nil {
		return fmt.Errorf("mgmtnet: %w", err)
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(append(data, '\n')); err != nil {
		f.Close()
		return fmt.Errorf("mgmtnet: write state: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("mgmtnet: sync state: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("mgmtnet: %w", err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("mgmtnet: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// ConflictError says a range overlaps one of the host's networks.
type ConflictError struct {
	Range   netip.Prefix
	Network config.Network
	Chosen  bool // the range was already chosen (persisted)
}

func (e *ConflictError) Error() string {
	if e.Chosen {
		return fmt.Sprintf("managementNetwork: the chosen management range %s (write-once, in the state file) overlaps %s (%s); change that network, the management range cannot change",
			e.Range, e.Network.Prefix, e.Network.Source)
	}
	return fmt.Sprintf("managementNetwork.candidates: %s overlaps %s (%s)", e.Range, e.Network.Prefix, e.Network.Source)
}

// Resolve returns the management range: the persisted one (checked against
// nets) or, if none was chosen yet, the first candidate overlapping none of
// nets. changed reports that st.Range was set and must be saved.
func Resolve(st *State, candidates []netip.Prefix, nets []config.Network, now time.Time) (r netip.Prefix, changed bool, err error) {
	if st.Range.IsValid() {
		for _, n := range nets {
			if n.Prefix.Overlaps(st.Range) {
				return netip.Prefix{}, false, &ConflictError{Range: st.Range, Network: n, Chosen: true}
			}
		}
		return st.Range, false, nil
	}
	var conflicts []string
	for _, c := range candidates {
		clash := -1
		for i, n := range nets {
			if n.Prefix.Overlaps(c) {
				clash = i
				break
			}
		}
		if clash < 0 {
			st.Range, st.ChosenAt = c, now.UTC()
			return c, true, nil
		}
		conflicts = append(conflicts, (&ConflictError{Range: c, Network: nets[clash]}).Error())
	}
	if len(candidates) == 0 {
		return netip.Prefix{}, false, errors.New("managementNetwork.candidates: empty")
	}
	return netip.Prefix{}, false, fmt.Errorf("managementNetwork.candidates: every candidate conflicts: %s", strings.Join(conflicts, "; "))
}

// HostAddr is the host's address on br-mgmt: the first address of the range.
func HostAddr(r netip.Prefix) netip.Addr { return r.Masked().Addr().Next() }

const firstGuestOffset = 10

// Allocate gives every WorkSpace in ids a stable address in r, keeping
// existing allocations and dropping those of WorkSpaces no longer listed.
// changed reports whether st.Addresses changed.
func Allocate(st *State, r netip.Prefix, ids []string) (map[string]netip.Addr, bool, error) {
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	changed := false
	used := map[netip.Addr]bool{}
	for id, a := range st.Addresses {
		if !want[id] || !r.Contains(a) {
			delete(st.Addresses, id)
			changed = true
			continue
		}
		used[a] = true
	}
	sorted := slices.Clone(ids)
	slices.Sort(sorted)
	next := r.Masked().Addr()
	for range firstGuestOffset {
		next = next.Next()
	}
	for _, id := range sorted {
		if _, ok := st.Addresses[id]; ok {
			continue
		}
		for used[next] {
			next = next.Next()
		}
		if !r.Contains(next) || next == lastAddr(r) {
			return nil, changed, fmt.Errorf("mgmtnet: management range %s is full (%d WorkSpaces)", r, len(ids))
		}
		st.Addresses[id] = next
		used[next] = true
		changed = true
	}
	out := make(map[string]netip.Addr, len(ids))
	for _, id := range ids {
		out[id] = st.Addresses[id]
	}
	return out, changed, nil
}

func lastAddr(r netip.Prefix) netip.Addr {
	a := r.Masked().Addr().As4()
	host := ^uint32(0) >> r.Bits()
	v := (uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}
