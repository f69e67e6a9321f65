package api

import "context"

// MigrateService is MigrateWorkspace (guide catalog §7.4).
type MigrateService interface {
	MigrateWorkspace(ctx context.Context, sourceID, bundleID string) (string, error)
}

var shMigrateWorkspaceRequest = structure("MigrateWorkspaceRequest", []string{"SourceWorkspaceId", "BundleId"},
	m("SourceWorkspaceId", shWorkspaceID),
	m("BundleId", shBundleID),
)

type migrateWorkspaceRequest struct {
	SourceWorkspaceId string `json:"SourceWorkspaceId"`
	BundleId          string `json:"BundleId"`
}

type migrateWorkspaceResult struct {
	SourceWorkspaceId string `json:"SourceWorkspaceId"`
	TargetWorkspaceId string `json:"TargetWorkspaceId"`
}

func migrateWorkspace(ctx context.Context, svc Service, r *migrateWorkspaceRequest) (any, error) {
	target, err := svc.MigrateWorkspace(ctx, r.SourceWorkspaceId, r.BundleId)
	if err != nil {
		return nil, err
	}
	return migrateWorkspaceResult{SourceWorkspaceId: r.SourceWorkspaceId, TargetWorkspaceId: target}, nil
}
