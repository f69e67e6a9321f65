package e2e

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/workspaces"
	"github.com/aws/aws-sdk-go-v2/service/workspaces/types"

	"deskhost/hostd/agent"
	"deskhost/hostd/store"
	"deskhost/hostd/workspace"
)

// TestKilledHostdConvergesOnResize kills hostd with SIGKILL right after it accepted a user
// volume growth (ModifyWorkspaceProperties through AWS's SDK), and again once the volume
// file has grown but before the WorkSpace is AVAILABLE (the guest's filesystem not yet
// grown, if the kill lands in that window). After each restart the WorkSpace must come
// back AVAILABLE with no modification in progress, its domain running with two volumes,
// the volume file at the new size, the guest's /home grown to fill it, and a file written
// before the crashes intact. The guide's 6 h waits are met by moving the record's launch
// and last growth back while hostd is down (the real binary has no injected clock).
func TestKilledHostdConvergesOnResize(t *testing.T) {
	h := newHostWith(t, hostOptions{})
	h.start()
	id := h.create("dave")[0]
	h.waitState(id, types.WorkspaceStateAvailable, boot)
	marker := "/home/dave-kept.txt"
	h.agentWrite(id, marker, "written before the crashes\n")
	h.kill()
	h.backdate(id)
	h.start()
	h.waitState(id, types.WorkspaceStateAvailable, boot)

	for _, c := range []struct {
		gib int32
		at  string
	}{{50, "accepted"}, {100, "volume file grown"}} {
		if _, err := h.client().ModifyWorkspaceProperties(context.Background(), &workspaces.ModifyWorkspacePropertiesInput{
			WorkspaceId: aws.String(id), WorkspaceProperties: &types.WorkspaceProperties{UserVolumeSizeGib: aws.Int32(c.gib)}}); err != nil {
			t.Fatalf("user volume to %d GB: %v", c.gib, err)
		}
		if c.at == "volume file grown" {
			deadline := time.Now().Add(time.Minute)
			for h.userVolumeGiB(id) < uint64(c.gib) && time.Now().Before(deadline) {
				time.Sleep(2 * time.Millisecond)
			}
		}
		t.Logf("killing hostd while growing the user volume to %d GB (%s): %s %+v", c.gib, c.at, h.describe(id).State, h.describe(id).ModificationStates)
		h.kill()
		h.start()
		h.waitState(id, types.WorkspaceStateAvailable, boot)
		w := h.describe(id)
		if len(w.ModificationStates) != 0 || aws.ToInt32(w.WorkspaceProperties.UserVolumeSizeGib) != c.gib {
			t.Fatalf("after the crash: %+v user %d", w.ModificationStates, aws.ToInt32(w.WorkspaceProperties.UserVolumeSizeGib))
		}
		if st, vols := h.libvirtView(id); !st.Active() || vols != 2 {
			t.Fatalf("after the crash: domain %s, %d volumes", st, vols)
		}
		if got := h.userVolumeGiB(id); got != uint64(c.gib) {
			t.Errorf("user volume file %d GiB, want %d", got, c.gib)
		}
		var home uint64
		waitFor(t, "/home grown", 2*time.Minute, func() bool {
			h.withAgent(id, func(ctx context.Context, a *agent.Client) error {
				st, err := a.Status(ctx)
				if err == nil {
					home = st.HomeFSBytes
				}
				return err
			})
			return home >= uint64(c.gib)<<30*95/100
		})
		if got := h.agentRead(id, marker); got != "written before the crashes\n" {
			t.Errorf("the marker reads %q", got)
		}
		h.kill()
		h.backdate(id) // the next growth's 6 h
		h.start()
		h.waitState(id, types.WorkspaceStateAvailable, boot)
	}
}

// backdate moves id's launch and last volume growth 7 h back in hostd's store, hostd
// being down.
func (h *host) backdate(id string) {
	h.t.Helper()
	st, err := store.OpenBolt(filepath.Join(h.dir, "store.db"))
	if err != nil {
		h.t.Fatal(err)
	}
	defer st.Close()
	err = st.Update(func(tx store.Tx) error {
		w, err := store.GetJSON[workspace.Workspace](tx, store.Workspaces, id)
		if err != nil {
			return err
		}
		back := -(workspace.LaunchWait + time.Hour)
		w.Created = w.Created.Add(back)
		if !w.Changes.UserGrown.IsZero() {
			w.Changes.UserGrown = w.Changes.UserGrown.Add(back)
		}
		return store.PutJSON(tx, store.Workspaces, id, w)
	})
	if err != nil {
		h.t.Fatal(err)
	}
}

func (h *host) userVolumeGiB(id string) uint64 {
	h.t.Helper()
	vols, err := h.conn.Volumes(h.pool, id+"-user")
	if err != nil || len(vols) != 1 {
		h.t.Fatalf("user volume of %s: %v %+v", id, err, vols)
	}
	return vols[0].CapacityGiB
}
