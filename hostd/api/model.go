package api

import (
	"regexp"
)

// The request shapes of the operations this host implements, transcribed from AWS's
// WorkSpaces API model (botocore's workspaces/2015-04-08/service-2.json). Member names are
// case-sensitive, as they are on the wire. TestModelMatchesBotocore checks this
// transcription against the botocore file shipped with awscli.

type kind uint8

const (
	kStruct kind = iota
	kList
	kString
	kInteger
	kBoolean
)

func (k kind) String() string {
	switch k {
	case kStruct:
		return "object"
	case kList:
		return "array"
	case kString:
		return "string"
	case kInteger:
		return "integer"
	case kBoolean:
		return "boolean"
	}
	return "?"
}

// shape is one model shape with the constraints the API enforces.
type shape struct {
	name     string
	kind     kind
	members  []member // struct
	required []string // struct
	// relaxed are members botocore's model requires that the API does not insist on,
	// because newer AWS clients no longer send them (TestModelMatchesBotocore counts them
	// as required).
	relaxed []string
	elem    *shape // list
	// min and max bound a string's length in characters, a list's length, or an integer's
	// value; nil means unbounded.
	min, max *int
	pattern  *regexp.Regexp
	enum     []string
}

type member struct {
	name  string
	shape *shape
}

func (s *shape) member(name string) *shape {
	for _, m := range s.members {
		if m.name == name {
			return m.shape
		}
	}
	return nil
}

func (s *shape) memberNames() []string {
	out := make([]string, len(s.members))
	for i, m := range s.members {
		out[i] = m.name
	}
	return out
}

func ip(n int) *int { return &n }

func str(name string) *shape { return &shape{name: name, kind: kString} }

func strLen(name string, min, max *int) *shape {
	return &shape{name: name, kind: kString, min: min, max: max}
}

func strPattern(name string, min, max *int, pattern string) *shape {
	return &shape{name: name, kind: kString, min: min, max: max, pattern: regexp.MustCompile(pattern)}
}

func strEnum(name string, values ...string) *shape {
	return &shape{name: name, kind: kString, enum: values}
}

func integer(name string, min, max *int) *shape {
	return &shape{name: name, kind: kInteger, min: min, max: max}
}

func boolean(name string) *shape { return &shape{name: name, kind: kBoolean} }

func list(name string, elem *shape, min, max *int) *shape {
	return &shape{name: name, kind: kList, elem: elem, min: min, max: max}
}

func structure(name string, required []string, members ...member) *shape {
	return &shape{name: name, kind: kStruct, members: members, required: required}
}

func m(name string, s *shape) member { return member{name: name, shape: s} }

// relax marks required members of s that the API accepts without (shape.relaxed).
func relax(s *shape, names ...string) *shape {
	s.relaxed = append(s.relaxed, names...)
	return s
}

