package controller

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"deskhost/hostd/agent"
	"deskhost/hostd/keystore"
	"deskhost/hostd/service"
	"deskhost/hostd/store"
	"deskhost/hostd/workspace"
	"deskhost/internal/catalog"
	"deskhost/internal/hostdclient"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/workspaces"
	"github.com/aws/aws-sdk-go-v2/service/workspaces/types"
)

// TestEncryptedVolumes: on real libvirt + qemu, an encrypted WorkSpace (root and user
// volumes qcow2 with LUKS, through libvirt secrets) beside a plain one, both made through
// AWS's SDK with a key of hostd's key store. A marker written in each guest onto both
// volumes is found in the plain WorkSpace's volume files and in none of the encrypted
// one's (nor in its snapshot); the encrypted WorkSpace starts again and reads the marker
// back. With its key disabled, reboot, rebuild, restore and start are refused with the
// guide's words and change nothing, and a boot the controller owes fails saying why; with
// the key enabled again it starts. Restored, rebuilt, then migrated to a bundle with a
// larger user volume, it keeps its marker and its volumes stay encrypted. Terminating it
// removes its secrets.
func TestEncryptedVolumes(t *testing.T) {
	clk := &offsetClock{}
	h := newHarness(t, func(c *Config) { c.Now = clk.Now }, nil)
	hc := h.apiClient(t)
	cl := hc.Client
	ctx := context.Background()

	key, err := hc.CreateKey(ctx, &hostdclient.CreateKeyInput{Alias: "alias/enc-test", Description: "TestEncryptedVolumes"})
	if err != nil {
		t.Fatal(err)
	}
	if !key.Key.Enabled || key.Key.KeyId == "" {
		t.Fatalf("new key: %+v", key.Key)
	}

	autoStop := &types.WorkspaceProperties{RunningMode: types.RunningModeAutoStop}
	start := time.Now()
	out, err := cl.CreateWorkspaces(ctx, &workspaces.CreateWorkspacesInput{Workspaces: []types.WorkspaceRequest{
		{DirectoryId: aws.String(testDirectory), UserName: aws.String("alice"), BundleId: aws.String(testBundle), WorkspaceProperties: autoStop,
			RootVolumeEncryptionEnabled: aws.Bool(true), UserVolumeEncryptionEnabled: aws.Bool(true), VolumeEncryptionKey: aws.String("alias/enc-test")},
		{DirectoryId: aws.String(testDirectory), UserName: aws.String("bob"), BundleId: aws.String(testBundle), WorkspaceProperties: autoStop},
	}})
	if err != nil || len(out.FailedRequests) != 0 || len(out.PendingRequests) != 2 {
		t.Fatalf("create: %v %+v", err, out)
	}
	enc, plain := aws.ToString(out.PendingRequests[0].WorkspaceId), aws.ToString(out.PendingRequests[1].WorkspaceId)
	took := map[string]time.Duration{}
	for len(took) < 2 {
		for _, id := range []string{enc, plain} {
			if _, ok := took[id]; ok {
				continue
			}
			switch w := h.get(id); w.State {
			case workspace.Available:
				took[id] = time.Since(start)
			case workspace.Error:
				t.Fatalf("%s went to ERROR: %s: %s%s", id, w.ErrorCode, w.ErrorMessage, h.serialTail(id))
			}
		}
		if time.Since(start) > 10*time.Minute {
			t.Fatalf("not both AVAILABLE within 10 min: %v", took)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("figure: created together, encrypted → AVAILABLE %s, plain → AVAILABLE %s (%.2f×)",
		took[enc].Round(time.Millisecond), took[plain].Round(time.Millisecond), took[enc].Seconds()/took[plain].Seconds())

	d, err := cl.DescribeWorkspaces(ctx, &workspaces.DescribeWorkspacesInput{WorkspaceIds: []string{enc, plain}})
	if err != nil || len(d.Workspaces) != 2 {
		t.Fatal(err, d)
	}
	for _, w := range d.Workspaces {
		want := aws.ToString(w.WorkspaceId) == enc
		if aws.ToBool(w.RootVolumeEncryptionEnabled) != want || aws.ToBool(w.UserVolumeEncryptionEnabled) != want ||
			(aws.ToString(w.VolumeEncryptionKey) == "alias/enc-test") != want {
			t.Errorf("DescribeWorkspaces %s: root %v user %v key %q", aws.ToString(w.WorkspaceId),
				aws.ToBool(w.RootVolumeEncryptionEnabled), aws.ToBool(w.UserVolumeEncryptionEnabled), aws.ToString(w.VolumeEncryptionKey))
		}
	}
	for _, id := range []string{enc, plain} {
		for name, v := range h.volumes(id) {
			info := qemuImgInfo(t, v.Path)
			if v.Encrypted != (id == enc) || strings.Contains(info, "encrypted: yes") != (id == enc) {
				t.Errorf("volume %s: libvirt says encrypted=%v, qemu-img:\n%s", name, v.Encrypted, info)
			}
		}
	}

	// The marker, random so that nothing else on the host holds it.
	rb := make([]byte, 12)
	rand.Read(rb)
	marker := "deskhost-plaintext-marker-" + hex.EncodeToString(rb)
	data := strings.Repeat(marker+"\n", 100)
	const userFile, rootFile = "/home/enc-marker", "/sysroot/enc-marker"
	for _, id := range []string{enc, plain} {
		a := h.agentFor(id)
		wctx, cancel := context.WithTimeout(ctx, time.Minute)
		for _, p := range []string{userFile, rootFile} {
			if err := a.WriteFile(wctx, p, []byte(data)); err != nil { // written and fsynced
				t.Fatalf("%s: write %s: %v", id, p, err)
			}
		}
		cancel()
		a.Close()
	}
	if _, err := cl.StopWorkspaces(ctx, &workspaces.StopWorkspacesInput{StopWorkspaceRequests: []types.StopRequest{
		{WorkspaceId: aws.String(enc)}, {WorkspaceId: aws.String(plain)}}}); err != nil {
		t.Fatal(err)
	}
	h.waitState(enc, workspace.Stopped, 3*time.Minute)
	h.waitState(plain, workspace.Stopped, 3*time.Minute)
	if _, err := os.Stat(h.ctl.savedState(enc)); !os.IsNotExist(err) {
		t.Errorf("the encrypted WorkSpace's RAM was saved to disk (%v): it must stop cold", err)
	}
	// The plain WorkSpace's files hold the marker (the control: the scan would see it); the
	// encrypted one's hold it nowhere.
	vols := func(id string) []string { return h.ctl.volumePaths(id) }
	for i, p := range vols(plain) {
		if !fileHas(t, p, marker) {
			t.Fatalf("control: the plain WorkSpace's %s volume %s does not hold the marker: the scan proves nothing", []string{"root", "user"}[i], p)
		}
	}
	for _, p := range vols(enc) {
		if fileHas(t, p, marker) {
			t.Fatalf("the encrypted volume %s holds the marker in plaintext", p)
		}
	}
	t.Logf("marker %q: in both plain volume files, in neither encrypted one", marker)

	// It starts again and reads its marker back.
	if _, err := cl.StartWorkspaces(ctx, &workspaces.StartWorkspacesInput{StartWorkspaceRequests: []types.StartRequest{{WorkspaceId: aws.String(enc)}}}); err != nil {
		t.Fatal(err)
	}
	h.waitState(enc, workspace.Available, 5*time.Minute)
	h.readBack(enc, userFile, data)
	h.readBack(enc, rootFile, data)

	// A snapshot of it (12 h on) copies the encrypted files as they are.
	clk.Advance(workspace.SnapshotInterval + time.Minute)
	var snap workspace.Snapshot
	for deadline := time.Now().Add(3 * time.Minute); ; {
		snaps, err := Snapshots(h.store, enc)
		if err != nil {
			t.Fatal(err)
		}
		if s, ok := snaps.Latest(); ok {
			snap = s
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no snapshot of the encrypted WorkSpace within 3 min of the clock passing 12 h")
		}
		time.Sleep(500 * time.Millisecond)
	}
	for _, p := range []string{snap.Root, snap.User} {
		if !strings.Contains(qemuImgInfo(t, p), "encrypted: yes") || fileHas(t, p, marker) {
			t.Fatalf("snapshot file %s is not encrypted, or holds the marker", p)
		}
	}

	// Key disabled: every operation that would boot it is refused, and nothing changes.
	if _, err := hc.DisableKey(ctx, &hostdclient.KeyIDInput{KeyId: key.Key.Arn}); err != nil {
		t.Fatal(err)
	}
	refused := func(op string, failed []types.FailedWorkspaceChangeRequest, err error) {
		t.Helper()
		if err != nil || len(failed) != 1 || aws.ToString(failed[0].ErrorCode) != "ResourceUnavailableException" ||
			!strings.Contains(aws.ToString(failed[0].ErrorMessage), keystore.MustBeEnabled) {
			t.Fatalf("%s with the key disabled: %v %+v, want ResourceUnavailableException with the guide's words", op, err, failed)
		}
	}
	before := h.get(enc)
	rbo, err := cl.RebootWorkspaces(ctx, &workspaces.RebootWorkspacesInput{RebootWorkspaceRequests: []types.RebootRequest{{WorkspaceId: aws.String(enc)}}})
	refused("reboot", rbo.FailedRequests, err)
	rbu, err := cl.RebuildWorkspaces(ctx, &workspaces.RebuildWorkspacesInput{RebuildWorkspaceRequests: []types.RebuildRequest{{WorkspaceId: aws.String(enc)}}})
	refused("rebuild", rbu.FailedRequests, err)
	if _, err := cl.RestoreWorkspace(ctx, &workspaces.RestoreWorkspaceInput{WorkspaceId: aws.String(enc)}); apiCode(err) != "ResourceUnavailableException" {
		t.Fatalf("restore with the key disabled: %v", err)
	}
	if after := h.get(enc); after.State != workspace.Available || after.StateSince != before.StateSince || h.domainState(enc).String() != "running" {
		t.Fatalf("refused operations changed the WorkSpace: %s since %s (was %s since %s)", after.State, after.StateSince, before.State, before.StateSince)
	}
	// Stopping needs no key; starting does.
	if _, err := cl.StopWorkspaces(ctx, &workspaces.StopWorkspacesInput{StopWorkspaceRequests: []types.StopRequest{{WorkspaceId: aws.String(enc)}}}); err != nil {
		t.Fatal(err)
	}
	h.waitState(enc, workspace.Stopped, 3*time.Minute)
	so, err := cl.StartWorkspaces(ctx, &workspaces.StartWorkspacesInput{StartWorkspaceRequests: []types.StartRequest{{WorkspaceId: aws.String(enc)}}})
	refused("start", so.FailedRequests, err)
	if got := h.get(enc).State; got != workspace.Stopped {
		t.Fatalf("a refused start left the WorkSpace %s", got)
	}
	// A boot the controller owes (a start accepted before the key was disabled) does not
	// happen, and the record says why.
	if err := h.store.Update(func(tx store.Tx) error {
		w, err := store.GetJSON[workspace.Workspace](tx, store.Workspaces, enc)
		if err != nil {
			return err
		}
		w.SetState(workspace.Starting, clk.Now())
		return store.PutJSON(tx, store.Workspaces, enc, w)
	}); err != nil {
		t.Fatal(err)
	}
	h.ctl.Wake(enc)
	h.waitState(enc, workspace.Error, 2*time.Minute)
	if w := h.get(enc); w.ErrorCode != KeyUnavailable || !strings.Contains(w.ErrorMessage, "disabled") {
		t.Fatalf("boot with the key disabled: %s: %s", w.ErrorCode, w.ErrorMessage)
	}
	if s := h.domainState(enc); s.Active() {
		t.Fatalf("the guest runs (%s) with its key disabled", s)
	}

	// Enabled again, it starts (from ERROR) and still reads its marker.
	if _, err := hc.EnableKey(ctx, &hostdclient.KeyIDInput{KeyId: "alias/enc-test"}); err != nil {
		t.Fatal(err)
	}
	so, err = cl.StartWorkspaces(ctx, &workspaces.StartWorkspacesInput{StartWorkspaceRequests: []types.StartRequest{{WorkspaceId: aws.String(enc)}}})
	if err != nil || len(so.FailedRequests) != 0 {
		t.Fatalf("start with the key enabled again: %v %+v", err, so)
	}
	h.waitState(enc, workspace.Available, 5*time.Minute)
	h.readBack(enc, userFile, data)

	// Restore and rebuild work on encrypted volumes: a marker written after the snapshot
	// is gone after the restore, the snapshot's is back; after the rebuild the root volume
	// is the image's again, the user volume the snapshot's, and both still encrypted.
	const later = "/home/enc-later"
	a := h.agentFor(enc)
	wctx, wcancel := context.WithTimeout(ctx, time.Minute)
	if err := a.WriteFile(wctx, later, []byte("B")); err != nil {
		t.Fatal(err)
	}
	wcancel()
	a.Close()
	if _, err := cl.RestoreWorkspace(ctx, &workspaces.RestoreWorkspaceInput{WorkspaceId: aws.String(enc)}); err != nil {
		t.Fatal(err)
	}
	if seen := h.waitState(enc, workspace.Available, 5*time.Minute); !slices.Contains(seen, workspace.Restoring) {
		t.Errorf("went through %v, not RESTORING", seen)
	}
	h.readBack(enc, userFile, data)
	h.readBack(enc, rootFile, data)
	if h.guestHas(enc, later) {
		t.Error("after the restore the marker written after the snapshot is still there")
	}
	rbu, err = cl.RebuildWorkspaces(ctx, &workspaces.RebuildWorkspacesInput{RebuildWorkspaceRequests: []types.RebuildRequest{{WorkspaceId: aws.String(enc)}}})
	if err != nil || len(rbu.FailedRequests) != 0 {
		t.Fatalf("rebuild: %v %+v", err, rbu)
	}
	if seen := h.waitState(enc, workspace.Available, 5*time.Minute); !slices.Contains(seen, workspace.Rebuilding) {
		t.Errorf("went through %v, not REBUILDING", seen)
	}
	h.readBack(enc, userFile, data)
	if h.guestHas(enc, rootFile) {
		t.Error("after the rebuild the root volume still holds the marker: it is not the image's")
	}
	for name, v := range h.volumes(enc) {
		if !v.Encrypted || !strings.Contains(qemuImgInfo(t, v.Path), "encrypted: yes") {
			t.Errorf("after restore and rebuild, volume %s is not encrypted", name)
		}
	}

	// Migrated to a bundle with a 50 GiB user volume: the target carries the key, its user
	// volume is the source's copied under the same data key (marker kept, grown, its
	// filesystem too), its root volume is new and encrypted, and no file holds the marker.
	b50, err := h.svc.CreateWorkspaceBundle(ctx, service.BundleRequest{Name: "Value-50-enc", ImageID: testImage, ComputeType: catalog.ComputeValue, RootGiB: 80, UserGiB: 50})
	if err != nil {
		t.Fatal(err)
	}
	migrateStart := time.Now()
	m, err := cl.MigrateWorkspace(ctx, &workspaces.MigrateWorkspaceInput{SourceWorkspaceId: aws.String(enc), BundleId: aws.String(b50.ID)})
	if err != nil {
		t.Fatalf("migrate the encrypted WorkSpace: %v", err)
	}
	moved := aws.ToString(m.TargetWorkspaceId)
	h.waitState(moved, workspace.Available, 8*time.Minute)
	t.Logf("figure: encrypted migrate → AVAILABLE %s", time.Since(migrateStart).Round(time.Millisecond))
	h.waitState(enc, workspace.Terminated, 3*time.Minute)
	h.readBack(moved, userFile, data)
	if h.guestHas(moved, rootFile) {
		t.Error("after the migration the root volume holds the source's root marker: it is not the new bundle's image")
	}
	h.waitHomeFS(moved, 50)
	if tw := h.get(moved); tw.Encryption.KeyID != key.Key.KeyId || !tw.Encryption.Root || !tw.Encryption.User {
		t.Errorf("the target's encryption %+v", tw.Encryption)
	}
	for name, v := range h.volumes(moved) {
		if !v.Encrypted || !strings.Contains(qemuImgInfo(t, v.Path), "encrypted: yes") || fileHas(t, v.Path, marker) {
			t.Errorf("after the migration, volume %s is not encrypted or holds the marker", name)
		}
	}
	for _, p := range vols(enc) {
		if ok, err := h.conn.HasVolumeSecret(p); err != nil || ok {
			t.Errorf("after the migration the source's secret of %s is still defined (%v)", p, err)
		}
	}

	ks, err := hc.DescribeKeys(ctx, &hostdclient.DescribeKeysInput{KeyId: key.Key.KeyId})
	if err != nil || len(ks.Keys) != 1 || ks.Keys[0].Workspaces != 1 || ks.Keys[0].WorkspaceLimit != keystore.MaxWorkspacesPerKey {
		t.Fatalf("DescribeKeys: %v %+v", err, ks)
	}

	// Terminated: its volumes and their secrets go.
	if _, err := cl.TerminateWorkspaces(ctx, &workspaces.TerminateWorkspacesInput{TerminateWorkspaceRequests: []types.TerminateRequest{{WorkspaceId: aws.String(moved)}}}); err != nil {
		t.Fatal(err)
	}
	h.waitState(moved, workspace.Terminated, 3*time.Minute)
	for _, p := range vols(moved) {
		if ok, err := h.conn.HasVolumeSecret(p); err != nil || ok {
			t.Errorf("after terminate the secret of %s is still defined (%v)", p, err)
		}
	}
}

// agentFor dials id's guest agent, waiting while hostd's health check has its one channel.
func (h *harness) agentFor(id string) *agent.Client {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		a, err := agent.Dial(ctx, h.ctl.AgentSocket(id))
		if err == nil {
			return a
		}
		if ctx.Err() != nil {
			h.t.Fatalf("agent of %s: %v", id, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (h *harness) readBack(id, p, want string) {
	h.t.Helper()
	a := h.agentFor(id)
	defer a.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := a.ReadFile(ctx, p)
	if err != nil || string(b) != want {
		h.t.Fatalf("%s: read back %s: %v (%d bytes, want %d)", id, p, err, len(b), len(want))
	}
}

// guestHas reports whether p exists in id's guest.
func (h *harness) guestHas(id, p string) bool {
	h.t.Helper()
	a := h.agentFor(id)
	defer a.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := a.ReadFile(ctx, p)
	var ae *agent.Error
	if errors.As(err, &ae) && strings.Contains(ae.Msg, "no such file") {
		return false
	}
	if err != nil {
		h.t.Fatalf("%s: read %s: %v", id, p, err)
	}
	return true
}

func qemuImgInfo(t *testing.T, p string) string {
	t.Helper()
	b, err := exec.Command("qemu-img", "info", "-U", p).CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-img info %s: %v: %s", p, err, b)
	}
	return string(b)
}

// fileHas reports whether the file at p holds s anywhere.
func fileHas(t *testing.T, p, s string) bool {
	t.Helper()
	b, err := os.ReadFile(filepath.Clean(p))
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Contains(b, []byte(s))
}
