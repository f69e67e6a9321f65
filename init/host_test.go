package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"deskhost/hostd/api"
	"deskhost/hostd/hostdtest"
	"deskhost/hostd/service"
	"deskhost/hostd/store"
	"deskhost/hostd/workspace"
	"deskhost/init/console"
	"deskhost/init/hostcfg"
	"deskhost/init/logbuf"
	"deskhost/internal/catalog"
	"deskhost/internal/hostconfig"
	"deskhost/internal/testenv"
	"deskhost/netcfg/config"
)

const hostYAML = `# operator's comment stays
hostd:
  store: /perm/hostd/store.db
  dataDir: /perm/hostd
  libvirt: {socket: /run/libvirt/libvirt-sock, domainType: qemu}
  network: {managementBridge: br-mgmt, primaryBridge: br-primary}
  api: {socket: /run/deskhost/hostd.sock}
init:
  hostname: h1
  network:
    stateFile: /perm/netcfg/state.json
    interfaces:
      management:
        mac: "52:54:00:12:34:01"
        dhcp: true
        mtu: 1500
      primary: {mac: "52:54:00:12:34:02", dhcp: true}
    managementNetwork: {candidates: [198.19.0.0/16]}
`

// The console's management-address setting edits init.network in place: everything
// else stays, and the result is valid for hostconfig and netcfg.
func TestEffectiveConfig(t *testing.T) {
	cfg, err := hostconfig.Parse([]byte(hostYAML))
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := effectiveConfig([]byte(hostYAML), cfg, nil); string(b) != hostYAML {
		t.Error("no override changed the config")
	}
	b, err := effectiveConfig([]byte(hostYAML), cfg, &override{Address: "10.0.2.16/24", Gateway: "10.0.2.2"})
	if err != nil {
		t.Fatal(err)
	}
	c2, err := hostconfig.Parse(b)
	if err != nil {
		t.Fatalf("edited config does not load: %v\n%s", err, b)
	}
	nb, _ := c2.Init.NetworkYAML()
	nc, err := config.Decode(nb)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := config.Validate(nc); err != nil {
		t.Fatalf("netcfg refuses the edited network: %v", err)
	}
	m := nc.Interfaces.Management
	if m.DHCP || len(m.Addresses) != 1 || m.Addresses[0] != "10.0.2.16/24" || m.Gateway != "10.0.2.2" || m.MTU != 1500 || m.MAC != "52:54:00:12:34:01" {
		t.Errorf("management NIC %+v", m)
	}
	if !strings.Contains(string(b), "# operator's comment stays") || c2.Init.Hostname != "h1" {
		t.Errorf("the rest of the config changed:\n%s", b)
	}
	back, err := effectiveConfig(b, c2, &override{DHCP: true})
	if err != nil {
		t.Fatal(err)
	}
	c3, _ := hostconfig.Parse(back)
	nb, _ = c3.Init.NetworkYAML()
	nc, _ = config.Decode(nb)
	if !nc.Interfaces.Management.DHCP || len(nc.Interfaces.Management.Addresses) != 0 || nc.Interfaces.Management.Gateway != "" {
		t.Errorf("back to DHCP: %+v", nc.Interfaces.Management)
	}
}

type noWake struct{}

func (noWake) Wake(string) {}

