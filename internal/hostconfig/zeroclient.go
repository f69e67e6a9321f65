package hostconfig

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"time"
)

// Zeroclient configures the connection manager (zeroclient/): the broker on 443, the
// streaming gateway on 4172, the health echo on 4172/4195, and what it keeps and reports.
// Its fields are owned by the zeroclient component. Directories, their users and their
// login settings (type, LDAP, MFA, IP groups, device types, password policy) are in
// hostd.directories; WorkSpace displays are under hostd.dataDir.
//
//	zeroclient:
//	  broker: {listen: ":443", hostname: desk.example.com}
//	  gateway: {listen: ":4172", advertiseAddress: 192.0.2.10}
//	  echo: {listen: [":4172", ":4195"]}
//	  tls: {selfSignedDir: /perm/zeroclient/tls, names: [desk.example.com]}
//	  sessions: {idleBeforeLogin: 2m, idleAfterLogin: 20m, absolute: 12h, max: 10000}
//	  lockout: {failures: 5, window: 5m, duration: 15m}
//	  events: {log: /perm/zeroclient/access.jsonl, auditLog: /perm/zeroclient/audit.jsonl, webhook: ""}
//	  metrics: {listen: "127.0.0.1:9172"}
//	  credentialStore: /perm/zeroclient/credentials.db
//	  hostdSocket: /run/deskhost/hostd.sock
//	  adminSocket: /run/deskhost/zeroclient.sock
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
	// Activation is how long an activation code (the invitation's link) stays valid.
	ActivationTTL Duration `yaml:"activationTTL"`
	// CredentialStore is zeroclient's bbolt file: local users' password hashes and TOTP
	// secrets, activation codes, lockout state.
	CredentialStore string `yaml:"credentialStore"`
	// HostdSocket is hostd's root-only API socket (WorkSpaces are looked up and started
	// through it).
	HostdSocket string `yaml:"hostdSocket"`
	// AdminSocket is zeroclient's own root-only socket for operator commands (invite,
	// unlock); empty disables it.
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

// ZeroclientLockout is the brute-force lockout: Failures failed logins for one user from
// one address within Window lock that pair out for Duration.
type ZeroclientLockout struct {
	Failures int      `yaml:"failures"`
	Window   Duration `yaml:"window"`
	Duration Duration `yaml:"duration"`
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
	// AuditLog is the JSON-lines file of failed logins and refusals.
	AuditLog string `yaml:"auditLog"`
	// Webhook, if set, receives each access event as an HTTP POST of its JSON.
	Webhook        string   `yaml:"webhook"`
	WebhookTimeout Duration `yaml:"webhookTimeout"`
	// Source, Account and Region fill the event envelope (defaults aws.workspaces,
	// 000000000000, local) so tools written for the guide's events read them unchanged.
	Source  string `yaml:"source"`
	Account string `yaml:"account"`
	Region  string `yaml:"region"`
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
	if z.Lockout.Failures == 0 {
		z.Lockout.Failures = DefaultLockoutFailures
	}
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
	if z.AuthFailureFloor.Duration > 5*time.Second {
		bad("zeroclient.authFailureFloor %s: at most 5s", z.AuthFailureFloor)
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
