package api

import (
	"deskhost/internal/catalog"
	"encoding/json"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// botocoreModel is AWS's WorkSpaces API model as awscli ships it (Debian package awscli).
const botocoreModel = "/usr/lib/python3/dist-packages/awscli/botocore/data/workspaces/2015-04-08/service-2.json"

type botoShape struct {
	Type     string                            `json:"type"`
	Members  map[string]struct{ Shape string } `json:"members"`
	Required []string                          `json:"required"`
	Member   *struct{ Shape string }           `json:"member"`
	Min      *int                              `json:"min"`
	Max      *int                              `json:"max"`
	Pattern  string                            `json:"pattern"`
	Enum     []string                          `json:"enum"`
}

// TestModelMatchesBotocore checks model.go's transcription of each implemented operation's
// input, recursively: shape names, member names (case and all), types, required members,
// bounds, patterns and enums.
func TestModelMatchesBotocore(t *testing.T) {
	raw, err := os.ReadFile(botocoreModel)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("botocore's model is missing (Debian package awscli): %v", err)
		}
		t.Skipf("skipped: %v (apt-get install awscli); CI=true makes this fail", err)
	}
	var model struct {
		Operations map[string]struct {
			Input struct{ Shape string } `json:"input"`
		} `json:"operations"`
		Shapes map[string]botoShape `json:"shapes"`
	}
	if err := json.Unmarshal(raw, &model); err != nil {
		t.Fatal(err)
	}
	kinds := map[string]kind{"structure": kStruct, "list": kList, "string": kString, "integer": kInteger, "boolean": kBoolean}
	var check func(path, name string, s *shape)
	check = func(path, name string, s *shape) {
		b, ok := model.Shapes[name]
		if !ok {
			t.Errorf("%s: botocore has no shape %s", path, name)
			return
		}
		if s.name != name {
			t.Errorf("%s: shape named %s, botocore %s", path, s.name, name)
		}
		if k, ok := kinds[b.Type]; !ok || k != s.kind {
			t.Errorf("%s: kind %s, botocore type %s", path, s.kind, b.Type)
			return
		}
		if !reflect.DeepEqual(s.min, b.Min) || !reflect.DeepEqual(s.max, b.Max) {
			t.Errorf("%s: bounds %v..%v, botocore %v..%v", path, deref(s.min), deref(s.max), deref(b.Min), deref(b.Max))
		}
		pattern := ""
		if s.pattern != nil {
			pattern = s.pattern.String()
		}
		if pattern != b.Pattern {
			t.Errorf("%s: pattern %q, botocore %q", path, pattern, b.Pattern)
		}
		if !slices.Equal(s.enum, b.Enum) {
			t.Errorf("%s: enum %v, botocore %v", path, s.enum, b.Enum)
		}
		switch s.kind {
		case kList:
			check(path+"[]", b.Member.Shape, s.elem)
		case kStruct:
			req := append(slices.Clone(s.required), s.relaxed...)
			slices.Sort(req)
			breq := slices.Clone(b.Required)
			slices.Sort(breq)
			if !slices.Equal(req, breq) {
				t.Errorf("%s: required %v, botocore %v", path, req, breq)
			}
			if len(s.members) != len(b.Members) {
				t.Errorf("%s: members %v, botocore has %d", path, s.memberNames(), len(b.Members))
			}
			for _, m := range s.members {
				bm, ok := b.Members[m.name]
				if !ok {
					t.Errorf("%s: member %s is not in botocore's %s", path, m.name, name)
					continue
				}
				check(path+"."+m.name, bm.Shape, m.shape)
			}
		}
	}
	for _, name := range operationNames() {
		op, ok := model.Operations[name]
		if !ok {
			t.Errorf("botocore has no operation %s", name)
			continue
		}
		check(name, op.Input.Shape, operations[name].input)
	}
}