// The console lists WorkSpaces and reboots or stops one through hostd's real API on its
// socket; hostd's refusal reaches the console with its exception name.
func TestConsoleWorkspaces(t *testing.T) {
	testenv.Root(t)
	dir := t.TempDir()
	st, err := store.OpenBolt(filepath.Join(dir, "hostd.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	svc := service.New(st, service.Config{ComputeTypes: map[catalog.ComputeType]catalog.Hardware{catalog.ComputeValue: {VCPUs: 1, MemoryMiB: 256}}, WorkspaceQuota: 10}, noWake{}, nil, log)
	hostdtest.SeedCatalog(t, svc, hostdtest.Catalog{
		Images: []catalog.Image{{ID: "wsi-linux00001", OS: catalog.Linux}},
		Bundles: []catalog.Bundle{{ID: "wsb-value00001", ImageID: "wsi-linux00001", ComputeType: catalog.ComputeValue,
			Protocol: catalog.PCoIP, RootGiB: 80, UserGiB: 10}},
		Directories: []catalog.Directory{{ID: "d-0123456789", Name: "corp.example.com", Users: []catalog.User{
			{UserName: "alice", Email: "alice@example.com"}, {UserName: "bob", Email: "bob@example.com"}}}},
	})
	ws, _, err := svc.CreateWorkspaces(context.Background(), []service.CreateRequest{
		{DirectoryID: "d-0123456789", UserName: "alice", BundleID: "wsb-value00001"},
		{DirectoryID: "d-0123456789", UserName: "bob", BundleID: "wsb-value00001"}})
	if err != nil || len(ws) != 2 {
		t.Fatalf("create: %v", err)
	}
	sock := filepath.Join(dir, "run", "hostd.sock")
	os.MkdirAll(filepath.Dir(sock), 0o700)
	ln, err := api.ListenUnix(sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- api.New(svc, api.Options{Logger: log}).ServeUnixListener(ctx, ln) }()
	defer func() { cancel(); <-done }()

	h := &host{initLog: logbuf.New(100), cfg: &hostconfig.Config{Hostd: hostconfig.Hostd{API: hostconfig.API{Socket: sock}}}}
	list, err := h.Workspaces(ctx)
	if err != nil || len(list) != 2 {
		t.Fatalf("Workspaces: %v %+v", err, list)
	}
	byUser := map[string]console.Workspace{}
	for _, w := range list {
		byUser[w.User] = w
	}
	if w := byUser["alice"]; w.ID != ws[0].ID || w.State != "PENDING" || w.Directory != "d-0123456789" {
		t.Errorf("alice's WorkSpace as listed: %+v", w)
	}
	// A PENDING WorkSpace cannot be rebooted: hostd says why.
	if _, err := h.WorkspaceAction(ctx, "reboot", ws[0].ID); err == nil || !strings.Contains(err.Error(), "InvalidResourceStateException") {
		t.Errorf("reboot of a PENDING WorkSpace: %v", err)
	}
	if err := st.Update(func(tx store.Tx) error {
		w, err := store.GetJSON[workspace.Workspace](tx, store.Workspaces, ws[1].ID)
		if err != nil {
			return err
		}
		w.SetState(workspace.Available, time.Now())
		return store.PutJSON(tx, store.Workspaces, w.ID, w)
	}); err != nil {
		t.Fatal(err)
	}
	if out, err := h.WorkspaceAction(ctx, "reboot", ws[1].ID); err != nil || !strings.Contains(out, "reboot requested") {
		t.Fatalf("reboot: %q %v", out, err)
	}
	if w, _ := svc.Get(ws[1].ID); w.State != workspace.Rebooting {
		t.Errorf("after the console's reboot hostd has %s, want REBOOTING", w.State)
	}
	h.cfg.Hostd.API.Socket = filepath.Join(dir, "nobody.sock")
	if _, err := h.Workspaces(ctx); err == nil || !strings.Contains(err.Error(), "nobody.sock") {
		t.Errorf("hostd's socket moved: %v", err)
	}
}

// init's config loading refuses an init.network that netcfg would refuse, with netcfg's
// reason: hostconfig's one validator applies netcfg's rules.
func TestParseRefusesBadNetwork(t *testing.T) {
	bad := strings.Replace(hostYAML, `mac: "52:54:00:12:34:01"`, `mac: "52:54:00:12:34"`, 1)
	if _, err := hostcfg.Parse([]byte(bad)); err == nil || !strings.Contains(err.Error(), "init.network: ") || !strings.Contains(err.Error(), "interfaces.management") {
		t.Fatalf("a bad management MAC: %v", err)
	}
	if _, err := hostcfg.Parse([]byte(hostYAML)); err != nil {
		t.Fatal(err)
	}
}

func TestJoiningLine(t *testing.T) {
	cases := []struct {
		name  string
		lines []string
		want  string
	}{
		{"starting", []string{`time=… level=INFO msg="memory preflight"`}, "not in the fleet yet (hostd is starting)"},
		{"unreachable, text log", []string{
			`time=… level=WARN msg="join: fleet host not reached; trying again" component=fleet join=https://10.99.0.11:7443 err="Post \"https://10.99.0.11:7443/join\": dial tcp 10.99.0.11:7443: i/o timeout"`},
			`cannot reach the fleet host to join: Post "https://10.99.0.11:7443/join": dial tcp 10.99.0.11:7443: i/o timeout`},
		{"unreachable, JSON log", []string{
			`{"time":"…","level":"WARN","msg":"join: fleet host not reached; trying again","join":"https://h:7443","err":"connection refused"}`},
			"cannot reach the fleet host to join: connection refused"},
		{"code after a failure", []string{
			`time=… level=WARN msg="join: fleet host not reached; trying again" err=x`,
			"deskhost: join code ABCD-EFGH-JKLM: approve this host on a fleet host with `hostd hosts approve ABCD-EFGH-JKLM`"},
			"join code ABCD-EFGH-JKLM: approve on a fleet host (9 Hosts, or hostd hosts approve)"},
		{"approved, no quorum yet", []string{
			"deskhost: join code ABCD-EFGH-JKLM: approve this host on a fleet host with `hostd hosts approve ABCD-EFGH-JKLM`",
			`time=… level=WARN msg="waiting for the fleet store: hostd serves once a majority of the etcd members answer" waited=5s err=x`},
			"approved; waiting for the etcd quorum (3 Logs, hostd)"},
		{"failure after a code", []string{
			"deskhost: join code ABCD-EFGH-JKLM: approve this host on a fleet host with `hostd hosts approve ABCD-EFGH-JKLM`",
			`time=… level=WARN msg="join: fleet host not reached; trying again" err="no route"`},
			"cannot reach the fleet host to join: no route"},
	}
	for _, tc := range cases {
		if got := joiningLine(tc.lines); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}
