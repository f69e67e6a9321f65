// Package reconcile is netcfg's library entry point: hostd (and the netcfg
// CLI) hand it the whole desired network state and it makes the host match,
// Talos-style: compare what the kernel holds with what is wanted and change
// only the difference.
//
//	r, err := reconcile.New(reconcile.Options{})          // host namespace
//	res, err := r.Apply(ctx, cfg)                          // on every desired-state change
//	go r.Serve(ctx)                                        // DHCP + metadata on br-mgmt, DHCP leases of the NICs
//	drift, err := r.Check(ctx, cfg)                        // desired vs applied
//	mgmt, primary, err := reconcile.TapNames("ws-a1b2c3d4e5") // "wsm-a1b2c3d4e5", "wsp-a1b2c3d4e5"
//
// Apply validates first: an invalid config (every error names its field), an
// unknown interface or a management range conflict returns an error before
// anything in the kernel changes. The firewall is then replaced in exactly one
// nftables transaction holding only the difference; an unchanged config
// sends nothing. When an IP access control change no longer allows a client,
// its live connections are dropped.
package reconcile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netns"

	"deskhost/internal/dhcpclient"
	"deskhost/netcfg/cidrset"
	"deskhost/netcfg/config"
	"deskhost/netcfg/dhcpserver"
	"deskhost/netcfg/firewall"
	"deskhost/netcfg/flows"
	"deskhost/netcfg/links"
	"deskhost/netcfg/metadata"
	"deskhost/netcfg/mgmtnet"
	"deskhost/netcfg/taps"
)

// TapNames returns the tap devices hostd must attach a WorkSpace's NICs to:
// guest eth0 (management) on the first, guest eth1 (primary) on the second.
// See package taps for the scheme.
func TapNames(workspaceID string) (mgmt, primary string, err error) { return taps.Names(workspaceID) }

// MACs returns the default MACs of a WorkSpace's two NICs (used when the
// desired state does not name them).
var MACs = taps.MACs

// Options configure a Reconciler.
type Options struct {
	// NetNS is the namespace to manage; netns.None() (or 0) is the current one.
	NetNS netns.NsHandle
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// DHCPTimeout bounds obtaining a lease for a DHCP NIC during Apply
	// (default 10 s).
	DHCPTimeout time.Duration
	// Now defaults to time.Now.
	Now func() time.Time
}

// Reconciler applies desired network states. Apply, Check and Status are
// serialized; Serve runs alongside.
type Reconciler struct {
	opts  Options
	log   *slog.Logger
	fw    *firewall.Manager
	links *links.Manager

	mu        sync.Mutex
	validator config.Validator
	compiler  *firewall.Compiler
	acl       map[string]*dirCache
	last      *state // last successful apply

	dhcp  *dhcpserver.Server
	pdhcp *dhcpserver.Server // br-primary's, with primaryNetwork.dhcp
	meta  *metadata.Server

	listening   chan struct{}   // closed when Serve's sockets are open
	ctx         context.Context // lives until Close
	cancel      context.CancelFunc
	tracker     *flows.Tracker
	trackerPort []flows.Port

	leaseMu sync.Mutex
	leases  map[string]*dhcpclient.Lease // host NIC leases, by link
	clients map[string]*dhcpclient.Client
}

type dirCache struct {
	groups []*config.GroupModel
	set    cidrset.Set
}

// state is what Apply derived; Serve and Status use it.
type state struct {
	model    *config.Model
	spec     *firewall.Spec
	rng      netip.Prefix
	mgmtNIC  string
	uplink   string
	dhcpNICs map[string]int // links to keep leases on -> default route metric
	addrs    map[string]netip.Addr
}

// Result says what an Apply did.
type Result struct {
	Changed         bool
	ManagementRange netip.Prefix
	Links           []string
	Firewall        firewall.ApplyResult
	DroppedFlows    []flows.Flow
	Duration        time.Duration
	// Phases: time spent preparing (validate, resolve, compile), on links,
	// on nftables, on the conntrack sweep.
	Prepare, LinksTime, FirewallTime, FlowsTime time.Duration
}

