package broker_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsws "github.com/aws/aws-sdk-go-v2/service/workspaces"
	"github.com/aws/aws-sdk-go-v2/service/workspaces/types"

	"deskhost/hostd/api"
	"deskhost/hostd/service"
	"deskhost/hostd/store"
	"deskhost/hostd/workspace"
	"deskhost/internal/catalog"
	"deskhost/internal/hostconfig"
	"deskhost/internal/hostdclient"
	"deskhost/internal/testenv"
	"deskhost/zeroclient/broker"
	"deskhost/zeroclient/client"
	"deskhost/zeroclient/server"
	"deskhost/zeroclient/workspaces"
)

type noWake struct{}

func (noWake) Wake(string) {}

// TestSelfServiceAgainstHostd: the TLS broker's self-service actions go to hostd's real
// API server (its local socket, through internal/hostdclient) and change what hostd holds:
// refused while the directory's permission is off, accepted once the administrator turns
// it on with ModifySelfservicePermissions (AWS's SDK against the same API); hostd's own
// refusals (a reboot of a WorkSpace already rebooting, a volume increase within the
// guide's first 6 h, a restart or compute change while a volume increase runs) reach the
// user with hostd's message, in the guide's words. With hostd's clock 6 h on, a user's
// volume increase and compute type change reach hostd's ModifyWorkspaceProperties and
// the WorkSpace is UPDATING with them. No VM runs: the test plays the controller in
// hostd's store.
func TestSelfServiceAgainstHostd(t *testing.T) {
	testenv.Root(t) // hostd's local socket takes only root
	ctx := context.Background()
	dir := t.TempDir()
	clk := &clock{t: time.Now().UTC()}
	st, err := store.OpenBolt(filepath.Join(dir, "hostd.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	svc := service.New(st, service.Config{
		ComputeTypes: map[catalog.ComputeType]catalog.Hardware{catalog.ComputeValue: {VCPUs: 1, MemoryMiB: 256},
			catalog.ComputeStandard: {VCPUs: 2, MemoryMiB: 512}},
		WorkspaceQuota: 10,
	}, noWake{}, clk.now, log)
	if _, err := svc.ImportCatalog(ctx, &hostconfig.LegacyCatalog{
		Images: []hostconfig.Sourced[catalog.Image]{{From: "images[0]", Item: catalog.Image{ID: "wsi-linux00001", OS: catalog.Linux}}},
		Bundles: []hostconfig.Sourced[catalog.Bundle]{{From: "bundles[0]", Item: catalog.Bundle{ID: "wsb-value00001", ImageID: "wsi-linux00001",
			ComputeType: catalog.ComputeValue, Protocol: catalog.PCoIP, RootGiB: 80, UserGiB: 10}}},
		Directories: []hostconfig.Sourced[catalog.Directory]{{From: "directories[0]", Item: catalog.Directory{ID: "d-0000000007",
			Name: "plain.example.com", Users: []catalog.User{{UserName: "paul", Email: "paul@example.com"}}}}},
	}, "test"); err != nil {
		t.Fatal(err)
	}
	made, failed, err := svc.CreateWorkspaces(ctx, []service.CreateRequest{{DirectoryID: "d-0000000007", UserName: "paul", BundleID: "wsb-value00001",
		RunningMode: workspace.AutoStop, AutoStopTimeoutMinutes: 60}})
	if err != nil || len(made) != 1 {
		t.Fatalf("create: %v %+v", err, failed)
	}
	id := made[0].ID
	// Plays the controller: the WorkSpace settles in a state.
	settle := func(s workspace.State) {
		t.Helper()
		if err := st.Update(func(tx store.Tx) error {
			w, err := store.GetJSON[workspace.Workspace](tx, store.Workspaces, id)
			if err != nil {
				return err
			}
			w.SetState(s, clk.now())
			return store.PutJSON(tx, store.Workspaces, id, w)
		}); err != nil {
			t.Fatal(err)
		}
	}
	settle(workspace.Available)
	sock := filepath.Join(dir, "run", "hostd.sock")
	os.MkdirAll(filepath.Dir(sock), 0o700)
	ln, err := api.ListenUnix(sock)
	if err != nil {
		t.Fatal(err)
	}
	actx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- api.New(svc, api.Options{Logger: log}).ServeUnixListener(actx, ln) }()
	defer func() { cancel(); <-done }()

	r := newRigWith(t, server.Options{Workspaces: workspaces.Dial(sock)})
	b := r.broker()
	b.Hello(client.Identity)
	if err := b.Login("paul", pw, "plain.example.com", nil, nil); err != nil {
		t.Fatal(err)
	}
	do := func(q broker.SelfServiceRequest, wantCode int, wantResult, wantMsg string) {
		t.Helper()
		res, code, err := b.SelfService(q)
		if err != nil || code != wantCode || res.Result != wantResult || (wantMsg != "" && res.Message != wantMsg) {
			t.Errorf("%+v: HTTP %d %+v %v; want %d %s %q", q, code, res, err, wantCode, wantResult, wantMsg)
		}
	}
	get := func() workspace.Workspace {
		w, err := svc.Get(id)
		if err != nil {
			t.Fatal(err)
		}
		return w
	}
	// Registered without self-service: switching the running mode is refused, hostd unchanged.
	do(broker.SelfServiceRequest{Action: broker.ActionSwitchRunningMode, RunningMode: "ALWAYS_ON"}, http.StatusForbidden, broker.ResultForbidden,
		broker.MsgSelfServiceOff("Switch running mode"))
	if m := get().Properties.RunningMode; m != workspace.AutoStop {
		t.Fatalf("running mode %s after a refused switch", m)
	}
	// The administrator allows it.
	admin := hostdclient.Dial(sock)
	if _, err := admin.ModifySelfservicePermissions(ctx, &awsws.ModifySelfservicePermissionsInput{ResourceId: aws.String("d-0000000007"),
		SelfservicePermissions: &types.SelfservicePermissions{SwitchRunningMode: types.ReconnectEnumEnabled, IncreaseVolumeSize: types.ReconnectEnumEnabled}}); err != nil {
		t.Fatal(err)
	}
	do(broker.SelfServiceRequest{Action: broker.ActionSwitchRunningMode, RunningMode: "ALWAYS_ON"}, http.StatusOK, broker.ResultAccepted, "")
	if m := get().Properties.RunningMode; m != workspace.AlwaysOn {
		t.Errorf("running mode %s after an accepted switch to ALWAYS_ON", m)
	}
	// Restart is allowed by default: hostd reboots the WorkSpace; a second one while it is
	// rebooting is hostd's refusal, with hostd's message.
	do(broker.SelfServiceRequest{Action: broker.ActionRestart}, http.StatusOK, broker.ResultAccepted, broker.MsgRestarted)
	if s := get().State; s != workspace.Rebooting {
		t.Errorf("state %s after a restart", s)
	}
	res, code, err := b.SelfService(broker.SelfServiceRequest{Action: broker.ActionRestart})
	if err != nil || code != http.StatusConflict || res.Result != broker.ResultRefused || res.Message == "" {
		t.Errorf("restart while rebooting: HTTP %d %+v %v", code, res, err)
	}
	settle(workspace.Available) // the restart is done
	// Above the guide's caps for users: refused by the broker.
	do(broker.SelfServiceRequest{Action: broker.ActionIncreaseVolume, UserVolumeSizeGib: 101}, http.StatusBadRequest, broker.ResultInvalid, broker.MsgVolumeCap)
	// Within them, but in the first 6 h: hostd's refusal, the guide's text.
	res, code, err = b.SelfService(broker.SelfServiceRequest{Action: broker.ActionIncreaseVolume, UserVolumeSizeGib: 50})
	if err != nil || code != http.StatusConflict || res.Result != broker.ResultRefused || !strings.Contains(res.Message, workspace.MsgVolumeLaunchWait) {
		t.Errorf("volume increase at launch: HTTP %d %+v %v", code, res, err)
	}
	if w := get(); w.Properties.UserVolumeSizeGib != 10 || w.State != workspace.Available {
		t.Errorf("a refused increase changed the WorkSpace: %s user %d", w.State, w.Properties.UserVolumeSizeGib)
	}
	// 6 h on: accepted, and hostd is growing the user volume.
	clk.add(workspace.LaunchWait)
	do(broker.SelfServiceRequest{Action: broker.ActionIncreaseVolume, UserVolumeSizeGib: 50}, http.StatusOK, broker.ResultAccepted, "")
	if w := get(); w.Properties.UserVolumeSizeGib != 50 || w.State != workspace.Updating || w.Modification.Name() != workspace.ModifyingStorage {
		t.Fatalf("after the increase: %s %s user %d", w.State, w.Modification.Name(), w.Properties.UserVolumeSizeGib)
	}
	// While it runs, the user can neither restart nor change the compute type (guide §11).
	res, code, err = b.SelfService(broker.SelfServiceRequest{Action: broker.ActionRestart})
	if err != nil || code != http.StatusConflict || res.Result != broker.ResultRefused || !strings.Contains(res.Message, workspace.MsgWhileModifying) {
		t.Errorf("restart during a volume increase: HTTP %d %+v %v", code, res, err)
	}
	do(broker.SelfServiceRequest{Action: broker.ActionChangeComputeType, ComputeType: "STANDARD"}, http.StatusForbidden, broker.ResultForbidden,
		broker.MsgSelfServiceOff("Change compute type"))
	if _, err := admin.ModifySelfservicePermissions(ctx, &awsws.ModifySelfservicePermissionsInput{ResourceId: aws.String("d-0000000007"),
		SelfservicePermissions: &types.SelfservicePermissions{ChangeComputeType: types.ReconnectEnumEnabled}}); err != nil {
		t.Fatal(err)
	}
	res, code, err = b.SelfService(broker.SelfServiceRequest{Action: broker.ActionChangeComputeType, ComputeType: "STANDARD"})
	if err != nil || code != http.StatusConflict || res.Result != broker.ResultRefused || !strings.Contains(res.Message, "MODIFYING_STORAGE") {
		t.Errorf("compute change during a volume increase: HTTP %d %+v %v", code, res, err)
	}
	settle(workspace.Available) // the volume has grown
	do(broker.SelfServiceRequest{Action: broker.ActionChangeComputeType, ComputeType: "STANDARD"}, http.StatusOK, broker.ResultAccepted, broker.MsgCompute)
	if w := get(); w.Properties.ComputeTypeName != "STANDARD" || w.State != workspace.Updating || w.Modification.Name() != workspace.ModifyingCompute {
		t.Errorf("after the compute change: %s %s %s", w.State, w.Modification.Name(), w.Properties.ComputeTypeName)
	}
	settle(workspace.Available)
	// A smaller one right after is the guide's once-in-30-days budget: accepted once.
	do(broker.SelfServiceRequest{Action: broker.ActionChangeComputeType, ComputeType: "VALUE"}, http.StatusOK, broker.ResultAccepted, broker.MsgCompute)
	settle(workspace.Available)
	clk.add(workspace.UpsizeInterval)
	do(broker.SelfServiceRequest{Action: broker.ActionChangeComputeType, ComputeType: "STANDARD"}, http.StatusOK, broker.ResultAccepted, broker.MsgCompute)
	settle(workspace.Available)
	res, code, err = b.SelfService(broker.SelfServiceRequest{Action: broker.ActionChangeComputeType, ComputeType: "VALUE"})
	if err != nil || code != http.StatusConflict || res.Result != broker.ResultRefused || !strings.Contains(res.Message, workspace.MsgComputeRate) {
		t.Errorf("a second smaller bundle within 30 days: HTTP %d %+v %v", code, res, err)
	}
	// Rebuild, once allowed: refused while the user volume has no backup, then accepted by
	// hostd, which restores the latest one.
	settle(workspace.Available) // as if the controller had finished the compute change
	if _, err := admin.ModifySelfservicePermissions(ctx, &awsws.ModifySelfservicePermissionsInput{ResourceId: aws.String("d-0000000007"),
		SelfservicePermissions: &types.SelfservicePermissions{RebuildWorkspace: types.ReconnectEnumEnabled}}); err != nil {
		t.Fatal(err)
	}
	do(broker.SelfServiceRequest{Action: broker.ActionRebuild, Confirm: true}, http.StatusConflict, broker.ResultRefused, broker.MsgRebuildTooSoon)
	if s := get().State; s != workspace.Available {
		t.Errorf("state %s after a refused rebuild", s)
	}
	backup := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	if err := st.Update(func(tx store.Tx) error { // as if the controller had taken a pair
		return store.PutJSON(tx, store.Snapshots, id, workspace.Snapshots{{ID: workspace.SnapshotID(backup), Time: backup,
			Root: filepath.Join(dir, "root.qcow2"), User: filepath.Join(dir, "user.qcow2")}})
	}); err != nil {
		t.Fatal(err)
	}
	do(broker.SelfServiceRequest{Action: broker.ActionRebuild, Confirm: true}, http.StatusOK, broker.ResultAccepted, broker.MsgRebuilding(backup))
	if s := get().State; s != workspace.Rebuilding {
		t.Errorf("state %s after an accepted rebuild", s)
	}
}
