// Package service implements the WorkSpaces operations: it validates a request, writes the
// desired state to the store, and wakes the controller, which converges libvirt to it. No
// operation touches libvirt itself, so a crash after the write loses nothing: the next
// reconcile finishes the work.
package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"deskhost/hostd/keystore"
	"deskhost/hostd/store"
	"deskhost/hostd/workspace"
	"deskhost/internal/addrpool"
	"deskhost/internal/catalog"
)

// Config is what the service takes from the host config: what belongs to the machine.
// The catalog (directories, IP groups, bundles, images, tags) is in the store.
type Config struct {
	ComputeTypes map[catalog.ComputeType]catalog.Hardware
	// WorkspaceQuota caps live WorkSpaces on this host.
	WorkspaceQuota int
	// GPUQuota caps live WorkSpaces of each Graphics compute type; a type not in it has the
	// guide's default of 0 (guide-catalog §23: none until the host has GPUs).
	GPUQuota map[catalog.ComputeType]int
	// ManagementRange, if set, is the range netcfg chose for the WorkSpaces' management
	// network (DescribeAccount's DedicatedTenancyManagementCidrRange).
	ManagementRange func() (netip.Prefix, bool)
	// PrimaryPool, if set and ok, is the range WorkSpaces' primary addresses are allocated
	// from (addresses.go); netcfg serves them by DHCP on the primary network.
	PrimaryPool func() (addrpool.Range, bool)
	// HostNetworks lists the networks this host is on; ListAvailableManagementCidrRanges
	// offers no range that overlaps one. Nil: the host's interface addresses.
	HostNetworks func() ([]netip.Prefix, error)
	// Host is this host's id. New WorkSpaces are placed on the fleet's hosts (hostd/fleet);
	// on a store where no host has registered yet (tests of the service alone) they are
	// this host's.
	Host string
	// ImageDir is where hostd keeps the images it makes (CreateWorkspaceImage,
	// CopyWorkspaceImage, ImportWorkspaceImage), one directory per image id. Empty: it
	// makes none.
	ImageDir string
	// Keys is the key store's master key (hostd/keystore); nil: volume encryption is
	// refused. KeyWorkspaceLimit caps the WorkSpaces one key encrypts (0: the guide's 500).
	Keys              *keystore.Master
	KeyWorkspaceLimit int
	// Region is the API's region, in the ARNs of keys.
	Region string
}

// Waker is told when a WorkSpace's desired state changed.
type Waker interface{ Wake(id string) }

// Service is the WorkSpaces operations over a store.
type Service struct {
	store store.Store
	cfg   Config
	waker Waker
	now   func() time.Time
	log   *slog.Logger
	// mu serialises read-check-write sequences (one WorkSpace per user, quotas); the store
	// transaction alone would not stop two creates for one user from interleaving.
	mu sync.Mutex

	// reportedAt is when the connection manager last reported its sessions; zero until
	// it first does (in memory: the next report comes within ConnectionReportInterval).
	connMu     sync.Mutex
	reportedAt time.Time
	// started is when this Service was made: AutoStop vouches for the sessions the store
	// holds from before a restart until the connection manager has had time to report.
	started time.Time

	// catalogChanged is closed (and replaced) after every catalog write this Service
	// commits: long polls of the catalog revision wake at once. Writes by others (another
	// host on a shared store) are seen by polling the revision.
	catMu          sync.Mutex
	catalogChanged chan struct{}

	tagger Tagger // connect tags from other hosts' gateways (hosts.go)
}

// New returns a Service. now may be nil (time.Now).
func New(st store.Store, cfg Config, waker Waker, now func() time.Time, log *slog.Logger) *Service {
	if now == nil {
		now = time.Now
	}
	return &Service{store: st, cfg: cfg, waker: waker, now: now, log: log, started: now(), catalogChanged: make(chan struct{})}
}

// SetWaker sets who is told of changed WorkSpaces (the controller, made after the
// Service); it must be called before the Service serves.
func (s *Service) SetWaker(w Waker) { s.waker = w }

// BatchLimit is AWS's limit on items in one batch request.
const BatchLimit = 25

