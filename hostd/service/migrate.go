package service

import (
	"context"
	"errors"
	"fmt"

	"deskhost/hostd/keystore"
	"deskhost/hostd/store"
	"deskhost/hostd/workspace"
	"deskhost/internal/catalog"
)

// MigrateWorkspace moves a WorkSpace to another bundle (guide catalog §7.4): a new
// WorkSpace (new id, computer name and IP address) with a root volume from the target
// bundle's image, the source's user volume, its tags, running mode and encryption (key and
// data key: carryEncryption). Both records are written in one transaction before anything
// is done — the source UPDATING, naming its target and the state to return to; the target
// PENDING, naming its source — and the controller carries it out
// (hostd/controller/migrate.go). The source is terminated only once the target is
// AVAILABLE; if the target cannot be made, the target is terminated and the source returns
// to its prior state. It returns the target's id.
func (s *Service) MigrateWorkspace(ctx context.Context, sourceID, bundleID string) (string, error) {
	if err := catalog.CheckID(catalog.KindWorkspace, sourceID); err != nil {
		return "", catalog.Errorf(catalog.InvalidParameterValues, "SourceWorkspaceId: %v", err)
	}
	if err := catalog.CheckID(catalog.KindBundle, bundleID); err != nil {
		return "", catalog.Errorf(catalog.InvalidParameterValues, "BundleId: %v", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	var target workspace.Workspace
	tagged := false
	err := s.store.Update(func(tx store.Tx) error {
		tagged = false
		src, err := store.GetJSON[workspace.Workspace](tx, store.Workspaces, sourceID)
		if errors.Is(err, store.ErrNotFound) {
			return catalog.Errorf(catalog.ResourceNotFound, "WorkSpace %s does not exist", sourceID)
		}
		if err != nil {
			return err
		}
		if src.MigrationSource() {
			return catalog.Errorf(catalog.OperationInProgress, "WorkSpace %s is already migrating to %s", src.ID, src.Migration.Target)
		}
		if err := src.CheckOp(workspace.OpMigrate); err != nil {
			return err
		}
		if err := checkKey(tx, &src, workspace.OpMigrate); err != nil {
			return err
		}
		if bundleID == src.BundleID {
			return catalog.Errorf(catalog.InvalidParameterValues, "WorkSpace %s already uses bundle %s; the source and target bundles must be different", src.ID, bundleID)
		}
		b, err := store.GetJSON[catalog.Bundle](tx, store.Bundles, bundleID)
		if errors.Is(err, store.ErrNotFound) || err == nil && b.DeleteQueued {
			return catalog.Errorf(catalog.ResourceNotFound, "bundle %s does not exist", bundleID)
		}
		if err != nil {
			return err
		}
		if _, err := store.GetJSON[catalog.Image](tx, store.Images, b.ImageID); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				return catalog.Errorf(catalog.ResourceUnavailable, "bundle %s names image %s, which this host does not have", b.ID, b.ImageID)
			}
			return err
		}
		srcBundleUser := 0
		if sb, err := store.GetJSON[catalog.Bundle](tx, store.Bundles, src.BundleID); err == nil {
			srcBundleUser = sb.UserGiB
		} else if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		root, user := workspace.MigratedVolumes(src.Properties, srcBundleUser, b)
		if err := catalog.ValidateVolumes(b.ComputeType, root, user); err != nil {
			return catalog.Errorf(catalog.InvalidParameterValues, "WorkSpace %s cannot move to bundle %s: its volumes would be root %d GiB, user %d GiB: %v", src.ID, b.ID, root, user, err)
		}
		all, err := store.ListJSON[workspace.Workspace](tx, store.Workspaces)
		if err != nil {
			return err
		}
		inFlight, sameCompute := 0, 0
		for _, o := range all {
			if o.MigrationSource() {
				inFlight++
			}
			if o.Live() && o.ID != src.ID && o.Properties.ComputeTypeName == string(b.ComputeType) {
				sameCompute++
			}
		}
		if inFlight >= workspace.MaxMigrationsInFlight {
			return catalog.Errorf(catalog.ResourceLimitExceeded,
				"%d migrations are running; at most %d run at once (the guide: migrate in batches of no more than %d): wait for one to finish",
				inFlight, workspace.MaxMigrationsInFlight, workspace.MaxMigrationsInFlight)
		}
		if ct := b.ComputeType; ct.GPU() && sameCompute >= s.cfg.GPUQuota[ct] {
			return catalog.Errorf(catalog.ResourceLimitExceeded, "this host's quota of %d %s WorkSpaces is used", s.cfg.GPUQuota[ct], ct)
		}

		target = workspace.Workspace{
			ID:          catalog.NewID(catalog.KindWorkspace),
			DirectoryID: src.DirectoryID,
			UserName:    src.UserName,
			BundleID:    b.ID,
			ImageID:     b.ImageID,
			Properties: workspace.Properties{
				RunningMode:            src.Properties.RunningMode,
				AutoStopTimeoutMinutes: src.Properties.AutoStopTimeoutMinutes,
				RootVolumeSizeGib:      root,
				UserVolumeSizeGib:      user,
				ComputeTypeName:        string(b.ComputeType),
				Protocol:               string(b.Protocol),
			},
			Created: now,
			// The user volume is on the source's host: the target is made there.
			Host:      src.Host,
			Migration: &workspace.Migration{Source: src.ID},
		}
		target.ComputerName = computerName(target.ID)
		if target.Encryption, err = s.carryEncryption(tx, src, target.ID); err != nil {
			return err
		}
		if target.IPAddress, err = s.allocateAddress(tx, target.ID); err != nil {
			return err
		}
		target.SetState(workspace.Pending, now)

		src.Migration = &workspace.Migration{Target: target.ID, Prior: src.State, PriorErrorCode: src.ErrorCode, PriorErrorMessage: src.ErrorMessage}
		src.SetState(workspace.Updating, now)

		tags, err := store.GetJSON[[]catalog.Tag](tx, store.Tags, src.ID)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		if len(tags) > 0 {
			if err := store.PutJSON(tx, store.Tags, target.ID, tags); err != nil {
				return err
			}
			if _, err := store.BumpCatalogRevision(tx); err != nil {
				return err
			}
			tagged = true
		}
		if err := store.PutJSON(tx, store.Workspaces, src.ID, src); err != nil {
			return err
		}
		return store.PutJSON(tx, store.Workspaces, target.ID, target)
	})
	if err != nil {
		if !errors.As(err, new(*catalog.Error)) {
			s.log.Error("migrate workspace", "workspace", sourceID, "err", err)
		}
		return "", err
	}
	if tagged {
		s.catalogWritten()
	}
	s.log.Info("workspace migration accepted", "workspace", sourceID, "target", target.ID, "bundle", bundleID)
	s.waker.Wake(sourceID)
	s.waker.Wake(target.ID)
	return target.ID, nil
}

