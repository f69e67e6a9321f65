package catalog

// Per-directory login settings: what the connection manager (zeroclient) enforces when a
// directory's users sign in. hostd only carries them (they live in the directory's section of
// the catalog in hostd's store); zeroclient reads and enforces them.
//
// Decoding stays strict: every type here is a plain struct (so yaml.v3's KnownFields reaches
// it) or a leaf with its own UnmarshalYAML that checks one value's range or spelling at
// decode time, with the line it came from. Rules that relate several fields are in
// Login.Validate.

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"deskhost/internal/secretfile"
)

// Login configures how a directory's users sign in.
type Login struct {
	// Type is where passwords are checked: "local" (default: users are the directory's
	// users list, passwords kept by zeroclient, set at activation) or "ldap" (an existing
	// LDAP or Active Directory, the guide's AD Connector).
	Type DirectoryType `yaml:"type" json:"type,omitempty"`
	// NetBIOSName is the short domain name users may type as NETBIOS\user; default: the
	// first label of the directory's DNS name, upper-cased.
	NetBIOSName string `yaml:"netbiosName" json:"netbiosName,omitempty"`
	// LDAP is required for type ldap.
	LDAP *LDAP `yaml:"ldap" json:"ldap,omitempty"`
	// MFA, when present, adds a second step to every login.
	MFA *MFA `yaml:"mfa" json:"mfa,omitempty"`
	// PasswordPolicy is the guide's policy for passwords set at activation (local only).
	PasswordPolicy PasswordPolicy `yaml:"passwordPolicy" json:"passwordPolicy,omitempty"`
	// IPGroups are the IP access control groups associated with the directory. None: any
	// address may log in (the guide's default group); otherwise the union of their rules,
	// and a group with no rules blocks everything.
	IPGroups []IPGroup `yaml:"ipGroups" json:"ipGroups,omitempty"`
	// DeviceAccess allows or denies each client device type (guide §16 defaults).
	DeviceAccess DeviceAccess `yaml:"deviceAccess" json:"deviceAccess,omitempty"`
	// Deregistered marks a directory that is no longer registered: its registration code
	// stops working and its users cannot log in.
	Deregistered bool `yaml:"deregistered" json:"deregistered,omitempty"`
	// Session is the directory's session policy (catalog §26, §38). AWS's API has no field
	// for it (the guide sets it by GPO): it is part of the directory's definition here.
	Session SessionPolicy `yaml:"session" json:"session,omitzero"`
}

// SessionPolicy is how long a user whose session dropped may come back without logging in.
type SessionPolicy struct {
	// ResumeTimeoutMinutes: "The default session resume timeout is 20 minutes" (0: default).
	ResumeTimeoutMinutes int `yaml:"resumeTimeoutMinutes" json:"resumeTimeoutMinutes,omitempty"`
}

// DefaultResumeTimeout is the guide's default session resume timeout; MaxResumeTimeout
// bounds the setting (a day: past that, a dropped session is an abandoned one).
const (
	DefaultResumeTimeout = 20 * time.Minute
	MaxResumeTimeout     = 24 * time.Hour
)

// ResumeTimeout is the policy's timeout, the guide's default when unset.
func (p SessionPolicy) ResumeTimeout() time.Duration {
	if p.ResumeTimeoutMinutes <= 0 {
		return DefaultResumeTimeout
	}
	return time.Duration(p.ResumeTimeoutMinutes) * time.Minute
}

// DirectoryType is where a directory's passwords are checked.
type DirectoryType string

const (
	TypeLocal DirectoryType = "local"
	TypeLDAP  DirectoryType = "ldap"
)

func (t *DirectoryType) UnmarshalYAML(n *yaml.Node) error {
	return decodeEnum(n, (*string)(t), string(TypeLocal), string(TypeLDAP))
}

