package api

import (
	"context"
	"net/netip"
	"time"

	"deskhost/hostd/fleet"
	"deskhost/hostd/service"
	"deskhost/internal/catalog"
)

// hostd's own operations for the fleet's hosts (AWS has none: its hosts are its own), and
// the connection manager's two for WorkSpaces other hosts run.

// HostsService is the fleet half of what the API calls (*service.Service).
type HostsService interface {
	DescribeHosts(ctx context.Context) ([]fleet.HostView, error)
	DrainHost(ctx context.Context, id string, drain bool) error
	ApproveHost(ctx context.Context, code string) (fleet.JoinRequest, error)
	PreapproveHost(ctx context.Context, hwid string, ttl time.Duration) (fleet.Preapproval, error)
	DescribeWorkspaceHosts(ctx context.Context, ids []string) ([]service.Placement, error)
	FindWorkspace(ctx context.Context, id, directoryID, userName string) (service.Located, bool, error)
	IssueConnectTag(ctx context.Context, r fleet.TagRequest) (fleet.TagGrant, error)
}

var (
	shHostID = strPattern("HostId", nil, ip(64), `^host-[0-9a-z]{6,58}$`)

	shDescribeHostsRequest = structure("DescribeHostsRequest", nil)
	shHostIDRequest        = structure("HostIdRequest", []string{"HostId"}, m("HostId", shHostID))
	shApproveHostRequest   = structure("ApproveHostRequest", []string{"Code"},
		m("Code", strLen("JoinCode", ip(1), ip(32))))
	shPreapproveHostRequest = structure("PreapproveHostRequest", []string{"HardwareId"},
		m("HardwareId", strLen("HardwareId", ip(1), ip(128))),
		m("ValidMinutes", integer("ValidMinutes", ip(1), ip(30*24*60))))
	shDescribeWorkspaceHostsRequest = structure("DescribeWorkspaceHostsRequest", nil,
		m("WorkspaceIds", list("WorkspaceIdList", shWorkspaceID, ip(1), ip(25))))
	// The connection manager's, on the local socket only.
	shFindWorkspaceRequest = structure("FindWorkspaceRequest", nil,
		m("WorkspaceId", shWorkspaceID),
		m("DirectoryId", shDirectoryID),
		m("UserName", shUserName))
	shIssueConnectTagRequest = structure("IssueConnectTagRequest", []string{"WorkspaceId", "DirectoryId", "UserName", "ClientAddress"},
		m("WorkspaceId", shWorkspaceID),
		m("DirectoryId", shDirectoryID),
		m("UserName", shUserName),
		m("ClientAddress", strLen("ClientAddress", ip(2), ip(64))),
		m("SessionId", strLen("SessionId", ip(1), ip(64))))
)

func init() {
	ownOperations["DescribeHosts"] = op(shDescribeHostsRequest, describeHosts)
	ownOperations["DrainHost"] = op(shHostIDRequest, drainHost(true))
	ownOperations["UndrainHost"] = op(shHostIDRequest, drainHost(false))
	ownOperations["ApproveHost"] = op(shApproveHostRequest, approveHost)
	ownOperations["PreapproveHost"] = op(shPreapproveHostRequest, preapproveHost)
	ownOperations["DescribeWorkspaceHosts"] = op(shDescribeWorkspaceHostsRequest, describeWorkspaceHosts)
	ownOperations[FindWorkspaceOperation] = localOnly(op(shFindWorkspaceRequest, findWorkspace))
	// The answer is a one-time credential for the user's stream: only for the host's own
	// connection manager.
	ownOperations[IssueConnectTagOperation] = localOnly(op(shIssueConnectTagRequest, issueConnectTag))
}

// FindWorkspaceOperation and IssueConnectTagOperation are the connection manager's.
const (
	FindWorkspaceOperation   = "FindWorkspace"
	IssueConnectTagOperation = "IssueConnectTag"
)

// WireHost is a host as DescribeHosts answers it.
type WireHost struct {
	HostId       string
	Name         string
	HardwareId   string `json:",omitempty"`
	State        string
	JoinCode     string `json:",omitempty"`
	EtcdMember   bool
	Addresses    fleet.Addresses
	Capacity     fleet.Resources
	Reserved     fleet.Resources
	Running      fleet.Resources
	Workspaces   int
	Images       int
	DownSince    *epochSeconds                            `json:",omitempty"`
	DownReason   string                                   `json:",omitempty"`
	Started      *epochSeconds                            `json:",omitempty"`
	ComputeTypes map[catalog.ComputeType]catalog.Hardware `json:",omitempty"`
}

type describeHostsRequest struct{}

