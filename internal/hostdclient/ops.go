package hostdclient

import (
	"context"

	"deskhost/internal/catalog"
)

// hostd's own operations, which AWS's SDK does not know. Adding one is its request and
// response types (the JSON members as hostd's API names them) and a method calling Call
// with its X-Amz-Target.

// ReportConnectionsInput is hostd's own ReportConnections (local socket only): the
// WorkSpaces users are streaming now, the whole list; every other WorkSpace counts as
// disconnected.
type ReportConnectionsInput struct {
	ConnectedWorkspaceIds []string
}

// ReportConnectionsOutput is its (empty) response.
type ReportConnectionsOutput struct{}

// ReportConnections tells hostd which WorkSpaces users are streaming.
func (c *Client) ReportConnections(ctx context.Context, in *ReportConnectionsInput) (*ReportConnectionsOutput, error) {
	req := *in
	if req.ConnectedWorkspaceIds == nil {
		req.ConnectedWorkspaceIds = []string{} // "none", which hostd tells from a missing list
	}
	out := &ReportConnectionsOutput{}
	return out, c.Call(ctx, DeskhostTarget+"ReportConnections", &req, out)
}

// DescribeCatalogInput is hostd's own DescribeCatalog (local socket only). With
// WaitSeconds > 0 (at most 50) hostd answers as soon as the catalog's revision differs
// from SinceRevision, or after WaitSeconds with the same revision: a long poll.
type DescribeCatalogInput struct {
	SinceRevision *uint64 `json:",omitempty"`
	WaitSeconds   int     `json:",omitempty"`
}

// DescribeCatalogOutput is the catalog as the connection manager enforces it: the
// registered directories with their login settings (secrets included: the socket is
// root's), device access and IP access control groups folded in, and the groups.
type DescribeCatalogOutput struct {
	Revision    uint64
	Directories []catalog.Directory
	IpGroups    []catalog.IPGroup
}

// DescribeCatalog reads hostd's catalog.
func (c *Client) DescribeCatalog(ctx context.Context, in *DescribeCatalogInput) (*DescribeCatalogOutput, error) {
	out := &DescribeCatalogOutput{}
	return out, c.Call(ctx, DeskhostTarget+"DescribeCatalog", in, out)
}

// PutDirectoryInput defines a directory or replaces its definition: the YAML (or JSON)
// document `hostd directory put` reads (internal/catalog.Directory), decoded strictly by
// hostd.
type PutDirectoryInput struct {
	Definition string
}

// PutDirectoryOutput names the directory and whether it is new.
type PutDirectoryOutput struct {
	DirectoryId string
	Created     bool
}

// PutDirectory defines a directory (what AWS keeps in Directory Service).
func (c *Client) PutDirectory(ctx context.Context, in *PutDirectoryInput) (*PutDirectoryOutput, error) {
	out := &PutDirectoryOutput{}
	return out, c.Call(ctx, DeskhostTarget+"PutDirectory", in, out)
}

// DirectoryIDInput names one directory.
type DirectoryIDInput struct {
	DirectoryId string
}

// DeleteDirectory deletes a directory's definition (it must be deregistered).
func (c *Client) DeleteDirectory(ctx context.Context, in *DirectoryIDInput) error {
	return c.Call(ctx, DeskhostTarget+"DeleteDirectory", in, nil)
}

// DescribeDirectoriesInput selects directories (all if empty).
type DescribeDirectoriesInput struct {
	DirectoryIds []string `json:",omitempty"`
}

// Directory is one directory's definition as hostd describes it: secrets never shown.
type Directory struct {
	DirectoryId, DirectoryName, Alias string
	Type                              string // local or ldap
	State                             string // REGISTERED or NOT_REGISTERED
	RegistrationCode                  string
	Users                             int
	Login                             catalog.Login
}

// DescribeDirectoriesOutput lists directories.
type DescribeDirectoriesOutput struct {
	Directories []Directory
}

// DescribeDirectories lists directory definitions, registered or not.
func (c *Client) DescribeDirectories(ctx context.Context, in *DescribeDirectoriesInput) (*DescribeDirectoriesOutput, error) {
	out := &DescribeDirectoriesOutput{}
	return out, c.Call(ctx, DeskhostTarget+"DescribeDirectories", in, out)
}

// User is a directory user.
type User struct {
	UserName  string
	FirstName string `json:",omitempty"`
	LastName  string `json:",omitempty"`
	Email     string `json:",omitempty"`
}

// CreateUsersInput adds users to a directory.
type CreateUsersInput struct {
	DirectoryId string
	Users       []User
}

