// Package network keeps netcfg's desired state in step with hostd's WorkSpaces and catalog.
// The host's network — NICs, br-mgmt and br-primary, directory controllers, security
// groups — comes from the host config; hostd adds the IP access control groups and their
// directory associations from its store (the records the broker and the gateway enforce
// too), one entry per live WorkSpace, and hands the whole state to netcfg's reconciler, which makes the WorkSpace's taps (wsm-<id>, wsp-<id>), bridges
// them, firewalls them, and serves the management network's DHCP and metadata. Domains then
// attach to those taps by name.
package network

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"

	"deskhost/hostd/store"
	"deskhost/hostd/virt"
	"deskhost/hostd/workspace"
	"deskhost/internal/addrpool"
	"deskhost/internal/catalog"
	"deskhost/netcfg/config"
	"deskhost/netcfg/reconcile"
)

// Manager applies the host's network with hostd's WorkSpaces in it.
type Manager struct {
	base  *config.Config // decoded once; never modified (Apply treats configs as read-only)
	r     *reconcile.Reconciler
	store store.Store
	log   *slog.Logger
	mu    sync.Mutex
	// mgmt is the management range netcfg chose, from the last Apply.
	mgmtMu sync.Mutex
	mgmt   netip.Prefix
}

// New validates the base network (netcfg's config without WorkSpaces) and opens netcfg's
// reconciler on the current network namespace. fleetPorts are the TCP ports this host's
// fleet peers reach it on (its fleet port, its etcd member's): the management NIC's
// firewall opens them.
func New(base []byte, fleetPorts []int, st store.Store, log *slog.Logger) (*Manager, error) {
	cfg, err := config.Decode(base)
	if err != nil {
		return nil, fmt.Errorf("host network: %w", err)
	}
	for _, p := range fleetPorts {
		if !slices.Contains(cfg.Host.FleetPorts, p) {
			cfg.Host.FleetPorts = append(cfg.Host.FleetPorts, p)
		}
	}
	if len(cfg.WorkSpaces) > 0 {
		return nil, fmt.Errorf("host network: workspaces are hostd's to list, not the config's")
	}
	if len(cfg.IPGroups) > 0 {
		return nil, fmt.Errorf("host network: ipGroups are catalog records in hostd's store (hostd ipgroups), not the config's")
	}
	for _, d := range cfg.Directories {
		if len(d.IPGroups) > 0 {
			return nil, fmt.Errorf("host network: directory %s: IP group associations are catalog records in hostd's store (hostd ipgroups associate), not the config's", d.ID)
		}
	}
	if _, err := config.Validate(cfg); err != nil {
		return nil, fmt.Errorf("host network: %w", err)
	}
	r, err := reconcile.New(reconcile.Options{Logger: log})
	if err != nil {
		return nil, fmt.Errorf("host network: %w", err)
	}
	return &Manager{base: cfg, r: r, store: st, log: log}, nil
}

