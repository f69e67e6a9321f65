package cli

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"deskhost/internal/testenv"
)

// The CLI reads the endpoint and the certificate to trust from the same environment
// variables as awscli and the AWS SDKs.
func TestCLIAWSEnvironment(t *testing.T) {
	f := newFixture(t)
	t.Setenv("AWS_ACCESS_KEY_ID", keyID)
	t.Setenv("AWS_SECRET_ACCESS_KEY", keySecret)
	t.Setenv("AWS_ENDPOINT_URL", f.url)
	t.Setenv("AWS_CA_BUNDLE", f.cert)
	t.Setenv("AWS_ENDPOINT_URL_WORKSPACES", "")
	code, out, errs := f.cliRaw("directories")
	if code != 0 || !hasRow(out, dirID, "corp.example.com") {
		t.Errorf("directories with AWS_ENDPOINT_URL and AWS_CA_BUNDLE: %d\n%s%s", code, out, errs)
	}
	// The service-specific variable wins, as in the SDKs.
	t.Setenv("AWS_ENDPOINT_URL_WORKSPACES", strings.Replace(f.url, "https", "http", 1))
	code, _, errs = f.cliRaw("workspaces")
	if code != 2 || !strings.Contains(errs, "$AWS_ENDPOINT_URL_WORKSPACES") || !strings.Contains(errs, "HTTPS only") {
		t.Errorf("AWS_ENDPOINT_URL_WORKSPACES http://: %d %q", code, errs)
	}
	t.Setenv("AWS_ENDPOINT_URL_WORKSPACES", "")
	// Without the bundle, hostd's self-signed certificate is refused, and the hint names
	// the variable.
	t.Setenv("AWS_CA_BUNDLE", "")
	code, _, errs = f.cliRaw("directories")
	if code != 1 || !strings.Contains(errs, "cannot verify hostd's certificate") || !strings.Contains(errs, "AWS_CA_BUNDLE") {
		t.Errorf("no AWS_CA_BUNDLE: %d %q", code, errs)
	}
	// A flag wins over the environment.
	code, out, errs = f.cliRaw("directories", "--ca-file", f.cert)
	if code != 0 || !hasRow(out, dirID, "corp.example.com") {
		t.Errorf("--ca-file with AWS_ENDPOINT_URL: %d\n%s%s", code, out, errs)
	}
	t.Setenv("AWS_CA_BUNDLE", filepath.Join(t.TempDir(), "missing.pem"))
	code, out, errs = f.cliRaw("directories", "--socket", f.socket)
	if code != 0 || !hasRow(out, dirID, "corp.example.com") {
		t.Errorf("--socket with AWS_ENDPOINT_URL set: %d\n%s%s", code, out, errs)
	}
	code, _, errs = f.cliRaw("directories")
	if code == 0 || !strings.Contains(errs, "missing.pem") {
		t.Errorf("AWS_CA_BUNDLE naming a missing file: %d %q", code, errs)
	}
	t.Setenv("AWS_SECRET_ACCESS_KEY", "")
	t.Setenv("AWS_CA_BUNDLE", f.cert)
	code, _, errs = f.cliRaw("workspaces")
	if code != 2 || !strings.Contains(errs, "$AWS_ENDPOINT_URL needs an access key") {
		t.Errorf("no secret: %d %q", code, errs)
	}
}

// awsCLI is Debian's awscli (a pyenv shim named aws may come first on PATH).
const awsCLI = "/usr/bin/aws"

// TestREADMEAwscliProfile runs the README's awscli profile, as written there (with this
// test's endpoint, certificate and key substituted), against a real hostd API.
func TestREADMEAwscliProfile(t *testing.T) {
	if _, err := os.Stat(awsCLI); err != nil {
		testenv.Missing(t, awsCLI+" is missing (Debian package awscli, scripts/packages/hostd.txt)")
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "#### An awscli profile for deskhost")
	if !ok {
		t.Fatal("README has no awscli profile section")
	}
	blocks := regexp.MustCompile("(?s)```ini\n(# ~/.aws/(config|credentials)\n.*?)```").FindAllStringSubmatch(section, 2)
	if len(blocks) != 2 || blocks[0][2] != "config" || blocks[1][2] != "credentials" {
		t.Fatalf("README's profile: want an ini block for ~/.aws/config then one for ~/.aws/credentials, got %d", len(blocks))
	}
	f := newFixture(t)
	subst := strings.NewReplacer("https://10.0.0.1:8443", f.url, "/etc/deskhost/hostd-ca.pem", f.cert,
		"AKIA_DESKHOST_EXAMPLE", keyID, "the-secret-from-hostd-api-accessKeys", keySecret)
	home := t.TempDir()
	for _, b := range blocks {
		if err := os.WriteFile(filepath.Join(home, b[2]), []byte(subst.Replace(b[1])), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(awsCLI, "--profile", "deskhost", "workspaces", "describe-workspace-directories",
		"--endpoint-url", f.url, "--output", "text")
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + home, "LANG=C.UTF-8", "AWS_PAGER=",
		"AWS_CONFIG_FILE=" + filepath.Join(home, "config"), "AWS_SHARED_CREDENTIALS_FILE=" + filepath.Join(home, "credentials"),
		"AWS_MAX_ATTEMPTS=1"}
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), dirID) || !strings.Contains(string(out), "corp.example.com") {
		t.Fatalf("aws --profile deskhost: %v\n%s", err, out)
	}
}
