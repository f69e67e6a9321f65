package service

// The catalog operations: directories (their definitions and their WorkSpaces
// registrations), IP access control groups, bundles, images and tags. Each write is one
// store transaction that also moves the catalog revision, so that whoever follows the
// revision (the connection manager, the host network) sees every change.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"deskhost/hostd/store"
	"deskhost/hostd/workspace"
	"deskhost/internal/catalog"
)

// catalogUpdate runs fn in a write transaction and bumps the catalog revision with it.
// fn may run more than once (a distributed store retries conflicting transactions): it
// must only read and write through tx and set the caller's results.
func (s *Service) catalogUpdate(fn func(tx store.Tx) error) error {
	err := s.store.Update(func(tx store.Tx) error {
		if err := fn(tx); err != nil {
			return err
		}
		_, err := store.BumpCatalogRevision(tx)
		return err
	})
	if err == nil {
		s.catalogWritten()
	}
	return err
}

// catalogWritten wakes everyone waiting for the revision to move.
func (s *Service) catalogWritten() {
	s.catMu.Lock()
	close(s.catalogChanged)
	s.catalogChanged = make(chan struct{})
	s.catMu.Unlock()
}

func (s *Service) changed() <-chan struct{} {
	s.catMu.Lock()
	defer s.catMu.Unlock()
	return s.catalogChanged
}

// CatalogRevision is the catalog's current revision.
func (s *Service) CatalogRevision() (uint64, error) {
	var rev uint64
	err := s.store.View(func(tx store.Tx) error {
		var err error
		rev, err = store.CatalogRevision(tx)
		return err
	})
	return rev, err
}

// catalogPoll is how often a wait for the revision reads it from the store: writes this
// Service did not make (another host's, on a shared store) are seen within it.
const catalogPoll = 250 * time.Millisecond

// WaitCatalog returns the catalog revision as soon as it differs from since, or after
// wait (then it may equal since), or when ctx ends.
func (s *Service) WaitCatalog(ctx context.Context, since uint64, wait time.Duration) (uint64, error) {
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	poll := time.NewTicker(catalogPoll)
	defer poll.Stop()
	for {
		ch := s.changed() // before reading, so that a write in between is not missed
		rev, err := s.CatalogRevision()
		if err != nil || rev != since {
			return rev, err
		}
		select {
		case <-ch:
		case <-poll.C:
		case <-deadline.C:
			return rev, nil
		case <-ctx.Done():
			return rev, ctx.Err()
		}
	}
}

// CatalogView is the catalog as the connection manager needs it.
type CatalogView struct {
	Revision uint64
	// Directories are the registered directories, each with its login settings (secrets
	// included), device access and resolved IP access control groups.
	Directories []catalog.Directory
	IPGroups    []catalog.IPGroup
}

// Catalog reads the connection manager's view at one revision.
func (s *Service) Catalog(ctx context.Context) (CatalogView, error) {
	var v CatalogView
	err := s.store.View(func(tx store.Tx) error {
		var err error
		if v.Revision, err = store.CatalogRevision(tx); err != nil {
			return err
		}
		if v.IPGroups, err = store.ListJSON[catalog.IPGroup](tx, store.IPGroups); err != nil {
			return err
		}
		groups := map[string]catalog.IPGroup{}
		for _, g := range v.IPGroups {
			groups[g.ID] = g
		}
		recs, err := store.ListJSON[catalog.DirectoryRecord](tx, store.Directories)
		for _, r := range recs {
			if r.Registration != nil {
				v.Directories = append(v.Directories, r.View(groups))
			}
		}
		return err
	})
	if err != nil {
		return CatalogView{}, fmt.Errorf("read the catalog: %w", err)
	}
	return v, nil
}

// --- Directories: definitions (hostd's own operations) ---

func getDirectory(tx store.Tx, id string) (catalog.DirectoryRecord, error) {
	if err := catalog.CheckID(catalog.KindDirectory, id); err != nil {
		return catalog.DirectoryRecord{}, catalog.Errorf(catalog.InvalidParameterValues, "%v", err)
	}
	r, err := store.GetJSON[catalog.DirectoryRecord](tx, store.Directories, id)
	if errors.Is(err, store.ErrNotFound) {
		return r, catalog.Errorf(catalog.ResourceNotFound, "directory %s does not exist", id)
	}
	return r, err
}

func getRegistered(tx store.Tx, id string) (catalog.DirectoryRecord, error) {
	r, err := getDirectory(tx, id)
	if err != nil {
		return r, err
	}
	if r.Registration == nil {
		return r, catalog.Errorf(catalog.ResourceNotFound, "directory %s is not registered with WorkSpaces", id)
	}
	return r, nil
}

// liveWorkspaces lists the WorkSpaces that are not TERMINATED.
func liveWorkspaces(tx store.Tx, keep func(workspace.Workspace) bool) ([]workspace.Workspace, error) {
	all, err := store.ListJSON[workspace.Workspace](tx, store.Workspaces)
	var out []workspace.Workspace
	for _, w := range all {
		if w.State != workspace.Terminated && keep(w) {
			out = append(out, w)
		}
	}
	return out, err
}

func ids(ws []workspace.Workspace) string {
	var out []string
	for i, w := range ws {
		if i == 5 {
			out = append(out, fmt.Sprintf("and %d more", len(ws)-5))
			break
		}
		out = append(out, w.ID)
	}
	return strings.Join(out, ", ")
}

