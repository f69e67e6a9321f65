package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/workspaces"
	"github.com/aws/aws-sdk-go-v2/service/workspaces/types"

	"deskhost/hostd/hostdtest"
	"deskhost/internal/testenv"
)

// awsRun runs Debian's awscli against h's HTTPS API, signing with its access key, and
// returns the decoded output or an error carrying awscli's stderr (the AWS error type and
// message).
func awsRun(t *testing.T, h *host, args ...string) (map[string]any, error) {
	t.Helper()
	home := filepath.Join(h.dir, "awshome")
	os.MkdirAll(home, 0o700)
	cmd := exec.Command(awsCLI, append([]string{"workspaces"}, append(args,
		"--endpoint-url", "https://"+h.listen, "--region", "local", "--output", "json")...)...)
	cmd.Env = []string{
		"HOME=" + home, "PATH=/usr/bin:/bin", "LANG=C.UTF-8",
		"AWS_ACCESS_KEY_ID=" + h.accessKey, "AWS_SECRET_ACCESS_KEY=" + h.secretKey,
		"AWS_CA_BUNDLE=" + filepath.Join(h.dir, "tls", "ca.pem"),
		"AWS_CONFIG_FILE=" + filepath.Join(home, "config"), "AWS_SHARED_CREDENTIALS_FILE=" + filepath.Join(home, "creds"),
		"AWS_PAGER=", "AWS_MAX_ATTEMPTS=1",
	}
	out, err := cmd.Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return nil, &cliError{string(ee.Stderr)}
		}
		return nil, err
	}
	v := map[string]any{}
	if len(strings.TrimSpace(string(out))) == 0 {
		return v, nil
	}
	return v, json.Unmarshal(out, &v)
}

