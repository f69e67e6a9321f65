package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"deskhost/hostd/virt"
	"deskhost/internal/testenv"
)

// awsCLI is Debian's awscli. A pyenv shim named aws may come first on PATH: use the
// package's binary by its path.
const awsCLI = "/usr/bin/aws"

// TestAWSCLIDrivesHostd is an administrator's session with AWS's own CLI against a running
// hostd over HTTPS with SigV4: create, describe until AVAILABLE, reboot, terminate — each
// result checked in libvirt too.
func TestAWSCLIDrivesHostd(t *testing.T) {
	testenv.Root(t)
	if _, err := os.Stat(awsCLI); err != nil {
		testenv.Missing(t, "awscli is not installed ("+awsCLI+")")
	}
	h := newHost(t)
	h.start()
	home := t.TempDir()
	aws := func(args ...string) (map[string]any, error) {
		t.Helper()
		cmd := exec.Command(awsCLI, append([]string{"workspaces"}, append(args,
			"--endpoint-url", "https://"+h.listen, "--region", "local", "--output", "json")...)...)
		cmd.Env = []string{
			"HOME=" + home, "PATH=/usr/bin:/bin",
			"AWS_ACCESS_KEY_ID=" + h.accessKey, "AWS_SECRET_ACCESS_KEY=" + h.secretKey,
			"AWS_CA_BUNDLE=" + filepath.Join(h.dir, "tls", "ca.pem"),
			"AWS_CONFIG_FILE=" + filepath.Join(home, "config"), "AWS_SHARED_CREDENTIALS_FILE=" + filepath.Join(home, "creds"),
			"AWS_PAGER=", "AWS_MAX_ATTEMPTS=2",
		}
		out, err := cmd.Output()
		if err != nil {
			if ee, ok := err.(*exec.ExitError); ok {
				return nil, &cliError{string(ee.Stderr)}
			}
			return nil, err
		}
		var v map[string]any
		if len(strings.TrimSpace(string(out))) == 0 {
			return map[string]any{}, nil
		}
		return v, json.Unmarshal(out, &v)
	}

	out, err := aws("create-workspaces", "--workspaces", "DirectoryId="+directoryID+",UserName=carol,BundleId="+h.bundle)
	if err != nil {
		t.Fatal(err)
	}
	pending, _ := out["PendingRequests"].([]any)
	if len(pending) != 1 || len(out["FailedRequests"].([]any)) != 0 {
		t.Fatalf("create-workspaces: %v", out)
	}
	id := pending[0].(map[string]any)["WorkspaceId"].(string)
	if s := pending[0].(map[string]any)["State"]; s != "PENDING" {
		t.Errorf("new WorkSpace state %v", s)
	}
	state := func() string {
		out, err := aws("describe-workspaces", "--workspace-ids", id)
		if err != nil {
			t.Fatal(err)
		}
		ws := out["Workspaces"].([]any)
		if len(ws) != 1 {
			t.Fatalf("describe-workspaces: %v", out)
		}
		w := ws[0].(map[string]any)
		if w["UserName"] != "carol" || w["DirectoryId"] != directoryID || w["BundleId"] != h.bundle {
			t.Fatalf("describe-workspaces: %v", w)
		}
		return w["State"].(string)
	}
	waitFor(t, "AVAILABLE per describe-workspaces", boot, func() bool { return state() == "AVAILABLE" })
	if st, vols := h.libvirtView(id); st != virt.Running || vols != 2 {
		t.Fatalf("libvirt: domain %s, %d volumes", st, vols)
	}
	pid, _, err := virt.QemuProcess(id)
	if err != nil {
		t.Fatal(err)
	}

	if out, err = aws("reboot-workspaces", "--reboot-workspace-requests", id); err != nil {
		t.Fatal(err)
	}
	if f := out["FailedRequests"].([]any); len(f) != 0 {
		t.Fatalf("reboot-workspaces: %v", out)
	}
	waitFor(t, "rebooted (new qemu) and AVAILABLE", boot, func() bool {
		p, _, err := virt.QemuProcess(id)
		return err == nil && p != pid && state() == "AVAILABLE"
	})

	// A refused item comes back in FailedRequests with the AWS error type and the state.
	if out, err = aws("start-workspaces", "--start-workspace-requests", "WorkspaceId="+id); err != nil {
		t.Fatal(err)
	}
	f := out["FailedRequests"].([]any)
	if len(f) != 1 || !strings.Contains(f[0].(map[string]any)["ErrorMessage"].(string), "ALWAYS_ON") {
		t.Errorf("start of an AlwaysOn WorkSpace: %v", out)
	}

	if out, err = aws("terminate-workspaces", "--terminate-workspace-requests", id); err != nil {
		t.Fatal(err)
	}
	if f := out["FailedRequests"].([]any); len(f) != 0 {
		t.Fatalf("terminate-workspaces: %v", out)
	}
	waitFor(t, "TERMINATED", time.Minute, func() bool { return state() == "TERMINATED" })
	if st, vols := h.libvirtView(id); st != virt.Missing || vols != 0 {
		t.Errorf("libvirt after terminate: domain %s, %d volumes", st, vols)
	}

	// A wrong secret is refused by the signature check, and changes nothing.
	h.secretKey = "wrong" + h.secretKey[5:]
	_, err = aws("describe-workspaces")
	if err == nil || !strings.Contains(err.Error(), "InvalidSignatureException") && !strings.Contains(err.Error(), "signature") {
		t.Errorf("a bad secret: %v", err)
	}
}

type cliError struct{ stderr string }

func (e *cliError) Error() string { return "aws: " + strings.TrimSpace(e.stderr) }
