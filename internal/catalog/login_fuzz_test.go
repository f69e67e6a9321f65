package catalog

import (
	"bytes"
	"net/url"
	"testing"

	"gopkg.in/yaml.v3"
)

// FuzzLogin: a directory's login settings, decoded strictly as the host config does and
// validated, never panic; what validates never sends LDAP passwords in cleartext unless
// allowCleartext says so, and has MFA settings zeroclient can use.
func FuzzLogin(f *testing.F) {
	for _, s := range []string{
		"id: d-0123456789\nname: corp.example.com\nlogin:\n  type: ldap\n  ldap: {url: \"ldap://dc1:389\", startTLS: true, bindDN: cn=svc, bindPassword: x, userBase: dc=corp}\n",
		"id: d-0123456789\nname: corp.example.com\nlogin:\n  type: ldap\n  ldap: {url: \"ldap://dc1\", allowCleartext: true, bindDN: cn=svc, bindPassword: x, userBase: dc=corp}\n",
		"id: d-0123456789\nname: corp.example.com\nlogin:\n  type: ldap\n  ldap: {url: \"ldaps://dc1:636\", bindDN: cn=svc, bindPassword: x, userBase: dc=corp}\n  mfa: {type: radius, radius: {servers: \"10.0.0.5, 10.0.0.6\", port: 1812, sharedSecret: s, timeoutSeconds: 5, retries: 4}}\n",
		"id: d-0123456789\nname: corp.example.com\nlogin:\n  mfa: {type: totp}\n  ipGroups: [{id: wsipg-a1bcd2efg, rules: [{source: 203.0.113.0/24}]}]\n  deviceAccess: {zeroclient: ALLOW, linux: DENY}\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		dec := yaml.NewDecoder(bytes.NewReader(doc))
		dec.KnownFields(true)
		var d Directory
		if err := dec.Decode(&d); err != nil {
			return
		}
		if err := d.Login.Validate(); err != nil {
			return
		}
		if l := d.Login.LDAP; l != nil && d.Login.Kind() == TypeLDAP {
			u, err := url.Parse(l.URL)
			if err != nil {
				t.Fatalf("validated an LDAP URL that does not parse: %q", l.URL)
			}
			if u.Scheme == "ldap" && !l.StartTLS && !l.AllowCleartext {
				t.Fatalf("validated cleartext LDAP without allowCleartext: %+v", l)
			}
		}
		if m := d.Login.MFA; m != nil && m.Type == MFARADIUS && (m.RADIUS == nil || len(m.RADIUS.Servers) == 0) {
			t.Fatalf("validated RADIUS MFA without servers: %+v", m)
		}
	})
}
