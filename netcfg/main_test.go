package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"deskhost/internal/metricstest"
	"deskhost/netcfg/internal/testnet"
)

const cliConfig = `
stateFile: %s
interfaces:
  management: {name: eth0, addresses: [203.0.113.10/24]}
  primary: {name: eth1, addresses: [10.0.0.5/16]}
ipGroups:
  - id: wsipg-a
    rules: [{source: 198.51.100.0/24}]
directories:
  - {id: d-cli0000001, ipGroups: [wsipg-a], controllers: [10.0.1.10]}
workspaces:
  - {id: ws-cli0000001, directory: d-cli0000001}
`

func TestCLI(t *testing.T) {
	testnet.RequireRoot(t)
	host := testnet.New(t, "clihost")
	peer := testnet.New(t, "clipeer")
	testnet.Veth(t, host, "eth0", peer, "p0")
	testnet.Veth(t, host, "eth1", peer, "p1")
	dir := t.TempDir()
	state := filepath.Join(dir, "state.json")
	cfg := filepath.Join(dir, "netcfg.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(cliConfig, state)), 0o600)

	netcfg := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		rc := run(context.Background(), append(args, "--netns", host.Name, "--log-level", "warn"), &out, &errb)
		return rc, out.String(), errb.String()
	}
	if rc, out, errs := netcfg("apply", "--config", cfg); rc != 0 || !strings.Contains(out, "applied") {
		t.Fatalf("apply: %d %s %s", rc, out, errs)
	}
	if rc, out, _ := netcfg("apply", "--config", cfg); rc != 0 || !strings.Contains(out, "no change") {
		t.Fatalf("second apply: %d %s", rc, out)
	}
	rc, out, _ := netcfg("show", "--config", cfg)
	for _, want := range []string{"management range: 198.19.0.0/16", "ws-cli0000001 198.19.0.10", "wsm-cli0000001", "isolated",
		"table inet deskhost", "set acl_d_cli0000001: 1 ranges, 256 addresses: 198.51.100.0/24", "ip saddr @acl_d_cli0000001 ct mark set 0x00004e43 accept", "table bridge deskhost"} {
		if !strings.Contains(out, want) {
			t.Errorf("show lacks %q", want)
		}
	}
	if rc != 0 || t.Failed() {
		t.Fatalf("show: %d\n%s", rc, out)
	}
	if rc, out, _ := netcfg("check", "--config", cfg); rc != 0 || !strings.Contains(out, "in sync") {
		t.Fatalf("check: %d %s", rc, out)
	}
	// --json: the same facts under stable field names
	rc, out, _ = netcfg("show", "--config", cfg, "--json")
	var show showJSON
	if err := json.Unmarshal([]byte(out), &show); rc != 0 || err != nil {
		t.Fatalf("show --json: %d %v\n%s", rc, err, out)
	}
	if show.ManagementRange != "198.19.0.0/16" || show.Addresses["ws-cli0000001"] != "198.19.0.10" || show.ChosenAt == nil {
		t.Errorf("show --json: range %q addresses %v chosen %v", show.ManagementRange, show.Addresses, show.ChosenAt)
	}
	var tap *linkJSON
	for i, l := range show.Links {
		if l.Name == "wsm-cli0000001" {
			tap = &show.Links[i]
		}
	}
	if tap == nil || !tap.Isolated || tap.Master != "br-mgmt" {
		t.Errorf("show --json: tap wsm-cli0000001 %+v", tap)
	}
	var acl *setJSON
	var rule bool
	for _, tb := range show.Tables {
		for i, st := range tb.Sets {
			if tb.Family == "inet" && st.Name == "acl_d_cli0000001" {
				acl = &tb.Sets[i]
			}
		}
		for _, c := range tb.Chains {
			for _, r := range c.Rules {
				rule = rule || strings.Contains(r, "ip saddr @acl_d_cli0000001 ct mark set 0x00004e43 accept")
			}
		}
	}
	if acl == nil || acl.Addresses != 256 || len(acl.Ranges) != 1 || acl.Ranges[0] != "198.51.100.0/24" || !rule {
		t.Errorf("show --json: set %+v, ACL rule found %v", acl, rule)
	}
	rc, out, _ = netcfg("check", "--config", cfg, "--json")
	var chk checkJSON
	if err := json.Unmarshal([]byte(out), &chk); rc != 0 || err != nil || !chk.InSync || chk.Drift == nil || len(chk.Drift) != 0 {
		t.Fatalf("check --json: %d %v %+v\n%s", rc, err, chk, out)
	}
	// drift: someone adds an element and deletes a chain's rules
	host.Exec(nil, "nft", "add", "element", "inet", "deskhost", "acl_d_cli0000001", "{ 192.0.2.1 }")
	host.Exec(nil, "nft", "flush", "chain", "inet", "deskhost", "host_primary")
	host.Exec(nil, "ip", "link", "set", "wsm-cli0000001", "nomaster")
	rc, out, _ = netcfg("check", "--config", cfg)
	if rc != 1 || !strings.Contains(out, "set inet acl_d_cli0000001: 0 ranges missing, 1 not intended") || !strings.Contains(out, "add wsm-cli0000001 to br-mgmt") {
		t.Fatalf("check after drift: %d\n%s", rc, out)
	}
	rc, out, _ = netcfg("check", "--config", cfg, "--json")
	chk = checkJSON{}
	if err := json.Unmarshal([]byte(out), &chk); rc != 1 || err != nil || chk.InSync || !slices.Contains(chk.Drift, "set inet acl_d_cli0000001: 0 ranges missing, 1 not intended") {
		t.Fatalf("check --json after drift: %d %v %+v\n%s", rc, err, chk, out)
	}
	// bad config: named field, exit 2, kernel unchanged
	before, _ := host.Exec(nil, "nft", "list", "ruleset")
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte(strings.Replace(fmt.Sprintf(cliConfig, state), "198.51.100.0/24", "198.51.100.0/33", 1)), 0o600)
	rc, _, errs := netcfg("apply", "--config", bad)
	if rc != 2 || !strings.Contains(errs, "ipGroups[0].rules[0].source: invalid CIDR") {
		t.Fatalf("bad apply: %d %s", rc, errs)
	}
	os.WriteFile(bad, []byte(strings.Replace(fmt.Sprintf(cliConfig, state), "ipGroups:", "ipGroupz:", 1)), 0o600)
	if rc, _, errs := netcfg("apply", "--config", bad); rc != 2 || !strings.Contains(errs, `unknown field "ipGroupz"`) {
		t.Fatalf("unknown key: %d %s", rc, errs)
	}
	if after, _ := host.Exec(nil, "nft", "list", "ruleset"); after != before {
		t.Fatal("bad config changed the ruleset")
	}
	// apply repairs the drift
	if rc, _, errs := netcfg("apply", "--config", cfg); rc != 0 {
		t.Fatalf("repair: %s", errs)
	}
	if rc, out, _ := netcfg("check", "--config", cfg); rc != 0 {
		t.Fatalf("check after repair: %s", out)
	}
	// a second WorkSpace: its 6 chains are created, the 5 dispatching chains
	// rewritten, the first WorkSpace's chains left alone
	os.WriteFile(cfg, []byte(fmt.Sprintf(cliConfig, state)+"  - {id: ws-cli0000002, directory: d-cli0000001}\n"), 0o600)
	rc, out, errs = netcfg("apply", "--config", cfg)
	if rc != 0 || !strings.Contains(out, "chains +6 ~5 -0") || !strings.Contains(out, "create tap wsm-cli0000002") {
		t.Fatalf("second WorkSpace: %d\n%s%s", rc, out, errs)
	}
}

