package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const hostd = `hostd:
  store: /perm/hostd/store.db
  dataDir: /perm/hostd
  libvirt: {socket: /run/libvirt/libvirt-sock}
  network: {managementBridge: br-mgmt, primaryBridge: br-primary}
  api: {socket: /run/deskhost/hostd.sock}
  directories:
    - id: d-0123456789
      name: corp.example.com
`

// zeroclient loads the host config through hostconfig's one validator (directories'
// login settings included) and needs its own section.
func TestLoadConfig(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ name, yaml, want string }{
		{"good", hostd + "zeroclient:\n  tls: {selfSignedDir: /perm/zc}\n", ""},
		{"no section", hostd, "no zeroclient section"},
		{"bad section", hostd + "zeroclient:\n  tls: {selfSignedDir: /perm/zc}\n  broker: {listen: nowhere}\n", "zeroclient.broker.listen"},
		{"bad login", hostd + "      login: {type: ldap}\nzeroclient:\n  tls: {selfSignedDir: /perm/zc}\n", "hostd.directories[0]"},
	} {
		path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".yaml")
		if err := os.WriteFile(path, []byte(tc.yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := loadConfig(path)
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}
