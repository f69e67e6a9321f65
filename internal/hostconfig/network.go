package hostconfig

import (
	"fmt"
	"sync"

	"go.yaml.in/yaml/v3"
)

// init.network is netcfg's desired state, and only netcfg's config package knows its rules.
// hostconfig does not import it (internal/ never depends on a component), so that package
// registers its validator here when it is linked in: hostd, init, netcfg and imagebuild
// link it, and their Load and Parse check init.network with it. zeroclient, which does not
// read init.network, does not link it.
var (
	networkMu        sync.RWMutex
	networkValidator func(network []byte) error
)

// RegisterNetworkValidator sets the check Parse applies to init.network (the section as a
// YAML document, as NetworkYAML gives it). netcfg's config package calls it from init.
func RegisterNetworkValidator(check func(network []byte) error) {
	networkMu.Lock()
	defer networkMu.Unlock()
	networkValidator = check
}

// validateNetwork checks init.network with the registered validator, if there is both.
func (c *Config) validateNetwork() error {
	networkMu.RLock()
	check := networkValidator
	networkMu.RUnlock()
	if check == nil || c.Init.Network.Kind == 0 {
		return nil
	}
	// A NIC left to init's rules is checked as if pinned: init pins it at boot.
	n := c.Init.Network
	for _, role := range c.Init.NICsByRule() {
		n = withNICName(n, role, "by-rule-"+role[:4])
	}
	b, err := networkYAML(n)
	if err != nil {
		return err
	}
	if err := check(b); err != nil {
		return fmt.Errorf("init.network: %w", err)
	}
	return nil
}

// NIC roles in init.network.interfaces.
const (
	RoleManagement = "management"
	RolePrimary    = "primary"
)

// NICsByRule lists the roles (RoleManagement, RolePrimary) whose NIC init.network leaves
// to init's rules: interfaces.ROLE names neither a name nor a mac. init chooses the NIC
// at boot (management: the NIC the host network-booted from, else the first NIC with
// carrier to get a DHCP lease; primary: another NIC) and writes its name and MAC into the
// config the services read, so hostd applies what init chose.
func (i *Init) NICsByRule() []string {
	ifs := mapChild(&i.Network, "interfaces")
	var roles []string
	for _, role := range []string{RoleManagement, RolePrimary} {
		nic := mapChild(ifs, role)
		if nic != nil && nic.Kind != yaml.MappingNode {
			continue // not a mapping: netcfg's validator says what is wrong
		}
		if nic == nil || (mapChild(nic, "name") == nil && mapChild(nic, "mac") == nil) {
			roles = append(roles, role)
		}
	}
	return roles
}

func withNICName(n yaml.Node, role, name string) yaml.Node {
	if name == "" {
		return n
	}
	return withNICKey(n, role, "name", name)
}

// withNICKey sets interfaces.ROLE.KEY in a deep copy of the network section.
func withNICKey(n yaml.Node, role, key, value string) yaml.Node {
	c := deepCopy(&n)
	if c.Kind != yaml.MappingNode {
		return *c
	}
	ifs := ensureMap(c, "interfaces")
	if ifs == nil {
		return *c // not a mapping: netcfg's validator says what is wrong
	}
	nic := ensureMap(ifs, role)
	if nic == nil {
		return *c
	}
	v := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: value, Style: yaml.DoubleQuotedStyle}
	for k := 0; k+1 < len(nic.Content); k += 2 {
		if nic.Content[k].Value == key {
			nic.Content[k+1] = v
			return *c
		}
	}
	nic.Content = append(nic.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key}, v)
	return *c
}

func mapChild(m *yaml.Node, key string) *yaml.Node {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil
	}
	for k := 0; k+1 < len(m.Content); k += 2 {
		if m.Content[k].Value == key {
			return m.Content[k+1]
		}
	}
	return nil
}

// ensureMap returns m's mapping child key, adding an empty one if missing (nil if key
// holds something else).
func ensureMap(m *yaml.Node, key string) *yaml.Node {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil
	}
	if c := mapChild(m, key); c != nil {
		if c.Kind == yaml.MappingNode {
			return c
		}
		if c.Kind == yaml.ScalarNode && (c.Tag == "!!null" || c.Value == "") {
			c.Kind, c.Tag, c.Value, c.Style = yaml.MappingNode, "!!map", "", 0
			return c
		}
		return nil
	}
	c := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key}, c)
	return c
}

func deepCopy(n *yaml.Node) *yaml.Node {
	c := *n
	if len(n.Content) > 0 {
		c.Content = make([]*yaml.Node, len(n.Content))
		for k, x := range n.Content {
			c.Content[k] = deepCopy(x)
		}
	}
	return &c
}