// Usage, help, version and flag errors: no netlink needed.
func TestUsageAndVersion(t *testing.T) {
	for _, tc := range []struct {
		args []string
		rc   int
		want string
	}{
		{[]string{"-h"}, 0, "netcfg show"},
		{[]string{"--help"}, 0, "--json"},
		{[]string{"show", "-h"}, 0, "-json"},
		{[]string{"version"}, 0, "netcfg deskhost"},
		{nil, 2, "usage"},
		{[]string{"apply", "--json", "--config", "x.yaml"}, 2, "--json goes with show and check"},
		{[]string{"show", "--log-format", "xml"}, 2, `--log-format "xml"`},
		{[]string{"show", "--log-level", "loud"}, 2, `--log-level "loud"`},
	} {
		var out, errb bytes.Buffer
		rc := run(context.Background(), tc.args, &out, &errb)
		if rc != tc.rc || !strings.Contains(out.String()+errb.String(), tc.want) {
			t.Errorf("netcfg %v: exit %d, %q %q; want exit %d with %q", tc.args, rc, out.String(), errb.String(), tc.rc, tc.want)
		}
	}
}

// TestServeMetrics: apply --serve with --metrics-listen exports the applies it makes, the
// first (changed) and the periodic re-applies (unchanged), with their nftables durations;
// the exposition parses and lints clean (promlint, promtool).
func TestServeMetrics(t *testing.T) {
	testnet.RequireRoot(t)
	host := testnet.New(t, "mxhost")
	peer := testnet.New(t, "mxpeer")
	testnet.Veth(t, host, "eth0", peer, "p0")
	testnet.Veth(t, host, "eth1", peer, "p1")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "netcfg.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(cliConfig, filepath.Join(dir, "state.json"))), 0o600)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	var out, errb bytes.Buffer
	go func() {
		done <- run(ctx, []string{"apply", "--config", cfg, "--serve", "--interval", "200ms", "--metrics-listen", addr,
			"--netns", host.Name, "--log-level", "warn", "--log-format", "json"}, &out, &errb)
	}()
	defer func() {
		cancel()
		if rc := <-done; rc != 0 {
			t.Errorf("apply --serve: exit %d\n%s", rc, errb.String())
		}
	}()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var fams map[string]*dto.MetricFamily
		if res, err := http.Get("http://" + addr + "/metrics"); err == nil {
			res.Body.Close()
			fams = metricstest.Check(t, metricstest.Scrape(t, "http://"+addr+"/metrics"))
		}
		changed, _ := metricstest.Value(fams, "deskhost_netcfg_applies_total", map[string]string{"result": "changed"})
		unchanged, _ := metricstest.Value(fams, "deskhost_netcfg_applies_total", map[string]string{"result": "unchanged"})
		nft, _ := metricstest.Value(fams, "deskhost_netcfg_nftables_apply_seconds", nil)
		if changed == 1 && unchanged >= 2 && nft == changed+unchanged {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics after 20 s: changed %v, unchanged %v, nftables applies timed %v\n%s", changed, unchanged, nft, errb.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
	// A flag in the wrong place is refused.
	var e2 bytes.Buffer
	if rc := run(context.Background(), []string{"show", "--metrics-listen", addr}, &bytes.Buffer{}, &e2); rc != 2 || !strings.Contains(e2.String(), "--metrics-listen goes with apply --serve") {
		t.Errorf("show --metrics-listen: %d %q", rc, e2.String())
	}
}
