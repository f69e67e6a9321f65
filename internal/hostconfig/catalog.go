package hostconfig

// The catalog sections a host config used to carry: hostd.images, hostd.bundles,
// hostd.directories (with their users, login settings and IP groups), and netcfg's
// init.network.ipGroups with init.network.directories[].ipGroups. The catalog now lives in
// hostd's store and is managed through hostd's API; hostd imports these sections once
// (LegacyCatalog) and refuses a config that still has them afterwards. What is left of
// init.network for the machine is NetworkBase.

import (
	"fmt"

	"gopkg.in/yaml.v3"

	"deskhost/internal/catalog"
)

// Sourced is an item with the place in the host config it came from, e.g.
// "hostd.bundles[2]".
type Sourced[T any] struct {
	From string
	Item T
}

// LegacyAssociation is an IP group associated with a directory in netcfg's section.
type LegacyAssociation struct {
	From        string
	DirectoryID string
	GroupID     string
}

// LegacyCatalog is what a host config's catalog sections hold.
type LegacyCatalog struct {
	// Sections names the sections present, e.g. "hostd.directories".
	Sections    []string
	Images      []Sourced[catalog.Image]
	Bundles     []Sourced[catalog.Bundle]
	Directories []Sourced[catalog.Directory]
	// IPGroups are netcfg's groups (init.network.ipGroups), with the ids it gave them.
	IPGroups     []Sourced[catalog.IPGroup]
	Associations []LegacyAssociation
}

// legacyNetwork is the part of netcfg's section that is catalog.
type legacyNetwork struct {
	IPGroups    []catalog.IPGroup `yaml:"ipGroups"`
	Directories []struct {
		ID       string   `yaml:"id"`
		IPGroups []string `yaml:"ipGroups"`
	} `yaml:"directories"`
}

// LegacyCatalog returns the config's catalog sections, or nil when it has none.
func (c *Config) LegacyCatalog() (*LegacyCatalog, error) {
	l := &LegacyCatalog{}
	h := &c.Hostd
	if len(h.Images) > 0 {
		l.Sections = append(l.Sections, "hostd.images")
	}
	if len(h.Bundles) > 0 {
		l.Sections = append(l.Sections, "hostd.bundles")
	}
	if len(h.Directories) > 0 {
		l.Sections = append(l.Sections, "hostd.directories")
	}
	for i, im := range h.Images {
		l.Images = append(l.Images, Sourced[catalog.Image]{fmt.Sprintf("hostd.images[%d]", i), im})
	}
	for i, b := range h.Bundles {
		l.Bundles = append(l.Bundles, Sourced[catalog.Bundle]{fmt.Sprintf("hostd.bundles[%d]", i), b})
	}
	for i, d := range h.Directories {
		l.Directories = append(l.Directories, Sourced[catalog.Directory]{fmt.Sprintf("hostd.directories[%d]", i), d})
	}
	if c.Init.Network.Kind == yaml.MappingNode {
		var n legacyNetwork
		if err := c.Init.Network.Decode(&n); err != nil {
			return nil, fmt.Errorf("init.network: %w", err)
		}
		if hasKey(&c.Init.Network, "ipGroups") {
			l.Sections = append(l.Sections, "init.network.ipGroups")
		}
		for i, g := range n.IPGroups {
			l.IPGroups = append(l.IPGroups, Sourced[catalog.IPGroup]{fmt.Sprintf("init.network.ipGroups[%d]", i), g})
		}
		assoc := false
		for i, d := range n.Directories {
			for j, g := range d.IPGroups {
				assoc = true
				l.Associations = append(l.Associations, LegacyAssociation{From: fmt.Sprintf("init.network.directories[%d].ipGroups[%d]", i, j), DirectoryID: d.ID, GroupID: g})
			}
		}
		if assoc || directoriesHaveKey(&c.Init.Network, "ipGroups") {
			l.Sections = append(l.Sections, "init.network.directories[].ipGroups")
		}
	}
	if len(l.Sections) == 0 {
		return nil, nil
	}
	return l, nil
}

// NetworkBase is init.network (netcfg's desired state) without its catalog parts
// (ipGroups, and directories' ipGroups), as YAML: hostd adds those from its store. Nil
// when the config has no network section.
func (c *Config) NetworkBase() ([]byte, error) {
	if c.Init.Network.Kind == 0 {
		return nil, nil
	}
	n := blockStyle(c.Init.Network)
	stripKey(&n, "ipGroups")
	if d := value(&n, "directories"); d != nil && d.Kind == yaml.SequenceNode {
		for _, e := range d.Content {
			stripKey(e, "ipGroups")
		}
	}
	b, err := yaml.Marshal(&n)
	if err != nil {
		return nil, fmt.Errorf("init.network: %w", err)
	}
	return b, nil
}

func value(m *yaml.Node, key string) *yaml.Node {
	if m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

func hasKey(m *yaml.Node, key string) bool { return value(m, key) != nil }

func directoriesHaveKey(m *yaml.Node, key string) bool {
	d := value(m, "directories")
	if d == nil || d.Kind != yaml.SequenceNode {
		return false
	}
	for _, e := range d.Content {
		if hasKey(e, key) {
			return true
		}
	}
	return false
}

// stripKey removes key from a mapping node (blockStyle made the node a copy of its own).
func stripKey(m *yaml.Node, key string) {
	if m.Kind != yaml.MappingNode {
		return
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			m.Content = append(m.Content[:i:i], m.Content[i+2:]...)
			return
		}
	}
}

// CatalogMoved is the error for a host config that still has catalog sections after hostd
// imported them: it says where the data lives now and how to manage it.
func CatalogMoved(path string, sections []string, importedAt, reportFile string) error {
	return fmt.Errorf("host config %s still has catalog sections (%v). They were imported into hostd's store on %s (report: %s) "+
		"and live there now: directories, users and login settings, IP access control groups, bundles, images and tags are managed "+
		"through hostd's API (hostd directory put|delete, hostd users, hostd directories register, hostd ipgroups, hostd bundles, "+
		"hostd images register, hostd tags, or aws workspaces ...). Remove these sections from the host config: it keeps only "+
		"what belongs to the machine", path, sections, importedAt, reportFile)
}
