package api

import (
	"strconv"
	"time"

	"deskhost/hostd/service"
	"deskhost/hostd/workspace"
	"deskhost/internal/catalog"
)

// The Go types of AWS's WorkSpaces shapes, with the wire's member names. Request types
// mirror the model shapes in model.go (TestRequestTypesMatchModel checks they agree);
// optional members are pointers or omitted when empty so that a request echoed back in
// a FailedCreateWorkspaceRequest reads as it was sent.

type wireWorkspaceProperties struct {
	RunningMode                         *string  `json:"RunningMode,omitempty"`
	RunningModeAutoStopTimeoutInMinutes *int     `json:"RunningModeAutoStopTimeoutInMinutes,omitempty"`
	RootVolumeSizeGib                   *int     `json:"RootVolumeSizeGib,omitempty"`
	UserVolumeSizeGib                   *int     `json:"UserVolumeSizeGib,omitempty"`
	ComputeTypeName                     *string  `json:"ComputeTypeName,omitempty"`
	Protocols                           []string `json:"Protocols,omitempty"`
}

type wireTag struct {
	Key   string  `json:"Key"`
	Value *string `json:"Value,omitempty"`
}

type wireWorkspaceRequest struct {
	DirectoryId                 string                   `json:"DirectoryId"`
	UserName                    string                   `json:"UserName"`
	BundleId                    string                   `json:"BundleId"`
	VolumeEncryptionKey         *string                  `json:"VolumeEncryptionKey,omitempty"`
	UserVolumeEncryptionEnabled *bool                    `json:"UserVolumeEncryptionEnabled,omitempty"`
	RootVolumeEncryptionEnabled *bool                    `json:"RootVolumeEncryptionEnabled,omitempty"`
	WorkspaceProperties         *wireWorkspaceProperties `json:"WorkspaceProperties,omitempty"`
	Tags                        []wireTag                `json:"Tags,omitempty"`
}

type createWorkspacesRequest struct {
	Workspaces []wireWorkspaceRequest `json:"Workspaces"`
}

type describeWorkspacesRequest struct {
	WorkspaceIds []string `json:"WorkspaceIds,omitempty"`
	DirectoryId  *string  `json:"DirectoryId,omitempty"`
	UserName     *string  `json:"UserName,omitempty"`
	BundleId     *string  `json:"BundleId,omitempty"`
	Limit        *int     `json:"Limit,omitempty"`
	NextToken    *string  `json:"NextToken,omitempty"`
}

// workspaceIDRequest is a RebootRequest, StopRequest, StartRequest or TerminateRequest;
// the model leaves WorkspaceId optional in the middle two.
type workspaceIDRequest struct {
	WorkspaceId string `json:"WorkspaceId,omitempty"`
}

type rebootWorkspacesRequest struct {
	RebootWorkspaceRequests []workspaceIDRequest `json:"RebootWorkspaceRequests"`
}

type stopWorkspacesRequest struct {
	StopWorkspaceRequests []workspaceIDRequest `json:"StopWorkspaceRequests"`
}

type startWorkspacesRequest struct {
	StartWorkspaceRequests []workspaceIDRequest `json:"StartWorkspaceRequests"`
}

type terminateWorkspacesRequest struct {
	TerminateWorkspaceRequests []workspaceIDRequest `json:"TerminateWorkspaceRequests"`
}

type modifyWorkspaceStateRequest struct {
	WorkspaceId    string `json:"WorkspaceId"`
	WorkspaceState string `json:"WorkspaceState"`
}

type modifyWorkspacePropertiesRequest struct {
	WorkspaceId         string                   `json:"WorkspaceId"`
	WorkspaceProperties *wireWorkspaceProperties `json:"WorkspaceProperties"`
}

type describeWorkspaceBundlesRequest struct {
	BundleIds []string `json:"BundleIds,omitempty"`
	Owner     *string  `json:"Owner,omitempty"`
	NextToken *string  `json:"NextToken,omitempty"`
}

type describeWorkspaceDirectoriesRequest struct {
	DirectoryIds []string `json:"DirectoryIds,omitempty"`
	Limit        *int     `json:"Limit,omitempty"`
	NextToken    *string  `json:"NextToken,omitempty"`
}

// Responses.

