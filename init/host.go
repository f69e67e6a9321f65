package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"deskhost/internal/atomicfile"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/workspaces"
	"github.com/aws/aws-sdk-go-v2/service/workspaces/types"
	"github.com/vishvananda/netlink"
	"go.yaml.in/yaml/v3"
	"golang.org/x/sys/unix"

	"deskhost/hostd/memscrub"
	"deskhost/init/console"
	"deskhost/init/hostcfg"
	"deskhost/init/logbuf"
	"deskhost/init/nicroles"
	"deskhost/init/perm"
	"deskhost/init/power"
	"deskhost/init/proc"
	"deskhost/init/supervisor"
	"deskhost/internal/hostconfig"
	"deskhost/internal/hostdclient"
	"deskhost/internal/imagelayout"
	"deskhost/netcfg/config"
)

type powerRequest struct {
	action       power.Action
	factoryReset bool
}

// host is init's state; it implements console.Host.
type host struct {
	start   time.Time
	release imagelayout.Release
	reaper  *proc.Reaper
	initLog *logbuf.Log
	blog    *bootLog
	power   chan powerRequest

	cfg       *hostconfig.Config // as the services get it (the console's override applied)
	cfgRaw    []byte             // as found, with this boot's NIC roles pinned
	nics      nicState           // this boot's NIC roles
	cfgSrc    hostcfg.Source
	permState perm.State
	services  []*supervisor.Service
	byName    map[string]*supervisor.Service

	logMax  int64
	logKeep int
	logRing int

	mu           sync.Mutex
	phase        string // "" while running; "shutting down"
	everReady    bool
	readyTimeout time.Duration
	alarms       map[string]string
	timeState    string
	wsCounts     map[string]int
	wsNote       string
	fleet        string     // the status screen's Fleet line
	netMu        sync.Mutex // one network change at a time
	powerAsked   bool
	password     *console.Password
	hostdAPI     *hostdclient.Client
	hostdSocket  string // hostdAPI's
}

func (h *host) alarm(key, text string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.alarms[key] != text {
		h.initLog.Printf("alarm %s: %s", key, text)
	}
	h.alarms[key] = text
}

func (h *host) clearAlarm(key string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.alarms, key)
}

func (h *host) setPhase(p string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.phase = p
}

func (h *host) setTime(s string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.timeState = s
}

// Status implements console.Host.
func (h *host) Status() console.Status {
	serving := h.serving()
	h.mu.Lock()
	phase := h.phase
	switch {
	case phase != "":
	case serving:
		phase = "ready"
	case h.everReady || (h.readyTimeout > 0 && time.Since(h.start) > h.readyTimeout):
		phase = "degraded"
	default:
		phase = "starting"
	}
	st := console.Status{
		Phase: phase, Version: nonEmpty(h.release.Version, "dev"), Kernel: h.release.Kernel,
		Uptime: time.Since(h.start), Orphans: h.reaper.Orphans(), Workspaces: h.wsCounts, WorkspacesNote: h.wsNote, Fleet: h.fleet,
		Time: time.Now().UTC().Format("2006-01-02 15:04:05 UTC") + "  " + h.timeState,
	}
	keys := make([]string, 0, len(h.alarms))
	for k := range h.alarms {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		st.Alarms = append(st.Alarms, h.alarms[k])
	}
	h.mu.Unlock()
	st.Hostname, _ = os.Hostname()
	st.Management, st.Primary = h.addresses()
	st.NICs = h.nics.lines()
	st.NetworkWriter = h.networkWriter()
	if st.NetworkWriter == "init" {
		st.NetworkWriter = "init (no service keeps it: hostd and netcfg's service are off)"
	}
	st.Storage = h.storage()
	for _, s := range h.services {
		ss := s.Status()
		st.Services = append(st.Services, console.ServiceInfo{Name: ss.Name, State: ss.State, PID: ss.PID,
			Restarts: ss.Restarts, Since: ss.Since, LastExit: ss.LastExit, Why: ss.Why})
		if ss.State == supervisor.StateBackoff && ss.Restarts >= 2 {
			st.Alarms = append(st.Alarms, fmt.Sprintf("%s keeps failing: %s", ss.Name, ss.LastExit))
		}
	}
	if r, err := memscrub.Check(); err == nil {
		if !r.InitOnFree {
			st.Alarms = append(st.Alarms, "init_on_free off: freed guest memory is not zeroed by the kernel")
		}
		if len(r.Swap) > 0 {
			st.Alarms = append(st.Alarms, "swap is on: guest memory may be written to disk")
		}
		if r.KSMRunning {
			st.Alarms = append(st.Alarms, "KSM is merging pages across guests")
		}
	}
	return st
}