// Desired is the base network plus the catalog's IP access control groups and their
// associations with registered directories, and every WorkSpace on record that is not
// TERMINATED (a stopped WorkSpace keeps its taps, so it starts without waiting for the
// network).
func (m *Manager) Desired() (*config.Config, error) {
	var all []workspace.Workspace
	var groups []catalog.IPGroup
	var dirs []catalog.DirectoryRecord
	if err := m.store.View(func(tx store.Tx) error {
		var err error
		if all, err = store.ListJSON[workspace.Workspace](tx, store.Workspaces); err != nil {
			return err
		}
		if groups, err = store.ListJSON[catalog.IPGroup](tx, store.IPGroups); err != nil {
			return err
		}
		dirs, err = store.ListJSON[catalog.DirectoryRecord](tx, store.Directories)
		return err
	}); err != nil {
		return nil, err
	}
	cfg := *m.base
	cfg.WorkSpaces = nil
	cfg.IPGroups = nil
	for _, g := range groups {
		cg := config.IPGroup{ID: g.ID, Name: g.Name, Description: g.Description}
		for _, r := range g.Rules {
			cg.Rules = append(cg.Rules, config.IPRule{Source: r.Source.Prefix.String(), Description: r.Description})
		}
		cfg.IPGroups = append(cfg.IPGroups, cg)
	}
	cfg.Directories = append([]config.Directory(nil), m.base.Directories...)
	known := map[string]bool{}
	for _, d := range cfg.Directories {
		known[d.ID] = true
	}
	for _, d := range dirs {
		if d.Registration == nil {
			continue
		}
		id := d.Definition.ID
		if !known[id] {
			cfg.Directories = append(cfg.Directories, config.Directory{ID: id})
			known[id] = true
		}
		i := slices.IndexFunc(cfg.Directories, func(c config.Directory) bool { return c.ID == id })
		cfg.Directories[i].IPGroups = append([]string(nil), d.Registration.IPGroupIDs...)
	}
	for _, w := range all {
		if w.State == workspace.Terminated {
			continue
		}
		if !known[w.DirectoryID] {
			// A directory with no network settings: all client sources allowed, no
			// controllers to reach.
			cfg.Directories = append(cfg.Directories, config.Directory{ID: w.DirectoryID})
			known[w.DirectoryID] = true
		}
		// The MACs are netcfg's defaults (reconcile.MACs), which NICs below also uses.
		// PrimaryAddress is the address hostd allocated (service/addresses.go): netcfg's
		// firewall lets the primary NIC use it and its DHCP service hands it out.
		cfg.WorkSpaces = append(cfg.WorkSpaces, config.WorkSpace{ID: w.ID, Directory: w.DirectoryID, Hostname: w.ComputerName, UserName: w.UserName,
			PrimaryAddress: w.IPAddress})
	}
	return &cfg, nil
}

// Sync applies the desired network. netcfg changes only what differs, so a Sync with
// nothing new costs a few milliseconds and drops no connection.
func (m *Manager) Sync(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	cfg, err := m.Desired()
	if err != nil {
		return fmt.Errorf("host network: %w", err)
	}
	res, err := m.r.Apply(ctx, cfg)
	if err != nil {
		return fmt.Errorf("host network: %w", err)
	}
	if res.ManagementRange.IsValid() {
		m.mgmtMu.Lock()
		m.mgmt = res.ManagementRange
		m.mgmtMu.Unlock()
	}
	if res.Changed {
		m.log.Info("host network applied", "workspaces", len(cfg.WorkSpaces), "links", res.Links,
			"duration", res.Duration, "droppedFlows", len(res.DroppedFlows))
	}
	return nil
}

// ManagementRange is the range netcfg chose for the WorkSpaces' management network, once
// the network has been applied.
func (m *Manager) ManagementRange() (netip.Prefix, bool) {
	m.mgmtMu.Lock()
	defer m.mgmtMu.Unlock()
	return m.mgmt, m.mgmt.IsValid()
}

// PrimaryPool is the range the WorkSpaces' primary addresses come from
// (primaryNetwork.dhcp.pool), if netcfg serves them by DHCP.
func (m *Manager) PrimaryPool() (addrpool.Range, bool) {
	d := m.base.PrimaryNetwork.DHCP
	if d == nil {
		return addrpool.Range{}, false
	}
	r, err := addrpool.Parse(d.Pool) // validated in New
	return r, err == nil
}

// NICs are where WorkSpace id's guest NICs attach: the taps netcfg makes for it.
func (m *Manager) NICs(id string) (management, primary virt.NIC, err error) {
	mt, pt, err := reconcile.TapNames(id)
	if err != nil {
		return virt.NIC{}, virt.NIC{}, err
	}
	mm, pm, err := reconcile.MACs(id)
	if err != nil {
		return virt.NIC{}, virt.NIC{}, err
	}
	return virt.NIC{Tap: mt, MAC: mm.String()}, virt.NIC{Tap: pt, MAC: pm.String()}, nil
}

// Serve answers DHCP and metadata requests on the management network until ctx ends.
func (m *Manager) Serve(ctx context.Context) error { return m.r.Serve(ctx) }

// Close releases netcfg's netlink sockets.
func (m *Manager) Close() error { return m.r.Close() }