// TestRequestTypesMatchModel checks that each operation's Go input type has exactly the
// model's members, with the JSON names and kinds, so that validation and decoding agree.
func TestRequestTypesMatchModel(t *testing.T) {
	var check func(path string, typ reflect.Type, s *shape)
	check = func(path string, typ reflect.Type, s *shape) {
		for typ.Kind() == reflect.Pointer {
			typ = typ.Elem()
		}
		want := map[kind]reflect.Kind{kStruct: reflect.Struct, kList: reflect.Slice, kString: reflect.String, kInteger: reflect.Int, kBoolean: reflect.Bool}[s.kind]
		if typ.Kind() != want {
			t.Errorf("%s: Go kind %s, model %s", path, typ.Kind(), s.kind)
			return
		}
		switch s.kind {
		case kList:
			check(path+"[]", typ.Elem(), s.elem)
		case kStruct:
			var names []string
			for i := 0; i < typ.NumField(); i++ {
				f := typ.Field(i)
				name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
				names = append(names, name)
				ms := s.member(name)
				if ms == nil {
					t.Errorf("%s: Go field %s (json %q) is not a model member", path, f.Name, name)
					continue
				}
				check(path+"."+name, f.Type, ms)
			}
			if len(names) != len(s.members) {
				t.Errorf("%s: Go members %v, model %v", path, names, s.memberNames())
			}
		}
	}
	for name, op := range operations {
		check(name, reflect.TypeOf(op.newReq()), op.input)
	}
	for name, op := range ownOperations {
		check(OwnTargetPrefix+name, reflect.TypeOf(op.newReq()), op.input)
	}
}

// TestOwnOperationsAreNotAWSs: hostd's own operations must not shadow one of AWS's, or a
// client of either would be surprised.
func TestOwnOperationsAreNotAWSs(t *testing.T) {
	raw, err := os.ReadFile(botocoreModel)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	var model struct {
		Operations map[string]any `json:"operations"`
	}
	if err := json.Unmarshal(raw, &model); err != nil {
		t.Fatal(err)
	}
	for name := range ownOperations {
		if _, ok := model.Operations[name]; ok {
			t.Errorf("hostd's own operation %s has the name of one of AWS's", name)
		}
	}
}

