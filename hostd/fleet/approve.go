package fleet

import (
	"errors"
	"strings"
	"time"

	"deskhost/hostd/store"
	"deskhost/internal/catalog"
)

// DefaultPreapprovalTTL is how long a preapproval waits for its host.
const DefaultPreapprovalTTL = 24 * time.Hour

// Approve approves the host waiting to join with code (as its console shows it; case and
// dashes do not matter) and gives it a host id. The fleet member holding its request sees
// the approval and hands the host its credentials.
func Approve(st store.Store, code string, now time.Time) (JoinRequest, error) {
	c, err := NormalizeCode(code)
	if err != nil {
		return JoinRequest{}, err
	}
	var j JoinRequest
	err = st.Update(func(tx store.Tx) error {
		var err error
		j, err = store.GetJSON[JoinRequest](tx, Joins, c)
		if errors.Is(err, store.ErrNotFound) {
			return catalog.Errorf(catalog.ResourceNotFound, "no host is waiting to join with code %s: check the code on the new host's console (`hostd hosts` lists the waiting ones); "+
				"a code that differs from every listed one means the new host reached something other than this fleet", FormatCode(c))
		}
		if err != nil {
			return err
		}
		if j.Approved {
			return nil
		}
		approve(&j, "administrator", now)
		return store.PutJSON(tx, Joins, c, j)
	})
	return j, err
}

func approve(j *JoinRequest, by string, now time.Time) {
	j.Approved, j.ApprovedAt, j.ApprovedBy = true, now, by
	if j.HostID == "" {
		j.HostID = NewHostID()
	}
}

// Preapprove lets the host with hardware id hwid join without a person approving it, once,
// within ttl.
func Preapprove(st store.Store, hwid string, ttl time.Duration, now time.Time) (Preapproval, error) {
	hwid = strings.TrimSpace(hwid)
	if err := CheckHardwareID(hwid); err != nil {
		return Preapproval{}, err
	}
	if ttl <= 0 {
		ttl = DefaultPreapprovalTTL
	}
	p := Preapproval{HardwareID: hwid, Created: now, Expires: now.Add(ttl)}
	err := st.Update(func(tx store.Tx) error {
		hosts, err := ListHosts(tx)
		if err != nil {
			return err
		}
		for _, h := range hosts {
			if h.HardwareID == hwid {
				return catalog.Errorf(catalog.ResourceAlreadyExists, "hardware id %s is already host %s (%s)", hwid, h.ID, h.Name)
			}
		}
		return store.PutJSON(tx, Preapproved, hwid, p)
	})
	return p, err
}

// NewHostID makes a host id.
func NewHostID() string { return "host-" + catalog.NewID(catalog.KindDirectory)[2:] }
