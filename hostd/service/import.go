package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"deskhost/hostd/store"
	"deskhost/internal/catalog"
	"deskhost/internal/hostconfig"
)

// ImportReport says what a host config's catalog sections became in the store.
type ImportReport struct {
	At     time.Time `json:"at"`
	Source string    `json:"source"`
	Lines  []string  `json:"lines"`
}

func (r ImportReport) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Catalog imported from %s at %s into hostd's store.\n", r.Source, r.At.UTC().Format(time.RFC3339))
	for _, l := range r.Lines {
		b.WriteString("  " + l + "\n")
	}
	b.WriteString("These sections must now leave the host config; the catalog is managed through hostd's API:\n" +
		"  hostd directory put|delete, hostd users, hostd directories register|deregister, hostd ipgroups,\n" +
		"  hostd bundles, hostd images register|delete, hostd tags (or aws workspaces ...).\n")
	return b.String()
}

// ErrImported is returned by ImportCatalog when the store already holds an import.
var ErrImported = errors.New("the store already holds an imported catalog")

// Imported returns the report of the store's catalog import, if there was one.
func (s *Service) Imported() (ImportReport, bool, error) {
	var r ImportReport
	var ok bool
	err := s.store.View(func(tx store.Tx) error {
		b, err := tx.Get(store.Meta, store.CatalogImportKey)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		ok = true
		return json.Unmarshal(b, &r)
	})
	return r, ok, err
}

