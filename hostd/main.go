// Command hostd is deskhost's host daemon: it runs each user's desktop as a libvirt VM and
// serves the WorkSpaces admin API.
//
//	hostd serve --config /perm/deskhost.yaml   run the daemon
//	hostd check-config --config FILE           validate the host config and exit
//	hostd preflight                            print the host's memory hygiene and exit
//	hostd etcd --config-file FILE              run a member of the fleet's etcd cluster
//	hostd <command> ...                        the operator CLI (hostd help)
//
// Serving, in order:
//  1. load the host config (strict: an unknown key is an error);
//  2. run the memory preflight (swap, KSM, init_on_free) and log it; WorkSpaces will not
//     boot while it refuses;
//  3. open the store (a bbolt file, or the fleet's etcd); the first time the config still
//     has catalog sections (images, bundles, directories, IP groups), import them into the
//     store with a report, and refuse such a config ever after;
//  4. connect to libvirtd (retrying while it starts);
//  5. start the controller: a first reconcile of store against libvirt (orphans removed,
//     interrupted operations finished), then libvirt events and periodic sweeps;
//  6. serve the admin API on the root-only unix socket and on HTTPS;
//  7. on SIGTERM/SIGINT: stop the API, stop the workers, scrub the RAM of guests already
//     gone, release the rest (running guests keep running), close the store.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
	_ "time/tzdata" // hostd.siteTimeZone on an appliance without /usr/share/zoneinfo

	"deskhost/hostd/api"
	"deskhost/hostd/cli"
	"deskhost/hostd/confine"
	"deskhost/hostd/controller"
	"deskhost/hostd/etcdmember"
	"deskhost/hostd/fleet"
	"deskhost/hostd/keystore"
	"deskhost/hostd/memscrub"
	"deskhost/hostd/metering"
	"deskhost/hostd/metrics"
	"deskhost/hostd/network"
	"deskhost/hostd/service"
	"deskhost/hostd/store"
	"deskhost/hostd/virt"
	"deskhost/internal/addrpool"
	"deskhost/internal/atomicfile"
	"deskhost/internal/buildinfo"
	"deskhost/internal/catalog"
	"deskhost/internal/desktopimage"
	"deskhost/internal/hostconfig"
	"deskhost/internal/logging"
	"deskhost/internal/metricsserver"
	"deskhost/internal/secretfile"
)

func main() {
	args := os.Args[1:]
	if len(args) > 0 {
		switch args[0] {
		case "serve":
			os.Exit(serve(args[1:]))
		case "check-config":
			os.Exit(checkConfig(args[1:], os.Stdout, os.Stderr))
		case "etcd":
			os.Exit(etcdmember.Main(args[1:]))
		case "version":
			buildinfo.Print(os.Stdout, "hostd")
			return
		case "preflight":
			r, err := memscrub.Check()
			if err != nil {
				fmt.Fprintln(os.Stderr, "hostd:", err)
				os.Exit(1)
			}
			fmt.Println(r)
			if err := r.Refusal(false); err != nil {
				fmt.Println(err)
				os.Exit(1)
			}
			return
		}
	}
	code := cli.Main(args, os.Stdout, os.Stderr)
	if len(args) == 0 || len(args) == 1 && (args[0] == "help" || args[0] == "-h" || args[0] == "--help") {
		fmt.Println("\nDaemon:\n  serve --config FILE [--debug]   run hostd (--log-format json, --log-level)\n  check-config --config FILE      validate the host config and exit\n  preflight                       check swap, KSM and init_on_free, and exit\n  etcd --config-file FILE         run a member of the fleet's etcd cluster\n  version                         print the build (module version, VCS revision)")
	}
	os.Exit(code)
}

// checkConfig validates the host config as serve loads it (hostconfig's one validator,
// init.network by netcfg's rules included).
func checkConfig(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("check-config", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "/perm/deskhost.yaml", "host config file")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if _, err := hostconfig.Load(*path); err != nil {
		fmt.Fprintln(stderr, "hostd check-config:", err)
		return 1
	}
	fmt.Fprintln(stdout, "ok")
	return 0
}

