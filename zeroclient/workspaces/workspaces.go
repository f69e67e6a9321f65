// Package workspaces is how zeroclient reaches hostd: its WorkSpaces API (AWS's protocol)
// over hostd's root-only unix socket, through deskhost/internal/hostdclient, and hostd's
// own operations there (session reports, the catalog). hostd owns WorkSpace and catalog
// records; zeroclient looks them up, starts stopped AutoStop ones and follows the catalog.
package workspaces

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/workspaces"
	"github.com/aws/aws-sdk-go-v2/service/workspaces/types"

	"deskhost/internal/catalog"
	"deskhost/internal/hostdclient"
)

// Workspace is what the broker needs to know about a WorkSpace.
type Workspace struct {
	ID           string
	DirectoryID  string
	UserName     string
	State        string
	RunningMode  string
	Protocol     string // PCOIP or WSP
	ComputerName string
	BundleID     string
	// ComputeType and the volume sizes are what self-service changes.
	ComputeType       string
	RootVolumeSizeGib int
	UserVolumeSizeGib int
}

// Backend is what the broker asks of hostd.
type Backend interface {
	// ForUser returns the user's WorkSpace (the guide: one per user); ok is false if none.
	ForUser(ctx context.Context, directoryID, userName string) (ws Workspace, ok bool, err error)
	Describe(ctx context.Context, id string) (Workspace, error)
	Start(ctx context.Context, id string) error
}

// Client talks to hostd.
type Client struct {
	api *hostdclient.Client
}

// Dial returns a client for hostd's socket (nothing is connected until the first call).
// hostd may throttle its API, the local socket included: a throttled call is retried with
// backoff (hostdclient).
func Dial(socket string) *Client { return &Client{api: hostdclient.Dial(socket)} }

func convert(w types.Workspace) Workspace {
	out := Workspace{ID: aws.ToString(w.WorkspaceId), DirectoryID: aws.ToString(w.DirectoryId), UserName: aws.ToString(w.UserName),
		State: string(w.State), ComputerName: aws.ToString(w.ComputerName), BundleID: aws.ToString(w.BundleId)}
	if p := w.WorkspaceProperties; p != nil {
		out.RunningMode = string(p.RunningMode)
		out.ComputeType = string(p.ComputeTypeName)
		out.RootVolumeSizeGib, out.UserVolumeSizeGib = int(aws.ToInt32(p.RootVolumeSizeGib)), int(aws.ToInt32(p.UserVolumeSizeGib))
		if len(p.Protocols) > 0 {
			out.Protocol = string(p.Protocols[0])
		}
	}
	if out.Protocol == "" {
		out.Protocol = "PCOIP"
	}
	return out
}

// ForUser implements Backend.
func (c *Client) ForUser(ctx context.Context, directoryID, userName string) (Workspace, bool, error) {
	out, err := c.api.DescribeWorkspaces(ctx, &workspaces.DescribeWorkspacesInput{DirectoryId: aws.String(directoryID), UserName: aws.String(userName)})
	if err != nil {
		return Workspace{}, false, fmt.Errorf("hostd: describe WorkSpaces of %s/%s: %w", directoryID, userName, err)
	}
	for _, w := range out.Workspaces {
		if w.State == types.WorkspaceStateTerminated || w.State == types.WorkspaceStateTerminating {
			continue
		}
		if strings.EqualFold(aws.ToString(w.UserName), userName) {
			return convert(w), true, nil
		}
	}
	return Workspace{}, false, nil
}

// Describe implements Backend.
func (c *Client) Describe(ctx context.Context, id string) (Workspace, error) {
	out, err := c.api.DescribeWorkspaces(ctx, &workspaces.DescribeWorkspacesInput{WorkspaceIds: []string{id}})
	if err != nil {
		return Workspace{}, fmt.Errorf("hostd: describe %s: %w", id, err)
	}
	if len(out.Workspaces) != 1 {
		return Workspace{}, fmt.Errorf("hostd: WorkSpace %s not found", id)
	}
	return convert(out.Workspaces[0]), nil
}

// Start implements Backend.
func (c *Client) Start(ctx context.Context, id string) error {
	out, err := c.api.StartWorkspaces(ctx, &workspaces.StartWorkspacesInput{StartWorkspaceRequests: []types.StartRequest{{WorkspaceId: aws.String(id)}}})
	if err != nil {
		return fmt.Errorf("hostd: start %s: %w", id, err)
	}
	if len(out.FailedRequests) > 0 {
		f := out.FailedRequests[0]
		return errors.New("hostd: start " + id + ": " + aws.ToString(f.ErrorCode) + ": " + aws.ToString(f.ErrorMessage))
	}
	return nil
}

