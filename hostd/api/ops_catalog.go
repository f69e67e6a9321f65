package api

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"time"

	"deskhost/hostd/service"
	"deskhost/internal/catalog"
	"deskhost/internal/strictyaml"
)

// CatalogService is the catalog half of what the API calls (*service.Service).
type CatalogService interface {
	RegisterWorkspaceDirectory(ctx context.Context, r service.RegisterRequest) error
	DeregisterWorkspaceDirectory(ctx context.Context, id string) error
	DescribeWorkspaceDirectories(ctx context.Context, dirIDs []string) ([]catalog.DirectoryRecord, error)
	ModifyWorkspaceAccessProperties(ctx context.Context, id string, c catalog.DeviceAccess) error
	ModifyWorkspaceCreationProperties(ctx context.Context, id string, c service.CreationChange) error
	ModifySelfservicePermissions(ctx context.Context, id string, c catalog.SelfServicePermissions) error
	ModifyClientProperties(ctx context.Context, id string, c catalog.ClientProperties) error
	DescribeClientProperties(ctx context.Context, ids []string) ([]service.ClientPropertiesResult, error)

	CreateIpGroup(ctx context.Context, name, desc string, rules []service.IPRuleInput, tags []catalog.Tag) (string, error)
	DeleteIpGroup(ctx context.Context, id string) error
	DescribeIpGroups(ctx context.Context, ids []string) ([]catalog.IPGroup, error)
	AuthorizeIpRules(ctx context.Context, id string, rules []service.IPRuleInput) error
	RevokeIpRules(ctx context.Context, id string, rules []string) error
	UpdateRulesOfIpGroup(ctx context.Context, id string, rules []service.IPRuleInput) error
	AssociateIpGroups(ctx context.Context, dirID string, ids []string) error
	DisassociateIpGroups(ctx context.Context, dirID string, ids []string) error

	CreateTags(ctx context.Context, id string, tags []catalog.Tag) error
	DeleteTags(ctx context.Context, id string, keys []string) error
	DescribeTags(ctx context.Context, id string) ([]catalog.Tag, error)

	CreateWorkspaceBundle(ctx context.Context, r service.BundleRequest) (catalog.Bundle, error)
	UpdateWorkspaceBundle(ctx context.Context, bundleID, imageID string) error
	DeleteWorkspaceBundle(ctx context.Context, id string) (bool, error)
	DescribeWorkspaceBundles(ctx context.Context, ids []string) ([]catalog.Bundle, error)
	DescribeWorkspaceImages(ctx context.Context, ids []string) ([]catalog.Image, error)
	DeleteWorkspaceImage(ctx context.Context, id string) error
	RegisterImage(ctx context.Context, r service.ImageRequest) (catalog.Image, error)

	DescribeAccount(ctx context.Context) (service.Account, error)
	ListAvailableManagementCidrRanges(ctx context.Context, constraint string) ([]netip.Prefix, error)

	PutDirectory(ctx context.Context, d catalog.Directory) (string, bool, error)
	DeleteDirectory(ctx context.Context, id string) error
	DescribeDirectories(ctx context.Context, ids []string) ([]catalog.DirectoryRecord, error)
	CreateUsers(ctx context.Context, dirID string, users []catalog.User) error
	DeleteUsers(ctx context.Context, dirID string, names []string) error
	DescribeUsers(ctx context.Context, dirID string) ([]catalog.User, error)

	Catalog(ctx context.Context) (service.CatalogView, error)
	WaitCatalog(ctx context.Context, since uint64, wait time.Duration) (uint64, error)
}

// page cuts one page from items in id order: those after token (the last id of the previous
// page), at most limit. The next token is the last id returned when more remain.
func page[T any](items []T, id func(T) string, token *string, limit *int, max int) ([]T, string, error) {
	start := 0
	if token != nil {
		start = slices.IndexFunc(items, func(t T) bool { return id(t) > *token })
		if start < 0 {
			start = len(items)
		}
	}
	n := max
	if limit != nil {
		n = *limit
	}
	rest := items[start:]
	if len(rest) > n {
		return rest[:n], id(rest[n-1]), nil
	}
	return rest, "", nil
}

func toTags(ws []wireTag) []catalog.Tag {
	var out []catalog.Tag
	for _, t := range ws {
		out = append(out, catalog.Tag{Key: t.Key, Value: deref(t.Value)})
	}
	return out
}

// --- Directories ---

type registerWorkspaceDirectoryRequest struct {
	DirectoryId       string    `json:"DirectoryId"`
	SubnetIds         []string  `json:"SubnetIds,omitempty"`
	EnableWorkDocs    *bool     `json:"EnableWorkDocs,omitempty"`
	EnableSelfService *bool     `json:"EnableSelfService,omitempty"`
	Tenancy           *string   `json:"Tenancy,omitempty"`
	Tags              []wireTag `json:"Tags,omitempty"`
}

