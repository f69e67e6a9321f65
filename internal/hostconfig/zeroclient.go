package hostconfig

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"time"
)

// Zeroclient configures the connection manager (zeroclient/): the broker on 443, the
// streaming gateway on 4172, the health echo on 4172/4195, and what it keeps and reports.
// Its fields are owned by the zeroclient component. Directories, their users and their
// login settings (type, LDAP, MFA, IP groups, device types, password policy) are hostd's
// catalog, read through hostd's API; WorkSpace displays are under hostd.dataDir.
//
//	zeroclient:
//	  broker: {listen: ":443", hostname: desk.example.com, maxConnections: 1024, maxConnectionsPerAddress: 64}
//	  gateway: {listen: ":4172", advertiseAddress: 192.0.2.10}
//	  echo: {listen: [":4172", ":4195"]}
//	  tls: {selfSignedDir: /perm/zeroclient/tls, names: [desk.example.com]}
//	  sessions: {idleBeforeLogin: 2m, idleAfterLogin: 20m, absolute: 12h, max: 10000}
//	  lockout: {failures: 5, userFailures: 20, window: 5m, duration: 15m}
//	  passwordChecks: {concurrency: 4, wait: 3s}
//	  events: {log: /perm/zeroclient/events/access.jsonl, auditLog: /perm/zeroclient/events/audit.jsonl, webhook: "", rotateMiB: 16, keep: 4}
//	  metrics: {listen: "127.0.0.1:9172"}
//	  credentialStore: /perm/zeroclient/credentials.db
//	  hostdSocket: /run/deskhost/hostd.sock
//	  adminSocket: /run/deskhost/zeroclient/admin.sock
type Zeroclient struct {
	Broker   ZeroclientBroker   `yaml:"broker"`
	Gateway  ZeroclientGateway  `yaml:"gateway"`
	Echo     ZeroclientEcho     `yaml:"echo"`
	TLS      ZeroclientTLS      `yaml:"tls"`
	Sessions ZeroclientSessions `yaml:"sessions"`
	Lockout  ZeroclientLockout  `yaml:"lockout"`
	Tags     ZeroclientTags     `yaml:"tags"`
	Events   ZeroclientEvents   `yaml:"events"`
	Metrics  ZeroclientMetrics  `yaml:"metrics"`
	// PasswordChecks bounds the argon2id computations (19 MiB each) running at once.
	PasswordChecks ZeroclientPasswordChecks `yaml:"passwordChecks"`
	// Activation is how long an activation code (the invitation's link) stays valid.
	ActivationTTL Duration `yaml:"activationTTL"`
	// CredentialStore is zeroclient's bbolt file: local users' password hashes and TOTP
	// secrets, activation codes, lockout state.
	CredentialStore string `yaml:"credentialStore"`
	// HostdSocket is hostd's root-only API socket (WorkSpaces are looked up and started
	// through it).
	HostdSocket string `yaml:"hostdSocket"`
	// AdminSocket is zeroclient's own socket for operator commands (invite, unlock), in a
	// directory of its own (made or narrowed to 0700); empty disables it.
	AdminSocket string `yaml:"adminSocket"`
	// AuthFailureFloor is the least time a failed authenticate takes, so that an unknown
	// user and a wrong password cannot be told apart by timing.
	AuthFailureFloor Duration `yaml:"authFailureFloor"`
	// StartWait is how long allocate-resource waits for a STOPPED AutoStop WorkSpace it
	// starts to become AVAILABLE (the guide: resumes "typically in under 90 seconds").
	StartWait Duration `yaml:"startWait"`
	// User is who zeroclient runs as once it has bound its ports and opened its files; it
	// faces clients, so it should not stay root. Its primary group must be hostd's
	// api.brokerGroup (to reach hostd's socket) and guests.displayGroup (to reach the
	// WorkSpaces' displays). Empty: it stays root (development machines without the user).
	User string `yaml:"user"`
}

// ZeroclientBroker is the HTTPS broker.
type ZeroclientBroker struct {
	// Listen is host:port; the guide's port is 443.
	Listen string `yaml:"listen"`
	// Hostname is the name the broker tells clients (hello-resp, allocate-resource's target
	// hostname); default: the machine's host name.
	Hostname string `yaml:"hostname"`
	// MaxConnections bounds the broker's TLS connections; at the bound an idle kept-alive
	// one is closed for a new one, else the new one is. MaxConnectionsPerAddress bounds one
	// client address's (a NAT's users share one).
	MaxConnections           int `yaml:"maxConnections"`
	MaxConnectionsPerAddress int `yaml:"maxConnectionsPerAddress"`
}

