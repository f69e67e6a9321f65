package hostconfig

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"deskhost/internal/argon2id"
)

func withKeys(keys string) string {
	return strings.Replace(minimalHostd, "  api: {socket: /tmp/h.sock}\n", "  api:\n    socket: /tmp/h.sock\n    listen: 127.0.0.1:8443\n    accessKeys:\n"+keys, 1)
}

// An access key's secret can be a file: Parse checks the form, LoadSecrets reads the file
// (owner-only) into the key, and refuses a file others may read, naming it.
func TestAccessKeySecretFile(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "admin.secret")
	os.WriteFile(f, []byte("abcdefghijklmnopqrstuvwxyz0123\n"), 0o600)
	c, err := Parse([]byte(withKeys("      - {id: AKIAEXAMPLE0000001, secretFile: " + f + ", name: admin}\n")))
	if err != nil {
		t.Fatal(err)
	}
	if c.Hostd.API.AccessKeys[0].Secret != "" {
		t.Fatal("Parse read the secret file")
	}
	if p := c.LoadSecrets(); len(p) != 0 {
		t.Fatal(p)
	}
	if got := c.Hostd.API.AccessKeys[0].Secret; got != "abcdefghijklmnopqrstuvwxyz0123" {
		t.Errorf("secret from file: %q", got)
	}
	// Refused files leave their key out (named), the others stay.
	two := "      - {id: AKIAEXAMPLE0000001, secretFile: " + f + ", name: admin}\n      - {id: AKIAEXAMPLE0000002, secret: abcdefghijklmnopqrstuvwxyz}\n"
	os.Chmod(f, 0o640)
	c, _ = Parse([]byte(withKeys(two)))
	p := c.LoadSecrets()
	if len(p) != 1 || !strings.Contains(p[0].Error(), "accessKeys[0] (AKIAEXAMPLE0000001) left out") || !strings.Contains(p[0].Error(), f) || !strings.Contains(p[0].Error(), "chmod 600") {
		t.Errorf("group-readable secret file: %v", p)
	}
	if len(c.Hostd.API.AccessKeys) != 1 || c.Hostd.API.AccessKeys[0].ID != "AKIAEXAMPLE0000002" {
		t.Errorf("keys after a refused file: %+v", c.Hostd.API.AccessKeys)
	}
	short := filepath.Join(dir, "short")
	os.WriteFile(short, []byte("tooshort"), 0o600)
	missing := filepath.Join(dir, "missing")
	c, _ = Parse([]byte(withKeys("      - {id: AKIAEXAMPLE0000001, secretFile: " + short + "}\n      - {id: AKIAEXAMPLE0000003, secretFile: " + missing + "}\n")))
	if p := c.LoadSecrets(); len(p) != 2 || !strings.Contains(p[0].Error(), "at least 20") || !strings.Contains(p[1].Error(), missing) || len(c.Hostd.API.AccessKeys) != 0 {
		t.Errorf("short and missing secret files: %v %+v", p, c.Hostd.API.AccessKeys)
	}
	for keys, want := range map[string]string{
		"      - {id: AKIAEXAMPLE0000001, secret: abcdefghijklmnopqrstuvwxyz, secretFile: " + f + "}\n": "secret or secretFile, not both",
		"      - {id: AKIAEXAMPLE0000001}\n":                           "secretFile (a 0600 file on /perm) or secret required",
		"      - {id: AKIAEXAMPLE0000001, secretFile: relative.key}\n": "an absolute path",
	} {
		if _, err := Parse([]byte(withKeys(keys))); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", keys, err, want)
		}
	}
}

// InlineSecrets finds every inline secret wherever it is in the config; file references
// are not secrets.
func TestInlineSecrets(t *testing.T) {
	hash, _ := argon2id.Hash("pw")
	b := withKeys("      - {id: AKIAEXAMPLE0000001, secret: abcdefghijklmnopqrstuvwxyz}\n      - {id: AKIAEXAMPLE0000002, secretFile: /perm/k2}\n") + `  directories:
    - id: d-0123456789
      name: corp.example.com
      login:
        type: ldap
        ldap: {url: "ldaps://dc.corp:636", bindDN: "cn=svc", bindPassword: hunter2hunter2, userBase: "dc=corp"}
        mfa: {type: radius, radius: {servers: [10.0.0.9], sharedSecret: radius-shared}}
    - id: d-0123456788
      name: other.example.com
      login:
        type: ldap
        ldap: {url: "ldaps://dc.other:636", bindDN: "cn=svc", bindPasswordFile: /perm/bind, userBase: "dc=other"}
init:
  console: {passwordHash: "` + hash + `"}
`
	c, err := Parse([]byte(b))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"hostd.api.accessKeys[0].secret",
		"hostd.directories[0].login.ldap.bindPassword",
		"hostd.directories[0].login.mfa.radius.sharedSecret",
		"init.console.passwordHash",
	}
	if got := c.InlineSecrets(); !reflect.DeepEqual(got, want) {
		t.Errorf("InlineSecrets:\n got %q\nwant %q", got, want)
	}
	c, _ = Parse([]byte(withKeys("      - {id: AKIAEXAMPLE0000002, secretFile: /perm/k2}\n")))
	if got := c.InlineSecrets(); len(got) != 0 {
		t.Errorf("file references counted as secrets: %q", got)
	}
}

// requireInitOnFree defaults to true; a harness opts out explicitly.
func TestRequireInitOnFreeDefault(t *testing.T) {
	c, err := Parse([]byte(minimalHostd))
	if err != nil || !c.Hostd.Memory.InitOnFreeRequired() {
		t.Fatalf("default: %v %v", err, c.Hostd.Memory.InitOnFreeRequired())
	}
	c, err = Parse([]byte(minimalHostd + "  memory: {requireInitOnFree: false}\n"))
	if err != nil || c.Hostd.Memory.InitOnFreeRequired() {
		t.Fatalf("opted out: %v %v", err, c.Hostd.Memory.InitOnFreeRequired())
	}
}

func TestConsolePasswordHashChecked(t *testing.T) {
	_, err := Parse([]byte(minimalHostd + "init:\n  console: {passwordHash: \"$argon2id$v=19$m=99999999,t=2,p=1$c2FsdHNhbHQ$a2V5a2V5a2V5a2V5a2V5a2V5\"}\n"))
	if err == nil || !strings.Contains(err.Error(), "init.console.passwordHash") {
		t.Errorf("a hash asking for 95 GiB: %v", err)
	}
}