// CreateUsers adds users to a directory.
func (c *Client) CreateUsers(ctx context.Context, in *CreateUsersInput) error {
	return c.Call(ctx, DeskhostTarget+"CreateUsers", in, nil)
}

// DeleteUsersInput removes users from a directory.
type DeleteUsersInput struct {
	DirectoryId string
	UserNames   []string
}

// DeleteUsers removes users (not one who has a WorkSpace).
func (c *Client) DeleteUsers(ctx context.Context, in *DeleteUsersInput) error {
	return c.Call(ctx, DeskhostTarget+"DeleteUsers", in, nil)
}

// DescribeUsersOutput lists a directory's users.
type DescribeUsersOutput struct {
	Users []User
}

// DescribeUsers lists a directory's users.
func (c *Client) DescribeUsers(ctx context.Context, in *DirectoryIDInput) (*DescribeUsersOutput, error) {
	out := &DescribeUsersOutput{}
	return out, c.Call(ctx, DeskhostTarget+"DescribeUsers", in, out)
}

// RegisterImageInput adds a desktop image directory (imagebuild's) to the catalog.
type RegisterImageInput struct {
	Directory   string
	ImageId     string `json:",omitempty"`
	Name        string `json:",omitempty"`
	Description string `json:",omitempty"`
}

// RegisterImageOutput is the image as DescribeWorkspaceImages shows it.
type RegisterImageOutput struct {
	ImageId string
	Name    string
}

// RegisterImage registers a desktop image.
func (c *Client) RegisterImage(ctx context.Context, in *RegisterImageInput) (*RegisterImageOutput, error) {
	out := &RegisterImageOutput{}
	return out, c.Call(ctx, DeskhostTarget+"RegisterImage", in, out)
}

// The fleet's hosts (hostd's own operations).

// Resources are vCPUs and memory.
type Resources struct {
	VCPUs     int `json:"vcpus"`
	MemoryMiB int `json:"memoryMiB"`
}

// HostAddresses are where a host's services are reached.
type HostAddresses struct {
	API        string `json:"api,omitempty"`
	Fleet      string `json:"fleet,omitempty"`
	Broker     string `json:"broker,omitempty"`
	Gateway    string `json:"gateway,omitempty"`
	EtcdClient string `json:"etcdClient,omitempty"`
	EtcdPeer   string `json:"etcdPeer,omitempty"`
}

// Host is one host of the fleet as DescribeHosts lists it; a host waiting to join has no
// HostId yet, and its JoinCode.
type Host struct {
	HostId, Name, HardwareId string
	State                    string // joining, ready, draining, down
	JoinCode                 string
	EtcdMember               bool
	Addresses                HostAddresses
	Capacity                 Resources
	Reserved                 Resources // by its live WorkSpaces
	Running                  Resources // by those that should be running
	Workspaces               int
	Images                   int
	DownSince, Started       *float64
	DownReason               string
	ComputeTypes             map[catalog.ComputeType]catalog.Hardware
}

// DescribeHostsOutput lists the hosts.
type DescribeHostsOutput struct {
	Hosts []Host
}

// DescribeHosts lists every host with its state, capacity and load, and the hosts waiting
// to join.
func (c *Client) DescribeHosts(ctx context.Context) (*DescribeHostsOutput, error) {
	out := &DescribeHostsOutput{}
	return out, c.Call(ctx, DeskhostTarget+"DescribeHosts", struct{}{}, out)
}

// HostIDInput names one host.
type HostIDInput struct {
	HostId string
}

// DrainHost stops placing new WorkSpaces on a host.
func (c *Client) DrainHost(ctx context.Context, in *HostIDInput) error {
	return c.Call(ctx, DeskhostTarget+"DrainHost", in, nil)
}

// UndrainHost places new WorkSpaces on a drained host again.
func (c *Client) UndrainHost(ctx context.Context, in *HostIDInput) error {
	return c.Call(ctx, DeskhostTarget+"UndrainHost", in, nil)
}

// ApproveHostInput is the join code a new host's console shows.
type ApproveHostInput struct {
	Code string
}

// ApproveHostOutput is the host approved.
type ApproveHostOutput struct {
	HostId, Name, HardwareId string
}

// ApproveHost approves the host waiting to join with a code.
func (c *Client) ApproveHost(ctx context.Context, in *ApproveHostInput) (*ApproveHostOutput, error) {
	out := &ApproveHostOutput{}
	return out, c.Call(ctx, DeskhostTarget+"ApproveHost", in, out)
}

