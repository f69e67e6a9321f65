package broker_test

import (
	"context"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"deskhost/internal/catalog"
	"deskhost/zeroclient/broker"
	"deskhost/zeroclient/client"
	"deskhost/zeroclient/server"
	"deskhost/zeroclient/workspaces"
)

// selfServiceWorkspaces is paul's WorkSpace with a directory's self-service permissions,
// recording what the broker asks hostd to do. hostd's own checks of these operations
// (states, rate limits) are hostd's tests; this one checks the broker's gate.
type selfServiceWorkspaces struct {
	staticWorkspaces
	mu    sync.Mutex
	perms catalog.SelfServicePermissions
	calls []string
	// refuse is hostd's answer to a compute type change.
	refuse error
	// backup is the time of the user volume's latest snapshot (zero: none yet).
	backup time.Time
}

func (s *selfServiceWorkspaces) Rebuild(_ context.Context, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, "rebuild "+id)
	return nil
}
func (s *selfServiceWorkspaces) LatestBackup(context.Context, string) (time.Time, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.backup, !s.backup.IsZero(), nil
}

func (s *selfServiceWorkspaces) Permissions(context.Context, string) (catalog.SelfServicePermissions, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.perms, nil
}
func (s *selfServiceWorkspaces) Reboot(_ context.Context, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, "reboot "+id)
	return nil
}
func (s *selfServiceWorkspaces) Modify(_ context.Context, id string, c workspaces.Change) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.ComputeType != "" && s.refuse != nil {
		return s.refuse
	}
	s.calls = append(s.calls, "modify "+id+" "+strings.Join([]string{c.ComputeType, c.RunningMode, itoa(c.RootVolumeSizeGib), itoa(c.UserVolumeSizeGib)}, "/"))
	return nil
}
func (s *selfServiceWorkspaces) took() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.calls
	s.calls = nil
	return c
}

func itoa(n int) string {
	if n == 0 {
		return ""
	}
	return strconv.Itoa(n)
}

