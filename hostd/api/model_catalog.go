package api

// The request shapes of the catalog operations: AWS's (transcribed from botocore, checked
// by TestModelMatchesBotocore) and hostd's own under OwnTargetPrefix (directory
// definitions, users, image registration, the catalog for the connection manager).

var (
	shNonEmptyString = strLen("NonEmptyString", ip(1), nil)
	shIpGroupID      = strPattern("IpGroupId", nil, nil, `wsipg-[0-9a-z]{8,63}$`)
	shIpGroupIDList  = list("IpGroupIdList", shIpGroupID, nil, nil)
	shImageID        = strPattern("WorkspaceImageId", nil, nil, `wsi-[0-9a-z]{9,63}$`)
	shIpRuleList     = list("IpRuleList", structure("IpRuleItem", nil,
		m("ipRule", str("IpRule")),
		m("ruleDesc", str("IpRuleDesc")),
	), nil, nil)
	shAccessPropertyValue = strEnum("AccessPropertyValue", "ALLOW", "DENY")
	shReconnectEnum       = strEnum("ReconnectEnum", "ENABLED", "DISABLED")
	shCompute             = strEnum("Compute", "VALUE", "STANDARD", "PERFORMANCE", "POWER", "GRAPHICS",
		"POWERPRO", "GRAPHICSPRO", "GRAPHICS_G4DN", "GRAPHICSPRO_G4DN")

	// RegisterWorkspaceDirectory: botocore 2.9.19 requires EnableWorkDocs; AWS's Go SDK
	// v1.68 no longer has the member at all, so it is accepted absent (false).
	shRegisterWorkspaceDirectoryRequest = relax(structure("RegisterWorkspaceDirectoryRequest", []string{"DirectoryId"},
		m("DirectoryId", shDirectoryID),
		m("SubnetIds", list("SubnetIds", strPattern("SubnetId", ip(15), ip(24), `^(subnet-([0-9a-f]{8}|[0-9a-f]{17}))$`), nil, ip(2))),
		m("EnableWorkDocs", shBooleanObject),
		m("EnableSelfService", shBooleanObject),
		m("Tenancy", strEnum("Tenancy", "DEDICATED", "SHARED")),
		m("Tags", shTagList),
	), "EnableWorkDocs")

	shDeregisterWorkspaceDirectoryRequest = structure("DeregisterWorkspaceDirectoryRequest", []string{"DirectoryId"},
		m("DirectoryId", shDirectoryID),
	)

	shModifyWorkspaceAccessPropertiesRequest = structure("ModifyWorkspaceAccessPropertiesRequest", []string{"ResourceId", "WorkspaceAccessProperties"},
		m("ResourceId", shDirectoryID),
		m("WorkspaceAccessProperties", structure("WorkspaceAccessProperties", nil,
			m("DeviceTypeWindows", shAccessPropertyValue),
			m("DeviceTypeOsx", shAccessPropertyValue),
			m("DeviceTypeWeb", shAccessPropertyValue),
			m("DeviceTypeIos", shAccessPropertyValue),
			m("DeviceTypeAndroid", shAccessPropertyValue),
			m("DeviceTypeChromeOs", shAccessPropertyValue),
			m("DeviceTypeZeroClient", shAccessPropertyValue),
			m("DeviceTypeLinux", shAccessPropertyValue),
		)),
	)

	shModifyWorkspaceCreationPropertiesRequest = structure("ModifyWorkspaceCreationPropertiesRequest", []string{"ResourceId", "WorkspaceCreationProperties"},
		m("ResourceId", shDirectoryID),
		m("WorkspaceCreationProperties", structure("WorkspaceCreationProperties", nil,
			m("EnableWorkDocs", shBooleanObject),
			m("EnableInternetAccess", shBooleanObject),
			m("DefaultOu", str("DefaultOu")),
			m("CustomSecurityGroupId", strPattern("SecurityGroupId", ip(11), ip(20), `^(sg-([0-9a-f]{8}|[0-9a-f]{17}))$`)),
			m("UserEnabledAsLocalAdministrator", shBooleanObject),
			m("EnableMaintenanceMode", shBooleanObject),
		)),
	)

	shModifySelfservicePermissionsRequest = structure("ModifySelfservicePermissionsRequest", []string{"ResourceId", "SelfservicePermissions"},
		m("ResourceId", shDirectoryID),
		m("SelfservicePermissions", structure("SelfservicePermissions", nil,
			m("RestartWorkspace", shReconnectEnum),
			m("IncreaseVolumeSize", shReconnectEnum),
			m("ChangeComputeType", shReconnectEnum),
			m("SwitchRunningMode", shReconnectEnum),
			m("RebuildWorkspace", shReconnectEnum),
		)),
	)

	shModifyClientPropertiesRequest = structure("ModifyClientPropertiesRequest", []string{"ResourceId", "ClientProperties"},
		m("ResourceId", shNonEmptyString),
		m("ClientProperties", structure("ClientProperties", nil,
			m("ReconnectEnabled", shReconnectEnum),
			m("LogUploadEnabled", strEnum("LogUploadEnum", "ENABLED", "DISABLED")),
		)),
	)

	shDescribeClientPropertiesRequest = structure("DescribeClientPropertiesRequest", []string{"ResourceIds"},
		m("ResourceIds", list("ResourceIdList", shNonEmptyString, ip(1), ip(25))),
	)

	shCreateIpGroupRequest = structure("CreateIpGroupRequest", []string{"GroupName"},
		m("GroupName", str("IpGroupName")),
		m("GroupDesc", str("IpGroupDesc")),
		m("UserRules", shIpRuleList),
		m("Tags", shTagList),
	)

	shDeleteIpGroupRequest = structure("DeleteIpGroupRequest", []string{"GroupId"},
		m("GroupId", shIpGroupID),
	)

	shDescribeIpGroupsRequest = structure("DescribeIpGroupsRequest", nil,
		m("GroupIds", shIpGroupIDList),
		m("NextToken", shPaginationToken),
		m("MaxResults", shLimit),
	)

	shAuthorizeIpRulesRequest = structure("AuthorizeIpRulesRequest", []string{"GroupId", "UserRules"},
		m("GroupId", shIpGroupID),
		m("UserRules", shIpRuleList),
	)

	shRevokeIpRulesRequest = structure("RevokeIpRulesRequest", []string{"GroupId", "UserRules"},
		m("GroupId", shIpGroupID),
		m("UserRules", list("IpRevokedRuleList", str("IpRule"), nil, nil)),
	)

	shUpdateRulesOfIpGroupRequest = structure("UpdateRulesOfIpGroupRequest", []string{"GroupId", "UserRules"},
		m("GroupId", shIpGroupID),
		m("UserRules", shIpRuleList),
	)

	shAssociateIpGroupsRequest = structure("AssociateIpGroupsRequest", []string{"DirectoryId", "GroupIds"},
		m("DirectoryId", shDirectoryID),
		m("GroupIds", shIpGroupIDList),
	)

	shDisassociateIpGroupsRequest = structure("DisassociateIpGroupsRequest", []string{"DirectoryId", "GroupIds"},
		m("DirectoryId", shDirectoryID),
		m("GroupIds", shIpGroupIDList),
	)

	shCreateTagsRequest = structure("CreateTagsRequest", []string{"ResourceId", "Tags"},
		m("ResourceId", shNonEmptyString),
		m("Tags", shTagList),
	)

	shDeleteTagsRequest = structure("DeleteTagsRequest", []string{"ResourceId", "TagKeys"},
		m("ResourceId", shNonEmptyString),
		m("TagKeys", list("TagKeyList", shNonEmptyString, nil, nil)),
	)

	shDescribeTagsRequest = structure("DescribeTagsRequest", []string{"ResourceId"},
		m("ResourceId", shNonEmptyString),
	)

	shCreateWorkspaceBundleRequest = structure("CreateWorkspaceBundleRequest", []string{"BundleName", "BundleDescription", "ImageId", "ComputeType", "UserStorage"},
		m("BundleName", strPattern("WorkspaceBundleName", ip(1), ip(64), `^[a-zA-Z0-9_./()\\-]+$`)),
		m("BundleDescription", strPattern("WorkspaceBundleDescription", ip(1), ip(255), `^[a-zA-Z0-9_./() -]+$`)),
		m("ImageId", shImageID),
		m("ComputeType", structure("ComputeType", nil, m("Name", shCompute))),
		m("UserStorage", structure("UserStorage", nil, m("Capacity", shNonEmptyString))),
		m("RootStorage", structure("RootStorage", nil, m("Capacity", shNonEmptyString))),
		m("Tags", shTagList),
	)

	shUpdateWorkspaceBundleRequest = structure("UpdateWorkspaceBundleRequest", nil,
		m("BundleId", shBundleID),
		m("ImageId", shImageID),
	)

	shDeleteWorkspaceBundleRequest = structure("DeleteWorkspaceBundleRequest", nil,
		m("BundleId", shBundleID),
	)

	shDescribeWorkspaceImagesRequest = structure("DescribeWorkspaceImagesRequest", nil,
		m("ImageIds", list("WorkspaceImageIdList", shImageID, ip(1), ip(25))),
		m("ImageType", strEnum("ImageType", "OWNED", "SHARED")),
		m("NextToken", shPaginationToken),
		m("MaxResults", shLimit),
	)

	shDeleteWorkspaceImageRequest = structure("DeleteWorkspaceImageRequest", []string{"ImageId"},
		m("ImageId", shImageID),
	)

	shDescribeAccountRequest = structure("DescribeAccountRequest", nil)

	shDescribeAccountModificationsRequest = structure("DescribeAccountModificationsRequest", nil,
		m("NextToken", shPaginationToken),
	)

	shListAvailableManagementCidrRangesRequest = structure("ListAvailableManagementCidrRangesRequest", []string{"ManagementCidrRangeConstraint"},
		m("ManagementCidrRangeConstraint", strPattern("ManagementCidrRangeConstraint", nil, nil,
			`^(([0-9]|[1-9][0-9]|1[0-9]{2}|2[0-4][0-9]|25[0-5])\.){3}([0-9]|[1-9][0-9]|1[0-9]{2}|2[0-4][0-9]|25[0-5])(\/(3[0-2]|[1-2][0-9]|[0-9]))$`)),
		m("MaxResults", integer("ManagementCidrRangeMaxResults", ip(1), ip(5))),
		m("NextToken", shPaginationToken),
	)
)

