// Package fleet makes many hosts one fleet on hostd's store: a record per host (identity,
// addresses, capacity, state), a lease per host that says it is alive, the marking of a
// host whose lease expired as down (its WorkSpaces UNHEALTHY), the fence every owning
// host's write goes through, the placement of new WorkSpaces, the join of new hosts under
// a fleet CA, and what hosts ask of each other over mutual TLS (images, connect tags, the
// key store's master key).
//
// A single host with the bbolt store is a fleet of one: it has a host record, an alive
// key (that never expires: nobody else would notice), and places every WorkSpace on
// itself, through the same code.
package fleet

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"deskhost/hostd/store"
	"deskhost/hostd/workspace"
	"deskhost/internal/catalog"
)

// Buckets the fleet keeps in hostd's store.
const (
	// Hosts: host id → Host.
	Hosts = "hosts"
	// Alive: host id → the host's lease (etcd: the key is attached to the lease, so it
	// goes when the lease expires). Its presence is what "alive" means.
	Alive = "alive"
	// Joins: join code → JoinRequest, a host asking to join and waiting for approval.
	Joins = "joins"
	// Preapproved: hardware id → Preapproval: a host that joins without a person
	// approving it (diskless PXE hosts).
	Preapproved = "preapproved"
	// Secrets: the fleet CA's certificate and key, and the fleet's id.
	Secrets = "fleet"
)

// Keys in Secrets.
const (
	keyCACert  = "caCert"
	keyCAKey   = "caKey"
	keyFleetID = "id"
)

// State is a host's state as `hostd hosts` shows it.
type State string

const (
	// Joining: the host asked to join and waits for an administrator's approval.
	Joining State = "joining"
	// Ready: alive and taking new WorkSpaces.
	Ready State = "ready"
	// Draining: alive, runs its WorkSpaces, takes no new ones.
	Draining State = "draining"
	// Down: its lease expired; its WorkSpaces were marked UNHEALTHY.
	Down State = "down"
)

// Resources is an amount of vCPUs and memory.
type Resources struct {
	VCPUs     int `json:"vcpus"`
	MemoryMiB int `json:"memoryMiB"`
}

func (r Resources) add(o Resources) Resources {
	return Resources{r.VCPUs + o.VCPUs, r.MemoryMiB + o.MemoryMiB}
}

func (r Resources) fits(capacity Resources) bool {
	return r.VCPUs <= capacity.VCPUs && r.MemoryMiB <= capacity.MemoryMiB
}

func (r Resources) String() string {
	return fmt.Sprintf("%d vCPU, %d MiB", r.VCPUs, r.MemoryMiB)
}

// Addresses are where a host's services are reached (host:port, or a URL for etcd).
type Addresses struct {
	// API is the admin API (HTTPS).
	API string `json:"api,omitempty"`
	// Fleet is the fleet port: joins, and hosts' calls to each other (mutual TLS).
	Fleet string `json:"fleet,omitempty"`
	// Broker and Gateway are zeroclient's: where clients log in, and stream from.
	Broker  string `json:"broker,omitempty"`
	Gateway string `json:"gateway,omitempty"`
	// EtcdClient and EtcdPeer are the host's etcd member's URLs, if it is one.
	EtcdClient string `json:"etcdClient,omitempty"`
	EtcdPeer   string `json:"etcdPeer,omitempty"`
}

