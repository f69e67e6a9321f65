// Package controller converges libvirt to the WorkSpaces in hostd's store. The store holds
// what should be; libvirt holds what is; a worker per WorkSpace compares them and acts,
// one step at a time, each step safe to repeat. After a crash, or on any wake-up, the
// worker reads the record again and picks up where the last one stopped: a transitional
// state (PENDING, REBOOTING, STOPPING, STARTING, TERMINATING) is an operation still owed.
//
// Every teardown — terminate, stop, reboot, a guest that crashed or was destroyed — ends
// with the guest's RAM zeroed and verified (hostd/memscrub) before hostd lets it go.
package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"deskhost/hostd/confine"
	"deskhost/hostd/fleet"
	"deskhost/hostd/keystore"
	"deskhost/hostd/memscrub"
	"deskhost/hostd/store"
	"deskhost/hostd/virt"
	"deskhost/hostd/workspace"
	"deskhost/internal/catalog"
	"deskhost/internal/runpaths"
)

// ImageFiles are the files of a desktop image a domain boots from.
type ImageFiles struct {
	Kernel, Initrd, Root, Cmdline string
}

// Images finds an image's files by id: images are catalog records, added and removed
// while hostd runs.
type Images interface {
	ImageFiles(id string) (ImageFiles, error)
}

// StaticImages is a fixed set of images.
type StaticImages map[string]ImageFiles

func (m StaticImages) ImageFiles(id string) (ImageFiles, error) {
	img, ok := m[id]
	if !ok {
		return ImageFiles{}, fmt.Errorf("image %s is not on this host", id)
	}
	return img, nil
}

// Agent is what the controller asks of a guest agent.
type Agent interface {
	// Ping asks for the agent's status; nil means the guest is up and answering.
	Ping(ctx context.Context) error
	// Shutdown asks the guest to power off cleanly.
	Shutdown(ctx context.Context) error
	Close() error
}

// Network is the host network hostd keeps in step with its WorkSpaces (hostd/network).
type Network interface {
	// Sync applies the network with every live WorkSpace in it (their taps, chains).
	Sync(ctx context.Context) error
	// NICs are where a WorkSpace's two guest NICs attach.
	NICs(id string) (management, primary virt.NIC, err error)
}

// Config is the controller's wiring and policy.
type Config struct {
	Store        store.Store
	Conn         *virt.Conn
	Images       Images
	ComputeTypes map[catalog.ComputeType]catalog.Hardware
	// Keys opens encrypted WorkSpaces' data keys (hostd/keystore); nil: none boots.
	Keys *keystore.Master

	// Owner is this host's id. The controller acts only on the WorkSpaces whose record
	// names it as their host, and marks the domains it makes with it (libvirt metadata).
	// Several hostds may share one libvirtd (tests do); each removes only orphans carrying
	// its own mark.
	Owner string
	// Fence, when set, is called inside every transaction in which the controller writes a
	// WorkSpace record (hostd/fleet.Fence: this host's lease must be live); its error
	// refuses the write. A VM is started only after such a write.
	Fence func(tx store.Tx) error

	DataDir    string // volumes/ (the libvirt pool) and run/<id>/ (sockets, serial log)
	Pool       string // libvirt storage pool name
	DomainType string // "kvm", or "qemu" where guests run under TCG

	// Network, when set, is netcfg managing the host's network: WorkSpaces attach to the
	// taps it makes. Without it (development machines) they attach to the two bridges.
	Network                         Network
	ManagementBridge, PrimaryBridge string

	ProvisionTimeout time.Duration // boot to agent answer, for create, start and reboot
	ShutdownTimeout  time.Duration // graceful power-off before it is forced
	// The agent's status checks (guide §19): asked every HealthInterval, each answered
	// within HealthTimeout (tolerant of a busy guest); HealthMisses consecutive misses make
	// a WorkSpace UNHEALTHY, the first answer makes it AVAILABLE again. Within HealthGrace
	// of a boot, restart or start no miss counts: the guide's "If you just rebooted or
	// started your WorkSpace, wait a few minutes".
	HealthInterval time.Duration
	HealthTimeout  time.Duration
	HealthMisses   int
	HealthGrace    time.Duration
	// SnapshotInterval is how often a healthy WorkSpace gets a snapshot pair; zero is the
	// guide's 12 hours.
	SnapshotInterval time.Duration
	// SiteZone is the site's time zone, in which the guide's maintenance windows open
	// (hostd/maintenance). nil: no automatic maintenance.
	SiteZone            *time.Location
	TerminatedRetention time.Duration

	// Preflight is run before any WorkSpace boots; an error keeps VMs from starting.
	Preflight func() error
	// HugePages backs guest RAM with 2 MiB pages, added to the kernel's pool as WorkSpaces
	// start (hostd/memscrub.WithHugePages).
	HugePages bool
	// Confine is how qemu runs: its user, the display group, cgroup limits (hostd/confine).
	// The zero Policy leaves qemu to libvirt's qemu.conf and sets no limits.
	Confine confine.Policy
	// DialAgent connects to a guest agent's channel socket.
	DialAgent func(ctx context.Context, socket string) (Agent, error)

	// Observer, when set, receives scrub and reconcile timings (hostd's Prometheus
	// exporter, hostd/metrics).
	Observer Observer

	Log *slog.Logger
	Now func() time.Time
}

// Observer receives the controller's timings.
type Observer interface {
	Scrubbed(bytes uint64, d time.Duration)
	Reconciled(d time.Duration)
}

// Controller runs the per-WorkSpace workers.
type Controller struct {
	cfg  Config
	root context.Context

	mu      sync.Mutex
	workers map[string]*worker
	held    map[string]*memscrub.Held // guest RAM, by WorkSpace id
	idle    *sync.Cond                // signalled when a worker settles
	// seen is, per WorkSpace, the desired state the controller last read or wrote and the
	// revision it read at: a watched change asks something new only beyond both (watch.go).
	seen map[string]seen

	// Test hooks. scrubbing sees the held RAM once qemu is gone, right before it is zeroed
	// (zeroed false) and right after (zeroed true), before it is released; skipZero
	// releases RAM without zeroing it, to prove the tests would notice. resuming runs when
	// a new guest's RAM is held and its vCPUs are about to run for the first time. holdRAM
	// stands in for memscrub.Hold. coldStop stops AutoStop WorkSpaces cold, as before
	// hibernation (the baseline hibernation is measured against).
	scrubbing func(id string, h *memscrub.Held, zeroed bool)
	skipZero  atomic.Bool
	coldStop  atomic.Bool
	resuming  func(id string)
	holdRAM   func(pid int, ramBytes int64) (*memscrub.Held, error)
	// reconciling, if set, is told when a reconcile of id starts (the watch benchmark).
	reconciling func(id string)
	// grown, if set, is told how long an online volume growth took (block resize and
	// the guest's filesystem).
	grown func(id string, r workspace.Resource, d time.Duration)
	// modifying, if set, runs when the controller starts on an UPDATING WorkSpace's change.
	modifying func(id string, r workspace.Resource)
	// snapshotted, if set, is told how long a snapshot took in all and with the guest's
	// filesystems frozen (the snapshot test's figures).
	snapshotted func(id string, total, frozen time.Duration)
	// captured, if set, is told how long an image capture took in all, until the
	// WorkSpace's copy was cut, and in that copy's qemu-img convert (the capture test's
	// figures).
	captured func(id string, total, copied, convert time.Duration)
}

