package controller

import (
	"errors"
	"fmt"

	"deskhost/hostd/maintenance"
	"deskhost/hostd/store"
	"deskhost/hostd/workspace"
	"deskhost/internal/catalog"
)

// maintain moves w into and out of the guide's automatic maintenance windows (guide
// catalog §6, hostd/maintenance) and returns the record as it now is:
//
//   - an AutoStop WorkSpace, AVAILABLE or STOPPED ("started automatically once a month"),
//     enters MAINTENANCE when its window opens, once per window; an AlwaysOn WorkSpace's
//     Sunday window is its guest's own ("determined by operating system settings") and
//     changes nothing here;
//   - MAINTENANCE returns to what it was when the window closes: AVAILABLE, or an AutoStop
//     WorkSpace started for it is stopped again (STOPPING, the ordinary stop);
//   - a directory whose maintenance mode is disabled has none: "your WorkSpaces are not
//     rebooted and do not enter the MAINTENANCE state" (one in it leaves at once).
//
// While MAINTENANCE, the worker keeps the guest running like an AVAILABLE one.
func (c *Controller) maintain(w workspace.Workspace) (workspace.Workspace, error) {
	loc := c.cfg.SiteZone
	if loc == nil {
		return w, nil
	}
	switch w.State {
	case workspace.Available, workspace.Stopped, workspace.Maintenance:
	default:
		return w, nil
	}
	if w.Properties.RunningMode != workspace.AutoStop && w.State != workspace.Maintenance {
		return w, nil
	}
	now := c.cfg.Now()
	enabled, err := c.maintenanceEnabled(w.DirectoryID)
	if err != nil {
		return w, err
	}
	win, open := maintenance.Current(w.Properties.RunningMode, w.ID, now, loc)
	var change func(r *workspace.Workspace)
	switch {
	case w.State == workspace.Maintenance && (!enabled || !now.Before(w.Maintenance.Until)):
		back := w.Maintenance.Return
		if back == workspace.Stopped {
			back = workspace.Stopping // powered off the ordinary way; STOPPED follows
		}
		if back != workspace.Stopping {
			back = workspace.Available
		}
		change = func(r *workspace.Workspace) { r.SetState(back, now) }
		c.cfg.Log.Info("maintenance window closed", "workspace", w.ID, "to", back, "directoryMaintenance", enabled)
	case w.State != workspace.Maintenance && enabled && open && !w.Maintenance.Until.Equal(win.End):
		ret := w.State
		change = func(r *workspace.Workspace) {
			r.SetState(workspace.Maintenance, now)
			r.Maintenance = workspace.MaintenanceRun{Until: win.End, Return: ret}
		}
		c.cfg.Log.Info("maintenance window open", "workspace", w.ID, "mode", w.Properties.RunningMode,
			"from", win.Start, "until", win.End, "return", ret)
	default:
		return w, nil
	}
	if err := c.transition(w.ID, w.State, change); err != nil {
		return w, err
	}
	return c.load(w.ID)
}

// maintenanceEnabled is the directory's Maintenance Mode (AWS's EnableMaintenanceMode);
// the guide's default, enabled, for a directory with no WorkSpaces registration on record.
func (c *Controller) maintenanceEnabled(dirID string) (bool, error) {
	var rec catalog.DirectoryRecord
	err := c.cfg.Store.View(func(tx store.Tx) error {
		var err error
		rec, err = store.GetJSON[catalog.DirectoryRecord](tx, store.Directories, dirID)
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return false, nil // no directory: nothing to maintain for
	}
	if err != nil {
		return false, fmt.Errorf("directory %s: %w", dirID, err)
	}
	if rec.Registration == nil {
		return catalog.DefaultCreation().EnableMaintenanceMode, nil
	}
	return rec.Registration.Creation.EnableMaintenanceMode, nil
}