// carryEncryption gives a migration's target its source's encryption: the same key, and
// the source's data key sealed again for the target's id, since the target's user volume
// is a copy of the source's, LUKS under that data key (its new root volume is made under
// it too). The target takes its source's place under the key's limit of WorkSpaces, so
// the limit is not checked again.
func (s *Service) carryEncryption(tx store.Tx, src workspace.Workspace, targetID string) (workspace.Encryption, error) {
	if !src.Encrypted() {
		return workspace.Encryption{}, nil
	}
	if s.cfg.Keys == nil {
		return workspace.Encryption{}, catalog.Errorf(catalog.UnsupportedWorkspaceConfig, "WorkSpace %s has encrypted volumes, and this host has no key store to carry its key", src.ID)
	}
	k, err := store.GetJSON[keystore.Key](tx, store.Keys, src.Encryption.KeyID)
	if err != nil {
		return workspace.Encryption{}, fmt.Errorf("key %s of WorkSpace %s: %w", src.Encryption.KeyID, src.ID, err)
	}
	sealed, err := s.cfg.Keys.Rewrap(k, src.ID, targetID, src.Encryption.DataKey)
	if err != nil {
		return workspace.Encryption{}, fmt.Errorf("carry WorkSpace %s's data key to %s: %w", src.ID, targetID, err)
	}
	e := src.Encryption
	e.DataKey = sealed
	return e, nil
}