type worker struct {
	kick chan struct{} // cancel the reconcile in progress and start again
	poke chan struct{} // reconcile again after the one in progress
	busy bool
}

// New makes a controller; Run starts it.
func New(cfg Config) *Controller {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.HealthTimeout <= 0 {
		cfg.HealthTimeout = 10 * time.Second
	}
	if cfg.SnapshotInterval <= 0 {
		cfg.SnapshotInterval = workspace.SnapshotInterval
	}
	if cfg.HealthMisses < 1 {
		cfg.HealthMisses = 1
	}
	c := &Controller{cfg: cfg, workers: map[string]*worker{}, held: map[string]*memscrub.Held{}, seen: map[string]seen{}, holdRAM: memscrub.Hold}
	c.idle = sync.NewCond(&c.mu)
	return c
}

// Prefix is how WorkSpace domains and volumes are named: by WorkSpace id.
const Prefix = "ws-"

// Run reconciles every WorkSpace, then follows libvirt's events and the store's changes
// (watch.go), and re-checks everything periodically, until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	if err := c.cfg.Conn.EnsurePool(c.cfg.Pool, c.volumeDir()); err != nil {
		return err
	}
	if c.cfg.Confine.Unprivileged() {
		// qemu must reach its volumes and runtime directory below the data dir, without
		// listing it: search permission only, for everyone.
		for _, d := range []string{c.cfg.DataDir, filepath.Join(c.cfg.DataDir, "run")} {
			if err := os.MkdirAll(d, 0o711); err != nil {
				return err
			}
			if err := os.Chmod(d, 0o711); err != nil {
				return err
			}
		}
	}
	events, err := c.cfg.Conn.Events(ctx)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.root = ctx // workers may start from here on
	c.mu.Unlock()
	if w, ok := c.cfg.Store.(store.Watcher); ok {
		// Before the first sweep, so that a change is either in the sweep or watched.
		go c.follow(ctx, w)
	}
	if err := c.Sweep(); err != nil {
		c.cfg.Log.Error("sweep", "err", err)
	}
	tick := time.NewTicker(max(c.cfg.HealthInterval, time.Second))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-c.cfg.Conn.Disconnected():
			return errors.New("lost the connection to libvirtd")
		case ev, ok := <-events:
			if !ok {
				return errors.New("libvirt event stream closed")
			}
			if strings.HasPrefix(ev.Domain, Prefix) {
				c.cfg.Log.Debug("libvirt event", "workspace", ev.Domain, "event", ev.Kind)
				if ev.Stopped {
					c.Poke(ev.Domain) // a teardown: scrub now, not at the next tick
				}
			}
		case <-tick.C:
			if err := c.Sweep(); err != nil {
				c.cfg.Log.Error("sweep", "err", err)
			}
		}
	}
}

// Sweep wakes the worker of every WorkSpace on record and of every domain or volume that
// has none (an orphan), and forgets TERMINATED records past their retention.
func (c *Controller) Sweep() error {
	var all []workspace.Workspace
	if err := c.cfg.Store.View(func(tx store.Tx) error {
		var err error
		all, err = store.ListJSON[workspace.Workspace](tx, store.Workspaces)
		return err
	}); err != nil {
		return fmt.Errorf("sweep: %w", err)
	}
	if err := c.syncNetwork(c.root); err != nil {
		c.cfg.Log.Error("sweep: host network", "err", err)
	}
	now := c.cfg.Now()
	known := map[string]bool{}
	for _, w := range all {
		if !c.mine(w) {
			continue // another host's: a domain of it here is an orphan (below)
		}
		if w.State == workspace.Terminated && now.Sub(w.StateSince) > c.cfg.TerminatedRetention {
			if err := c.cfg.Store.Update(func(tx store.Tx) error {
				if c.cfg.Fence != nil {
					if err := c.cfg.Fence(tx); err != nil {
						return err
					}
				}
				// Its tags go with it: they are catalog records, so the revision moves.
				if _, err := tx.Get(store.Tags, w.ID); err == nil {
					if err := tx.Delete(store.Tags, w.ID); err != nil {
						return err
					}
					if _, err := store.BumpCatalogRevision(tx); err != nil {
						return err
					}
				}
				if err := releaseAddressTx(tx, w); err != nil {
					return err
				}
				return tx.Delete(store.Workspaces, w.ID)
			}); err != nil {
				return err
			}
			c.cfg.Log.Info("forgot terminated workspace", "workspace", w.ID)
			continue
		}
		known[w.ID] = true
		if w.State != workspace.Terminated {
			c.Poke(w.ID)
		}
	}
	if err := c.sweepImports(); err != nil {
		return err
	}
	doms, err := c.cfg.Conn.Domains(Prefix)
	if err != nil {
		return err
	}
	vols, err := c.cfg.Conn.Volumes(c.cfg.Pool, Prefix)
	if err != nil {
		return err
	}
	seen := map[string]bool{}
	for _, d := range doms {
		if known[d] {
			seen[d] = true
			continue
		}
		if owner, err := c.cfg.Conn.Owner(d); err == nil && owner == c.cfg.Owner {
			seen[d] = true
		}
	}
	for _, v := range vols {
		seen[volumeOwner(v.Name)] = true
	}
	for id := range seen {
		if !known[id] {
			c.Poke(id)
		}
	}
	// A TERMINATED record whose domain or volumes reappeared (a crash mid-terminate).
	for _, w := range all {
		if c.mine(w) && w.State == workspace.Terminated && seen[w.ID] {
			c.Poke(w.ID)
		}
	}
	return nil
}

// mine reports whether w is this host's to act on: its record names this host.
func (c *Controller) mine(w workspace.Workspace) bool { return w.Host == c.cfg.Owner }

func volumeOwner(vol string) string {
	id, _, _ := strings.Cut(vol, ".")
	id = strings.TrimSuffix(id, "-root")
	return strings.TrimSuffix(id, "-user")
}

// Wake tells id's worker that its desired state changed: a reconcile in progress is
// cancelled (its waits would be for an operation that no longer applies) and started
// again. The API calls it.
func (c *Controller) Wake(id string) { c.signal(id, true) }

// Poke asks id's worker to reconcile soon without interrupting one in progress: libvirt
// events and sweeps use it, since the reconcile running may be waiting for just that event.
func (c *Controller) Poke(id string) { c.signal(id, false) }

func (c *Controller) signal(id string, cancel bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	w, ok := c.workers[id]
	if !ok {
		if c.root == nil {
			return // not running yet: Run's first sweep will find it
		}
		w = &worker{kick: make(chan struct{}, 1), poke: make(chan struct{}, 1), busy: true}
		c.workers[id] = w
		go c.work(id, w)
		return
	}
	ch := w.poke
	if cancel {
		ch = w.kick
	}
	select {
	case ch <- struct{}{}:
	default:
	}
}