type registerWorkspaceDirectoryResult struct {
	DirectoryId string `json:"DirectoryId"`
	State       string `json:"State"`
}

func registerWorkspaceDirectory(ctx context.Context, svc Service, r *registerWorkspaceDirectoryRequest) (any, error) {
	err := svc.RegisterWorkspaceDirectory(ctx, service.RegisterRequest{DirectoryID: r.DirectoryId, EnableWorkDocs: deref(r.EnableWorkDocs),
		EnableSelfService: deref(r.EnableSelfService), Tenancy: deref(r.Tenancy), SubnetIDs: r.SubnetIds, Tags: toTags(r.Tags)})
	if err != nil {
		return nil, err
	}
	// botocore 2.9.19's result is empty; newer SDKs read these two.
	return registerWorkspaceDirectoryResult{DirectoryId: r.DirectoryId, State: "REGISTERED"}, nil
}

type directoryIDRequest struct {
	DirectoryId string `json:"DirectoryId"`
}

func deregisterWorkspaceDirectory(ctx context.Context, svc Service, r *directoryIDRequest) (any, error) {
	return emptyResult{}, svc.DeregisterWorkspaceDirectory(ctx, r.DirectoryId)
}

type wireAccessProperties struct {
	DeviceTypeWindows    string `json:"DeviceTypeWindows,omitempty"`
	DeviceTypeOsx        string `json:"DeviceTypeOsx,omitempty"`
	DeviceTypeWeb        string `json:"DeviceTypeWeb,omitempty"`
	DeviceTypeIos        string `json:"DeviceTypeIos,omitempty"`
	DeviceTypeAndroid    string `json:"DeviceTypeAndroid,omitempty"`
	DeviceTypeChromeOs   string `json:"DeviceTypeChromeOs,omitempty"`
	DeviceTypeZeroClient string `json:"DeviceTypeZeroClient,omitempty"`
	DeviceTypeLinux      string `json:"DeviceTypeLinux,omitempty"`
}

type modifyWorkspaceAccessPropertiesRequest struct {
	ResourceId                string                `json:"ResourceId"`
	WorkspaceAccessProperties *wireAccessProperties `json:"WorkspaceAccessProperties"`
}

func modifyWorkspaceAccessProperties(ctx context.Context, svc Service, r *modifyWorkspaceAccessPropertiesRequest) (any, error) {
	p := deref(r.WorkspaceAccessProperties)
	c := catalog.DeviceAccess{Windows: catalog.Access(p.DeviceTypeWindows), MacOS: catalog.Access(p.DeviceTypeOsx), Web: catalog.Access(p.DeviceTypeWeb),
		IOS: catalog.Access(p.DeviceTypeIos), Android: catalog.Access(p.DeviceTypeAndroid), ChromeOS: catalog.Access(p.DeviceTypeChromeOs),
		ZeroClient: catalog.Access(p.DeviceTypeZeroClient), Linux: catalog.Access(p.DeviceTypeLinux)}
	if c == (catalog.DeviceAccess{}) {
		return nil, catalog.Errorf(catalog.InvalidParameterValues, "WorkspaceAccessProperties names no device type")
	}
	return emptyResult{}, svc.ModifyWorkspaceAccessProperties(ctx, r.ResourceId, c)
}

type wireCreationProperties struct {
	EnableWorkDocs                  *bool   `json:"EnableWorkDocs,omitempty"`
	EnableInternetAccess            *bool   `json:"EnableInternetAccess,omitempty"`
	DefaultOu                       *string `json:"DefaultOu,omitempty"`
	CustomSecurityGroupId           *string `json:"CustomSecurityGroupId,omitempty"`
	UserEnabledAsLocalAdministrator *bool   `json:"UserEnabledAsLocalAdministrator,omitempty"`
	EnableMaintenanceMode           *bool   `json:"EnableMaintenanceMode,omitempty"`
}

type modifyWorkspaceCreationPropertiesRequest struct {
	ResourceId                  string                  `json:"ResourceId"`
	WorkspaceCreationProperties *wireCreationProperties `json:"WorkspaceCreationProperties"`
}

