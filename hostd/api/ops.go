package api

import (
	"context"
	"slices"
	"sort"

	"deskhost/hostd/service"
	"deskhost/hostd/workspace"
	"deskhost/internal/catalog"
)

// Service is what the API calls: hostd's WorkSpaces operations, as *service.Service
// implements them.
type Service interface {
	CreateWorkspaces(ctx context.Context, reqs []service.CreateRequest) ([]workspace.Workspace, []service.Failure, error)
	DescribeWorkspaces(ctx context.Context, f service.DescribeFilter) ([]workspace.Workspace, string, error)
	RebootWorkspaces(ctx context.Context, ids []string) ([]service.Failure, error)
	StopWorkspaces(ctx context.Context, ids []string) ([]service.Failure, error)
	StartWorkspaces(ctx context.Context, ids []string) ([]service.Failure, error)
	TerminateWorkspaces(ctx context.Context, ids []string) ([]service.Failure, error)
	ModifyWorkspaceState(ctx context.Context, id string, target workspace.State) error
	ModifyWorkspaceProperties(ctx context.Context, id string, c workspace.PropertiesChange) error
	DescribeWorkspacesConnectionStatus(ctx context.Context, ids []string, nextToken string) ([]service.ConnectionStatus, string, error)
	ReportConnections(ctx context.Context, connected []string) error
	CatalogService
	HostsService
	SnapshotsService
	MigrateService
	UsageService
	ImagesService
	KeysService
}

var _ Service = (*service.Service)(nil)

// operation is one X-Amz-Target: its input shape, a fresh decoded input, and the call.
// A localOnly operation is hostd's own, for the host's own services, and answers only on
// the root-only unix socket. A secret operation's input may hold secrets: the audit log
// records that it was called, not its parameters.
type operation struct {
	input     *shape
	newReq    func() any
	call      func(ctx context.Context, svc Service, req any) (any, error)
	localOnly bool
	secret    bool
}

func op[Req any](in *shape, fn func(ctx context.Context, svc Service, r *Req) (any, error)) operation {
	return operation{
		input:  in,
		newReq: func() any { return new(Req) },
		call: func(ctx context.Context, svc Service, req any) (any, error) {
			return fn(ctx, svc, req.(*Req))
		},
	}
}

