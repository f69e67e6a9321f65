package workspace

import (
	"strings"
	"testing"
	"time"

	"deskhost/internal/catalog"
)

var testHW = map[catalog.ComputeType]catalog.Hardware{
	catalog.ComputeValue: {VCPUs: 1, MemoryMiB: 256}, catalog.ComputeStandard: {VCPUs: 2, MemoryMiB: 512},
	catalog.ComputePerformance: {VCPUs: 2, MemoryMiB: 768}, catalog.ComputeGraphics: {VCPUs: 2, MemoryMiB: 1024},
}

var t0 = time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)

func newWS(compute string, root, user int) *Workspace {
	return &Workspace{ID: "ws-modify0001", State: Available, Created: t0, StateSince: t0,
		Properties: Properties{RunningMode: AlwaysOn, ComputeTypeName: compute, RootVolumeSizeGib: root, UserVolumeSizeGib: user}}
}

func ptr[T any](v T) *T { return &v }

// modify runs Modify on a copy of w and returns the copy; on error the copy must equal w
// in everything the rules read and write.
func modify(t *testing.T, w *Workspace, c PropertiesChange, now time.Time) (*Workspace, error) {
	t.Helper()
	cp := *w
	err := cp.Modify(c, testHW, now)
	return &cp, err
}

// TestComputeRules: the guide's compute-type rules (catalog §31.14): no larger bundle in
// the first 6 h (5 h 59 m refused, 6 h accepted), larger once per 6 h, smaller once per 30
// days, Graphics only by migration, a type the host has no hardware for refused.
func TestComputeRules(t *testing.T) {
	w := newWS("VALUE", 80, 10)
	if _, err := modify(t, w, PropertiesChange{ComputeTypeName: ptr("STANDARD")}, t0.Add(5*time.Hour+59*time.Minute)); !catalog.IsError(err, catalog.OperationNotSupported) ||
		!strings.Contains(err.Error(), MsgComputeLaunchWait) {
		t.Fatalf("upsize at 5h59m: %v", err)
	}
	at6 := t0.Add(6 * time.Hour)
	w1, err := modify(t, w, PropertiesChange{ComputeTypeName: ptr("STANDARD")}, at6)
	if err != nil {
		t.Fatalf("upsize at 6h: %v", err)
	}
	if w1.State != Updating || w1.Modification != (Modification{Resource: ResourceComputeType, Return: Available}) ||
		w1.Properties.ComputeTypeName != "STANDARD" || !w1.Changes.ComputeUp.Equal(at6) || w1.Modification.Name() != ModifyingCompute {
		t.Fatalf("after upsize: %+v", w1)
	}
	// A second change while the first runs.
	if _, err := modify(t, w1, PropertiesChange{ComputeTypeName: ptr("PERFORMANCE")}, at6.Add(time.Minute)); !catalog.IsError(err, catalog.OperationInProgress) {
		t.Fatalf("change while UPDATING: %v", err)
	}
	w1.SetState(Available, at6.Add(time.Minute))
	w1.Modification = Modification{}
	// Larger again within 6 h: refused; at 6 h: accepted.
	if _, err := modify(t, w1, PropertiesChange{ComputeTypeName: ptr("PERFORMANCE")}, at6.Add(5*time.Hour)); !catalog.IsError(err, catalog.OperationNotSupported) ||
		!strings.Contains(err.Error(), MsgComputeRate) {
		t.Fatalf("second upsize within 6h: %v", err)
	}
	// Smaller is a different budget: accepted at once, then not again for 30 days.
	w2, err := modify(t, w1, PropertiesChange{ComputeTypeName: ptr("VALUE")}, at6.Add(time.Hour))
	if err != nil || !w2.Changes.ComputeDown.Equal(at6.Add(time.Hour)) || !w2.Changes.ComputeUp.Equal(at6) {
		t.Fatalf("downsize: %v %+v", err, w2.Changes)
	}
	w2.SetState(Available, at6.Add(2*time.Hour))
	w2.Modification = Modification{}
	down2 := at6.Add(time.Hour + DownsizeInterval - time.Minute)
	w3, err := modify(t, w2, PropertiesChange{ComputeTypeName: ptr("STANDARD")}, down2)
	if err != nil {
		t.Fatalf("upsize after 30 days: %v", err)
	}
	w3.SetState(Available, down2)
	w3.Modification = Modification{}
	if _, err := modify(t, w3, PropertiesChange{ComputeTypeName: ptr("VALUE")}, down2); !catalog.IsError(err, catalog.OperationNotSupported) {
		t.Fatalf("second downsize within 30 days: %v", err)
	}
	if _, err := modify(t, w3, PropertiesChange{ComputeTypeName: ptr("VALUE")}, down2.Add(2*time.Minute)); err != nil {
		t.Fatalf("second downsize after 30 days: %v", err)
	}
	// Graphics only by migration; POWER has no hardware here; nonsense is a bad value.
	late := t0.Add(365 * 24 * time.Hour)
	for to, want := range map[string]catalog.ErrorType{"GRAPHICS": catalog.OperationNotSupported, "POWER": catalog.ResourceUnavailable, "HUGE": catalog.InvalidParameterValues} {
		if _, err := modify(t, w, PropertiesChange{ComputeTypeName: ptr(to)}, late); !catalog.IsError(err, want) {
			t.Errorf("to %s: %v; want %s", to, err, want)
		}
	}
	// States: ADMIN_MAINTENANCE, PENDING, ERROR refused; a STOPPED guest just takes it.
	for _, st := range []State{AdminMaintenance, Pending, Error, Rebooting, Terminated} {
		ws := newWS("VALUE", 80, 10)
		ws.State = st
		if _, err := modify(t, ws, PropertiesChange{ComputeTypeName: ptr("STANDARD")}, late); !catalog.IsError(err, catalog.InvalidResourceState) {
			t.Errorf("compute change in %s: %v", st, err)
		}
	}
	ws := newWS("VALUE", 80, 10)
	ws.State = Stopped
	if got, err := modify(t, ws, PropertiesChange{ComputeTypeName: ptr("STANDARD")}, late); err != nil || got.State != Stopped || got.Modification.Active() ||
		got.Properties.ComputeTypeName != "STANDARD" {
		t.Errorf("compute change while STOPPED: %v %+v", err, got)
	}
	if got, err := modify(t, ws, PropertiesChange{ComputeTypeName: ptr("STANDARD"), RunningMode: ptr(AlwaysOn)}, late); err != nil || got.State != Starting {
		t.Errorf("compute change and ALWAYS_ON while STOPPED: %v %+v", err, got)
	}
	ws.Hibernated = true // its saved RAM is the old hardware's: UPDATING drops it
	if got, err := modify(t, ws, PropertiesChange{ComputeTypeName: ptr("STANDARD")}, late); err != nil || got.State != Updating || got.Modification.Return != Stopped {
		t.Errorf("compute change while STOPPED (hibernated): %v %+v", err, got)
	}
}