// SelfService is what the broker's self-service actions ask of hostd. They act with the
// service's credentials, not the user's (the guide's AmazonWorkSpacesSelfServiceAccess):
// the broker decides who may do what, from the directory's self-service permissions.
type SelfService interface {
	// Permissions are the directory's "User Self-Service Permissions".
	Permissions(ctx context.Context, directoryID string) (catalog.SelfServicePermissions, error)
	Reboot(ctx context.Context, id string) error
	Modify(ctx context.Context, id string, c Change) error
	Rebuild(ctx context.Context, id string) error
	// LatestBackup is the time of the user volume's latest snapshot, the one a rebuild
	// restores; false when there is none yet.
	LatestBackup(ctx context.Context, id string) (time.Time, bool, error)
}

// Change is a self-service ModifyWorkspaceProperties: zero values are left as they are.
type Change struct {
	ComputeType       string
	RootVolumeSizeGib int
	UserVolumeSizeGib int
	RunningMode       string
}

// Permissions implements SelfService (DescribeWorkspaceDirectories).
func (c *Client) Permissions(ctx context.Context, directoryID string) (catalog.SelfServicePermissions, error) {
	out, err := c.api.DescribeWorkspaceDirectories(ctx, &workspaces.DescribeWorkspaceDirectoriesInput{DirectoryIds: []string{directoryID}})
	if err != nil {
		return catalog.SelfServicePermissions{}, fmt.Errorf("hostd: describe directory %s: %w", directoryID, err)
	}
	if len(out.Directories) != 1 || out.Directories[0].SelfservicePermissions == nil {
		return catalog.SelfServicePermissions{}, fmt.Errorf("hostd: directory %s is not registered", directoryID)
	}
	p := out.Directories[0].SelfservicePermissions
	return catalog.SelfServicePermissions{RestartWorkspace: catalog.Setting(p.RestartWorkspace), IncreaseVolumeSize: catalog.Setting(p.IncreaseVolumeSize),
		ChangeComputeType: catalog.Setting(p.ChangeComputeType), SwitchRunningMode: catalog.Setting(p.SwitchRunningMode),
		RebuildWorkspace: catalog.Setting(p.RebuildWorkspace)}, nil
}

// Reboot implements SelfService (RebootWorkspaces).
func (c *Client) Reboot(ctx context.Context, id string) error {
	out, err := c.api.RebootWorkspaces(ctx, &workspaces.RebootWorkspacesInput{RebootWorkspaceRequests: []types.RebootRequest{{WorkspaceId: aws.String(id)}}})
	if err != nil {
		return fmt.Errorf("hostd: reboot %s: %w", id, err)
	}
	if len(out.FailedRequests) > 0 {
		f := out.FailedRequests[0]
		return &RequestError{Code: aws.ToString(f.ErrorCode), Message: aws.ToString(f.ErrorMessage)}
	}
	return nil
}

// Rebuild implements SelfService (RebuildWorkspaces).
func (c *Client) Rebuild(ctx context.Context, id string) error {
	out, err := c.api.RebuildWorkspaces(ctx, &workspaces.RebuildWorkspacesInput{RebuildWorkspaceRequests: []types.RebuildRequest{{WorkspaceId: aws.String(id)}}})
	if err != nil {
		return fmt.Errorf("hostd: rebuild %s: %w", id, err)
	}
	if len(out.FailedRequests) > 0 {
		f := out.FailedRequests[0]
		return &RequestError{Code: aws.ToString(f.ErrorCode), Message: aws.ToString(f.ErrorMessage)}
	}
	return nil
}

// LatestBackup implements SelfService (DescribeWorkspaceSnapshots' RebuildSnapshots).
func (c *Client) LatestBackup(ctx context.Context, id string) (time.Time, bool, error) {
	out, err := c.api.DescribeWorkspaceSnapshots(ctx, &workspaces.DescribeWorkspaceSnapshotsInput{WorkspaceId: aws.String(id)})
	if err != nil {
		return time.Time{}, false, fmt.Errorf("hostd: describe snapshots of %s: %w", id, err)
	}
	var last time.Time
	for _, s := range out.RebuildSnapshots {
		if t := aws.ToTime(s.SnapshotTime); t.After(last) {
			last = t
		}
	}
	return last, !last.IsZero(), nil
}

// RequestError is hostd's refusal of one request of a batch.
type RequestError struct{ Code, Message string }

func (e *RequestError) Error() string { return "hostd: " + e.Code + ": " + e.Message }