// LDAP is a directory reached over LDAP: the service account binds, finds the user, then
// the user's own bind checks the password.
type LDAP struct {
	// URL is ldap://host:port or ldaps://host:port.
	URL string `yaml:"url" json:"url,omitempty"`
	// StartTLS upgrades an ldap:// connection before any bind.
	StartTLS bool `yaml:"startTLS" json:"startTLS,omitempty"`
	// AllowCleartext lets an ldap:// URL be used without StartTLS: every user's password
	// and the service account's then cross the network readable. Off unless set.
	AllowCleartext bool `yaml:"allowCleartext" json:"allowCleartext,omitempty"`
	// CAFile is a PEM bundle to verify the server with (ldaps or StartTLS).
	CAFile string `yaml:"caFile" json:"caFile,omitempty"`
	// BindDN and BindPassword (or BindPasswordFile) are the service account's; the guide:
	// "permissions to read users and groups".
	BindDN           string `yaml:"bindDN" json:"bindDN,omitempty"`
	BindPassword     string `yaml:"bindPassword" json:"bindPassword,omitempty"`
	BindPasswordFile string `yaml:"bindPasswordFile" json:"bindPasswordFile,omitempty"`
	// UserBase is the subtree users are searched in.
	UserBase string `yaml:"userBase" json:"userBase,omitempty"`
	// UserAttribute holds the login name: sAMAccountName on Active Directory (default),
	// uid on OpenLDAP.
	UserAttribute string `yaml:"userAttribute" json:"userAttribute,omitempty"`
	// UserFilter is ANDed to the name match; default (objectClass=person).
	UserFilter string `yaml:"userFilter" json:"userFilter,omitempty"`
	// TimeoutSeconds bounds each LDAP operation; default 5.
	TimeoutSeconds int `yaml:"timeoutSeconds" json:"timeoutSeconds,omitempty"`
}

// Defaults for LDAP.
const (
	DefaultLDAPUserAttribute = "sAMAccountName"
	DefaultLDAPUserFilter    = "(objectClass=person)"
	DefaultLDAPTimeout       = 5
)

// Password returns the service account's password, from the file if one is named.
func (l *LDAP) Password() (string, error) {
	return secret(l.BindPassword, l.BindPasswordFile, "bindPassword")
}

// MFA is the second factor.
type MFA struct {
	// Type is radius (any directory) or totp (local directories: secrets enrolled at
	// activation and kept by zeroclient).
	Type MFAType `yaml:"type" json:"type,omitempty"`
	// Status is the guide's RADIUS status. Only Enabled lets anyone in: "While
	// multi-factor authentication is being set up, users cannot log in" (Creating, Failed).
	// Default Enabled.
	Status MFAStatus `yaml:"status" json:"status,omitempty"`
	// RADIUS is required for type radius.
	RADIUS *RADIUS `yaml:"radius" json:"radius,omitempty"`
}

// MFAType is the kind of second factor.
type MFAType string

const (
	MFARADIUS MFAType = "radius"
	MFATOTP   MFAType = "totp"
)

func (t *MFAType) UnmarshalYAML(n *yaml.Node) error {
	return decodeEnum(n, (*string)(t), string(MFARADIUS), string(MFATOTP))
}

// MFAStatus is the guide's RADIUS status.
type MFAStatus string

const (
	MFAEnabled  MFAStatus = "Enabled"
	MFACreating MFAStatus = "Creating"
	MFAFailed   MFAStatus = "Failed"
)

func (s *MFAStatus) UnmarshalYAML(n *yaml.Node) error {
	return decodeEnum(n, (*string)(s), string(MFAEnabled), string(MFACreating), string(MFAFailed))
}

