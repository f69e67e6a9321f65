// Package taps names the host-side network devices of a WorkSpace's two NICs.
//
// Every WorkSpace (id "ws-" followed by 1 to 11 lower-case letters or digits,
// for example "ws-a1b2c3d4e5") has two NICs, in this order inside the guest:
//
//	guest eth0  management/streaming  tap "wsm-<suffix>"  on bridge br-mgmt   (port isolated)
//	guest eth1  primary (customer LAN) tap "wsp-<suffix>"  on bridge br-primary
//
// where <suffix> is the id without its "ws-" prefix, so "ws-a1b2c3d4e5" gets
// "wsm-a1b2c3d4e5" and "wsp-a1b2c3d4e5" (14 characters; at most 15, under
// IFNAMSIZ). The names are how netcfg's nftables rules and bridge ports find a
// VM, so hostd must attach the domain's interfaces to exactly these devices:
//
//	<interface type='ethernet'>
//	  <mac address='...'/>                  <!-- MACs(id) unless hostd chose its own -->
//	  <target dev='wsm-a1b2c3d4e5' managed='no'/>
//	  <model type='virtio'/>
//	</interface>
//
// netcfg creates the taps (persistent, IFF_TAP|IFF_NO_PI, one queue) before
// hostd starts the domain, enslaves them to their bridge and deletes taps with
// these prefixes that no WorkSpace in the desired state owns.
package taps

import (
	"crypto/sha256"
	"fmt"
	"net"
	"strings"
)

// Prefixes of the two tap names. Any link whose name starts with one of these
// belongs to netcfg.
const (
	MgmtPrefix    = "wsm-"
	PrimaryPrefix = "wsp-"
	idPrefix      = "ws-"
	maxSuffix     = 11 // "wsm-" + 11 = 15 = IFNAMSIZ-1
)

// ValidateID reports whether id is a WorkSpace id netcfg can derive names from.
func ValidateID(id string) error {
	suffix, ok := strings.CutPrefix(id, idPrefix)
	if !ok {
		return fmt.Errorf("workspace id %q: must start with %q", id, idPrefix)
	}
	if len(suffix) == 0 || len(suffix) > maxSuffix {
		return fmt.Errorf("workspace id %q: want 1 to %d characters after %q, got %d", id, maxSuffix, idPrefix, len(suffix))
	}
	for _, c := range suffix {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return fmt.Errorf("workspace id %q: only lower-case letters and digits may follow %q", id, idPrefix)
		}
	}
	return nil
}

// Names returns the management and primary tap names of WorkSpace id.
func Names(id string) (mgmt, primary string, err error) {
	if err := ValidateID(id); err != nil {
		return "", "", err
	}
	suffix := strings.TrimPrefix(id, idPrefix)
	return MgmtPrefix + suffix, PrimaryPrefix + suffix, nil
}

// MACs returns the default MAC addresses of WorkSpace id's management and
// primary NICs: locally administered unicast addresses 02:d5:xx:xx:xx:xx derived
// from a hash of the id, so that hostd and netcfg agree without storing them.
// hostd may choose other MACs and pass them in the desired state instead.
func MACs(id string) (mgmt, primary net.HardwareAddr, err error) {
	if err := ValidateID(id); err != nil {
		return nil, nil, err
	}
	return derive("mgmt/" + id), derive("primary/" + id), nil
}

func derive(s string) net.HardwareAddr {
	h := sha256.Sum256([]byte(s))
	return net.HardwareAddr{0x02, 0xd5, h[0], h[1], h[2], h[3]}
}

// Parse maps a tap name back to its WorkSpace id and role ("mgmt" or
// "primary"). ok is false for names netcfg does not own.
func Parse(name string) (id, role string, ok bool) {
	switch {
	case strings.HasPrefix(name, MgmtPrefix):
		id, role = idPrefix+strings.TrimPrefix(name, MgmtPrefix), "mgmt"
	case strings.HasPrefix(name, PrimaryPrefix):
		id, role = idPrefix+strings.TrimPrefix(name, PrimaryPrefix), "primary"
	default:
		return "", "", false
	}
	if ValidateID(id) != nil {
		return "", "", false
	}
	return id, role, true
}
