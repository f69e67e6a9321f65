package service

import (
	"context"
	"strings"

	"deskhost/hostd/metering"
	"deskhost/hostd/store"
	"deskhost/hostd/workspace"
	"deskhost/internal/catalog"
)

// DescribeUsage is a month's metering ledger (hostd/metering), "YYYY-MM".
func (s *Service) DescribeUsage(ctx context.Context, month string) (metering.Month, []metering.Row, error) {
	m, err := metering.ParseMonth(month)
	if err != nil {
		return m, nil, err
	}
	rows, err := metering.Report(s.store, m)
	return m, rows, err
}

// Quota is one of the guide's quotas (guide-catalog §23) as this host applies it: its
// limit and how much of it is used now. For a quota per thing (rules per group, tags per
// resource), Used is the most any one thing uses.
type Quota struct {
	Name  string
	Limit int
	Used  int
	// Error is the error code a request over the quota gets.
	Error catalog.ErrorType
}

// Quotas reports the quotas the service enforces, and their use.
func (s *Service) Quotas(ctx context.Context) ([]Quota, error) {
	var q []Quota
	err := s.store.View(func(tx store.Tx) error {
		wss, err := store.ListJSON[workspace.Workspace](tx, store.Workspaces)
		if err != nil {
			return err
		}
		live, perUser, gpu := 0, map[string]int{}, map[catalog.ComputeType]int{}
		for _, w := range wss {
			if w.Live() {
				live++
				gpu[catalog.ComputeType(w.Properties.ComputeTypeName)]++
				perUser[w.DirectoryID+"/"+strings.ToLower(w.UserName)]++
			}
		}
		imgs, err := store.ListJSON[catalog.Image](tx, store.Images)
		if err != nil {
			return err
		}
		groups, err := store.ListJSON[catalog.IPGroup](tx, store.IPGroups)
		if err != nil {
			return err
		}
		rules := 0
		for _, g := range groups {
			rules = max(rules, len(g.Rules))
		}
		dirs, err := store.ListJSON[catalog.DirectoryRecord](tx, store.Directories)
		if err != nil {
			return err
		}
		registered, groupsPerDir := 0, 0
		for _, d := range dirs {
			if d.Registration != nil {
				registered++
				groupsPerDir = max(groupsPerDir, len(d.Registration.IPGroupIDs))
			}
		}
		tags := 0
		ts, err := store.ListJSON[[]catalog.Tag](tx, store.Tags)
		if err != nil {
			return err
		}
		for _, t := range ts {
			tags = max(tags, len(t))
		}
		users := 0
		for _, n := range perUser {
			users = max(users, n)
		}
		q = []Quota{
			{"WorkSpaces", s.cfg.WorkspaceQuota, live, catalog.ResourceLimitExceeded},
			{"Graphics WorkSpaces", s.cfg.GPUQuota[catalog.ComputeGraphics], gpu[catalog.ComputeGraphics], catalog.ResourceLimitExceeded},
			{"GraphicsPro WorkSpaces", s.cfg.GPUQuota[catalog.ComputeGraphicsPro], gpu[catalog.ComputeGraphicsPro], catalog.ResourceLimitExceeded},
			{"WorkSpaces per user", 1, users, catalog.ResourceAlreadyExists},
			{"Images", catalog.MaxImages, len(imgs), catalog.ResourceLimitExceeded},
			{"IP access control groups", catalog.MaxIPGroups, len(groups), catalog.ResourceLimitExceeded},
			{"Rules per IP access control group", catalog.MaxIPRulesPerGroup, rules, catalog.ResourceLimitExceeded},
			{"IP access control groups per directory", catalog.MaxIPGroupsPerDirectory, groupsPerDir, catalog.ResourceLimitExceeded},
			{"Registered directories", MaxRegisteredDirectories, registered, catalog.ResourceLimitExceeded},
			{"Tags per resource", catalog.MaxTagsPerResource, tags, catalog.ResourceLimitExceeded},
			{"WorkSpaces per batch request", BatchLimit, 0, catalog.InvalidParameterValues},
		}
		return nil
	})
	return q, err
}