// RADIUS is the guide's MFA settings (catalog §10.5).
type RADIUS struct {
	// Servers are the RADIUS servers' addresses, tried in order; YAML list or the guide's
	// comma-separated string.
	Servers ServerList `yaml:"servers" json:"servers,omitempty"`
	// Port defaults to 1812.
	Port Port `yaml:"port" json:"port,omitempty"`
	// SharedSecret (or SharedSecretFile) is the RADIUS shared secret.
	SharedSecret     string `yaml:"sharedSecret" json:"sharedSecret,omitempty"`
	SharedSecretFile string `yaml:"sharedSecretFile" json:"sharedSecretFile,omitempty"`
	// Protocol is the guide's choice of PAP, CHAP, MS-CHAPv1 or MS-CHAPv2; this host
	// speaks PAP (default).
	Protocol RADIUSProtocol `yaml:"protocol" json:"protocol,omitempty"`
	// TimeoutSeconds is the guide's server timeout, 1–20; default 5.
	TimeoutSeconds *RADIUSTimeout `yaml:"timeoutSeconds" json:"timeoutSeconds,omitempty"`
	// Retries is the guide's max retries, 0–10; default 4.
	Retries *RADIUSRetries `yaml:"retries" json:"retries,omitempty"`
}

// Guide ranges and defaults for RADIUS.
const (
	DefaultRADIUSPort    = 1812
	MinRADIUSTimeout     = 1
	MaxRADIUSTimeout     = 20
	DefaultRADIUSTimeout = 5
	MinRADIUSRetries     = 0
	MaxRADIUSRetries     = 10
	DefaultRADIUSRetries = 4
)

// Secret returns the shared secret, from the file if one is named.
func (r *RADIUS) Secret() (string, error) {
	return secret(r.SharedSecret, r.SharedSecretFile, "sharedSecret")
}

// Timeout returns the server timeout in seconds, defaulted.
func (r *RADIUS) Timeout() int {
	if r.TimeoutSeconds == nil {
		return DefaultRADIUSTimeout
	}
	return int(*r.TimeoutSeconds)
}

// RetryCount returns the number of retries, defaulted.
func (r *RADIUS) RetryCount() int {
	if r.Retries == nil {
		return DefaultRADIUSRetries
	}
	return int(*r.Retries)
}

// PortNumber returns the port, defaulted.
func (r *RADIUS) PortNumber() int {
	if r.Port == 0 {
		return DefaultRADIUSPort
	}
	return int(r.Port)
}

// RADIUSProtocol is the RADIUS authentication protocol.
type RADIUSProtocol string

const (
	PAP      RADIUSProtocol = "PAP"
	CHAP     RADIUSProtocol = "CHAP"
	MSCHAPv1 RADIUSProtocol = "MS-CHAPv1"
	MSCHAPv2 RADIUSProtocol = "MS-CHAPv2"
)

func (p *RADIUSProtocol) UnmarshalYAML(n *yaml.Node) error {
	if err := decodeEnum(n, (*string)(p), string(PAP), string(CHAP), string(MSCHAPv1), string(MSCHAPv2)); err != nil {
		return err
	}
	if *p != PAP {
		// The guide offers four; passcodes from token and OTP servers travel as PAP, and it is
		// the one implemented. Refusing here beats a login path that fails at 9 a.m.
		return fmt.Errorf("line %d: RADIUS protocol %s is not supported by this host yet; use PAP", n.Line, *p)
	}
	return nil
}

// RADIUSTimeout is the guide's "Server timeout": "This value must be between 1 and 20".
type RADIUSTimeout int

func (t *RADIUSTimeout) UnmarshalYAML(n *yaml.Node) error {
	return decodeRange(n, (*int)(t), "RADIUS server timeout (seconds)", MinRADIUSTimeout, MaxRADIUSTimeout)
}

// RADIUSRetries is the guide's "Max retries": "This value must be between 0 and 10".
type RADIUSRetries int

func (r *RADIUSRetries) UnmarshalYAML(n *yaml.Node) error {
	return decodeRange(n, (*int)(r), "RADIUS max retries", MinRADIUSRetries, MaxRADIUSRetries)
}

// Port is a TCP/UDP port number, 1–65535.
type Port int

func (p *Port) UnmarshalYAML(n *yaml.Node) error {
	return decodeRange(n, (*int)(p), "port", 1, 65535)
}

