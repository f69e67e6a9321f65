// Command netcfg configures the host's network: the two NICs, the VM bridges
// br-mgmt and br-primary, the VMs' taps, and netcfg's one nftables table.
//
//	netcfg apply --config FILE [--serve]   make the host match FILE (with --serve, stay
//	                                       up: DHCP and metadata on br-mgmt, NIC leases,
//	                                       re-apply on SIGHUP and every --interval)
//	netcfg show [--config FILE]            what is applied: management range, links, ruleset
//	netcfg check --config FILE             desired vs applied; exit 1 on drift
//	netcfg version                         the build (module version, VCS revision)
//
// show and check take --json. Every command takes --netns NAME to work inside a named
// network namespace (ip netns) instead of the current one, --log-level and --log-format.
// Exit status: 0 success (check: in sync), 1 drift (check), 2 error.
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
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/vishvananda/netns"

	"deskhost/internal/buildinfo"
	"deskhost/internal/logging"
	"deskhost/internal/metricsserver"
	"deskhost/netcfg/config"
	"deskhost/netcfg/firewall"
	"deskhost/netcfg/metrics"
	"deskhost/netcfg/reconcile"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `usage:
  netcfg apply --config FILE [--serve] [--interval 60s] [--metrics-listen ADDR]
  netcfg show  [--config FILE] [--json]
  netcfg check --config FILE [--json]
  netcfg version
common flags: --netns NAME, --log-level debug|info|warn|error, --log-format text|json
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, usage)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	if args[0] == "version" {
		buildinfo.Print(stdout, "netcfg")
		return 0
	}
	cmd := args[0]
	fs := flag.NewFlagSet("netcfg "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "desired state (YAML)")
	nsName := fs.String("netns", "", "work inside this named network namespace")
	logFlags := logging.Register(fs)
	asJSON := fs.Bool("json", false, "show, check: print JSON")
	serve := fs.Bool("serve", false, "apply: keep running (DHCP/metadata on br-mgmt, NIC leases, periodic re-apply)")
	interval := fs.Duration("interval", time.Minute, "apply --serve: re-apply (repair drift) this often")
	metricsAddr := fs.String("metrics-listen", "", "apply --serve: serve Prometheus metrics on this address at /metrics")
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	log, err := logFlags.Logger(stderr)
	if err != nil {
		fmt.Fprintf(stderr, "netcfg: %v\n", err)
		return 2
	}
	fail := func(err error) int {
		fmt.Fprintf(stderr, "netcfg %s: %v\n", cmd, err)
		return 2
	}
	if *asJSON && cmd == "apply" {
		return fail(errors.New("--json goes with show and check"))
	}
	if *metricsAddr != "" && !(cmd == "apply" && *serve) {
		return fail(errors.New("--metrics-listen goes with apply --serve"))
	}

	ns := netns.None()
	if *nsName != "" {
		h, err := netns.GetFromName(*nsName)
		if err != nil {
			return fail(fmt.Errorf("--netns %s: %w", *nsName, err))
		}
		defer h.Close()
		ns = h
	}
	var cfg *config.Config
	if *cfgPath != "" {
		c, err := config.Load(*cfgPath)
		if err != nil {
			return fail(err)
		}
		cfg = c
	}
	switch cmd {
	case "apply", "check":
		if cfg == nil {
			return fail(errors.New("--config FILE is required"))
		}
	case "show":
	default:
		fmt.Fprintf(stderr, "netcfg: unknown command %q\n%s", cmd, usage)
		return 2
	}
	// Validate before touching netlink at all.
	if cfg != nil {
		if _, err := config.Validate(cfg); err != nil {
			return fail(err)
		}
	}
	r, err := reconcile.New(reconcile.Options{NetNS: ns, Logger: log})
	if err != nil {
		return fail(err)
	}
	defer r.Close()

	switch cmd {
	case "apply":
		mx := metrics.New()
		if *metricsAddr != "" {
			if err := serveMetrics(ctx, *metricsAddr, mx, log); err != nil {
				return fail(err)
			}
		}
		res, err := r.Apply(ctx, cfg)
		mx.Applied(res, err)
		if err != nil {
			return fail(err)
		}
		printResult(stdout, res)
		if !*serve {
			return 0
		}
		return serveLoop(ctx, r, *cfgPath, *interval, mx, log, stdout, stderr)
	case "check":
		drift, err := r.Check(ctx, cfg)
		if err != nil {
			return fail(err)
		}
		if *asJSON {
			if err := writeJSON(stdout, checkJSON{InSync: len(drift) == 0, Drift: append([]string{}, drift...)}); err != nil {
				return fail(err)
			}
			if len(drift) > 0 {
				return 1
			}
			return 0
		}
		if len(drift) == 0 {
			fmt.Fprintln(stdout, "in sync")
			return 0
		}
		fmt.Fprintf(stdout, "drift (%d):\n", len(drift))
		for _, d := range drift {
			fmt.Fprintln(stdout, "  "+d)
		}
		return 1
	default: // show
		stateFile := ""
		var nics []string
		if cfg != nil {
			stateFile = cfg.StateFile
			nics = append(nics, cfg.Interfaces.Management.Name, cfg.Interfaces.Primary.Name)
		}
		st, err := r.Status(stateFile, nics...)
		if err != nil {
			return fail(err)
		}
		if *asJSON {
			if err := writeJSON(stdout, statusJSON(st)); err != nil {
				return fail(err)
			}
			return 0
		}
		printStatus(stdout, st)
		return 0
	}
}

// serveMetrics serves mx at addr/metrics until ctx ends.
func serveMetrics(ctx context.Context, addr string, mx *metrics.Metrics, log *slog.Logger) error {
	if err := metricsserver.Serve(ctx, addr, mx.Handler(), log); err != nil {
		return fmt.Errorf("--metrics-listen: %w", err)
	}
	return nil
}

func serveLoop(ctx context.Context, r *reconcile.Reconciler, path string, every time.Duration, mx *metrics.Metrics, log *slog.Logger, stdout, stderr io.Writer) int {
	errc := make(chan error, 1)
	go func() { errc <- r.Serve(ctx) }()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			<-errc
			return 0
		case err := <-errc:
			fmt.Fprintf(stderr, "netcfg apply --serve: %v\n", err)
			return 2
		case <-hup:
		case <-tick.C:
		}
		cfg, err := config.Load(path)
		if err != nil {
			log.Error("reload failed; keeping the applied state", "err", err)
			continue
		}
		res, err := r.Apply(ctx, cfg)
		mx.Applied(res, err)
		if err != nil {
			log.Error("re-apply failed", "err", err)
			continue
		}
		if res.Changed {
			printResult(stdout, res)
		}
	}
}

func printResult(w io.Writer, res *reconcile.Result) {
	fw := res.Firewall
	if !res.Changed {
		fmt.Fprintf(w, "no change (management range %s, %v)\n", res.ManagementRange, res.Duration.Round(time.Microsecond))
		return
	}
	fmt.Fprintf(w, "applied in %v (management range %s; prepare %v, links %v, nftables %v, conntrack %v)\n",
		res.Duration.Round(time.Microsecond), res.ManagementRange, res.Prepare.Round(time.Microsecond),
		res.LinksTime.Round(time.Microsecond), res.FirewallTime.Round(time.Microsecond), res.FlowsTime.Round(time.Microsecond))
	for _, l := range res.Links {
		fmt.Fprintln(w, "  link: "+l)
	}
	if fw.Changed {
		fmt.Fprintf(w, "  nftables: one transaction of %d messages: tables +%d -%d, chains +%d ~%d -%d, sets +%d -%d, ranges +%d -%d",
			fw.Messages, fw.TablesCreated, fw.TablesDeleted, fw.ChainsCreated, fw.ChainsRewritten, fw.ChainsDeleted,
			fw.SetsCreated, fw.SetsDeleted, fw.RangesAdded, fw.RangesRemoved)
		if fw.Verified > 0 {
			fmt.Fprintf(w, " (%d sets verified)", fw.Verified)
		}
		fmt.Fprintln(w)
	}
	for _, f := range res.DroppedFlows {
		fmt.Fprintln(w, "  disconnected: "+f.String())
	}
}

func printStatus(w io.Writer, st *reconcile.Status) {
	if st.State != nil {
		if st.State.Range.IsValid() {
			fmt.Fprintf(w, "management range: %s (chosen %s, write-once, %s)\n", st.State.Range, st.State.ChosenAt.Format(time.RFC3339), st.StateFile)
		} else {
			fmt.Fprintf(w, "management range: not chosen yet (%s)\n", st.StateFile)
		}
		ids := make([]string, 0, len(st.State.Addresses))
		for id := range st.State.Addresses {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		for _, id := range ids {
			fmt.Fprintf(w, "  %s %s\n", id, st.State.Addresses[id])
		}
	}
	fmt.Fprintln(w, "links:")
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	for _, l := range st.Links.Links {
		flags := []string{}
		if l.Up {
			flags = append(flags, "up")
		} else {
			flags = append(flags, "down")
		}
		if l.Master != "" {
			flags = append(flags, "master "+l.Master)
		}
		if l.Isolated {
			flags = append(flags, "isolated")
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\tmtu %d\t%s\t%s\n", l.Name, l.Type, l.MAC, l.MTU, strings.Join(flags, ","), strings.Join(l.Addrs, " "))
	}
	tw.Flush()
	fmt.Fprintf(w, "nftables (generation %d):\n", st.Generation)
	if len(st.Ruleset.Tables) == 0 {
		fmt.Fprintln(w, "  no deskhost tables")
	}
	for _, t := range st.Ruleset.Tables {
		fmt.Fprintf(w, "table %s %s\n", firewall.FamilyName(t.Family), t.Name)
		for _, s := range t.Sets {
			preview := s.Ranges
			more := ""
			if len(preview) > 5 {
				preview, more = preview[:5], fmt.Sprintf(", ... (%d more)", len(s.Ranges)-5)
			}
			fmt.Fprintf(w, "  set %s: %d ranges, %d addresses: %s%s\n", s.Name, len(s.Ranges), s.Ranges.Size(), preview, more)
		}
		for _, c := range t.Chains {
			if c.Hook != nil {
				fmt.Fprintf(w, "  chain %s (%s hook %s priority %d policy %s)\n", c.Name, c.Hook.Type, firewall.HookName(c.Hook.Num), c.Hook.Priority, firewall.PolicyName(c.Hook.Policy))
			} else {
				fmt.Fprintf(w, "  chain %s\n", c.Name)
			}
			for _, r := range c.Rules {
				text := r.Text
				if text == "" {
					text = "[no comment: not written by netcfg] " + firewall.Canonical(r.Exprs)
				}
				fmt.Fprintf(w, "    %s\n", text)
			}
		}
	}
}