// validSeeds decode; every operation has at least one (TestDecodeSeeds).
var validSeeds = []struct{ target, body string }{
	{"WorkspacesService.CreateWorkspaces", `{"Workspaces":[{"DirectoryId":"d-0123456789","UserName":"alice","BundleId":"wsb-standard01","WorkspaceProperties":{"RunningMode":"AUTO_STOP","RunningModeAutoStopTimeoutInMinutes":60,"RootVolumeSizeGib":80,"UserVolumeSizeGib":10,"ComputeTypeName":"VALUE","Protocols":["PCOIP"]},"Tags":[{"Key":"k","Value":"v"}],"RootVolumeEncryptionEnabled":false}]}`},
	{"WorkspacesService.DescribeWorkspaces", `{"DirectoryId":"d-0123456789","UserName":"alice","Limit":5,"NextToken":"ws-abcdefgh12"}`},
	{"WorkspacesService.DescribeWorkspaces", ``},
	{"WorkspacesService.RebootWorkspaces", `{"RebootWorkspaceRequests":[{"WorkspaceId":"ws-abcdefgh12"}]}`},
	{"WorkspacesService.StopWorkspaces", `{"StopWorkspaceRequests":[{"WorkspaceId":"ws-abcdefgh12"}]}`},
	{"WorkspacesService.StartWorkspaces", `{"StartWorkspaceRequests":[{}]}`},
	{"WorkspacesService.TerminateWorkspaces", `{"TerminateWorkspaceRequests":[{"WorkspaceId":"ws-abcdefgh12"},{"WorkspaceId":"ws-bcdefgh123"}]}`},
	{"WorkspacesService.ModifyWorkspaceState", `{"WorkspaceId":"ws-abcdefgh12","WorkspaceState":"ADMIN_MAINTENANCE"}`},
	{"WorkspacesService.ModifyWorkspaceProperties", `{"WorkspaceId":"ws-abcdefgh12","WorkspaceProperties":{"RunningMode":"ALWAYS_ON"}}`},
	{"WorkspacesService.ModifyWorkspaceProperties", `{"WorkspaceId":"ws-abcdefgh12","WorkspaceProperties":{"UserVolumeSizeGib":100}}`},
	{"WorkspacesService.ModifyWorkspaceProperties", `{"WorkspaceId":"ws-abcdefgh12","WorkspaceProperties":{"ComputeTypeName":"STANDARD","RootVolumeSizeGib":175}}`},
	{"WorkspacesService.DescribeWorkspaceBundles", `{"BundleIds":["wsb-standard01"],"Owner":"AMAZON"}`},
	{"WorkspacesService.DescribeWorkspaceDirectories", `{"DirectoryIds":["d-0123456789"],"Limit":1,"NextToken":"d-0123456789"}`},
	{"WorkspacesService.DescribeWorkspacesConnectionStatus", `{"WorkspaceIds":["ws-abcdefgh12"],"NextToken":"ws-abcdefgh11"}`},
	{"WorkspacesService.RebuildWorkspaces", `{"RebuildWorkspaceRequests":[{"WorkspaceId":"ws-abcdefgh12"}]}`},
	{"WorkspacesService.RestoreWorkspace", `{"WorkspaceId":"ws-abcdefgh12"}`},
	{"WorkspacesService.DescribeWorkspaceSnapshots", `{"WorkspaceId":"ws-abcdefgh12"}`},
	{"WorkspacesService.MigrateWorkspace", `{"SourceWorkspaceId":"ws-abcdefgh12","BundleId":"wsb-standard01"}`},
	{"WorkspacesService.ReportConnections", `{"ConnectedWorkspaceIds":["ws-abcdefgh12","ws-bcdefgh123"]}`},
	{"WorkspacesService.RegisterWorkspaceDirectory", `{"DirectoryId":"d-0123456789","EnableWorkDocs":false,"EnableSelfService":true,"Tenancy":"SHARED","SubnetIds":["subnet-0123abcd"],"Tags":[{"Key":"team","Value":"ops"}]}`},
	{"WorkspacesService.RegisterWorkspaceDirectory", `{"DirectoryId":"d-0123456789"}`},
	{"WorkspacesService.DeregisterWorkspaceDirectory", `{"DirectoryId":"d-0123456789"}`},
	{"WorkspacesService.ModifyWorkspaceAccessProperties", `{"ResourceId":"d-0123456789","WorkspaceAccessProperties":{"DeviceTypeWeb":"ALLOW","DeviceTypeZeroClient":"DENY","DeviceTypeLinux":"ALLOW"}}`},
	{"WorkspacesService.ModifyWorkspaceCreationProperties", `{"ResourceId":"d-0123456789","WorkspaceCreationProperties":{"EnableInternetAccess":true,"DefaultOu":"OU=WorkSpaces,DC=corp,DC=example,DC=com","UserEnabledAsLocalAdministrator":false}}`},
	{"WorkspacesService.ModifySelfservicePermissions", `{"ResourceId":"d-0123456789","SelfservicePermissions":{"RestartWorkspace":"DISABLED","RebuildWorkspace":"ENABLED"}}`},
	{"WorkspacesService.ModifyClientProperties", `{"ResourceId":"d-0123456789","ClientProperties":{"ReconnectEnabled":"DISABLED","LogUploadEnabled":"ENABLED"}}`},
	{"WorkspacesService.DescribeClientProperties", `{"ResourceIds":["d-0123456789"]}`},
	{"WorkspacesService.CreateIpGroup", `{"GroupName":"office","GroupDesc":"HQ","UserRules":[{"ipRule":"203.0.113.0/24","ruleDesc":"HQ"},{"ipRule":"198.51.100.7"}],"Tags":[{"Key":"k","Value":"v"}]}`},
	{"WorkspacesService.DeleteIpGroup", `{"GroupId":"wsipg-a1bcd2efg"}`},
	{"WorkspacesService.DescribeIpGroups", `{"GroupIds":["wsipg-a1bcd2efg"],"MaxResults":5,"NextToken":"wsipg-a1bcd2eff"}`},
	{"WorkspacesService.AuthorizeIpRules", `{"GroupId":"wsipg-a1bcd2efg","UserRules":[{"ipRule":"10.0.0.0/8","ruleDesc":"lan"}]}`},
	{"WorkspacesService.RevokeIpRules", `{"GroupId":"wsipg-a1bcd2efg","UserRules":["10.0.0.0/8"]}`},
	{"WorkspacesService.UpdateRulesOfIpGroup", `{"GroupId":"wsipg-a1bcd2efg","UserRules":[]}`},
	{"WorkspacesService.AssociateIpGroups", `{"DirectoryId":"d-0123456789","GroupIds":["wsipg-a1bcd2efg"]}`},
	{"WorkspacesService.DisassociateIpGroups", `{"DirectoryId":"d-0123456789","GroupIds":["wsipg-a1bcd2efg"]}`},
	{"WorkspacesService.CreateTags", `{"ResourceId":"ws-abcdefgh12","Tags":[{"Key":"été","Value":"naïve"},{"Key":"k"}]}`},
	{"WorkspacesService.DeleteTags", `{"ResourceId":"wsipg-a1bcd2efg","TagKeys":["k"]}`},
	{"WorkspacesService.DescribeTags", `{"ResourceId":"d-0123456789"}`},
	{"WorkspacesService.CreateWorkspaceBundle", `{"BundleName":"Value-Linux","BundleDescription":"1 vCPU (TCG)","ImageId":"wsi-desktop001","ComputeType":{"Name":"VALUE"},"UserStorage":{"Capacity":"10"},"RootStorage":{"Capacity":"80"},"Tags":[{"Key":"k","Value":"v"}]}`},
	{"WorkspacesService.UpdateWorkspaceBundle", `{"BundleId":"wsb-value00001","ImageId":"wsi-desktop002"}`},
	{"WorkspacesService.DeleteWorkspaceBundle", `{"BundleId":"wsb-value00001"}`},
	{"WorkspacesService.DescribeWorkspaceImages", `{"ImageIds":["wsi-desktop001"],"ImageType":"OWNED","MaxResults":1,"NextToken":"wsi-desktop000"}`},
	{"WorkspacesService.DeleteWorkspaceImage", `{"ImageId":"wsi-desktop001"}`},
	{"WorkspacesService.CreateWorkspaceImage", `{"Name":"golden-1","Description":"Golden image (2026)","WorkspaceId":"ws-abcdefgh12","Tags":[{"Key":"team","Value":"a"}]}`},
	{"WorkspacesService.ImportWorkspaceImage", `{"Ec2ImageId":"ami-0123456789abcdef0","IngestionProcess":"BYOL_REGULAR","ImageName":"byol","ImageDescription":"BYOL image","Applications":["Microsoft_Office_2019"]}`},
	{"Deskhost.ImportImage", `{"Source":"https://images.example.com/debian-12.qcow2","IngestionProcess":"BYOL_REGULAR","ImageName":"byol","ImageDescription":"BYOL image","BaseImageId":"wsi-desktop001","Tags":[{"Key":"k"}]}`},
	{"WorkspacesService.CopyWorkspaceImage", `{"Name":"golden-copy","Description":"copy","SourceImageId":"wsi-desktop001","SourceRegion":"local","Tags":[{"Key":"k"}]}`},
	{"WorkspacesService.DescribeAccount", `{}`},
	{"WorkspacesService.DescribeAccountModifications", `{"NextToken":"x"}`},
	{"WorkspacesService.ListAvailableManagementCidrRanges", `{"ManagementCidrRangeConstraint":"10.0.0.0/8","MaxResults":5,"NextToken":"10.7.0.0/16"}`},
	{"Deskhost.ReportConnections", `{"ConnectedWorkspaceIds":[]}`},
	{"Deskhost.DescribeCatalog", `{"SinceRevision":12,"WaitSeconds":20}`},
	{"Deskhost.PutDirectory", `{"Definition":"id: d-0123456789\nname: corp.example.com\nlogin: {type: local}\n"}`},
	{"Deskhost.DeleteDirectory", `{"DirectoryId":"d-0123456789"}`},
	{"Deskhost.DescribeDirectories", `{"DirectoryIds":["d-0123456789"]}`},
	{"Deskhost.CreateUsers", `{"DirectoryId":"d-0123456789","Users":[{"UserName":"alice","FirstName":"Alice","LastName":"L","Email":"alice@example.com"}]}`},
	{"Deskhost.DeleteUsers", `{"DirectoryId":"d-0123456789","UserNames":["alice"]}`},
	{"Deskhost.DescribeUsers", `{"DirectoryId":"d-0123456789"}`},
	{"Deskhost.RegisterImage", `{"Directory":"/srv/images/desktop","ImageId":"wsi-desktop001","Name":"desktop","Description":"Debian 12"}`},
	{"Deskhost.DescribeHosts", `{}`},
	{"Deskhost.DrainHost", `{"HostId":"host-0123456789"}`},
	{"Deskhost.UndrainHost", `{"HostId":"host-0123456789"}`},
	{"Deskhost.ApproveHost", `{"Code":"ABCD-EFGH-JKLM"}`},
	{"Deskhost.PreapproveHost", `{"HardwareId":"dmi-uuid:4c4c4544-0035-3010-8044-b4c04f4b4e32","ValidMinutes":60}`},
	{"Deskhost.DescribeWorkspaceHosts", `{"WorkspaceIds":["ws-abcdefgh12"]}`},
	{"Deskhost.FindWorkspace", `{"DirectoryId":"d-0123456789","UserName":"alice"}`},
	{"Deskhost.IssueConnectTag", `{"WorkspaceId":"ws-abcdefgh12","DirectoryId":"d-0123456789","UserName":"alice","ClientAddress":"192.0.2.7","SessionId":"42"}`},
	{"Deskhost.DescribeUsage", `{"Month":"2026-11"}`},
	{"Deskhost.CreateKey", `{"Alias":"alias/finance","Description":"finance desktops"}`},
	{"Deskhost.CreateKey", `{}`},
	{"Deskhost.DescribeKeys", `{"KeyId":"alias/finance"}`},
	{"Deskhost.EnableKey", `{"KeyId":"1b4e28ba-2fa1-41d2-883f-0016d3cca427"}`},
	{"Deskhost.DisableKey", `{"KeyId":"arn:aws:kms:local:000000000000:key/1b4e28ba-2fa1-41d2-883f-0016d3cca427"}`},
	{"WorkspacesService.CreateWorkspaces", `{"Workspaces":[{"DirectoryId":"d-0123456789","UserName":"alice","BundleId":"wsb-value00001","RootVolumeEncryptionEnabled":true,"UserVolumeEncryptionEnabled":true,"VolumeEncryptionKey":"alias/finance"}]}`},
	// A lone surrogate escape decodes (to U+FFFD), as encoding/json has it.
	{"WorkspacesService.DescribeWorkspaces", "{\"UserName\":\"\\ud800\"}"},
}