func (h *host) storage() string {
	ps := h.permState
	if ps.InMemory {
		return "/perm in memory (not persistent)"
	}
	var fs unix.Statfs_t
	used := ""
	if err := unix.Statfs(imagelayout.Perm, &fs); err == nil && fs.Blocks > 0 {
		total := float64(fs.Blocks) * float64(fs.Bsize)
		free := float64(fs.Bavail) * float64(fs.Bsize)
		used = fmt.Sprintf(", %.0f%% of %.1f GiB used", 100*(total-free)/total, total/(1<<30))
	}
	return "/perm on " + ps.Device + " (ext4" + used + ")"
}

// config is the host config as the services have it (SetManagement replaces it).
func (h *host) config() *hostconfig.Config {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.cfg
}

// networkConfig is netcfg's desired state from the host config.
func (h *host) networkConfig() (*config.Config, []byte, error) {
	cfg := h.config()
	if cfg == nil {
		return nil, nil, errors.New("no host config")
	}
	b, err := cfg.NetworkYAML()
	if err != nil || b == nil {
		return nil, nil, errors.New("no init.network in the host config")
	}
	c, err := config.Decode(b)
	if err != nil {
		return nil, nil, err
	}
	return c, b, nil
}

// addresses describes the management NIC and the primary bridge.
func (h *host) addresses() (mgmt, primary string) {
	c, _, err := h.networkConfig()
	if err != nil {
		return "not configured (" + err.Error() + ")", "-"
	}
	n := c.Interfaces.Management
	link := findLink(n.Name, n.MAC)
	if link == nil {
		mgmt = fmt.Sprintf("NIC %s not found", nonEmpty(n.Name, n.MAC))
	} else {
		mode := "static"
		if n.DHCP {
			mode = "dhcp"
		}
		if r := h.nics.ruleOf(nicroles.Management); r != "" {
			mode += ", " + r
		}
		mgmt = fmt.Sprintf("%s %s%s (%s)", link.Attrs().Name, linkAddrs(link), gateway(link), mode)
	}
	if br, err := netlink.LinkByName("br-primary"); err == nil {
		mode := "static"
		if c.Interfaces.Primary.DHCP {
			mode = "dhcp"
		}
		uplink := nonEmpty(c.Interfaces.Primary.Name, c.Interfaces.Primary.MAC)
		if r := h.nics.ruleOf(nicroles.Primary); r != "" {
			uplink += ", " + r
		}
		primary = fmt.Sprintf("br-primary %s (%s, uplink %s)", linkAddrs(br), mode, uplink)
	} else {
		primary = "br-primary not up"
	}
	return mgmt, primary
}

func findLink(name, mac string) netlink.Link {
	if name != "" {
		if l, err := netlink.LinkByName(name); err == nil {
			return l
		}
	}
	if mac != "" {
		links, _ := netlink.LinkList()
		for _, l := range links {
			if strings.EqualFold(l.Attrs().HardwareAddr.String(), mac) && l.Type() == "device" {
				return l
			}
		}
	}
	return nil
}

func linkAddrs(l netlink.Link) string {
	addrs, err := netlink.AddrList(l, unix.AF_INET)
	if err != nil || len(addrs) == 0 {
		if l.Attrs().OperState != netlink.OperUp && l.Attrs().Flags&net.FlagUp == 0 {
			return "down, no address"
		}
		return "no address"
	}
	var s []string
	for _, a := range addrs {
		s = append(s, a.IPNet.String())
	}
	return strings.Join(s, " ")
}

