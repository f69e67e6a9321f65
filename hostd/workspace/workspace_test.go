package workspace

import (
	"deskhost/internal/catalog"
	"strings"
	"testing"
	"time"
)

var allStates = []State{Pending, Available, Impaired, Unhealthy, Rebooting, Starting, Rebuilding, Restoring,
	Maintenance, AdminMaintenance, Terminating, Terminated, Suspended, Updating, Stopping, Stopped, Error}

// TestOperationStateMatrix checks every cell of the guide's operation × state matrix.
func TestOperationStateMatrix(t *testing.T) {
	want := map[Op][]State{
		OpReboot:           {Available, Impaired, Unhealthy, Error},
		OpStop:             {Available, Impaired, Unhealthy, Error},
		OpStart:            {Stopped, Error},
		OpModifyState:      {Available, AdminMaintenance},
		OpModifyProperties: {Available, Impaired, Unhealthy, Stopped, Error},
	}
	for op, ok := range want {
		for _, s := range allStates {
			err := CheckState(op, "ws-0123456789", s)
			allowed := false
			for _, a := range ok {
				allowed = allowed || a == s
			}
			if allowed != (err == nil) {
				t.Errorf("%s in %s: %v, want allowed=%v", op, s, err, allowed)
			}
			if err != nil {
				if !catalog.IsError(err, catalog.InvalidResourceState) {
					t.Errorf("%s in %s: error type %v", op, s, err)
				}
				if !strings.Contains(err.Error(), "is "+string(s)+";") {
					t.Errorf("%s in %s: the refusal does not name the current state: %v", op, s, err)
				}
			}
		}
	}
	// ADMIN_MAINTENANCE "does not respond to requests to reboot, stop, start, or rebuild",
	// and its properties (the running mode) do not change (guide catalog §5, §31.15).
	for _, op := range []Op{OpReboot, OpStop, OpStart, OpModifyProperties} {
		if CheckState(op, "ws-x", AdminMaintenance) == nil {
			t.Errorf("%s accepted in ADMIN_MAINTENANCE", op)
		}
	}
	// Terminate is the way out of every state but TERMINATED.
	for _, s := range allStates {
		if err := CheckState(OpTerminate, "ws-x", s); (err == nil) == (s == Terminated) {
			t.Errorf("terminate in %s: %v", s, err)
		}
	}
}

func TestSetStateAndFail(t *testing.T) {
	t0 := time.Unix(1000, 0)
	w := Workspace{ID: "ws-0123456789"}
	w.SetState(Pending, t0)
	w.Fail("BootTimeout", "did not answer", t0.Add(time.Minute))
	if w.State != Error || w.ErrorCode != "BootTimeout" || !w.StateSince.Equal(t0.Add(time.Minute)) {
		t.Fatalf("%+v", w)
	}
	w.SetState(Starting, t0.Add(2*time.Minute))
	if w.ErrorCode != "" || w.ErrorMessage != "" {
		t.Errorf("leaving ERROR kept the error: %+v", w)
	}
	w.SetState(Starting, t0.Add(3*time.Minute))
	if !w.StateSince.Equal(t0.Add(2 * time.Minute)) {
		t.Error("StateSince moved without a state change")
	}
}