func modifyWorkspaceCreationProperties(ctx context.Context, svc Service, r *modifyWorkspaceCreationPropertiesRequest) (any, error) {
	p := deref(r.WorkspaceCreationProperties)
	if p == (wireCreationProperties{}) {
		return nil, catalog.Errorf(catalog.InvalidParameterValues, "WorkspaceCreationProperties names no property")
	}
	return emptyResult{}, svc.ModifyWorkspaceCreationProperties(ctx, r.ResourceId, service.CreationChange{EnableWorkDocs: p.EnableWorkDocs,
		EnableInternetAccess: p.EnableInternetAccess, DefaultOU: p.DefaultOu, CustomSecurityGroupID: p.CustomSecurityGroupId,
		UserEnabledAsLocalAdministrator: p.UserEnabledAsLocalAdministrator, EnableMaintenanceMode: p.EnableMaintenanceMode})
}

type wireSelfService struct {
	RestartWorkspace   string `json:"RestartWorkspace,omitempty"`
	IncreaseVolumeSize string `json:"IncreaseVolumeSize,omitempty"`
	ChangeComputeType  string `json:"ChangeComputeType,omitempty"`
	SwitchRunningMode  string `json:"SwitchRunningMode,omitempty"`
	RebuildWorkspace   string `json:"RebuildWorkspace,omitempty"`
}

type modifySelfservicePermissionsRequest struct {
	ResourceId             string           `json:"ResourceId"`
	SelfservicePermissions *wireSelfService `json:"SelfservicePermissions"`
}

func modifySelfservicePermissions(ctx context.Context, svc Service, r *modifySelfservicePermissionsRequest) (any, error) {
	p := deref(r.SelfservicePermissions)
	if p == (wireSelfService{}) {
		return nil, catalog.Errorf(catalog.InvalidParameterValues, "SelfservicePermissions names no permission")
	}
	return emptyResult{}, svc.ModifySelfservicePermissions(ctx, r.ResourceId, catalog.SelfServicePermissions{
		RestartWorkspace: catalog.Setting(p.RestartWorkspace), IncreaseVolumeSize: catalog.Setting(p.IncreaseVolumeSize),
		ChangeComputeType: catalog.Setting(p.ChangeComputeType), SwitchRunningMode: catalog.Setting(p.SwitchRunningMode),
		RebuildWorkspace: catalog.Setting(p.RebuildWorkspace)})
}

type wireClientProperties struct {
	ReconnectEnabled string `json:"ReconnectEnabled,omitempty"`
	LogUploadEnabled string `json:"LogUploadEnabled,omitempty"`
}

type modifyClientPropertiesRequest struct {
	ResourceId       string                `json:"ResourceId"`
	ClientProperties *wireClientProperties `json:"ClientProperties"`
}

func modifyClientProperties(ctx context.Context, svc Service, r *modifyClientPropertiesRequest) (any, error) {
	p := deref(r.ClientProperties)
	if p == (wireClientProperties{}) {
		return nil, catalog.Errorf(catalog.InvalidParameterValues, "ClientProperties names no property")
	}
	return emptyResult{}, svc.ModifyClientProperties(ctx, r.ResourceId, catalog.ClientProperties{
		ReconnectEnabled: catalog.Setting(p.ReconnectEnabled), LogUploadEnabled: catalog.Setting(p.LogUploadEnabled)})
}

type describeClientPropertiesRequest struct {
	ResourceIds []string `json:"ResourceIds"`
}

type wireClientPropertiesResult struct {
	ResourceId       string               `json:"ResourceId"`
	ClientProperties wireClientProperties `json:"ClientProperties"`
}

func describeClientProperties(ctx context.Context, svc Service, r *describeClientPropertiesRequest) (any, error) {
	res, err := svc.DescribeClientProperties(ctx, r.ResourceIds)
	if err != nil {
		return nil, err
	}
	out := struct {
		ClientPropertiesList []wireClientPropertiesResult `json:"ClientPropertiesList"`
	}{ClientPropertiesList: []wireClientPropertiesResult{}}
	for _, c := range res {
		out.ClientPropertiesList = append(out.ClientPropertiesList, wireClientPropertiesResult{ResourceId: c.ResourceID,
			ClientProperties: wireClientProperties{ReconnectEnabled: string(c.Properties.ReconnectEnabled), LogUploadEnabled: string(c.Properties.LogUploadEnabled)}})
	}
	return out, nil
}

func describeWorkspaceDirectories(ctx context.Context, svc Service, r *describeWorkspaceDirectoriesRequest) (any, error) {
	ds, err := svc.DescribeWorkspaceDirectories(ctx, r.DirectoryIds)
	if err != nil {
		return nil, err
	}
	if r.NextToken != nil && catalog.CheckID(catalog.KindDirectory, *r.NextToken) != nil {
		return nil, catalog.Errorf(catalog.InvalidParameterValues, "NextToken %s is not one this host issued", quote(*r.NextToken))
	}
	pg, next, err := page(ds, func(d catalog.DirectoryRecord) string { return d.Definition.ID }, r.NextToken, r.Limit, service.BatchLimit)
	if err != nil {
		return nil, err
	}
	res := describeWorkspaceDirectoriesResult{Directories: []wireDirectory{}, NextToken: next}
	for _, d := range pg {
		res.Directories = append(res.Directories, toWireDirectory(d))
	}
	return res, nil
}

