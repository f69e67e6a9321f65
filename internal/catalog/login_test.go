package catalog

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// decode decodes a directory the way hostconfig does: strictly.
func decode(t *testing.T, doc string) (Directory, error) {
	t.Helper()
	dec := yaml.NewDecoder(bytes.NewReader([]byte(doc)))
	dec.KnownFields(true)
	var d Directory
	err := dec.Decode(&d)
	return d, err
}

const radiusDoc = `id: d-0123456789
name: corp.example.com
login:
  type: ldap
  ldap: {url: "ldap://127.0.0.1:3890", startTLS: true, bindDN: "cn=svc,dc=corp", bindPassword: x, userBase: "dc=corp"}
  mfa:
    type: radius
    radius:
      servers: %s
      sharedSecret: s3cret
      %s
`

func TestRADIUSRangesAreTheGuides(t *testing.T) {
	for _, tc := range []struct {
		extra string
		ok    bool
	}{
		{"timeoutSeconds: 0", false},
		{"timeoutSeconds: 21", false},
		{"timeoutSeconds: 1", true},
		{"timeoutSeconds: 20", true},
		{"retries: -1", false},
		{"retries: 11", false},
		{"retries: 0", true},
		{"retries: 10", true},
		{"timeoutSeconds: five", false},
		{"port: 0", false},
		{"port: 65536", false},
		{"protocol: PAP", true},
		{"protocol: MS-CHAPv2", false}, // the guide's choice, not implemented: refused clearly
		{"protocol: pap", false},
	} {
		d, err := decode(t, fmt.Sprintf(radiusDoc, "[10.0.0.5]", tc.extra))
		if err == nil {
			err = d.Login.Validate()
		}
		if (err == nil) != tc.ok {
			t.Errorf("%s: err = %v, want ok=%v", tc.extra, err, tc.ok)
		}
		if err != nil && !tc.ok && !strings.Contains(err.Error(), "line") && !strings.Contains(err.Error(), "login.") {
			t.Errorf("%s: error %q does not say where", tc.extra, err)
		}
	}
	d, err := decode(t, fmt.Sprintf(radiusDoc, `"10.0.0.5, 10.0.0.6"`, "retries: 0"))
	if err != nil {
		t.Fatal(err)
	}
	r := d.Login.MFA.RADIUS
	if r.PortNumber() != 1812 || r.Timeout() != DefaultRADIUSTimeout || r.RetryCount() != 0 {
		t.Errorf("defaults: port %d timeout %d retries %d", r.PortNumber(), r.Timeout(), r.RetryCount())
	}
	if len(r.Servers) != 2 || r.Servers[1] != "10.0.0.6" {
		t.Errorf("comma-separated servers: %q", r.Servers)
	}
	if d.Login.MFA.MFAStatusOrDefault() != MFAEnabled {
		t.Errorf("status default %s", d.Login.MFA.MFAStatusOrDefault())
	}
}

func TestDecodingStaysStrict(t *testing.T) {
	for _, doc := range []string{
		"id: d-0123456789\nname: a.b\nlogin: {tpye: ldap}\n",
		"id: d-0123456789\nname: a.b\nlogin: {mfa: {type: radius, radius: {servers: [a], sharedSecret: x, timeout: 5}}}\n",
		"id: d-0123456789\nname: a.b\nlogin: {deviceAccess: {zeroClient: DENY}}\n",
		"id: d-0123456789\nname: a.b\nlogin: {type: kerberos}\n",
		"id: d-0123456789\nname: a.b\nlogin: {deviceAccess: {web: yes}}\n",
		"id: d-0123456789\nname: a.b\nlogin: {passwordPolicy: {requiredClasses: 2}}\n",
		"id: d-0123456789\nname: a.b\nlogin: {ipGroups: [{id: wsipg-a1bcd2efg, rules: [{source: 10.0.0.1/8}]}]}\n",
		"id: d-0123456789\nname: a.b\nlogin: {ipGroups: [{id: wsipg-a1bcd2efg, rules: [{source: banana}]}]}\n",
	} {
		if _, err := decode(t, doc); err == nil {
			t.Errorf("accepted:\n%s", doc)
		}
	}
}