// PreapproveHostInput lets a hardware id join unattended (ValidMinutes: default a day).
type PreapproveHostInput struct {
	HardwareId   string
	ValidMinutes int `json:",omitempty"`
}

// PreapproveHostOutput says until when.
type PreapproveHostOutput struct {
	HardwareId string
	Expires    *float64
}

// PreapproveHost lets the host with a hardware id join without approval, once.
func (c *Client) PreapproveHost(ctx context.Context, in *PreapproveHostInput) (*PreapproveHostOutput, error) {
	out := &PreapproveHostOutput{}
	return out, c.Call(ctx, DeskhostTarget+"PreapproveHost", in, out)
}

// WorkspaceHostsInput selects WorkSpaces (all if empty).
type WorkspaceHostsInput struct {
	WorkspaceIds []string `json:",omitempty"`
}

// Placement is the host a WorkSpace runs on.
type Placement struct {
	WorkspaceId, HostId, HostName, HostState string
}

// DescribeWorkspaceHostsOutput lists placements.
type DescribeWorkspaceHostsOutput struct {
	Placements []Placement
}

// DescribeWorkspaceHosts says which host owns each WorkSpace.
func (c *Client) DescribeWorkspaceHosts(ctx context.Context, in *WorkspaceHostsInput) (*DescribeWorkspaceHostsOutput, error) {
	out := &DescribeWorkspaceHostsOutput{}
	return out, c.Call(ctx, DeskhostTarget+"DescribeWorkspaceHosts", in, out)
}

// FindWorkspaceInput finds a WorkSpace by id, or the user's (directory and user name):
// hostd's own, for the connection manager, on the local socket only.
type FindWorkspaceInput struct {
	WorkspaceId string `json:",omitempty"`
	DirectoryId string `json:",omitempty"`
	UserName    string `json:",omitempty"`
}

// FoundWorkspace is a WorkSpace as the connection manager needs it (AWS's members).
type FoundWorkspace struct {
	WorkspaceId, DirectoryId, UserName, State, BundleId, ComputerName string
	WorkspaceProperties                                               struct {
		RunningMode string
		Protocols   []string
	}
}

// FindWorkspaceOutput says whether it was found and whether this host runs it (else
// HostId's gateway streams it).
type FindWorkspaceOutput struct {
	Found, Local bool
	HostId       string
	Workspace    *FoundWorkspace
}

// FindWorkspace finds a WorkSpace and where it runs.
func (c *Client) FindWorkspace(ctx context.Context, in *FindWorkspaceInput) (*FindWorkspaceOutput, error) {
	out := &FindWorkspaceOutput{}
	return out, c.Call(ctx, DeskhostTarget+"FindWorkspace", in, out)
}

// IssueConnectTagInput asks, for a user logged in here, a connect tag from the gateway of
// the host that runs the WorkSpace (local socket only).
type IssueConnectTagInput struct {
	WorkspaceId, DirectoryId, UserName, ClientAddress string
	SessionId                                         string `json:",omitempty"`
}

// IssueConnectTagOutput is the tag and the gateway that redeems it.
type IssueConnectTagOutput struct {
	ConnectTag, SessionId, Gateway, Hostname, HostId string
	Expires                                          *float64
}

// IssueConnectTag gets a connect tag from the owning host's gateway.
func (c *Client) IssueConnectTag(ctx context.Context, in *IssueConnectTagInput) (*IssueConnectTagOutput, error) {
	out := &IssueConnectTagOutput{}
	return out, c.Call(ctx, DeskhostTarget+"IssueConnectTag", in, out)
}

// ImportImageInput is hostd's own ImportImage (AWS's ImportWorkspaceImage for disks): AWS's request with
// Source (an absolute path on the host or an http(s) URL of a qcow2 or raw disk image, or
// the path of an imagebuild desktop image directory) in place of Ec2ImageId.
type ImportImageInput struct {
	Source           string
	IngestionProcess string // BYOL_REGULAR
	ImageName        string
	ImageDescription string
	BaseImageId      string `json:",omitempty"`
}

// ImportImageOutput names the new (PENDING) image.
type ImportImageOutput struct {
	ImageId string
}

// ImportImage starts an import; DescribeWorkspaceImages follows it to AVAILABLE
// or ERROR.
func (c *Client) ImportImage(ctx context.Context, in *ImportImageInput) (*ImportImageOutput, error) {
	out := &ImportImageOutput{}
	return out, c.Call(ctx, DeskhostTarget+"ImportImage", in, out)
}