func serve(args []string) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	path := fs.String("config", "/perm/deskhost.yaml", "host config file")
	debug := fs.Bool("debug", false, "log at debug level (--log-level debug)")
	logFlags := logging.Register(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	logFlags.Debug(*debug)
	log, err := logFlags.Logger(os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "hostd serve:", err)
		return 2
	}
	if err := run(*path, log); err != nil {
		log.Error("hostd stopped", "err", err)
		return 1
	}
	return 0
}

func run(path string, log *slog.Logger) error {
	cfg, err := hostconfig.Load(path)
	if err != nil {
		return err
	}
	for _, p := range cfg.LoadSecrets() {
		log.Error("access key not loaded", "err", p)
	}
	if r := cfg.Init.NICsByRule(); cfg.ManagedNetwork() && len(r) > 0 {
		// init resolves these once per boot and hands hostd the config with them pinned.
		return fmt.Errorf("init.network.interfaces.%s names no NIC: on the appliance init chooses it at boot and runs hostd with it pinned (/run/deskhost/host.yaml); elsewhere pin it by name or mac", r[0])
	}
	h := cfg.Hostd
	legacy, err := cfg.LegacyCatalog()
	if err != nil {
		return fmt.Errorf("host config %s: %w", path, err)
	}

	report, err := memscrub.Check()
	if err != nil {
		return err
	}
	log.Info("memory preflight", "report", report.String())
	guests, err := confine.Lookup(h.Guests.User, h.Guests.Group, h.Guests.DisplayGroup, *h.Guests.CgroupLimits)
	if err != nil {
		return fmt.Errorf("hostd.guests: %w", err)
	}
	log.Info("guests", "qemuUID", guests.UID, "qemuGID", guests.GID, "displayGID", guests.DisplayGID,
		"cgroupLimits", guests.Limits, "hugePages", *h.Memory.HugePages)
	preflight := func() error {
		r, err := memscrub.Check()
		if err != nil {
			return err
		}
		if err := r.Refusal(h.Memory.InitOnFreeRequired()); err != nil {
			return err
		}
		if guests.Limits {
			if err := confine.CheckLimits(); err != nil {
				return fmt.Errorf("%w (or set hostd.guests.cgroupLimits: false)", err)
			}
		}
		return nil
	}
	if err := preflight(); err != nil {
		log.Error("WorkSpaces will not boot until this is fixed", "err", err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	// The store: a bbolt file, hand-configured etcd, or the fleet's etcd (made, joined,
	// or as it was). Either way this host is in a fleet, of one at least: it has a host
	// record, a lease, and new WorkSpaces are placed on the fleet's hosts.
	var st store.Store
	var hostID string
	var self fleet.Host
	var fl *fleetParts
	if h.Fleet != nil {
		l, err := fleetLocal(cfg, log)
		if err != nil {
			return err
		}
		est, m, err := openFleet(ctx, l, h.Fleet.Bootstrap, log)
		if err != nil {
			return err
		}
		st, hostID, self = est, m.HostID, l.Self(m)
		fl = &fleetParts{local: l, membership: m}
	} else {
		if st, hostID, err = openStore(h, log); err != nil {
			return err
		}
		name, _ := os.Hostname()
		self = fleet.Host{ID: hostID, Name: name, Capacity: detectCapacity(), ComputeTypes: h.ComputeTypes, Addresses: serviceAddresses(cfg, "")}
	}
	defer st.Close()
	log.Info("host identity", "host", hostID)
	var leaseTTL time.Duration
	if h.Fleet != nil {
		leaseTTL = h.Fleet.LeaseTTL.Duration
	}
	node, err := fleet.Join(ctx, fleet.Config{Store: st, Self: self, LeaseTTL: leaseTTL, Log: log.With("component", "fleet")})
	if err != nil {
		return err
	}
	defer node.Close()

	var nm *network.Manager
	var peers *fleet.Peers
	if fl != nil {
		if peers, err = fleet.NewPeers(fl.local, st, hostID); err != nil {
			return err
		}
	}
	// The key store's master key: root's alone, on /perm, and the fleet's (one per fleet:
	// fetched from a peer if this host does not hold it; hostd/keystore, hostd/fleet).
	keys, err := fleet.MasterKey{Store: st, Self: hostID, Path: filepath.Join(h.DataDir, keystore.MasterFile), Peers: peers,
		Log: log.With("component", "keystore")}.Resolve(ctx)
	if err != nil {
		return err
	}
	svcCfg := service.Config{ComputeTypes: h.ComputeTypes, WorkspaceQuota: h.Quotas.Workspaces, Host: hostID,
		Keys: keys, Region: h.API.Region,
		ImageDir: filepath.Join(h.DataDir, "images"),
		GPUQuota: map[catalog.ComputeType]int{catalog.ComputeGraphics: h.Quotas.Graphics, catalog.ComputeGraphicsPro: h.Quotas.GraphicsPro},
		ManagementRange: func() (netip.Prefix, bool) {
			if nm == nil {
				return netip.Prefix{}, false
			}
			return nm.ManagementRange()
		},
		PrimaryPool: func() (addrpool.Range, bool) {
			if nm == nil {
				return addrpool.Range{}, false
			}
			return nm.PrimaryPool()
		}}
	svc := service.New(st, svcCfg, nil, nil, log.With("component", "service"))
	if legacy != nil {
		if err := importCatalog(svc, legacy, path, h.DataDir, log); err != nil {
			return err
		}
	}

	images := &fleet.Images{Store: st, Self: hostID, Dir: filepath.Join(h.DataDir, "images"), Log: log.With("component", "images")}
	if fl != nil {
		images.Peers = peers
		svc.SetTagger(peers)
		var tagger fleet.TagIssuer
		if cfg.HasZeroclient() {
			if zc, err := cfg.Zeroclient.Resolved(); err == nil {
				tagger = zeroclientTags{socket: zc.AdminSocket}
			}
		}
		srv := &fleet.Server{Local: fl.local, Membership: fl.membership, Store: st, Tags: tagger, Images: images, Master: keys,
			Log: log.With("component", "fleet")}
		go func() {
			if err := srv.Run(ctx); err != nil && ctx.Err() == nil {
				log.Error("fleet port stopped", "err", err)
				stop()
			}
		}()
	}

	dctx, cancel := context.WithTimeout(ctx, time.Minute)
	conn, err := virt.Dial(dctx, h.Libvirt.Socket)
	cancel()
	if err != nil {
		return err
	}
	defer conn.Close()

	var netw controller.Network
	if cfg.ManagedNetwork() {
		base, err := cfg.NetworkBase()
		if err != nil {
			return err
		}
		var fleetPorts []int
		if f := h.Fleet; f != nil {
			fleetPorts = f.Ports()
		}
		if nm, err = network.New(base, fleetPorts, st, log.With("component", "network")); err != nil {
			return err
		}
		defer nm.Close()
		if err := nm.Sync(ctx); err != nil {
			log.Error("host network not applied; WorkSpaces will not boot until it is", "err", err)
		}
		go func() {
			if err := nm.Serve(ctx); err != nil && ctx.Err() == nil {
				log.Error("management network DHCP and metadata stopped", "err", err)
				stop()
			}
		}()
		// The IP access control groups are catalog records: a change reaches netcfg's
		// nftables sets (and drops the flows they no longer allow) at once.
		go followCatalog(ctx, svc, log, func() {
			if err := nm.Sync(ctx); err != nil && ctx.Err() == nil {
				log.Error("host network: applying the catalog's IP access control groups", "err", err)
			}
		})
		netw = nm
	}

	siteZone, err := h.SiteZone()
	if err != nil {
		return fmt.Errorf("hostd.siteTimeZone: %w", err)
	}
	if siteZone == nil {
		log.Info("automatic maintenance off: set hostd.siteTimeZone (the site's IANA time zone) for the guide's AutoStop maintenance windows")
	}
	mx := metrics.New(metrics.Options{Store: st, ComputeTypes: h.ComputeTypes, Quota: h.Quotas.Workspaces})
	ctl := controller.New(controller.Config{
		Store:               st,
		Conn:                conn,
		Owner:               hostID,
		Fence:               func(tx store.Tx) error { return fleet.Fence(tx, hostID) },
		Network:             netw,
		Images:              storeImages{svc, images},
		Keys:                keys,
		ComputeTypes:        h.ComputeTypes,
		DataDir:             h.DataDir,
		Pool:                h.Libvirt.Pool,
		DomainType:          h.Libvirt.DomainType,
		ManagementBridge:    h.Network.ManagementBridge,
		PrimaryBridge:       h.Network.PrimaryBridge,
		ProvisionTimeout:    h.ProvisionTimeout.Duration,
		ShutdownTimeout:     h.ShutdownTimeout.Duration,
		HealthInterval:      h.HealthInterval.Duration,
		HealthMisses:        h.HealthMisses,
		HealthTimeout:       h.HealthTimeout.Duration,
		HealthGrace:         h.HealthGrace.Duration,
		SnapshotInterval:    h.SnapshotInterval.Duration,
		SiteZone:            siteZone,
		TerminatedRetention: h.TerminatedRetention.Duration,
		Preflight:           preflight,
		HugePages:           *h.Memory.HugePages,
		Confine:             guests,
		DialAgent:           controller.DialAgent,
		Observer:            mx,
		Log:                 log.With("component", "controller"),
	})
	svc.SetWaker(ctl)
	apiOpts := api.OptionsFromConfig(h.API, log.With("component", "api"))
	if err := apiOpts.LookupBrokerGroup(h.API.BrokerGroup); err != nil {
		return err
	}
	srv := api.New(svc, apiOpts)

	if h.Metrics.Listen != "" {
		if err := serveMetrics(ctx, h.Metrics.Listen, mx, log); err != nil {
			return err
		}
	}
	errs := make(chan error, 2)
	go func() { errs <- ctl.Run(ctx) }()
	go func() { errs <- srv.Run(ctx, h.API, filepath.Join(h.DataDir, "tls")) }()
	// AutoStop's idle timer: AutoStop times are whole hours, so a minute's granularity.
	// Bundles queued for deletion go on the same beat once their last WorkSpace has.
	go svc.RunAutoStop(ctx, time.Minute)
	// The metering ledger: every host samples every WorkSpace; the ledger's per-hour keys
	// make that one entry per hour (hostd/metering).
	go (&metering.Recorder{Store: st, Log: log.With("component", "metering")}).Run(ctx, time.Minute)
	imgs, _ := svc.DescribeWorkspaceImages(ctx, nil)
	bundles, _ := svc.DescribeWorkspaceBundles(ctx, nil)
	dirs, _ := svc.DescribeWorkspaceDirectories(ctx, nil)
	log.Info("hostd serving", "socket", h.API.Socket, "https", h.API.Listen, "images", len(imgs), "bundles", len(bundles), "directories", len(dirs))

	var first error
	for range 2 {
		if err := <-errs; first == nil && err != nil && !errors.Is(err, context.Canceled) {
			first = err
		}
		stop() // one part ending ends all
	}
	ctl.WaitIdle()
	ctl.Close()
	return first
}

// serveMetrics serves /metrics on addr until ctx ends.
func serveMetrics(ctx context.Context, addr string, mx *metrics.Metrics, log *slog.Logger) error {
	if err := metricsserver.Serve(ctx, addr, mx.Handler(), log); err != nil {
		return fmt.Errorf("hostd.metrics.listen: %w", err)
	}
	return nil
}

// ImportReportFile is where, under hostd's dataDir, the catalog import's report is kept.
const ImportReportFile = "catalog-import.txt"

// importCatalog moves the host config's catalog sections into the store the first time
// hostd meets them, with a report of what moved (logged, printed and written under the
// data directory); afterwards a config that still has them is refused, saying where the
// catalog lives now.
func importCatalog(svc *service.Service, legacy *hostconfig.LegacyCatalog, path, dataDir string, log *slog.Logger) error {
	reportFile := filepath.Join(dataDir, ImportReportFile)
	done, imported, err := svc.Imported()
	if err != nil {
		return err
	}
	if imported {
		return hostconfig.CatalogMoved(path, legacy.Sections, done.At.UTC().Format(time.RFC3339), reportFile)
	}
	// The images must be there, as they had to be when the config listed them.
	for _, im := range legacy.Images {
		di, err := desktopimage.Load(im.Item.Dir)
		if err != nil {
			return fmt.Errorf("%s (%s): %w", im.From, im.Item.ID, err)
		}
		if string(im.Item.OS) != di.Manifest.OS {
			return fmt.Errorf("%s (%s): config says os %s, the image says %s", im.From, im.Item.ID, im.Item.OS, di.Manifest.OS)
		}
	}
	rep, err := svc.ImportCatalog(context.Background(), legacy, path)
	if err != nil {
		return fmt.Errorf("import the catalog sections of host config %s into the store: %w", path, err)
	}
	text := rep.String()
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return err
	}
	if err := atomicfile.WriteFile(reportFile, []byte(text), 0o600); err != nil {
		return fmt.Errorf("catalog import report: %w", err)
	}
	fmt.Print(text)
	log.Warn("catalog imported from the host config into the store; remove its catalog sections from the config, which hostd refuses from now on",
		"config", path, "sections", strings.Join(legacy.Sections, ","), "report", reportFile, "records", len(rep.Lines))
	return nil
}

// followCatalog calls fn after every change of the catalog revision until ctx ends.
func followCatalog(ctx context.Context, svc *service.Service, log *slog.Logger, fn func()) {
	rev, err := svc.CatalogRevision()
	for ctx.Err() == nil {
		if err != nil {
			log.Error("catalog revision", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
		}
		var next uint64
		next, err = svc.WaitCatalog(ctx, rev, time.Minute)
		if err == nil && next != rev {
			rev = next
			fn()
		}
	}
}

// fleetParts is what a fleet host has beyond a single host's.
type fleetParts struct {
	local      fleet.Local
	membership fleet.Membership
}

// storeImages finds images in the catalog and reads their files: from where this host
// holds them, or fetched from a host of the fleet that does (by content hash, verified).
type storeImages struct {
	svc    *service.Service
	images *fleet.Images
}

func (s storeImages) ImageFiles(id string) (controller.ImageFiles, error) {
	di, err := s.svc.LoadImageWith(id, func(digest string) (string, error) {
		if s.images.Peers == nil {
			return "", errors.New("this host is not in a fleet")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		return s.images.Path(ctx, digest)
	})
	if err != nil {
		return controller.ImageFiles{}, err
	}
	return controller.ImageFiles{Kernel: di.Kernel, Initrd: di.Initrd, Root: di.Root, Cmdline: di.Manifest.Cmdline}, nil
}

// openStore opens the configured store — the bbolt file, or the fleet's etcd — and this
// host's identity.
func openStore(h hostconfig.Hostd, log *slog.Logger) (store.Store, string, error) {
	if e := h.Store.Etcd; e != nil {
		// The client key is a secret like any other: refused when others may read it.
		if err := secretfile.Check(e.KeyFile); err != nil {
			return nil, "", fmt.Errorf("hostd.store.etcd.keyFile: %w", err)
		}
		st, err := store.OpenEtcd(store.EtcdConfig{
			Endpoints: e.Endpoints, CAFile: e.CAFile, CertFile: e.CertFile, KeyFile: e.KeyFile,
			Prefix: e.Prefix, Timeout: e.Timeout.Duration, Log: log.With("component", "store"),
		})
		if err != nil {
			return nil, "", err
		}
		// The fleet's store is shared: each host's identity stays with the host.
		id, err := localIdentity(filepath.Join(h.DataDir, "host-id"))
		if err != nil {
			st.Close()
			return nil, "", err
		}
		return st, id, nil
	}
	st, err := store.OpenBolt(h.Store.Path)
	if err != nil {
		return nil, "", err
	}
	id, err := hostIdentity(st)
	if err != nil {
		st.Close()
		return nil, "", err
	}
	return st, id, nil
}

// localIdentity is this host's id kept in a file, made once.
func localIdentity(path string) (string, error) {
	if b, err := os.ReadFile(path); err == nil {
		if id := strings.TrimSpace(string(b)); strings.HasPrefix(id, "host-") {
			return id, nil
		}
		return "", fmt.Errorf("host identity %s: not a host id", path)
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("host identity: %w", err)
	}
	id := newHostID()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", fmt.Errorf("host identity: %w", err)
	}
	if err := atomicfile.WriteFile(path, []byte(id+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("host identity: %w", err)
	}
	return id, nil
}

func newHostID() string { return "host-" + catalog.NewID(catalog.KindDirectory)[2:] }

// hostIdentity is this host's id, made once and kept in the store: hostd marks the
// domains it creates with it, and only ever removes domains that carry it.
func hostIdentity(st store.Store) (string, error) {
	var id string
	err := st.Update(func(tx store.Tx) error {
		b, err := tx.Get(store.Meta, "hostId")
		if err == nil {
			id = string(b)
			return nil
		}
		if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		id = newHostID()
		return tx.Put(store.Meta, "hostId", []byte(id))
	})
	if err != nil {
		return "", fmt.Errorf("host identity: %w", err)
	}
	return id, nil
}