// WaitIdle blocks until no worker is mid-reconcile (for tests and orderly shutdown).
func (c *Controller) WaitIdle() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		busy := false
		for _, w := range c.workers {
			busy = busy || w.busy
		}
		if !busy {
			return
		}
		c.idle.Wait()
	}
}

// work is one WorkSpace's worker: reconcile, then wait for a kick, a poke or the health
// tick. A kick that arrives mid-reconcile cancels the waits inside it (an operator
// terminating a WorkSpace that is still booting must not wait for the boot).
func (c *Controller) work(id string, w *worker) {
	h := &health{}
	for {
		ctx, cancel := context.WithCancel(c.root)
		done := make(chan bool, 1)
		go func() { done <- c.reconcile(ctx, id, h) }()
		var finished, again bool
		select {
		case finished = <-done:
		case <-w.kick:
			cancel()
			finished = <-done
			again = true
		}
		cancel()
		select {
		case <-w.poke:
			again = true
		default:
		}
		if again && c.root.Err() == nil {
			continue
		}
		if finished || c.root.Err() != nil {
			c.mu.Lock()
			// A signal may have raced with the end: honour it.
			select {
			case <-w.kick:
				c.mu.Unlock()
				continue
			case <-w.poke:
				c.mu.Unlock()
				continue
			default:
			}
			delete(c.workers, id)
			c.idle.Broadcast()
			c.mu.Unlock()
			return
		}
		c.setBusy(w, false)
		select {
		case <-w.kick:
		case <-w.poke:
		case <-time.After(c.cfg.HealthInterval):
		case <-c.root.Done():
		}
		c.setBusy(w, true)
	}
}

func (c *Controller) setBusy(w *worker, b bool) {
	c.mu.Lock()
	w.busy = b
	c.idle.Broadcast()
	c.mu.Unlock()
}

// reconcile does what id's record asks. It returns true when the worker has nothing left to
// watch (the WorkSpace is gone).
func (c *Controller) reconcile(ctx context.Context, id string, h *health) bool {
	if o := c.cfg.Observer; o != nil {
		defer func(start time.Time) { o.Reconciled(time.Since(start)) }(time.Now())
	}
	log := c.cfg.Log.With("workspace", id)
	if c.reconciling != nil {
		c.reconciling(id)
	}
	if strings.HasPrefix(id, catalog.KindImage.Prefix) { // an image import (import.go)
		return c.reconcileImport(ctx, id)
	}
	w, err := c.load(id)
	if err == nil && !c.mine(w) {
		// Another host's WorkSpace: whatever of it is here (a domain this host made before
		// the record went elsewhere) must go, or it would run twice.
		err = store.ErrNotFound
	}
	if errors.Is(err, store.ErrNotFound) {
		if err := c.removeOrphan(ctx, id); err != nil {
			log.Error("remove orphan", "err", err)
			return false
		}
		return true
	}
	if err != nil {
		log.Error("load", "err", err)
		return false
	}
	if !h.tidied && w.State != workspace.Terminated {
		if err := c.removeUnfinishedSnapshots(w.ID); err != nil {
			log.Error("remove unfinished snapshot files", "err", err)
		} else {
			h.tidied = true
		}
	}
	if w, err = c.maintain(w); err != nil {
		if !errors.Is(err, errSuperseded) {
			log.Error("maintenance window", "err", err)
		}
		return false
	}
	switch w.State {
	case workspace.Pending:
		if w.Migration != nil && w.Migration.Source != "" {
			err = c.migrateTarget(ctx, w, h)
		} else {
			err = c.provision(ctx, w, h)
		}
	case workspace.Rebooting:
		err = c.reboot(ctx, w, h)
	case workspace.Starting:
		err = c.boot(ctx, w, workspace.Starting, h)
	case workspace.Stopping:
		err = c.stop(ctx, w)
	case workspace.Rebuilding, workspace.Restoring:
		err = c.rebuildOrRestore(ctx, w, h)
	case workspace.Suspended:
		err = c.capture(ctx, w)
	case workspace.Updating:
		// Two operations pass through UPDATING: a migration's source (migrate.go) and a
		// compute or volume change (modify).
		if w.MigrationSource() {
			err = c.migrateSource(ctx, w)
		} else {
			err = c.modify(ctx, w, h)
		}
	case workspace.Terminating:
		err = c.terminate(ctx, w)
	case workspace.Terminated:
		if err = c.teardown(ctx, w.ID); err == nil {
			return true
		}
	case workspace.Stopped:
		err = c.keepStopped(ctx, w)
	case workspace.Error:
		err = c.keepError(w)
	default: // AVAILABLE, UNHEALTHY, IMPAIRED, ADMIN_MAINTENANCE: keep it running and healthy
		err = c.keepRunning(ctx, w, h)
	}
	switch {
	case err == nil, errors.Is(err, errSuperseded):
	case fleet.IsFenced(err):
		log.Warn("not acting: this host has no live lease", "state", w.State, "err", err)
	case ctx.Err() != nil:
		log.Debug("reconcile interrupted", "state", w.State, "err", err)
	default:
		log.Error("reconcile", "state", w.State, "err", err)
	}
	return false
}

// errSuperseded means the record changed under the worker (a new operation was accepted):
// the worker's result no longer applies and it will reconcile again.
var errSuperseded = errors.New("superseded by a newer operation")

func (c *Controller) load(id string) (workspace.Workspace, error) {
	var w workspace.Workspace
	err := c.cfg.Store.View(func(tx store.Tx) error {
		var err error
		if w, err = store.GetJSON[workspace.Workspace](tx, store.Workspaces, id); err == nil && c.mine(w) {
			c.remember(tx, w)
		}
		return err
	})
	return w, err
}

// transition moves id from state from, applying fn, unless the record has moved on.
func (c *Controller) transition(id string, from workspace.State, fn func(*workspace.Workspace)) error {
	var w workspace.Workspace
	err := c.cfg.Store.Update(func(tx store.Tx) error {
		var err error
		if w, err = store.GetJSON[workspace.Workspace](tx, store.Workspaces, id); err != nil {
			return err
		}
		if w.State != from || !c.mine(w) {
			return errSuperseded
		}
		if c.cfg.Fence != nil {
			if err := c.cfg.Fence(tx); err != nil {
				return err
			}
		}
		fn(&w)
		w.Updated = c.cfg.Now()
		c.remember(nil, w) // before the commit: its watched change may come before Update returns
		return store.PutJSON(tx, store.Workspaces, id, w)
	})
	if err == nil && w.State != from {
		c.cfg.Log.Info("workspace state", "workspace", id, "from", string(from), "to", string(w.State), "reason", w.ErrorMessage)
	}
	return err
}

func (c *Controller) set(id string, from, to workspace.State) error {
	return c.transition(id, from, func(w *workspace.Workspace) { w.SetState(to, c.cfg.Now()) })
}

func (c *Controller) fail(id string, from workspace.State, code string, err error) error {
	return c.transition(id, from, func(w *workspace.Workspace) { w.Fail(code, err.Error(), c.cfg.Now()) })
}

// runDir holds a WorkSpace's sockets and serial log (internal/runpaths: zeroclient's
// gateway finds the VNC socket there too).
func (c *Controller) runDir(id string) string { return runpaths.Dir(c.cfg.DataDir, id) }

