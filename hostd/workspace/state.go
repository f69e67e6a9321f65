// Package workspace is the WorkSpace record and its rules: the states the guide names, the
// operation × state matrix (guide catalog §2.8), and what each operation asks of the host.
// It is pure logic: no I/O, so every rule is unit-tested.
package workspace

import (
	"deskhost/internal/catalog"
	"fmt"
	"slices"
	"strings"
)

// State is a WorkSpace's status as DescribeWorkspaces reports it (AWS's WorkspaceState).
type State string

const (
	Pending          State = "PENDING"
	Available        State = "AVAILABLE"
	Impaired         State = "IMPAIRED"
	Unhealthy        State = "UNHEALTHY"
	Rebooting        State = "REBOOTING"
	Starting         State = "STARTING"
	Rebuilding       State = "REBUILDING"
	Restoring        State = "RESTORING"
	Maintenance      State = "MAINTENANCE"
	AdminMaintenance State = "ADMIN_MAINTENANCE"
	Terminating      State = "TERMINATING"
	Terminated       State = "TERMINATED"
	Suspended        State = "SUSPENDED"
	Updating         State = "UPDATING"
	Stopping         State = "STOPPING"
	Stopped          State = "STOPPED"
	Error            State = "ERROR"
)

// Transitional reports whether s is a state an operation passes through; the controller
// owns a WorkSpace in such a state and finishes the operation, even after a crash.
func (s State) Transitional() bool {
	switch s {
	case Pending, Rebooting, Starting, Stopping, Terminating, Rebuilding, Restoring, Updating, Suspended:
		return true
	}
	return false
}

// Op is an operation on a WorkSpace.
type Op string

const (
	OpCreate           Op = "CreateWorkspaces"
	OpReboot           Op = "RebootWorkspaces"
	OpStop             Op = "StopWorkspaces"
	OpStart            Op = "StartWorkspaces"
	OpTerminate        Op = "TerminateWorkspaces"
	OpModifyState      Op = "ModifyWorkspaceState"
	OpModifyProperties Op = "ModifyWorkspaceProperties"
	OpRebuild          Op = "RebuildWorkspaces"
	OpRestore          Op = "RestoreWorkspace"
	OpMigrate          Op = "MigrateWorkspace"
	OpCreateImage      Op = "CreateWorkspaceImage"
	// ModifyWorkspaceProperties of the compute type or of a volume size (modify.go).
	OpModifyCompute Op = "ModifyWorkspaceProperties (ComputeTypeName)"
	OpModifyVolumes Op = "ModifyWorkspaceProperties (volume sizes)"
)

// allowed is the operation × state matrix. Sources (guide catalog §2.3–§2.5, §2.8):
//   - reboot: "normal states"; the remedy for Unhealthy; "restart AutoStop WorkSpaces that are
//     available or in an error state"; never in ADMIN_MAINTENANCE ("does not respond").
//   - stop: AutoStop only, from the running states.
//   - start: AutoStop only, from STOPPED, and from ERROR (the guide's "error state" restart).
//   - modify state: from AVAILABLE, or ADMIN_MAINTENANCE back to AVAILABLE; "not available
//     when a WorkSpace has a status of STOPPED".
//   - terminate: any state but TERMINATED ("permanent action", the way out of everything).
//   - modify properties: any settled state but ADMIN_MAINTENANCE (guide catalog §5, §31.15:
//     running modes switch "at any time except in ADMIN_MAINTENANCE"); not while another
//     operation runs.
//   - compute type, volume sizes: a settled WorkSpace whose guest can be changed (guide
//     catalog §2.8: "during another modification" refused, as is ADMIN_MAINTENANCE); a
//     volume grows online only while the agent answers (AVAILABLE) or offline (STOPPED).
//   - rebuild, restore: "AVAILABLE, ERROR, UNHEALTHY, STOPPED" (guide catalog §7, p.87–88);
//     ADMIN_MAINTENANCE "does not respond".
//   - migrate: "a status of AVAILABLE, STOPPED, or ERROR" (guide catalog §7.4, p.96); "cannot
//     be migrated when they are in ADMIN_MAINTENANCE mode".
var allowed = map[Op][]State{
	OpReboot:           {Available, Impaired, Unhealthy, Error},
	OpStop:             {Available, Impaired, Unhealthy, Error},
	OpStart:            {Stopped, Error},
	OpModifyState:      {Available, AdminMaintenance},
	OpModifyProperties: {Available, Impaired, Unhealthy, Stopped, Error},
	OpRebuild:          {Available, Error, Unhealthy, Stopped},
	OpModifyCompute:    {Available, Impaired, Unhealthy, Stopped},
	OpModifyVolumes:    {Available, Stopped},
	OpRestore:          {Available, Error, Unhealthy, Stopped},
	OpMigrate:          {Available, Stopped, Error},
	// create image: "the status of the WorkSpace must be Available" (guide catalog §4.1).
	OpCreateImage: {Available},
	OpTerminate: {Pending, Available, Impaired, Unhealthy, Rebooting, Starting, Rebuilding,
		Restoring, Maintenance, AdminMaintenance, Terminating, Suspended, Updating, Stopping,
		Stopped, Error},
}

// CheckState returns an InvalidResourceStateException naming the current state if op may
// not run on a WorkSpace in state s.
func CheckState(op Op, id string, s State) error { return checkState(op, id, s, "") }

// CheckOp is CheckState for w, and says why an UPDATING WorkSpace refuses: the
// modification that runs, or the migration it is the source of.
func (w *Workspace) CheckOp(op Op) error {
	why := ""
	switch {
	case w.MigrationSource():
		why = fmt.Sprintf(" It is migrating to WorkSpace %s: it ends TERMINATED once that is AVAILABLE, or returns to %s if the migration fails.", w.Migration.Target, w.Migration.Prior)
	case w.State == Updating:
		why = " " + MsgWhileModifying
	}
	return checkState(op, w.ID, w.State, why)
}

func checkState(op Op, id string, s State, why string) error {
	states, ok := allowed[op]
	if !ok {
		return catalog.Errorf(catalog.InternalFailure, "no state rule for %s", op)
	}
	if slices.Contains(states, s) {
		return nil
	}
	names := make([]string, len(states))
	for i, st := range states {
		names[i] = string(st)
	}
	return catalog.Errorf(catalog.InvalidResourceState,
		"WorkSpace %s is %s; %s accepts only a WorkSpace that is %s.%s", id, s, op, orList(names), why)
}

func orList(s []string) string {
	switch len(s) {
	case 0:
		return "nothing"
	case 1:
		return s[0]
	}
	return strings.Join(s[:len(s)-1], ", ") + " or " + s[len(s)-1]
}