// fuzzSeeds are validSeeds and the decoder's error cases.
var fuzzSeeds = append(append([]struct{ target, body string }{}, validSeeds...), []struct{ target, body string }{
	{"WorkspacesService.CreateWorkspaces", `{"Workspaces":[{"DirectoryId":42}]}`},
	{"WorkspacesService.CreateWorkspaces", `{"Workspaces":[{"directoryId":"x"}]}`},
	{"WorkspacesService.DescribeWorkspaces", `{"Limit":1e400}`},
	{"WorkspacesService.DescribeWorkspaces", `{"WorkspaceIds":[null,"ws-abcdefgh12"]}`},
	{"WorkspacesService.DescribeWorkspaces", `[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[`},
	{"WorkspacesService.DescribeWorkspaces", `{"Limit":1}{"Limit":2}`},
	{"WorkspacesService.", `{}`},
	{"", `{}`},
	{"WorkspacesService.Nope", `garbage`},
	{"Deskhost.Nope", `{}`},
	{"Deskhost.", `{}`},
	{"WorkspacesService.CreateIpGroup", `{"GroupName":"x","UserRules":[{"iprule":"10.0.0.0/8"}]}`},
	{"WorkspacesService.CreateTags", `{"ResourceId":"","Tags":[{"Value":"v"}]}`},
	{"WorkspacesService.ListAvailableManagementCidrRanges", `{"ManagementCidrRangeConstraint":"10.0.0.0/33","MaxResults":6}`},
	{"Deskhost.DescribeCatalog", `{"WaitSeconds":51,"SinceRevision":-1}`},
	{"WorkspacesService.CreateWorkspaceImage", `{"Name":"bad name!","Description":"d","WorkspaceId":"ws-abcdefgh12"}`},
	{"WorkspacesService.CreateWorkspaceImage", `{"Name":"n","WorkspaceId":"ws-abcdefgh12"}`},
	{"WorkspacesService.ImportWorkspaceImage", `{"Ec2ImageId":"/srv/debian.qcow2","IngestionProcess":"BYOL_REGULAR","ImageName":"byol","ImageDescription":"d"}`},
	{"Deskhost.ImportImage", `{"Source":"","IngestionProcess":"BYOL_REGULAR","ImageName":"byol","ImageDescription":"d"}`},
	{"WorkspacesService.CopyWorkspaceImage", `{"Name":"n","SourceImageId":"wsi-desktop001","SourceRegion":"US_EAST"}`},
	{"Deskhost.PutDirectory", `{"Definition":""}`},
	{"Deskhost.DrainHost", `{"HostId":"ws-abcdefgh12"}`},
	{"Deskhost.PreapproveHost", `{"HardwareId":"mac:52:54:00:12:34:56","ValidMinutes":0}`},
	{"Deskhost.IssueConnectTag", `{"WorkspaceId":"ws-abcdefgh12","DirectoryId":"d-0123456789","UserName":"alice"}`},
	{"Deskhost.DescribeUsage", `{"Month":""}`},
	{"Deskhost.DescribeUsage", `{}`},
	{"Deskhost.EnableKey", `{}`},
	{"Deskhost.DisableKey", `{"KeyId":""}`},
	{"Deskhost.CreateKey", `{"Alias":42}`},
}...)