// hostd's own operations (OwnTargetPrefix). Not in AWS's model.
var (
	// The connection manager's session report, taken only over the local socket.
	shReportConnectionsRequest = structure("ReportConnectionsRequest", []string{"ConnectedWorkspaceIds"},
		m("ConnectedWorkspaceIds", list("ConnectedWorkspaceIdList", shWorkspaceID, nil, ip(10000))),
	)

	// A directory definition is the YAML (or JSON) document `hostd directory put` reads:
	// decoded strictly by hostd, so its errors name the line.
	shPutDirectoryRequest = structure("PutDirectoryRequest", []string{"Definition"},
		m("Definition", strLen("DirectoryDefinition", ip(1), ip(512<<10))),
	)

	shDeleteDirectoryRequest = structure("DeleteDirectoryRequest", []string{"DirectoryId"},
		m("DirectoryId", shDirectoryID),
	)

	shDescribeDirectoriesRequest = structure("DescribeDirectoriesRequest", nil,
		m("DirectoryIds", list("DirectoryIdList", shDirectoryID, ip(1), ip(25))),
	)

	shUser = structure("User", []string{"UserName"},
		m("UserName", shUserName),
		m("FirstName", strLen("FirstName", nil, ip(255))),
		m("LastName", strLen("LastName", nil, ip(255))),
		m("Email", strLen("Email", nil, ip(255))),
	)

	shCreateUsersRequest = structure("CreateUsersRequest", []string{"DirectoryId", "Users"},
		m("DirectoryId", shDirectoryID),
		m("Users", list("UserList", shUser, ip(1), ip(1000))),
	)

	shDeleteUsersRequest = structure("DeleteUsersRequest", []string{"DirectoryId", "UserNames"},
		m("DirectoryId", shDirectoryID),
		m("UserNames", list("UserNameList", shUserName, ip(1), ip(1000))),
	)

	shDescribeUsersRequest = structure("DescribeUsersRequest", []string{"DirectoryId"},
		m("DirectoryId", shDirectoryID),
	)

	shRegisterImageRequest = structure("RegisterImageRequest", []string{"Directory"},
		m("ImageId", shImageID),
		m("Name", strLen("ImageName", ip(1), ip(64))),
		m("Description", strLen("ImageDescription", ip(1), ip(256))),
		m("Directory", strLen("ImageDirectory", ip(1), ip(4096))),
	)

	// The connection manager's long poll of the catalog, on the local socket only: the
	// answer holds the directories' secrets.
	shDescribeCatalogRequest = structure("DescribeCatalogRequest", nil,
		m("SinceRevision", integer("CatalogRevision", ip(0), nil)),
		m("WaitSeconds", integer("WaitSeconds", ip(0), ip(MaxCatalogWaitSeconds))),
	)
)

// MaxCatalogWaitSeconds bounds DescribeCatalog's long poll, well inside the server's
// one-minute write timeout.
const MaxCatalogWaitSeconds = 50
