package workspace

import (
	"deskhost/internal/catalog"
	"fmt"
	"time"
)

// RunningMode is how a WorkSpace is kept running (guide §5).
type RunningMode string

const (
	AlwaysOn RunningMode = "ALWAYS_ON"
	AutoStop RunningMode = "AUTO_STOP"
)

// AutoStop limits: the guide's "AutoStop Time (hours)", set in AWS's API as minutes in
// 60-minute steps; AWS accepts 1 to 48 hours.
const (
	DefaultAutoStopMinutes = 60
	MaxAutoStopMinutes     = 48 * 60
)

// Properties are a WorkSpace's settings, as AWS's WorkspaceProperties.
type Properties struct {
	RunningMode            RunningMode `json:"runningMode"`
	AutoStopTimeoutMinutes int         `json:"autoStopTimeoutMinutes,omitempty"`
	RootVolumeSizeGib      int         `json:"rootVolumeSizeGib"`
	UserVolumeSizeGib      int         `json:"userVolumeSizeGib"`
	ComputeTypeName        string      `json:"computeTypeName"`
	Protocol               string      `json:"protocol"`
}

// Workspace is one user's desktop: the record hostd stores, the desired state the
// controller converges libvirt to. Its State is both what DescribeWorkspaces reports and,
// when transitional, the operation the controller still owes.
type Workspace struct {
	ID           string     `json:"id"`
	DirectoryID  string     `json:"directoryId"`
	UserName     string     `json:"userName"`
	BundleID     string     `json:"bundleId"`
	ImageID      string     `json:"imageId"` // the image the root volume was cloned from
	ComputerName string     `json:"computerName,omitempty"`
	IPAddress    string     `json:"ipAddress,omitempty"`
	Properties   Properties `json:"properties"`

	State        State  `json:"state"`
	ErrorCode    string `json:"errorCode,omitempty"`
	ErrorMessage string `json:"errorMessage,omitempty"`

	Created    time.Time `json:"created"`
	StateSince time.Time `json:"stateSince"` // when State last changed: deadlines count from here
	Updated    time.Time `json:"updated"`
	// BootedAt is when hostd last started the WorkSpace's VM: a reboot whose VM booted
	// after the reboot was accepted has done its power-off, even if hostd crashed since.
	BootedAt time.Time `json:"bootedAt,omitzero"`
	// CaptureImage is the image CreateWorkspaceImage is making of this WorkSpace while it
	// is SUSPENDED (hostd/controller/capture.go).
	CaptureImage string `json:"captureImage,omitempty"`
	// Maintenance is the automatic maintenance window the WorkSpace is in or was last in
	// (hostd/maintenance): while MAINTENANCE, the state it returns to at the window's end.
	Maintenance MaintenanceRun `json:"maintenance,omitzero"`

	// Hibernated: AutoStop's stop saved the running guest's state (its RAM) to disk, and
	// the next start restores it. ResumeFailed is why a restore failed and the start
	// booted afresh, for the AVAILABLE record's error fields.
	Hibernated   bool   `json:"hibernated,omitempty"`
	ResumeFailed string `json:"resumeFailed,omitempty"`

	// Encryption is how the WorkSpace's volumes are encrypted (guide §8.1); zero: not.
	Encryption Encryption `json:"encryption,omitzero"`

	// Connection is the user's streaming session as the connection manager last reported it.
	Connection Connection `json:"connection,omitzero"`

	// Modification is the compute or storage change an UPDATING WorkSpace is making
	// (modify.go); Changes are when its compute type and volumes last changed.
	Modification Modification `json:"modification,omitzero"`
	Changes      ChangeTimes  `json:"changes,omitzero"`
	// GrowFS lists volumes whose files grew while the guest was off: their filesystems
	// grow (through the guest agent) after the next boot.
	GrowFS []Resource `json:"growFS,omitempty"`

	// Host is the host that owns the WorkSpace: the only one that runs its VM and writes
	// its progress. Placement sets it at creation; nothing changes it by itself
	// (hostd/fleet/README.md: fencing).
	Host string `json:"host,omitempty"`

	// Migration links the two records of a MigrateWorkspace while it runs (migrate.go).
	Migration *Migration `json:"migration,omitempty"`
}

// Encryption is which volumes of a WorkSpace are encrypted (qcow2 with LUKS) and with what.
type Encryption struct {
	Root bool `json:"root,omitempty"`
	User bool `json:"user,omitempty"`
	// KeyID is the key store's key (hostd/keystore) that seals DataKey; KeyRef is the
	// VolumeEncryptionKey the administrator gave (an id, alias or ARN), which
	// DescribeWorkspaces returns.
	KeyID  string `json:"keyId,omitempty"`
	KeyRef string `json:"keyRef,omitempty"`
	// DataKey is the WorkSpace's own data key, the passphrase of its volumes, sealed with
	// the key: never stored in the clear.
	DataKey []byte `json:"dataKey,omitempty"`
}

// Encrypted reports whether any of w's volumes is encrypted.
func (w *Workspace) Encrypted() bool { return w.Encryption.Root || w.Encryption.User }

// MaintenanceRun is one automatic maintenance of a WorkSpace.
type MaintenanceRun struct {
	Until  time.Time `json:"until,omitzero"`   // the window's end
	Return State     `json:"return,omitempty"` // AVAILABLE, or STOPPED for an AutoStop one started for it
}

// Connection is whether a user is streaming the WorkSpace's desktop.
type Connection struct {
	Connected bool      `json:"connected,omitempty"`
	Since     time.Time `json:"since,omitzero"` // when Connected last changed
	// LastUserConnection is when a session last began (AWS's
	// LastKnownUserConnectionTimestamp).
	LastUserConnection time.Time `json:"lastUserConnection,omitzero"`
}