// FuzzDecode: an arbitrary target header and body never panics; it either decodes or gives
// one of the decoder's AWS error types with a message; and what decodes re-encodes to a
// body that decodes to the same request.
func FuzzDecode(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(s.target, []byte(s.body))
	}
	f.Fuzz(func(t *testing.T, target string, body []byte) {
		name, op, req, aerr := decodeRequest(target, body)
		if aerr != nil {
			switch aerr.Type {
			case catalog.SerializationError, catalog.UnknownOperation, catalog.InvalidParameterValues:
			default:
				t.Fatalf("error type %s (%s)", aerr.Type, aerr.Message)
			}
			if aerr.Message == "" || req != nil {
				t.Fatalf("error %s with message %q and request %v", aerr.Type, aerr.Message, req)
			}
			if aerr.Type == catalog.UnknownOperation && (name != "" || op.input != nil) {
				t.Fatalf("unknown operation but name %q", name)
			}
			return
		}
		if name == "" || req == nil {
			t.Fatalf("decoded without a name or a request")
		}
		again, err := json.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _, req2, aerr := decodeRequest(target, again)
		if aerr != nil {
			t.Fatalf("re-encoded request %s refused: %v", again, aerr)
		}
		if again2, _ := json.Marshal(req2); string(again2) != string(again) {
			t.Fatalf("round trip changed the request:\n%s\n%s", again, again2)
		}
	})
}

func TestDecodeSeeds(t *testing.T) {
	covered := map[string]bool{}
	for _, s := range validSeeds {
		name, _, _, aerr := decodeRequest(s.target, []byte(s.body))
		if aerr != nil {
			t.Errorf("%s %s: %v", s.target, s.body, aerr)
		}
		covered[s.target] = true
		covered[name] = true
	}
	for _, target := range Operations() {
		if !covered[target] {
			t.Errorf("no valid fuzz seed for %s", target)
		}
	}
	for _, s := range fuzzSeeds[len(validSeeds):] {
		if _, _, _, aerr := decodeRequest(s.target, []byte(s.body)); aerr == nil {
			t.Errorf("%s %s decoded; it is an error seed", s.target, s.body)
		}
	}
}
