package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"deskhost/hostd/store"
	"deskhost/hostd/workspace"
	"deskhost/internal/catalog"
	"deskhost/internal/hostconfig"
)

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

func wantErr(t *testing.T, err error, typ catalog.ErrorType, msg string) {
	t.Helper()
	if !catalog.IsError(err, typ) || !strings.Contains(err.Error(), msg) {
		t.Errorf("err = %v; want %s mentioning %q", err, typ, msg)
	}
}

func revision(t *testing.T, s *Service) uint64 {
	t.Helper()
	r, err := s.CatalogRevision()
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestIPGroupLimitsAndAssociations(t *testing.T) {
	s, _, _ := newService(t, 100)
	ctx := context.Background()
	rev := revision(t, s)
	var ten []IPRuleInput
	for i := range 10 {
		ten = append(ten, IPRuleInput{Source: fmt.Sprintf("10.%d.0.0/16", i)})
	}
	gid, err := s.CreateIpGroup(ctx, "office", "", ten, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r := revision(t, s); r != rev+1 {
		t.Errorf("revision %d after a create, want %d", r, rev+1)
	}
	// The 11th rule.
	wantErr(t, s.AuthorizeIpRules(ctx, gid, []IPRuleInput{{Source: "192.0.2.1"}}), catalog.ResourceLimitExceeded, "at most 10")
	_, err = s.CreateIpGroup(ctx, "eleven", "", append(ten, IPRuleInput{Source: "192.0.2.1"}), nil)
	wantErr(t, err, catalog.ResourceLimitExceeded, "at most 10")
	// Bad rules change nothing.
	for _, bad := range []string{"10.0.0.1/8", "2001:db8::/32", "not-an-address", ""} {
		_, err := s.CreateIpGroup(ctx, "bad-"+bad, "", []IPRuleInput{{Source: bad}}, nil)
		wantErr(t, err, catalog.InvalidParameterValues, "")
	}
	wantErr(t, s.UpdateRulesOfIpGroup(ctx, gid, []IPRuleInput{{Source: "10.0.0.0/8"}, {Source: "10.0.0.0/8"}}), catalog.InvalidParameterValues, "twice")
	if r := revision(t, s); r != rev+1 {
		t.Errorf("refused writes moved the revision to %d", r)
	}
	// A single address is stored as /32.
	if err := s.UpdateRulesOfIpGroup(ctx, gid, []IPRuleInput{{Source: "198.51.100.7", Description: "NAT"}}); err != nil {
		t.Fatal(err)
	}
	gs, _ := s.DescribeIpGroups(ctx, []string{gid})
	if len(gs) != 1 || gs[0].Rules[0].Source.String() != "198.51.100.7/32" {
		t.Errorf("rules %+v", gs)
	}
	wantErr(t, s.RevokeIpRules(ctx, gid, []string{"10.0.0.0/8"}), catalog.InvalidParameterValues, "no rule")

	// 25 groups per directory.
	ids := []string{gid}
	for i := range 25 {
		id, err := s.CreateIpGroup(ctx, fmt.Sprintf("g%d", i), "", nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if err := s.AssociateIpGroups(ctx, dirID, ids[:25]); err != nil {
		t.Fatal(err)
	}
	wantErr(t, s.AssociateIpGroups(ctx, dirID, ids[25:]), catalog.ResourceLimitExceeded, "at most 25")
	// An associated group is not deleted.
	wantErr(t, s.DeleteIpGroup(ctx, gid), catalog.ResourceAssociated, "disassociate")
	if err := s.DisassociateIpGroups(ctx, dirID, []string{gid}); err != nil {
		t.Fatal(err)
	}
	wantErr(t, s.DisassociateIpGroups(ctx, dirID, []string{gid}), catalog.ResourceNotFound, "not associated")
	if err := s.DeleteIpGroup(ctx, gid); err != nil {
		t.Fatal(err)
	}
	// 100 per account: 25 exist.
	for i := range 75 {
		if _, err := s.CreateIpGroup(ctx, fmt.Sprintf("h%d", i), "", nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	_, err = s.CreateIpGroup(ctx, "the-101st", "", nil, nil)
	wantErr(t, err, catalog.ResourceLimitExceeded, "100")
	_, err = s.CreateIpGroup(ctx, "h1", "", nil, nil)
	wantErr(t, err, catalog.ResourceLimitExceeded, "") // the limit comes before the name
}

func TestIPGroupsReachTheConnectionManagersView(t *testing.T) {
	s, _, _ := newService(t, 100)
	ctx := context.Background()
	gid, err := s.CreateIpGroup(ctx, "office", "", []IPRuleInput{{Source: "203.0.113.0/24"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.AssociateIpGroups(ctx, dirID, []string{gid}); err != nil {
		t.Fatal(err)
	}
	v, err := s.Catalog(ctx)
	if err != nil || len(v.Directories) != 1 || len(v.IPGroups) != 1 {
		t.Fatalf("catalog %+v %v", v, err)
	}
	d := v.Directories[0]
	if len(d.Login.IPGroups) != 1 || d.Login.IPGroups[0].ID != gid || d.RegistrationCode == "" || d.Login.Deregistered {
		t.Errorf("the connection manager's directory: %+v", d)
	}
	// A long poll wakes at a write, with the new revision.
	since := v.Revision
	got := make(chan uint64, 1)
	go func() {
		r, _ := s.WaitCatalog(ctx, since, 10*time.Second)
		got <- r
	}()
	time.Sleep(50 * time.Millisecond)
	start := time.Now()
	if err := s.RevokeIpRules(ctx, gid, []string{"203.0.113.0/24"}); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-got:
		if r != since+1 || time.Since(start) > time.Second {
			t.Errorf("woke with revision %d after %v", r, time.Since(start))
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the long poll did not wake at the write")
	}
	// A revision written by someone else (another host on a shared store) is seen by polling.
	if err := s.store.Update(func(tx store.Tx) error { _, err := store.BumpCatalogRevision(tx); return err }); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	if r, _ := s.WaitCatalog(ctx, since+1, 5*time.Second); r != since+2 || time.Since(start) > time.Second {
		t.Errorf("an outside write: revision %d after %v", r, time.Since(start))
	}
	// An empty associated group blocks everyone; the view says so.
	v, _ = s.Catalog(ctx)
	if len(v.Directories[0].Login.IPGroups) != 1 || len(v.Directories[0].Login.IPGroups[0].Rules) != 0 {
		t.Errorf("after the revoke: %+v", v.Directories[0].Login.IPGroups)
	}
}

func TestTags(t *testing.T) {
	s, _, _ := newService(t, 100)
	ctx := context.Background()
	ws, failed, err := s.CreateWorkspaces(ctx, []CreateRequest{func() CreateRequest {
		r := req("user01")
		r.Tags = []catalog.Tag{{Key: "cost-center", Value: "42"}}
		return r
	}()})
	if err != nil || len(ws) != 1 {
		t.Fatalf("%v %+v", err, failed)
	}
	id := ws[0].ID
	tags, err := s.DescribeTags(ctx, id)
	if err != nil || len(tags) != 1 || tags[0].Key != "cost-center" {
		t.Fatalf("CreateWorkspaces' tags: %+v %v", tags, err)
	}
	long := strings.Repeat("é", 127) // 254 bytes, 127 code points
	if err := s.CreateTags(ctx, id, []catalog.Tag{{Key: long, Value: strings.Repeat("ü", 255)}, {Key: "Env", Value: "a"}, {Key: "env", Value: "b"}, {Key: "ok", Value: ""}}); err != nil {
		t.Fatalf("the guide's limits in code points: %v", err)
	}
	for _, bad := range []struct {
		tag  catalog.Tag
		want string
	}{
		{catalog.Tag{Key: long + "é"}, "128 characters"},
		{catalog.Tag{Key: "k", Value: strings.Repeat("ü", 256)}, "256 characters"},
		{catalog.Tag{Key: "aws:x"}, "reserved"},
		{catalog.Tag{Key: "AWS:x"}, "reserved"},
		{catalog.Tag{Key: "aws:workspaces:x"}, "reserved"},
		{catalog.Tag{Key: "k", Value: "aws:x"}, "reserved"},
		{catalog.Tag{Key: " key"}, "leading and trailing"},
		{catalog.Tag{Key: "key "}, "leading and trailing"},
		{catalog.Tag{Key: "k#"}, `"#"`},
		{catalog.Tag{Key: ""}, "1 to 127"},
	} {
		wantErr(t, s.CreateTags(ctx, id, []catalog.Tag{bad.tag}), catalog.InvalidParameterValues, bad.want)
	}
	wantErr(t, s.CreateTags(ctx, id, []catalog.Tag{{Key: "k"}, {Key: "k"}}), catalog.InvalidParameterValues, "twice")
	var more []catalog.Tag
	for i := range 45 { // 5 + 45 = 50
		more = append(more, catalog.Tag{Key: fmt.Sprintf("t%02d", i)})
	}
	if err := s.CreateTags(ctx, id, more); err != nil {
		t.Fatal(err)
	}
	wantErr(t, s.CreateTags(ctx, id, []catalog.Tag{{Key: "fifty-one"}}), catalog.ResourceLimitExceeded, "at most 50")
	if err := s.CreateTags(ctx, id, []catalog.Tag{{Key: "t00", Value: "changed"}}); err != nil {
		t.Errorf("changing a tag at 50: %v", err)
	}
	// A system tag (planted as the system would) cannot be changed or deleted.
	if err := s.store.Update(func(tx store.Tx) error {
		tags, _ := getTags(tx, id)
		tags[0] = catalog.Tag{Key: "aws:workspaces:owner", Value: "system"}
		tags[1] = catalog.Tag{Key: "plain", Value: "aws:system"}
		return store.PutJSON(tx, store.Tags, id, tags)
	}); err != nil {
		t.Fatal(err)
	}
	wantErr(t, s.DeleteTags(ctx, id, []string{"aws:workspaces:owner"}), catalog.InvalidParameterValues, "system tags")
	wantErr(t, s.DeleteTags(ctx, id, []string{"plain"}), catalog.InvalidParameterValues, "system tag")
	wantErr(t, s.CreateTags(ctx, id, []catalog.Tag{{Key: "plain", Value: "x"}}), catalog.InvalidParameterValues, "system tag")
	if err := s.DeleteTags(ctx, id, []string{"Env", "no-such-key"}); err != nil {
		t.Errorf("DeleteTags: %v", err)
	}
	tags, _ = s.DescribeTags(ctx, id)
	if len(tags) != 49 {
		t.Errorf("%d tags", len(tags))
	}
	wantErr(t, s.CreateTags(ctx, "ws-nosuchone1", []catalog.Tag{{Key: "k"}}), catalog.ResourceNotFound, "does not exist")
	wantErr(t, s.CreateTags(ctx, "sg-0123abcd", []catalog.Tag{{Key: "k"}}), catalog.InvalidParameterValues, "tags go on")
	for _, r := range []string{dirID, valueID, "wsi-linux00001"} {
		if err := s.CreateTags(ctx, r, []catalog.Tag{{Key: "k", Value: "v"}}); err != nil {
			t.Errorf("tag %s: %v", r, err)
		}
	}
}

func TestDeregistrationAndDefinitions(t *testing.T) {
	s, _, _ := newService(t, 100)
	ctx := context.Background()
	ws, _, _ := s.CreateWorkspaces(ctx, []CreateRequest{req("user01")})
	id := ws[0].ID
	wantErr(t, s.DeregisterWorkspaceDirectory(ctx, dirID), catalog.InvalidResourceState, id)
	wantErr(t, s.DeleteDirectory(ctx, dirID), catalog.InvalidResourceState, "deregister it")
	wantErr(t, s.DeleteUsers(ctx, dirID, []string{"USER01"}), catalog.ResourceAssociated, id)
	// A definition replaced without users keeps them; one without the user who has a
	// WorkSpace is refused.
	def := catalog.Directory{ID: dirID, Name: "corp.example.com", Alias: "corp"}
	if _, created, err := s.PutDirectory(ctx, def); err != nil || created {
		t.Fatalf("put: %v created %v", err, created)
	}
	users, _ := s.DescribeUsers(ctx, dirID)
	if len(users) != 42 {
		t.Errorf("%d users after a definition without users", len(users))
	}
	def.Users = []catalog.User{{UserName: "user02", Email: "u2@example.com"}}
	_, _, err := s.PutDirectory(ctx, def)
	wantErr(t, err, catalog.ResourceAssociated, "user01")
	// The WorkSpaces-side settings are refused in a definition.
	for _, bad := range []catalog.Directory{
		{ID: dirID, Name: "corp.example.com", RegistrationCode: "X"},
		{ID: dirID, Name: "corp.example.com", Login: catalog.Login{IPGroups: []catalog.IPGroup{{ID: "wsipg-a1bcd2efg"}}}},
		{ID: dirID, Name: "corp.example.com", Login: catalog.Login{DeviceAccess: catalog.DeviceAccess{Web: catalog.Allow}}},
		{ID: dirID, Name: "not a dns name"},
		{ID: dirID, Name: "corp.example.com", Users: []catalog.User{{UserName: "a"}, {UserName: "A"}}},
	} {
		_, _, err := s.PutDirectory(ctx, bad)
		wantErr(t, err, catalog.InvalidParameterValues, "")
	}
	// Once the WorkSpace is TERMINATED, deregistration goes through, and launches stop.
	if err := s.store.Update(func(tx store.Tx) error {
		w, _ := store.GetJSON[workspace.Workspace](tx, store.Workspaces, id)
		w.SetState(workspace.Terminated, time.Now())
		return store.PutJSON(tx, store.Workspaces, id, w)
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.DeregisterWorkspaceDirectory(ctx, dirID); err != nil {
		t.Fatal(err)
	}
	_, failed, _ := s.CreateWorkspaces(ctx, []CreateRequest{req("user03")})
	if len(failed) != 1 || failed[0].Code != string(catalog.InvalidResourceState) || !strings.Contains(failed[0].Message, "not registered") {
		t.Errorf("launch in a deregistered directory: %+v", failed)
	}
	if v, _ := s.Catalog(ctx); len(v.Directories) != 0 {
		t.Errorf("the connection manager still sees %d directories", len(v.Directories))
	}
	if err := s.DeleteDirectory(ctx, dirID); err != nil {
		t.Errorf("delete after deregistration: %v", err)
	}
}

func TestSecretsAreNeverDescribed(t *testing.T) {
	s, _, _ := newService(t, 100)
	ctx := context.Background()
	d := catalog.Directory{ID: "d-00000000b1", Name: "ad.example.com", Login: catalog.Login{Type: catalog.TypeLDAP,
		LDAP: &catalog.LDAP{URL: "ldaps://dc.example.com", BindDN: "cn=svc", BindPassword: "bind-s3cret", UserBase: "dc=ad"},
		MFA:  &catalog.MFA{Type: catalog.MFARADIUS, RADIUS: &catalog.RADIUS{Servers: catalog.ServerList{"10.0.0.5"}, SharedSecret: "radius-s3cret"}}}}
	if _, _, err := s.PutDirectory(ctx, d); err != nil {
		t.Fatal(err)
	}
	if err := s.RegisterWorkspaceDirectory(ctx, RegisterRequest{DirectoryID: d.ID}); err != nil {
		t.Fatal(err)
	}
	for name, v := range map[string]func() (any, error){
		"DescribeDirectories":          func() (any, error) { return s.DescribeDirectories(ctx, nil) },
		"DescribeWorkspaceDirectories": func() (any, error) { return s.DescribeWorkspaceDirectories(ctx, nil) },
	} {
		got, err := v()
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(got)
		if strings.Contains(string(b), "s3cret") || !strings.Contains(string(b), catalog.RedactedSecret) {
			t.Errorf("%s shows a secret or no placeholder: %s", name, b)
		}
	}
	// The connection manager's root-only view has them: it checks passwords with them.
	v, _ := s.Catalog(ctx)
	for _, cd := range v.Directories {
		if cd.ID == d.ID && (cd.Login.LDAP.BindPassword != "bind-s3cret" || cd.Login.MFA.RADIUS.SharedSecret != "radius-s3cret") {
			t.Errorf("the catalog view lacks the secrets: %+v", cd.Login)
		}
	}
}

func TestBundlesAndImages(t *testing.T) {
	s, _, _ := newService(t, 100)
	ctx := context.Background()
	b, err := s.CreateWorkspaceBundle(ctx, BundleRequest{Name: "Value-50", Description: "x", ImageID: "wsi-linux00001", ComputeType: catalog.ComputeValue, UserGiB: 50})
	if err != nil || b.RootGiB != 80 || b.Protocol != catalog.PCoIP {
		t.Fatalf("%+v %v", b, err)
	}
	_, err = s.CreateWorkspaceBundle(ctx, BundleRequest{Name: "Value-50", Description: "x", ImageID: "wsi-linux00001", ComputeType: catalog.ComputeValue, UserGiB: 50})
	wantErr(t, err, catalog.ResourceAlreadyExists, "Value-50")
	_, err = s.CreateWorkspaceBundle(ctx, BundleRequest{Name: "p", Description: "x", ImageID: "wsi-linux00001", ComputeType: catalog.ComputePower, UserGiB: 10})
	wantErr(t, err, catalog.ResourceUnavailable, "no hardware")
	_, err = s.CreateWorkspaceBundle(ctx, BundleRequest{Name: "g", Description: "x", ImageID: "wsi-linux00001", ComputeType: catalog.ComputeGraphics, UserGiB: 10})
	wantErr(t, err, catalog.InvalidParameterValues, "100 GB")
	// The image is in use by bundles: not deleted.
	wantErr(t, s.DeleteWorkspaceImage(ctx, "wsi-linux00001"), catalog.ResourceAssociated, "delete the bundle first")
	// A bundle WorkSpaces use goes to the delete queue: not described, not launched from,
	// gone when the last WorkSpace is.
	ws, _, _ := s.CreateWorkspaces(ctx, []CreateRequest{{DirectoryID: dirID, UserName: "user01", BundleID: b.ID}})
	queued, err := s.DeleteWorkspaceBundle(ctx, b.ID)
	if err != nil || !queued {
		t.Fatalf("delete of a bundle in use: queued %v, %v", queued, err)
	}
	if bs, _ := s.DescribeWorkspaceBundles(ctx, []string{b.ID}); len(bs) != 0 {
		t.Errorf("a queued bundle is described")
	}
	_, failed, _ := s.CreateWorkspaces(ctx, []CreateRequest{{DirectoryID: dirID, UserName: "user02", BundleID: b.ID}})
	if len(failed) != 1 || failed[0].Code != string(catalog.ResourceNotFound) {
		t.Errorf("launch from a queued bundle: %+v", failed)
	}
	if err := s.PurgeBundles(ctx); err != nil {
		t.Fatal(err)
	}
	exists := func() bool {
		var ok bool
		s.store.View(func(tx store.Tx) error { _, err := tx.Get(store.Bundles, b.ID); ok = err == nil; return nil })
		return ok
	}
	if !exists() {
		t.Fatal("a queued bundle went while a WorkSpace still used it")
	}
	s.store.Update(func(tx store.Tx) error {
		w, _ := store.GetJSON[workspace.Workspace](tx, store.Workspaces, ws[0].ID)
		w.SetState(workspace.Terminated, time.Now())
		return store.PutJSON(tx, store.Workspaces, w.ID, w)
	})
	if err := s.PurgeBundles(ctx); err != nil || exists() {
		t.Errorf("the queued bundle outlived its last WorkSpace: %v", err)
	}
	// Registering an image reads its directory's manifest.
	dir := t.TempDir()
	for _, f := range []string{"vmlinux", "initrd.img", "root.qcow2"} {
		os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o644)
	}
	os.WriteFile(filepath.Join(dir, "image.json"), []byte(`{"name":"desk","os":"windows","kernel":"vmlinux","initrd":"initrd.img","root":"root.qcow2"}`), 0o644)
	img, err := s.RegisterImage(ctx, ImageRequest{Dir: dir})
	if err != nil || img.OS != catalog.Windows || img.Name != "desk" {
		t.Fatalf("register: %+v %v", img, err)
	}
	_, err = s.RegisterImage(ctx, ImageRequest{Dir: dir})
	wantErr(t, err, catalog.ResourceAlreadyExists, "already image")
	_, err = s.RegisterImage(ctx, ImageRequest{Dir: t.TempDir()})
	wantErr(t, err, catalog.InvalidParameterValues, "image.json")
	_, err = s.RegisterImage(ctx, ImageRequest{Dir: dir, ID: "wsi-other0001", Name: "has spaces"})
	wantErr(t, err, catalog.InvalidParameterValues, "image name")
	// 20 images: 3 exist.
	for i := range 17 {
		d := t.TempDir()
		for _, f := range []string{"vmlinux", "initrd.img", "root.qcow2", "image.json"} {
			b, _ := os.ReadFile(filepath.Join(dir, f))
			os.WriteFile(filepath.Join(d, f), b, 0o644)
		}
		if _, err := s.RegisterImage(ctx, ImageRequest{Dir: d, Name: fmt.Sprintf("i%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	d := t.TempDir()
	for _, f := range []string{"vmlinux", "initrd.img", "root.qcow2", "image.json"} {
		b, _ := os.ReadFile(filepath.Join(dir, f))
		os.WriteFile(filepath.Join(d, f), b, 0o644)
	}
	_, err = s.RegisterImage(ctx, ImageRequest{Dir: d, Name: "twenty-one"})
	wantErr(t, err, catalog.ResourceLimitExceeded, "20 images")
	// A Linux image cannot back a WSP bundle: an update to it is refused.
	if err := s.UpdateWorkspaceBundle(ctx, winID, "wsi-linux00001"); !catalog.IsError(err, catalog.InvalidParameterValues) {
		t.Errorf("WSP bundle onto a Linux image: %v", err)
	}
	if err := s.DeleteWorkspaceImage(ctx, img.ID); err != nil {
		t.Errorf("delete an unused image: %v", err)
	}
}

func TestImportOnce(t *testing.T) {
	s, _, _ := newService(t, 100) // newService imports its catalog
	ctx := context.Background()
	_, err := s.ImportCatalog(ctx, &hostconfig.LegacyCatalog{}, "again")
	if !errors.Is(err, ErrImported) {
		t.Errorf("a second import: %v", err)
	}
	if rep, ok, err := s.Imported(); err != nil || !ok || rep.Source != "test" || len(rep.Lines) != 6 {
		t.Errorf("the stored report: %+v %v %v", rep, ok, err)
	}
}

func TestImportGroupsFromBothPlaces(t *testing.T) {
	st, err := store.OpenBolt(filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	s := New(st, Config{WorkspaceQuota: 1}, nil, nil, discard)
	rule := func(c string) catalog.IPRule {
		p, _ := catalog.ParseIPSource(c)
		return catalog.IPRule{Source: catalog.IPSource{Prefix: p}}
	}
	office := catalog.IPGroup{ID: "wsipg-office001", Name: "office", Rules: []catalog.IPRule{rule("203.0.113.0/24")}}
	l := &hostconfig.LegacyCatalog{
		Directories: []hostconfig.Sourced[catalog.Directory]{{From: "hostd.directories[0]", Item: catalog.Directory{ID: dirID, Name: "corp.example.com",
			RegistrationCode: "SLiad+OLD001", Login: catalog.Login{IPGroups: []catalog.IPGroup{office}}}}},
		IPGroups: []hostconfig.Sourced[catalog.IPGroup]{
			{From: "init.network.ipGroups[0]", Item: office},
			{From: "init.network.ipGroups[1]", Item: catalog.IPGroup{ID: "wsipg-corp01", Rules: []catalog.IPRule{rule("198.51.100.0/24")}}},
		},
		Associations: []hostconfig.LegacyAssociation{{From: "init.network.directories[0].ipGroups[0]", DirectoryID: dirID, GroupID: "wsipg-corp01"}},
	}
	rep, err := s.ImportCatalog(context.Background(), l, "host.yaml")
	if err != nil {
		t.Fatal(err)
	}
	v, _ := s.Catalog(context.Background())
	if len(v.IPGroups) != 2 || len(v.Directories) != 1 || v.Directories[0].RegistrationCode != "SLiad+OLD001" || len(v.Directories[0].Login.IPGroups) != 2 {
		t.Fatalf("imported: %+v", v)
	}
	if !strings.Contains(strings.Join(rep.Lines, "\n"), "was wsipg-corp01") {
		t.Errorf("the report does not say the netcfg id was renamed:\n%s", rep)
	}
	// The same id defined with different rules in two places is refused, and nothing is written.
	st2, _ := store.OpenBolt(filepath.Join(t.TempDir(), "s.db"))
	defer st2.Close()
	s2 := New(st2, Config{WorkspaceQuota: 1}, nil, nil, discard)
	l.IPGroups[0].Item.Rules = []catalog.IPRule{rule("192.0.2.0/24")}
	if _, err := s2.ImportCatalog(context.Background(), l, "host.yaml"); err == nil || !strings.Contains(err.Error(), "different rules") {
		t.Errorf("conflicting groups: %v", err)
	}
	if _, ok, _ := s2.Imported(); ok {
		t.Error("a failed import left its mark")
	}
}