// --- IP access control groups ---

type wireIpRule struct {
	IpRule   *string `json:"ipRule,omitempty"`
	RuleDesc *string `json:"ruleDesc,omitempty"`
}

func toRuleInputs(rs []wireIpRule) []service.IPRuleInput {
	out := make([]service.IPRuleInput, 0, len(rs))
	for _, r := range rs {
		out = append(out, service.IPRuleInput{Source: deref(r.IpRule), Description: deref(r.RuleDesc)})
	}
	return out
}

type createIpGroupRequest struct {
	GroupName string       `json:"GroupName"`
	GroupDesc *string      `json:"GroupDesc,omitempty"`
	UserRules []wireIpRule `json:"UserRules,omitempty"`
	Tags      []wireTag    `json:"Tags,omitempty"`
}

func createIpGroup(ctx context.Context, svc Service, r *createIpGroupRequest) (any, error) {
	id, err := svc.CreateIpGroup(ctx, r.GroupName, deref(r.GroupDesc), toRuleInputs(r.UserRules), toTags(r.Tags))
	if err != nil {
		return nil, err
	}
	return struct {
		GroupId string `json:"GroupId"`
	}{id}, nil
}

type groupIDRequest struct {
	GroupId string `json:"GroupId"`
}

func deleteIpGroup(ctx context.Context, svc Service, r *groupIDRequest) (any, error) {
	return emptyResult{}, svc.DeleteIpGroup(ctx, r.GroupId)
}

type describeIpGroupsRequest struct {
	GroupIds   []string `json:"GroupIds,omitempty"`
	NextToken  *string  `json:"NextToken,omitempty"`
	MaxResults *int     `json:"MaxResults,omitempty"`
}

type wireIpRuleOut struct {
	IpRule   string `json:"ipRule"`
	RuleDesc string `json:"ruleDesc,omitempty"`
}

type wireIpGroup struct {
	GroupId   string          `json:"groupId"`
	GroupName string          `json:"groupName"`
	GroupDesc string          `json:"groupDesc,omitempty"`
	UserRules []wireIpRuleOut `json:"userRules"`
}

func toWireIpGroup(g catalog.IPGroup) wireIpGroup {
	w := wireIpGroup{GroupId: g.ID, GroupName: g.Name, GroupDesc: g.Description, UserRules: []wireIpRuleOut{}}
	for _, r := range g.Rules {
		w.UserRules = append(w.UserRules, wireIpRuleOut{IpRule: r.Source.Prefix.String(), RuleDesc: r.Description})
	}
	return w
}

func describeIpGroups(ctx context.Context, svc Service, r *describeIpGroupsRequest) (any, error) {
	gs, err := svc.DescribeIpGroups(ctx, r.GroupIds)
	if err != nil {
		return nil, err
	}
	if r.NextToken != nil && catalog.CheckID(catalog.KindIPGroup, *r.NextToken) != nil {
		return nil, catalog.Errorf(catalog.InvalidParameterValues, "NextToken %s is not one this host issued", quote(*r.NextToken))
	}
	pg, next, err := page(gs, func(g catalog.IPGroup) string { return g.ID }, r.NextToken, r.MaxResults, service.BatchLimit)
	if err != nil {
		return nil, err
	}
	out := struct {
		Result    []wireIpGroup `json:"Result"`
		NextToken string        `json:"NextToken,omitempty"`
	}{Result: []wireIpGroup{}, NextToken: next}
	for _, g := range pg {
		out.Result = append(out.Result, toWireIpGroup(g))
	}
	return out, nil
}

type ipRulesRequest struct {
	GroupId   string       `json:"GroupId"`
	UserRules []wireIpRule `json:"UserRules"`
}

func authorizeIpRules(ctx context.Context, svc Service, r *ipRulesRequest) (any, error) {
	return emptyResult{}, svc.AuthorizeIpRules(ctx, r.GroupId, toRuleInputs(r.UserRules))
}

func updateRulesOfIpGroup(ctx context.Context, svc Service, r *ipRulesRequest) (any, error) {
	return emptyResult{}, svc.UpdateRulesOfIpGroup(ctx, r.GroupId, toRuleInputs(r.UserRules))
}

type revokeIpRulesRequest struct {
	GroupId   string   `json:"GroupId"`
	UserRules []string `json:"UserRules"`
}