type wireWorkspacePropertiesOut struct {
	RunningMode                         string   `json:"RunningMode"`
	RunningModeAutoStopTimeoutInMinutes *int     `json:"RunningModeAutoStopTimeoutInMinutes,omitempty"`
	RootVolumeSizeGib                   int      `json:"RootVolumeSizeGib"`
	UserVolumeSizeGib                   int      `json:"UserVolumeSizeGib"`
	ComputeTypeName                     string   `json:"ComputeTypeName"`
	Protocols                           []string `json:"Protocols"`
}

type wireModificationState struct {
	Resource string `json:"Resource"`
	State    string `json:"State"`
}

type wireWorkspace struct {
	WorkspaceId                 string                     `json:"WorkspaceId"`
	DirectoryId                 string                     `json:"DirectoryId"`
	UserName                    string                     `json:"UserName"`
	IpAddress                   string                     `json:"IpAddress,omitempty"`
	State                       string                     `json:"State"`
	BundleId                    string                     `json:"BundleId"`
	ErrorMessage                string                     `json:"ErrorMessage,omitempty"`
	ErrorCode                   string                     `json:"ErrorCode,omitempty"`
	ComputerName                string                     `json:"ComputerName,omitempty"`
	UserVolumeEncryptionEnabled bool                       `json:"UserVolumeEncryptionEnabled"`
	RootVolumeEncryptionEnabled bool                       `json:"RootVolumeEncryptionEnabled"`
	VolumeEncryptionKey         string                     `json:"VolumeEncryptionKey,omitempty"`
	WorkspaceProperties         wireWorkspacePropertiesOut `json:"WorkspaceProperties"`
	ModificationStates          []wireModificationState    `json:"ModificationStates"`
}

func toWireWorkspace(w workspace.Workspace) wireWorkspace {
	p := wireWorkspacePropertiesOut{
		RunningMode:       string(w.Properties.RunningMode),
		RootVolumeSizeGib: w.Properties.RootVolumeSizeGib,
		UserVolumeSizeGib: w.Properties.UserVolumeSizeGib,
		ComputeTypeName:   w.Properties.ComputeTypeName,
		Protocols:         []string{},
	}
	if w.Properties.AutoStopTimeoutMinutes != 0 {
		v := w.Properties.AutoStopTimeoutMinutes
		p.RunningModeAutoStopTimeoutInMinutes = &v
	}
	if w.Properties.Protocol != "" {
		p.Protocols = []string{w.Properties.Protocol}
	}
	return wireWorkspace{
		WorkspaceId:         w.ID,
		DirectoryId:         w.DirectoryID,
		UserName:            w.UserName,
		IpAddress:           w.IPAddress,
		State:               string(w.State),
		BundleId:            w.BundleID,
		ErrorMessage:        w.ErrorMessage,
		ErrorCode:           w.ErrorCode,
		ComputerName:        w.ComputerName,
		WorkspaceProperties: p,
		ModificationStates:  toWireModifications(w.Modification),

		RootVolumeEncryptionEnabled: w.Encryption.Root,
		UserVolumeEncryptionEnabled: w.Encryption.User,
		VolumeEncryptionKey:         w.Encryption.KeyRef,
	}
}

// toWireModifications is AWS's ModificationStates: the change an UPDATING WorkSpace is
// making (the guide's MODIFYING_COMPUTE or MODIFYING_STORAGE), or none.
func toWireModifications(m workspace.Modification) []wireModificationState {
	if !m.Active() {
		return []wireModificationState{}
	}
	return []wireModificationState{{Resource: string(m.Resource), State: workspace.UpdateInProgress}}
}

func toWireWorkspaces(ws []workspace.Workspace) []wireWorkspace {
	out := make([]wireWorkspace, 0, len(ws))
	for _, w := range ws {
		out = append(out, toWireWorkspace(w))
	}
	return out
}

type wireFailedCreate struct {
	WorkspaceRequest wireWorkspaceRequest `json:"WorkspaceRequest"`
	ErrorCode        string               `json:"ErrorCode"`
	ErrorMessage     string               `json:"ErrorMessage"`
}

type createWorkspacesResult struct {
	FailedRequests  []wireFailedCreate `json:"FailedRequests"`
	PendingRequests []wireWorkspace    `json:"PendingRequests"`
}