// ZeroclientGateway is the streaming gateway.
type ZeroclientGateway struct {
	// Listen is host:port; the guide's port is 4172.
	Listen string `yaml:"listen"`
	// AdvertiseAddress is the IP clients are told to stream from; default: the address the
	// client reached the broker on.
	AdvertiseAddress string `yaml:"advertiseAddress"`
	// HandshakeTimeout bounds a client's RFB + TLS handshake and authentication.
	HandshakeTimeout Duration `yaml:"handshakeTimeout"`
}

// ZeroclientEcho is the health-check echo (UDP on every address; TCP on every address but
// the gateway's, where the gateway answers echo probes itself).
type ZeroclientEcho struct {
	Listen []string `yaml:"listen"`
}

// ZeroclientTLS is the certificate the broker and the gateway present.
type ZeroclientTLS struct {
	// Cert and Key are PEM files; if both are empty a CA and a certificate are made and
	// kept in SelfSignedDir (ca.pem is what clients are given to trust).
	Cert          string   `yaml:"cert"`
	Key           string   `yaml:"key"`
	SelfSignedDir string   `yaml:"selfSignedDir"`
	Names         []string `yaml:"names"` // extra DNS names or IPs for the made certificate
}

// ZeroclientSessions bounds broker sessions.
type ZeroclientSessions struct {
	IdleBeforeLogin Duration `yaml:"idleBeforeLogin"`
	IdleAfterLogin  Duration `yaml:"idleAfterLogin"`
	Absolute        Duration `yaml:"absolute"`
	Max             int      `yaml:"max"`
}

// ZeroclientLockout is the brute-force lockout: Failures failed passwords for one user from
// one address (an IPv6 /64), or Failures failed MFA codes for one user from anywhere,
// within Window lock out for Duration; so do UserFailures failures of one user from
// anywhere (the ceiling for a guesser with many addresses).
type ZeroclientLockout struct {
	Failures     int      `yaml:"failures"`
	UserFailures int      `yaml:"userFailures"`
	Window       Duration `yaml:"window"`
	Duration     Duration `yaml:"duration"`
}

// ZeroclientPasswordChecks bounds argon2id: Concurrency computations at once; a check
// that cannot start within Wait is answered "busy".
type ZeroclientPasswordChecks struct {
	Concurrency int      `yaml:"concurrency"`
	Wait        Duration `yaml:"wait"`
}

// ZeroclientTags configures connect tags.
type ZeroclientTags struct {
	// TTL is how long a connect tag is valid; at most 60 s.
	TTL Duration `yaml:"ttl"`
}

// ZeroclientEvents is where login events and the audit trail go.
type ZeroclientEvents struct {
	// Log is the JSON-lines file of "WorkSpaces Access" events (successful logins).
	Log string `yaml:"log"`
	// AuditLog is the JSON-lines file of failed logins and refusals. With zeroclient.user
	// set, the logs' directory is handed to that user (to rotate them): it must be theirs
	// alone (e.g. /perm/zeroclient/events/), not the credential store's or the TLS key's.
	AuditLog string `yaml:"auditLog"`
	// Webhook, if set, receives each access event as an HTTP POST of its JSON.
	Webhook        string   `yaml:"webhook"`
	WebhookTimeout Duration `yaml:"webhookTimeout"`
	// Source, Account and Region fill the event envelope (defaults aws.workspaces,
	// 000000000000, local) so tools written for the guide's events read them unchanged.
	Source  string `yaml:"source"`
	Account string `yaml:"account"`
	Region  string `yaml:"region"`
	// RotateMiB is the size at which each log is rotated (to .1, .2, …); Keep is how many
	// rotated files are kept.
	RotateMiB int `yaml:"rotateMiB"`
	Keep      int `yaml:"keep"`
}

// ZeroclientMetrics is the Prometheus listener; empty disables it.
type ZeroclientMetrics struct {
	Listen string `yaml:"listen"`
}