// TestAwscliCatalog: an administrator manages the catalog of the real hostd with AWS's own
// CLI over HTTPS: directories (registration and every property), IP access control groups,
// tags, bundles, images and the account, with the guide's limits and refusals.
func TestAwscliCatalog(t *testing.T) {
	testenv.Root(t)
	if _, err := os.Stat(awsCLI); err != nil {
		testenv.Missing(t, "awscli is not installed ("+awsCLI+")")
	}
	h := newHost(t)
	h.start()
	ctx := context.Background()
	local := h.client() // the root-only socket, unthrottled: for bulk set-up
	aws := func(args ...string) map[string]any {
		t.Helper()
		out, err := awsRun(t, h, args...)
		if err != nil {
			t.Fatalf("aws %s: %v", strings.Join(args, " "), err)
		}
		return out
	}
	refused := func(errType, msg string, args ...string) {
		t.Helper()
		_, err := awsRun(t, h, args...)
		if err == nil || !strings.Contains(err.Error(), errType) || !strings.Contains(err.Error(), msg) {
			t.Errorf("aws %s: %v; want %s mentioning %q", strings.Join(args, " "), err, errType, msg)
		}
	}
	list := func(v any) []any { l, _ := v.([]any); return l }
	obj := func(v any) map[string]any { o, _ := v.(map[string]any); return o }

	// --- Directories: the definition is hostd's (hostd directory put); registration and
	// properties are AWS's operations.
	dir2 := "d-00000000a2"
	def := filepath.Join(h.dir, "lab.yaml")
	os.WriteFile(def, []byte("id: "+dir2+"\nname: lab.example.com\nalias: lab\nusers: [{userName: zoe, email: zoe@example.com}]\n"), 0o600)
	if _, err := h.cli("directory", "put", "--file", def); err != nil {
		t.Fatal(err)
	}
	refused("OperationNotSupportedException", "WorkDocs", "register-workspace-directory", "--directory-id", dir2, "--enable-work-docs")
	refused("ResourceNotFoundException", "d-00000000ff does not exist", "register-workspace-directory", "--directory-id", "d-00000000ff", "--no-enable-work-docs")
	aws("register-workspace-directory", "--directory-id", dir2, "--no-enable-work-docs", "--enable-self-service", "--tenancy", "SHARED", "--tags", "Key=team,Value=lab")
	refused("InvalidResourceStateException", "already registered", "register-workspace-directory", "--directory-id", dir2, "--no-enable-work-docs")
	out := aws("describe-workspace-directories", "--directory-ids", dir2)
	d := obj(list(out["Directories"])[0])
	if d["State"] != "REGISTERED" || d["DirectoryName"] != "lab.example.com" || !strings.HasPrefix(d["RegistrationCode"].(string), "SLiad+") ||
		obj(d["SelfservicePermissions"])["RebuildWorkspace"] != "ENABLED" || obj(d["WorkspaceAccessProperties"])["DeviceTypeWeb"] != "DENY" {
		t.Errorf("describe-workspace-directories: %v", d)
	}
	out = aws("describe-workspace-directories", "--limit", "1", "--no-paginate")
	if len(list(out["Directories"])) != 1 || out["NextToken"] == nil {
		t.Errorf("a page of one directory: %v", out)
	}
	aws("modify-workspace-access-properties", "--resource-id", dir2, "--workspace-access-properties", "DeviceTypeWeb=ALLOW,DeviceTypeZeroClient=DENY")
	aws("modify-workspace-creation-properties", "--resource-id", dir2, "--workspace-creation-properties",
		`{"EnableInternetAccess":true,"DefaultOu":"OU=WorkSpaces,DC=lab,DC=example,DC=com","UserEnabledAsLocalAdministrator":false}`)
	refused("OperationNotSupportedException", "security groups", "modify-workspace-creation-properties", "--resource-id", dir2,
		"--workspace-creation-properties", "CustomSecurityGroupId=sg-0123abcd")
	aws("modify-selfservice-permissions", "--resource-id", dir2, "--selfservice-permissions", "RestartWorkspace=DISABLED")
	aws("modify-client-properties", "--resource-id", dir2, "--client-properties", "ReconnectEnabled=DISABLED")
	out = aws("describe-client-properties", "--resource-ids", dir2)
	if cp := obj(obj(list(out["ClientPropertiesList"])[0])["ClientProperties"]); cp["ReconnectEnabled"] != "DISABLED" {
		t.Errorf("describe-client-properties: %v", out)
	}
	refused("ResourceNotFoundException", "d-00000000ff does not exist", "describe-client-properties", "--resource-ids", "d-00000000ff")
	d = obj(list(aws("describe-workspace-directories", "--directory-ids", dir2)["Directories"])[0])
	if a := obj(d["WorkspaceAccessProperties"]); a["DeviceTypeWeb"] != "ALLOW" || a["DeviceTypeZeroClient"] != "DENY" || a["DeviceTypeIos"] != "ALLOW" {
		t.Errorf("access properties: %v", a)
	}
	if c := obj(d["WorkspaceCreationProperties"]); c["EnableInternetAccess"] != true || c["UserEnabledAsLocalAdministrator"] != false ||
		c["DefaultOu"] != "OU=WorkSpaces,DC=lab,DC=example,DC=com" {
		t.Errorf("creation properties: %v", c)
	}
	if p := obj(d["SelfservicePermissions"]); p["RestartWorkspace"] != "DISABLED" || p["RebuildWorkspace"] != "ENABLED" {
		t.Errorf("self-service permissions: %v", p)
	}

	// --- IP access control groups.
	out = aws("create-ip-group", "--group-name", "office", "--group-desc", "HQ",
		"--user-rules", "ipRule=203.0.113.0/24,ruleDesc=HQ", "ipRule=198.51.100.7,ruleDesc=branch NAT")
	gid := out["GroupId"].(string)
	refused("ResourceAlreadyExistsException", "office", "create-ip-group", "--group-name", "office")
	refused("InvalidParameterValuesException", "host bits", "create-ip-group", "--group-name", "bad", "--user-rules", "ipRule=203.0.113.7/24")
	out = aws("describe-ip-groups", "--group-ids", gid)
	g := obj(list(out["Result"])[0])
	rules := list(g["userRules"])
	if g["groupName"] != "office" || len(rules) != 2 || obj(rules[1])["ipRule"] != "198.51.100.7/32" {
		t.Errorf("describe-ip-groups: %v", g)
	}
	var eight []string
	for i := range 8 {
		eight = append(eight, fmt.Sprintf("ipRule=10.%d.0.0/16", i))
	}
	aws(append([]string{"authorize-ip-rules", "--group-id", gid, "--user-rules"}, eight...)...)
	refused("ResourceLimitExceededException", "at most 10", "authorize-ip-rules", "--group-id", gid, "--user-rules", "ipRule=10.99.0.0/16")
	aws("revoke-ip-rules", "--group-id", gid, "--user-rules", "10.0.0.0/16", "10.1.0.0/16")
	refused("InvalidParameterValuesException", "has no rule 10.0.0.0/16", "revoke-ip-rules", "--group-id", gid, "--user-rules", "10.0.0.0/16")
	aws("update-rules-of-ip-group", "--group-id", gid, "--user-rules", "ipRule=203.0.113.0/24,ruleDesc=HQ only")
	if rules := list(obj(list(aws("describe-ip-groups", "--group-ids", gid)["Result"])[0])["userRules"]); len(rules) != 1 {
		t.Errorf("after update-rules-of-ip-group: %v", rules)
	}
	aws("associate-ip-groups", "--directory-id", dir2, "--group-ids", gid)
	refused("ResourceAssociatedException", "disassociate it", "delete-ip-group", "--group-id", gid)
	if ids := list(obj(list(aws("describe-workspace-directories", "--directory-ids", dir2)["Directories"])[0])["ipGroupIds"]); len(ids) != 1 || ids[0] != gid {
		t.Errorf("ipGroupIds %v", ids)
	}
	// 25 groups per directory: 24 more fill it; the 26th is refused.
	var more []string
	for i := range 25 {
		o, err := local.CreateIpGroup(ctx, &workspaces.CreateIpGroupInput{GroupName: aws_(fmt.Sprintf("g%02d", i))})
		if err != nil {
			t.Fatal(err)
		}
		more = append(more, *o.GroupId)
	}
	aws(append([]string{"associate-ip-groups", "--directory-id", dir2, "--group-ids"}, more[:24]...)...)
	refused("ResourceLimitExceededException", "at most 25", "associate-ip-groups", "--directory-id", dir2, "--group-ids", more[24])
	aws(append([]string{"disassociate-ip-groups", "--directory-id", dir2, "--group-ids"}, more[:24]...)...)
	// 100 groups per account: 26 exist; 74 more reach it; the 101st is refused.
	for i := range 74 {
		if _, err := local.CreateIpGroup(ctx, &workspaces.CreateIpGroupInput{GroupName: aws_(fmt.Sprintf("h%02d", i))}); err != nil {
			t.Fatal(err)
		}
	}
	refused("ResourceLimitExceededException", "100", "create-ip-group", "--group-name", "one-too-many")
	aws("delete-ip-group", "--group-id", more[0])
	aws("disassociate-ip-groups", "--directory-id", dir2, "--group-ids", gid)
	aws("delete-ip-group", "--group-id", gid)
	refused("ResourceNotFoundException", gid, "describe-tags", "--resource-id", gid)

	// --- Tags, on a directory (the guide's limits, in Unicode characters).
	aws("create-tags", "--resource-id", dir2, "--tags", "Key=Env,Value=prod", "Key=env,Value=test", "Key="+strings.Repeat("é", 127)+",Value=ok")
	refused("InvalidParameterValuesException", "128 characters", "create-tags", "--resource-id", dir2, "--tags", "Key="+strings.Repeat("é", 128)+",Value=x")
	refused("InvalidParameterValuesException", "256 characters", "create-tags", "--resource-id", dir2, "--tags", "Key=v,Value="+strings.Repeat("a", 256))
	refused("InvalidParameterValuesException", "reserved", "create-tags", "--resource-id", dir2, "--tags", "Key=aws:workspaces:x,Value=y")
	// (JSON: awscli's shorthand would trim the space before sending.)
	refused("InvalidParameterValuesException", "leading and trailing", "create-tags", "--resource-id", dir2, "--tags", `[{"Key":"key ","Value":"y"}]`)
	refused("InvalidParameterValuesException", `"#"`, "create-tags", "--resource-id", dir2, "--tags", "Key=k#,Value=y")
	refused("InvalidParameterValuesException", "system tags", "delete-tags", "--resource-id", dir2, "--tag-keys", "aws:x")
	refused("ResourceNotFoundException", "does not exist", "create-tags", "--resource-id", "wsb-nosuchbndl", "--tags", "Key=k,Value=v")
	out = aws("describe-tags", "--resource-id", dir2)
	var keys []string
	for _, tg := range list(out["TagList"]) {
		keys = append(keys, obj(tg)["Key"].(string))
	}
	if !slices.Contains(keys, "Env") || !slices.Contains(keys, "env") || !slices.Contains(keys, "team") || len(keys) != 4 {
		t.Errorf("describe-tags: %v", keys)
	}
	var tags []string
	for i := range 46 {
		tags = append(tags, fmt.Sprintf("Key=k%02d,Value=v", i))
	}
	aws(append([]string{"create-tags", "--resource-id", dir2, "--tags"}, tags...)...) // 50
	refused("ResourceLimitExceededException", "at most 50", "create-tags", "--resource-id", dir2, "--tags", "Key=fifty-one,Value=x")
	aws("delete-tags", "--resource-id", dir2, "--tag-keys", "Env", "env")
	if n := len(list(aws("describe-tags", "--resource-id", dir2)["TagList"])); n != 48 {
		t.Errorf("%d tags after deleting two of 50", n)
	}

	// --- Images and bundles.
	out = aws("describe-workspace-images")
	imgs := list(out["Images"])
	if len(imgs) != 1 || obj(imgs[0])["ImageId"] != imageID || obj(obj(imgs[0])["OperatingSystem"])["Type"] != "LINUX" {
		t.Errorf("describe-workspace-images: %v", out)
	}
	out = aws("create-workspace-bundle", "--bundle-name", "Value-80-50", "--bundle-description", "1 vCPU (80 and 50 GB)",
		"--image-id", imageID, "--compute-type", "Name=VALUE", "--user-storage", "Capacity=50", "--root-storage", "Capacity=80", "--tags", "Key=tier,Value=value")
	b := obj(out["WorkspaceBundle"])
	bid := b["BundleId"].(string)
	if b["State"] != "AVAILABLE" || obj(b["UserStorage"])["Capacity"] != "50" || obj(b["ComputeType"])["Name"] != "VALUE" {
		t.Errorf("create-workspace-bundle: %v", b)
	}
	refused("ResourceAlreadyExistsException", "Value-80-50", "create-workspace-bundle", "--bundle-name", "Value-80-50", "--bundle-description", "again",
		"--image-id", imageID, "--compute-type", "Name=VALUE", "--user-storage", "Capacity=50")
	refused("InvalidParameterValuesException", "[80,10]", "create-workspace-bundle", "--bundle-name", "odd", "--bundle-description", "odd",
		"--image-id", imageID, "--compute-type", "Name=VALUE", "--user-storage", "Capacity=20")
	refused("ResourceUnavailableException", "no hardware", "create-workspace-bundle", "--bundle-name", "power", "--bundle-description", "power",
		"--image-id", imageID, "--compute-type", "Name=POWER", "--user-storage", "Capacity=10")
	refused("ResourceNotFoundException", "wsi-nosuchimage", "create-workspace-bundle", "--bundle-name", "noimg", "--bundle-description", "noimg",
		"--image-id", "wsi-nosuchimage", "--compute-type", "Name=VALUE", "--user-storage", "Capacity=10")
	if tg := list(aws("describe-tags", "--resource-id", bid)["TagList"]); len(tg) != 1 {
		t.Errorf("the bundle's tags: %v", tg)
	}
	aws("update-workspace-bundle", "--bundle-id", bid, "--image-id", imageID)
	refused("ResourceAssociatedException", "delete the bundle first", "delete-workspace-image", "--image-id", imageID)
	out = aws("describe-workspace-bundles", "--bundle-ids", bid)
	if bs := list(out["Bundles"]); len(bs) != 1 || obj(bs[0])["Name"] != "Value-80-50" {
		t.Errorf("describe-workspace-bundles: %v", out)
	}
	aws("delete-workspace-bundle", "--bundle-id", bid)
	if bs := list(aws("describe-workspace-bundles", "--bundle-ids", bid)["Bundles"]); len(bs) != 0 {
		t.Errorf("a deleted bundle is described: %v", bs)
	}

	// --- The account.
	out = aws("describe-account")
	if out["DedicatedTenancySupport"] != "ENABLED" {
		t.Errorf("describe-account: %v", out)
	}
	out = aws("describe-account-modifications")
	if m, ok := out["AccountModifications"].([]any); !ok || len(m) != 0 {
		t.Errorf("describe-account-modifications: %v", out)
	}
	out = aws("list-available-management-cidr-ranges", "--management-cidr-range-constraint", "198.18.0.0/15", "--max-results", "1")
	if r := list(out["ManagementCidrRanges"]); len(r) != 1 || !strings.HasPrefix(r[0].(string), "198.1") || !strings.HasSuffix(r[0].(string), ".0.0/16") {
		t.Errorf("list-available-management-cidr-ranges: %v", out)
	}
	refused("InvalidParameterValuesException", "host bits", "list-available-management-cidr-ranges", "--management-cidr-range-constraint", "198.18.0.1/15")

	// --- Deregistration is refused while the directory has a WorkSpace that is not
	// TERMINATED, and goes through after.
	cr, err := local.CreateWorkspaces(ctx, &workspaces.CreateWorkspacesInput{Workspaces: []types.WorkspaceRequest{{
		DirectoryId: aws_(dir2), UserName: aws_("zoe"), BundleId: aws_(h.bundle)}}})
	if err != nil || len(cr.PendingRequests) != 1 {
		t.Fatalf("create in %s: %v %+v", dir2, err, cr)
	}
	wsID := *cr.PendingRequests[0].WorkspaceId
	aws("create-tags", "--resource-id", wsID, "--tags", "Key=owner,Value=zoe")
	refused("InvalidResourceStateException", wsID, "deregister-workspace-directory", "--directory-id", dir2)
	if _, err := local.TerminateWorkspaces(ctx, &workspaces.TerminateWorkspacesInput{TerminateWorkspaceRequests: []types.TerminateRequest{{WorkspaceId: aws_(wsID)}}}); err != nil {
		t.Fatal(err)
	}
	h.waitState(wsID, types.WorkspaceStateTerminated, 3*time.Minute)
	aws("deregister-workspace-directory", "--directory-id", dir2)
	if ds := list(aws("describe-workspace-directories", "--directory-ids", dir2)["Directories"]); len(ds) != 0 {
		t.Errorf("a deregistered directory is described: %v", ds)
	}
	refused("ResourceNotFoundException", "not registered", "create-tags", "--resource-id", dir2, "--tags", "Key=k,Value=v")
	if _, err := h.cli("directory", "delete", dir2); err != nil {
		t.Errorf("deleting the deregistered directory's definition: %v", err)
	}
}

