// Command hostd is deskhost's host daemon: it runs each user's desktop as a libvirt VM and
// serves the WorkSpaces admin API.
//
//	hostd serve --config /perm/deskhost.yaml   run the daemon
//	hostd check-config --config FILE           validate the host config and exit
//	hostd preflight                            print the host's memory hygiene and exit
//	hostd <command> ...                        the operator CLI (hostd help)
//
// Serving, in order:
//  1. load the host config (strict: an unknown key is an error);
//  2. run the memory preflight (swap, KSM, init_on_free) and log it; WorkSpaces will not
//     boot while it refuses;
//  3. load every configured desktop image's manifest;
//  4. open the store (bbolt), connect to libvirtd (retrying while it starts);
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
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"gopkg.in/yaml.v3"

	"deskhost/hostd/api"
	"deskhost/hostd/cli"
	"deskhost/hostd/confine"
	"deskhost/hostd/controller"
	"deskhost/hostd/memscrub"
	"deskhost/hostd/network"
	"deskhost/hostd/service"
	"deskhost/hostd/store"
	"deskhost/hostd/virt"
	"deskhost/internal/catalog"
	"deskhost/internal/desktopimage"
	"deskhost/internal/hostconfig"
)

func main() {
	args := os.Args[1:]
	if len(args) > 0 {
		switch args[0] {
		case "serve":
			os.Exit(serve(args[1:]))
		case "check-config":
			os.Exit(checkConfig(args[1:], os.Stdout, os.Stderr))
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
		fmt.Println("\nDaemon:\n  serve --config FILE [--debug]   run hostd\n  check-config --config FILE      validate the host config and exit\n  preflight                       check swap, KSM and init_on_free, and exit")
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
	debug := fs.Bool("debug", false, "log at debug level")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	level := slog.LevelInfo
	if *debug {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
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
	h := cfg.Hostd

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
		if err := r.Refusal(h.Memory.RequireInitOnFree); err != nil {
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

	images := map[string]controller.ImageFiles{}
	for _, img := range h.Images {
		di, err := desktopimage.Load(img.Dir)
		if err != nil {
			return fmt.Errorf("image %s: %w", img.ID, err)
		}
		if string(img.OS) != di.Manifest.OS {
			return fmt.Errorf("image %s: config says os %s, the image says %s", img.ID, img.OS, di.Manifest.OS)
		}
		images[img.ID] = controller.ImageFiles{Kernel: di.Kernel, Initrd: di.Initrd, Root: di.Root, Cmdline: di.Manifest.Cmdline}
	}

	st, err := store.OpenBolt(h.Store)
	if err != nil {
		return err
	}
	defer st.Close()
	hostID, err := hostIdentity(st)
	if err != nil {
		return err
	}
	log.Info("host identity", "host", hostID)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	dctx, cancel := context.WithTimeout(ctx, time.Minute)
	conn, err := virt.Dial(dctx, h.Libvirt.Socket)
	cancel()
	if err != nil {
		return err
	}
	defer conn.Close()

	var netw controller.Network
	if cfg.ManagedNetwork() {
		base, err := yaml.Marshal(&cfg.Init.Network)
		if err != nil {
			return fmt.Errorf("init.network: %w", err)
		}
		nm, err := network.New(base, st, log.With("component", "network"))
		if err != nil {
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
		netw = nm
	}

	ctl := controller.New(controller.Config{
		Store:               st,
		Conn:                conn,
		Owner:               hostID,
		Network:             netw,
		Images:              images,
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
		TerminatedRetention: h.TerminatedRetention.Duration,
		Preflight:           preflight,
		HugePages:           *h.Memory.HugePages,
		Confine:             guests,
		DialAgent:           controller.DialAgent,
		Log:                 log.With("component", "controller"),
	})
	svc := service.New(st, service.Catalog{
		ComputeTypes:   h.ComputeTypes,
		Images:         h.Images,
		Bundles:        h.Bundles,
		Directories:    h.Directories,
		WorkspaceQuota: h.Quotas.Workspaces,
	}, ctl, nil, log.With("component", "service"))
	apiOpts := api.OptionsFromConfig(h.API, log.With("component", "api"))
	if err := apiOpts.LookupBrokerGroup(h.API.BrokerGroup); err != nil {
		return err
	}
	srv := api.New(svc, apiOpts)

	errs := make(chan error, 2)
	go func() { errs <- ctl.Run(ctx) }()
	go func() { errs <- srv.Run(ctx, h.API, filepath.Join(h.DataDir, "tls")) }()
	// AutoStop's idle timer: AutoStop times are whole hours, so a minute's granularity.
	go svc.RunAutoStop(ctx, time.Minute)
	log.Info("hostd serving", "socket", h.API.Socket, "https", h.API.Listen, "images", len(images), "bundles", len(h.Bundles), "directories", len(h.Directories))

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
		id = "host-" + catalog.NewID(catalog.KindDirectory)[2:]
		return tx.Put(store.Meta, "hostId", []byte(id))
	})
	if err != nil {
		return "", fmt.Errorf("host identity: %w", err)
	}
	return id, nil
}