func TestValidateCrossFieldRules(t *testing.T) {
	secretFile := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(secretFile, []byte("from-file\n"), 0o600)
	for _, tc := range []struct {
		name  string
		login Login
		want  string // "" = valid
	}{
		{"local default", Login{}, ""},
		{"ldap without settings", Login{Type: TypeLDAP}, "login.ldap: required"},
		{"ldap bad url", Login{Type: TypeLDAP, LDAP: &LDAP{URL: "http://x", BindDN: "cn=a", BindPassword: "p", UserBase: "dc=x"}}, "login.ldap.url"},
		{"ldap two passwords", Login{Type: TypeLDAP, LDAP: &LDAP{URL: "ldap://x", BindDN: "cn=a", BindPassword: "p", BindPasswordFile: secretFile, UserBase: "dc=x"}}, "exactly one of bindPassword"},
		{"ldaps with starttls", Login{Type: TypeLDAP, LDAP: &LDAP{URL: "ldaps://x", StartTLS: true, BindDN: "cn=a", BindPassword: "p", UserBase: "dc=x"}}, "startTLS"},
		{"ldap ok", Login{Type: TypeLDAP, LDAP: &LDAP{URL: "ldap://x:389", StartTLS: true, BindDN: "cn=a", BindPasswordFile: secretFile, UserBase: "dc=x"}}, ""},
		{"ldaps ok", Login{Type: TypeLDAP, LDAP: &LDAP{URL: "ldaps://x:636", BindDN: "cn=a", BindPassword: "p", UserBase: "dc=x"}}, ""},
		{"ldap cleartext", Login{Type: TypeLDAP, LDAP: &LDAP{URL: "ldap://x:389", BindDN: "cn=a", BindPassword: "p", UserBase: "dc=x"}}, "cleartext"},
		{"ldap cleartext allowed", Login{Type: TypeLDAP, LDAP: &LDAP{URL: "ldap://x:389", AllowCleartext: true, BindDN: "cn=a", BindPassword: "p", UserBase: "dc=x"}}, ""},
		{"cleartext with ldaps", Login{Type: TypeLDAP, LDAP: &LDAP{URL: "ldaps://x", AllowCleartext: true, BindDN: "cn=a", BindPassword: "p", UserBase: "dc=x"}}, "allowCleartext"},
		{"ldap on local", Login{LDAP: &LDAP{}}, "only for type ldap"},
		{"totp on ldap", Login{Type: TypeLDAP, LDAP: &LDAP{URL: "ldaps://x", BindDN: "cn=a", BindPassword: "p", UserBase: "dc=x"}, MFA: &MFA{Type: MFATOTP}}, "only for local"},
		{"totp local", Login{MFA: &MFA{Type: MFATOTP}}, ""},
		{"radius without servers", Login{MFA: &MFA{Type: MFARADIUS, RADIUS: &RADIUS{SharedSecret: "s"}}}, "at least one server"},
		{"radius without secret", Login{MFA: &MFA{Type: MFARADIUS, RADIUS: &RADIUS{Servers: ServerList{"a"}}}}, "sharedSecret"},
		{"mfa without type", Login{MFA: &MFA{}}, "login.mfa.type"},
		{"bad ip group id", Login{IPGroups: []IPGroup{{ID: "ipg-1"}}}, "wsipg-"},
		{"11 rules", Login{IPGroups: []IPGroup{{ID: "wsipg-a1bcd2efg", Rules: make([]IPRule, 11)}}}, "at most 10"},
		{"26 groups", Login{IPGroups: groups(26)}, "at most 25"},
		{"25 groups", Login{IPGroups: groups(25)}, ""},
		{"netbios too long", Login{NetBIOSName: "ABCDEFGHIJKLMNOP"}, "netbiosName"},
	} {
		err := tc.login.Validate()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: err = %v, want it to mention %q", tc.name, err, tc.want)
		}
	}
	l := LDAP{BindPasswordFile: secretFile}
	if p, err := l.Password(); err != nil || p != "from-file" {
		t.Errorf("password from file: %q %v", p, err)
	}
}

func groups(n int) []IPGroup {
	var gs []IPGroup
	for i := 0; i < n; i++ {
		gs = append(gs, IPGroup{ID: fmt.Sprintf("wsipg-%08d", i), Rules: []IPRule{{Source: IPSource{netip.MustParsePrefix("10.0.0.0/8")}}}})
	}
	return gs
}

func TestIPAccessControlGroups(t *testing.T) {
	addr := netip.MustParseAddr
	rule := func(s string) IPRule {
		p, err := ParseIPSource(s)
		if err != nil {
			t.Fatal(err)
		}
		return IPRule{Source: IPSource{p}}
	}
	none := Login{}
	if !none.IPAllowed(addr("198.51.100.7")) {
		t.Error("no group associated must allow every address (the default group)")
	}
	office := Login{IPGroups: []IPGroup{{ID: "wsipg-a1bcd2efg", Rules: []IPRule{rule("203.0.113.0/24")}}}}
	if office.IPAllowed(addr("198.51.100.7")) || !office.IPAllowed(addr("203.0.113.9")) {
		t.Error("203.0.113.0/24 rule: wrong decision")
	}
	if !office.IPAllowed(addr("::ffff:203.0.113.9")) {
		t.Error("an IPv4-mapped address must match its IPv4 rule")
	}
	union := Login{IPGroups: []IPGroup{office.IPGroups[0], {ID: "wsipg-b1bcd2efg", Rules: []IPRule{rule("198.51.100.7")}}}}
	if !union.IPAllowed(addr("198.51.100.7")) || union.IPAllowed(addr("198.51.100.8")) {
		t.Error("groups must combine as the union of their rules; a single IP is a /32")
	}
	empty := Login{IPGroups: []IPGroup{{ID: "wsipg-a1bcd2efg"}}}
	if empty.IPAllowed(addr("203.0.113.9")) || empty.IPAllowed(addr("127.0.0.1")) {
		t.Error("an associated group with no rules must block all access")
	}
}

func TestDeviceAccessDefaultsAreTheGuides(t *testing.T) {
	var d DeviceAccess
	want := map[DeviceType]bool{DeviceWindows: true, DeviceMacOS: true, DeviceLinux: false, DeviceWeb: false,
		DeviceIOS: true, DeviceAndroid: true, DeviceChromeOS: true, DeviceZeroClient: true, DeviceUnknown: false}
	for dt, ok := range want {
		if d.Allowed(dt) != ok {
			t.Errorf("default %s allowed=%v, want %v", dt, d.Allowed(dt), ok)
		}
	}
	d.ZeroClient, d.Linux = Deny, Allow
	if d.Allowed(DeviceZeroClient) || !d.Allowed(DeviceLinux) {
		t.Error("explicit settings must override the defaults")
	}
}

func TestNetBIOSDefault(t *testing.T) {
	d := Directory{Name: "corp.example.com"}
	if d.NetBIOS() != "CORP" {
		t.Errorf("NetBIOS() = %q", d.NetBIOS())
	}
	d.Login.NetBIOSName = "EXAMPLE"
	if d.NetBIOS() != "EXAMPLE" {
		t.Errorf("NetBIOS() = %q", d.NetBIOS())
	}
}