func gateway(l netlink.Link) string {
	routes, err := netlink.RouteList(l, unix.AF_INET)
	if err != nil {
		return ""
	}
	for _, r := range routes {
		if (r.Dst == nil || r.Dst.String() == "0.0.0.0/0") && r.Gw != nil {
			return " gw " + r.Gw.String()
		}
	}
	return ""
}

// applyNetwork writes netcfg's config and applies it once (boot step 8).
func (h *host) applyNetwork() {
	_, b, err := h.networkConfig()
	if err != nil {
		h.blog.Printf("network: %v", err)
		if cfg := h.config(); cfg != nil && cfg.Init.Network.Kind != 0 {
			h.alarm("netcfg", "network: "+err.Error())
		}
		return
	}
	if err := writeFile(runNetcfg, b, 0o600); err != nil {
		h.alarm("netcfg", err.Error())
		return
	}
	t := time.Now()
	out, err := h.runOutput(netcfgTimeout, imagelayout.Netcfg, "apply", "--config", runNetcfg)
	h.initLog.Printf("netcfg apply:\n%s", out)
	if err != nil {
		h.alarm("netcfg", "netcfg apply: "+err.Error()+": "+lastLine(string(out)))
		h.blog.Printf("network: netcfg apply failed: %v: %s", err, lastLine(string(out)))
		return
	}
	h.clearAlarm("netcfg")
	mgmt, _ := h.addresses()
	h.blog.Printf("network: netcfg applied in %.1fs; management %s", time.Since(t).Seconds(), mgmt)
}

func lastLine(s string) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	return l[len(l)-1]
}

// override is the console's management-address setting, kept on /perm.
type override struct {
	DHCP    bool   `yaml:"dhcp"`
	Address string `yaml:"address,omitempty"`
	Gateway string `yaml:"gateway,omitempty"`
}

// readOverride reads the console's management-address setting, if there is one.
func readOverride() (*override, error) {
	ob, err := os.ReadFile(mgmtOverride)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var o override
	if err := yaml.Unmarshal(ob, &o); err != nil {
		return nil, fmt.Errorf("%s: %w", mgmtOverride, err)
	}
	return &o, nil
}

// effectiveConfig is the host config as the services get it: the console's management
// address setting (kept on /perm) replaces init.network's. The YAML tree is edited, so
// everything else stays as the operator wrote it.
func effectiveConfig(raw []byte, cfg *hostconfig.Config, o *override) ([]byte, error) {
	if o == nil || cfg.Init.Network.Kind == 0 {
		return raw, nil
	}
	return setManagement(raw, *o, "init", "network")
}

// setManagement edits the YAML document b: the mapping at path (below the document's
// root) is netcfg's config, whose interfaces.management gets o's addressing.
func setManagement(b []byte, o override, path ...string) ([]byte, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, err
	}
	if len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, errors.New("not a YAML mapping")
	}
	n := doc.Content[0]
	for _, k := range path {
		n = child(n, k)
	}
	mgmt := child(child(n, "interfaces"), "management")
	if mgmt == nil {
		return nil, fmt.Errorf("no %s", strings.Join(append(path, "interfaces", "management"), "."))
	}
	for _, k := range []string{"dhcp", "addresses", "gateway", "routes"} {
		del(mgmt, k)
	}
	if o.DHCP {
		put(mgmt, "dhcp", &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!bool", Value: "true"})
	} else {
		put(mgmt, "addresses", &yaml.Node{Kind: yaml.SequenceNode, Content: []*yaml.Node{{Kind: yaml.ScalarNode, Value: o.Address}}})
		if o.Gateway != "" {
			put(mgmt, "gateway", &yaml.Node{Kind: yaml.ScalarNode, Value: o.Gateway})
		}
	}
	return yaml.Marshal(&doc)
}

func child(m *yaml.Node, key string) *yaml.Node {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

func del(m *yaml.Node, key string) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			m.Content = append(m.Content[:i], m.Content[i+2:]...)
			return
		}
	}
}

func put(m *yaml.Node, key string, v *yaml.Node) {
	m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: key}, v)
}