var operations = map[string]operation{
	"CreateWorkspaces":                   op(shCreateWorkspacesRequest, createWorkspaces),
	"DescribeWorkspaces":                 op(shDescribeWorkspacesRequest, describeWorkspaces),
	"RebootWorkspaces":                   op(shRebootWorkspacesRequest, rebootWorkspaces),
	"StopWorkspaces":                     op(shStopWorkspacesRequest, stopWorkspaces),
	"StartWorkspaces":                    op(shStartWorkspacesRequest, startWorkspaces),
	"TerminateWorkspaces":                op(shTerminateWorkspacesRequest, terminateWorkspaces),
	"ModifyWorkspaceState":               op(shModifyWorkspaceStateRequest, modifyWorkspaceState),
	"ModifyWorkspaceProperties":          op(shModifyWorkspacePropertiesRequest, modifyWorkspaceProperties),
	"DescribeWorkspaceBundles":           op(shDescribeWorkspaceBundlesRequest, describeWorkspaceBundles),
	"DescribeWorkspaceDirectories":       op(shDescribeWorkspaceDirectoriesRequest, describeWorkspaceDirectories),
	"DescribeWorkspacesConnectionStatus": op(shDescribeWorkspacesConnectionStatusRequest, describeWorkspacesConnectionStatus),
	"RebuildWorkspaces":                  op(shRebuildWorkspacesRequest, rebuildWorkspaces),
	"RestoreWorkspace":                   op(shRestoreWorkspaceRequest, restoreWorkspace),
	"DescribeWorkspaceSnapshots":         op(shDescribeWorkspaceSnapshotsRequest, describeWorkspaceSnapshots),
	"MigrateWorkspace":                   op(shMigrateWorkspaceRequest, migrateWorkspace),

	"RegisterWorkspaceDirectory":        op(shRegisterWorkspaceDirectoryRequest, registerWorkspaceDirectory),
	"DeregisterWorkspaceDirectory":      op(shDeregisterWorkspaceDirectoryRequest, deregisterWorkspaceDirectory),
	"ModifyWorkspaceAccessProperties":   op(shModifyWorkspaceAccessPropertiesRequest, modifyWorkspaceAccessProperties),
	"ModifyWorkspaceCreationProperties": op(shModifyWorkspaceCreationPropertiesRequest, modifyWorkspaceCreationProperties),
	"ModifySelfservicePermissions":      op(shModifySelfservicePermissionsRequest, modifySelfservicePermissions),
	"ModifyClientProperties":            op(shModifyClientPropertiesRequest, modifyClientProperties),
	"DescribeClientProperties":          op(shDescribeClientPropertiesRequest, describeClientProperties),
	"CreateIpGroup":                     op(shCreateIpGroupRequest, createIpGroup),
	"DeleteIpGroup":                     op(shDeleteIpGroupRequest, deleteIpGroup),
	"DescribeIpGroups":                  op(shDescribeIpGroupsRequest, describeIpGroups),
	"AuthorizeIpRules":                  op(shAuthorizeIpRulesRequest, authorizeIpRules),
	"RevokeIpRules":                     op(shRevokeIpRulesRequest, revokeIpRules),
	"UpdateRulesOfIpGroup":              op(shUpdateRulesOfIpGroupRequest, updateRulesOfIpGroup),
	"AssociateIpGroups":                 op(shAssociateIpGroupsRequest, associateIpGroups),
	"DisassociateIpGroups":              op(shDisassociateIpGroupsRequest, disassociateIpGroups),
	"CreateTags":                        op(shCreateTagsRequest, createTags),
	"DeleteTags":                        op(shDeleteTagsRequest, deleteTags),
	"DescribeTags":                      op(shDescribeTagsRequest, describeTags),
	"CreateWorkspaceBundle":             op(shCreateWorkspaceBundleRequest, createWorkspaceBundle),
	"UpdateWorkspaceBundle":             op(shUpdateWorkspaceBundleRequest, updateWorkspaceBundle),
	"DeleteWorkspaceBundle":             op(shDeleteWorkspaceBundleRequest, deleteWorkspaceBundle),
	"DescribeWorkspaceImages":           op(shDescribeWorkspaceImagesRequest, describeWorkspaceImages),
	"DeleteWorkspaceImage":              op(shDeleteWorkspaceImageRequest, deleteWorkspaceImage),
	"CreateWorkspaceImage":              op(shCreateWorkspaceImageRequest, createWorkspaceImage),
	"CopyWorkspaceImage":                op(shCopyWorkspaceImageRequest, copyWorkspaceImage),
	"ImportWorkspaceImage":              op(shImportWorkspaceImageRequest, importWorkspaceImage),
	"DescribeAccount":                   op(shDescribeAccountRequest, describeAccount),
	"DescribeAccountModifications":      op(shDescribeAccountModificationsRequest, describeAccountModifications),
	"ListAvailableManagementCidrRanges": op(shListAvailableManagementCidrRangesRequest, listAvailableManagementCidrRanges),
}

// ownOperations are hostd's own, under OwnTargetPrefix: what AWS keeps outside WorkSpaces
// (Directory Service's directories and users; images imported from elsewhere), and the
// host's own services' calls.
var ownOperations = map[string]operation{
	ReportConnectionsOperation: localOnly(op(shReportConnectionsRequest, reportConnections)),
	DescribeCatalogOperation:   localOnly(op(shDescribeCatalogRequest, describeCatalog)),
	"PutDirectory":             secret(op(shPutDirectoryRequest, putDirectory)),
	"DeleteDirectory":          op(shDeleteDirectoryRequest, deleteDirectory),
	"DescribeDirectories":      op(shDescribeDirectoriesRequest, describeDirectories),
	"CreateUsers":              op(shCreateUsersRequest, createUsers),
	"DeleteUsers":              op(shDeleteUsersRequest, deleteUsers),
	"DescribeUsers":            op(shDescribeUsersRequest, describeUsers),
	"RegisterImage":            op(shRegisterImageRequest, registerImage),
	"ImportImage":              op(shImportImageRequest, importImage),
}

// ReportConnectionsOperation is hostd's own operation by which the connection manager
// reports which WorkSpaces users are streaming (service.ReportConnections).
const ReportConnectionsOperation = "ReportConnections"

// DescribeCatalogOperation is hostd's own operation by which the connection manager reads
// (and long-polls) the directories and IP access control groups it enforces.
const DescribeCatalogOperation = "DescribeCatalog"

func localOnly(o operation) operation {
	o.localOnly = true
	return o
}