// VNCSocket is where a WorkSpace's display is served.
func (c *Controller) VNCSocket(id string) string { return runpaths.VNCSocket(c.cfg.DataDir, id) }

// AgentSocket is a WorkSpace's guest agent channel.
func (c *Controller) AgentSocket(id string) string { return runpaths.AgentSocket(c.cfg.DataDir, id) }

// SerialLog is a WorkSpace's serial console log.
func (c *Controller) SerialLog(id string) string { return runpaths.SerialLog(c.cfg.DataDir, id) }

func rootVolume(id string) string { return id + "-root.qcow2" }
func userVolume(id string) string { return id + "-user.qcow2" }

func (c *Controller) volumeDir() string { return filepath.Join(c.cfg.DataDir, "volumes") }

// volumePaths are id's volumes in the pool directory, whether or not they exist.
func (c *Controller) volumePaths(id string) []string {
	return []string{filepath.Join(c.volumeDir(), rootVolume(id)), filepath.Join(c.volumeDir(), userVolume(id))}
}

func (c *Controller) spec(w workspace.Workspace, root, user string) (virt.Spec, error) {
	img, err := c.cfg.Images.ImageFiles(w.ImageID)
	if err != nil {
		return virt.Spec{}, err
	}
	hw, ok := c.cfg.ComputeTypes[catalog.ComputeType(w.Properties.ComputeTypeName)]
	if !ok {
		return virt.Spec{}, fmt.Errorf("compute type %s has no hardware on this host", w.Properties.ComputeTypeName)
	}
	mgmt, primary := virt.NIC{Bridge: c.cfg.ManagementBridge}, virt.NIC{Bridge: c.cfg.PrimaryBridge}
	if c.cfg.Network != nil {
		if mgmt, primary, err = c.cfg.Network.NICs(w.ID); err != nil {
			return virt.Spec{}, err
		}
	}
	return virt.Spec{
		Name:        w.ID,
		Owner:       c.cfg.Owner,
		Type:        c.cfg.DomainType,
		VCPUs:       hw.VCPUs,
		MemoryMiB:   hw.MemoryMiB,
		HugePages:   c.cfg.HugePages,
		RunAs:       c.cfg.Confine.Label(),
		Limits:      c.cfg.Confine.Limits,
		Kernel:      img.Kernel,
		Initrd:      img.Initrd,
		Cmdline:     strings.TrimSpace(img.Cmdline + " deskhost.workspace=" + w.ID + " deskhost.user=" + url.QueryEscape(w.UserName)),
		RootVolume:  root,
		UserVolume:  user,
		Management:  mgmt,
		Primary:     primary,
		VNCSocket:   c.VNCSocket(w.ID),
		AgentSocket: c.AgentSocket(w.ID),
		SerialLog:   c.SerialLog(w.ID),
	}, nil
}

// ramBytes is the RAM of id's running domain, as libvirt has it: the size of the memfd to
// hold (the record's compute type may have changed since the guest started, and an orphan
// has no record).
func (c *Controller) ramBytes(id string) (int64, error) {
	d, err := c.cfg.Conn.XML(id)
	if err != nil {
		return 0, err
	}
	if d.Memory == nil {
		return 0, fmt.Errorf("domain %s has no memory size", id)
	}
	return virt.Bytes(d.Memory.Value, d.Memory.Unit)
}

// ensureVolumes creates the root volume (a copy-on-write child of the image) and the user
// volume if they are missing, at their logical sizes.
func (c *Controller) ensureVolumes(w workspace.Workspace) (root, user string, err error) {
	img, err := c.cfg.Images.ImageFiles(w.ImageID)
	if err != nil {
		return "", "", permanent{err}
	}
	rootSecret, userSecret, pass, err := c.volumeSecrets(w)
	if err != nil {
		if errors.As(err, new(keyError)) {
			return "", "", permanent{err}
		}
		return "", "", err
	}
	create := func(name string, gib int, backing, secret string) (virt.Volume, error) {
		if secret != "" {
			return c.cfg.Conn.CreateEncryptedVolume(c.cfg.Pool, name, gib, backing, pass)
		}
		return c.cfg.Conn.CreateVolume(c.cfg.Pool, name, gib, backing)
	}
	r, err := create(rootVolume(w.ID), w.Properties.RootVolumeSizeGib, img.Root, rootSecret)
	if err != nil {
		return "", "", err
	}
	u, err := create(userVolume(w.ID), w.Properties.UserVolumeSizeGib, "", userSecret)
	if err != nil {
		return "", "", err
	}
	return r.Path, u.Path, nil
}

