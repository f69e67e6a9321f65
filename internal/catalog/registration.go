// A directory as hostd's store keeps it: its definition (what AWS keeps in Directory
// Service: DNS name, alias, login settings, users) and, once it is registered with
// WorkSpaces, its registration (code, device access, self-service permissions, creation
// and client properties, associated IP access control groups).

package catalog

import (
	"crypto/rand"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// DirectoryRecord is one directory in the store.
type DirectoryRecord struct {
	// Definition is the directory itself. Its RegistrationCode and the WorkSpaces-side
	// parts of its Login (IPGroups, DeviceAccess, Deregistered) stay empty here: they live
	// in Registration, and View puts them together for the connection manager.
	Definition Directory `json:"definition"`
	// Registration is nil while the directory is not registered with WorkSpaces.
	Registration *Registration `json:"registration,omitempty"`
	Created      time.Time     `json:"created"`
	Updated      time.Time     `json:"updated"`
}

// Registration is a directory's WorkSpaces side (RegisterWorkspaceDirectory and the
// Modify*Properties operations).
type Registration struct {
	// Code is the registration code users enter in their client.
	Code              string    `json:"code"`
	Registered        time.Time `json:"registered"`
	SubnetIDs         []string  `json:"subnetIds,omitempty"`
	EnableWorkDocs    bool      `json:"enableWorkDocs,omitempty"`
	EnableSelfService bool      `json:"enableSelfService,omitempty"`
	Tenancy           string    `json:"tenancy,omitempty"`
	// DeviceAccess is AWS's WorkspaceAccessProperties: which client device types may log in.
	DeviceAccess DeviceAccess           `json:"deviceAccess"`
	SelfService  SelfServicePermissions `json:"selfService"`
	Creation     CreationProperties     `json:"creation"`
	Client       ClientProperties       `json:"client"`
	// IPGroupIDs are the associated IP access control groups, in association order.
	IPGroupIDs []string `json:"ipGroupIds,omitempty"`
}

// Setting is AWS's ENABLED or DISABLED.
type Setting string

const (
	Enabled  Setting = "ENABLED"
	Disabled Setting = "DISABLED"
)

// SelfServicePermissions are the guide's "User Self-Service Permissions" (catalog §11).
type SelfServicePermissions struct {
	RestartWorkspace   Setting `json:"restartWorkspace"`
	IncreaseVolumeSize Setting `json:"increaseVolumeSize"`
	ChangeComputeType  Setting `json:"changeComputeType"`
	SwitchRunningMode  Setting `json:"switchRunningMode"`
	RebuildWorkspace   Setting `json:"rebuildWorkspace"`
}

// DefaultSelfService is what a registration starts with: restarting is allowed, as AWS
// allows it by default; "Enable Self Service Permissions" at registration allows the rest
// ("to rebuild their WorkSpaces, change volume size, compute type and running mode").
func DefaultSelfService(enable bool) SelfServicePermissions {
	rest := Disabled
	if enable {
		rest = Enabled
	}
	return SelfServicePermissions{RestartWorkspace: Enabled, IncreaseVolumeSize: rest, ChangeComputeType: rest, SwitchRunningMode: rest, RebuildWorkspace: rest}
}

// CreationProperties are AWS's WorkspaceCreationProperties: defaults for WorkSpaces
// launched (or rebuilt) in the directory.
type CreationProperties struct {
	EnableWorkDocs       bool   `json:"enableWorkDocs,omitempty"`
	EnableInternetAccess bool   `json:"enableInternetAccess,omitempty"`
	DefaultOU            string `json:"defaultOu,omitempty"`
	// UserEnabledAsLocalAdministrator: "Users are local administrators by default".
	UserEnabledAsLocalAdministrator bool `json:"userEnabledAsLocalAdministrator"`
	EnableMaintenanceMode           bool `json:"enableMaintenanceMode"`
}

// DefaultCreation is a new registration's creation properties (the guide's defaults).
func DefaultCreation() CreationProperties {
	return CreationProperties{UserEnabledAsLocalAdministrator: true, EnableMaintenanceMode: true}
}

// ClientProperties are AWS's ClientProperties for a directory's clients.
type ClientProperties struct {
	// ReconnectEnabled is "Remember me": clients may keep credentials to reconnect.
	ReconnectEnabled Setting `json:"reconnectEnabled"`
	LogUploadEnabled Setting `json:"logUploadEnabled"`
}

// DefaultClient is a new registration's client properties.
func DefaultClient() ClientProperties {
	return ClientProperties{ReconnectEnabled: Enabled, LogUploadEnabled: Disabled}
}

// NewRegistration is a registration with the guide's defaults and a fresh code.
func NewRegistration(now time.Time, selfService bool) *Registration {
	return &Registration{Code: NewRegistrationCode(), Registered: now, EnableSelfService: selfService, Tenancy: "SHARED",
		SelfService: DefaultSelfService(selfService), Creation: DefaultCreation(), Client: DefaultClient()}
}

// NewRegistrationCode makes a code in AWS's form (a region prefix, "+", six letters and
// digits). It holds none of the characters a workspaces:// URI must escape (@ : / ? & =).
func NewRegistrationCode() string {
	const alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789" // no 0/O, 1/I: read aloud, typed by hand
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("registration code: crypto/rand failed: %v", err))
	}
	code := []byte("SLiad+")
	for _, c := range b {
		code = append(code, alphabet[int(c)%len(alphabet)])
	}
	return string(code)
}

