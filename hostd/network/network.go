// Package network keeps netcfg's desired state in step with hostd's WorkSpaces. The host's
// network — NICs, br-mgmt and br-primary, IP access control groups, security groups — comes
// from the host config; hostd adds one entry per live WorkSpace and hands the whole state
// to netcfg's reconciler, which makes the WorkSpace's taps (wsm-<id>, wsp-<id>), bridges
// them, firewalls them, and serves the management network's DHCP and metadata. Domains then
// attach to those taps by name.
package network

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

	"deskhost/hostd/store"
	"deskhost/hostd/virt"
	"deskhost/hostd/workspace"
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
}

// New validates the base network (netcfg's config without WorkSpaces) and opens netcfg's
// reconciler on the current network namespace.
func New(base []byte, st store.Store, log *slog.Logger) (*Manager, error) {
	cfg, err := config.Decode(base)
	if err != nil {
		return nil, fmt.Errorf("host network: %w", err)
	}
	if len(cfg.WorkSpaces) > 0 {
		return nil, fmt.Errorf("host network: workspaces are hostd's to list, not the config's")
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

// Desired is the base network plus every WorkSpace on record that is not TERMINATED (a
// stopped WorkSpace keeps its taps, so it starts without waiting for the network).
func (m *Manager) Desired() (*config.Config, error) {
	var all []workspace.Workspace
	if err := m.store.View(func(tx store.Tx) error {
		var err error
		all, err = store.ListJSON[workspace.Workspace](tx, store.Workspaces)
		return err
	}); err != nil {
		return nil, err
	}
	cfg := *m.base
	cfg.WorkSpaces = nil
	cfg.Directories = append([]config.Directory(nil), m.base.Directories...)
	known := map[string]bool{}
	for _, d := range cfg.Directories {
		known[d.ID] = true
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
		cfg.WorkSpaces = append(cfg.WorkSpaces, config.WorkSpace{ID: w.ID, Directory: w.DirectoryID, Hostname: w.ComputerName})
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
	if res.Changed {
		m.log.Info("host network applied", "workspaces", len(cfg.WorkSpaces), "links", res.Links,
			"ms", res.Duration.Milliseconds(), "droppedFlows", len(res.DroppedFlows))
	}
	return nil
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