func revokeIpRules(ctx context.Context, svc Service, r *revokeIpRulesRequest) (any, error) {
	return emptyResult{}, svc.RevokeIpRules(ctx, r.GroupId, r.UserRules)
}

type ipGroupsAssociationRequest struct {
	DirectoryId string   `json:"DirectoryId"`
	GroupIds    []string `json:"GroupIds"`
}

func associateIpGroups(ctx context.Context, svc Service, r *ipGroupsAssociationRequest) (any, error) {
	return emptyResult{}, svc.AssociateIpGroups(ctx, r.DirectoryId, r.GroupIds)
}

func disassociateIpGroups(ctx context.Context, svc Service, r *ipGroupsAssociationRequest) (any, error) {
	return emptyResult{}, svc.DisassociateIpGroups(ctx, r.DirectoryId, r.GroupIds)
}

// --- Tags ---

type createTagsRequest struct {
	ResourceId string    `json:"ResourceId"`
	Tags       []wireTag `json:"Tags"`
}

func createTags(ctx context.Context, svc Service, r *createTagsRequest) (any, error) {
	return emptyResult{}, svc.CreateTags(ctx, r.ResourceId, toTags(r.Tags))
}

type deleteTagsRequest struct {
	ResourceId string   `json:"ResourceId"`
	TagKeys    []string `json:"TagKeys"`
}

func deleteTags(ctx context.Context, svc Service, r *deleteTagsRequest) (any, error) {
	return emptyResult{}, svc.DeleteTags(ctx, r.ResourceId, r.TagKeys)
}

type resourceIDRequest struct {
	ResourceId string `json:"ResourceId"`
}

type wireTagOut struct {
	Key   string `json:"Key"`
	Value string `json:"Value"`
}

func describeTags(ctx context.Context, svc Service, r *resourceIDRequest) (any, error) {
	tags, err := svc.DescribeTags(ctx, r.ResourceId)
	if err != nil {
		return nil, err
	}
	out := struct {
		TagList []wireTagOut `json:"TagList"`
	}{TagList: []wireTagOut{}}
	for _, t := range tags {
		out.TagList = append(out.TagList, wireTagOut{Key: t.Key, Value: t.Value})
	}
	return out, nil
}

// --- Bundles and images ---

type wireCapacityIn struct {
	Capacity *string `json:"Capacity,omitempty"`
}

type wireComputeTypeIn struct {
	Name *string `json:"Name,omitempty"`
}

type createWorkspaceBundleRequest struct {
	BundleName        string             `json:"BundleName"`
	BundleDescription string             `json:"BundleDescription"`
	ImageId           string             `json:"ImageId"`
	ComputeType       *wireComputeTypeIn `json:"ComputeType"`
	UserStorage       *wireCapacityIn    `json:"UserStorage"`
	RootStorage       *wireCapacityIn    `json:"RootStorage,omitempty"`
	Tags              []wireTag          `json:"Tags,omitempty"`
}

func createWorkspaceBundle(ctx context.Context, svc Service, r *createWorkspaceBundleRequest) (any, error) {
	if r.ComputeType == nil || r.ComputeType.Name == nil {
		return nil, catalog.Errorf(catalog.InvalidParameterValues, "missing required member ComputeType.Name")
	}
	if r.UserStorage == nil || r.UserStorage.Capacity == nil {
		return nil, catalog.Errorf(catalog.InvalidParameterValues, "missing required member UserStorage.Capacity")
	}
	user, err := service.ParseCapacity("UserStorage.Capacity", *r.UserStorage.Capacity)
	if err != nil {
		return nil, err
	}
	root := 0
	if r.RootStorage != nil && r.RootStorage.Capacity != nil {
		if root, err = service.ParseCapacity("RootStorage.Capacity", *r.RootStorage.Capacity); err != nil {
			return nil, err
		}
	}
	b, err := svc.CreateWorkspaceBundle(ctx, service.BundleRequest{Name: r.BundleName, Description: r.BundleDescription, ImageID: r.ImageId,
		ComputeType: catalog.ComputeType(*r.ComputeType.Name), RootGiB: root, UserGiB: user, Tags: toTags(r.Tags)})
	if err != nil {
		return nil, err
	}
	return struct {
		WorkspaceBundle wireBundle `json:"WorkspaceBundle"`
	}{toWireBundle(b)}, nil
}

type updateWorkspaceBundleRequest struct {
	BundleId *string `json:"BundleId,omitempty"`
	ImageId  *string `json:"ImageId,omitempty"`
}

func updateWorkspaceBundle(ctx context.Context, svc Service, r *updateWorkspaceBundleRequest) (any, error) {
	return emptyResult{}, svc.UpdateWorkspaceBundle(ctx, deref(r.BundleId), deref(r.ImageId))
}