// Modify implements SelfService (ModifyWorkspaceProperties).
func (c *Client) Modify(ctx context.Context, id string, ch Change) error {
	p := &types.WorkspaceProperties{}
	if ch.ComputeType != "" {
		p.ComputeTypeName = types.Compute(ch.ComputeType)
	}
	if ch.RootVolumeSizeGib > 0 {
		p.RootVolumeSizeGib = aws.Int32(int32(ch.RootVolumeSizeGib))
	}
	if ch.UserVolumeSizeGib > 0 {
		p.UserVolumeSizeGib = aws.Int32(int32(ch.UserVolumeSizeGib))
	}
	if ch.RunningMode != "" {
		p.RunningMode = types.RunningMode(ch.RunningMode)
	}
	if _, err := c.api.ModifyWorkspaceProperties(ctx, &workspaces.ModifyWorkspacePropertiesInput{WorkspaceId: aws.String(id), WorkspaceProperties: p}); err != nil {
		return fmt.Errorf("hostd: modify %s: %w", id, err)
	}
	return nil
}

// ReportConnections tells hostd which WorkSpaces users are streaming now (hostd's own
// operation ReportConnections, on its local socket only): the whole list, every other
// WorkSpace counts as disconnected.
func (c *Client) ReportConnections(ctx context.Context, connected []string) error {
	if _, err := c.api.ReportConnections(ctx, &hostdclient.ReportConnectionsInput{ConnectedWorkspaceIds: connected}); err != nil {
		return fmt.Errorf("hostd: report connections: %w", err)
	}
	return nil
}

// Catalog is what zeroclient enforces, as hostd's store holds it: the registered
// directories with their login settings (secrets included), device access and IP access
// control groups, at a revision.
type Catalog struct {
	Revision    uint64
	Directories []catalog.Directory
	IpGroups    []catalog.IPGroup
}

// MaxCatalogWait bounds one long poll, inside the client's request timeout.
const MaxCatalogWait = 20 * time.Second

// DescribeCatalog reads the catalog (hostd's own operation DescribeCatalog, local socket
// only). With wait > 0 hostd answers as soon as the revision differs from since, or after
// wait with the same revision.
func (c *Client) DescribeCatalog(ctx context.Context, since uint64, wait time.Duration) (Catalog, error) {
	in := &hostdclient.DescribeCatalogInput{}
	if wait > 0 {
		in.SinceRevision, in.WaitSeconds = &since, int(min(wait, MaxCatalogWait)/time.Second)
	}
	out, err := c.api.DescribeCatalog(ctx, in)
	if err != nil {
		return Catalog{}, fmt.Errorf("hostd: describe catalog: %w", err)
	}
	return Catalog{Revision: out.Revision, Directories: out.Directories, IpGroups: out.IpGroups}, nil
}

// Router is what a broker of a fleet asks of hostd besides Backend: whether this host
// runs a WorkSpace (its own gateway streams it), and else a connect tag from the gateway of
// the host that does, the only one where it can be redeemed.
type Router interface {
	Local(ctx context.Context, id string) (bool, error)
	RemoteTag(ctx context.Context, r TagRequest) (Grant, error)
}

// TagRequest asks for a connect tag for a user logged in at this broker.
type TagRequest struct {
	WorkspaceID, DirectoryID, UserName string
	Client                             netip.Addr
	SessionID                          string
}

// Grant is a connect tag issued by another host's gateway, and that gateway.
type Grant struct {
	ConnectTag, SessionID string
	Gateway               string // host:port
	Hostname              string // its name (the target's hostname and SNI)
	HostID                string
	Expires               time.Time
}

var _ Router = (*Client)(nil)

// Local implements Router (hostd's own operation FindWorkspace, local socket only).
func (c *Client) Local(ctx context.Context, id string) (bool, error) {
	out, err := c.api.FindWorkspace(ctx, &hostdclient.FindWorkspaceInput{WorkspaceId: id})
	if err != nil {
		return false, fmt.Errorf("hostd: find %s: %w", id, err)
	}
	if !out.Found {
		return false, fmt.Errorf("hostd: WorkSpace %s not found", id)
	}
	return out.Local, nil
}

// RemoteTag implements Router (hostd's own operation IssueConnectTag, local socket only:
// hostd asks the owning host over the fleet's mutual TLS).
func (c *Client) RemoteTag(ctx context.Context, r TagRequest) (Grant, error) {
	out, err := c.api.IssueConnectTag(ctx, &hostdclient.IssueConnectTagInput{WorkspaceId: r.WorkspaceID, DirectoryId: r.DirectoryID,
		UserName: r.UserName, ClientAddress: r.Client.String(), SessionId: r.SessionID})
	if err != nil {
		return Grant{}, fmt.Errorf("hostd: connect tag for %s: %w", r.WorkspaceID, err)
	}
	g := Grant{ConnectTag: out.ConnectTag, SessionID: out.SessionId, Gateway: out.Gateway, Hostname: out.Hostname, HostID: out.HostId}
	if out.Expires != nil {
		g.Expires = time.Unix(0, int64(*out.Expires*1e9))
	}
	if g.ConnectTag == "" || g.Gateway == "" {
		return Grant{}, fmt.Errorf("hostd: connect tag for %s: host %s gave no tag or no gateway address", r.WorkspaceID, g.HostID)
	}
	return g, nil
}