func secret(o operation) operation {
	o.secret = true
	return o
}

func describeWorkspacesConnectionStatus(ctx context.Context, svc Service, r *describeWorkspacesConnectionStatusRequest) (any, error) {
	st, next, err := svc.DescribeWorkspacesConnectionStatus(ctx, r.WorkspaceIds, deref(r.NextToken))
	if err != nil {
		return nil, err
	}
	out := describeWorkspacesConnectionStatusResult{WorkspacesConnectionStatus: make([]wireConnectionStatus, len(st)), NextToken: next}
	for i, c := range st {
		out.WorkspacesConnectionStatus[i] = wireConnectionStatus{WorkspaceId: c.WorkspaceID, ConnectionState: c.State,
			ConnectionStateCheckTimestamp: epochOrNil(c.CheckedAt), LastKnownUserConnectionTimestamp: epochOrNil(c.LastUserConnection)}
	}
	return out, nil
}

func reportConnections(ctx context.Context, svc Service, r *reportConnectionsRequest) (any, error) {
	return struct{}{}, svc.ReportConnections(ctx, r.ConnectedWorkspaceIds)
}

// Operations lists the X-Amz-Target values this API implements: AWS's operations under
// TargetPrefix and hostd's own under OwnTargetPrefix.
func Operations() []string {
	var names []string
	for _, n := range operationNames() {
		names = append(names, TargetPrefix+n)
	}
	for _, n := range ownOperationNames() {
		names = append(names, OwnTargetPrefix+n)
	}
	return names
}

func operationNames() []string { return sortedKeys(operations) }

func ownOperationNames() []string { return sortedKeys(ownOperations) }

func sortedKeys(m map[string]operation) []string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

func toCreateRequest(w wireWorkspaceRequest) service.CreateRequest {
	r := service.CreateRequest{
		DirectoryID:                 w.DirectoryId,
		UserName:                    w.UserName,
		BundleID:                    w.BundleId,
		RootVolumeEncryptionEnabled: deref(w.RootVolumeEncryptionEnabled),
		UserVolumeEncryptionEnabled: deref(w.UserVolumeEncryptionEnabled),
		VolumeEncryptionKey:         deref(w.VolumeEncryptionKey),
	}
	if p := w.WorkspaceProperties; p != nil {
		r.RunningMode = workspace.RunningMode(deref(p.RunningMode))
		r.AutoStopTimeoutMinutes = deref(p.RunningModeAutoStopTimeoutInMinutes)
		r.RootVolumeSizeGib = deref(p.RootVolumeSizeGib)
		r.UserVolumeSizeGib = deref(p.UserVolumeSizeGib)
		r.ComputeTypeName = deref(p.ComputeTypeName)
		r.Protocols = p.Protocols
	}
	r.Tags = toTags(w.Tags)
	return r
}

func createWorkspaces(ctx context.Context, svc Service, r *createWorkspacesRequest) (any, error) {
	reqs := make([]service.CreateRequest, len(r.Workspaces))
	for i, w := range r.Workspaces {
		reqs[i] = toCreateRequest(w)
	}
	pending, failed, err := svc.CreateWorkspaces(ctx, reqs)
	if err != nil {
		return nil, err
	}
	res := createWorkspacesResult{
		FailedRequests:  make([]wireFailedCreate, 0, len(failed)),
		PendingRequests: toWireWorkspaces(pending),
	}
	for _, f := range failed {
		var echo wireWorkspaceRequest
		if f.Index >= 0 && f.Index < len(r.Workspaces) {
			echo = r.Workspaces[f.Index]
		}
		res.FailedRequests = append(res.FailedRequests, wireFailedCreate{WorkspaceRequest: echo, ErrorCode: f.Code, ErrorMessage: f.Message})
	}
	return res, nil
}

func describeWorkspaces(ctx context.Context, svc Service, r *describeWorkspacesRequest) (any, error) {
	ws, next, err := svc.DescribeWorkspaces(ctx, service.DescribeFilter{
		IDs:         r.WorkspaceIds,
		DirectoryID: deref(r.DirectoryId),
		UserName:    deref(r.UserName),
		BundleID:    deref(r.BundleId),
		Limit:       deref(r.Limit),
		NextToken:   deref(r.NextToken),
	})
	if err != nil {
		return nil, err
	}
	return describeWorkspacesResult{Workspaces: toWireWorkspaces(ws), NextToken: next}, nil
}