// PutDirectory creates a directory or replaces its definition. Users left out (nil) are
// kept as they are; a user who has a live WorkSpace cannot be removed. A registered
// directory keeps its registration.
func (s *Service) PutDirectory(ctx context.Context, d catalog.Directory) (id string, created bool, err error) {
	if d.ID == "" {
		d.ID = catalog.NewID(catalog.KindDirectory)
	}
	if err := catalog.CheckDefinition(d); err != nil {
		return "", false, catalog.Errorf(catalog.InvalidParameterValues, "directory %s: %v", d.ID, strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	now := s.now()
	err = s.catalogUpdate(func(tx store.Tx) error {
		rec, err := store.GetJSON[catalog.DirectoryRecord](tx, store.Directories, d.ID)
		created = errors.Is(err, store.ErrNotFound)
		if err != nil && !created {
			return err
		}
		if created {
			rec = catalog.DirectoryRecord{Created: now}
		} else if d.Users == nil {
			d.Users = rec.Definition.Users
		}
		if err := checkUsersGone(tx, d.ID, rec.Definition.Users, d.Users); err != nil {
			return err
		}
		rec.Definition, rec.Updated = d, now
		return store.PutJSON(tx, store.Directories, d.ID, rec)
	})
	if err == nil {
		s.log.Info("directory defined", "directory", d.ID, "name", d.Name, "type", string(d.Login.Kind()), "users", len(d.Users), "created", created)
	}
	return d.ID, created, err
}

// checkUsersGone refuses to drop a user who has a live WorkSpace.
func checkUsersGone(tx store.Tx, dirID string, before, after []catalog.User) error {
	var gone []string
	for _, u := range before {
		if !slices.ContainsFunc(after, func(a catalog.User) bool { return strings.EqualFold(a.UserName, u.UserName) }) {
			gone = append(gone, u.UserName)
		}
	}
	if len(gone) == 0 {
		return nil
	}
	ws, err := liveWorkspaces(tx, func(w workspace.Workspace) bool {
		return w.DirectoryID == dirID && slices.ContainsFunc(gone, func(u string) bool { return strings.EqualFold(u, w.UserName) })
	})
	if err != nil {
		return err
	}
	if len(ws) > 0 {
		return catalog.Errorf(catalog.ResourceAssociated, "user %q of directory %s has WorkSpace %s; terminate it before removing the user", ws[0].UserName, dirID, ws[0].ID)
	}
	return nil
}

// DeleteDirectory removes a directory's definition: "you must deregister a directory
// before you can delete it".
func (s *Service) DeleteDirectory(ctx context.Context, id string) error {
	err := s.catalogUpdate(func(tx store.Tx) error {
		rec, err := getDirectory(tx, id)
		if err != nil {
			return err
		}
		if rec.Registration != nil {
			return catalog.Errorf(catalog.InvalidResourceState, "directory %s is registered with WorkSpaces; deregister it before deleting it", id)
		}
		return tx.Delete(store.Directories, id)
	})
	if err == nil {
		s.log.Info("directory deleted", "directory", id)
	}
	return err
}

// DescribeDirectories lists directory records, all or by id, in id order, with their
// secrets redacted.
func (s *Service) DescribeDirectories(ctx context.Context, dirIDs []string) ([]catalog.DirectoryRecord, error) {
	for _, id := range dirIDs {
		if err := catalog.CheckID(catalog.KindDirectory, id); err != nil {
			return nil, catalog.Errorf(catalog.InvalidParameterValues, "%v", err)
		}
	}
	var out []catalog.DirectoryRecord
	err := s.store.View(func(tx store.Tx) error {
		all, err := store.ListJSON[catalog.DirectoryRecord](tx, store.Directories)
		for _, r := range all {
			if len(dirIDs) == 0 || slices.Contains(dirIDs, r.Definition.ID) {
				r.Definition = r.Definition.Redacted()
				out = append(out, r)
			}
		}
		return err
	})
	return out, err
}

// CreateUsers adds users to a directory.
func (s *Service) CreateUsers(ctx context.Context, dirID string, users []catalog.User) error {
	if len(users) == 0 {
		return catalog.Errorf(catalog.InvalidParameterValues, "Users lists no user")
	}
	err := s.catalogUpdate(func(tx store.Tx) error {
		rec, err := getDirectory(tx, dirID)
		if err != nil {
			return err
		}
		for _, u := range users {
			if _, ok := rec.Definition.FindUser(u.UserName); ok {
				return catalog.Errorf(catalog.ResourceAlreadyExists, "directory %s already has user %q", dirID, u.UserName)
			}
		}
		all := append(append([]catalog.User(nil), rec.Definition.Users...), users...)
		if err := catalog.CheckUsers(all); err != nil {
			return catalog.Errorf(catalog.InvalidParameterValues, "%s", strings.ReplaceAll(err.Error(), "\n", "; "))
		}
		rec.Definition.Users, rec.Updated = all, s.now()
		return store.PutJSON(tx, store.Directories, dirID, rec)
	})
	if err == nil {
		for _, u := range users {
			s.log.Info("directory user added", "directory", dirID, "user", u.UserName)
		}
	}
	return err
}

// DeleteUsers removes users from a directory; one who has a live WorkSpace stays.
func (s *Service) DeleteUsers(ctx context.Context, dirID string, names []string) error {
	if len(names) == 0 {
		return catalog.Errorf(catalog.InvalidParameterValues, "UserNames lists no user")
	}
	err := s.catalogUpdate(func(tx store.Tx) error {
		rec, err := getDirectory(tx, dirID)
		if err != nil {
			return err
		}
		keep := rec.Definition.Users
		for _, n := range names {
			i := slices.IndexFunc(keep, func(u catalog.User) bool { return strings.EqualFold(u.UserName, n) })
			if i < 0 {
				return catalog.Errorf(catalog.ResourceNotFound, "user %q does not exist in directory %s", n, dirID)
			}
			keep = slices.Delete(slices.Clone(keep), i, i+1)
		}
		if err := checkUsersGone(tx, dirID, rec.Definition.Users, keep); err != nil {
			return err
		}
		rec.Definition.Users, rec.Updated = keep, s.now()
		return store.PutJSON(tx, store.Directories, dirID, rec)
	})
	if err == nil {
		for _, n := range names {
			s.log.Info("directory user removed", "directory", dirID, "user", n)
		}
	}
	return err
}

// DescribeUsers lists a directory's users.
func (s *Service) DescribeUsers(ctx context.Context, dirID string) ([]catalog.User, error) {
	var users []catalog.User
	err := s.store.View(func(tx store.Tx) error {
		rec, err := getDirectory(tx, dirID)
		users = rec.Definition.Users
		return err
	})
	return users, err
}

// --- Directories: WorkSpaces registration (AWS's operations) ---

// RegisterRequest is RegisterWorkspaceDirectory's input.
type RegisterRequest struct {
	DirectoryID       string
	EnableWorkDocs    bool
	EnableSelfService bool
	Tenancy           string
	SubnetIDs         []string
	Tags              []catalog.Tag
}

// MaxRegisteredDirectories bounds the registered directories of this host.
const MaxRegisteredDirectories = 50

// RegisterWorkspaceDirectory registers a defined directory with WorkSpaces: it gets a
// registration code and the guide's default properties, and WorkSpaces can be launched
// in it.
func (s *Service) RegisterWorkspaceDirectory(ctx context.Context, r RegisterRequest) error {
	if r.EnableWorkDocs {
		return catalog.Errorf(catalog.OperationNotSupported, "Amazon WorkDocs is not available on this host; register with EnableWorkDocs false")
	}
	switch r.Tenancy {
	case "", "SHARED", "DEDICATED":
	default:
		return catalog.Errorf(catalog.InvalidParameterValues, "Tenancy %q must be SHARED or DEDICATED", r.Tenancy)
	}
	if err := catalog.CheckTags(r.Tags); err != nil {
		return err
	}
	err := s.catalogUpdate(func(tx store.Tx) error {
		rec, err := getDirectory(tx, r.DirectoryID)
		if err != nil {
			return err
		}
		if rec.Registration != nil {
			return catalog.Errorf(catalog.InvalidResourceState, "directory %s is already registered (registration code %s)", r.DirectoryID, rec.Registration.Code)
		}
		all, err := store.ListJSON[catalog.DirectoryRecord](tx, store.Directories)
		if err != nil {
			return err
		}
		n := 0
		codes := map[string]bool{}
		for _, o := range all {
			if o.Registration != nil {
				n++
				codes[strings.ToUpper(o.Registration.Code)] = true
			}
		}
		if n >= MaxRegisteredDirectories {
			return catalog.Errorf(catalog.ResourceLimitExceeded, "%d directories are registered, this host's most; deregister one you no longer use", n)
		}
		reg := catalog.NewRegistration(s.now(), r.EnableSelfService)
		for codes[strings.ToUpper(reg.Code)] {
			reg.Code = catalog.NewRegistrationCode()
		}
		if r.Tenancy != "" {
			reg.Tenancy = r.Tenancy
		}
		reg.SubnetIDs = r.SubnetIDs
		rec.Registration, rec.Updated = reg, s.now()
		if len(r.Tags) > 0 {
			if err := putTags(tx, r.DirectoryID, r.Tags); err != nil {
				return err
			}
		}
		return store.PutJSON(tx, store.Directories, r.DirectoryID, rec)
	})
	if err == nil {
		s.log.Info("directory registered", "directory", r.DirectoryID)
	}
	return err
}

// DeregisterWorkspaceDirectory ends a directory's registration: its code stops working, its
// users can no longer log in, its IP group associations and tags go. Refused while the
// directory has WorkSpaces that are not TERMINATED.
func (s *Service) DeregisterWorkspaceDirectory(ctx context.Context, id string) error {
	err := s.catalogUpdate(func(tx store.Tx) error {
		rec, err := getRegistered(tx, id)
		if err != nil {
			return err
		}
		ws, err := liveWorkspaces(tx, func(w workspace.Workspace) bool { return w.DirectoryID == id })
		if err != nil {
			return err
		}
		if len(ws) > 0 {
			return catalog.Errorf(catalog.InvalidResourceState, "directory %s has %d WorkSpaces that are not TERMINATED (%s); terminate them before deregistering the directory", id, len(ws), ids(ws))
		}
		rec.Registration, rec.Updated = nil, s.now()
		if err := tx.Delete(store.Tags, id); err != nil {
			return err
		}
		return store.PutJSON(tx, store.Directories, id, rec)
	})
	if err == nil {
		s.log.Info("directory deregistered", "directory", id)
	}
	return err
}

// DescribeWorkspaceDirectories lists registered directories, all or by id, in id order.
func (s *Service) DescribeWorkspaceDirectories(ctx context.Context, dirIDs []string) ([]catalog.DirectoryRecord, error) {
	if len(dirIDs) > BatchLimit {
		return nil, catalog.Errorf(catalog.InvalidParameterValues, "DirectoryIds lists %d; at most %d", len(dirIDs), BatchLimit)
	}
	all, err := s.DescribeDirectories(ctx, dirIDs)
	var out []catalog.DirectoryRecord
	for _, r := range all {
		if r.Registration != nil {
			out = append(out, r)
		}
	}
	return out, err
}

// modifyRegistration changes a registered directory's WorkSpaces properties.
func (s *Service) modifyRegistration(id, what string, fn func(reg *catalog.Registration) error) error {
	err := s.catalogUpdate(func(tx store.Tx) error {
		rec, err := getRegistered(tx, id)
		if err != nil {
			return err
		}
		if err := fn(rec.Registration); err != nil {
			return err
		}
		rec.Updated = s.now()
		return store.PutJSON(tx, store.Directories, id, rec)
	})
	if err == nil {
		s.log.Info("directory properties modified", "directory", id, "properties", what)
	}
	return err
}

// ModifyWorkspaceAccessProperties sets which device types may log in; unset entries
// are left as they are.
func (s *Service) ModifyWorkspaceAccessProperties(ctx context.Context, id string, c catalog.DeviceAccess) error {
	return s.modifyRegistration(id, "access", func(reg *catalog.Registration) error {
		set := func(dst *catalog.Access, v catalog.Access) {
			if v != "" {
				*dst = v
			}
		}
		d := &reg.DeviceAccess
		set(&d.Windows, c.Windows)
		set(&d.MacOS, c.MacOS)
		set(&d.Linux, c.Linux)
		set(&d.Web, c.Web)
		set(&d.IOS, c.IOS)
		set(&d.Android, c.Android)
		set(&d.ChromeOS, c.ChromeOS)
		set(&d.ZeroClient, c.ZeroClient)
		return nil
	})
}

// CreationChange is ModifyWorkspaceCreationProperties' input; nil leaves a property as is.
type CreationChange struct {
	EnableWorkDocs                  *bool
	EnableInternetAccess            *bool
	DefaultOU                       *string
	CustomSecurityGroupID           *string
	UserEnabledAsLocalAdministrator *bool
	EnableMaintenanceMode           *bool
}

// ModifyWorkspaceCreationProperties sets the defaults of WorkSpaces launched in the
// directory from now on.
func (s *Service) ModifyWorkspaceCreationProperties(ctx context.Context, id string, c CreationChange) error {
	if c.EnableWorkDocs != nil && *c.EnableWorkDocs {
		return catalog.Errorf(catalog.OperationNotSupported, "Amazon WorkDocs is not available on this host")
	}
	if c.CustomSecurityGroupID != nil {
		// netcfg's security groups are not records of the catalog yet: nothing could apply it.
		return catalog.Errorf(catalog.OperationNotSupported, "custom security groups are not supported by this host yet (CustomSecurityGroupId %s)", *c.CustomSecurityGroupID)
	}
	if c.DefaultOU != nil && *c.DefaultOU != "" && !strings.Contains(strings.ToUpper(*c.DefaultOU), "DC=") {
		return catalog.Errorf(catalog.InvalidParameterValues, "DefaultOu %q is not an LDAP distinguished name such as OU=WorkSpaces,DC=corp,DC=example,DC=com", *c.DefaultOU)
	}
	return s.modifyRegistration(id, "creation", func(reg *catalog.Registration) error {
		p := &reg.Creation
		if c.EnableWorkDocs != nil {
			p.EnableWorkDocs = *c.EnableWorkDocs
		}
		if c.EnableInternetAccess != nil {
			p.EnableInternetAccess = *c.EnableInternetAccess
		}
		if c.DefaultOU != nil {
			p.DefaultOU = *c.DefaultOU
		}
		if c.UserEnabledAsLocalAdministrator != nil {
			p.UserEnabledAsLocalAdministrator = *c.UserEnabledAsLocalAdministrator
		}
		if c.EnableMaintenanceMode != nil {
			p.EnableMaintenanceMode = *c.EnableMaintenanceMode
		}
		return nil
	})
}

// ModifySelfservicePermissions sets the users' self-service permissions; unset entries
// are left as they are.
func (s *Service) ModifySelfservicePermissions(ctx context.Context, id string, c catalog.SelfServicePermissions) error {
	return s.modifyRegistration(id, "selfservice", func(reg *catalog.Registration) error {
		set := func(dst *catalog.Setting, v catalog.Setting) {
			if v != "" {
				*dst = v
			}
		}
		p := &reg.SelfService
		set(&p.RestartWorkspace, c.RestartWorkspace)
		set(&p.IncreaseVolumeSize, c.IncreaseVolumeSize)
		set(&p.ChangeComputeType, c.ChangeComputeType)
		set(&p.SwitchRunningMode, c.SwitchRunningMode)
		set(&p.RebuildWorkspace, c.RebuildWorkspace)
		return nil
	})
}

// ModifyClientProperties sets a directory's client properties; unset entries are left.
func (s *Service) ModifyClientProperties(ctx context.Context, id string, c catalog.ClientProperties) error {
	if err := checkDirectoryResource(id); err != nil {
		return err
	}
	return s.modifyRegistration(id, "client", func(reg *catalog.Registration) error {
		if c.ReconnectEnabled != "" {
			reg.Client.ReconnectEnabled = c.ReconnectEnabled
		}
		if c.LogUploadEnabled != "" {
			reg.Client.LogUploadEnabled = c.LogUploadEnabled
		}
		return nil
	})
}

// checkDirectoryResource checks a ResourceId that must name a directory (the model
// takes any non-empty string).
func checkDirectoryResource(id string) error {
	if err := catalog.CheckID(catalog.KindDirectory, id); err != nil {
		return catalog.Errorf(catalog.InvalidParameterValues, "ResourceId: client properties belong to directories: %v", err)
	}
	return nil
}

// ClientPropertiesResult is one directory's client properties.
type ClientPropertiesResult struct {
	ResourceID string
	Properties catalog.ClientProperties
}

// DescribeClientProperties reads the client properties of registered directories.
func (s *Service) DescribeClientProperties(ctx context.Context, resourceIDs []string) ([]ClientPropertiesResult, error) {
	if len(resourceIDs) == 0 || len(resourceIDs) > BatchLimit {
		return nil, catalog.Errorf(catalog.InvalidParameterValues, "ResourceIds must list 1 to %d directories", BatchLimit)
	}
	for _, id := range resourceIDs {
		if err := checkDirectoryResource(id); err != nil {
			return nil, err
		}
	}
	var out []ClientPropertiesResult
	err := s.store.View(func(tx store.Tx) error {
		for _, id := range resourceIDs {
			rec, err := getRegistered(tx, id)
			if err != nil {
				return err
			}
			out = append(out, ClientPropertiesResult{ResourceID: id, Properties: rec.Registration.Client})
		}
		return nil
	})
	return out, err
}

// --- IP access control groups ---

// IPRuleInput is a rule as the API gives it.
type IPRuleInput struct {
	Source      string
	Description string
}

func parseRules(in []IPRuleInput) ([]catalog.IPRule, error) {
	out := make([]catalog.IPRule, 0, len(in))
	for _, r := range in {
		if r.Source == "" {
			return nil, catalog.Errorf(catalog.InvalidParameterValues, "an IP rule needs ipRule (an IPv4 address or CIDR range)")
		}
		p, err := catalog.ParseIPRule(r.Source)
		if err != nil {
			return nil, catalog.Errorf(catalog.InvalidParameterValues, "%v", err)
		}
		out = append(out, catalog.IPRule{Source: catalog.IPSource{Prefix: p}, Description: r.Description})
	}
	return out, nil
}

func getIPGroup(tx store.Tx, id string) (catalog.IPGroup, error) {
	if err := catalog.CheckID(catalog.KindIPGroup, id); err != nil {
		return catalog.IPGroup{}, catalog.Errorf(catalog.InvalidParameterValues, "%v", err)
	}
	g, err := store.GetJSON[catalog.IPGroup](tx, store.IPGroups, id)
	if errors.Is(err, store.ErrNotFound) {
		return g, catalog.Errorf(catalog.ResourceNotFound, "IP access control group %s does not exist", id)
	}
	return g, err
}

// CreateIpGroup creates an IP access control group; the 101st is refused.
func (s *Service) CreateIpGroup(ctx context.Context, name, desc string, rules []IPRuleInput, tags []catalog.Tag) (string, error) {
	parsed, err := parseRules(rules)
	if err != nil {
		return "", err
	}
	g := catalog.IPGroup{ID: catalog.NewID(catalog.KindIPGroup), Name: name, Description: desc, Rules: parsed}
	if err := catalog.CheckIPGroup(g); err != nil {
		return "", err
	}
	if err := catalog.CheckTags(tags); err != nil {
		return "", err
	}
	err = s.catalogUpdate(func(tx store.Tx) error {
		all, err := store.ListJSON[catalog.IPGroup](tx, store.IPGroups)
		if err != nil {
			return err
		}
		if len(all) >= catalog.MaxIPGroups {
			return catalog.Errorf(catalog.ResourceLimitExceeded, "there are %d IP access control groups, the most an account can have", len(all))
		}
		for _, o := range all {
			if o.Name == name {
				return catalog.Errorf(catalog.ResourceAlreadyExists, "IP access control group %s is already named %q", o.ID, name)
			}
		}
		if len(tags) > 0 {
			if err := putTags(tx, g.ID, tags); err != nil {
				return err
			}
		}
		return store.PutJSON(tx, store.IPGroups, g.ID, g)
	})
	if err != nil {
		return "", err
	}
	s.log.Info("ip group created", "group", g.ID, "name", name, "rules", len(g.Rules))
	return g.ID, nil
}

// DeleteIpGroup deletes a group: "Before you can delete an IP access control group, you
// must disassociate it from any directories."
func (s *Service) DeleteIpGroup(ctx context.Context, id string) error {
	err := s.catalogUpdate(func(tx store.Tx) error {
		if _, err := getIPGroup(tx, id); err != nil {
			return err
		}
		dirs, err := store.ListJSON[catalog.DirectoryRecord](tx, store.Directories)
		if err != nil {
			return err
		}
		for _, d := range dirs {
			if d.Registration != nil && slices.Contains(d.Registration.IPGroupIDs, id) {
				return catalog.Errorf(catalog.ResourceAssociated, "IP access control group %s is associated with directory %s; disassociate it before deleting it", id, d.Definition.ID)
			}
		}
		if err := tx.Delete(store.Tags, id); err != nil {
			return err
		}
		return tx.Delete(store.IPGroups, id)
	})
	if err == nil {
		s.log.Info("ip group deleted", "group", id)
	}
	return err
}

// DescribeIpGroups lists groups, all or by id, in id order.
func (s *Service) DescribeIpGroups(ctx context.Context, groupIDs []string) ([]catalog.IPGroup, error) {
	for _, id := range groupIDs {
		if err := catalog.CheckID(catalog.KindIPGroup, id); err != nil {
			return nil, catalog.Errorf(catalog.InvalidParameterValues, "%v", err)
		}
	}
	var out []catalog.IPGroup
	err := s.store.View(func(tx store.Tx) error {
		all, err := store.ListJSON[catalog.IPGroup](tx, store.IPGroups)
		for _, g := range all {
			if len(groupIDs) == 0 || slices.Contains(groupIDs, g.ID) {
				out = append(out, g)
			}
		}
		return err
	})
	return out, err
}

// changeRules rewrites a group's rules with fn and checks the result.
func (s *Service) changeRules(id, op string, fn func(rules []catalog.IPRule) ([]catalog.IPRule, error)) error {
	var n int
	err := s.catalogUpdate(func(tx store.Tx) error {
		g, err := getIPGroup(tx, id)
		if err != nil {
			return err
		}
		if g.Rules, err = fn(slices.Clone(g.Rules)); err != nil {
			return err
		}
		if err := catalog.CheckIPRules(g.ID, g.Rules); err != nil {
			return err
		}
		n = len(g.Rules)
		return store.PutJSON(tx, store.IPGroups, id, g)
	})
	if err == nil {
		s.log.Info("ip group rules changed", "group", id, "op", op, "rules", n)
	}
	return err
}

// AuthorizeIpRules adds rules to a group; the 11th is refused.
func (s *Service) AuthorizeIpRules(ctx context.Context, id string, rules []IPRuleInput) error {
	add, err := parseRules(rules)
	if err != nil {
		return err
	}
	if len(add) == 0 {
		return catalog.Errorf(catalog.InvalidParameterValues, "UserRules lists no rule")
	}
	return s.changeRules(id, "authorize", func(have []catalog.IPRule) ([]catalog.IPRule, error) {
		for _, r := range add {
			if slices.ContainsFunc(have, func(h catalog.IPRule) bool { return h.Source == r.Source }) {
				return nil, catalog.Errorf(catalog.InvalidParameterValues, "IP rule %s is already in IP access control group %s", r.Source.Prefix, id)
			}
		}
		return append(have, add...), nil
	})
}

// RevokeIpRules removes rules from a group; a rule the group does not have is an error.
// Sessions from a range no longer allowed are disconnected by the connection manager.
func (s *Service) RevokeIpRules(ctx context.Context, id string, rules []string) error {
	if len(rules) == 0 {
		return catalog.Errorf(catalog.InvalidParameterValues, "UserRules lists no rule")
	}
	var drop []catalog.IPRule
	for _, r := range rules {
		p, err := parseRules([]IPRuleInput{{Source: r}})
		if err != nil {
			return err
		}
		drop = append(drop, p...)
	}
	return s.changeRules(id, "revoke", func(have []catalog.IPRule) ([]catalog.IPRule, error) {
		for _, d := range drop {
			i := slices.IndexFunc(have, func(h catalog.IPRule) bool { return h.Source == d.Source })
			if i < 0 {
				return nil, catalog.Errorf(catalog.InvalidParameterValues, "IP access control group %s has no rule %s", id, d.Source.Prefix)
			}
			have = slices.Delete(have, i, i+1)
		}
		return have, nil
	})
}

// UpdateRulesOfIpGroup replaces a group's rules.
func (s *Service) UpdateRulesOfIpGroup(ctx context.Context, id string, rules []IPRuleInput) error {
	repl, err := parseRules(rules)
	if err != nil {
		return err
	}
	return s.changeRules(id, "update", func([]catalog.IPRule) ([]catalog.IPRule, error) { return repl, nil })
}

// AssociateIpGroups associates groups with a registered directory; the 26th is refused.
// "If you associate an IP access control group with a directory, the default IP access
// control group is disassociated": with any group, only its rules allow.
func (s *Service) AssociateIpGroups(ctx context.Context, dirID string, groupIDs []string) error {
	if len(groupIDs) == 0 {
		return catalog.Errorf(catalog.InvalidParameterValues, "GroupIds lists no group")
	}
	err := s.catalogUpdate(func(tx store.Tx) error {
		rec, err := getRegistered(tx, dirID)
		if err != nil {
			return err
		}
		have := rec.Registration.IPGroupIDs
		for _, id := range groupIDs {
			if _, err := getIPGroup(tx, id); err != nil {
				return err
			}
			if slices.Contains(have, id) {
				continue // already associated: nothing to do, as AWS
			}
			have = append(have, id)
		}
		if len(have) > catalog.MaxIPGroupsPerDirectory {
			return catalog.Errorf(catalog.ResourceLimitExceeded, "directory %s would have %d IP access control groups; a directory can have at most %d",
				dirID, len(have), catalog.MaxIPGroupsPerDirectory)
		}
		rec.Registration.IPGroupIDs, rec.Updated = have, s.now()
		return store.PutJSON(tx, store.Directories, dirID, rec)
	})
	if err == nil {
		s.log.Info("ip groups associated", "directory", dirID, "groups", strings.Join(groupIDs, ","))
	}
	return err
}

// DisassociateIpGroups removes groups from a directory; one it does not have is an error.
func (s *Service) DisassociateIpGroups(ctx context.Context, dirID string, groupIDs []string) error {
	if len(groupIDs) == 0 {
		return catalog.Errorf(catalog.InvalidParameterValues, "GroupIds lists no group")
	}
	err := s.catalogUpdate(func(tx store.Tx) error {
		rec, err := getRegistered(tx, dirID)
		if err != nil {
			return err
		}
		have := slices.Clone(rec.Registration.IPGroupIDs)
		for _, id := range groupIDs {
			if err := catalog.CheckID(catalog.KindIPGroup, id); err != nil {
				return catalog.Errorf(catalog.InvalidParameterValues, "%v", err)
			}
			i := slices.Index(have, id)
			if i < 0 {
				return catalog.Errorf(catalog.ResourceNotFound, "IP access control group %s is not associated with directory %s", id, dirID)
			}
			have = slices.Delete(have, i, i+1)
		}
		rec.Registration.IPGroupIDs, rec.Updated = have, s.now()
		return store.PutJSON(tx, store.Directories, dirID, rec)
	})
	if err == nil {
		s.log.Info("ip groups disassociated", "directory", dirID, "groups", strings.Join(groupIDs, ","))
	}
	return err
}

// --- Tags ---

// checkTagResource checks that a resource exists and takes tags.
func checkTagResource(tx store.Tx, id string) error {
	k, ok := catalog.KindOf(id)
	if ok && !slices.Contains(catalog.TagKinds, k) {
		ok = false
	}
	if !ok {
		return catalog.Errorf(catalog.InvalidParameterValues, "ResourceId %q: tags go on WorkSpaces (ws-), registered directories (d-), bundles (wsb-), images (wsi-) and IP access control groups (wsipg-)", id)
	}
	if err := catalog.CheckID(k, id); err != nil {
		return catalog.Errorf(catalog.InvalidParameterValues, "ResourceId: %v", err)
	}
	missing := catalog.Errorf(catalog.ResourceNotFound, "%s %s does not exist", k.Name, id)
	switch k.Prefix {
	case catalog.KindDirectory.Prefix:
		_, err := getRegistered(tx, id)
		return err
	case catalog.KindBundle.Prefix:
		b, err := store.GetJSON[catalog.Bundle](tx, store.Bundles, id)
		if errors.Is(err, store.ErrNotFound) || err == nil && b.DeleteQueued {
			return missing
		}
		return err
	}
	bucket := map[string]string{catalog.KindWorkspace.Prefix: store.Workspaces, catalog.KindImage.Prefix: store.Images, catalog.KindIPGroup.Prefix: store.IPGroups}[k.Prefix]
	if _, err := tx.Get(bucket, id); errors.Is(err, store.ErrNotFound) {
		return missing
	} else if err != nil {
		return err
	}
	return nil
}

func getTags(tx store.Tx, id string) ([]catalog.Tag, error) {
	t, err := store.GetJSON[[]catalog.Tag](tx, store.Tags, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	return t, err
}

// putTags merges tags into a resource's (inside a catalog transaction).
func putTags(tx store.Tx, id string, add []catalog.Tag) error {
	have, err := getTags(tx, id)
	if err != nil {
		return err
	}
	all, err := catalog.MergeTags(id, have, add)
	if err != nil {
		return err
	}
	return store.PutJSON(tx, store.Tags, id, all)
}

// CreateTags adds or changes tags on a resource; at most 50 per resource.
func (s *Service) CreateTags(ctx context.Context, id string, tags []catalog.Tag) error {
	if len(tags) == 0 {
		return catalog.Errorf(catalog.InvalidParameterValues, "Tags lists no tag")
	}
	err := s.catalogUpdate(func(tx store.Tx) error {
		if err := checkTagResource(tx, id); err != nil {
			return err
		}
		return putTags(tx, id, tags)
	})
	if err == nil {
		s.log.Info("tags created", "resource", id, "tags", len(tags))
	}
	return err
}

// DeleteTags removes tags by key.
func (s *Service) DeleteTags(ctx context.Context, id string, keys []string) error {
	if len(keys) == 0 {
		return catalog.Errorf(catalog.InvalidParameterValues, "TagKeys lists no key")
	}
	err := s.catalogUpdate(func(tx store.Tx) error {
		if err := checkTagResource(tx, id); err != nil {
			return err
		}
		have, err := getTags(tx, id)
		if err != nil {
			return err
		}
		left, err := catalog.RemoveTags(id, have, keys)
		if err != nil {
			return err
		}
		if len(left) == 0 {
			return tx.Delete(store.Tags, id)
		}
		return store.PutJSON(tx, store.Tags, id, left)
	})
	if err == nil {
		s.log.Info("tags deleted", "resource", id, "keys", len(keys))
	}
	return err
}

// DescribeTags lists a resource's tags.
func (s *Service) DescribeTags(ctx context.Context, id string) ([]catalog.Tag, error) {
	var out []catalog.Tag
	err := s.store.View(func(tx store.Tx) error {
		if err := checkTagResource(tx, id); err != nil {
			return err
		}
		var err error
		out, err = getTags(tx, id)
		return err
	})
	return out, err
}

// --- Bundles ---

// BundleRequest is CreateWorkspaceBundle's input.
type BundleRequest struct {
	Name, Description string
	ImageID           string
	ComputeType       catalog.ComputeType
	RootGiB, UserGiB  int // RootGiB 0: 80, or 100 for Graphics types
	Tags              []catalog.Tag
}

// ParseCapacity reads a storage capacity (AWS's string of GiB).
func ParseCapacity(member, v string) (int, error) {
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n <= 0 {
		return 0, catalog.Errorf(catalog.InvalidParameterValues, "%s %q is not a size in GB (a whole number)", member, v)
	}
	return n, nil
}

// CreateWorkspaceBundle creates a custom bundle from an image on this host.
func (s *Service) CreateWorkspaceBundle(ctx context.Context, r BundleRequest) (catalog.Bundle, error) {
	if !r.ComputeType.Known() {
		return catalog.Bundle{}, catalog.Errorf(catalog.InvalidParameterValues, "ComputeType %s is not one of %v", r.ComputeType, catalog.KnownComputeTypes)
	}
	if _, ok := s.cfg.ComputeTypes[r.ComputeType]; !ok {
		return catalog.Bundle{}, catalog.Errorf(catalog.ResourceUnavailable, "compute type %s has no hardware on this host (hostd.computeTypes)", r.ComputeType)
	}
	if r.RootGiB == 0 {
		r.RootGiB = 80
		if r.ComputeType.GPU() {
			r.RootGiB = 100
		}
	}
	if err := catalog.ValidateVolumes(r.ComputeType, r.RootGiB, r.UserGiB); err != nil {
		return catalog.Bundle{}, err
	}
	if err := catalog.CheckTags(r.Tags); err != nil {
		return catalog.Bundle{}, err
	}
	now := s.now()
	b := catalog.Bundle{ID: catalog.NewID(catalog.KindBundle), Name: r.Name, Description: r.Description, ImageID: r.ImageID,
		ComputeType: r.ComputeType, Protocol: catalog.PCoIP, RootGiB: r.RootGiB, UserGiB: r.UserGiB, Created: now, Updated: now}
	err := s.catalogUpdate(func(tx store.Tx) error {
		img, err := availableImage(tx, r.ImageID)
		if err != nil {
			return err
		}
		if err := catalog.ValidateProtocol(b.Protocol, img.OS); err != nil {
			return err
		}
		all, err := store.ListJSON[catalog.Bundle](tx, store.Bundles)
		if err != nil {
			return err
		}
		for _, o := range all {
			if o.Name == r.Name && !o.DeleteQueued {
				return catalog.Errorf(catalog.ResourceAlreadyExists, "bundle %s is already named %q", o.ID, r.Name)
			}
		}
		if len(r.Tags) > 0 {
			if err := putTags(tx, b.ID, r.Tags); err != nil {
				return err
			}
		}
		return store.PutJSON(tx, store.Bundles, b.ID, b)
	})
	if err != nil {
		return catalog.Bundle{}, err
	}
	s.log.Info("bundle created", "bundle", b.ID, "name", b.Name, "image", b.ImageID, "computeType", string(b.ComputeType))
	return b, nil
}

func getBundle(tx store.Tx, id string) (catalog.Bundle, error) {
	if err := catalog.CheckID(catalog.KindBundle, id); err != nil {
		return catalog.Bundle{}, catalog.Errorf(catalog.InvalidParameterValues, "BundleId: %v", err)
	}
	b, err := store.GetJSON[catalog.Bundle](tx, store.Bundles, id)
	if errors.Is(err, store.ErrNotFound) || err == nil && b.DeleteQueued {
		return b, catalog.Errorf(catalog.ResourceNotFound, "bundle %s does not exist", id)
	}
	return b, err
}

// UpdateWorkspaceBundle points a bundle at another image. "Existing WorkSpaces aren't
// automatically updated": each keeps the image its root volume was made from.
func (s *Service) UpdateWorkspaceBundle(ctx context.Context, bundleID, imageID string) error {
	if bundleID == "" || imageID == "" {
		return catalog.Errorf(catalog.InvalidParameterValues, "UpdateWorkspaceBundle needs BundleId and ImageId")
	}
	err := s.catalogUpdate(func(tx store.Tx) error {
		b, err := getBundle(tx, bundleID)
		if err != nil {
			return err
		}
		img, err := availableImage(tx, imageID)
		if err != nil {
			return err
		}
		if err := catalog.ValidateProtocol(b.Protocol, img.OS); err != nil {
			return err
		}
		b.ImageID, b.Updated = imageID, s.now()
		return store.PutJSON(tx, store.Bundles, bundleID, b)
	})
	if err == nil {
		s.log.Info("bundle updated", "bundle", bundleID, "image", imageID)
	}
	return err
}

// DeleteWorkspaceBundle deletes a bundle. One that WorkSpaces still use goes to the delete
// queue (queued is true): it is no longer described or launched from, and goes when the
// last of them is terminated (PurgeBundles).
func (s *Service) DeleteWorkspaceBundle(ctx context.Context, id string) (queued bool, err error) {
	err = s.catalogUpdate(func(tx store.Tx) error {
		b, err := getBundle(tx, id)
		if err != nil {
			return err
		}
		ws, err := liveWorkspaces(tx, func(w workspace.Workspace) bool { return w.BundleID == id })
		if err != nil {
			return err
		}
		if err := tx.Delete(store.Tags, id); err != nil {
			return err
		}
		if queued = len(ws) > 0; queued {
			b.DeleteQueued, b.Updated = true, s.now()
			return store.PutJSON(tx, store.Bundles, id, b)
		}
		return tx.Delete(store.Bundles, id)
	})
	if err == nil {
		s.log.Info("bundle deleted", "bundle", id, "queued", queued)
	}
	return queued, err
}

// PurgeBundles deletes the queued bundles no WorkSpace uses any more.
func (s *Service) PurgeBundles(ctx context.Context) error {
	var gone []string
	var due bool
	if err := s.store.View(func(tx store.Tx) error {
		all, err := store.ListJSON[catalog.Bundle](tx, store.Bundles)
		due = slices.ContainsFunc(all, func(b catalog.Bundle) bool { return b.DeleteQueued })
		return err
	}); err != nil || !due {
		return err
	}
	err := s.catalogUpdate(func(tx store.Tx) error {
		gone = nil
		all, err := store.ListJSON[catalog.Bundle](tx, store.Bundles)
		if err != nil {
			return err
		}
		used := map[string]bool{}
		ws, err := liveWorkspaces(tx, func(workspace.Workspace) bool { return true })
		for _, w := range ws {
			used[w.BundleID] = true
		}
		for _, b := range all {
			if b.DeleteQueued && !used[b.ID] {
				if err := tx.Delete(store.Bundles, b.ID); err != nil {
					return err
				}
				gone = append(gone, b.ID)
			}
		}
		return err
	})
	for _, id := range gone {
		s.log.Info("queued bundle deleted: no WorkSpace uses it any more", "bundle", id)
	}
	return err
}

// DescribeWorkspaceBundles lists bundles, all or by id, in id order (queued ones not).
func (s *Service) DescribeWorkspaceBundles(ctx context.Context, bundleIDs []string) ([]catalog.Bundle, error) {
	if len(bundleIDs) > BatchLimit {
		return nil, catalog.Errorf(catalog.InvalidParameterValues, "BundleIds lists %d; at most %d", len(bundleIDs), BatchLimit)
	}
	var out []catalog.Bundle
	err := s.store.View(func(tx store.Tx) error {
		all, err := store.ListJSON[catalog.Bundle](tx, store.Bundles)
		for _, b := range all {
			if !b.DeleteQueued && (len(bundleIDs) == 0 || slices.Contains(bundleIDs, b.ID)) {
				out = append(out, b)
			}
		}
		return err
	})
	return out, err
}