// Running reports whether the WorkSpace's desktop is up for users to connect to: the
// states in which a connection state means something (AWS reports UNKNOWN otherwise).
func (w *Workspace) Running() bool {
	switch w.State {
	case Available, Unhealthy, AdminMaintenance:
		return true
	}
	return false
}

// AutoStopDue reports whether an AutoStop WorkSpace has been idle for its AutoStop time
// at now (guide §2.3: "automatically stopped after a specified period of inactivity"),
// and since when it counts as idle. Only an AVAILABLE WorkSpace is stopped: not one in
// ADMIN_MAINTENANCE (the guide: "An AutoStop WorkSpace is not hibernated"), UNHEALTHY or
// busy. Idle time runs from when it became AVAILABLE or its last session ended,
// whichever is later. A session counts only while the connection manager keeps
// confirming it: reportedAt is its last report, and once that is older than staleAfter
// the session is taken to have ended then (a connection manager that is gone streams
// nothing).
func (w *Workspace) AutoStopDue(now, reportedAt time.Time, staleAfter time.Duration) (due bool, idleSince time.Time) {
	if w.Properties.RunningMode != AutoStop || w.State != Available || w.Properties.AutoStopTimeoutMinutes <= 0 {
		return false, time.Time{}
	}
	idleSince = w.StateSince
	if w.Connection.Connected {
		if now.Sub(reportedAt) < staleAfter {
			return false, time.Time{}
		}
		if reportedAt.After(idleSince) {
			idleSince = reportedAt
		}
	} else if w.Connection.Since.After(idleSince) {
		idleSince = w.Connection.Since
	}
	return now.Sub(idleSince) >= time.Duration(w.Properties.AutoStopTimeoutMinutes)*time.Minute, idleSince
}

// SetState moves w to s at time now, clearing a previous error unless s is ERROR.
func (w *Workspace) SetState(s State, now time.Time) {
	if w.State != s {
		w.StateSince = now
	}
	w.State = s
	w.Updated = now
	if s != Updating { // a modification ends with the state it leaves for
		w.Modification = Modification{}
	}
	if s != Error {
		w.ErrorCode, w.ErrorMessage = "", ""
	}
}

// Fail moves w to ERROR with a reason a person can act on.
func (w *Workspace) Fail(code, message string, now time.Time) {
	w.SetState(Error, now)
	w.ErrorCode, w.ErrorMessage = code, message
}

// WantsRunning reports whether the desired state has the VM running. ERROR keeps whatever
// libvirt has (an operator decides), so it reports false and ok=false.
func (w *Workspace) WantsRunning() (running, ok bool) {
	switch w.State {
	case Stopping, Stopped, Terminating, Terminated:
		return false, true
	case Updating:
		if w.Migration != nil { // a migration's source: off while its user volume is copied
			return false, true
		}
	case Error:
		return false, false
	}
	return true, true
}

// Live reports whether w still counts as the user's WorkSpace: one per (directory, user)
// until it is TERMINATED (guide §1.6).
func (w *Workspace) Live() bool { return w.State != Terminated }

// PropertiesChange is a ModifyWorkspaceProperties request; nil fields are left alone.
type PropertiesChange struct {
	RunningMode            *RunningMode
	AutoStopTimeoutMinutes *int
	RootVolumeSizeGib      *int
	UserVolumeSizeGib      *int
	ComputeTypeName        *string
}

// Apply validates c's running mode and AutoStop time against w and returns w's new
// properties; compute and volume changes are Workspace.Modify's.
func (c PropertiesChange) Apply(w *Workspace) (Properties, error) {
	p := w.Properties
	if c.RunningMode != nil {
		p.RunningMode = *c.RunningMode
	}
	if c.AutoStopTimeoutMinutes != nil {
		p.AutoStopTimeoutMinutes = *c.AutoStopTimeoutMinutes
	}
	if p.RunningMode == AutoStop && p.AutoStopTimeoutMinutes == 0 {
		p.AutoStopTimeoutMinutes = DefaultAutoStopMinutes
	}
	if p.RunningMode == AlwaysOn {
		p.AutoStopTimeoutMinutes = 0
	}
	if err := ValidateRunningMode(p.RunningMode, p.AutoStopTimeoutMinutes); err != nil {
		return w.Properties, err
	}
	return p, nil
}

// ValidateRunningMode checks a running mode and its AutoStop time.
func ValidateRunningMode(m RunningMode, autoStopMinutes int) error {
	switch m {
	case AlwaysOn:
		if autoStopMinutes != 0 {
			return catalog.Errorf(catalog.InvalidParameterValues, "RunningModeAutoStopTimeoutInMinutes applies only to AUTO_STOP WorkSpaces")
		}
	case AutoStop:
		if autoStopMinutes < 60 || autoStopMinutes > MaxAutoStopMinutes || autoStopMinutes%60 != 0 {
			return catalog.Errorf(catalog.InvalidParameterValues,
				"RunningModeAutoStopTimeoutInMinutes %d must be a whole number of hours from 60 to %d", autoStopMinutes, MaxAutoStopMinutes)
		}
	default:
		return catalog.Errorf(catalog.InvalidParameterValues, "RunningMode %q must be %s or %s", m, AlwaysOn, AutoStop)
	}
	return nil
}

// String is for logs.
func (w *Workspace) String() string {
	return fmt.Sprintf("%s(%s/%s %s)", w.ID, w.DirectoryID, w.UserName, w.State)
}