// Management implements console.Host.
func (h *host) Management() (console.Management, error) {
	c, _, err := h.networkConfig()
	if err != nil {
		return console.Management{}, err
	}
	n := c.Interfaces.Management
	m := console.Management{DHCP: n.DHCP, Gateway: n.Gateway}
	if len(n.Addresses) > 0 {
		m.Address = n.Addresses[0]
	}
	return m, nil
}

// networkWriter is who writes the kernel's network now (one writer at a time): hostd
// while it is enabled (through netcfg's library, with its WorkSpaces' taps in it), else
// netcfg's service (`netcfg apply --serve`) if enabled, else init. init itself writes it
// only during the boot, before any service starts (the DHCP probe of the NIC roles, the
// config fetch's bootstrap network, the first `netcfg apply`).
func (h *host) networkWriter() string {
	if hd := h.byName["hostd"]; hd != nil && !hd.Disabled() {
		return "hostd"
	}
	if nc := h.byName["netcfg"]; nc != nil && !nc.Disabled() {
		return "netcfg"
	}
	return "init"
}

// SetManagement implements console.Host. The new addressing is checked with netcfg's
// own rules (through hostconfig's validator) and kept on /perm for the next boots. The
// console never writes the network itself: it asks the network's one writer
// (networkWriter) to apply the new config. hostd and netcfg's service apply it when they
// start, so the writer is restarted with it; only when neither runs does init apply it
// with `netcfg apply`.
func (h *host) SetManagement(ctx context.Context, m console.Management) (string, error) {
	h.netMu.Lock()
	defer h.netMu.Unlock()
	o := override{DHCP: m.DHCP}
	if !m.DHCP {
		p, err := netip.ParsePrefix(m.Address)
		if err != nil || !p.Addr().Is4() {
			return "", fmt.Errorf("address %q: want an IPv4 address with its prefix length, e.g. 192.0.2.10/24", m.Address)
		}
		if m.Gateway != "" {
			g, err := netip.ParseAddr(m.Gateway)
			if err != nil || !g.Is4() {
				return "", fmt.Errorf("gateway %q: want an IPv4 address", m.Gateway)
			}
			if !p.Masked().Contains(g) {
				return "", fmt.Errorf("gateway %s is not in %s", g, p.Masked())
			}
		}
		o.Address, o.Gateway = p.String(), m.Gateway
	}
	cur := h.config()
	if cur == nil || cur.Init.Network.Kind == 0 {
		return "", errors.New("the host config has no init.network section")
	}
	raw, err := effectiveConfig(h.cfgRaw, cur, &o)
	if err != nil {
		return "", err
	}
	// hostconfig's validator checks init.network by netcfg's own rules.
	cfg, err := hostcfg.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("the new config does not load: %w", err)
	}
	nb, err := cfg.NetworkYAML()
	if err != nil {
		return "", err
	}
	ob, _ := yaml.Marshal(o)
	if err := writeFile(mgmtOverride, ob, 0o600); err != nil {
		return "", fmt.Errorf("cannot keep the setting on /perm: %w", err)
	}
	if err := writeFile(runConfig, raw, 0o600); err != nil {
		return "", err
	}
	if err := writeFile(runNetcfg, nb, 0o600); err != nil {
		return "", err
	}
	h.mu.Lock()
	h.cfg = cfg
	h.mu.Unlock()
	writer := h.networkWriter()
	h.initLog.Printf("console: management address set to %+v; asking %s to apply it", o, writer)
	switch writer {
	case "hostd", "netcfg":
		s := h.byName[writer]
		before := s.Status().Restarts
		if err := s.Restart(); err != nil {
			return "", err
		}
		// Wait for it to serve again: it applies the network first. A netcfg that
		// cannot apply it exits, and comes back in backoff.
		deadline := time.Now().Add(3 * time.Minute)
		time.Sleep(time.Second)
		for !s.Ready() {
			st := s.Status()
			if st.State == supervisor.StateBackoff && st.Restarts > before {
				return strings.Join(lastLines(s.Log().Lines(0), 5), "\n"), fmt.Errorf("%s did not apply it: %s", writer, st.LastExit)
			}
			if time.Now().After(deadline) {
				return "", fmt.Errorf("%s did not come back within 3 minutes; see its log", writer)
			}
			time.Sleep(250 * time.Millisecond)
		}
		mgmt, _ := h.addresses()
		return writer + " restarted and applied the network.\nManagement: " + mgmt, nil
	}
	out, err := h.runOutput(netcfgTimeout, imagelayout.Netcfg, "apply", "--config", runNetcfg)
	if err != nil {
		return string(out), fmt.Errorf("netcfg apply: %w", err)
	}
	return string(out), nil
}