// ensureRunning defines and starts w's domain if it is not running, and holds its RAM.
//
// A new guest starts paused. Its RAM is held before its vCPUs run their first instruction,
// so no page the guest ever wrote can be freed unheld; if the RAM cannot be held, the
// guest is destroyed without having run.
func (c *Controller) ensureRunning(ctx context.Context, w workspace.Workspace) error {
	st, err := c.cfg.Conn.State(w.ID)
	if err != nil {
		return err
	}
	if st.Active() {
		if err := c.hold(w.ID, false); err != nil {
			return err
		}
		if w.Hibernated { // restored by a hostd that stopped before it scrubbed the saved state
			if _, err := memscrub.RemoveSavedState(c.savedState(w.ID)); err != nil {
				return err
			}
			if err := c.transition(w.ID, w.State, func(r *workspace.Workspace) { r.Hibernated = false }); err != nil {
				return err
			}
		}
		if st == virt.Paused { // a start hostd did not finish (it stopped before the resume)
			return c.cfg.Conn.Resume(w.ID)
		}
		return nil
	}
	if err := c.guestGone(w.ID); err != nil { // a previous run's RAM, if still held
		return err
	}
	if c.cfg.Preflight != nil {
		if err := c.cfg.Preflight(); err != nil {
			return permanent{err}
		}
	}
	root, user, err := c.ensureVolumes(w)
	if err != nil {
		return err
	}
	spec, err := c.spec(w, root, user)
	if err != nil {
		return permanent{err}
	}
	if w.Encryption.Root { // volumeSecrets (in ensureVolumes) defined them
		spec.RootSecret = virt.VolumeSecretUUID(c.volumePaths(w.ID)[0])
	}
	if w.Encryption.User {
		spec.UserSecret = virt.VolumeSecretUUID(c.volumePaths(w.ID)[1])
	}
	if err := os.MkdirAll(c.runDir(w.ID), 0o700); err != nil {
		return err
	}
	// Each boot's console in a log of its own; the previous boot's is kept beside it.
	if err := os.Rename(c.SerialLog(w.ID), c.SerialLog(w.ID)+".1"); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	img, err := c.cfg.Images.ImageFiles(w.ImageID)
	if err != nil {
		return permanent{err}
	}
	if err := c.cfg.Confine.Prepare(c.runDir(w.ID), []string{root, user}, []string{img.Kernel, img.Initrd, img.Root}); err != nil {
		return permanent{err}
	}
	if c.cfg.Network != nil { // the taps must exist before qemu opens them
		if err := c.cfg.Network.Sync(ctx); err != nil {
			return err
		}
	}
	// Defined afresh on every boot, so a changed bundle or host setting takes effect.
	if err := c.cfg.Conn.Define(spec); err != nil {
		return err
	}
	// The boot is written first, in a transaction guarded by this host's lease and the
	// record as read (fencing): a host whose lease expired, or whose record changed
	// meanwhile, starts nothing.
	if err := c.transition(w.ID, w.State, func(r *workspace.Workspace) { r.BootedAt = c.cfg.Now() }); err != nil {
		return err
	}
	start := func() error { return c.cfg.Conn.StartPaused(w.ID) }
	resumed := false
	if w.Hibernated {
		// Resume what AutoStop saved; if the saved state cannot be restored, boot afresh
		// and say so (the record keeps why until the next state change).
		saved := c.savedState(w.ID)
		start = func() error {
			err := c.cfg.Conn.RestorePaused(saved)
			if err == nil {
				resumed = true
				return nil
			}
			c.cfg.Log.Warn("saved state not restored; booting afresh", "workspace", w.ID, "err", err)
			if _, serr := memscrub.RemoveSavedState(saved); serr != nil {
				return fmt.Errorf("%v; then scrubbing it failed: %w", err, serr)
			}
			if terr := c.transition(w.ID, w.State, func(r *workspace.Workspace) {
				r.Hibernated = false
				r.ResumeFailed = "the saved state could not be restored, so the WorkSpace booted afresh and the applications that were open are lost: " + err.Error()
			}); terr != nil {
				return terr
			}
			return c.cfg.Conn.StartPaused(w.ID)
		}
	}
	if c.cfg.HugePages {
		added, err := memscrub.WithHugePages(int64(spec.MemoryMiB)<<20, start)
		if added > 0 {
			c.cfg.Log.Info("huge page pool grown", "workspace", w.ID, "pages", added)
		}
		if err != nil {
			return err
		}
	} else if err := start(); err != nil {
		return err
	}
	if err := c.hold(w.ID, true); err != nil {
		if derr := c.cfg.Conn.Destroy(w.ID); derr != nil {
			return fmt.Errorf("%w; destroying the guest, which never ran, failed too: %v", err, derr)
		}
		return fmt.Errorf("%w; the guest was destroyed before it ran", err)
	}
	if err := c.cfg.Confine.OpenDisplay(c.VNCSocket(w.ID)); err != nil {
		_ = c.cfg.Conn.Destroy(w.ID)
		return err
	}
	if c.resuming != nil {
		c.resuming(w.ID)
	}
	if err := c.cfg.Conn.Resume(w.ID); err != nil {
		return err
	}
	if resumed {
		n, err := memscrub.RemoveSavedState(c.savedState(w.ID))
		if err != nil {
			return err // retried: the guest runs, and the next attempt scrubs again
		}
		if err := c.transition(w.ID, w.State, func(r *workspace.Workspace) { r.Hibernated = false }); err != nil {
			return err
		}
		c.cfg.Log.Info("domain resumed from its saved state", "workspace", w.ID, "savedBytes", n)
		return nil
	}
	c.cfg.Log.Info("domain started", "workspace", w.ID, "memoryMiB", spec.MemoryMiB, "vcpus", spec.VCPUs,
		"hugePages", spec.HugePages, "runAs", spec.RunAs, "limits", spec.Limits)
	return nil
}

// savedState is where AutoStop's stop keeps a WorkSpace's saved state: its guest's RAM on
// disk, in a directory only root reads.
func (c *Controller) savedState(id string) string {
	return filepath.Join(c.cfg.DataDir, "saved", id+".save")
}

// hibernate saves a running guest's state to disk and stops its qemu; the guest's RAM is
// then scrubbed as after any stop. It reports whether the state was saved; when it was
// not, the guest still runs (or is gone) and the caller stops it cold.
func (c *Controller) hibernate(id string) (bool, error) {
	st, err := c.cfg.Conn.State(id)
	if err != nil || !st.Active() {
		return false, err
	}
	if err := c.hold(id, false); err != nil {
		return false, err
	}
	path := c.savedState(id)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return false, err
	}
	if err := os.Chmod(filepath.Dir(path), 0o700); err != nil {
		return false, err
	}
	if _, err := memscrub.RemoveSavedState(path); err != nil { // a stale one
		return false, err
	}
	t0 := time.Now()
	if err := c.cfg.Conn.Save(id, path); err != nil {
		if _, serr := memscrub.RemoveSavedState(path); serr != nil {
			err = fmt.Errorf("%w; scrubbing what was written failed too: %v", err, serr)
		}
		return false, err
	}
	// Root's alone, whoever libvirt wrote it as.
	if err := errors.Join(os.Chown(path, 0, 0), os.Chmod(path, 0o600)); err != nil {
		return true, fmt.Errorf("saved state %s: %w", path, err)
	}
	fi, _ := os.Stat(path)
	c.cfg.Log.Info("guest state saved", "workspace", id, "bytes", fi.Size(), "duration", time.Since(t0))
	return true, c.guestGone(id)
}

// memoryError is a guest whose RAM hostd cannot hold or scrub. Its WorkSpace goes to ERROR
// with the reason and stays out of use until the operator acts; the guest is paused, not
// destroyed, while its RAM is not held, and held RAM that failed its scrub stays held.
type memoryError struct {
	code string
	err  error
}

func (e *memoryError) Error() string { return e.err.Error() }
func (e *memoryError) Unwrap() error { return e.err }

// failureCode is the error code for err: a memory error's own, else def.
func failureCode(err error, def string) string {
	var m *memoryError
	if errors.As(err, &m) {
		return m.code
	}
	if errors.As(err, new(keyError)) {
		return KeyUnavailable
	}
	return def
}

// hold opens the guest's RAM so it can be scrubbed after the guest is gone, unless hostd
// holds it already. A guest that has run (not fresh) whose RAM cannot be held is paused:
// destroying it would free its pages unscrubbed, and letting it run would let it write more
// of them. A fresh guest has not run yet; its caller destroys it.
func (c *Controller) hold(id string, fresh bool) error {
	pid, _, err := virt.QemuProcess(id)
	if err != nil {
		if st, serr := c.cfg.Conn.State(id); serr == nil && !st.Active() {
			// The guest is already gone (it died right after it started): there is nothing
			// to hold, and nothing to wait for.
			return fmt.Errorf("%w (see %s)", errGuestStopped, c.SerialLog(id))
		}
		return err
	}
	c.mu.Lock()
	h := c.held[id]
	c.mu.Unlock()
	if h != nil && h.PID() == pid {
		return nil
	}
	if h != nil { // RAM of an earlier qemu of this WorkSpace: it is gone, scrub it first
		if err := c.scrub(id); err != nil {
			return err
		}
	}
	size, err := c.ramBytes(id)
	if err == nil {
		h, err = c.holdRAM(pid, size)
	}
	if err != nil {
		err = fmt.Errorf("cannot hold the guest's RAM for scrubbing: %w", err)
		if !fresh {
			if perr := c.cfg.Conn.Suspend(id); perr != nil {
				err = fmt.Errorf("%w; pausing the guest failed too: %v", err, perr)
			} else {
				err = fmt.Errorf("%w; the guest is paused, not destroyed, so that its memory is not freed unscrubbed", err)
			}
		}
		return &memoryError{"MemoryHoldFailed", err}
	}
	c.mu.Lock()
	c.held[id] = h
	c.mu.Unlock()
	return nil
}