func idsOf(rs []workspaceIDRequest) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.WorkspaceId
	}
	return out
}

func batchResult(failed []service.Failure, err error) (any, error) {
	if err != nil {
		return nil, err
	}
	return failedRequestsResult{FailedRequests: toWireFailures(failed)}, nil
}

func rebootWorkspaces(ctx context.Context, svc Service, r *rebootWorkspacesRequest) (any, error) {
	return batchResult(svc.RebootWorkspaces(ctx, idsOf(r.RebootWorkspaceRequests)))
}

func stopWorkspaces(ctx context.Context, svc Service, r *stopWorkspacesRequest) (any, error) {
	for i, q := range r.StopWorkspaceRequests {
		if q.WorkspaceId == "" {
			// The model leaves StopRequest.WorkspaceId optional; a stop without one means nothing.
			return nil, catalog.Errorf(catalog.InvalidParameterValues, "missing required member StopWorkspaceRequests[%d].WorkspaceId", i)
		}
	}
	return batchResult(svc.StopWorkspaces(ctx, idsOf(r.StopWorkspaceRequests)))
}

func startWorkspaces(ctx context.Context, svc Service, r *startWorkspacesRequest) (any, error) {
	for i, q := range r.StartWorkspaceRequests {
		if q.WorkspaceId == "" {
			return nil, catalog.Errorf(catalog.InvalidParameterValues, "missing required member StartWorkspaceRequests[%d].WorkspaceId", i)
		}
	}
	return batchResult(svc.StartWorkspaces(ctx, idsOf(r.StartWorkspaceRequests)))
}

func terminateWorkspaces(ctx context.Context, svc Service, r *terminateWorkspacesRequest) (any, error) {
	return batchResult(svc.TerminateWorkspaces(ctx, idsOf(r.TerminateWorkspaceRequests)))
}

func modifyWorkspaceState(ctx context.Context, svc Service, r *modifyWorkspaceStateRequest) (any, error) {
	if err := svc.ModifyWorkspaceState(ctx, r.WorkspaceId, workspace.State(r.WorkspaceState)); err != nil {
		return nil, err
	}
	return emptyResult{}, nil
}

func modifyWorkspaceProperties(ctx context.Context, svc Service, r *modifyWorkspacePropertiesRequest) (any, error) {
	p := r.WorkspaceProperties
	if p == nil {
		// Unreachable: the model requires WorkspaceProperties and the decoder enforces it.
		return nil, catalog.Errorf(catalog.InvalidParameterValues, "missing required member WorkspaceProperties")
	}
	if p.RunningMode == nil && p.RunningModeAutoStopTimeoutInMinutes == nil && p.RootVolumeSizeGib == nil &&
		p.UserVolumeSizeGib == nil && p.ComputeTypeName == nil && p.Protocols == nil {
		return nil, catalog.Errorf(catalog.InvalidParameterValues, "WorkspaceProperties names no property to change")
	}
	if p.Protocols != nil {
		// The service cannot change a WorkSpace's protocol; restating the current one is fine.
		ws, _, err := svc.DescribeWorkspaces(ctx, service.DescribeFilter{IDs: []string{r.WorkspaceId}})
		if err != nil {
			return nil, err
		}
		if len(ws) == 0 {
			return nil, catalog.Errorf(catalog.ResourceNotFound, "WorkSpace %s does not exist", r.WorkspaceId)
		}
		if !slices.Equal(p.Protocols, []string{ws[0].Properties.Protocol}) {
			return nil, catalog.Errorf(catalog.UnsupportedWorkspaceConfig,
				"changing the protocol of WorkSpace %s (%s) is not supported by this host yet", r.WorkspaceId, ws[0].Properties.Protocol)
		}
	}
	c := workspace.PropertiesChange{
		AutoStopTimeoutMinutes: p.RunningModeAutoStopTimeoutInMinutes,
		RootVolumeSizeGib:      p.RootVolumeSizeGib,
		UserVolumeSizeGib:      p.UserVolumeSizeGib,
		ComputeTypeName:        p.ComputeTypeName,
	}
	if p.RunningMode != nil {
		m := workspace.RunningMode(*p.RunningMode)
		c.RunningMode = &m
	}
	if err := svc.ModifyWorkspaceProperties(ctx, r.WorkspaceId, c); err != nil {
		return nil, err
	}
	return emptyResult{}, nil
}
