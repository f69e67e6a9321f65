package hostconfig

import (
	"strings"
	"testing"
)

// FuzzParse: the host config loader never panics on any input; what it accepts has its
// access keys in one form each, a checked console hash, and no NIC role both pinned and
// left to the rules; InlineSecrets and NICsByRule never panic on what it accepts.
func FuzzParse(f *testing.F) {
	f.Add([]byte(good))
	f.Add([]byte(minimalHostd + "init:\n  network:\n    stateFile: /s\n    interfaces: {management: {dhcp: true}, primary: {name: eth1}}\n"))
	f.Add([]byte(minimalHostd + "  memory: {requireInitOnFree: false}\n"))
	f.Add([]byte(withKeys("      - {id: AKIAEXAMPLE0000001, secretFile: /perm/k}\n")))
	f.Add([]byte(minimalHostd + "init:\n  console: {shell: true, passwordHash: \"$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$a2V5a2V5a2V5a2V5a2V5a2V5\"}\n"))
	f.Add([]byte(minimalHostd + "init:\n  network: [1, 2]\n"))
	f.Add([]byte(strings.Replace(minimalHostd, "store: /tmp/s.db", "store: {etcd: {endpoints: [\"https://10.0.0.1:2379\"], caFile: /c, certFile: /p, keyFile: /k, timeout: 5s}}", 1)))
	f.Add([]byte(minimalHostd + "init:\n  network: {interfaces: {management: null}}\n"))
	// A validator that accepts everything, so that Parse takes init.network's path (the
	// placeholders for NICs left to the rules) as it does when netcfg is linked in.
	RegisterNetworkValidator(func([]byte) error { return nil })
	defer RegisterNetworkValidator(nil)
	f.Add([]byte(minimalHostd + "init:\n  network: {stateFile: /s, interfaces: [1]}\n"))
	f.Add([]byte(minimalHostd + "init:\n  network: {stateFile: /s, interfaces: {management: 7}}\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse(b)
		if err != nil {
			return
		}
		for i, k := range c.Hostd.API.AccessKeys {
			if (k.Secret == "") == (k.SecretFile == "") {
				t.Fatalf("accessKeys[%d] accepted with secret %q and secretFile %q", i, k.Secret, k.SecretFile)
			}
		}
		_ = c.InlineSecrets()
		for _, r := range c.Init.NICsByRule() {
			if r != RoleManagement && r != RolePrimary {
				t.Fatalf("NICsByRule: %q", r)
			}
		}
		if h := c.Init.Console.PasswordHash; h != "" && !strings.HasPrefix(h, "$argon2id$") {
			t.Fatalf("accepted console hash %q", h)
		}
		if _, err := c.Init.NetworkYAML(); err != nil {
			t.Fatalf("accepted but init.network does not marshal: %v", err)
		}
	})
}