func aws_(s string) *string { return aws.String(s) }

// TestCatalogImport: a host config that still carries catalog sections is imported into
// the store at hostd's first start, with a report printed, logged and written under the
// data directory; started again with the same config, hostd refuses it and says where the
// catalog lives now; without the sections it serves the imported catalog.
func TestCatalogImport(t *testing.T) {
	testenv.Root(t)
	h := newHostWith(t, hostOptions{legacy: true})
	// The directory's IP access control group, as login settings used to carry it.
	cfg, _ := os.ReadFile(h.config)
	withGroup := strings.Replace(string(cfg), "    - id: "+directoryID+"\n", "    - id: "+directoryID+"\n"+
		"      login:\n        ipGroups:\n          - {id: wsipg-office001, name: office, rules: [{source: 203.0.113.0/24, description: HQ}]}\n", 1)
	if withGroup == string(cfg) {
		t.Fatal("the test config has no directory to add a group to")
	}
	os.WriteFile(h.config, []byte(withGroup), 0o600)
	h.start()
	report, err := os.ReadFile(filepath.Join(h.dir, "catalog-import.txt"))
	if err != nil {
		t.Fatalf("no import report: %v\n%s", err, h.proc.Output())
	}
	for _, want := range []string{"image " + imageID, "bundle " + legacyBundle, "directory " + directoryID, "wsipg-office001", "hostd.directories[0]", "registered with code"} {
		if !strings.Contains(string(report), want) {
			t.Errorf("the report does not mention %q:\n%s", want, report)
		}
	}
	if !strings.Contains(h.proc.Output(), "Catalog imported from "+h.config) || !strings.Contains(h.proc.Output(), "catalog import") {
		t.Errorf("hostd did not print and log the report:\n%s", h.proc.Tail(4000))
	}
	ctx := context.Background()
	ds, err := h.client().DescribeWorkspaceDirectories(ctx, &workspaces.DescribeWorkspaceDirectoriesInput{})
	if err != nil || len(ds.Directories) != 1 || !slices.Equal(ds.Directories[0].IpGroupIds, []string{"wsipg-office001"}) {
		t.Fatalf("imported directories: %v %+v", err, ds)
	}
	gs, err := h.client().DescribeIpGroups(ctx, &workspaces.DescribeIpGroupsInput{})
	if err != nil || len(gs.Result) != 1 || aws.ToString(gs.Result[0].UserRules[0].IpRule) != "203.0.113.0/24" {
		t.Fatalf("imported IP groups: %v %+v", err, gs)
	}
	bs, err := h.client().DescribeWorkspaceBundles(ctx, &workspaces.DescribeWorkspaceBundlesInput{})
	if err != nil || len(bs.Bundles) != 1 || aws.ToString(bs.Bundles[0].BundleId) != legacyBundle {
		t.Fatalf("imported bundles: %v %+v", err, bs)
	}
	h.stop()

	// The same config again: refused, saying where the catalog is and how to manage it.
	p := hostdtest.Start(t, hostdBin, "serve", "--config", h.config)
	done := make(chan error, 1)
	go func() { done <- p.Cmd.Wait() }()
	select {
	case err := <-done:
		out := p.Output()
		if err == nil || !strings.Contains(out, "still has catalog sections") || !strings.Contains(out, "hostd.directories") ||
			!strings.Contains(out, "imported into hostd's store") || !strings.Contains(out, "hostd directory put") ||
			!strings.Contains(out, filepath.Join(h.dir, "catalog-import.txt")) {
			t.Errorf("hostd with the old sections after the import: %v\n%s", err, out)
		}
	case <-time.After(30 * time.Second):
		p.Stop()
		t.Fatalf("hostd kept running on a config whose catalog was imported:\n%s", p.Output())
	}

	// Without the sections, the imported catalog is what hostd serves.
	var kept []string
	skip := false
	for _, line := range strings.Split(withGroup, "\n") {
		switch {
		case line == "  images:" || line == "  bundles:" || line == "  directories:":
			skip = true
			continue
		case skip && strings.HasPrefix(line, "    "):
			continue
		}
		skip = false
		kept = append(kept, line)
	}
	os.WriteFile(h.config, []byte(strings.Join(kept, "\n")), 0o600)
	h.startOnly()
	bs, err = h.client().DescribeWorkspaceBundles(ctx, &workspaces.DescribeWorkspaceBundlesInput{})
	if err != nil || len(bs.Bundles) != 1 {
		t.Fatalf("bundles after the sections left the config: %v %+v\n%s", err, bs, h.proc.Tail(3000))
	}
}