func TestPropertiesChange(t *testing.T) {
	w := &Workspace{Properties: Properties{RunningMode: AlwaysOn, RootVolumeSizeGib: 80, UserVolumeSizeGib: 10, ComputeTypeName: "VALUE"}}
	as := AutoStop
	p, err := PropertiesChange{RunningMode: &as}.Apply(w)
	if err != nil || p.RunningMode != AutoStop || p.AutoStopTimeoutMinutes != DefaultAutoStopMinutes {
		t.Fatalf("to AUTO_STOP: %+v %v", p, err)
	}
	for _, m := range []int{0, 30, 90, 49 * 60} {
		m := m
		w2 := &Workspace{Properties: p}
		if m == 0 {
			continue
		}
		if _, err := (PropertiesChange{AutoStopTimeoutMinutes: &m}).Apply(w2); !catalog.IsError(err, catalog.InvalidParameterValues) {
			t.Errorf("AutoStop %d minutes: %v", m, err)
		}
	}
	two := 120
	if p2, err := (PropertiesChange{AutoStopTimeoutMinutes: &two}).Apply(&Workspace{Properties: p}); err != nil || p2.AutoStopTimeoutMinutes != 120 {
		t.Errorf("2 hours: %+v %v", p2, err)
	}
	ao := AlwaysOn
	if p3, err := (PropertiesChange{RunningMode: &ao}).Apply(&Workspace{Properties: p}); err != nil || p3.AutoStopTimeoutMinutes != 0 {
		t.Errorf("back to ALWAYS_ON: %+v %v", p3, err)
	}
	bad := RunningMode("MANUAL")
	if _, err := (PropertiesChange{RunningMode: &bad}).Apply(w); err == nil {
		t.Error("MANUAL accepted")
	}
}

// TestAutoStopDue: the catalog's acceptance case (an AutoStop WorkSpace with AutoStop Time
// 1 h and no connected session goes STOPPED after 1 h) and what keeps one running.
func TestAutoStopDue(t *testing.T) {
	t0 := time.Date(2026, 11, 26, 9, 0, 0, 0, time.UTC)
	stale := 2 * time.Minute
	base := Workspace{ID: "ws-0123456789", State: Available, StateSince: t0,
		Properties: Properties{RunningMode: AutoStop, AutoStopTimeoutMinutes: 60}}
	cases := []struct {
		name       string
		mod        func(w *Workspace)
		now        time.Time
		reportedAt time.Time
		due        bool
		since      time.Time
	}{
		{"never connected, 59 min", nil, t0.Add(59 * time.Minute), t0.Add(59 * time.Minute), false, t0},
		{"never connected, 1 h", nil, t0.Add(time.Hour), t0.Add(time.Hour), true, t0},
		{"connected, confirmed", func(w *Workspace) { w.Connection = Connection{Connected: true, Since: t0.Add(time.Minute)} },
			t0.Add(5 * time.Hour), t0.Add(5*time.Hour - 30*time.Second), false, time.Time{}},
		{"connected, but the connection manager went quiet 1 h ago", func(w *Workspace) { w.Connection = Connection{Connected: true, Since: t0.Add(time.Minute)} },
			t0.Add(5 * time.Hour), t0.Add(4 * time.Hour), true, t0.Add(4 * time.Hour)},
		{"disconnected 30 min ago", func(w *Workspace) { w.Connection = Connection{Since: t0.Add(150 * time.Minute)} },
			t0.Add(3 * time.Hour), t0.Add(3 * time.Hour), false, t0.Add(150 * time.Minute)},
		{"disconnected 2 h ago, AutoStop 3 h", func(w *Workspace) {
			w.Connection = Connection{Since: t0.Add(time.Hour)}
			w.Properties.AutoStopTimeoutMinutes = 180
		}, t0.Add(3 * time.Hour), t0.Add(3 * time.Hour), false, t0.Add(time.Hour)},
		{"AlwaysOn", func(w *Workspace) { w.Properties = Properties{RunningMode: AlwaysOn} }, t0.Add(48 * time.Hour), t0, false, time.Time{}},
		{"ADMIN_MAINTENANCE", func(w *Workspace) { w.State = AdminMaintenance }, t0.Add(48 * time.Hour), t0, false, time.Time{}},
		{"UNHEALTHY", func(w *Workspace) { w.State = Unhealthy }, t0.Add(48 * time.Hour), t0, false, time.Time{}},
		{"STOPPED", func(w *Workspace) { w.State = Stopped }, t0.Add(48 * time.Hour), t0, false, time.Time{}},
	}
	for _, c := range cases {
		w := base
		if c.mod != nil {
			c.mod(&w)
		}
		due, since := w.AutoStopDue(c.now, c.reportedAt, stale)
		if due != c.due || (c.since != time.Time{} && !since.Equal(c.since)) {
			t.Errorf("%s: due %v since %v, want %v since %v", c.name, due, since, c.due, c.since)
		}
	}
}