// Host is one host's record.
type Host struct {
	ID         string    `json:"id"`
	HardwareID string    `json:"hardwareId,omitempty"`
	Name       string    `json:"name"`
	Addresses  Addresses `json:"addresses"`
	// Capacity is what the host gives WorkSpaces (vCPUs and memory).
	Capacity Resources `json:"capacity"`
	// ComputeTypes is the hardware each compute type gets on this host; a host offers only
	// these.
	ComputeTypes map[catalog.ComputeType]catalog.Hardware `json:"computeTypes,omitempty"`
	// EtcdMember: the host runs one of the fleet's etcd members.
	EtcdMember bool `json:"etcdMember,omitempty"`
	// Images maps the content hash (sha256 of image.json) of each desktop image the host
	// holds to the directory it holds it in.
	Images map[string]string `json:"images,omitempty"`

	// Draining is the administrator's: no new WorkSpaces are placed here.
	Draining bool `json:"draining,omitempty"`
	// Down is set by a surviving host when this host's lease expired, and cleared by the
	// host itself when it is back.
	Down       bool      `json:"down,omitempty"`
	DownSince  time.Time `json:"downSince,omitzero"`
	DownReason string    `json:"downReason,omitempty"`

	Joined time.Time `json:"joined,omitzero"`
	// Started is when the host last registered (its hostd started, or came back).
	Started time.Time `json:"started,omitzero"`
}

// State is the host's state.
func (h Host) State() State {
	switch {
	case h.Down:
		return Down
	case h.Draining:
		return Draining
	}
	return Ready
}

// GetHost reads one host record.
func GetHost(tx store.Tx, id string) (Host, error) {
	h, err := store.GetJSON[Host](tx, Hosts, id)
	if errors.Is(err, store.ErrNotFound) {
		return h, catalog.Errorf(catalog.ResourceNotFound, "host %s does not exist", id)
	}
	return h, err
}

// ListHosts reads every host record, in id order.
func ListHosts(tx store.Tx) ([]Host, error) { return store.ListJSON[Host](tx, Hosts) }

// livePeers lists the hosts other than self that are alive and pass keep, as st holds
// them now: whom to ask for something this host lacks.
func livePeers(st store.Store, self string, keep func(Host) bool) ([]string, error) {
	var ids []string
	err := st.View(func(tx store.Tx) error {
		ids = ids[:0]
		hosts, err := ListHosts(tx)
		if err != nil {
			return err
		}
		alive, err := AliveSet(tx)
		if err != nil {
			return err
		}
		for _, h := range hosts {
			if h.ID != self && alive[h.ID] && keep(h) {
				ids = append(ids, h.ID)
			}
		}
		return nil
	})
	return ids, err
}

// AliveSet reads which hosts have their alive key. Inside an Update, the read guards the
// commit: a host whose lease expires meanwhile makes the transaction run again.
func AliveSet(tx store.Tx) (map[string]bool, error) {
	alive := map[string]bool{}
	err := tx.ForEach(Alive, func(k string, _ []byte) error {
		alive[k] = true
		return nil
	})
	return alive, err
}

// Load is what a host's WorkSpaces take from it.
type Load struct {
	// Reserved is the hardware of every live WorkSpace the host owns (a STOPPED one
	// included: it must be able to start again where it is).
	Reserved Resources `json:"reserved"`
	// Running is the hardware of those whose VM should be running now.
	Running    Resources `json:"running"`
	Workspaces int       `json:"workspaces"`
}

// Loads sums the load of each host from the WorkSpaces (by owner), each at the hardware its
// owner gives its compute type.
func Loads(hosts []Host, all []workspace.Workspace) map[string]Load {
	byID := map[string]Host{}
	for _, h := range hosts {
		byID[h.ID] = h
	}
	out := map[string]Load{}
	for _, w := range all {
		if !w.Live() {
			continue
		}
		l := out[w.Host]
		hw := byID[w.Host].ComputeTypes[catalog.ComputeType(w.Properties.ComputeTypeName)]
		r := Resources{hw.VCPUs, hw.MemoryMiB}
		l.Reserved = l.Reserved.add(r)
		if running, ok := w.WantsRunning(); running || !ok {
			l.Running = l.Running.add(r)
		}
		l.Workspaces++
		out[w.Host] = l
	}
	return out
}