// View is the directory as the connection manager enforces it: the definition with the
// registration's code, device access and IP access control groups (resolved from groups)
// folded into its login settings. An unregistered directory reads as deregistered.
func (r DirectoryRecord) View(groups map[string]IPGroup) Directory {
	d := r.Definition
	d.Login.IPGroups, d.Login.DeviceAccess, d.Login.Deregistered = nil, DeviceAccess{}, r.Registration == nil
	if reg := r.Registration; reg != nil {
		d.RegistrationCode = reg.Code
		d.Login.DeviceAccess = reg.DeviceAccess
		for _, id := range reg.IPGroupIDs {
			g, ok := groups[id]
			if !ok {
				// Unreachable: a group cannot be deleted while associated. Were it to happen,
				// an empty group in its place denies rather than allows.
				g = IPGroup{ID: id}
			}
			d.Login.IPGroups = append(d.Login.IPGroups, g)
		}
	}
	return d
}

// Redacted is d without its secrets (LDAP bind password, RADIUS shared secret): what any
// describe returns. Paths of secret files are kept; they are not secrets.
func (d Directory) Redacted() Directory {
	if l := d.Login.LDAP; l != nil {
		c := *l
		if c.BindPassword != "" {
			c.BindPassword = RedactedSecret
		}
		d.Login.LDAP = &c
	}
	if m := d.Login.MFA; m != nil {
		c := *m
		if r := c.RADIUS; r != nil {
			rc := *r
			if rc.SharedSecret != "" {
				rc.SharedSecret = RedactedSecret
			}
			c.RADIUS = &rc
		}
		d.Login.MFA = &c
	}
	d.Users = append([]User(nil), d.Users...)
	return d
}

// RedactedSecret stands in for a stored secret in what is shown.
const RedactedSecret = "(stored; not shown)"

var (
	dnsLabel = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$`)
	aliasRe  = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,60}[a-z0-9])?$`)
)

