package controller

import (
	"path/filepath"
	"testing"
	"time"

	"deskhost/hostd/maintenance"
	"deskhost/hostd/store"
	"deskhost/hostd/workspace"
	"deskhost/internal/catalog"
)

// The maintenance decisions on a real store, without libvirt (TestMaintenanceWindows-
// AgainstLibvirt drives them with guests): the directory's flag, leaving when it is
// disabled mid-window, once per window, and no window without a site time zone.
func TestMaintainDecisions(t *testing.T) {
	st, err := store.OpenBolt(filepath.Join(t.TempDir(), "store.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	loc, _ := time.LoadLocation("America/New_York")
	var now time.Time
	c := New(Config{Store: st, Owner: "h1", SiteZone: loc, Now: func() time.Time { return now }})
	const dir = "d-0123456789"
	setFlag := func(on bool) {
		reg := catalog.NewRegistration(time.Now(), false)
		reg.Creation.EnableMaintenanceMode = on
		if err := st.Update(func(tx store.Tx) error {
			return store.PutJSON(tx, store.Directories, dir, catalog.DirectoryRecord{Definition: catalog.Directory{ID: dir}, Registration: reg})
		}); err != nil {
			t.Fatal(err)
		}
	}
	w := workspace.Workspace{ID: "ws-0000000001", DirectoryID: dir, Host: "h1", State: workspace.Available,
		Properties: workspace.Properties{RunningMode: workspace.AutoStop}}
	if err := st.Update(func(tx store.Tx) error { return store.PutJSON(tx, store.Workspaces, w.ID, w) }); err != nil {
		t.Fatal(err)
	}
	step := func(want workspace.State) workspace.Workspace {
		t.Helper()
		cur, err := c.load(w.ID)
		if err != nil {
			t.Fatal(err)
		}
		got, err := c.maintain(cur)
		if err != nil {
			t.Fatal(err)
		}
		if got.State != want {
			t.Fatalf("at %v: %s, want %s", now.In(loc), got.State, want)
		}
		return got
	}
	win := maintenance.Next(workspace.AutoStop, w.ID, time.Date(2027, 3, 3, 12, 0, 0, 0, loc), loc)

	setFlag(false)
	now = win.Start.Add(time.Hour)
	step(workspace.Available) // disabled: no maintenance
	setFlag(true)
	got := step(workspace.Maintenance)
	if !got.Maintenance.Until.Equal(win.End) || got.Maintenance.Return != workspace.Available {
		t.Errorf("record %+v", got.Maintenance)
	}
	setFlag(false)
	step(workspace.Available) // disabled mid-window: it leaves at once
	setFlag(true)
	step(workspace.Available) // and does not come back in the same window
	next := maintenance.Next(workspace.AutoStop, w.ID, win.End, loc)
	now = next.Start.Add(time.Hour)
	step(workspace.Maintenance)
	now = next.End
	step(workspace.Available)

	// An AlwaysOn WorkSpace's Sunday window is its guest's: it stays AVAILABLE.
	on := workspace.Workspace{ID: "ws-0000000002", DirectoryID: dir, Host: "h1", State: workspace.Available,
		Properties: workspace.Properties{RunningMode: workspace.AlwaysOn}}
	if err := st.Update(func(tx store.Tx) error { return store.PutJSON(tx, store.Workspaces, on.ID, on) }); err != nil {
		t.Fatal(err)
	}
	sunday := maintenance.Next(workspace.AlwaysOn, on.ID, next.End, loc)
	now = sunday.Start.Add(time.Hour)
	if got, err := c.maintain(on); err != nil || got.State != workspace.Available {
		t.Fatalf("AlwaysOn in its Sunday window: %s %v, want AVAILABLE", got.State, err)
	}

	// Without a site time zone there is no automatic maintenance.
	c.cfg.SiteZone = nil
	now = maintenance.Next(workspace.AutoStop, w.ID, next.End, loc).Start.Add(time.Hour)
	step(workspace.Available)
}