type describeWorkspacesResult struct {
	Workspaces []wireWorkspace `json:"Workspaces"`
	NextToken  string          `json:"NextToken,omitempty"`
}

type wireFailedChange struct {
	WorkspaceId  string `json:"WorkspaceId"`
	ErrorCode    string `json:"ErrorCode"`
	ErrorMessage string `json:"ErrorMessage"`
}

type failedRequestsResult struct {
	FailedRequests []wireFailedChange `json:"FailedRequests"`
}

func toWireFailures(fs []service.Failure) []wireFailedChange {
	out := make([]wireFailedChange, 0, len(fs))
	for _, f := range fs {
		out = append(out, wireFailedChange{WorkspaceId: f.WorkspaceID, ErrorCode: f.Code, ErrorMessage: f.Message})
	}
	return out
}

type emptyResult struct{}

type wireCapacity struct {
	Capacity string `json:"Capacity"`
}

type wireComputeType struct {
	Name string `json:"Name"`
}

type wireBundle struct {
	BundleId        string          `json:"BundleId"`
	Name            string          `json:"Name"`
	Owner           string          `json:"Owner"`
	Description     string          `json:"Description,omitempty"`
	ImageId         string          `json:"ImageId"`
	RootStorage     wireCapacity    `json:"RootStorage"`
	UserStorage     wireCapacity    `json:"UserStorage"`
	ComputeType     wireComputeType `json:"ComputeType"`
	State           string          `json:"State"`
	BundleType      string          `json:"BundleType"`
	CreationTime    *epochSeconds   `json:"CreationTime,omitempty"`
	LastUpdatedTime *epochSeconds   `json:"LastUpdatedTime,omitempty"`
}

// Every bundle on this host is the account's own (AWS's "custom" bundles): its Owner is
// the account, as AWS reports custom bundles.
func toWireBundle(b catalog.Bundle) wireBundle {
	name := b.Name
	if name == "" {
		name = b.ID
	}
	return wireBundle{
		BundleId:        b.ID,
		Name:            name,
		Owner:           catalog.AccountID,
		Description:     b.Description,
		ImageId:         b.ImageID,
		RootStorage:     wireCapacity{Capacity: strconv.Itoa(b.RootGiB)},
		UserStorage:     wireCapacity{Capacity: strconv.Itoa(b.UserGiB)},
		ComputeType:     wireComputeType{Name: string(b.ComputeType)},
		State:           "AVAILABLE",
		BundleType:      "REGULAR",
		CreationTime:    epochOrNil(b.Created),
		LastUpdatedTime: epochOrNil(b.Updated),
	}
}

type describeWorkspaceBundlesResult struct {
	Bundles   []wireBundle `json:"Bundles"`
	NextToken string       `json:"NextToken,omitempty"`
}

type wireDefaultCreationProperties struct {
	EnableWorkDocs                  bool   `json:"EnableWorkDocs"`
	EnableInternetAccess            bool   `json:"EnableInternetAccess"`
	DefaultOu                       string `json:"DefaultOu,omitempty"`
	UserEnabledAsLocalAdministrator bool   `json:"UserEnabledAsLocalAdministrator"`
	EnableMaintenanceMode           bool   `json:"EnableMaintenanceMode"`
}

type wireDirectory struct {
	DirectoryId                 string                        `json:"DirectoryId"`
	Alias                       string                        `json:"Alias,omitempty"`
	DirectoryName               string                        `json:"DirectoryName,omitempty"`
	RegistrationCode            string                        `json:"RegistrationCode,omitempty"`
	SubnetIds                   []string                      `json:"SubnetIds,omitempty"`
	DirectoryType               string                        `json:"DirectoryType"`
	State                       string                        `json:"State"`
	WorkspaceCreationProperties wireDefaultCreationProperties `json:"WorkspaceCreationProperties"`
	IpGroupIds                  []string                      `json:"ipGroupIds"`
	WorkspaceAccessProperties   wireAccessProperties          `json:"WorkspaceAccessProperties"`
	Tenancy                     string                        `json:"Tenancy,omitempty"`
	SelfservicePermissions      wireSelfService               `json:"SelfservicePermissions"`
}

// directoryType maps the login type onto AWS's directory types: a local directory is this
// host's own (Simple AD's place); an LDAP one is an existing directory reached through a
// connector (AD Connector's place).
func directoryType(t catalog.DirectoryType) string {
	if t == catalog.TypeLDAP {
		return "AD_CONNECTOR"
	}
	return "SIMPLE_AD"
}