// ServerList is a list of server addresses, written as a YAML list or as the guide's
// "IP addresses … separated by commas".
type ServerList []string

func (s *ServerList) UnmarshalYAML(n *yaml.Node) error {
	var list []string
	switch n.Kind {
	case yaml.ScalarNode:
		var one string
		if err := n.Decode(&one); err != nil {
			return err
		}
		for _, f := range strings.Split(one, ",") {
			list = append(list, strings.TrimSpace(f))
		}
	case yaml.SequenceNode:
		if err := n.Decode(&list); err != nil {
			return err
		}
	default:
		return fmt.Errorf("line %d: servers: want a list or a comma-separated string", n.Line)
	}
	for _, v := range list {
		if v == "" || strings.ContainsAny(v, " /:") {
			return fmt.Errorf("line %d: RADIUS server %q: want an IP address or host name (the port is set apart)", n.Line, v)
		}
	}
	*s = list
	return nil
}

// PasswordPolicy is the guide's password policy (catalog §10.4, §30.1): 8–64 characters
// and characters from at least RequiredClasses of lowercase, uppercase, digits and the
// guide's special set.
type PasswordPolicy struct {
	// RequiredClasses is 3 (default: "three of the following categories") or 4 (the
	// Simple AD tutorial's "four").
	RequiredClasses PasswordClasses `yaml:"requiredClasses" json:"requiredClasses,omitempty"`
}

// Classes returns the number of classes required, defaulted.
func (p PasswordPolicy) Classes() int {
	if p.RequiredClasses == 0 {
		return 3
	}
	return int(p.RequiredClasses)
}

// PasswordClasses is 3 or 4.
type PasswordClasses int

func (c *PasswordClasses) UnmarshalYAML(n *yaml.Node) error {
	return decodeRange(n, (*int)(c), "password policy requiredClasses", 3, 4)
}

// DeviceType is a kind of client device (catalog §16).
type DeviceType string

const (
	DeviceWindows    DeviceType = "windows"
	DeviceMacOS      DeviceType = "macos"
	DeviceLinux      DeviceType = "linux"
	DeviceWeb        DeviceType = "web"
	DeviceIOS        DeviceType = "ios"
	DeviceAndroid    DeviceType = "android"
	DeviceChromeOS   DeviceType = "chromeos"
	DeviceZeroClient DeviceType = "zeroclient"
	// DeviceUnknown is a client whose platform could not be told; no setting allows it.
	DeviceUnknown DeviceType = "unknown"
)

// DeviceAccess allows or denies each device type. Unset entries take the guide's defaults:
// "By default, WorkSpaces Web Access and Linux clients are disabled"; iOS, Android,
// Chromebooks, PCoIP zero clients (and Windows, macOS) are allowed.
type DeviceAccess struct {
	Windows    Access `yaml:"windows" json:"windows,omitempty"`
	MacOS      Access `yaml:"macos" json:"macos,omitempty"`
	Linux      Access `yaml:"linux" json:"linux,omitempty"`
	Web        Access `yaml:"web" json:"web,omitempty"`
	IOS        Access `yaml:"ios" json:"ios,omitempty"`
	Android    Access `yaml:"android" json:"android,omitempty"`
	ChromeOS   Access `yaml:"chromeos" json:"chromeos,omitempty"`
	ZeroClient Access `yaml:"zeroclient" json:"zeroclient,omitempty"`
}

// Access is ALLOW or DENY; empty takes the default.
type Access string

const (
	Allow Access = "ALLOW"
	Deny  Access = "DENY"
)

func (a *Access) UnmarshalYAML(n *yaml.Node) error {
	return decodeEnum(n, (*string)(a), string(Allow), string(Deny))
}

