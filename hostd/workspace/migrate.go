package workspace

import (
	"time"

	"deskhost/internal/catalog"
)

// MaxMigrationsInFlight is how many migrations may run at once: the guide's "migrate them
// in batches of no more than 25 WorkSpaces at a time" (guide catalog §7.4).
const MaxMigrationsInFlight = 25

// Migration is what a MigrateWorkspace writes on both records, in one transaction, before
// anything is done (guide catalog §7.4): the source (UPDATING while it runs) names its
// target and the state it returns to if the migration fails; the target (PENDING) names
// its source. The controller finishes it from these alone, after any crash.
type Migration struct {
	// On the source.
	Target            string `json:"target,omitempty"`
	Prior             State  `json:"prior,omitempty"`
	PriorErrorCode    string `json:"priorErrorCode,omitempty"`
	PriorErrorMessage string `json:"priorErrorMessage,omitempty"`

	// On the target.
	Source string `json:"source,omitempty"`
	// UserCopied: the target's user volume is a complete copy of the source's (a volume
	// without it is a copy cut short, made again).
	UserCopied bool `json:"userCopied,omitempty"`
	// Failed is why the migration failed, kept on the target (TERMINATING, then
	// TERMINATED: its error fields are cleared on the way).
	Failed string `json:"failed,omitempty"`
}

// MigrationSource reports whether w is the source of a migration that has not ended.
func (w *Workspace) MigrationSource() bool {
	return w.Migration != nil && w.Migration.Target != "" && w.State == Updating
}

// MigrationTarget reports whether w is the target of a migration that has not ended.
func (w *Workspace) MigrationTarget() bool {
	return w.Migration != nil && w.Migration.Source != "" && w.State == Pending
}

// MigratedVolumes are the target's volume sizes (guide catalog §7.4): "the root volume
// increases to match the default root volume size for the new bundle"; the user volume
// keeps the source's size if it was not the source bundle's default, otherwise "the larger
// of the source WorkSpace user volume size and the default user volume size for the new
// bundle". sourceBundleUser is 0 when the source's bundle is gone (its size counts as
// customised then: kept).
func MigratedVolumes(src Properties, sourceBundleUser int, target catalog.Bundle) (root, user int) {
	root = max(src.RootVolumeSizeGib, target.RootGiB)
	user = src.UserVolumeSizeGib
	if sourceBundleUser != 0 && src.UserVolumeSizeGib == sourceBundleUser {
		user = max(src.UserVolumeSizeGib, target.UserGiB)
	}
	return root, user
}

// RestoreFromMigration puts a migration's source back as it was before the migration began.
// A source that was running boots again (STARTING, then AVAILABLE).
func (w *Workspace) RestoreFromMigration(now time.Time) {
	m := w.Migration
	w.Migration = nil
	if m == nil {
		return
	}
	switch m.Prior {
	case Stopped:
		w.SetState(Stopped, now)
	case Error:
		w.Fail(m.PriorErrorCode, m.PriorErrorMessage, now)
	default:
		w.SetState(Starting, now)
	}
}