func access(d catalog.DeviceAccess, t catalog.DeviceType) string {
	if d.Allowed(t) {
		return string(catalog.Allow)
	}
	return string(catalog.Deny)
}

func toWireDirectory(rec catalog.DirectoryRecord) wireDirectory {
	d, reg := rec.Definition, rec.Registration
	w := wireDirectory{DirectoryId: d.ID, Alias: d.Alias, DirectoryName: d.Name, DirectoryType: directoryType(d.Login.Kind()),
		State: "DEREGISTERED", IpGroupIds: []string{}}
	if reg == nil {
		return w
	}
	a := reg.DeviceAccess
	w.State, w.RegistrationCode, w.SubnetIds, w.Tenancy = "REGISTERED", reg.Code, reg.SubnetIDs, reg.Tenancy
	w.IpGroupIds = append(w.IpGroupIds, reg.IPGroupIDs...)
	c := reg.Creation
	w.WorkspaceCreationProperties = wireDefaultCreationProperties{EnableWorkDocs: c.EnableWorkDocs, EnableInternetAccess: c.EnableInternetAccess,
		DefaultOu: c.DefaultOU, UserEnabledAsLocalAdministrator: c.UserEnabledAsLocalAdministrator, EnableMaintenanceMode: c.EnableMaintenanceMode}
	w.WorkspaceAccessProperties = wireAccessProperties{DeviceTypeWindows: access(a, catalog.DeviceWindows), DeviceTypeOsx: access(a, catalog.DeviceMacOS),
		DeviceTypeWeb: access(a, catalog.DeviceWeb), DeviceTypeIos: access(a, catalog.DeviceIOS), DeviceTypeAndroid: access(a, catalog.DeviceAndroid),
		DeviceTypeChromeOs: access(a, catalog.DeviceChromeOS), DeviceTypeZeroClient: access(a, catalog.DeviceZeroClient), DeviceTypeLinux: access(a, catalog.DeviceLinux)}
	p := reg.SelfService
	w.SelfservicePermissions = wireSelfService{RestartWorkspace: string(p.RestartWorkspace), IncreaseVolumeSize: string(p.IncreaseVolumeSize),
		ChangeComputeType: string(p.ChangeComputeType), SwitchRunningMode: string(p.SwitchRunningMode), RebuildWorkspace: string(p.RebuildWorkspace)}
	return w
}

type describeWorkspaceDirectoriesResult struct {
	Directories []wireDirectory `json:"Directories"`
	NextToken   string          `json:"NextToken,omitempty"`
}

// errorBody is an AWS JSON protocol error.
type errorBody struct {
	Type    string `json:"__type"`
	Message string `json:"message"`
}

type describeWorkspacesConnectionStatusRequest struct {
	WorkspaceIds []string `json:"WorkspaceIds,omitempty"`
	NextToken    *string  `json:"NextToken,omitempty"`
}

type reportConnectionsRequest struct {
	ConnectedWorkspaceIds []string `json:"ConnectedWorkspaceIds"`
}

// epochSeconds is a timestamp as AWS's JSON protocols write one: seconds since the epoch,
// with milliseconds.
type epochSeconds time.Time

func (e epochSeconds) MarshalJSON() ([]byte, error) {
	return strconv.AppendFloat(nil, float64(time.Time(e).UnixMilli())/1000, 'f', -1, 64), nil
}

func epochOrNil(t time.Time) *epochSeconds {
	if t.IsZero() {
		return nil
	}
	e := epochSeconds(t)
	return &e
}

type wireConnectionStatus struct {
	WorkspaceId                      string        `json:"WorkspaceId"`
	ConnectionState                  string        `json:"ConnectionState"`
	ConnectionStateCheckTimestamp    *epochSeconds `json:"ConnectionStateCheckTimestamp,omitempty"`
	LastKnownUserConnectionTimestamp *epochSeconds `json:"LastKnownUserConnectionTimestamp,omitempty"`
}

type describeWorkspacesConnectionStatusResult struct {
	WorkspacesConnectionStatus []wireConnectionStatus `json:"WorkspacesConnectionStatus"`
	NextToken                  string                 `json:"NextToken,omitempty"`
}