type deleteWorkspaceBundleRequest struct {
	BundleId *string `json:"BundleId,omitempty"`
}

func deleteWorkspaceBundle(ctx context.Context, svc Service, r *deleteWorkspaceBundleRequest) (any, error) {
	if r.BundleId == nil {
		return nil, catalog.Errorf(catalog.InvalidParameterValues, "DeleteWorkspaceBundle needs BundleId")
	}
	_, err := svc.DeleteWorkspaceBundle(ctx, *r.BundleId)
	return emptyResult{}, err
}

func describeWorkspaceBundles(ctx context.Context, svc Service, r *describeWorkspaceBundlesRequest) (any, error) {
	res := describeWorkspaceBundlesResult{Bundles: []wireBundle{}}
	if r.Owner != nil && *r.Owner != catalog.AccountID {
		// "To describe the bundles provided by Amazon Web Services, specify AMAZON": this
		// host has none; every bundle is the account's own.
		return res, nil
	}
	bs, err := svc.DescribeWorkspaceBundles(ctx, r.BundleIds)
	if err != nil {
		return nil, err
	}
	if r.NextToken != nil && catalog.CheckID(catalog.KindBundle, *r.NextToken) != nil {
		return nil, catalog.Errorf(catalog.InvalidParameterValues, "NextToken %s is not one this host issued", quote(*r.NextToken))
	}
	pg, next, err := page(bs, func(b catalog.Bundle) string { return b.ID }, r.NextToken, nil, service.BatchLimit)
	if err != nil {
		return nil, err
	}
	res.NextToken = next
	for _, b := range pg {
		res.Bundles = append(res.Bundles, toWireBundle(b))
	}
	return res, nil
}

type describeWorkspaceImagesRequest struct {
	ImageIds   []string `json:"ImageIds,omitempty"`
	ImageType  *string  `json:"ImageType,omitempty"`
	NextToken  *string  `json:"NextToken,omitempty"`
	MaxResults *int     `json:"MaxResults,omitempty"`
}

type wireOperatingSystem struct {
	Type string `json:"Type"`
}

type wireImage struct {
	ImageId         string              `json:"ImageId"`
	Name            string              `json:"Name"`
	Description     string              `json:"Description,omitempty"`
	OperatingSystem wireOperatingSystem `json:"OperatingSystem"`
	State           string              `json:"State"`
	RequiredTenancy string              `json:"RequiredTenancy"`
	ErrorCode       string              `json:"ErrorCode,omitempty"`
	ErrorMessage    string              `json:"ErrorMessage,omitempty"`
	Created         *epochSeconds       `json:"Created,omitempty"`
	OwnerAccountId  string              `json:"OwnerAccountId"`
}

func toWireImage(i catalog.Image) wireImage {
	os := "LINUX"
	if i.OS == catalog.Windows {
		os = "WINDOWS"
	}
	return wireImage{ImageId: i.ID, Name: i.Name, Description: i.Description, OperatingSystem: wireOperatingSystem{os}, State: string(i.Status()),
		RequiredTenancy: "DEFAULT", Created: epochOrNil(i.Created), OwnerAccountId: catalog.AccountID, ErrorCode: i.ErrorCode, ErrorMessage: i.ErrorMessage}
}

func describeWorkspaceImages(ctx context.Context, svc Service, r *describeWorkspaceImagesRequest) (any, error) {
	out := struct {
		Images    []wireImage `json:"Images"`
		NextToken string      `json:"NextToken,omitempty"`
	}{Images: []wireImage{}}
	if deref(r.ImageType) == "SHARED" {
		return out, nil // no image is shared with this account
	}
	imgs, err := svc.DescribeWorkspaceImages(ctx, r.ImageIds)
	if err != nil {
		return nil, err
	}
	if r.NextToken != nil && catalog.CheckID(catalog.KindImage, *r.NextToken) != nil {
		return nil, catalog.Errorf(catalog.InvalidParameterValues, "NextToken %s is not one this host issued", quote(*r.NextToken))
	}
	pg, next, err := page(imgs, func(i catalog.Image) string { return i.ID }, r.NextToken, r.MaxResults, service.BatchLimit)
	if err != nil {
		return nil, err
	}
	out.NextToken = next
	for _, i := range pg {
		out.Images = append(out.Images, toWireImage(i))
	}
	return out, nil
}

type imageIDRequest struct {
	ImageId string `json:"ImageId"`
}

func deleteWorkspaceImage(ctx context.Context, svc Service, r *imageIDRequest) (any, error) {
	return emptyResult{}, svc.DeleteWorkspaceImage(ctx, r.ImageId)
}

// --- Account ---