func describeHosts(ctx context.Context, svc Service, r *describeHostsRequest) (any, error) {
	vs, err := svc.DescribeHosts(ctx)
	if err != nil {
		return nil, err
	}
	out := struct{ Hosts []WireHost }{Hosts: []WireHost{}}
	for _, v := range vs {
		h := WireHost{HostId: v.ID, Name: v.Name, HardwareId: v.HardwareID, State: string(v.State), EtcdMember: v.EtcdMember,
			Addresses: v.Addresses, Capacity: v.Capacity, Reserved: v.Load.Reserved, Running: v.Load.Running, Workspaces: v.Load.Workspaces,
			Images: len(v.Images), DownReason: v.DownReason, ComputeTypes: v.ComputeTypes}
		if v.Code != "" {
			h.HostId, h.JoinCode = "", fleet.FormatCode(v.Code)
		}
		h.DownSince, h.Started = epochOrNil(v.DownSince), epochOrNil(v.Started)
		out.Hosts = append(out.Hosts, h)
	}
	return out, nil
}

type hostIDRequest struct {
	HostId string `json:"HostId"`
}

func drainHost(drain bool) func(ctx context.Context, svc Service, r *hostIDRequest) (any, error) {
	return func(ctx context.Context, svc Service, r *hostIDRequest) (any, error) {
		return emptyResult{}, svc.DrainHost(ctx, r.HostId, drain)
	}
}

type approveHostRequest struct {
	Code string `json:"Code"`
}

func approveHost(ctx context.Context, svc Service, r *approveHostRequest) (any, error) {
	j, err := svc.ApproveHost(ctx, r.Code)
	if err != nil {
		return nil, err
	}
	return struct{ HostId, Name, HardwareId string }{j.HostID, j.Name, j.HardwareID}, nil
}

type preapproveHostRequest struct {
	HardwareId   string `json:"HardwareId"`
	ValidMinutes *int   `json:"ValidMinutes,omitempty"`
}

func preapproveHost(ctx context.Context, svc Service, r *preapproveHostRequest) (any, error) {
	p, err := svc.PreapproveHost(ctx, r.HardwareId, time.Duration(deref(r.ValidMinutes))*time.Minute)
	if err != nil {
		return nil, err
	}
	return struct {
		HardwareId string
		Expires    *epochSeconds
	}{p.HardwareID, epochOrNil(p.Expires)}, nil
}

type describeWorkspaceHostsRequest struct {
	WorkspaceIds []string `json:"WorkspaceIds,omitempty"`
}

func describeWorkspaceHosts(ctx context.Context, svc Service, r *describeWorkspaceHostsRequest) (any, error) {
	ps, err := svc.DescribeWorkspaceHosts(ctx, r.WorkspaceIds)
	if err != nil {
		return nil, err
	}
	type wp struct{ WorkspaceId, HostId, HostName, HostState string }
	out := struct{ Placements []wp }{Placements: []wp{}}
	for _, p := range ps {
		out.Placements = append(out.Placements, wp{p.WorkspaceID, p.HostID, p.HostName, string(p.HostState)})
	}
	return out, nil
}

type findWorkspaceRequest struct {
	WorkspaceId *string `json:"WorkspaceId,omitempty"`
	DirectoryId *string `json:"DirectoryId,omitempty"`
	UserName    *string `json:"UserName,omitempty"`
}

func findWorkspace(ctx context.Context, svc Service, r *findWorkspaceRequest) (any, error) {
	id, dir, user := deref(r.WorkspaceId), deref(r.DirectoryId), deref(r.UserName)
	if (id == "") == (dir == "" || user == "") {
		return nil, catalog.Errorf(catalog.InvalidParameterValues, "give WorkspaceId, or DirectoryId with UserName")
	}
	loc, ok, err := svc.FindWorkspace(ctx, id, dir, user)
	if err != nil {
		return nil, err
	}
	out := struct {
		Found     bool
		Local     bool
		HostId    string         `json:",omitempty"`
		Workspace *wireWorkspace `json:",omitempty"`
	}{Found: ok, Local: loc.Local, HostId: loc.Workspace.Host}
	if ok {
		w := toWireWorkspace(loc.Workspace)
		out.Workspace = &w
	}
	return out, nil
}

type issueConnectTagRequest struct {
	WorkspaceId   string  `json:"WorkspaceId"`
	DirectoryId   string  `json:"DirectoryId"`
	UserName      string  `json:"UserName"`
	ClientAddress string  `json:"ClientAddress"`
	SessionId     *string `json:"SessionId,omitempty"`
}

func issueConnectTag(ctx context.Context, svc Service, r *issueConnectTagRequest) (any, error) {
	addr, err := netip.ParseAddr(r.ClientAddress)
	if err != nil {
		return nil, catalog.Errorf(catalog.InvalidParameterValues, "ClientAddress %q: not an IP address", r.ClientAddress)
	}
	g, err := svc.IssueConnectTag(ctx, fleet.TagRequest{WorkspaceID: r.WorkspaceId, DirectoryID: r.DirectoryId, UserName: r.UserName,
		Client: addr, SessionID: deref(r.SessionId)})
	if err != nil {
		return nil, err
	}
	return struct {
		ConnectTag, SessionId, Gateway, Hostname, HostId string
		Expires                                          *epochSeconds
	}{g.ConnectTag, g.SessionID, g.Gateway, g.Hostname, g.HostID, epochOrNil(g.Expires)}, nil
}
