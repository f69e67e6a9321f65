package api

import (
	"context"

	"deskhost/hostd/service"
)

// SnapshotsService is the data lifecycle part of hostd: snapshots, rebuild, restore.
type SnapshotsService interface {
	RebuildWorkspaces(ctx context.Context, ids []string) ([]service.Failure, error)
	RestoreWorkspace(ctx context.Context, id string) error
	DescribeWorkspaceSnapshots(ctx context.Context, id string) (service.SnapshotTimes, error)
}

var (
	shRebuildWorkspacesRequest = structure("RebuildWorkspacesRequest", []string{"RebuildWorkspaceRequests"},
		m("RebuildWorkspaceRequests", list("RebuildWorkspaceRequests",
			structure("RebuildRequest", []string{"WorkspaceId"}, m("WorkspaceId", shWorkspaceID)), ip(1), ip(1))),
	)
	shRestoreWorkspaceRequest = structure("RestoreWorkspaceRequest", []string{"WorkspaceId"},
		m("WorkspaceId", shWorkspaceID),
	)
	shDescribeWorkspaceSnapshotsRequest = structure("DescribeWorkspaceSnapshotsRequest", []string{"WorkspaceId"},
		m("WorkspaceId", shWorkspaceID),
	)
)

type rebuildWorkspacesRequest struct {
	RebuildWorkspaceRequests []workspaceIDRequest `json:"RebuildWorkspaceRequests"`
}

type wireSnapshot struct {
	SnapshotTime *epochSeconds `json:"SnapshotTime,omitempty"`
}

type describeWorkspaceSnapshotsResult struct {
	RebuildSnapshots []wireSnapshot `json:"RebuildSnapshots"`
	RestoreSnapshots []wireSnapshot `json:"RestoreSnapshots"`
}

func rebuildWorkspaces(ctx context.Context, svc Service, r *rebuildWorkspacesRequest) (any, error) {
	return batchResult(svc.RebuildWorkspaces(ctx, idsOf(r.RebuildWorkspaceRequests)))
}

func restoreWorkspace(ctx context.Context, svc Service, r *workspaceIDRequest) (any, error) {
	if err := svc.RestoreWorkspace(ctx, r.WorkspaceId); err != nil {
		return nil, err
	}
	return emptyResult{}, nil
}

func describeWorkspaceSnapshots(ctx context.Context, svc Service, r *workspaceIDRequest) (any, error) {
	st, err := svc.DescribeWorkspaceSnapshots(ctx, r.WorkspaceId)
	if err != nil {
		return nil, err
	}
	out := describeWorkspaceSnapshotsResult{RebuildSnapshots: []wireSnapshot{}, RestoreSnapshots: []wireSnapshot{}}
	for _, t := range st.Rebuild {
		out.RebuildSnapshots = append(out.RebuildSnapshots, wireSnapshot{SnapshotTime: epochOrNil(t)})
	}
	for _, t := range st.Restore {
		out.RestoreSnapshots = append(out.RestoreSnapshots, wireSnapshot{SnapshotTime: epochOrNil(t)})
	}
	return out, nil
}
