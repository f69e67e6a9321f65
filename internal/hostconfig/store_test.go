package hostconfig

import (
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

const etcdStore = `store:
    etcd:
      endpoints: [https://10.0.0.1:2379, "https://[fd00::2]:2379"]
      caFile: /perm/fleet/ca.pem
      certFile: /perm/fleet/hostd.pem
      keyFile: /perm/fleet/hostd-key.pem
      timeout: 3s`

func TestStoreForms(t *testing.T) {
	c, err := Parse([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if c.Hostd.Store.Path != "/perm/hostd/store.db" || c.Hostd.Store.Etcd != nil {
		t.Fatalf("bbolt form: %+v", c.Hostd.Store)
	}
	c, err = Parse([]byte(strings.Replace(good, "store: /perm/hostd/store.db", etcdStore, 1)))
	if err != nil {
		t.Fatal(err)
	}
	e := c.Hostd.Store.Etcd
	if e == nil || len(e.Endpoints) != 2 || e.CAFile != "/perm/fleet/ca.pem" || e.KeyFile != "/perm/fleet/hostd-key.pem" || e.Timeout.Duration != 3*time.Second {
		t.Fatalf("etcd form: %+v", e)
	}
	// It writes back as it was read.
	b, err := yaml.Marshal(c.Hostd.Store)
	if err != nil || !strings.HasPrefix(string(b), "etcd:\n") || !strings.Contains(string(b), "https://10.0.0.1:2379") {
		t.Fatalf("marshal: %s %v", b, err)
	}
}

func TestStoreEtcdRejectsWithTheFieldNamed(t *testing.T) {
	for _, tc := range []struct{ from, to, want string }{
		{"etcd:", "etdc:", `hostd.store: unknown key "etdc"`},
		{"caFile:", "caFiel:", `hostd.store.etcd: unknown key "caFiel"`},
		{"      caFile: /perm/fleet/ca.pem\n", "", "hostd.store.etcd.caFile: required"},
		{"      keyFile: /perm/fleet/hostd-key.pem\n", "", "hostd.store.etcd.keyFile: required"},
		{"https://10.0.0.1:2379", "http://10.0.0.1:2379", "hostd.store.etcd.endpoints[0]"},
		{"https://10.0.0.1:2379", "https://10.0.0.1", "hostd.store.etcd.endpoints[0]"},
		{`[https://10.0.0.1:2379, "https://[fd00::2]:2379"]`, "[]", "hostd.store.etcd.endpoints: at least one"},
		{"timeout: 3s", "timeout: soon", `duration "soon"`},
		{"timeout: 3s", "timeout: 3s\n      prefix: deskhost", "hostd.store.etcd.prefix"},
		{"    etcd:", "    etcd: []\n    x:", "hostd.store"},
	} {
		in := strings.Replace(good, "store: /perm/hostd/store.db", strings.Replace(etcdStore, tc.from, tc.to, 1), 1)
		_, err := Parse([]byte(in))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q → %q: error %v, want one containing %q", tc.from, tc.to, err, tc.want)
		}
	}
	if _, err := Parse([]byte(strings.Replace(good, "store: /perm/hostd/store.db", "store: [a, b]", 1))); err == nil || !strings.Contains(err.Error(), "hostd.store") {
		t.Errorf("a list: %v", err)
	}
}