var (
	shWorkspaceID     = strPattern("WorkspaceId", nil, nil, `^ws-[0-9a-z]{8,63}$`)
	shDirectoryID     = strPattern("DirectoryId", ip(10), ip(65), `^d-[0-9a-f]{8,63}$`)
	shBundleID        = strPattern("BundleId", nil, nil, `^wsb-[0-9a-z]{8,63}$`)
	shUserName        = strLen("UserName", ip(1), ip(63))
	shPaginationToken = strLen("PaginationToken", ip(1), ip(2048))
	shLimit           = integer("Limit", ip(1), ip(25))
	shBooleanObject   = boolean("BooleanObject")

	shWorkspaceProperties = structure("WorkspaceProperties", nil,
		m("RunningMode", strEnum("RunningMode", "AUTO_STOP", "ALWAYS_ON", "MANUAL")),
		m("RunningModeAutoStopTimeoutInMinutes", integer("RunningModeAutoStopTimeoutInMinutes", nil, nil)),
		m("RootVolumeSizeGib", integer("RootVolumeSizeGib", nil, nil)),
		m("UserVolumeSizeGib", integer("UserVolumeSizeGib", nil, nil)),
		m("ComputeTypeName", strEnum("Compute", "VALUE", "STANDARD", "PERFORMANCE", "POWER", "GRAPHICS",
			"POWERPRO", "GRAPHICSPRO", "GRAPHICS_G4DN", "GRAPHICSPRO_G4DN")),
		m("Protocols", list("ProtocolList", strEnum("Protocol", "PCOIP", "WSP"), nil, nil)),
	)

	shTag = structure("Tag", []string{"Key"},
		m("Key", strLen("TagKey", ip(1), ip(127))),
		m("Value", strLen("TagValue", nil, ip(255))),
	)
	shTagList = list("TagList", shTag, nil, nil)

	shWorkspaceRequest = structure("WorkspaceRequest", []string{"DirectoryId", "UserName", "BundleId"},
		m("DirectoryId", shDirectoryID),
		m("UserName", shUserName),
		m("BundleId", shBundleID),
		m("VolumeEncryptionKey", str("VolumeEncryptionKey")),
		m("UserVolumeEncryptionEnabled", shBooleanObject),
		m("RootVolumeEncryptionEnabled", shBooleanObject),
		m("WorkspaceProperties", shWorkspaceProperties),
		m("Tags", shTagList),
	)

	shCreateWorkspacesRequest = structure("CreateWorkspacesRequest", []string{"Workspaces"},
		m("Workspaces", list("WorkspaceRequestList", shWorkspaceRequest, ip(1), ip(25))),
	)

	shDescribeWorkspacesRequest = structure("DescribeWorkspacesRequest", nil,
		m("WorkspaceIds", list("WorkspaceIdList", shWorkspaceID, ip(1), ip(25))),
		m("DirectoryId", shDirectoryID),
		m("UserName", shUserName),
		m("BundleId", shBundleID),
		m("Limit", shLimit),
		m("NextToken", shPaginationToken),
	)

	shRebootWorkspacesRequest = structure("RebootWorkspacesRequest", []string{"RebootWorkspaceRequests"},
		m("RebootWorkspaceRequests", list("RebootWorkspaceRequests",
			structure("RebootRequest", []string{"WorkspaceId"}, m("WorkspaceId", shWorkspaceID)), ip(1), ip(25))),
	)

	shStopWorkspacesRequest = structure("StopWorkspacesRequest", []string{"StopWorkspaceRequests"},
		m("StopWorkspaceRequests", list("StopWorkspaceRequests",
			structure("StopRequest", nil, m("WorkspaceId", shWorkspaceID)), ip(1), ip(25))),
	)

	shStartWorkspacesRequest = structure("StartWorkspacesRequest", []string{"StartWorkspaceRequests"},
		m("StartWorkspaceRequests", list("StartWorkspaceRequests",
			structure("StartRequest", nil, m("WorkspaceId", shWorkspaceID)), ip(1), ip(25))),
	)

	shTerminateWorkspacesRequest = structure("TerminateWorkspacesRequest", []string{"TerminateWorkspaceRequests"},
		m("TerminateWorkspaceRequests", list("TerminateWorkspaceRequests",
			structure("TerminateRequest", []string{"WorkspaceId"}, m("WorkspaceId", shWorkspaceID)), ip(1), ip(25))),
	)

	shModifyWorkspaceStateRequest = structure("ModifyWorkspaceStateRequest", []string{"WorkspaceId", "WorkspaceState"},
		m("WorkspaceId", shWorkspaceID),
		m("WorkspaceState", strEnum("TargetWorkspaceState", "AVAILABLE", "ADMIN_MAINTENANCE")),
	)

	shModifyWorkspacePropertiesRequest = structure("ModifyWorkspacePropertiesRequest", []string{"WorkspaceId", "WorkspaceProperties"},
		m("WorkspaceId", shWorkspaceID),
		m("WorkspaceProperties", shWorkspaceProperties),
	)

	shDescribeWorkspaceBundlesRequest = structure("DescribeWorkspaceBundlesRequest", nil,
		m("BundleIds", list("BundleIdList", shBundleID, ip(1), ip(25))),
		m("Owner", str("BundleOwner")),
		m("NextToken", shPaginationToken),
	)

	shDescribeWorkspaceDirectoriesRequest = structure("DescribeWorkspaceDirectoriesRequest", nil,
		m("DirectoryIds", list("DirectoryIdList", shDirectoryID, ip(1), ip(25))),
		m("Limit", shLimit),
		m("NextToken", shPaginationToken),
	)

	shDescribeWorkspacesConnectionStatusRequest = structure("DescribeWorkspacesConnectionStatusRequest", nil,
		m("WorkspaceIds", list("WorkspaceIdList", shWorkspaceID, ip(1), ip(25))),
		m("NextToken", shPaginationToken),
	)
)
