package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const checkYAML = `hostd:
  store: /perm/hostd/store.db
  dataDir: /perm/hostd
  libvirt: {socket: /run/libvirt/libvirt-sock}
  api: {socket: /run/deskhost/hostd.sock}
init:
  network:
    stateFile: /perm/netcfg/state.json
    interfaces:
      management: {mac: "52:54:00:12:34:01", dhcp: true}
      primary: {mac: "52:54:00:12:34:02", dhcp: true}
    managementNetwork: {candidates: [198.19.0.0/16]}
`

// hostd check-config validates the whole host config as serve loads it, init.network by
// netcfg's rules included, and names what is wrong.
func TestCheckConfig(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, yaml string
		code       int
		want       string
	}{
		{"good", checkYAML, 0, "ok"},
		{"bad network", strings.Replace(checkYAML, `"52:54:00:12:34:02"`, `"52:54:00:12:34:0z"`, 1), 1, `init.network: invalid config: interfaces.primary.mac: invalid MAC "52:54:00:12:34:0z"`},
		{"bad init", checkYAML + "  hostname: Not_A_Name\n", 1, "init.hostname"},
		{"bad zeroclient", checkYAML + "zeroclient:\n  tls: {selfSignedDir: /perm/zc}\n  tags: {ttl: 5m}\n", 1, "zeroclient.tags.ttl"},
		{"unknown key", checkYAML + "hostdd: {}\n", 1, "hostdd"},
	} {
		path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".yaml")
		if err := os.WriteFile(path, []byte(tc.yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		var out, errb bytes.Buffer
		code := checkConfig([]string{"--config", path}, &out, &errb)
		if code != tc.code || !strings.Contains(out.String()+errb.String(), tc.want) {
			t.Errorf("%s: exit %d, %q %q; want exit %d with %q", tc.name, code, out.String(), errb.String(), tc.code, tc.want)
		}
	}
}