// guestGone is what follows a guest's end: its RAM scrubbed, its volumes taken back from
// qemu's user.
func (c *Controller) guestGone(id string) error {
	// libvirt reports a domain stopped (or crashed) while its qemu may still be exiting;
	// the scrub must wait for the process to be gone.
	c.mu.Lock()
	h := c.held[id]
	c.mu.Unlock()
	for deadline := time.Now().Add(10 * time.Second); h != nil && h.Running() && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	if err := c.scrub(id); err != nil {
		return err
	}
	return c.cfg.Confine.Reclaim(c.volumePaths(id))
}

// scrub zeroes and releases id's held RAM, if any. Its qemu must be gone. On failure the
// RAM stays held.
func (c *Controller) scrub(id string) error {
	c.mu.Lock()
	h := c.held[id]
	c.mu.Unlock()
	if h == nil {
		return nil
	}
	if h.Running() {
		return fmt.Errorf("scrub guest RAM of qemu %d: %w", h.PID(), memscrub.ErrRunning)
	}
	if c.scrubbing != nil {
		c.scrubbing(id, h, false)
	}
	if c.skipZero.Load() {
		c.cfg.Log.Warn("memory scrub skipped (test hook)", "workspace", id)
		if c.scrubbing != nil {
			c.scrubbing(id, h, true)
		}
		c.mu.Lock()
		delete(c.held, id)
		c.mu.Unlock()
		return h.Release()
	}
	st, err := h.Zero()
	if errors.Is(err, memscrub.ErrRunning) {
		return err
	}
	if err != nil {
		return &memoryError{"MemoryScrubFailed", fmt.Errorf("the guest's RAM failed its scrub and stays held: %w", err)}
	}
	if c.scrubbing != nil {
		c.scrubbing(id, h, true)
	}
	if err := h.Close(); err != nil {
		return &memoryError{"MemoryScrubFailed", fmt.Errorf("the guest's scrubbed RAM stays held: %w", err)}
	}
	c.mu.Lock()
	delete(c.held, id)
	c.mu.Unlock()
	c.cfg.Log.Info("guest memory scrubbed", "workspace", id, "bytes", st.Populated, "duration", st.Duration, "hugePages", h.HugePages())
	if o := c.cfg.Observer; o != nil {
		o.Scrubbed(uint64(st.Populated), st.Duration)
	}
	return nil
}

// powerOff stops w's domain — gracefully first when asked — then scrubs its RAM. The RAM of
// a guest hostd had not held yet (after a restart) is held first, before the guest can
// power itself off; if that fails, the guest is paused and kept, and powerOff fails.
func (c *Controller) powerOff(ctx context.Context, id string, graceful bool) error {
	st, err := c.cfg.Conn.State(id)
	if err != nil {
		return err
	}
	if st.Active() {
		if err := c.hold(id, false); err != nil && !errors.Is(err, errGuestStopped) {
			return err
		}
		if graceful {
			c.gracefulShutdown(ctx, id)
		}
		if st, err = c.cfg.Conn.State(id); err != nil {
			return err
		}
	}
	if st.Active() {
		if err := c.cfg.Conn.Destroy(id); err != nil {
			return err
		}
	}
	return c.guestGone(id)
}

