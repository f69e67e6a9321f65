package hostconfig

import (
	"strings"
	"testing"
)

func TestLegacyCatalogAndNetworkBase(t *testing.T) {
	cfg := good + `init:
  network:
    stateFile: /perm/netcfg/state.json
    interfaces:
      management: {name: eth0, dhcp: true}
      primary: {name: eth1, dhcp: true}
    ipGroups:
      - id: wsipg-corp01
        rules: [{source: 198.51.100.0/24, description: HQ}, {source: 192.0.2.7}]
    directories:
      - id: d-0123456789
        ipGroups: [wsipg-corp01]
        controllers: [10.0.1.10]
`
	c, err := Parse([]byte(cfg))
	if err != nil {
		t.Fatal(err)
	}
	l, err := c.LegacyCatalog()
	if err != nil || l == nil {
		t.Fatalf("legacy catalog: %v", err)
	}
	if got := strings.Join(l.Sections, " "); got != "hostd.images hostd.bundles hostd.directories init.network.ipGroups init.network.directories[].ipGroups" {
		t.Errorf("sections %q", got)
	}
	if len(l.Images) != 1 || l.Images[0].From != "hostd.images[0]" || len(l.Bundles) != 1 || len(l.Directories) != 1 {
		t.Errorf("hostd sections: %+v", l)
	}
	if len(l.IPGroups) != 1 || len(l.IPGroups[0].Item.Rules) != 2 || l.IPGroups[0].Item.Rules[1].Source.String() != "192.0.2.7/32" {
		t.Errorf("netcfg's groups: %+v", l.IPGroups)
	}
	if len(l.Associations) != 1 || l.Associations[0] != (LegacyAssociation{From: "init.network.directories[0].ipGroups[0]", DirectoryID: "d-0123456789", GroupID: "wsipg-corp01"}) {
		t.Errorf("associations: %+v", l.Associations)
	}
	base, err := c.NetworkBase()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(base), "ipGroups") || strings.Contains(string(base), "wsipg") || !strings.Contains(string(base), "controllers") ||
		!strings.Contains(string(base), "stateFile") {
		t.Errorf("the network base keeps catalog parts or loses the machine's:\n%s", base)
	}
	// The machine's own config has no catalog.
	machine := good[:strings.Index(good, "  images:")]
	c, err = Parse([]byte(machine))
	if err != nil {
		t.Fatal(err)
	}
	if l, err := c.LegacyCatalog(); err != nil || l != nil {
		t.Errorf("a config without catalog sections: %+v %v", l, err)
	}
	if err := CatalogMoved("/perm/deskhost.yaml", []string{"hostd.bundles"}, "2026-12-05T00:00:00Z", "/perm/hostd/catalog-import.txt"); !strings.Contains(err.Error(), "hostd bundles") ||
		!strings.Contains(err.Error(), "/perm/hostd/catalog-import.txt") {
		t.Errorf("the refusal: %v", err)
	}
}