func describeAccount(ctx context.Context, svc Service, _ *emptyResult) (any, error) {
	a, err := svc.DescribeAccount(ctx)
	if err != nil {
		return nil, err
	}
	quotas, err := wireQuotas(ctx, svc)
	if err != nil {
		return nil, err
	}
	out := struct {
		DedicatedTenancySupport             string      `json:"DedicatedTenancySupport"`
		DedicatedTenancyManagementCidrRange string      `json:"DedicatedTenancyManagementCidrRange,omitempty"`
		Quotas                              []WireQuota `json:"Quotas"` // hostd's own member (ops_usage.go)
	}{DedicatedTenancySupport: a.DedicatedTenancySupport, Quotas: quotas}
	if a.ManagementRange.IsValid() {
		out.DedicatedTenancyManagementCidrRange = a.ManagementRange.String()
	}
	return out, nil
}

type nextTokenRequest struct {
	NextToken *string `json:"NextToken,omitempty"`
}

func describeAccountModifications(ctx context.Context, svc Service, r *nextTokenRequest) (any, error) {
	if r.NextToken != nil {
		return nil, catalog.Errorf(catalog.InvalidParameterValues, "NextToken %s is not one this host issued", quote(*r.NextToken))
	}
	// The account's BYOL configuration is the host's own and has never been modified
	// through the API (ModifyAccount is not offered).
	return struct {
		AccountModifications []struct{} `json:"AccountModifications"`
	}{AccountModifications: []struct{}{}}, nil
}

type listAvailableManagementCidrRangesRequest struct {
	ManagementCidrRangeConstraint string  `json:"ManagementCidrRangeConstraint"`
	MaxResults                    *int    `json:"MaxResults,omitempty"`
	NextToken                     *string `json:"NextToken,omitempty"`
}

func listAvailableManagementCidrRanges(ctx context.Context, svc Service, r *listAvailableManagementCidrRangesRequest) (any, error) {
	ps, err := svc.ListAvailableManagementCidrRanges(ctx, r.ManagementCidrRangeConstraint)
	if err != nil {
		return nil, err
	}
	start := 0
	if r.NextToken != nil {
		t, err := netip.ParsePrefix(*r.NextToken)
		if err != nil {
			return nil, catalog.Errorf(catalog.InvalidParameterValues, "NextToken %s is not one this host issued", quote(*r.NextToken))
		}
		start = slices.IndexFunc(ps, func(p netip.Prefix) bool { return p.Addr().Compare(t.Addr()) > 0 })
		if start < 0 {
			start = len(ps)
		}
	}
	n := 5
	if r.MaxResults != nil {
		n = *r.MaxResults
	}
	out := struct {
		ManagementCidrRanges []string `json:"ManagementCidrRanges"`
		NextToken            string   `json:"NextToken,omitempty"`
	}{ManagementCidrRanges: []string{}}
	rest := ps[start:]
	if len(rest) > n {
		rest = rest[:n]
		out.NextToken = rest[n-1].String()
	}
	for _, p := range rest {
		out.ManagementCidrRanges = append(out.ManagementCidrRanges, p.String())
	}
	return out, nil
}

// --- hostd's own: directory definitions, users, images ---

type putDirectoryRequest struct {
	Definition string `json:"Definition"`
}

func putDirectory(ctx context.Context, svc Service, r *putDirectoryRequest) (any, error) {
	var d catalog.Directory
	if err := strictyaml.Decode([]byte(r.Definition), &d); err != nil {
		return nil, catalog.Errorf(catalog.InvalidParameterValues, "directory definition: %v", err)
	}
	id, created, err := svc.PutDirectory(ctx, d)
	if err != nil {
		return nil, err
	}
	return struct {
		DirectoryId string `json:"DirectoryId"`
		Created     bool   `json:"Created"`
	}{id, created}, nil
}

func deleteDirectory(ctx context.Context, svc Service, r *directoryIDRequest) (any, error) {
	return emptyResult{}, svc.DeleteDirectory(ctx, r.DirectoryId)
}

type describeDirectoriesRequest struct {
	DirectoryIds []string `json:"DirectoryIds,omitempty"`
}

// wireDirectoryDefinition is one directory as DescribeDirectories shows it: its login
// settings as the definition file spells them, secrets redacted.
type wireDirectoryDefinition struct {
	DirectoryId      string        `json:"DirectoryId"`
	DirectoryName    string        `json:"DirectoryName"`
	Alias            string        `json:"Alias,omitempty"`
	Type             string        `json:"Type"`
	State            string        `json:"State"`
	RegistrationCode string        `json:"RegistrationCode,omitempty"`
	Users            int           `json:"Users"`
	Login            catalog.Login `json:"Login"`
}