// gracefulShutdown asks the agent (or ACPI) to power off and waits up to ShutdownTimeout.
func (c *Controller) gracefulShutdown(ctx context.Context, id string) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.ShutdownTimeout)
	defer cancel()
	asked := false
	if a, err := c.cfg.DialAgent(ctx, c.AgentSocket(id)); err == nil {
		actx, acancel := context.WithTimeout(ctx, 5*time.Second)
		asked = a.Shutdown(actx) == nil
		acancel()
		a.Close()
	}
	if !asked {
		_ = c.cfg.Conn.Shutdown(id)
	}
	for {
		if st, err := c.cfg.Conn.State(id); err != nil || !st.Active() {
			return
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				c.cfg.Log.Warn("guest did not power off in time; forcing", "workspace", id, "timeout", c.cfg.ShutdownTimeout)
			}
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// waitAgent waits until w's agent answers, or the boot deadline passes.
func (c *Controller) waitAgent(ctx context.Context, w workspace.Workspace) error {
	deadline := w.StateSince.Add(c.cfg.ProvisionTimeout)
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	var last error = errors.New("no answer yet")
	for {
		// Short attempts, so that a guest that died is noticed between them.
		actx, acancel := context.WithTimeout(ctx, 3*time.Second)
		if a, err := c.cfg.DialAgent(actx, c.AgentSocket(w.ID)); err == nil {
			last = a.Ping(actx)
			a.Close()
		} else {
			last = err
		}
		acancel()
		if last == nil {
			return nil
		}
		// The guest may have died while booting.
		if st, err := c.cfg.Conn.State(w.ID); err == nil && !st.Active() {
			return fmt.Errorf("%w (see %s)", errGuestStopped, c.SerialLog(w.ID))
		}
		select {
		case <-ctx.Done():
			if c.root.Err() == nil && time.Now().After(deadline) {
				return fmt.Errorf("%w: the guest agent did not answer within %s of %s (last: %v)",
					errBootTimeout, c.cfg.ProvisionTimeout, w.State, last)
			}
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

var (
	errBootTimeout  = errors.New("boot timed out")
	errGuestStopped = errors.New("the guest stopped while booting")
)

// permanent marks an error no retry can fix (a missing image, the memory preflight): the
// WorkSpace goes to ERROR at once instead of at its deadline.
type permanent struct{ error }

func (p permanent) Unwrap() error { return p.error }

// boot brings w (in state from) up and, once its agent answers, AVAILABLE. Failures past
// the deadline, or ones a retry cannot fix, put it in ERROR with the reason.
func (c *Controller) boot(ctx context.Context, w workspace.Workspace, from workspace.State, h *health) error {
	if c.cfg.Now().Sub(w.StateSince) > c.cfg.ProvisionTimeout {
		reason := fmt.Errorf("did not become AVAILABLE within %s", c.cfg.ProvisionTimeout)
		if h.lastErr != nil {
			reason = fmt.Errorf("%w: %v", reason, h.lastErr)
		}
		return c.bootFailed(w.ID, from, "BootTimeout", reason)
	}
	if h.started.Equal(w.StateSince) {
		if st, err := c.cfg.Conn.State(w.ID); err == nil && !st.Active() {
			return c.bootFailed(w.ID, from, "BootFailed", fmt.Errorf("%w (see %s)", errGuestStopped, c.SerialLog(w.ID)))
		}
	}
	if err := c.ensureRunning(ctx, w); err != nil {
		var p permanent
		var m *memoryError
		if errors.As(err, &m) {
			return c.bootFailed(w.ID, from, m.code, err)
		}
		if errors.As(err, new(keyError)) {
			return c.bootFailed(w.ID, from, KeyUnavailable, err)
		}
		if errors.As(err, &p) {
			return c.bootFailed(w.ID, from, "ProvisioningFailed", err)
		}
		if errors.Is(err, errGuestStopped) { // as waitAgent would have found a moment later
			return c.bootFailed(w.ID, from, "BootFailed", err)
		}
		h.lastErr = err // retried at the next tick until the deadline
		return err
	}
	h.started = w.StateSince
	if err := c.waitAgent(ctx, w); err != nil {
		if errors.Is(err, errBootTimeout) || !errors.Is(err, context.Canceled) && ctx.Err() == nil {
			return c.bootFailed(w.ID, from, "BootFailed", err)
		}
		return err
	}
	return c.transition(w.ID, from, func(r *workspace.Workspace) {
		r.SetState(workspace.Available, c.cfg.Now())
		if r.ResumeFailed != "" {
			r.ErrorCode, r.ErrorMessage, r.ResumeFailed = "ResumeFailed", r.ResumeFailed, ""
		}
	})
}

// bootFailed puts a WorkSpace whose boot failed in ERROR with the reason, after powering
// its guest off (RAM scrubbed): a guest that cannot come up would only burn a CPU, and
// StartWorkspaces or RebootWorkspaces boots it afresh. If the power-off fails too, the
// reason says so.
func (c *Controller) bootFailed(id string, from workspace.State, code string, reason error) error {
	if err := c.powerOff(c.root, id, false); err != nil {
		c.cfg.Log.Error("power off after a failed boot", "workspace", id, "err", err)
		reason = fmt.Errorf("%w; then powering the guest off failed: %v", reason, err)
	}
	return c.fail(id, from, code, reason)
}

func (c *Controller) provision(ctx context.Context, w workspace.Workspace, h *health) error {
	return c.boot(ctx, w, workspace.Pending, h)
}

// reboot restarts qemu: graceful power-off, scrub, boot. If hostd booted the VM after the
// reboot was accepted, the power-off already happened (before an interruption) and only
// the wait for the agent is left.
func (c *Controller) reboot(ctx context.Context, w workspace.Workspace, h *health) error {
	if !w.BootedAt.After(w.StateSince) {
		if err := c.powerOff(ctx, w.ID, true); err != nil {
			if ctx.Err() != nil {
				return err
			}
			return c.fail(w.ID, workspace.Rebooting, failureCode(err, "RebootFailed"), err)
		}
	}
	return c.boot(ctx, w, workspace.Rebooting, h)
}

// stop powers w off; an AutoStop WorkSpace hibernates instead (guide: AutoStop keeps the
// desktop as it was), falling back to a cold stop if its state cannot be saved.
func (c *Controller) stop(ctx context.Context, w workspace.Workspace) error {
	// An encrypted WorkSpace stops cold: its saved RAM would hold in the clear what its
	// volumes hold encrypted (the page cache, the LUKS keys).
	if w.Properties.RunningMode == workspace.AutoStop && !c.coldStop.Load() && !w.Encrypted() {
		saved, err := c.hibernate(w.ID)
		if saved {
			if err != nil {
				return c.fail(w.ID, workspace.Stopping, failureCode(err, "StopFailed"), err)
			}
			return c.transition(w.ID, workspace.Stopping, func(r *workspace.Workspace) {
				r.SetState(workspace.Stopped, c.cfg.Now())
				r.Hibernated = true
			})
		}
		if err != nil {
			var m *memoryError
			if errors.As(err, &m) {
				return c.fail(w.ID, workspace.Stopping, m.code, err)
			}
			c.cfg.Log.Warn("guest state not saved; stopping cold", "workspace", w.ID, "err", err)
		}
	}
	if err := c.powerOff(ctx, w.ID, true); err != nil {
		if ctx.Err() != nil {
			return err
		}
		return c.fail(w.ID, workspace.Stopping, failureCode(err, "StopFailed"), err)
	}
	return c.set(w.ID, workspace.Stopping, workspace.Stopped)
}

func (c *Controller) keepStopped(ctx context.Context, w workspace.Workspace) error {
	st, err := c.cfg.Conn.State(w.ID)
	if err != nil {
		return err
	}
	if st.Active() { // started behind hostd's back: the record says stopped
		err = c.powerOff(ctx, w.ID, false)
	} else {
		err = c.guestGone(w.ID)
	}
	var m *memoryError
	if errors.As(err, &m) {
		return c.fail(w.ID, workspace.Stopped, m.code, err)
	}
	return err
}

// keepError leaves an ERROR WorkSpace as it is for the operator, but never its RAM: if the
// guest is gone, what hostd holds is scrubbed; if it runs, it is held (or paused if it
// cannot be). A memory failure replaces the error message, so the record says why.
func (c *Controller) keepError(w workspace.Workspace) error {
	st, err := c.cfg.Conn.State(w.ID)
	if err != nil {
		return err
	}
	if st.Active() {
		err = c.hold(w.ID, false)
	} else {
		err = c.guestGone(w.ID)
	}
	var m *memoryError
	if errors.As(err, &m) && (w.ErrorCode != m.code || w.ErrorMessage != m.Error()) {
		return c.fail(w.ID, workspace.Error, m.code, err)
	}
	return err
}

func (c *Controller) terminate(ctx context.Context, w workspace.Workspace) error {
	if err := c.teardown(ctx, w.ID); err != nil {
		var m *memoryError
		if errors.As(err, &m) { // no retry helps: the operator must act, and the record says why
			return c.fail(w.ID, workspace.Terminating, m.code, err)
		}
		return err // retried: TERMINATING is only left for TERMINATED
	}
	if err := c.forgetSnapshots(w.ID); err != nil {
		return err
	}
	if err := c.abandonCapture(w); err != nil {
		return err
	}
	if err := c.set(w.ID, workspace.Terminating, workspace.Terminated); err != nil {
		return err
	}
	if err := c.releaseAddress(w); err != nil {
		// Not retried here: an address whose holder is TERMINATED is free to the
		// allocator anyway (hostd/service/addresses.go).
		c.cfg.Log.Warn("release primary address", "workspace", w.ID, "address", w.IPAddress, "err", err)
	}
	return c.syncNetwork(ctx) // its taps and chains go; if this fails, the next sweep does it
}

// releaseAddress frees w's primary address (store.Addresses) if w still holds it.
func (c *Controller) releaseAddress(w workspace.Workspace) error {
	if w.IPAddress == "" {
		return nil
	}
	return c.cfg.Store.Update(func(tx store.Tx) error { return releaseAddressTx(tx, w) })
}

func releaseAddressTx(tx store.Tx, w workspace.Workspace) error {
	if w.IPAddress == "" {
		return nil
	}
	holder, err := tx.Get(store.Addresses, w.IPAddress)
	if errors.Is(err, store.ErrNotFound) || err == nil && string(holder) != w.ID {
		return nil
	}
	if err != nil {
		return err
	}
	return tx.Delete(store.Addresses, w.IPAddress)
}

func (c *Controller) syncNetwork(ctx context.Context) error {
	if c.cfg.Network == nil {
		return nil
	}
	return c.cfg.Network.Sync(ctx)
}

// teardown removes everything of id from the host: domain (RAM scrubbed), volumes, files.
func (c *Controller) teardown(ctx context.Context, id string) error {
	if err := c.powerOff(ctx, id, false); err != nil {
		return err
	}
	if err := c.cfg.Conn.Undefine(id); err != nil {
		return err
	}
	return c.deleteVolumes(id)
}

// deleteVolumes removes id's volumes from the pool and its runtime files.
func (c *Controller) deleteVolumes(id string) error {
	vols, err := c.cfg.Conn.Volumes(c.cfg.Pool, id+"-")
	if err != nil {
		return err
	}
	for _, v := range vols {
		if err := c.cfg.Conn.DeleteVolume(c.cfg.Pool, v.Name); err != nil {
			return err
		}
	}
	if _, err := memscrub.RemoveSavedState(c.savedState(id)); err != nil { // a hibernated WorkSpace's
		return err
	}
	if err := c.removeVolumeSecrets(id); err != nil {
		return err
	}
	return os.RemoveAll(c.runDir(id))
}

func (c *Controller) removeOrphan(ctx context.Context, id string) error {
	st, err := c.cfg.Conn.State(id)
	if err != nil {
		return err
	}
	if st != virt.Missing {
		if owner, err := c.cfg.Conn.Owner(id); err != nil {
			return err
		} else if owner != c.cfg.Owner {
			st = virt.Missing // another hostd's domain: not ours to remove
		}
	}
	vols, err := c.cfg.Conn.Volumes(c.cfg.Pool, id)
	if err != nil {
		return err
	}
	if st == virt.Missing && len(vols) == 0 {
		return c.guestGone(id)
	}
	c.cfg.Log.Warn("removing orphan: no WorkSpace on record", "workspace", id, "domain", st.String(), "volumes", len(vols))
	if st == virt.Missing {
		return c.deleteVolumes(id)
	}
	return c.teardown(ctx, id)
}

// health is a worker's memory between reconciles: missed status requests, and the last
// transient error of a boot still being retried.
type health struct {
	misses  int
	lastErr error
	// tidied: the WorkSpace's snapshot directory has been cleared of files a crash left
	// (a copy cut short) since this worker started.
	tidied bool
	// started is the StateSince of the boot attempt whose guest this worker saw running.
	// If that guest is gone when a reconcile of the same attempt begins (a libvirt event
	// interrupted the wait for its agent), it died while booting: it is not started again.
	started time.Time
}

// keepRunning keeps an AVAILABLE (or UNHEALTHY, or ADMIN_MAINTENANCE) WorkSpace running —
// restarting it, RAM scrubbed, if its guest died — and maps agent answers to AVAILABLE and
// UNHEALTHY (guide §19).
func (c *Controller) keepRunning(ctx context.Context, w workspace.Workspace, h *health) error {
	st, err := c.cfg.Conn.State(w.ID)
	if err != nil {
		return err
	}
	if !st.Active() {
		if w.State == workspace.Maintenance && w.Maintenance.Return == workspace.Stopped {
			c.cfg.Log.Info("starting for its maintenance window", "workspace", w.ID, "until", w.Maintenance.Until)
		} else {
			c.cfg.Log.Warn("guest stopped unexpectedly; restarting", "workspace", w.ID, "domain", st.String())
		}
		if err := c.guestGone(w.ID); err != nil {
			var m *memoryError
			if errors.As(err, &m) {
				return c.fail(w.ID, w.State, m.code, err)
			}
			return err // retried
		}
		if err := c.ensureRunning(ctx, w); err != nil {
			return c.fail(w.ID, w.State, failureCode(err, "RestartFailed"), err)
		}
		h.misses = 0
		return nil // the health check below would only count the boot as misses
	}
	if err := c.hold(w.ID, false); err != nil {
		var m *memoryError
		if errors.As(err, &m) {
			return c.fail(w.ID, w.State, m.code, err)
		}
		return err
	}
	if err := c.resumeIfPaused(w.ID, st); err != nil {
		return err
	}
	if w.State == workspace.AdminMaintenance {
		return nil
	}
	pctx, cancel := context.WithTimeout(ctx, c.cfg.HealthTimeout)
	defer cancel()
	err = errors.New("no answer")
	if a, derr := c.cfg.DialAgent(pctx, c.AgentSocket(w.ID)); derr == nil {
		err = a.Ping(pctx)
		a.Close()
	} else {
		err = derr
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	now := c.cfg.Now()
	if err == nil {
		h.misses = 0
		if w.State == workspace.Unhealthy {
			c.cfg.Log.Info("guest agent answers again", "workspace", w.ID)
			return c.set(w.ID, workspace.Unhealthy, workspace.Available)
		}
		if w.State == workspace.Available && len(w.GrowFS) > 0 {
			return c.growPendingFS(ctx, w)
		}
		if w.State == workspace.Available { // snapshots only while healthy (guide §7.1)
			return c.snapshotIfDue(ctx, w)
		}
		return nil
	}
	if inGrace(w, now, c.cfg.HealthGrace) {
		// Booting guests do not answer yet: not a miss.
		c.cfg.Log.Debug("status check unanswered within the grace period", "workspace", w.ID, "err", err)
		h.misses = 0
		return nil
	}
	h.misses++
	c.cfg.Log.Warn("status check unanswered", "workspace", w.ID, "misses", h.misses, "err", err)
	if h.misses >= c.cfg.HealthMisses && w.State == workspace.Available {
		return c.transition(w.ID, workspace.Available, func(r *workspace.Workspace) {
			r.SetState(workspace.Unhealthy, now)
			r.ErrorCode = "StatusCheckFailed"
			r.ErrorMessage = unhealthyReason(h.misses, c.cfg.HealthInterval, err)
		})
	}
	return nil
}

// inGrace reports whether w's guest started less than grace ago (guide §19: a WorkSpace
// just rebooted or started is not judged yet). BootedAt is set by every boot hostd makes:
// create, start, reboot, and the restart of a guest that died.
func inGrace(w workspace.Workspace, now time.Time, grace time.Duration) bool {
	return grace > 0 && now.Sub(w.BootedAt) < grace
}

// unhealthyReason is the state reason an UNHEALTHY WorkSpace carries.
func unhealthyReason(misses int, interval time.Duration, last error) string {
	return fmt.Sprintf("the WorkSpace did not answer %d consecutive status requests (every %s); last: %v",
		misses, interval, last)
}

// Close lets go of held RAM when hostd stops: the RAM of guests that are gone is scrubbed;
// that of running guests stays with them, to be held again by the next hostd.
func (c *Controller) Close() {
	c.mu.Lock()
	ids := make([]string, 0, len(c.held))
	for id := range c.held {
		ids = append(ids, id)
	}
	c.mu.Unlock()
	for _, id := range ids {
		if err := c.scrub(id); errors.Is(err, memscrub.ErrRunning) {
			c.mu.Lock()
			if h := c.held[id]; h != nil {
				_ = h.Release()
				delete(c.held, id)
			}
			c.mu.Unlock()
		} else if err != nil {
			c.cfg.Log.Error("scrub at shutdown", "workspace", id, "err", err)
		}
	}
}