// New opens netlink connections for opts.NetNS.
func New(opts Options) (*Reconciler, error) {
	if opts.NetNS == 0 {
		opts.NetNS = netns.None()
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.DHCPTimeout == 0 {
		opts.DHCPTimeout = 10 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	log := opts.Logger.With("component", "netcfg")
	fw, err := firewall.Open(opts.NetNS, log)
	if err != nil {
		return nil, err
	}
	lk, err := links.Open(opts.NetNS, log)
	if err != nil {
		fw.Close()
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Reconciler{
		opts: opts, log: log, fw: fw, links: lk, ctx: ctx, cancel: cancel, listening: make(chan struct{}),
		acl:      map[string]*dirCache{},
		compiler: firewall.NewCompiler(),
		dhcp:     dhcpserver.New(dhcpserver.Config{}, log),
		pdhcp:    dhcpserver.New(dhcpserver.Config{}, log.With("network", "primary")),
		meta:     metadata.New(log),
		leases:   map[string]*dhcpclient.Lease{},
		clients:  map[string]*dhcpclient.Client{},
	}, nil
}

// Close releases netlink sockets and DHCP clients.
func (r *Reconciler) Close() error {
	r.cancel()
	r.leaseMu.Lock()
	for _, c := range r.clients {
		c.Close()
	}
	r.leaseMu.Unlock()
	r.links.Close()
	return r.fw.Close()
}

// Firewall exposes the nftables manager (for show and benchmarks).
func (r *Reconciler) Firewall() *firewall.Manager { return r.fw }

// plan is everything Apply computes before it changes anything.
type plan struct {
	model    *config.Model
	st       *mgmtnet.State
	saveSt   bool
	rng      netip.Prefix
	addrs    map[string]netip.Addr
	mgmtNIC  string
	uplink   string
	spec     *firewall.Spec
	ruleset  *firewall.Ruleset
	desired  links.Desired
	snap     *links.Snapshot
	dhcpNICs map[string]int
}

// prepare validates and resolves cfg without changing anything.
func (r *Reconciler) prepare(cfg *config.Config) (*plan, error) {
	m, err := r.validator.Validate(cfg)
	if err != nil {
		return nil, err
	}
	p := &plan{model: m, dhcpNICs: map[string]int{}}
	if p.snap, err = r.links.Snapshot(); err != nil {
		return nil, err
	}
	ml, err := p.snap.Resolve(m.Mgmt)
	if err != nil {
		return nil, err
	}
	pl, err := p.snap.Resolve(m.Primary)
	if err != nil {
		return nil, err
	}
	p.mgmtNIC, p.uplink = ml.Attrs().Name, pl.Attrs().Name
	if p.mgmtNIC == p.uplink {
		return nil, fmt.Errorf("interfaces.primary: resolves to %s, the same interface as interfaces.management", p.uplink)
	}
	if p.mgmtNIC == links.PrimaryBridge || p.mgmtNIC == links.MgmtBridge {
		return nil, fmt.Errorf("interfaces.management: %s is one of netcfg's bridges", p.mgmtNIC)
	}

	// The management range: chosen once, never overlapping the host's networks.
	nets := m.HostNetworks()
	for _, link := range []struct{ name, field string }{{p.mgmtNIC, m.Mgmt.Field}, {links.PrimaryBridge, m.Primary.Field}, {p.uplink, m.Primary.Field}} {
		for _, a := range p.snap.Addresses(link.name) {
			nets = append(nets, config.Network{Prefix: a.Masked(), Source: fmt.Sprintf("%s (address %s on %s)", link.field, a, link.name)})
		}
		for _, rt := range p.snap.Routes(link.name) {
			nets = append(nets, config.Network{Prefix: rt, Source: fmt.Sprintf("%s (route %s on %s)", link.field, rt, link.name)})
		}
	}
	if p.st, err = mgmtnet.Load(m.StateFile); err != nil {
		return nil, err
	}
	rng, chosen, err := mgmtnet.Resolve(p.st, m.Candidates, nets, r.opts.Now())
	if err != nil {
		return nil, err
	}
	p.rng, p.saveSt = rng, chosen
	var ids []string
	for _, w := range m.WorkSpaces {
		ids = append(ids, w.ID)
	}
	addrs, changed, err := mgmtnet.Allocate(p.st, rng, ids)
	if err != nil {
		return nil, err
	}
	p.addrs, p.saveSt = addrs, p.saveSt || changed

	// Firewall.
	spec := &firewall.Spec{
		MgmtNIC: p.mgmtNIC, MgmtDHCP: m.Mgmt.DHCP,
		PrimaryBridge: links.PrimaryBridge, PrimaryUplink: p.uplink, PrimaryDHCP: m.Primary.DHCP,
		VMBridge: links.MgmtBridge, PrimaryIPv6: m.PrimaryIPv6,
		BrokerPort: m.BrokerPort, AdminPort: m.AdminPort,
		AdminSources: cidrset.FromPrefixes(slices.Clone(m.AdminSources)),
		FleetPorts:   slices.Clone(m.FleetPorts),

		PrimaryDHCPServer: m.PrimaryDHCP != nil,
	}
	for _, d := range m.Directories {
		spec.Directories = append(spec.Directories, firewall.DirectoryACL{
			ID: d.ID, Restricted: d.Restricted(), Set: r.directorySet(m, d), ClientAddresses: d.ClientAddresses,
		})
	}
	base := cidrset.AddrToU32(rng.Masked().Addr())
	for _, w := range m.WorkSpaces {
		// The port mark is the offset of the WorkSpace's (stable) management
		// address in the range: stable across applies, so that adding or
		// removing a WorkSpace leaves the others' chains alone. A /16 keeps it
		// below 0xffff (the uplink's mark: the broadcast offset, never given).
		port := uint16(cidrset.AddrToU32(addrs[w.ID]) - base)
		vm := firewall.VM{ID: w.ID, Port: port, MgmtTap: w.MgmtTap, PrimaryTap: w.PrimaryTap,
			MgmtMAC: w.MgmtMAC, PrimaryMAC: w.PrimaryMAC, MgmtIP: addrs[w.ID], PrimaryIP: w.PrimaryAddr}
		for _, sg := range w.SecurityGroups {
			vm.Ingress = append(vm.Ingress, m.SGs[sg].Ingress...)
			vm.Egress = append(vm.Egress, m.SGs[sg].Egress...)
		}
		spec.VMs = append(spec.VMs, vm)
	}
	if p.ruleset, err = r.compiler.Compile(spec); err != nil {
		return nil, err
	}
	p.spec = spec

	// Links.
	hostAddr := mgmtnet.HostAddr(rng)
	p.desired = links.Desired{
		Mgmt:          links.NIC{Link: p.mgmtNIC, Static: !m.Mgmt.DHCP, Addrs: m.Mgmt.Addresses, Routes: m.Mgmt.Routes, Gateway: m.Mgmt.Gateway, MTU: m.Mgmt.MTU},
		PrimaryUplink: p.uplink,
		Primary:       links.NIC{Static: !m.Primary.DHCP, Addrs: m.Primary.Addresses, Routes: m.Primary.Routes, Gateway: m.Primary.Gateway, MTU: m.Primary.MTU},
		MgmtBridge: links.NIC{MTU: m.MgmtMTU, Addrs: []netip.Prefix{
			netip.PrefixFrom(hostAddr, rng.Bits()), netip.PrefixFrom(firewall.MetadataAddr, 32)}},
	}
	for _, w := range m.WorkSpaces {
		p.desired.Taps = append(p.desired.Taps,
			links.Tap{Name: w.MgmtTap, Bridge: links.MgmtBridge, Isolated: true},
			links.Tap{Name: w.PrimaryTap, Bridge: links.PrimaryBridge})
	}
	if m.Mgmt.DHCP {
		p.dhcpNICs[p.mgmtNIC] = 100
	}
	if m.Primary.DHCP {
		p.dhcpNICs[links.PrimaryBridge] = 200
	}
	return p, nil
}

// directorySet returns the union of a directory's groups, updated
// incrementally from the previous union when only some groups changed.
func (r *Reconciler) directorySet(m *config.Model, d config.DirectoryModel) cidrset.Set {
	cur := make([]*config.GroupModel, len(d.Groups))
	for i, g := range d.Groups {
		cur[i] = m.Groups[g]
	}
	prev := r.acl[d.ID]
	sameIDs := prev != nil && slices.EqualFunc(prev.groups, cur, func(a, b *config.GroupModel) bool { return a.ID == b.ID })
	var set cidrset.Set
	if !sameIDs {
		sets := make([]cidrset.Set, len(cur))
		for i, g := range cur {
			sets[i] = g.Set
		}
		set = cidrset.Union(sets...)
	} else {
		set = prev.set
		work := slices.Clone(prev.groups)
		for i, g := range cur {
			if work[i] == g {
				continue
			}
			old := work[i]
			work[i] = g
			// Addresses only the old version allowed leave the union unless
			// another group still allows them.
			gone := cidrset.Subtract(old.Set, g.Set)
			for j, o := range work {
				if j != i && len(gone) > 0 {
					gone = cidrset.Subtract(gone, o.Set)
				}
			}
			set = cidrset.Patch(set, gone, cidrset.Subtract(g.Set, old.Set))
		}
	}
	r.acl[d.ID] = &dirCache{groups: cur, set: set}
	return set
}

// Apply makes the host match cfg. Nothing changes when cfg is invalid,
// names an unknown interface or a conflicting management range.
func (r *Reconciler) Apply(ctx context.Context, cfg *config.Config) (*Result, error) {
	start := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	p, err := r.prepare(cfg)
	if err != nil {
		r.log.Warn("desired state rejected; nothing changed", "err", err)
		return nil, err
	}
	res := &Result{ManagementRange: p.rng, Prepare: time.Since(start)}
	if p.saveSt {
		if err := mgmtnet.Save(p.model.StateFile, p.st); err != nil {
			return nil, err
		}
	}
	t0 := time.Now()
	if res.Links, err = r.links.Apply(p.desired, p.snap); err != nil {
		return res, err
	}
	t1 := time.Now()
	res.LinksTime = t1.Sub(t0)
	if res.Firewall, err = r.fw.Apply(p.ruleset); err != nil {
		return res, err
	}
	t2 := time.Now()
	res.FirewallTime = t2.Sub(t1)
	if aclTouched(res.Firewall) {
		defer func() { res.FlowsTime = time.Since(t2) }()
		tr, err := r.flowTracker(flowPorts(p.spec))
		if err != nil {
			return res, err
		}
		fr, err := tr.Drop(allowedBy(p.spec))
		if err != nil {
			return res, err
		}
		res.DroppedFlows = fr.Dropped
		for _, f := range fr.Dropped {
			r.log.Info("disconnected a client no longer allowed by IP access control", "flow", f.String())
		}
	}
	r.last = &state{model: p.model, spec: p.spec, rng: p.rng, mgmtNIC: p.mgmtNIC, uplink: p.uplink, dhcpNICs: p.dhcpNICs, addrs: p.addrs}
	r.updateServers()

	// DHCP NICs without a lease get one now (Serve keeps them afterwards).
	for link, metric := range p.dhcpNICs {
		ch, err := r.ensureLease(ctx, link, metric)
		res.Links = append(res.Links, ch...)
		if err != nil {
			return res, err
		}
	}
	res.Changed = len(res.Links) > 0 || res.Firewall.Changed || len(res.DroppedFlows) > 0
	res.Duration = time.Since(start)
	if res.Changed {
		r.log.Info("network applied", "links", len(res.Links), "firewallMessages", res.Firewall.Messages,
			"rangesAdded", res.Firewall.RangesAdded, "rangesRemoved", res.Firewall.RangesRemoved,
			"droppedFlows", len(res.DroppedFlows), "duration", res.Duration)
	}
	return res, nil
}

// flowTracker returns the live conntrack index of client flows, starting one
// (one table dump) when none runs or the client ports changed.
func (r *Reconciler) flowTracker(ports []flows.Port) (*flows.Tracker, error) {
	if r.tracker != nil && r.tracker.Alive() && slices.Equal(r.trackerPort, ports) {
		return r.tracker, nil
	}
	if r.tracker != nil {
		r.tracker.Stop()
	}
	t, err := flows.StartTracker(r.ctx, r.opts.NetNS, firewall.ClientFlowMark, ports, r.log)
	if err != nil {
		return nil, err
	}
	r.tracker, r.trackerPort = t, ports
	return t, nil
}

func aclTouched(fr firewall.ApplyResult) bool {
	for _, s := range fr.ShrunkSets {
		if strings.HasPrefix(s, "acl_") {
			return true
		}
	}
	return slices.Contains(fr.Chains, "client_acl")
}

func flowPorts(s *firewall.Spec) []flows.Port {
	var out []flows.Port
	for _, p := range s.ClientPorts() {
		out = append(out, flows.Port{Proto: p.Proto, Port: p.Port})
	}
	return out
}

// allowedBy is the client_acl chain's verdict as a function.
func allowedBy(s *firewall.Spec) flows.Allowed {
	return func(src, dst netip.Addr) bool {
		for _, d := range s.Directories {
			if len(d.ClientAddresses) > 0 && !slices.Contains(d.ClientAddresses, dst) {
				continue
			}
			if !d.Restricted || d.Set.Contains(src) {
				return true
			}
		}
		return false
	}
}

func (r *Reconciler) updateServers() {
	s := r.last
	host := mgmtnet.HostAddr(s.rng)
	var routes []dhcpserver.Route
	routes = append(routes, dhcpserver.Route{Dst: s.rng, Via: netip.IPv4Unspecified()})
	for _, a := range append([]netip.Addr{firewall.MetadataAddr}, firewall.KMSAddrs...) {
		routes = append(routes, dhcpserver.Route{Dst: netip.PrefixFrom(a, 32), Via: host})
	}
	r.dhcp.SetConfig(dhcpserver.Config{Interface: links.MgmtBridge, ServerIP: host, Network: s.rng, Routes: routes,
		LeaseTime: s.model.LeaseTime, MTU: s.model.MgmtMTU})
	var ls []dhcpserver.Lease
	var is []metadata.Instance
	for _, w := range s.model.WorkSpaces {
		ls = append(ls, dhcpserver.Lease{MAC: w.MgmtMAC, IP: s.addrs[w.ID], Hostname: w.Hostname})
		is = append(is, metadata.Instance{WorkspaceID: w.ID, DirectoryID: w.Directory, IP: s.addrs[w.ID],
			MAC: w.MgmtMAC.String(), Hostname: w.Hostname, UserName: w.UserName, UserData: w.UserData})
	}
	r.dhcp.SetLeases(ls)
	r.meta.SetInstances(is)
	if d := s.model.PrimaryDHCP; d != nil {
		r.pdhcp.SetConfig(dhcpserver.Config{Interface: links.PrimaryBridge, ServerIP: d.ServerIP, Network: d.Subnet, Router: d.Router,
			LeaseTime: s.model.LeaseTime, MTU: s.model.Primary.MTU})
		var pls []dhcpserver.Lease
		for _, w := range s.model.WorkSpaces {
			if w.PrimaryAddr.IsValid() {
				pls = append(pls, dhcpserver.Lease{MAC: w.PrimaryMAC, IP: w.PrimaryAddr, Hostname: w.Hostname})
			}
		}
		r.pdhcp.SetLeases(pls)
	}
}

// ensureLease obtains a lease for a DHCP NIC that has none yet.
func (r *Reconciler) ensureLease(ctx context.Context, link string, metric int) ([]string, error) {
	r.leaseMu.Lock()
	defer r.leaseMu.Unlock()
	if l := r.leases[link]; l != nil && time.Since(l.Obtained) < l.Duration {
		return nil, nil
	}
	c := r.clients[link]
	if c == nil {
		var err error
		if c, err = dhcpclient.New(r.opts.NetNS, link, r.log); err != nil {
			return nil, err
		}
		r.clients[link] = c
	}
	ctx, cancel := context.WithTimeout(ctx, r.opts.DHCPTimeout)
	defer cancel()
	l, err := c.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	ch, err := r.applyLease(link, metric, l)
	return ch, err
}

func (r *Reconciler) applyLease(link string, metric int, l *dhcpclient.Lease) ([]string, error) {
	if r.last != nil && l.Addr.Overlaps(r.last.rng) {
		return nil, &mgmtnet.ConflictError{Range: r.last.rng, Chosen: true,
			Network: config.Network{Prefix: l.Addr.Masked(), Source: "DHCP lease on " + link}}
	}
	ch, err := r.links.SetLease(link, links.Lease{Addr: l.Addr, Router: l.Router, MTU: l.MTU, Lifetime: l.Duration}, metric)
	if err != nil {
		return ch, err
	}
	r.leases[link] = l
	return ch, nil
}

// Serve runs the services of the management network (DHCP server on br-mgmt,
// metadata on 169.254.169.254:80) and keeps the NICs' DHCP leases, until ctx
// ends. Apply must have succeeded once before.
func (r *Reconciler) Serve(ctx context.Context) error {
	r.mu.Lock()
	s := r.last
	r.mu.Unlock()
	if s == nil {
		return errors.New("reconcile: Serve before a successful Apply")
	}
	conn, err := dhcpserver.Listen(r.opts.NetNS, links.MgmtBridge)
	if err != nil {
		return err
	}
	ml, err := metadata.Listen(r.opts.NetNS, metadata.Addr)
	if err != nil {
		conn.Close()
		return err
	}
	// The primary network's DHCP service is on when the first applied state asks for it
	// (turning it on later takes a restart of Serve).
	var pconn net.PacketConn
	if s.model.PrimaryDHCP != nil {
		if pconn, err = dhcpserver.Listen(r.opts.NetNS, links.PrimaryBridge); err != nil {
			conn.Close()
			ml.Close()
			return err
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	select {
	case <-r.listening:
	default:
		close(r.listening)
	}
	errc := make(chan error, 3+len(s.dhcpNICs))
	go func() { errc <- r.dhcp.Serve(ctx, conn) }()
	go func() { errc <- r.meta.Serve(ctx, ml) }()
	n := 2
	if pconn != nil {
		n++
		go func() { errc <- r.pdhcp.Serve(ctx, pconn) }()
	}
	for link, metric := range s.dhcpNICs {
		r.leaseMu.Lock()
		c, l := r.clients[link], r.leases[link]
		r.leaseMu.Unlock()
		if c == nil || l == nil {
			continue
		}
		n++
		go func() {
			errc <- c.Keep(ctx, l, func(nl *dhcpclient.Lease) error {
				r.leaseMu.Lock()
				defer r.leaseMu.Unlock()
				_, err := r.applyLease(link, metric, nl)
				return err
			})
		}()
	}
	r.log.Info("serving management network", "dhcp", links.MgmtBridge, "metadata", metadata.Addr, "primaryDHCP", pconn != nil)
	var first error
	for range n {
		if err := <-errc; err != nil && first == nil {
			first = err
			cancel()
		}
	}
	return first
}

// Listening is closed once Serve has opened its sockets (DHCP and metadata
// answer from then on).
func (r *Reconciler) Listening() <-chan struct{} { return r.listening }

// Check compares the host with cfg and lists every difference (empty: in
// sync). It changes nothing and reads the whole ruleset from the kernel.
func (r *Reconciler) Check(ctx context.Context, cfg *config.Config) ([]string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p, err := r.prepare(cfg)
	if err != nil {
		return nil, err
	}
	var drift []string
	if p.saveSt {
		drift = append(drift, fmt.Sprintf("state: management range or addresses not yet recorded in %s", p.model.StateFile))
	}
	lk, err := r.links.Check(p.desired, p.snap)
	if err != nil {
		return nil, err
	}
	drift = append(drift, lk...)
	got, err := r.fw.ReadBack()
	if err != nil {
		return nil, err
	}
	drift = append(drift, firewall.Drift(p.ruleset, got)...)
	return drift, nil
}

// Status is what `netcfg show` prints.
type Status struct {
	StateFile       string
	State           *mgmtnet.State
	Links           *links.Observed
	Ruleset         *firewall.Ruleset
	Generation      uint32
	NICs            []string
	ManagementRange netip.Prefix
}

// Status reads the applied state: links, the ruleset, and (with stateFile)
// the persisted management range and addresses.
func (r *Reconciler) Status(stateFile string, nics ...string) (*Status, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := &Status{StateFile: stateFile, NICs: nics}
	var err error
	if stateFile != "" {
		if st.State, err = mgmtnet.Load(stateFile); err != nil {
			return nil, err
		}
		st.ManagementRange = st.State.Range
	}
	if st.Links, err = r.links.Observe(nics...); err != nil {
		return nil, err
	}
	if st.Ruleset, err = r.fw.ReadBack(); err != nil {
		return nil, err
	}
	if st.Generation, err = r.fw.Generation(); err != nil {
		return nil, err
	}
	return st, nil
}