func describeDirectories(ctx context.Context, svc Service, r *describeDirectoriesRequest) (any, error) {
	recs, err := svc.DescribeDirectories(ctx, r.DirectoryIds)
	if err != nil {
		return nil, err
	}
	out := struct {
		Directories []wireDirectoryDefinition `json:"Directories"`
	}{Directories: []wireDirectoryDefinition{}}
	for _, rec := range recs {
		d := rec.Definition.Redacted()
		w := wireDirectoryDefinition{DirectoryId: d.ID, DirectoryName: d.Name, Alias: d.Alias, Type: string(d.Login.Kind()),
			State: "NOT_REGISTERED", Users: len(d.Users), Login: d.Login}
		if rec.Registration != nil {
			w.State, w.RegistrationCode = "REGISTERED", rec.Registration.Code
		}
		out.Directories = append(out.Directories, w)
	}
	return out, nil
}

type wireUser struct {
	UserName  string  `json:"UserName"`
	FirstName *string `json:"FirstName,omitempty"`
	LastName  *string `json:"LastName,omitempty"`
	Email     *string `json:"Email,omitempty"`
}

type createUsersRequest struct {
	DirectoryId string     `json:"DirectoryId"`
	Users       []wireUser `json:"Users"`
}

func createUsers(ctx context.Context, svc Service, r *createUsersRequest) (any, error) {
	var users []catalog.User
	for _, u := range r.Users {
		users = append(users, catalog.User{UserName: u.UserName, FirstName: deref(u.FirstName), LastName: deref(u.LastName), Email: deref(u.Email)})
	}
	return emptyResult{}, svc.CreateUsers(ctx, r.DirectoryId, users)
}

type deleteUsersRequest struct {
	DirectoryId string   `json:"DirectoryId"`
	UserNames   []string `json:"UserNames"`
}

func deleteUsers(ctx context.Context, svc Service, r *deleteUsersRequest) (any, error) {
	return emptyResult{}, svc.DeleteUsers(ctx, r.DirectoryId, r.UserNames)
}

func describeUsers(ctx context.Context, svc Service, r *directoryIDRequest) (any, error) {
	users, err := svc.DescribeUsers(ctx, r.DirectoryId)
	if err != nil {
		return nil, err
	}
	type user struct {
		UserName  string `json:"UserName"`
		FirstName string `json:"FirstName,omitempty"`
		LastName  string `json:"LastName,omitempty"`
		Email     string `json:"Email,omitempty"`
	}
	out := struct {
		Users []user `json:"Users"`
	}{Users: []user{}}
	for _, u := range users {
		out.Users = append(out.Users, user{u.UserName, u.FirstName, u.LastName, u.Email})
	}
	return out, nil
}

type registerImageRequest struct {
	ImageId     *string `json:"ImageId,omitempty"`
	Name        *string `json:"Name,omitempty"`
	Description *string `json:"Description,omitempty"`
	Directory   string  `json:"Directory"`
}

func registerImage(ctx context.Context, svc Service, r *registerImageRequest) (any, error) {
	img, err := svc.RegisterImage(ctx, service.ImageRequest{ID: deref(r.ImageId), Name: deref(r.Name), Description: deref(r.Description), Dir: r.Directory})
	if err != nil {
		return nil, err
	}
	return toWireImage(img), nil
}

// --- hostd's own: the catalog for the connection manager ---

type describeCatalogRequest struct {
	SinceRevision *int `json:"SinceRevision,omitempty"`
	WaitSeconds   *int `json:"WaitSeconds,omitempty"`
}

// CatalogResult is DescribeCatalog's answer: the directories the connection manager
// enforces (registered ones, login settings with their secrets, device access and IP
// groups folded in) and the IP groups, at Revision.
type CatalogResult struct {
	Revision    uint64              `json:"Revision"`
	Directories []catalog.Directory `json:"Directories"`
	IpGroups    []catalog.IPGroup   `json:"IpGroups"`
}

func describeCatalog(ctx context.Context, svc Service, r *describeCatalogRequest) (any, error) {
	if wait := deref(r.WaitSeconds); wait > 0 && r.SinceRevision != nil {
		_, err := svc.WaitCatalog(ctx, uint64(*r.SinceRevision), time.Duration(wait)*time.Second)
		if err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
			return nil, err
		}
	}
	v, err := svc.Catalog(context.WithoutCancel(ctx))
	if err != nil {
		return nil, err
	}
	out := CatalogResult{Revision: v.Revision, Directories: v.Directories, IpGroups: v.IPGroups}
	if out.Directories == nil {
		out.Directories = []catalog.Directory{}
	}
	if out.IpGroups == nil {
		out.IpGroups = []catalog.IPGroup{}
	}
	return out, nil
}