// Zeroclient defaults: the guide's numbers where it has one.
const (
	DefaultBrokerListen     = ":443"
	DefaultGatewayListen    = ":4172"
	DefaultTagTTL           = 60 * time.Second
	DefaultIdleBeforeLogin  = 2 * time.Minute
	DefaultIdleAfterLogin   = 20 * time.Minute // the guide's session-resume default
	DefaultSessionAbsolute  = 12 * time.Hour
	DefaultMaxSessions      = 10000
	DefaultLockoutFailures  = 5
	DefaultUserFailures     = 20
	DefaultMaxConnections   = 1024
	DefaultMaxConnsPerAddr  = 64
	DefaultHashConcurrency  = 4
	DefaultHashWait         = 3 * time.Second
	DefaultRotateMiB        = 16
	DefaultRotateKeep       = 4
	DefaultLockoutWindow    = 5 * time.Minute
	DefaultLockoutDuration  = 15 * time.Minute
	DefaultAuthFailureFloor = 400 * time.Millisecond
	DefaultStartWait        = 90 * time.Second
	DefaultActivationTTL    = 7 * 24 * time.Hour
	DefaultHandshakeTimeout = 15 * time.Second
	DefaultWebhookTimeout   = 5 * time.Second
	DefaultCredentialStore  = "/perm/zeroclient/credentials.db"
	DefaultHostdSocket      = "/run/deskhost/hostd.sock"
	DefaultEventSource      = "aws.workspaces"
	DefaultEventAccount     = "000000000000"
)

// DefaultEchoListen are the guide's health-check ports: PCoIP 4172 and WSP 4195.
var DefaultEchoListen = []string{":4172", ":4195"}

// Resolved returns the section with defaults filled in, validated. A missing section is
// valid: every field has a default.
func (z Zeroclient) Resolved() (Zeroclient, error) {
	set := func(d *Duration, v time.Duration) {
		if d.Duration == 0 {
			d.Duration = v
		}
	}
	str := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	str(&z.Broker.Listen, DefaultBrokerListen)
	str(&z.Gateway.Listen, DefaultGatewayListen)
	if z.Echo.Listen == nil {
		z.Echo.Listen = append([]string(nil), DefaultEchoListen...)
	}
	set(&z.Gateway.HandshakeTimeout, DefaultHandshakeTimeout)
	set(&z.Tags.TTL, DefaultTagTTL)
	set(&z.Sessions.IdleBeforeLogin, DefaultIdleBeforeLogin)
	set(&z.Sessions.IdleAfterLogin, DefaultIdleAfterLogin)
	set(&z.Sessions.Absolute, DefaultSessionAbsolute)
	if z.Sessions.Max == 0 {
		z.Sessions.Max = DefaultMaxSessions
	}
	num := func(n *int, v int) {
		if *n == 0 {
			*n = v
		}
	}
	num(&z.Lockout.Failures, DefaultLockoutFailures)
	num(&z.Lockout.UserFailures, DefaultUserFailures)
	num(&z.Broker.MaxConnections, DefaultMaxConnections)
	num(&z.Broker.MaxConnectionsPerAddress, DefaultMaxConnsPerAddr)
	num(&z.PasswordChecks.Concurrency, DefaultHashConcurrency)
	set(&z.PasswordChecks.Wait, DefaultHashWait)
	num(&z.Events.RotateMiB, DefaultRotateMiB)
	num(&z.Events.Keep, DefaultRotateKeep)
	set(&z.Lockout.Window, DefaultLockoutWindow)
	set(&z.Lockout.Duration, DefaultLockoutDuration)
	set(&z.AuthFailureFloor, DefaultAuthFailureFloor)
	set(&z.StartWait, DefaultStartWait)
	set(&z.ActivationTTL, DefaultActivationTTL)
	set(&z.Events.WebhookTimeout, DefaultWebhookTimeout)
	str(&z.Events.Source, DefaultEventSource)
	str(&z.Events.Account, DefaultEventAccount)
	str(&z.Events.Region, DefaultRegion)
	str(&z.CredentialStore, DefaultCredentialStore)
	str(&z.HostdSocket, DefaultHostdSocket)
	return z, z.validate()
}

