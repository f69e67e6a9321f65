package api

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"deskhost/hostd/workspace"
)

// awsCLI is Debian's awscli package. A pyenv shim named aws may come first on PATH on dev
// machines, so the path is explicit.
const awsCLI = "/usr/bin/aws"

// TestAwscli drives the HTTPS API with the administrators' own tool: awscli, pinned to the
// self-signed certificate with AWS_CA_BUNDLE, signing with SigV4 from environment
// credentials, with no user configuration leaking in.
func TestAwscli(t *testing.T) {
	if _, err := os.Stat(awsCLI); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is missing (Debian package awscli, listed in scripts/packages/hostd.txt): %v", awsCLI, err)
		}
		t.Skipf("skipped: %s is missing (apt-get install awscli); CI=true makes this fail", awsCLI)
	}
	e := newEnv(t, envOptions{})
	home := t.TempDir()
	aws := func(secret string, args ...string) (map[string]any, string, error) {
		t.Helper()
		cmd := exec.Command(awsCLI, append(append([]string{"workspaces"}, args...),
			"--endpoint-url", e.url, "--region", e.region, "--output", "json")...)
		cmd.Env = []string{
			"PATH=/usr/bin:/bin",
			"HOME=" + home,
			"LANG=C.UTF-8",
			"AWS_CONFIG_FILE=" + filepath.Join(home, "config"),
			"AWS_SHARED_CREDENTIALS_FILE=" + filepath.Join(home, "credentials"),
			"AWS_CA_BUNDLE=" + e.cert,
			"AWS_ACCESS_KEY_ID=" + accessKeyID,
			"AWS_SECRET_ACCESS_KEY=" + secret,
			"AWS_PAGER=",
			"AWS_RETRY_MODE=standard",
			"AWS_MAX_ATTEMPTS=1",
		}
		var stdout, stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		var out map[string]any
		if err == nil && strings.TrimSpace(stdout.String()) != "" {
			if jerr := json.Unmarshal([]byte(stdout.String()), &out); jerr != nil {
				t.Fatalf("aws %s: output is not JSON: %v\n%s", args[0], jerr, stdout.String())
			}
		}
		return out, stderr.String(), err
	}
	must := func(out map[string]any, stderr string, err error) map[string]any {
		t.Helper()
		if err != nil {
			t.Fatalf("aws: %v\n%s", err, stderr)
		}
		return out
	}
	list := func(v any) []any { l, _ := v.([]any); return l }
	obj := func(v any) map[string]any { o, _ := v.(map[string]any); return o }

	out := must(aws(secretKey, "create-workspaces", "--workspaces",
		"DirectoryId="+dirID+",UserName=alice,BundleId="+bundleStd+",WorkspaceProperties={RunningMode=AUTO_STOP,RunningModeAutoStopTimeoutInMinutes=120}",
		"DirectoryId="+dirID+",UserName=dave,BundleId=wsb-nosuchbndl"))
	pending, failed := list(out["PendingRequests"]), list(out["FailedRequests"])
	if len(pending) != 1 || len(failed) != 1 {
		t.Fatalf("create-workspaces: %v", out)
	}
	ws := obj(pending[0])
	id, _ := ws["WorkspaceId"].(string)
	if ws["State"] != "PENDING" || ws["UserName"] != "alice" || !strings.HasPrefix(id, "ws-") {
		t.Errorf("pending %v", ws)
	}
	if p := obj(ws["WorkspaceProperties"]); p["RunningMode"] != "AUTO_STOP" || p["RunningModeAutoStopTimeoutInMinutes"] != 120.0 {
		t.Errorf("properties %v", p)
	}
	if f := obj(failed[0]); f["ErrorCode"] != "ResourceNotFoundException" || obj(f["WorkspaceRequest"])["BundleId"] != "wsb-nosuchbndl" {
		t.Errorf("failed %v", f)
	}

	out = must(aws(secretKey, "describe-workspaces"))
	all := list(out["Workspaces"])
	if len(all) != 1 || obj(all[0])["WorkspaceId"] != id || obj(all[0])["DirectoryId"] != dirID || obj(all[0])["BundleId"] != bundleStd {
		t.Fatalf("describe-workspaces: %v", out)
	}

	e.setState(id, workspace.Available) // the controller's part
	out = must(aws(secretKey, "reboot-workspaces", "--reboot-workspace-requests", id, "ws-doesnotexist"))
	if f := list(out["FailedRequests"]); len(f) != 1 || obj(f[0])["WorkspaceId"] != "ws-doesnotexist" || obj(f[0])["ErrorCode"] != "ResourceNotFoundException" {
		t.Errorf("reboot-workspaces: %v", out)
	}
	out = must(aws(secretKey, "describe-workspaces", "--workspace-ids", id))
	if w := list(out["Workspaces"]); len(w) != 1 || obj(w[0])["State"] != "REBOOTING" {
		t.Errorf("after reboot: %v", out)
	}

	e.setState(id, workspace.Available)
	out = must(aws(secretKey, "migrate-workspace", "--source-workspace-id", id, "--bundle-id", bundleValue))
	if tgt, _ := out["TargetWorkspaceId"].(string); out["SourceWorkspaceId"] != id || !strings.HasPrefix(tgt, "ws-") || tgt == id {
		t.Errorf("migrate-workspace: %v", out)
	}
	e.expectState(id, workspace.Updating)
	out = must(aws(secretKey, "terminate-workspaces", "--terminate-workspace-requests", id))
	if f := list(out["FailedRequests"]); len(f) != 0 {
		t.Errorf("terminate-workspaces: %v", out)
	}
	e.expectState(id, workspace.Terminating)

	// Errors arrive as AWS errors the tool names: a bad secret, and a bad parameter.
	_, stderr, err := aws("not-the-secret-at-all-0000000000", "describe-workspaces")
	if err == nil || !strings.Contains(stderr, "InvalidSignatureException") || !strings.Contains(stderr, "signature we calculated does not match") {
		t.Errorf("bad secret: err %v, stderr %q", err, stderr)
	}
	_, stderr, err = aws(secretKey, "modify-workspace-state", "--workspace-id", "ws-doesnotexist", "--workspace-state", "ADMIN_MAINTENANCE")
	if err == nil || !strings.Contains(stderr, "ResourceNotFoundException") || !strings.Contains(stderr, "ws-doesnotexist does not exist") {
		t.Errorf("unknown WorkSpace: err %v, stderr %q", err, stderr)
	}

	// Images, as administrators make them with awscli.
	out = must(aws(secretKey, "create-workspaces", "--workspaces", "DirectoryId="+dirID+",UserName=bob,BundleId="+bundleStd))
	bob, _ := obj(list(out["PendingRequests"])[0])["WorkspaceId"].(string)
	e.setState(bob, workspace.Available)
	out = must(aws(secretKey, "create-workspace-image", "--workspace-id", bob, "--name", "golden", "--description", "Golden image"))
	golden, _ := out["ImageId"].(string)
	if out["State"] != "PENDING" || obj(out["OperatingSystem"])["Type"] != "LINUX" || !strings.HasPrefix(golden, "wsi-") {
		t.Errorf("create-workspace-image: %v", out)
	}
	e.expectState(bob, workspace.Suspended)
	out = must(aws(secretKey, "describe-workspace-images", "--image-ids", golden))
	if i := list(out["Images"]); len(i) != 1 || obj(i[0])["State"] != "PENDING" {
		t.Errorf("describe-workspace-images: %v", out)
	}
	_, stderr, err = aws(secretKey, "copy-workspace-image", "--source-image-id", imageLinux, "--source-region", "us-east-1", "--name", "copy")
	if err == nil || !strings.Contains(stderr, "InvalidParameterValuesException") || !strings.Contains(stderr, "us-east-1") {
		t.Errorf("copy from another Region: err %v, stderr %q", err, stderr)
	}
	_, stderr, err = aws(secretKey, "import-workspace-image", "--ec2-image-id", "ami-0123456789abcdef0", "--ingestion-process", "BYOL_REGULAR",
		"--image-name", "byol", "--image-description", "BYOL image")
	if err == nil || !strings.Contains(stderr, "ResourceNotFoundException") || !strings.Contains(stderr, "Deskhost.ImportImage") {
		t.Errorf("import of an EC2 image: err %v, stderr %q", err, stderr)
	}

	// DescribeAccount's hostd-only Quotas member is skipped by awscli, as by the SDK: AWS's
	// members come through unchanged.
	out = must(aws(secretKey, "describe-account"))
	if out["DedicatedTenancySupport"] != "ENABLED" {
		t.Errorf("describe-account: %v", out)
	}
	if _, ok := out["Quotas"]; ok {
		t.Errorf("describe-account: awscli printed hostd's Quotas member; the shape it knows has none: %v", out)
	}
}