// Allowed reports whether device type t may log in.
func (d DeviceAccess) Allowed(t DeviceType) bool {
	pick := func(a Access, def Access) bool {
		if a == "" {
			a = def
		}
		return a == Allow
	}
	switch t {
	case DeviceWindows:
		return pick(d.Windows, Allow)
	case DeviceMacOS:
		return pick(d.MacOS, Allow)
	case DeviceLinux:
		return pick(d.Linux, Deny)
	case DeviceWeb:
		return pick(d.Web, Deny)
	case DeviceIOS:
		return pick(d.IOS, Allow)
	case DeviceAndroid:
		return pick(d.Android, Allow)
	case DeviceChromeOS:
		return pick(d.ChromeOS, Allow)
	case DeviceZeroClient:
		return pick(d.ZeroClient, Allow)
	}
	return false
}

// Map lists every device type with its effective setting.
func (d DeviceAccess) Map() map[DeviceType]bool {
	m := map[DeviceType]bool{}
	for _, t := range []DeviceType{DeviceWindows, DeviceMacOS, DeviceLinux, DeviceWeb, DeviceIOS, DeviceAndroid, DeviceChromeOS, DeviceZeroClient} {
		m[t] = d.Allowed(t)
	}
	return m
}

// Kind returns the directory type, defaulted.
func (l *Login) Kind() DirectoryType {
	if l.Type == "" {
		return TypeLocal
	}
	return l.Type
}

// NetBIOS returns the directory's NetBIOS name, defaulted from its DNS name.
func (d *Directory) NetBIOS() string {
	if d.Login.NetBIOSName != "" {
		return d.Login.NetBIOSName
	}
	first, _, _ := strings.Cut(d.Name, ".")
	return strings.ToUpper(first)
}

// MFAStatusOrDefault returns the MFA status, Enabled when unset.
func (m *MFA) MFAStatusOrDefault() MFAStatus {
	if m.Status == "" {
		return MFAEnabled
	}
	return m.Status
}