func (z *Zeroclient) validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	addr := func(name, v string) {
		if _, port, err := net.SplitHostPort(v); err != nil || port == "" {
			bad("zeroclient.%s %q: want host:port (host may be empty for all addresses)", name, v)
		}
	}
	addr("broker.listen", z.Broker.Listen)
	addr("gateway.listen", z.Gateway.Listen)
	for i, l := range z.Echo.Listen {
		addr(fmt.Sprintf("echo.listen[%d]", i), l)
	}
	if z.Metrics.Listen != "" {
		addr("metrics.listen", z.Metrics.Listen)
	}
	if a := z.Gateway.AdvertiseAddress; a != "" && net.ParseIP(a) == nil {
		bad("zeroclient.gateway.advertiseAddress %q: want an IP address", a)
	}
	if (z.TLS.Cert == "") != (z.TLS.Key == "") {
		bad("zeroclient.tls: cert and key go together")
	}
	if z.TLS.Cert == "" && z.TLS.SelfSignedDir == "" {
		bad("zeroclient.tls: set cert and key, or selfSignedDir for a made certificate")
	}
	if z.Tags.TTL.Duration > DefaultTagTTL {
		bad("zeroclient.tags.ttl %s: connect tags live at most %s", z.Tags.TTL, DefaultTagTTL)
	}
	if z.Sessions.Max < 1 {
		bad("zeroclient.sessions.max: must be ≥ 1")
	}
	if z.Sessions.Absolute.Duration < z.Sessions.IdleAfterLogin.Duration {
		bad("zeroclient.sessions: absolute (%s) must not be shorter than idleAfterLogin (%s)", z.Sessions.Absolute, z.Sessions.IdleAfterLogin)
	}
	if z.Lockout.Failures < 1 {
		bad("zeroclient.lockout.failures: must be ≥ 1")
	}
	if z.Lockout.UserFailures < z.Lockout.Failures {
		bad("zeroclient.lockout.userFailures %d: must be ≥ failures (%d)", z.Lockout.UserFailures, z.Lockout.Failures)
	}
	if z.Broker.MaxConnections < 1 || z.Broker.MaxConnectionsPerAddress < 1 || z.Broker.MaxConnectionsPerAddress > z.Broker.MaxConnections {
		bad("zeroclient.broker: maxConnections (%d) and maxConnectionsPerAddress (%d) must be ≥ 1, the second at most the first",
			z.Broker.MaxConnections, z.Broker.MaxConnectionsPerAddress)
	}
	if c := z.PasswordChecks.Concurrency; c < 1 || c > 64 {
		bad("zeroclient.passwordChecks.concurrency %d: want 1–64 (each check holds 19 MiB)", c)
	}
	if z.Events.RotateMiB < 1 || z.Events.Keep < 1 {
		bad("zeroclient.events: rotateMiB (%d) and keep (%d) must be ≥ 1", z.Events.RotateMiB, z.Events.Keep)
	}
	if z.AuthFailureFloor.Duration > 5*time.Second {
		bad("zeroclient.authFailureFloor %s: at most 5s", z.AuthFailureFloor)
	}
	if z.User != "" {
		// zeroclient hands its event logs' directories to zeroclient.user, so that it can
		// rotate them after dropping root: none may hold what must stay root's.
		type place struct{ name, path string }
		var rootOwn []place // directories that stay root's
		for _, p := range []place{{"credentialStore", z.CredentialStore}, {"adminSocket", z.AdminSocket},
			{"hostdSocket", z.HostdSocket}, {"tls.cert", z.TLS.Cert}, {"tls.key", z.TLS.Key}} {
			if p.path != "" {
				rootOwn = append(rootOwn, place{p.name, filepath.Dir(filepath.Clean(p.path))})
			}
		}
		if z.TLS.SelfSignedDir != "" {
			rootOwn = append(rootOwn, place{"tls.selfSignedDir", filepath.Clean(z.TLS.SelfSignedDir)})
		}
		for _, l := range []place{{"log", z.Events.Log}, {"auditLog", z.Events.AuditLog}} {
			if l.path == "" {
				continue
			}
			dir := filepath.Dir(filepath.Clean(l.path))
			for _, o := range rootOwn {
				if o.path == dir || strings.HasPrefix(o.path, dir+"/") || dir == "/" {
					bad("zeroclient.events.%s %s: with zeroclient.user set, the event logs need a directory of their own (it is handed to that user, to rotate them), not one holding zeroclient.%s", l.name, l.path, o.name)
					break
				}
			}
		}
	}
	if w := z.Events.Webhook; w != "" {
		u, err := url.Parse(w)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			bad("zeroclient.events.webhook %q: want an http(s) URL", w)
		}
	}
	return errors.Join(errs...)
}

func (d Duration) String() string { return d.Duration.String() }
