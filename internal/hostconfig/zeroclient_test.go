package hostconfig

import (
	"strings"
	"testing"
	"time"
)

const minimalHostd = `hostd:
  store: /tmp/s.db
  dataDir: /tmp/d
  libvirt: {socket: /tmp/l.sock}
  network: {managementBridge: a, primaryBridge: b}
  api: {socket: /tmp/h.sock}
`

func TestZeroclientSection(t *testing.T) {
	c, err := Parse([]byte(minimalHostd + "zeroclient:\n  tls: {selfSignedDir: /tmp/tls}\n  lockout: {failures: 3}\n"))
	if err != nil {
		t.Fatal(err)
	}
	z, err := c.Zeroclient.Resolved()
	if err != nil {
		t.Fatal(err)
	}
	if z.Broker.Listen != ":443" || z.Gateway.Listen != ":4172" || len(z.Echo.Listen) != 2 || z.Echo.Listen[1] != ":4195" ||
		z.Tags.TTL.Duration != 60*time.Second || z.Lockout.Failures != 3 || z.Lockout.Window.Duration != 5*time.Minute ||
		z.Lockout.Duration.Duration != 15*time.Minute || z.Sessions.IdleAfterLogin.Duration != 20*time.Minute ||
		z.Lockout.UserFailures != 20 || z.Broker.MaxConnections != 1024 || z.Broker.MaxConnectionsPerAddress != 64 ||
		z.PasswordChecks.Concurrency != 4 || z.PasswordChecks.Wait.Duration != 3*time.Second || z.Events.RotateMiB != 16 || z.Events.Keep != 4 {
		t.Errorf("defaults: %+v", z)
	}
	// A user to drop to, with the event logs in a directory of their own.
	c, err = Parse([]byte(minimalHostd + "zeroclient:\n  tls: {selfSignedDir: /z/tls}\n  credentialStore: /z/credentials.db\n  user: zeroclient\n" +
		"  events: {log: /z/events/access.jsonl, auditLog: /z/events/audit.jsonl}\n"))
	if err == nil {
		_, err = c.Zeroclient.Resolved()
	}
	if err != nil {
		t.Errorf("event logs in a directory of their own: %v", err)
	}
	// Strict: an unknown key in the section is an error naming it.
	if _, err := Parse([]byte(minimalHostd + "zeroclient:\n  brokr: {listen: ':443'}\n")); err == nil || !strings.Contains(err.Error(), "brokr") {
		t.Errorf("unknown key: %v", err)
	}
	for _, tc := range []struct{ doc, want string }{
		{"tls: {selfSignedDir: /t}\nbroker: {listen: '443'}", "broker.listen"},
		{"tls: {cert: /c}", "cert and key go together"},
		{"broker: {listen: ':443'}", "selfSignedDir"},
		{"tls: {selfSignedDir: /t}\ntags: {ttl: 61s}", "at most 1m0s"},
		{"tls: {selfSignedDir: /t}\ngateway: {advertiseAddress: somewhere}", "advertiseAddress"},
		{"tls: {selfSignedDir: /t}\nevents: {webhook: 'ftp://x'}", "webhook"},
		{"tls: {selfSignedDir: /t}\nsessions: {absolute: 1m}", "absolute"},
		{"tls: {selfSignedDir: /t}\nlockout: {failures: 5, userFailures: 4}", "userFailures"},
		{"tls: {selfSignedDir: /t}\nbroker: {maxConnections: 8, maxConnectionsPerAddress: 9}", "maxConnectionsPerAddress"},
		{"tls: {selfSignedDir: /t}\npasswordChecks: {concurrency: 65}", "passwordChecks.concurrency"},
		{"tls: {selfSignedDir: /t}\nevents: {keep: -1}", "keep"},
		// With a user to drop to, the logs' directory is handed to it: not the secrets' one.
		{"tls: {selfSignedDir: /z/tls}\ncredentialStore: /z/credentials.db\nuser: zeroclient\nevents: {log: /z/access.jsonl}", "zeroclient.events.log /z/access.jsonl: with zeroclient.user set"},
		{"tls: {selfSignedDir: /z/tls}\ncredentialStore: /y/credentials.db\nuser: zeroclient\nevents: {auditLog: /z/audit.jsonl}", "not one holding zeroclient.tls.selfSignedDir"},
		{"tls: {selfSignedDir: /z/tls}\nuser: zeroclient\nevents: {auditLog: /audit.jsonl}", "zeroclient.events.auditLog"},
	} {
		doc := minimalHostd + "zeroclient:\n  " + strings.ReplaceAll(tc.doc, "\n", "\n  ") + "\n"
		c, err := Parse([]byte(doc))
		if err == nil {
			_, err = c.Zeroclient.Resolved()
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want it to mention %q", tc.doc, err, tc.want)
		}
	}
}