// TestVolumeRules: the guide's volume rules (catalog §31.11–12): the groups, grow only,
// one volume per request, the path through (80,100) to root ≥175, once per 6 h per volume,
// nothing in the first 6 h.
func TestVolumeRules(t *testing.T) {
	at6 := t0.Add(6 * time.Hour)
	w := newWS("VALUE", 80, 10)
	if _, err := modify(t, w, PropertiesChange{UserVolumeSizeGib: ptr(100)}, at6.Add(-time.Minute)); !catalog.IsError(err, catalog.OperationNotSupported) ||
		!strings.Contains(err.Error(), MsgVolumeLaunchWait) {
		t.Fatalf("grow before 6h: %v", err)
	}
	w1, err := modify(t, w, PropertiesChange{UserVolumeSizeGib: ptr(100)}, at6)
	if err != nil || w1.State != Updating || w1.Modification != (Modification{Resource: ResourceUserVolume, Return: Available, SizeGib: 100}) ||
		w1.Properties.UserVolumeSizeGib != 100 || !w1.Changes.UserGrown.Equal(at6) || w1.Modification.Name() != ModifyingStorage {
		t.Fatalf("user 10→100 at 6h: %v %+v", err, w1)
	}
	// Root 80→175 while that runs: refused; once it completes: accepted.
	if _, err := modify(t, w1, PropertiesChange{RootVolumeSizeGib: ptr(175)}, at6.Add(time.Minute)); !catalog.IsError(err, catalog.OperationInProgress) {
		t.Fatalf("root grow while user grows: %v", err)
	}
	w1.SetState(Available, at6.Add(2*time.Minute))
	w1.Modification = Modification{}
	w2, err := modify(t, w1, PropertiesChange{RootVolumeSizeGib: ptr(175)}, at6.Add(3*time.Minute))
	if err != nil || w2.Modification.Resource != ResourceRootVolume || w2.Modification.SizeGib != 175 {
		t.Fatalf("root 80→175 after the user grew: %v %+v", err, w2)
	}
	w2.SetState(Available, at6.Add(4*time.Minute))
	w2.Modification = Modification{}
	// The same volume again within 6 h: refused.
	if _, err := modify(t, w2, PropertiesChange{UserVolumeSizeGib: ptr(200)}, at6.Add(5*time.Hour)); !catalog.IsError(err, catalog.OperationNotSupported) ||
		!strings.Contains(err.Error(), MsgVolumeRate) {
		t.Fatalf("user grows twice in 6h: %v", err)
	}
	if _, err := modify(t, w2, PropertiesChange{UserVolumeSizeGib: ptr(200)}, at6.Add(6*time.Hour)); err != nil {
		t.Fatalf("user 100→200 6h later: %v", err)
	}
	late := t0.Add(30 * 24 * time.Hour)
	for _, c := range []struct {
		from       [2]int
		root, user int
		want       catalog.ErrorType
		msg        string
	}{
		{[2]int{80, 50}, 80, 10, catalog.InvalidParameterValues, MsgVolumeShrink},
		{[2]int{175, 100}, 175, 99, catalog.InvalidParameterValues, MsgVolumeShrink},
		{[2]int{80, 10}, 175, 100, catalog.InvalidParameterValues, MsgVolumeBoth},
		{[2]int{80, 50}, 175, 50, catalog.InvalidParameterValues, MsgVolumeUser50},
		{[2]int{80, 10}, 175, 10, catalog.InvalidParameterValues, MsgVolumeRootFirst},
		{[2]int{80, 10}, 80, 20, catalog.InvalidParameterValues, MsgVolumeRoot80},
		{[2]int{80, 100}, 80, 150, catalog.InvalidParameterValues, MsgVolumeRoot80},
		{[2]int{80, 100}, 100, 100, catalog.InvalidParameterValues, MsgVolumeGroups},
		{[2]int{175, 100}, 2001, 100, catalog.InvalidParameterValues, "at most 2000"},
		{[2]int{80, 10}, 80, -5, catalog.InvalidParameterValues, "positive"},
		{[2]int{80, 10}, 80, 50, "", ""},
		{[2]int{80, 50}, 80, 100, "", ""},
		{[2]int{80, 100}, 2000, 100, "", ""},
		{[2]int{175, 100}, 175, 2000, "", ""},
	} {
		ws := newWS("VALUE", c.from[0], c.from[1])
		got, err := modify(t, ws, PropertiesChange{RootVolumeSizeGib: ptr(c.root), UserVolumeSizeGib: ptr(c.user)}, late)
		if c.want == "" {
			if err != nil || got.Properties.RootVolumeSizeGib != c.root || got.Properties.UserVolumeSizeGib != c.user {
				t.Errorf("%v → (%d,%d): %v", c.from, c.root, c.user, err)
			}
			continue
		}
		if !catalog.IsError(err, c.want) || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%v → (%d,%d): %v; want %s %q", c.from, c.root, c.user, err, c.want, c.msg)
		}
	}
	// Graphics: (100,100) and up.
	g := newWS("GRAPHICS", 100, 100)
	if _, err := modify(t, g, PropertiesChange{RootVolumeSizeGib: ptr(150)}, late); err != nil {
		t.Errorf("graphics root 100→150: %v", err)
	}
	// States: volumes grow online only while AVAILABLE, or offline while STOPPED.
	for _, st := range []State{Unhealthy, AdminMaintenance, Error, Rebooting, Pending} {
		ws := newWS("VALUE", 80, 10)
		ws.State = st
		if _, err := modify(t, ws, PropertiesChange{UserVolumeSizeGib: ptr(50)}, late); !catalog.IsError(err, catalog.InvalidResourceState) {
			t.Errorf("volume change in %s: %v", st, err)
		}
	}
	ws := newWS("VALUE", 80, 10)
	ws.State = Stopped
	if got, err := modify(t, ws, PropertiesChange{UserVolumeSizeGib: ptr(50)}, late); err != nil || got.State != Updating || got.Modification.Return != Stopped {
		t.Errorf("volume change while STOPPED: %v %+v", err, got)
	}
	ws.Properties.RunningMode = AutoStop
	if got, err := modify(t, ws, PropertiesChange{UserVolumeSizeGib: ptr(50), RunningMode: ptr(AlwaysOn)}, late); err != nil || got.State != Updating ||
		got.Modification.Return != Available || got.Properties.RunningMode != AlwaysOn {
		t.Errorf("volume change and ALWAYS_ON while STOPPED: %v %+v", err, got)
	}
	// Compute and volumes in one request: refused.
	if _, err := modify(t, newWS("VALUE", 80, 10), PropertiesChange{UserVolumeSizeGib: ptr(50), ComputeTypeName: ptr("STANDARD")}, late); !catalog.IsError(err, catalog.InvalidParameterValues) {
		t.Errorf("compute and volume together: %v", err)
	}
	// Restating the current sizes changes nothing and is no volume change.
	if got, err := modify(t, newWS("VALUE", 80, 10), PropertiesChange{RootVolumeSizeGib: ptr(80), UserVolumeSizeGib: ptr(10)}, t0); err != nil || got.State != Available {
		t.Errorf("same sizes: %v %+v", err, got)
	}
	// A running-mode switch during a volume increase is refused (guide §11).
	if _, err := modify(t, w1.withState(Updating, ResourceUserVolume), PropertiesChange{RunningMode: ptr(AutoStop)}, late); !catalog.IsError(err, catalog.InvalidResourceState) {
		t.Errorf("mode switch while UPDATING: %v", err)
	}
}

func (w *Workspace) withState(s State, r Resource) *Workspace {
	cp := *w
	cp.State = s
	cp.Modification = Modification{Resource: r, Return: Available}
	return &cp
}