// CheckDefinition checks a directory definition as `hostd directory put` gives it: the id,
// the DNS name, the alias, the login settings and the users. What belongs to the WorkSpaces
// registration is refused here with the operation that sets it.
func CheckDefinition(d Directory) error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if err := CheckID(KindDirectory, d.ID); err != nil {
		bad("id: %v", err)
	}
	if err := checkDNSName(d.Name); err != nil {
		bad("name: %v", err)
	}
	if d.Alias != "" && !aliasRe.MatchString(d.Alias) {
		bad("alias %q: 1 to 62 lower-case letters, digits and hyphens, not beginning or ending with a hyphen", d.Alias)
	}
	if d.RegistrationCode != "" {
		bad("registrationCode: the code is made when the directory is registered with WorkSpaces (hostd directories register, or RegisterWorkspaceDirectory)")
	}
	if len(d.Login.IPGroups) > 0 {
		bad("login.ipGroups: IP access control groups are records of their own: create them with hostd ipgroups create (CreateIpGroup) and associate them with hostd ipgroups associate (AssociateIpGroups)")
	}
	if d.Login.DeviceAccess != (DeviceAccess{}) {
		bad("login.deviceAccess: device access is a WorkSpaces property of the registered directory: set it with hostd directories access (ModifyWorkspaceAccessProperties)")
	}
	if d.Login.Deregistered {
		bad("login.deregistered: registration is an operation: hostd directories deregister (DeregisterWorkspaceDirectory)")
	}
	if err := d.Login.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := CheckUsers(d.Users); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func checkDNSName(name string) error {
	if name == "" {
		return errors.New("required (the directory's DNS name, e.g. corp.example.com)")
	}
	if len(name) > 253 {
		return fmt.Errorf("%q is longer than 253 characters", name)
	}
	for _, l := range strings.Split(strings.TrimSuffix(name, "."), ".") {
		if !dnsLabel.MatchString(l) {
			return fmt.Errorf("%q is not a DNS name (label %q)", name, l)
		}
	}
	return nil
}

// CheckUsers checks a directory's user list: names 1 to 63 characters without control
// characters, unique without regard to case (as in AD), email addresses of the form a@b.
func CheckUsers(users []User) error {
	var errs []error
	seen := map[string]bool{}
	for i, u := range users {
		if err := CheckUser(u); err != nil {
			errs = append(errs, fmt.Errorf("users[%d]: %v", i, AsError(err).Message))
			continue
		}
		k := strings.ToLower(u.UserName)
		if seen[k] {
			errs = append(errs, fmt.Errorf("users[%d].userName %q: duplicate (user names compare without regard to case)", i, u.UserName))
		}
		seen[k] = true
	}
	return errors.Join(errs...)
}

// CheckUser checks one user.
func CheckUser(u User) error {
	n := utf8.RuneCountInString(u.UserName)
	switch {
	case n == 0:
		return Errorf(InvalidParameterValues, "userName is required")
	case n > MaxUserName || !utf8.ValidString(u.UserName):
		return Errorf(InvalidParameterValues, "userName %q: 1 to %d characters", u.UserName, MaxUserName)
	case strings.ContainsFunc(u.UserName, unicode.IsControl) || strings.ContainsAny(u.UserName, `\`):
		return Errorf(InvalidParameterValues, "userName %q has a control character or a backslash", u.UserName)
	case strings.TrimSpace(u.UserName) != u.UserName:
		return Errorf(InvalidParameterValues, "userName %q begins or ends with a space", u.UserName)
	}
	if u.Email != "" {
		local, domain, ok := strings.Cut(u.Email, "@")
		if !ok || local == "" || domain == "" || strings.ContainsAny(u.Email, " \t\r\n<>") {
			return Errorf(InvalidParameterValues, "user %q: email %q is not an address of the form name@domain", u.UserName, u.Email)
		}
	}
	for _, f := range []struct{ name, v string }{{"firstName", u.FirstName}, {"lastName", u.LastName}, {"email", u.Email}} {
		if utf8.RuneCountInString(f.v) > 255 || strings.ContainsFunc(f.v, unicode.IsControl) {
			return Errorf(InvalidParameterValues, "user %q: %s is longer than 255 characters or has a control character", u.UserName, f.name)
		}
	}
	return nil
}