// HostView is a host as `hostd hosts` lists it: the record, its state and its load.
type HostView struct {
	Host
	State State `json:"state"`
	Alive bool  `json:"alive"`
	Load  Load  `json:"load"`
	// Code is a joining host's join code (the one its console shows).
	Code string `json:"code,omitempty"`
}

// Describe lists every host with its state and load, and the hosts waiting to join, in id
// (then code) order.
func Describe(tx store.Tx) ([]HostView, error) {
	hosts, err := ListHosts(tx)
	if err != nil {
		return nil, err
	}
	alive, err := AliveSet(tx)
	if err != nil {
		return nil, err
	}
	all, err := store.ListJSON[workspace.Workspace](tx, store.Workspaces)
	if err != nil {
		return nil, err
	}
	loads := Loads(hosts, all)
	var out []HostView
	for _, h := range hosts {
		v := HostView{Host: h, State: h.State(), Alive: alive[h.ID], Load: loads[h.ID]}
		if !v.Alive && v.State != Down {
			// Not yet marked (a survivor does it within seconds), or the last host of a
			// fleet whose every other host is gone too: it is down all the same.
			v.State = Down
		}
		out = append(out, v)
	}
	joins, err := store.ListJSON[JoinRequest](tx, Joins)
	if err != nil {
		return nil, err
	}
	for _, j := range joins {
		if j.Approved {
			continue // issued its credentials; its host record follows
		}
		out = append(out, HostView{Host: Host{ID: "(" + j.Code + ")", HardwareID: j.HardwareID, Name: j.Name, Addresses: j.Addresses,
			Capacity: j.Capacity}, State: Joining, Code: j.Code})
	}
	return out, nil
}

// SetDraining drains a host (no new WorkSpaces) or undrains it.
func SetDraining(st store.Store, id string, draining bool) error {
	return st.Update(func(tx store.Tx) error {
		h, err := GetHost(tx, id)
		if err != nil {
			return err
		}
		if h.Draining == draining {
			return nil
		}
		h.Draining = draining
		return store.PutJSON(tx, Hosts, id, h)
	})
}

// Adopt gives this host the WorkSpaces that have no owner: records from before hosts had
// any, on a store where this host is the only one (a single host, or the first of a
// fleet). With other hosts in the store it adopts nothing: whose they were is not known.
func Adopt(st store.Store, self string) (int, error) {
	n := 0
	err := st.Update(func(tx store.Tx) error {
		n = 0
		hosts, err := ListHosts(tx)
		if err != nil {
			return err
		}
		if len(hosts) > 1 || len(hosts) == 1 && hosts[0].ID != self {
			return nil
		}
		all, err := store.ListJSON[workspace.Workspace](tx, store.Workspaces)
		if err != nil {
			return err
		}
		for _, w := range all {
			if w.Host != "" {
				continue
			}
			w.Host = self
			if err := store.PutJSON(tx, store.Workspaces, w.ID, w); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	return n, err
}

// checkHostID refuses what cannot be a host id (a store key: no slash).
func checkHostID(id string) error {
	if !strings.HasPrefix(id, "host-") || len(id) > 64 || strings.ContainsAny(id, "/\x00 ") {
		return catalog.Errorf(catalog.InvalidParameterValues, "host id %q: want host-… as `hostd hosts` lists it", id)
	}
	return nil
}

// CheckHardwareID refuses a hardware identity that cannot be one: internal/hwid writes
// them "dmi-uuid:UUID" or "mac:aa:bb:cc:dd:ee:ff".
func CheckHardwareID(id string) error {
	kind, v, ok := strings.Cut(id, ":")
	if !ok || v == "" || len(id) > 128 || !slices.Contains([]string{"dmi-uuid", "mac"}, kind) || strings.ContainsAny(id, "/\x00 \t\n") {
		return catalog.Errorf(catalog.InvalidParameterValues, "hardware id %q: want dmi-uuid:UUID or mac:aa:bb:cc:dd:ee:ff (the console shows the host's)", id)
	}
	return nil
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}