func lastLines(l []string, n int) []string {
	if len(l) > n {
		return l[len(l)-n:]
	}
	return l
}

// ServiceLog implements console.Host.
func (h *host) ServiceLog(name string) []string {
	if name == "init" {
		return h.initLog.Lines(0)
	}
	if s := h.byName[name]; s != nil {
		return s.Log().Lines(0)
	}
	return nil
}

// RestartService implements console.Host.
func (h *host) RestartService(name string) error {
	s := h.byName[name]
	if s == nil {
		return fmt.Errorf("no service %s", name)
	}
	h.initLog.Printf("console: restart %s", name)
	return s.Restart()
}

// hostd is a client of hostd's API on its socket (one per socket path, so its connections
// are reused).
func (h *host) hostd() (*hostdclient.Client, error) {
	cfg := h.config()
	if cfg == nil || cfg.Hostd.API.Socket == "" {
		return nil, errors.New("hostd has no API socket in the host config")
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.hostdAPI == nil || h.hostdSocket != cfg.Hostd.API.Socket {
		c, err := hostdclient.New(hostdclient.Options{Socket: cfg.Hostd.API.Socket})
		if err != nil {
			return nil, err
		}
		h.hostdAPI, h.hostdSocket = c, cfg.Hostd.API.Socket
	}
	return h.hostdAPI, nil
}

// Workspaces implements console.Host.
func (h *host) Workspaces(ctx context.Context) ([]console.Workspace, error) {
	c, err := h.hostd()
	if err != nil {
		return nil, err
	}
	var list []console.Workspace
	p := workspaces.NewDescribeWorkspacesPaginator(c, &workspaces.DescribeWorkspacesInput{})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, err
		}
		for _, w := range page.Workspaces {
			list = append(list, console.Workspace{ID: aws.ToString(w.WorkspaceId), State: string(w.State), User: aws.ToString(w.UserName),
				Directory: aws.ToString(w.DirectoryId), IP: aws.ToString(w.IpAddress)})
		}
	}
	sort.Slice(list, func(i, j int) bool { return list[i].ID < list[j].ID })
	return list, nil
}

// WorkspaceAction implements console.Host.
func (h *host) WorkspaceAction(ctx context.Context, action, id string) (string, error) {
	if action != "reboot" && action != "stop" {
		return "", fmt.Errorf("unknown action %q", action)
	}
	c, err := h.hostd()
	if err != nil {
		return "", err
	}
	h.initLog.Printf("console: %s %s", action, id)
	var failed []types.FailedWorkspaceChangeRequest
	if action == "reboot" {
		out, err := c.RebootWorkspaces(ctx, &workspaces.RebootWorkspacesInput{RebootWorkspaceRequests: []types.RebootRequest{{WorkspaceId: aws.String(id)}}})
		if err != nil {
			return "", err
		}
		failed = out.FailedRequests
	} else {
		out, err := c.StopWorkspaces(ctx, &workspaces.StopWorkspacesInput{StopWorkspaceRequests: []types.StopRequest{{WorkspaceId: aws.String(id)}}})
		if err != nil {
			return "", err
		}
		failed = out.FailedRequests
	}
	for _, f := range failed {
		return "", fmt.Errorf("%s: %s", aws.ToString(f.ErrorCode), aws.ToString(f.ErrorMessage))
	}
	return id + ": " + action + " requested", nil
}