// TestSelfService: a logged-in user's self-service actions through the TLS broker, each
// only where the directory's permission is ENABLED, with the guide's volume caps; hostd's
// refusals reach the user with hostd's message; rebuild needs a confirmation and a backup.
func TestSelfService(t *testing.T) {
	ws := &selfServiceWorkspaces{
		staticWorkspaces: staticWorkspaces{"d-0000000007/paul": {ID: "ws-paul000001", State: "AVAILABLE", Protocol: "PCOIP",
			RunningMode: "AUTO_STOP", ComputeType: "VALUE", RootVolumeSizeGib: 80, UserVolumeSizeGib: 10}},
		perms: catalog.DefaultSelfService(false), // restart only, as a registration without self-service
	}
	r := newRigWith(t, server.Options{Workspaces: ws})
	b := r.broker()
	do := func(q broker.SelfServiceRequest, wantCode int, wantResult, wantMsg string) {
		t.Helper()
		res, code, err := b.SelfService(q)
		if err != nil || code != wantCode || res.Result != wantResult || (wantMsg != "" && res.Message != wantMsg) {
			t.Errorf("%+v: HTTP %d %+v %v; want %d %s %q", q, code, res, err, wantCode, wantResult, wantMsg)
		}
	}
	// Not logged in.
	do(broker.SelfServiceRequest{Action: broker.ActionRestart}, http.StatusUnauthorized, broker.ResultNotAuthed, broker.MsgNotAuthed)
	b.Hello(client.Identity)
	if err := b.Login("paul", pw, "plain.example.com", nil, nil); err != nil {
		t.Fatal(err)
	}
	do(broker.SelfServiceRequest{Action: broker.ActionRestart}, http.StatusOK, broker.ResultAccepted, broker.MsgRestarted)
	if c := ws.took(); !slices.Equal(c, []string{"reboot ws-paul000001"}) {
		t.Errorf("hostd calls %q", c)
	}
	// The directory's other permissions are off: each is refused, hostd is not asked.
	for _, tc := range []struct {
		q    broker.SelfServiceRequest
		perm string
	}{
		{broker.SelfServiceRequest{Action: broker.ActionSwitchRunningMode, RunningMode: "ALWAYS_ON"}, "Switch running mode"},
		{broker.SelfServiceRequest{Action: broker.ActionChangeComputeType, ComputeType: "STANDARD"}, "Change compute type"},
		{broker.SelfServiceRequest{Action: broker.ActionIncreaseVolume, RootVolumeSizeGib: 175}, "Increase volume size"},
		{broker.SelfServiceRequest{Action: broker.ActionRebuild, Confirm: true}, "Rebuild WorkSpace from client"},
	} {
		do(tc.q, http.StatusForbidden, broker.ResultForbidden, broker.MsgSelfServiceOff(tc.perm))
	}
	if c := ws.took(); len(c) > 0 {
		t.Errorf("refused actions reached hostd: %q", c)
	}
	// The administrator turns them on (ModifySelfservicePermissions): the broker asks
	// hostd for the directory's permissions at each action.
	ws.mu.Lock()
	ws.perms = catalog.DefaultSelfService(true)
	ws.perms.RestartWorkspace = catalog.Disabled
	ws.refuse = catalog.Errorf(catalog.UnsupportedWorkspaceConfig, "changing the compute type is not supported by this host yet")
	ws.mu.Unlock()
	do(broker.SelfServiceRequest{Action: broker.ActionRestart}, http.StatusForbidden, broker.ResultForbidden, broker.MsgSelfServiceOff("Restart WorkSpace from client"))
	do(broker.SelfServiceRequest{Action: broker.ActionSwitchRunningMode, RunningMode: "ALWAYS_ON"}, http.StatusOK, broker.ResultAccepted, "")
	do(broker.SelfServiceRequest{Action: broker.ActionIncreaseVolume, RootVolumeSizeGib: 176}, http.StatusBadRequest, broker.ResultInvalid, broker.MsgVolumeCap)
	do(broker.SelfServiceRequest{Action: broker.ActionIncreaseVolume, UserVolumeSizeGib: 101}, http.StatusBadRequest, broker.ResultInvalid, broker.MsgVolumeCap)
	do(broker.SelfServiceRequest{Action: broker.ActionIncreaseVolume, RootVolumeSizeGib: 175, UserVolumeSizeGib: 100}, http.StatusOK, broker.ResultAccepted, "")
	do(broker.SelfServiceRequest{Action: broker.ActionIncreaseVolume, UserVolumeSizeGib: 10}, http.StatusBadRequest, broker.ResultInvalid, "")
	do(broker.SelfServiceRequest{Action: broker.ActionChangeComputeType, ComputeType: "STANDARD"}, http.StatusConflict, broker.ResultRefused,
		"changing the compute type is not supported by this host yet")
	// Rebuild: confirmed, and only once the user volume has a backup (the guide's 12 hours).
	do(broker.SelfServiceRequest{Action: broker.ActionRebuild}, http.StatusBadRequest, broker.ResultInvalid, broker.MsgRebuildConfirm)
	do(broker.SelfServiceRequest{Action: broker.ActionRebuild, Confirm: true}, http.StatusConflict, broker.ResultRefused, broker.MsgRebuildTooSoon)
	if c := ws.took(); !slices.Equal(c, []string{"modify ws-paul000001 /ALWAYS_ON//", "modify ws-paul000001 //175/100"}) {
		t.Errorf("hostd calls %q", c)
	}
	backup := time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC)
	ws.mu.Lock()
	ws.backup = backup
	ws.mu.Unlock()
	do(broker.SelfServiceRequest{Action: broker.ActionRebuild, Confirm: true}, http.StatusOK, broker.ResultAccepted, broker.MsgRebuilding(backup))
	if c := ws.took(); !slices.Equal(c, []string{"rebuild ws-paul000001"}) {
		t.Errorf("hostd calls %q", c)
	}
	// Bad requests change nothing.
	do(broker.SelfServiceRequest{Action: "format-disk"}, http.StatusBadRequest, broker.ResultInvalid, "")
	do(broker.SelfServiceRequest{Action: broker.ActionRestart, ComputeType: "POWER"}, http.StatusBadRequest, broker.ResultInvalid, "")
	do(broker.SelfServiceRequest{Action: broker.ActionSwitchRunningMode, RunningMode: "SOMETIMES"}, http.StatusBadRequest, broker.ResultInvalid, "")
	do(broker.SelfServiceRequest{Action: broker.ActionRestart, Confirm: true}, http.StatusBadRequest, broker.ResultInvalid, "")
	if c := ws.took(); len(c) > 0 {
		t.Errorf("bad requests reached hostd: %q", c)
	}
	// Audited.
	if !strings.Contains(r.logs.String(), "broker: self-service") {
		t.Error("self-service actions are not logged")
	}
	// A body that is not the request's JSON.
	resp := post(t, &http.Client{Transport: &http.Transport{TLSClientConfig: r.tlsCfg}}, r.base+broker.SelfServicePath, "application/json", `{"action":"restart","x":1}`, nil)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("unknown field: HTTP %d", resp.StatusCode)
	}
}
