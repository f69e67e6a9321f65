package service

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"deskhost/hostd/fleet"
	"deskhost/hostd/store"
	"deskhost/hostd/workspace"
	"deskhost/internal/catalog"
)

// The fleet's hosts, as operations: hostd's own (Deskhost.*), since AWS has no notion of
// the machines WorkSpaces run on.

// place chooses the host of a new WorkSpace of compute type ct (fleet.Place), in the
// creating transaction: what it read guards the commit.
func (s *Service) place(tx store.Tx, all []workspace.Workspace, ct catalog.ComputeType) (string, error) {
	hosts, err := fleet.ListHosts(tx)
	if err != nil {
		return "", err
	}
	if len(hosts) == 0 {
		// No host registered: the service alone (tests), whose host is this one.
		if _, ok := s.cfg.ComputeTypes[ct]; !ok {
			return "", catalog.Errorf(catalog.ResourceUnavailable, "compute type %s has no hardware on this host", ct)
		}
		return s.cfg.Host, nil
	}
	h, err := fleet.PlaceTx(tx, hosts, all, ct)
	return h.ID, err
}

// DescribeHosts lists every host with its state, capacity and load, and the hosts waiting
// to join with their codes.
func (s *Service) DescribeHosts(ctx context.Context) ([]fleet.HostView, error) {
	var out []fleet.HostView
	err := s.store.View(func(tx store.Tx) error {
		var err error
		out, err = fleet.Describe(tx)
		return err
	})
	return out, err
}

// DrainHost stops placing new WorkSpaces on a host (draining), or starts again.
func (s *Service) DrainHost(ctx context.Context, id string, drain bool) error {
	if err := fleet.SetDraining(s.store, id, drain); err != nil {
		return err
	}
	s.log.Info("host drain", "host", id, "draining", drain)
	return nil
}

// ApproveHost approves the host waiting to join with code; it receives its credentials
// from the fleet member it is waiting on.
func (s *Service) ApproveHost(ctx context.Context, code string) (fleet.JoinRequest, error) {
	j, err := fleet.Approve(s.store, code, s.now())
	if err == nil {
		s.log.Info("host approved to join", "code", j.Code, "host", j.HostID, "name", j.Name, "hardwareId", j.HardwareID)
	}
	return j, err
}

// PreapproveHost lets the host with a hardware id join unattended, once, within ttl.
func (s *Service) PreapproveHost(ctx context.Context, hwid string, ttl time.Duration) (fleet.Preapproval, error) {
	p, err := fleet.Preapprove(s.store, hwid, ttl, s.now())
	if err == nil {
		s.log.Info("hardware id preapproved to join", "hardwareId", p.HardwareID, "expires", p.Expires)
	}
	return p, err
}

// Placement is where a WorkSpace runs.
type Placement struct {
	WorkspaceID string
	HostID      string
	HostName    string
	HostState   fleet.State
}

// DescribeWorkspaceHosts says which host owns each WorkSpace (ids, or all).
func (s *Service) DescribeWorkspaceHosts(ctx context.Context, ids []string) ([]Placement, error) {
	for _, id := range ids {
		if err := catalog.CheckID(catalog.KindWorkspace, id); err != nil {
			return nil, catalog.Errorf(catalog.InvalidParameterValues, "WorkspaceIds: %v", err)
		}
	}
	var out []Placement
	err := s.store.View(func(tx store.Tx) error {
		views, err := fleet.Describe(tx)
		if err != nil {
			return err
		}
		all, err := store.ListJSON[workspace.Workspace](tx, store.Workspaces)
		for _, w := range all {
			if len(ids) > 0 && !slices.Contains(ids, w.ID) {
				continue
			}
			p := Placement{WorkspaceID: w.ID, HostID: w.Host}
			if i := slices.IndexFunc(views, func(v fleet.HostView) bool { return v.ID == w.Host }); i >= 0 {
				p.HostName, p.HostState = views[i].Name, views[i].State
			}
			out = append(out, p)
		}
		return err
	})
	return out, err
}

// Located is a WorkSpace with where it runs, for the connection manager: Local says this
// host owns it (its gateway streams it).
type Located struct {
	Workspace workspace.Workspace
	Local     bool
}

// FindWorkspace finds one WorkSpace by id, or the user's live one (directory and user
// name), with whether this host owns it. ok is false when there is none.
func (s *Service) FindWorkspace(ctx context.Context, id, directoryID, userName string) (Located, bool, error) {
	var found *workspace.Workspace
	err := s.store.View(func(tx store.Tx) error {
		found = nil
		if id != "" {
			w, err := store.GetJSON[workspace.Workspace](tx, store.Workspaces, id)
			if errors.Is(err, store.ErrNotFound) {
				return nil
			}
			found = &w
			return err
		}
		all, err := store.ListJSON[workspace.Workspace](tx, store.Workspaces)
		for _, w := range all {
			if w.Live() && w.State != workspace.Terminating && w.DirectoryID == directoryID && strings.EqualFold(w.UserName, userName) {
				found = &w
				break
			}
		}
		return err
	})
	if err != nil || found == nil {
		return Located{}, false, err
	}
	return Located{Workspace: *found, Local: found.Host == s.cfg.Host || found.Host == ""}, true, nil
}

// Tagger issues connect tags at the gateway of the host that owns a WorkSpace (hostd/fleet,
// over mutual TLS to that host).
type Tagger interface {
	IssueConnectTag(ctx context.Context, owner string, r fleet.TagRequest) (fleet.TagGrant, error)
}

// SetTagger sets who asks other hosts for connect tags; it must be called before the
// Service serves.
func (s *Service) SetTagger(t Tagger) { s.tagger = t }

// IssueConnectTag gets a connect tag for a WorkSpace another host owns, from that host's
// gateway (the only place it can be redeemed), for the connection manager of this host,
// whose broker the user logged in to.
func (s *Service) IssueConnectTag(ctx context.Context, r fleet.TagRequest) (fleet.TagGrant, error) {
	if err := catalog.CheckID(catalog.KindWorkspace, r.WorkspaceID); err != nil {
		return fleet.TagGrant{}, catalog.Errorf(catalog.InvalidParameterValues, "WorkspaceId: %v", err)
	}
	loc, ok, err := s.FindWorkspace(ctx, r.WorkspaceID, "", "")
	if err != nil {
		return fleet.TagGrant{}, err
	}
	w := loc.Workspace
	switch {
	case !ok:
		return fleet.TagGrant{}, catalog.Errorf(catalog.ResourceNotFound, "WorkSpace %s does not exist", r.WorkspaceID)
	case w.DirectoryID != r.DirectoryID || !strings.EqualFold(w.UserName, r.UserName):
		return fleet.TagGrant{}, catalog.Errorf(catalog.AccessDenied, "WorkSpace %s is not %s's in directory %s", w.ID, r.UserName, r.DirectoryID)
	case s.tagger == nil:
		return fleet.TagGrant{}, catalog.Errorf(catalog.ResourceUnavailable, "this host is not in a fleet: it cannot reach host %s, which owns %s", w.Host, w.ID)
	}
	g, err := s.tagger.IssueConnectTag(ctx, w.Host, r)
	if err != nil {
		return fleet.TagGrant{}, fmt.Errorf("connect tag for %s from host %s: %w", w.ID, w.Host, err)
	}
	return g, nil
}