// ImportCatalog moves a host config's catalog sections into the store, in one transaction,
// once: a store that holds an import refuses another (ErrImported). Records are checked as
// the API checks them; an id the store already has, a group defined twice with different
// rules, or an IPv6 rule (groups are IPv4 only now) fails the whole import and changes
// nothing. IP group ids outside the wsipg- form (netcfg took any name) get new ids, and the
// report says which.
func (s *Service) ImportCatalog(ctx context.Context, c *hostconfig.LegacyCatalog, source string) (ImportReport, error) {
	now := s.now()
	rep := ImportReport{At: now, Source: source}
	line := func(format string, args ...any) { rep.Lines = append(rep.Lines, fmt.Sprintf(format, args...)) }

	// IP groups, from directories' login settings and from netcfg's section.
	type group struct {
		g    catalog.IPGroup
		old  string // the id the config gave it
		from []string
	}
	var groups []*group
	byOld := map[string]*group{}
	addGroup := func(g catalog.IPGroup, from string) error {
		if prev, ok := byOld[g.ID]; ok {
			if !sameRules(prev.g.Rules, g.Rules) {
				return fmt.Errorf("IP access control group %s is defined in %s and in %s with different rules; make them agree", g.ID, strings.Join(prev.from, ", "), from)
			}
			prev.from = append(prev.from, from)
			return nil
		}
		ng := &group{g: g, old: g.ID, from: []string{from}}
		if catalog.CheckID(catalog.KindIPGroup, g.ID) != nil {
			ng.g.ID = catalog.NewID(catalog.KindIPGroup)
		}
		if strings.TrimSpace(ng.g.Name) == "" {
			ng.g.Name = g.ID
		}
		if err := catalog.CheckIPGroup(ng.g); err != nil {
			return fmt.Errorf("%s (%s): %s", from, g.ID, catalog.AsError(err).Message)
		}
		byOld[g.ID] = ng
		groups = append(groups, ng)
		return nil
	}
	for _, d := range c.Directories {
		for i, g := range d.Item.Login.IPGroups {
			if err := addGroup(g, fmt.Sprintf("%s.login.ipGroups[%d]", d.From, i)); err != nil {
				return rep, err
			}
		}
	}
	for _, g := range c.IPGroups {
		if err := addGroup(g.Item, g.From); err != nil {
			return rep, err
		}
	}
	if len(groups) > catalog.MaxIPGroups {
		return rep, fmt.Errorf("%d IP access control groups; an account can have at most %d", len(groups), catalog.MaxIPGroups)
	}
	for _, g := range groups {
		renamed := ""
		if g.g.ID != g.old {
			renamed = fmt.Sprintf(" (was %s, which is not of the wsipg- form)", g.old)
		}
		line("IP access control group %s %q, %d rules, from %s%s → store bucket %s", g.g.ID, g.g.Name, len(g.g.Rules), strings.Join(g.from, ", "), renamed, store.IPGroups)
	}

	// Directories: the definition, and a registration for those that were registered.
	recs := make([]catalog.DirectoryRecord, 0, len(c.Directories))
	for _, sd := range c.Directories {
		d := sd.Item
		def := d
		def.RegistrationCode, def.Login.IPGroups, def.Login.DeviceAccess, def.Login.Deregistered = "", nil, catalog.DeviceAccess{}, false
		if err := catalog.CheckDefinition(def); err != nil {
			return rep, fmt.Errorf("%s (%s): %s", sd.From, d.ID, strings.ReplaceAll(err.Error(), "\n", "; "))
		}
		rec := catalog.DirectoryRecord{Definition: def, Created: now, Updated: now}
		what := "not registered (it was deregistered)"
		if !d.Login.Deregistered {
			reg := catalog.NewRegistration(now, false)
			if d.RegistrationCode != "" {
				reg.Code = d.RegistrationCode
			}
			reg.DeviceAccess = d.Login.DeviceAccess
			for _, g := range d.Login.IPGroups {
				reg.IPGroupIDs = appendNew(reg.IPGroupIDs, byOld[g.ID].g.ID)
			}
			for _, a := range c.Associations {
				if a.DirectoryID != d.ID {
					continue
				}
				g, ok := byOld[a.GroupID]
				if !ok {
					return rep, fmt.Errorf("%s: IP access control group %s is defined nowhere", a.From, a.GroupID)
				}
				reg.IPGroupIDs = appendNew(reg.IPGroupIDs, g.g.ID)
			}
			if len(reg.IPGroupIDs) > catalog.MaxIPGroupsPerDirectory {
				return rep, fmt.Errorf("%s (%s): %d IP access control groups associated; a directory can have at most %d", sd.From, d.ID, len(reg.IPGroupIDs), catalog.MaxIPGroupsPerDirectory)
			}
			rec.Registration = reg
			assoc := "none (all addresses allowed)"
			if len(reg.IPGroupIDs) > 0 {
				assoc = strings.Join(reg.IPGroupIDs, ", ")
			}
			what = fmt.Sprintf("registered with code %s, IP groups %s", reg.Code, assoc)
		}
		line("directory %s (%s) from %s: %s login, %d users, %s → store bucket %s", d.ID, d.Name, sd.From, d.Login.Kind(), len(d.Users), what, store.Directories)
		recs = append(recs, rec)
	}
	for _, a := range c.Associations {
		if !slices.ContainsFunc(c.Directories, func(d hostconfig.Sourced[catalog.Directory]) bool { return d.Item.ID == a.DirectoryID }) {
			return rep, fmt.Errorf("%s: directory %s is not in hostd.directories; define it there (or remove the association) before importing", a.From, a.DirectoryID)
		}
	}
	for _, im := range c.Images {
		line("image %s (%s, %s, %s) from %s → store bucket %s", im.Item.ID, im.Item.Name, im.Item.OS, im.Item.Dir, im.From, store.Images)
	}
	if len(c.Images) > catalog.MaxImages {
		return rep, fmt.Errorf("%d images; the most is %d", len(c.Images), catalog.MaxImages)
	}
	for _, b := range c.Bundles {
		line("bundle %s (%s, image %s, %s, %d/%d GiB) from %s → store bucket %s", b.Item.ID, b.Item.Name, b.Item.ImageID, b.Item.ComputeType, b.Item.RootGiB, b.Item.UserGiB, b.From, store.Bundles)
	}

	err := s.catalogUpdate(func(tx store.Tx) error {
		if _, err := tx.Get(store.Meta, store.CatalogImportKey); err == nil {
			return ErrImported
		} else if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		put := func(bucket, id string, v any) error {
			if _, err := tx.Get(bucket, id); err == nil {
				return fmt.Errorf("the store already has %s; an import does not overwrite records", id)
			} else if !errors.Is(err, store.ErrNotFound) {
				return err
			}
			return store.PutJSON(tx, bucket, id, v)
		}
		for _, g := range groups {
			if err := put(store.IPGroups, g.g.ID, g.g); err != nil {
				return err
			}
		}
		for _, im := range c.Images {
			img := im.Item
			img.Created = now
			if err := put(store.Images, img.ID, img); err != nil {
				return err
			}
		}
		for _, b := range c.Bundles {
			bd := b.Item
			bd.Created, bd.Updated = now, now
			if err := put(store.Bundles, bd.ID, bd); err != nil {
				return err
			}
		}
		for _, r := range recs {
			if err := put(store.Directories, r.Definition.ID, r); err != nil {
				return err
			}
		}
		return store.PutJSON(tx, store.Meta, store.CatalogImportKey, rep)
	})
	if err != nil {
		return rep, err
	}
	for _, l := range rep.Lines {
		s.log.Info("catalog import", "moved", l)
	}
	return rep, nil
}

func sameRules(a, b []catalog.IPRule) bool {
	if len(a) != len(b) {
		return false
	}
	for _, r := range a {
		if !slices.ContainsFunc(b, func(o catalog.IPRule) bool { return o.Source == r.Source }) {
			return false
		}
	}
	return true
}

func appendNew(list []string, v string) []string {
	if slices.Contains(list, v) {
		return list
	}
	return append(list, v)
}