// Hosts implements console.Host.
func (h *host) Hosts(ctx context.Context) ([]console.FleetHost, error) {
	c, err := h.hostd()
	if err != nil {
		return nil, err
	}
	out, err := c.DescribeHosts(ctx)
	if err != nil {
		return nil, err
	}
	self := h.hardwareID()
	var list []console.FleetHost
	for _, x := range out.Hosts {
		addr := x.Addresses.Fleet
		if addr == "" {
			addr = x.Addresses.API
		}
		list = append(list, console.FleetHost{ID: x.HostId, Name: x.Name, State: x.State, Address: addr, HardwareID: x.HardwareId,
			JoinCode: x.JoinCode, This: self != "" && x.HardwareId == self && x.State != "joining",
			VCPUs: x.Reserved.VCPUs, VCPUsCap: x.Capacity.VCPUs, MemoryMiB: x.Reserved.MemoryMiB, MemoryMiBCap: x.Capacity.MemoryMiB,
			Workspaces: x.Workspaces})
	}
	sort.SliceStable(list, func(i, j int) bool { return list[i].Name < list[j].Name })
	return list, nil
}

// ApproveHost implements console.Host.
func (h *host) ApproveHost(ctx context.Context, code string) (string, error) {
	c, err := h.hostd()
	if err != nil {
		return "", err
	}
	h.initLog.Printf("console: approve host %s", code)
	out, err := c.ApproveHost(ctx, &hostdclient.ApproveHostInput{Code: code})
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("approved %s (%s): it joins once it has its credentials", out.HostId, out.Name), nil
}

// hardwareID is the identity hostd registers this host under: the host config's, else
// the one init read (DMI UUID, else the management MAC).
func (h *host) hardwareID() string {
	if cfg := h.config(); cfg != nil && cfg.Hostd.Fleet != nil && cfg.Hostd.Fleet.HardwareID != "" {
		return cfg.Hostd.Fleet.HardwareID
	}
	if id := h.nics.hwid; !id.IsZero() {
		return id.String()
	}
	return ""
}

// joinCodeRe is hostd's line for a host waiting for approval (hostd/fleet.go), and
// joinUnreachable its log message while the fleet host it joins through cannot be reached
// (hostd/fleet/join.go); logErrRe finds the error in a log line, text or JSON.
var (
	joinCodeRe      = regexp.MustCompile(`deskhost: join code (\S+):`)
	joinUnreachable = "join: fleet host not reached"
	storeWaiting    = "waiting for the fleet store" // hostd/fleet.go: it has its credentials
	logErrRe        = regexp.MustCompile(`"?err"?[=:]"((?:[^"\\]|\\.)*)"`)
)

// joiningLine is the Fleet line of a host whose hostd does not serve yet, from hostd's
// log: the join code it waits with, or why it cannot ask.
func joiningLine(lines []string) string {
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.Contains(lines[i], storeWaiting) {
			return "approved; waiting for the etcd quorum (3 Logs, hostd)"
		}
		if m := joinCodeRe.FindStringSubmatch(lines[i]); m != nil {
			return "join code " + m[1] + ": approve on a fleet host (9 Hosts, or hostd hosts approve)"
		}
		if strings.Contains(lines[i], joinUnreachable) {
			why := "see 3 Logs, hostd"
			if m := logErrRe.FindStringSubmatch(lines[i]); m != nil {
				why = strings.ReplaceAll(m[1], `\"`, `"`)
			}
			return "cannot reach the fleet host to join: " + why
		}
	}
	return "not in the fleet yet (hostd is starting)"
}

// fleetLine is the status screen's Fleet line: "" for a host in no fleet; the join code
// while hostd waits for approval (its log's last join-code line: hostd serves nothing
// until it is approved); then the fleet's hosts by state.
func (h *host) fleetLine(serving bool) string {
	cfg := h.config()
	if cfg == nil || cfg.Hostd.Fleet == nil {
		return ""
	}
	if !serving {
		var lines []string
		if s := h.byName["hostd"]; s != nil {
			lines = s.Log().Lines(0)
		}
		return joiningLine(lines)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	list, err := h.Hosts(ctx)
	cancel()
	if err != nil {
		return "hostd: " + firstLine(err.Error())
	}
	by := map[string]int{}
	this := ""
	for _, x := range list {
		by[x.State]++
		if x.This {
			this = x.State
		}
	}
	var parts []string
	for _, st := range []string{"ready", "joining", "draining", "down"} {
		if by[st] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", by[st], st))
		}
	}
	noun := "hosts"
	if len(list) == 1 {
		noun = "host"
	}
	line := fmt.Sprintf("%d %s: %s", len(list), noun, strings.Join(parts, ", "))
	if this != "" {
		line += "; this one " + this
	}
	return line
}