// Validate checks the rules that relate several settings. Errors name the setting under
// "login." so a caller can prefix the directory's place in the config.
func (l *Login) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if m := l.Session.ResumeTimeoutMinutes; m < 0 || time.Duration(m)*time.Minute > MaxResumeTimeout {
		bad("login.session.resumeTimeoutMinutes %d: 1 to %d minutes (0 or unset: the guide's default, 20)", m, int(MaxResumeTimeout/time.Minute))
	}
	switch l.Kind() {
	case TypeLocal:
		if l.LDAP != nil {
			bad("login.ldap: set only for type ldap (this directory is local)")
		}
	case TypeLDAP:
		if l.LDAP == nil {
			bad("login.ldap: required for type ldap")
			break
		}
		u, err := url.Parse(l.LDAP.URL)
		switch {
		case l.LDAP.URL == "":
			bad("login.ldap.url: required (ldap://host:389 or ldaps://host:636)")
		case err != nil || (u.Scheme != "ldap" && u.Scheme != "ldaps") || u.Host == "":
			bad("login.ldap.url %q: want ldap://host[:port] or ldaps://host[:port]", l.LDAP.URL)
		case u.Scheme == "ldaps" && l.LDAP.StartTLS:
			bad("login.ldap: startTLS applies to ldap:// URLs, not ldaps://")
		case u.Scheme == "ldap" && !l.LDAP.StartTLS && !l.LDAP.AllowCleartext:
			bad("login.ldap.url %q: ldap:// without startTLS sends passwords in cleartext; use ldaps://, set startTLS: true, or (on a network you trust) allowCleartext: true", l.LDAP.URL)
		case l.LDAP.AllowCleartext && (u.Scheme == "ldaps" || l.LDAP.StartTLS):
			bad("login.ldap.allowCleartext: set only for an ldap:// URL without startTLS")
		}
		if l.LDAP.BindDN == "" {
			bad("login.ldap.bindDN: required (the service account that looks users up)")
		}
		if (l.LDAP.BindPassword == "") == (l.LDAP.BindPasswordFile == "") {
			bad("login.ldap: set exactly one of bindPassword and bindPasswordFile")
		}
		if l.LDAP.UserBase == "" {
			bad("login.ldap.userBase: required (the subtree users are searched in)")
		}
		if f := l.LDAP.UserFilter; f != "" && (!strings.HasPrefix(f, "(") || !strings.HasSuffix(f, ")")) {
			bad("login.ldap.userFilter %q: want an LDAP filter in parentheses", f)
		}
		if l.LDAP.TimeoutSeconds < 0 || l.LDAP.TimeoutSeconds > 60 {
			bad("login.ldap.timeoutSeconds %d: want 1–60 (0 means %d)", l.LDAP.TimeoutSeconds, DefaultLDAPTimeout)
		}
	}
	if n := l.NetBIOSName; n != "" && (len(n) > 15 || strings.ContainsAny(n, `\/:*?"<>|. `)) {
		bad("login.netbiosName %q: at most 15 characters, no \\/:*?\"<>|. or spaces", n)
	}
	if m := l.MFA; m != nil {
		switch m.Type {
		case "":
			bad("login.mfa.type: required (radius or totp)")
		case MFARADIUS:
			r := m.RADIUS
			if r == nil {
				bad("login.mfa.radius: required for type radius")
				break
			}
			if len(r.Servers) == 0 {
				bad("login.mfa.radius.servers: at least one server")
			}
			if (r.SharedSecret == "") == (r.SharedSecretFile == "") {
				bad("login.mfa.radius: set exactly one of sharedSecret and sharedSecretFile")
			}
		case MFATOTP:
			if l.Kind() != TypeLocal {
				bad("login.mfa.type totp: only for local directories (zeroclient keeps their TOTP secrets); use radius for ldap")
			}
			if m.RADIUS != nil {
				bad("login.mfa.radius: set only for type radius")
			}
		}
	}
	if len(l.IPGroups) > MaxIPGroupsPerDirectory {
		bad("login.ipGroups: %d groups; a directory can have at most %d", len(l.IPGroups), MaxIPGroupsPerDirectory)
	}
	seen := map[string]bool{}
	for i, g := range l.IPGroups {
		if err := CheckID(KindIPGroup, g.ID); err != nil {
			bad("login.ipGroups[%d].id: %v", i, err)
		}
		if seen[g.ID] {
			bad("login.ipGroups[%d].id %s: duplicate", i, g.ID)
		}
		seen[g.ID] = true
		if len(g.Rules) > MaxIPRulesPerGroup {
			bad("login.ipGroups[%d] (%s): %d rules; a group can have at most %d", i, g.ID, len(g.Rules), MaxIPRulesPerGroup)
		}
		for j, r := range g.Rules {
			if !r.Source.IsValid() {
				bad("login.ipGroups[%d].rules[%d].source: required", i, j)
			}
		}
	}
	return errors.Join(errs...)
}

// decodeEnum decodes a scalar that must be one of values.
func decodeEnum(n *yaml.Node, dst *string, values ...string) error {
	var v string
	if err := n.Decode(&v); err != nil {
		return err
	}
	for _, ok := range values {
		if v == ok {
			*dst = v
			return nil
		}
	}
	return fmt.Errorf("line %d: %q is not one of %s", n.Line, v, strings.Join(values, ", "))
}

// decodeRange decodes an integer within [lo, hi].
func decodeRange(n *yaml.Node, dst *int, what string, lo, hi int) error {
	var v int
	if err := n.Decode(&v); err != nil {
		return fmt.Errorf("line %d: %s: want a whole number", n.Line, what)
	}
	if v < lo || v > hi {
		return fmt.Errorf("line %d: %s %d: must be between %d and %d", n.Line, what, v, lo, hi)
	}
	*dst = v
	return nil
}

// secret returns an inline secret or the trimmed contents of its file.
func secret(inline, file, name string) (string, error) {
	if file == "" {
		return inline, nil
	}
	// Owner-only (0600): a secret file others may read is refused, naming it.
	s, err := secretfile.Read(file)
	if err != nil {
		return "", fmt.Errorf("%sFile: %w", name, err)
	}
	return s, nil
}
