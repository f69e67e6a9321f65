package hostconfig

import (
	"fmt"
	"net/url"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"
)

// Store is where hostd keeps desired state: a bbolt file on this host (the default, a
// YAML string: `store: /perm/hostd/store.db`) or the fleet's etcd cluster (a mapping):
//
//	store:
//	  etcd:
//	    endpoints: [https://10.0.0.1:2379, https://10.0.0.2:2379, https://10.0.0.3:2379]
//	    caFile: /perm/fleet/ca.pem        # the fleet CA
//	    certFile: /perm/fleet/hostd.pem   # this host's client certificate (mutual TLS)
//	    keyFile: /perm/fleet/hostd-key.pem
//	    prefix: /deskhost/                # optional: the root of hostd's keys
//	    timeout: 5s                       # optional: the deadline of every etcd call
type Store struct {
	Path string
	Etcd *EtcdStore
}

// EtcdStore is the etcd form of hostd.store.
type EtcdStore struct {
	Endpoints []string `yaml:"endpoints"`
	CAFile    string   `yaml:"caFile"`
	CertFile  string   `yaml:"certFile"`
	KeyFile   string   `yaml:"keyFile"`
	Prefix    string   `yaml:"prefix"`
	Timeout   Duration `yaml:"timeout"`
}

func (s *Store) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		return n.Decode(&s.Path)
	case yaml.MappingNode:
		// A custom decoder does not inherit the strict decoder's unknown-key check.
		if err := knownKeys(n, "hostd.store", "etcd"); err != nil {
			return err
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			v := n.Content[i+1]
			if err := knownKeys(v, "hostd.store.etcd", "endpoints", "caFile", "certFile", "keyFile", "prefix", "timeout"); err != nil {
				return err
			}
			s.Etcd = &EtcdStore{}
			if err := v.Decode(s.Etcd); err != nil {
				return fmt.Errorf("hostd.store.etcd: %w", err)
			}
		}
		return nil
	}
	return fmt.Errorf("line %d: hostd.store: a file path (bbolt) or a mapping with etcd", n.Line)
}

func (s Store) MarshalYAML() (any, error) {
	if s.Etcd != nil {
		return map[string]any{"etcd": s.Etcd}, nil
	}
	return s.Path, nil
}

func knownKeys(n *yaml.Node, where string, known ...string) error {
	if n.Kind != yaml.MappingNode {
		return fmt.Errorf("line %d: %s: a mapping is needed", n.Line, where)
	}
	for i := 0; i < len(n.Content); i += 2 {
		if k := n.Content[i]; !slices.Contains(known, k.Value) {
			return fmt.Errorf("line %d: %s: unknown key %q (known: %s)", k.Line, where, k.Value, strings.Join(known, ", "))
		}
	}
	return nil
}

func (s Store) validate() []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	e := s.Etcd
	if e == nil {
		if s.Path == "" {
			bad("hostd.store: required (path of the state file, or etcd)")
		}
		return errs
	}
	if len(e.Endpoints) == 0 {
		bad("hostd.store.etcd.endpoints: at least one member's client URL is required")
	}
	for i, ep := range e.Endpoints {
		u, err := url.Parse(ep)
		if err != nil || u.Scheme != "https" || u.Host == "" || u.Port() == "" || (u.Path != "" && u.Path != "/") {
			bad("hostd.store.etcd.endpoints[%d] %q: must be https://host:port (members require mutual TLS)", i, ep)
		}
	}
	for field, v := range map[string]string{"caFile": e.CAFile, "certFile": e.CertFile, "keyFile": e.KeyFile} {
		if v == "" {
			bad("hostd.store.etcd.%s: required (members require mutual TLS)", field)
		}
	}
	if e.Prefix != "" && !strings.HasPrefix(e.Prefix, "/") {
		bad("hostd.store.etcd.prefix %q: must begin with /", e.Prefix)
	}
	return errs
}