// refreshWorkspaces keeps the status screen's WorkSpace counts and fleet line current.
func (h *host) refreshWorkspaces() {
	for {
		s := h.byName["hostd"]
		note := ""
		var counts map[string]int
		serving := s != nil && s.Ready()
		fl := h.fleetLine(serving)
		if !serving {
			note = "hostd is not serving yet"
		} else {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			list, err := h.Workspaces(ctx)
			cancel()
			if err != nil {
				note = "hostd: " + firstLine(err.Error())
			} else {
				counts = map[string]int{}
				for _, w := range list {
					counts[w.State]++
				}
			}
		}
		h.mu.Lock()
		h.wsCounts, h.wsNote, h.fleet = counts, note, fl
		h.mu.Unlock()
		time.Sleep(10 * time.Second)
	}
}

// Shell implements console.Host: a login shell of its own session with the terminal
// as its controlling terminal (so ^C and job control work), on a descriptor opened
// afresh (blocking, unlike the console's).
func (h *host) Shell(name string) error {
	tty, err := os.OpenFile("/dev/"+name, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer tty.Close()
	if err := console.Cooked(tty); err != nil {
		return err
	}
	console.SetWinsize(tty)
	term := "linux"
	if strings.HasPrefix(name, "ttyS") {
		term = "vt100"
	}
	cmd := exec.Command(imagelayout.Shell, "-l")
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "TERM=" + term, "ENV=/etc/profile",
		"LIBVIRT_DEFAULT_URI=qemu:///system", "LANG=C.UTF-8"}
	cmd.Dir = "/root"
	cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	h.initLog.Printf("console: shell on %s", name)
	p, err := h.reaper.Start(cmd)
	if err != nil {
		return err
	}
	ex := p.Wait()
	h.initLog.Printf("console: shell on %s ended: %v", name, ex.Err())
	// The shell led its session: its exit hung the serial line up (every open file of
	// it now fails), so the console reopens the terminal.
	return nil
}

// ShellEnabled implements console.Host: init.console.shell.
func (h *host) ShellEnabled() bool {
	cfg := h.config()
	return cfg != nil && cfg.Init.Console.Shell
}

// consolePassword is where a console password set on the console is kept.
const consolePassword = permInitDir + "/console-password"

// Password implements console.Host: init.console.passwordHash, else the one set on the
// console, kept in consolePassword on /perm.
func (h *host) Password() *console.Password {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.password == nil {
		h.password = &console.Password{File: consolePassword}
		if h.cfg != nil {
			h.password.Hash = h.cfg.Init.Console.PasswordHash
		}
	}
	return h.password
}

// Power implements console.Host.
func (h *host) Power(action string) error {
	req := powerRequest{}
	switch action {
	case "reboot":
		req.action = power.Reboot
	case "poweroff":
		req.action = power.PowerOff
	case "factory-reset":
		if h.permState.Device == "" {
			return errors.New("no persistent data partition to reset")
		}
		req.action, req.factoryReset = power.Reboot, true
	default:
		return fmt.Errorf("unknown power action %q", action)
	}
	h.mu.Lock()
	asked := h.powerAsked
	h.powerAsked = true
	h.mu.Unlock()
	if asked {
		return errors.New("a shutdown is already under way")
	}
	h.initLog.Printf("console: %s", action)
	h.power <- req
	return nil
}

// writeFile writes a file init keeps (under /run or /perm) whole or not at all, making its
// directory first: on a fresh /perm or /run it does not exist yet.
func writeFile(path string, data []byte, perm os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return atomicfile.WriteFile(path, data, perm)
}