// Failure is one refused item of a batch request.
type Failure struct {
	Index       int    // position in the request
	WorkspaceID string // for change requests
	Code        string
	Message     string
}

func failure(i int, id string, err error) Failure {
	var e *catalog.Error
	if !errors.As(err, &e) {
		// Not a refusal but a fault (the store failed): the detail is for the log.
		return Failure{Index: i, WorkspaceID: id, Code: string(catalog.InternalFailure), Message: "internal error; see hostd's log"}
	}
	return Failure{Index: i, WorkspaceID: id, Code: string(e.Type), Message: e.Message}
}

// CreateRequest is one WorkSpace to launch (AWS's WorkspaceRequest). Zero values take the
// bundle's defaults.
type CreateRequest struct {
	DirectoryID                 string
	UserName                    string
	BundleID                    string
	RunningMode                 workspace.RunningMode
	AutoStopTimeoutMinutes      int
	RootVolumeSizeGib           int
	UserVolumeSizeGib           int
	ComputeTypeName             string
	Protocols                   []string
	RootVolumeEncryptionEnabled bool
	UserVolumeEncryptionEnabled bool
	VolumeEncryptionKey         string
	Tags                        []catalog.Tag
}

// CreateWorkspaces launches a batch; each item is accepted (PENDING) or refused on its own.
func (s *Service) CreateWorkspaces(ctx context.Context, reqs []CreateRequest) ([]workspace.Workspace, []Failure, error) {
	if len(reqs) == 0 || len(reqs) > BatchLimit {
		return nil, nil, catalog.Errorf(catalog.InvalidParameterValues, "Workspaces must list 1 to %d WorkSpaces, not %d", BatchLimit, len(reqs))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var pending []workspace.Workspace
	var failed []Failure
	for i, r := range reqs {
		w, err := s.create(r)
		if err != nil {
			if !errors.As(err, new(*catalog.Error)) {
				s.log.Error("create workspace", "item", i, "err", err)
			}
			failed = append(failed, failure(i, "", err))
			continue
		}
		pending = append(pending, w)
		s.log.Info("workspace created", "workspace", w.ID, "directory", w.DirectoryID, "user", w.UserName, "bundle", w.BundleID)
	}
	for _, w := range pending {
		s.waker.Wake(w.ID)
	}
	return pending, failed, nil
}

func (s *Service) create(r CreateRequest) (workspace.Workspace, error) {
	if err := catalog.CheckID(catalog.KindDirectory, r.DirectoryID); err != nil {
		return workspace.Workspace{}, catalog.Errorf(catalog.InvalidParameterValues, "DirectoryId: %v", err)
	}
	if err := catalog.CheckID(catalog.KindBundle, r.BundleID); err != nil {
		return workspace.Workspace{}, catalog.Errorf(catalog.InvalidParameterValues, "BundleId: %v", err)
	}
	if err := catalog.CheckTags(r.Tags); err != nil {
		return workspace.Workspace{}, err
	}
	if len(r.Tags) > catalog.MaxTagsPerResource {
		return workspace.Workspace{}, catalog.Errorf(catalog.ResourceLimitExceeded, "%d tags; a resource can have at most %d", len(r.Tags), catalog.MaxTagsPerResource)
	}
	now := s.now()
	var w workspace.Workspace
	// The catalog is read in the same transaction as the WorkSpace is written: a
	// directory deregistered or a bundle deleted meanwhile cannot slip through.
	err := s.store.Update(func(tx store.Tx) error {
		rec, err := store.GetJSON[catalog.DirectoryRecord](tx, store.Directories, r.DirectoryID)
		if errors.Is(err, store.ErrNotFound) {
			return catalog.Errorf(catalog.ResourceNotFound, "directory %s does not exist", r.DirectoryID)
		}
		if err != nil {
			return err
		}
		if rec.Registration == nil {
			return catalog.Errorf(catalog.InvalidResourceState, "directory %s is not registered with WorkSpaces; register it first (RegisterWorkspaceDirectory)", r.DirectoryID)
		}
		dir := rec.Definition
		b, err := store.GetJSON[catalog.Bundle](tx, store.Bundles, r.BundleID)
		if errors.Is(err, store.ErrNotFound) || err == nil && b.DeleteQueued {
			return catalog.Errorf(catalog.ResourceNotFound, "bundle %s does not exist", r.BundleID)
		}
		if err != nil {
			return err
		}
		img, err := store.GetJSON[catalog.Image](tx, store.Images, b.ImageID)
		if errors.Is(err, store.ErrNotFound) {
			return catalog.Errorf(catalog.ResourceUnavailable, "bundle %s names image %s, which this host does not have", b.ID, b.ImageID)
		}
		if err != nil {
			return err
		}
		if w, err = s.newWorkspace(r, dir, b, img, now); err != nil {
			return err
		}
		if w.Encryption, err = s.encryption(tx, r, w.ID); err != nil {
			return err
		}
		all, err := store.ListJSON[workspace.Workspace](tx, store.Workspaces)
		if err != nil {
			return err
		}
		live, sameCompute := 0, 0
		for _, o := range all {
			if !o.Live() {
				continue
			}
			live++
			if o.Properties.ComputeTypeName == w.Properties.ComputeTypeName {
				sameCompute++
			}
			if o.DirectoryID == w.DirectoryID && strings.EqualFold(o.UserName, w.UserName) {
				return catalog.Errorf(catalog.ResourceAlreadyExists,
					"user %q in directory %s already has WorkSpace %s (%s); each user can have one", w.UserName, w.DirectoryID, o.ID, o.State)
			}
		}
		if live >= s.cfg.WorkspaceQuota {
			return catalog.Errorf(catalog.ResourceLimitExceeded, "this host's quota of %d WorkSpaces is used", s.cfg.WorkspaceQuota)
		}
		if ct := catalog.ComputeType(w.Properties.ComputeTypeName); ct.GPU() && sameCompute >= s.cfg.GPUQuota[ct] {
			return catalog.Errorf(catalog.ResourceLimitExceeded, "this host's quota of %d %s WorkSpaces is used (the guide's default is 0 until the host has GPUs; hostd.quotas in the host config)",
				s.cfg.GPUQuota[ct], ct)
		}
		if w.Host, err = s.place(tx, all, b.ComputeType); err != nil {
			return err
		}
		if w.IPAddress, err = s.allocateAddress(tx, w.ID); err != nil {
			return err
		}
		if len(r.Tags) > 0 {
			// Tags are catalog records (DescribeTags reads them), kept apart from the WorkSpace.
			if err := store.PutJSON(tx, store.Tags, w.ID, r.Tags); err != nil {
				return err
			}
			if _, err := store.BumpCatalogRevision(tx); err != nil {
				return err
			}
		}
		return store.PutJSON(tx, store.Workspaces, w.ID, w)
	})
	if err != nil {
		return workspace.Workspace{}, err
	}
	if len(r.Tags) > 0 {
		s.catalogWritten()
	}
	return w, nil
}

// newWorkspace applies a launch request's rules against its directory, bundle and image.
func (s *Service) newWorkspace(r CreateRequest, dir catalog.Directory, b catalog.Bundle, img catalog.Image, now time.Time) (workspace.Workspace, error) {
	if err := catalog.ValidateUserName(r.UserName, img.OS); err != nil {
		return workspace.Workspace{}, err
	}
	user, ok := dir.FindUser(r.UserName)
	if !ok {
		return workspace.Workspace{}, catalog.Errorf(catalog.ResourceNotFound, "user %q does not exist in directory %s", r.UserName, dir.ID)
	}
	if user.Email == "" {
		// "you cannot select a user that does not have an email address"
		return workspace.Workspace{}, catalog.Errorf(catalog.InvalidParameterValues, "user %q has no email address; a WorkSpace needs one for its invitation", user.UserName)
	}
	props := workspace.Properties{
		RunningMode:            r.RunningMode,
		AutoStopTimeoutMinutes: r.AutoStopTimeoutMinutes,
		RootVolumeSizeGib:      r.RootVolumeSizeGib,
		UserVolumeSizeGib:      r.UserVolumeSizeGib,
		ComputeTypeName:        string(b.ComputeType),
		Protocol:               string(b.Protocol),
	}
	if props.RunningMode == "" {
		props.RunningMode = workspace.AlwaysOn // the guide's default
	}
	if props.RunningMode == workspace.AutoStop && props.AutoStopTimeoutMinutes == 0 {
		props.AutoStopTimeoutMinutes = workspace.DefaultAutoStopMinutes
	}
	if err := workspace.ValidateRunningMode(props.RunningMode, props.AutoStopTimeoutMinutes); err != nil {
		return workspace.Workspace{}, err
	}
	if props.RootVolumeSizeGib == 0 {
		props.RootVolumeSizeGib = b.RootGiB
	}
	if props.UserVolumeSizeGib == 0 {
		props.UserVolumeSizeGib = b.UserGiB
	}
	if err := catalog.ValidateVolumes(b.ComputeType, props.RootVolumeSizeGib, props.UserVolumeSizeGib); err != nil {
		return workspace.Workspace{}, err
	}
	if r.ComputeTypeName != "" && r.ComputeTypeName != string(b.ComputeType) {
		return workspace.Workspace{}, catalog.Errorf(catalog.InvalidParameterValues,
			"ComputeTypeName %s differs from bundle %s's %s; choose a bundle with that compute type", r.ComputeTypeName, b.ID, b.ComputeType)
	}
	for _, p := range r.Protocols {
		if err := catalog.ValidateProtocol(catalog.Protocol(p), img.OS); err != nil {
			return workspace.Workspace{}, err
		}
		if p != string(b.Protocol) {
			return workspace.Workspace{}, catalog.Errorf(catalog.InvalidParameterValues, "protocol %s differs from bundle %s's %s", p, b.ID, b.Protocol)
		}
	}
	w := workspace.Workspace{
		ID:          catalog.NewID(catalog.KindWorkspace),
		DirectoryID: dir.ID,
		UserName:    user.UserName,
		BundleID:    b.ID,
		ImageID:     img.ID,
		Properties:  props,
		Created:     now,
	}
	w.ComputerName = computerName(w.ID)
	w.SetState(workspace.Pending, now)
	return w, nil
}

// computerName is the guest host name: WorkSpaces name machines after the WorkSpace.
func computerName(id string) string { return strings.ToUpper(strings.ReplaceAll(id, "-", "")) }

// Get returns one WorkSpace record.
func (s *Service) Get(id string) (workspace.Workspace, error) {
	var w workspace.Workspace
	err := s.store.View(func(tx store.Tx) error {
		var err error
		w, err = store.GetJSON[workspace.Workspace](tx, store.Workspaces, id)
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return w, catalog.Errorf(catalog.ResourceNotFound, "WorkSpace %s does not exist", id)
	}
	return w, err
}

// change runs one state-changing operation on one WorkSpace inside a store transaction:
// fn checks the rules and mutates the record; the result is written before anyone acts.
func (s *Service) change(id string, op workspace.Op, fn func(w *workspace.Workspace, now time.Time) error) error {
	return s.changeTx(id, op, func(_ store.Tx, w *workspace.Workspace, now time.Time) error { return fn(w, now) })
}

// changeTx is change with fn given the transaction, to read other records in it.
func (s *Service) changeTx(id string, op workspace.Op, fn func(tx store.Tx, w *workspace.Workspace, now time.Time) error) error {
	if err := catalog.CheckID(catalog.KindWorkspace, id); err != nil {
		return catalog.Errorf(catalog.InvalidParameterValues, "WorkspaceId: %v", err)
	}
	changed := false
	err := s.store.Update(func(tx store.Tx) error {
		w, err := store.GetJSON[workspace.Workspace](tx, store.Workspaces, id)
		if errors.Is(err, store.ErrNotFound) {
			return catalog.Errorf(catalog.ResourceNotFound, "WorkSpace %s does not exist", id)
		}
		if err != nil {
			return err
		}
		before := w
		if err := fn(tx, &w, s.now()); err != nil {
			return err
		}
		changed = w.State != before.State || w.Properties != before.Properties
		if !changed {
			return nil
		}
		return store.PutJSON(tx, store.Workspaces, id, w)
	})
	if err != nil {
		return err
	}
	if changed {
		s.log.Info("workspace operation accepted", "workspace", id, "op", string(op))
		s.waker.Wake(id)
	}
	return nil
}

func (s *Service) batch(ids []string, op workspace.Op, fn func(w *workspace.Workspace, now time.Time) error) ([]Failure, error) {
	return s.batchTx(ids, op, func(_ store.Tx, w *workspace.Workspace, now time.Time) error { return fn(w, now) })
}

func (s *Service) batchTx(ids []string, op workspace.Op, fn func(tx store.Tx, w *workspace.Workspace, now time.Time) error) ([]Failure, error) {
	if len(ids) == 0 || len(ids) > BatchLimit {
		return nil, catalog.Errorf(catalog.InvalidParameterValues, "%s takes 1 to %d WorkSpaces, not %d", op, BatchLimit, len(ids))
	}
	var failed []Failure
	for i, id := range ids {
		if err := s.changeTx(id, op, fn); err != nil {
			if !errors.As(err, new(*catalog.Error)) {
				s.log.Error("workspace operation", "op", string(op), "workspace", id, "err", err)
			}
			failed = append(failed, failure(i, id, err))
		}
	}
	return failed, nil
}

// RebootWorkspaces restarts each WorkSpace: graceful shutdown, memory scrub, boot.
func (s *Service) RebootWorkspaces(ctx context.Context, ids []string) ([]Failure, error) {
	return s.batchTx(ids, workspace.OpReboot, func(tx store.Tx, w *workspace.Workspace, now time.Time) error {
		if err := w.CheckOp(workspace.OpReboot); err != nil {
			return err
		}
		if err := checkKey(tx, w, workspace.OpReboot); err != nil {
			return err
		}
		w.SetState(workspace.Rebooting, now)
		return nil
	})
}

// StopWorkspaces stops AutoStop WorkSpaces.
func (s *Service) StopWorkspaces(ctx context.Context, ids []string) ([]Failure, error) {
	return s.batch(ids, workspace.OpStop, func(w *workspace.Workspace, now time.Time) error {
		if w.Properties.RunningMode != workspace.AutoStop {
			return catalog.Errorf(catalog.OperationNotSupported, "WorkSpace %s runs %s; only AUTO_STOP WorkSpaces can be stopped", w.ID, w.Properties.RunningMode)
		}
		if err := w.CheckOp(workspace.OpStop); err != nil {
			return err
		}
		w.SetState(workspace.Stopping, now)
		return nil
	})
}

// StartWorkspaces starts stopped AutoStop WorkSpaces.
func (s *Service) StartWorkspaces(ctx context.Context, ids []string) ([]Failure, error) {
	return s.batchTx(ids, workspace.OpStart, func(tx store.Tx, w *workspace.Workspace, now time.Time) error {
		if w.Properties.RunningMode != workspace.AutoStop {
			return catalog.Errorf(catalog.OperationNotSupported, "WorkSpace %s runs %s; only AUTO_STOP WorkSpaces can be started", w.ID, w.Properties.RunningMode)
		}
		if err := w.CheckOp(workspace.OpStart); err != nil {
			return err
		}
		if err := checkKey(tx, w, workspace.OpStart); err != nil {
			return err
		}
		w.SetState(workspace.Starting, now)
		return nil
	})
}

// TerminateWorkspaces removes WorkSpaces for good: VM destroyed, memory scrubbed, volumes
// deleted. Terminating a WorkSpace that is already TERMINATING is accepted and changes
// nothing.
func (s *Service) TerminateWorkspaces(ctx context.Context, ids []string) ([]Failure, error) {
	return s.batch(ids, workspace.OpTerminate, func(w *workspace.Workspace, now time.Time) error {
		if err := w.CheckOp(workspace.OpTerminate); err != nil {
			return err
		}
		w.SetState(workspace.Terminating, now)
		return nil
	})
}

// ModifyWorkspaceState moves a WorkSpace into or out of ADMIN_MAINTENANCE.
func (s *Service) ModifyWorkspaceState(ctx context.Context, id string, target workspace.State) error {
	if target != workspace.Available && target != workspace.AdminMaintenance {
		return catalog.Errorf(catalog.InvalidParameterValues, "WorkspaceState %q must be AVAILABLE or ADMIN_MAINTENANCE", target)
	}
	return s.change(id, workspace.OpModifyState, func(w *workspace.Workspace, now time.Time) error {
		if err := w.CheckOp(workspace.OpModifyState); err != nil {
			return err
		}
		w.SetState(target, now)
		return nil
	})
}

// ModifyWorkspaceProperties changes the running mode or the AutoStop time, the compute type
// or a volume's size (workspace.Workspace.Modify: the guide's rules). A STOPPED WorkSpace
// switched to ALWAYS_ON is started, since AlwaysOn WorkSpaces do not stop. A compute or
// volume change leaves the WorkSpace UPDATING until the controller has made it.
func (s *Service) ModifyWorkspaceProperties(ctx context.Context, id string, c workspace.PropertiesChange) error {
	return s.changeTx(id, workspace.OpModifyProperties, func(tx store.Tx, w *workspace.Workspace, now time.Time) error {
		if err := w.Modify(c, s.cfg.ComputeTypes, now); err != nil {
			return err
		}
		// An encrypted WorkSpace's key must open its volumes for what follows.
		switch {
		case w.State == workspace.Starting: // switched to ALWAYS_ON: it starts
			return checkKey(tx, w, workspace.OpStart)
		case w.State == workspace.Updating && w.Modification.Resource == workspace.ResourceComputeType:
			return checkKey(tx, w, workspace.OpModifyCompute)
		case w.State == workspace.Updating:
			return checkKey(tx, w, workspace.OpModifyVolumes)
		}
		return nil
	})
}

// DescribeFilter selects WorkSpaces; at most one of IDs, DirectoryID and BundleID is used,
// as AWS requires; UserName goes with DirectoryID.
type DescribeFilter struct {
	IDs         []string
	DirectoryID string
	UserName    string
	BundleID    string
	Limit       int    // 1–25; 0 means 25
	NextToken   string // an id to continue after
}

// DescribeWorkspaces lists WorkSpaces in id order, a page at a time.
func (s *Service) DescribeWorkspaces(ctx context.Context, f DescribeFilter) ([]workspace.Workspace, string, error) {
	set := 0
	for _, b := range []bool{len(f.IDs) > 0, f.DirectoryID != "", f.BundleID != ""} {
		if b {
			set++
		}
	}
	switch {
	case set > 1:
		return nil, "", catalog.Errorf(catalog.InvalidParameterValues, "give only one of WorkspaceIds, DirectoryId and BundleId")
	case f.UserName != "" && f.DirectoryID == "":
		return nil, "", catalog.Errorf(catalog.InvalidParameterValues, "UserName needs DirectoryId")
	case len(f.IDs) > BatchLimit:
		return nil, "", catalog.Errorf(catalog.InvalidParameterValues, "WorkspaceIds lists %d; at most %d", len(f.IDs), BatchLimit)
	case f.Limit < 0 || f.Limit > BatchLimit:
		return nil, "", catalog.Errorf(catalog.InvalidParameterValues, "Limit %d must be 1 to %d", f.Limit, BatchLimit)
	}
	for _, id := range f.IDs {
		if err := catalog.CheckID(catalog.KindWorkspace, id); err != nil {
			return nil, "", catalog.Errorf(catalog.InvalidParameterValues, "WorkspaceIds: %v", err)
		}
	}
	if f.NextToken != "" {
		if err := catalog.CheckID(catalog.KindWorkspace, f.NextToken); err != nil {
			return nil, "", catalog.Errorf(catalog.InvalidParameterValues, "NextToken %q is not one this host issued", f.NextToken)
		}
	}
	limit := f.Limit
	if limit == 0 {
		limit = BatchLimit
	}
	var all []workspace.Workspace
	if err := s.store.View(func(tx store.Tx) error {
		var err error
		all, err = store.ListJSON[workspace.Workspace](tx, store.Workspaces)
		return err
	}); err != nil {
		return nil, "", fmt.Errorf("describe workspaces: %w", err)
	}
	var out []workspace.Workspace
	for _, w := range all {
		switch {
		case f.NextToken != "" && w.ID <= f.NextToken:
		case len(f.IDs) > 0 && !slices.Contains(f.IDs, w.ID):
		case f.DirectoryID != "" && w.DirectoryID != f.DirectoryID:
		case f.UserName != "" && !strings.EqualFold(w.UserName, f.UserName):
		case f.BundleID != "" && w.BundleID != f.BundleID:
		default:
			if len(out) == limit {
				return out, out[len(out)-1].ID, nil
			}
			out = append(out, w)
		}
	}
	return out, "", nil
}

// Hardware returns the compute type's hardware on this host.
func (s *Service) Hardware(c catalog.ComputeType) (catalog.Hardware, bool) {
	hw, ok := s.cfg.ComputeTypes[c]
	return hw, ok
}

// ConnectionReportInterval is how often the connection manager reports its sessions even
// when none changed; a report older than ConnectionReportStale no longer vouches for a
// session (the connection states read UNKNOWN, and AutoStop counts the session as ended).
const (
	ConnectionReportInterval = 30 * time.Second
	ConnectionReportStale    = 4 * ConnectionReportInterval
)

// MaxConnectionReport bounds one report's list.
const MaxConnectionReport = 10000

// ReportConnections takes the connection manager's list of the WorkSpaces a user is
// streaming now: those are CONNECTED and every other DISCONNECTED. The whole list comes
// each time (on every change and every ConnectionReportInterval), so a lost or repeated
// report does no harm. Unknown ids are skipped (a WorkSpace may be gone since); records
// are written only where the state changed.
func (s *Service) ReportConnections(ctx context.Context, connected []string) error {
	if len(connected) > MaxConnectionReport {
		return catalog.Errorf(catalog.InvalidParameterValues, "a report lists at most %d WorkSpaces, not %d", MaxConnectionReport, len(connected))
	}
	want := make(map[string]bool, len(connected))
	for _, id := range connected {
		if err := catalog.CheckID(catalog.KindWorkspace, id); err != nil {
			return catalog.Errorf(catalog.InvalidParameterValues, "ConnectedWorkspaceIds: %v", err)
		}
		want[id] = true
	}
	now := s.now()
	var changed []string
	differs := func(w workspace.Workspace) bool { return (want[w.ID] && w.Live()) != w.Connection.Connected }
	// Most reports change nothing: look first, so that those cost no write transaction
	// (a bbolt commit syncs the file even when nothing was put).
	var stale bool
	err := s.store.View(func(tx store.Tx) error {
		all, err := store.ListJSON[workspace.Workspace](tx, store.Workspaces)
		stale = slices.ContainsFunc(all, differs)
		return err
	})
	if err == nil && stale {
		err = s.store.Update(func(tx store.Tx) error {
			changed = nil // fn runs again if another writer got there first
			all, err := store.ListJSON[workspace.Workspace](tx, store.Workspaces)
			if err != nil {
				return err
			}
			for _, w := range all {
				if !differs(w) {
					continue
				}
				on := !w.Connection.Connected
				w.Connection.Connected, w.Connection.Since = on, now
				if on {
					w.Connection.LastUserConnection = now
				}
				if err := store.PutJSON(tx, store.Workspaces, w.ID, w); err != nil {
					return err
				}
				changed = append(changed, w.ID)
			}
			return nil
		})
	}
	if err != nil {
		return fmt.Errorf("report connections: %w", err)
	}
	s.connMu.Lock()
	s.reportedAt = now
	s.connMu.Unlock()
	for _, id := range changed {
		s.log.Info("workspace connection", "workspace", id, "connected", want[id])
	}
	return nil
}

func (s *Service) lastReport() time.Time {
	s.connMu.Lock()
	defer s.connMu.Unlock()
	return s.reportedAt
}

// vouchedAt is the time from which AutoStop counts unconfirmed sessions as ended: the
// last report, or this Service's start if that is later.
func (s *Service) vouchedAt() time.Time {
	r := s.lastReport()
	if r.Before(s.started) {
		return s.started
	}
	return r
}

// Connection states, as AWS names them.
const (
	Connected    = "CONNECTED"
	Disconnected = "DISCONNECTED"
	Unknown      = "UNKNOWN"
)

// ConnectionStatus is one WorkSpace's answer to DescribeWorkspacesConnectionStatus.
type ConnectionStatus struct {
	WorkspaceID        string
	State              string    // Connected, Disconnected or Unknown
	CheckedAt          time.Time // the connection manager's last report; zero if none counts
	LastUserConnection time.Time
}

// DescribeWorkspacesConnectionStatus says whether users are streaming the WorkSpaces
// (ids, or all, a page at a time). A WorkSpace whose desktop is not running, or whose
// connection manager has not reported for ConnectionReportStale, is UNKNOWN.
func (s *Service) DescribeWorkspacesConnectionStatus(ctx context.Context, ids []string, nextToken string) ([]ConnectionStatus, string, error) {
	if len(ids) == 0 && ids != nil {
		return nil, "", catalog.Errorf(catalog.InvalidParameterValues, "WorkspaceIds lists no WorkSpace")
	}
	ws, next, err := s.DescribeWorkspaces(ctx, DescribeFilter{IDs: ids, NextToken: nextToken})
	if err != nil {
		return nil, "", err
	}
	reported := s.lastReport()
	fresh := s.now().Sub(reported) < ConnectionReportStale
	out := make([]ConnectionStatus, len(ws))
	for i, w := range ws {
		st := ConnectionStatus{WorkspaceID: w.ID, State: Unknown, LastUserConnection: w.Connection.LastUserConnection}
		if w.Running() && fresh {
			st.State, st.CheckedAt = Disconnected, reported
			if w.Connection.Connected {
				st.State = Connected
			}
		}
		out[i] = st
	}
	return out, next, nil
}

// AutoStop stops every AutoStop WorkSpace that has been idle for its AutoStop time
// (workspace.AutoStopDue), as StopWorkspaces would, and returns their ids.
func (s *Service) AutoStop(ctx context.Context) ([]string, error) {
	var all []workspace.Workspace
	if err := s.store.View(func(tx store.Tx) error {
		var err error
		all, err = store.ListJSON[workspace.Workspace](tx, store.Workspaces)
		return err
	}); err != nil {
		return nil, fmt.Errorf("autostop: %w", err)
	}
	var stopped []string
	for _, w := range all {
		if due, _ := w.AutoStopDue(s.now(), s.vouchedAt(), ConnectionReportStale); !due {
			continue
		}
		// Checked again inside the transaction: a session may have begun since.
		var since time.Time
		err := s.change(w.ID, workspace.OpStop, func(r *workspace.Workspace, now time.Time) error {
			due, idle := r.AutoStopDue(now, s.vouchedAt(), ConnectionReportStale)
			if !due {
				return nil
			}
			since = idle
			r.SetState(workspace.Stopping, now)
			return nil
		})
		if err != nil {
			return stopped, fmt.Errorf("autostop %s: %w", w.ID, err)
		}
		if !since.IsZero() {
			s.log.Info("autostop: stopping idle workspace", "workspace", w.ID, "idleSince", since, "autoStopMinutes", w.Properties.AutoStopTimeoutMinutes)
			stopped = append(stopped, w.ID)
		}
	}
	return stopped, nil
}

// RunAutoStop runs AutoStop (and PurgeBundles) every interval until ctx ends.
func (s *Service) RunAutoStop(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, err := s.AutoStop(ctx); err != nil {
				s.log.Error("autostop", "err", err)
			}
			if err := s.PurgeBundles(ctx); err != nil {
				s.log.Error("purge queued bundles", "err", err)
			}
		}
	}
}
