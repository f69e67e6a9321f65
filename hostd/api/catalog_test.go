package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/workspaces"
	"github.com/aws/aws-sdk-go-v2/service/workspaces/types"
)

// TestCatalogThroughSDK drives the catalog operations with AWS's Go SDK over HTTPS with
// SigV4: a directory registered without EnableWorkDocs (newer SDKs no longer have it),
// its properties, IP access control groups with their limits and associations, tags,
// bundles, images and the account; errors arrive as the SDK's typed exceptions.
func TestCatalogThroughSDK(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.client(accessKeyID, secretKey)
	ctx := context.Background()

	// A directory defined (hostd's own operation) and registered (AWS's).
	def := "id: d-00000000c1\nname: sdk.example.com\nusers: [{userName: sam, email: sam@example.com}]\n"
	r := e.raw(rawCall{target: OwnTargetPrefix + "PutDirectory", body: mustJSON(t, map[string]string{"Definition": def})})
	if r.status != http.StatusOK || !strings.Contains(string(r.body), `"DirectoryId":"d-00000000c1","Created":true`) {
		t.Fatalf("PutDirectory: %d %s", r.status, r.body)
	}
	if _, err := c.RegisterWorkspaceDirectory(ctx, &workspaces.RegisterWorkspaceDirectoryInput{DirectoryId: aws.String("d-00000000c1"),
		Tags: []types.Tag{{Key: aws.String("team"), Value: aws.String("sdk")}}}); err != nil {
		t.Fatalf("RegisterWorkspaceDirectory without EnableWorkDocs: %v", err)
	}
	_, err := c.RegisterWorkspaceDirectory(ctx, &workspaces.RegisterWorkspaceDirectoryInput{DirectoryId: aws.String("d-00000000c1")})
	var irs *types.InvalidResourceStateException
	if !errors.As(err, &irs) {
		t.Errorf("registering twice: %v", err)
	}
	if _, err := c.ModifyWorkspaceAccessProperties(ctx, &workspaces.ModifyWorkspaceAccessPropertiesInput{ResourceId: aws.String("d-00000000c1"),
		WorkspaceAccessProperties: &types.WorkspaceAccessProperties{DeviceTypeLinux: types.AccessPropertyValueAllow}}); err != nil {
		t.Fatal(err)
	}
	ds, err := c.DescribeWorkspaceDirectories(ctx, &workspaces.DescribeWorkspaceDirectoriesInput{DirectoryIds: []string{"d-00000000c1"}})
	if err != nil || len(ds.Directories) != 1 {
		t.Fatalf("%v %+v", err, ds)
	}
	if d := ds.Directories[0]; d.WorkspaceAccessProperties.DeviceTypeLinux != types.AccessPropertyValueAllow ||
		d.WorkspaceAccessProperties.DeviceTypeWeb != types.AccessPropertyValueDeny || d.State != types.WorkspaceDirectoryStateRegistered ||
		d.DirectoryType != types.WorkspaceDirectoryTypeSimpleAd || !strings.HasPrefix(aws.ToString(d.RegistrationCode), "SLiad+") {
		t.Errorf("directory %+v", d)
	}

	// IP access control groups.
	g, err := c.CreateIpGroup(ctx, &workspaces.CreateIpGroupInput{GroupName: aws.String("office"),
		UserRules: []types.IpRuleItem{{IpRule: aws.String("203.0.113.0/24"), RuleDesc: aws.String("HQ")}}})
	if err != nil {
		t.Fatal(err)
	}
	gid := aws.ToString(g.GroupId)
	var rules []types.IpRuleItem
	for _, cidr := range []string{"10.0.0.0/16", "10.1.0.0/16", "10.2.0.0/16", "10.3.0.0/16", "10.4.0.0/16", "10.5.0.0/16", "10.6.0.0/16", "10.7.0.0/16", "10.8.0.0/16", "10.9.0.0/16"} {
		rules = append(rules, types.IpRuleItem{IpRule: aws.String(cidr)})
	}
	_, err = c.AuthorizeIpRules(ctx, &workspaces.AuthorizeIpRulesInput{GroupId: g.GroupId, UserRules: rules})
	var rle *types.ResourceLimitExceededException
	if !errors.As(err, &rle) || !strings.Contains(rle.ErrorMessage(), "11 rules") {
		t.Errorf("the 11th rule: %v", err)
	}
	if _, err := c.AssociateIpGroups(ctx, &workspaces.AssociateIpGroupsInput{DirectoryId: aws.String("d-00000000c1"), GroupIds: []string{gid}}); err != nil {
		t.Fatal(err)
	}
	_, err = c.DeleteIpGroup(ctx, &workspaces.DeleteIpGroupInput{GroupId: g.GroupId})
	var rae *types.ResourceAssociatedException
	if !errors.As(err, &rae) {
		t.Errorf("deleting an associated group: %v", err)
	}
	for i := range 3 {
		if _, err := c.CreateIpGroup(ctx, &workspaces.CreateIpGroupInput{GroupName: aws.String("more-" + string(rune('a'+i)))}); err != nil {
			t.Fatal(err)
		}
	}
	var pages, seen int
	in := &workspaces.DescribeIpGroupsInput{MaxResults: aws.Int32(3)}
	for {
		out, err := c.DescribeIpGroups(ctx, in)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		seen += len(out.Result)
		if out.NextToken == nil {
			break
		}
		in.NextToken = out.NextToken
	}
	if pages != 2 || seen != 4 {
		t.Errorf("DescribeIpGroups paged %d groups in %d pages", seen, pages)
	}

	// Tags.
	if _, err := c.CreateTags(ctx, &workspaces.CreateTagsInput{ResourceId: g.GroupId, Tags: []types.Tag{{Key: aws.String("Ort"), Value: aws.String("Zürich")}}}); err != nil {
		t.Fatal(err)
	}
	_, err = c.CreateTags(ctx, &workspaces.CreateTagsInput{ResourceId: g.GroupId, Tags: []types.Tag{{Key: aws.String("aws:owner"), Value: aws.String("x")}}})
	var ipv *types.InvalidParameterValuesException
	if !errors.As(err, &ipv) || !strings.Contains(ipv.ErrorMessage(), "reserved") {
		t.Errorf("a reserved key: %v", err)
	}
	tg, err := c.DescribeTags(ctx, &workspaces.DescribeTagsInput{ResourceId: aws.String("d-00000000c1")})
	if err != nil || len(tg.TagList) != 1 || aws.ToString(tg.TagList[0].Value) != "sdk" {
		t.Errorf("the directory's tags from RegisterWorkspaceDirectory: %v %+v", err, tg)
	}
	if _, err := c.DeleteTags(ctx, &workspaces.DeleteTagsInput{ResourceId: g.GroupId, TagKeys: []string{"Ort"}}); err != nil {
		t.Fatal(err)
	}
	_, err = c.DescribeTags(ctx, &workspaces.DescribeTagsInput{ResourceId: aws.String("wsb-nosuchbndl")})
	var rnf *types.ResourceNotFoundException
	if !errors.As(err, &rnf) {
		t.Errorf("tags of a missing bundle: %v", err)
	}

	// Bundles and images.
	b, err := c.CreateWorkspaceBundle(ctx, &workspaces.CreateWorkspaceBundleInput{BundleName: aws.String("Std-175-100"), BundleDescription: aws.String("2 vCPU"),
		ImageId: aws.String(imageLinux), ComputeType: &types.ComputeType{Name: types.ComputeStandard},
		UserStorage: &types.UserStorage{Capacity: aws.String("100")}, RootStorage: &types.RootStorage{Capacity: aws.String("175")}})
	if err != nil || aws.ToString(b.WorkspaceBundle.Owner) != "000000000000" || b.WorkspaceBundle.CreationTime == nil {
		t.Fatalf("CreateWorkspaceBundle: %v %+v", err, b)
	}
	img, err := c.DescribeWorkspaceImages(ctx, &workspaces.DescribeWorkspaceImagesInput{})
	if err != nil || len(img.Images) != 1 || img.Images[0].OperatingSystem.Type != types.OperatingSystemTypeLinux {
		t.Errorf("DescribeWorkspaceImages: %v %+v", err, img)
	}
	_, err = c.DeleteWorkspaceImage(ctx, &workspaces.DeleteWorkspaceImageInput{ImageId: aws.String(imageLinux)})
	if !errors.As(err, &rae) {
		t.Errorf("deleting an image bundles use: %v", err)
	}

	// The account.
	acct, err := c.DescribeAccount(ctx, &workspaces.DescribeAccountInput{})
	if err != nil || acct.DedicatedTenancySupport != types.DedicatedTenancySupportResultEnumEnabled {
		t.Errorf("DescribeAccount: %v %+v", err, acct)
	}
	mods, err := c.DescribeAccountModifications(ctx, &workspaces.DescribeAccountModificationsInput{})
	if err != nil || len(mods.AccountModifications) != 0 {
		t.Errorf("DescribeAccountModifications: %v %+v", err, mods)
	}
	var ranges []string
	lin := &workspaces.ListAvailableManagementCidrRangesInput{ManagementCidrRangeConstraint: aws.String("10.0.0.0/14"), MaxResults: aws.Int32(2)}
	for {
		out, err := c.ListAvailableManagementCidrRanges(ctx, lin)
		if err != nil {
			t.Fatal(err)
		}
		ranges = append(ranges, out.ManagementCidrRanges...)
		if out.NextToken == nil {
			break
		}
		lin.NextToken = out.NextToken
	}
	// The host is on 10.1.0.0/16 (testConfig): that range is not offered.
	if !slices.Equal(ranges, []string{"10.0.0.0/16", "10.2.0.0/16", "10.3.0.0/16"}) {
		t.Errorf("available management ranges %v", ranges)
	}

	// Deregistration with the group still associated: allowed (no WorkSpaces); the
	// association goes with the registration, so the group can then be deleted.
	if _, err := c.DeregisterWorkspaceDirectory(ctx, &workspaces.DeregisterWorkspaceDirectoryInput{DirectoryId: aws.String("d-00000000c1")}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.DeleteIpGroup(ctx, &workspaces.DeleteIpGroupInput{GroupId: g.GroupId}); err != nil {
		t.Errorf("deleting the group of a deregistered directory: %v", err)
	}
}

// TestOwnOperationsOverHTTPS: hostd's own operations answer with the same protocol and
// signature; a definition's secrets never reach the audit log or a describe; the
// connection manager's catalog (secrets included) is refused over HTTPS.
func TestOwnOperationsOverHTTPS(t *testing.T) {
	e := newEnv(t, envOptions{})
	def := "id: d-00000000d1\nname: ad.example.com\nlogin:\n  type: ldap\n  ldap: {url: 'ldaps://dc.example.com', bindDN: 'cn=svc', bindPassword: 'hunter2-secret', userBase: 'dc=ad'}\n" +
		"  mfa: {type: radius, radius: {servers: [10.0.0.5], sharedSecret: 'radius-secret-9'}}\n"
	r := e.raw(rawCall{target: OwnTargetPrefix + "PutDirectory", body: mustJSON(t, map[string]string{"Definition": def})})
	if r.status != http.StatusOK {
		t.Fatalf("PutDirectory: %d %s %s", r.status, r.errType, r.message)
	}
	r = e.raw(rawCall{target: OwnTargetPrefix + "DescribeDirectories", body: []byte(`{"DirectoryIds":["d-00000000d1"]}`)})
	if r.status != http.StatusOK || strings.Contains(string(r.body), "secret-9") || strings.Contains(string(r.body), "hunter2") ||
		!strings.Contains(string(r.body), `"State":"NOT_REGISTERED"`) || !strings.Contains(string(r.body), `"bindDN":"cn=svc"`) {
		t.Errorf("DescribeDirectories: %s", r.body)
	}
	if log := e.log.String(); strings.Contains(log, "hunter2") || strings.Contains(log, "secret-9") || !strings.Contains(log, "not logged") {
		t.Errorf("the audit log shows a secret or logs the definition:\n%s", log)
	}
	// A strict definition: an unknown key is named with its line.
	r = e.raw(rawCall{target: OwnTargetPrefix + "PutDirectory", body: mustJSON(t, map[string]string{"Definition": "id: d-00000000d2\nname: x.example.com\nlogn: {}\n"})})
	if r.errType != "InvalidParameterValuesException" || !strings.Contains(r.message, "logn") || !strings.Contains(r.message, "line 3") {
		t.Errorf("an unknown key: %s %s", r.errType, r.message)
	}
	r = e.raw(rawCall{target: OwnTargetPrefix + "PutDirectory", body: mustJSON(t, map[string]string{"Definition": "id: d-00000000d2\nname: x.example.com\nlogin: {ipGroups: [{id: wsipg-a1bcd2efg}]}\n"})})
	if r.errType != "InvalidParameterValuesException" || !strings.Contains(r.message, "hostd ipgroups create") {
		t.Errorf("IP groups in a definition: %s %s", r.errType, r.message)
	}
	r = e.raw(rawCall{target: OwnTargetPrefix + "CreateUsers", body: []byte(`{"DirectoryId":"d-00000000d1","Users":[{"UserName":"ann","Email":"ann@example.com"}]}`)})
	if r.status != http.StatusOK {
		t.Errorf("CreateUsers: %s %s", r.errType, r.message)
	}
	r = e.raw(rawCall{target: OwnTargetPrefix + "CreateUsers", body: []byte(`{"DirectoryId":"d-00000000d1","Users":[{"UserName":"ANN"}]}`)})
	if r.errType != "ResourceAlreadyExistsException" {
		t.Errorf("a user twice: %s %s", r.errType, r.message)
	}
	r = e.raw(rawCall{target: OwnTargetPrefix + "DescribeUsers", body: []byte(`{"DirectoryId":"d-00000000d1"}`)})
	if string(r.body) != `{"Users":[{"UserName":"ann","Email":"ann@example.com"}]}` {
		t.Errorf("DescribeUsers: %s", r.body)
	}
	for _, op := range []string{DescribeCatalogOperation, ReportConnectionsOperation} {
		r = e.raw(rawCall{target: OwnTargetPrefix + op, body: []byte(`{}`)})
		if r.errType != "AccessDeniedException" || !strings.Contains(r.message, "local socket") {
			t.Errorf("%s over HTTPS: %d %s %s", op, r.status, r.errType, r.message)
		}
	}
	r = e.raw(rawCall{target: OwnTargetPrefix + "DeleteDirectory", body: []byte(`{"DirectoryId":"d-00000000d1"}`)})
	if r.status != http.StatusOK {
		t.Errorf("DeleteDirectory of an unregistered directory: %s %s", r.errType, r.message)
	}
}

// TestDescribeCatalogLongPoll: on the local socket, DescribeCatalog answers at once
// without a wait, holds a poll until the revision moves, and gives the connection manager
// the secrets it checks passwords with.
func TestDescribeCatalogLongPoll(t *testing.T) {
	requireRoot(t, "DescribeCatalog answers only on the root-only socket")
	e := newEnv(t, envOptions{})
	c := e.unixClient(t)
	var first CatalogResult
	if err := c.call(DescribeCatalogOperation, `{}`, &first); err != nil {
		t.Fatal(err)
	}
	if len(first.Directories) != 2 || first.Revision == 0 {
		t.Fatalf("catalog: %+v", first)
	}
	got := make(chan CatalogResult, 1)
	start := time.Now()
	go func() {
		var next CatalogResult
		c.call(DescribeCatalogOperation, `{"SinceRevision":`+jsonInt(first.Revision)+`,"WaitSeconds":20}`, &next)
		got <- next
	}()
	time.Sleep(200 * time.Millisecond)
	if _, err := e.svc.CreateIpGroup(context.Background(), "wake", "", nil, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case next := <-got:
		if next.Revision != first.Revision+1 || len(next.IpGroups) != 1 {
			t.Errorf("after the write: %+v", next)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("the poll answered %v after the write", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the long poll did not answer at the write")
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func jsonInt(n uint64) string { b, _ := json.Marshal(n); return string(b) }

// unixCaller calls the API over a root-only socket of the env's server.
type unixCaller struct{ hc *http.Client }

func (e *env) unixClient(t *testing.T) *unixCaller {
	t.Helper()
	path := filepath.Join(t.TempDir(), "run", "hostd.sock")
	ln, err := ListenUnix(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.api.ServeUnixListener(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done })
	return &unixCaller{hc: unixHTTPClient(path)}
}

func (u *unixCaller) call(op, body string, out any) error {
	req, _ := http.NewRequest(http.MethodPost, "http://hostd/", strings.NewReader(body))
	req.Header.Set("X-Amz-Target", OwnTargetPrefix+op)
	req.Header.Set("Content-Type", ContentType)
	resp, err := u.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", resp.Status, b)
	}
	return json.Unmarshal(b, out)
}
