package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/workspaces"
	"github.com/aws/aws-sdk-go-v2/service/workspaces/types"

	"deskhost/hostd/agent"
	"deskhost/hostd/virt"
	"deskhost/internal/runpaths"
)

// snapshotEvery is the test hosts' snapshot interval (the guide's is 12 h), short enough
// that pairs are cut while the test runs.
const snapshotEvery = 20 * time.Second

// TestKilledHostdConvergesOnDataLifecycle kills hostd with SIGKILL in the middle of a
// snapshot (guest frozen and paused, copies half-written), right after a rebuild and a
// restore were accepted, and while each has the guest powered off; after every restart the
// WorkSpace must come back AVAILABLE with its domain running (not left paused), two volumes,
// its guest's filesystems writable (thawed), its recorded snapshots intact on disk, and no
// file of an unfinished snapshot left behind.
func TestKilledHostdConvergesOnDataLifecycle(t *testing.T) {
	h := newHostWith(t, hostOptions{hostd: "  snapshotInterval: " + snapshotEvery.String() + "\n"})
	h.start()
	id := h.create("carol")[0]
	h.waitState(id, types.WorkspaceStateAvailable, boot)

	// The first pair (snapshotEvery after the creation).
	waitFor(t, "a first snapshot pair", 3*snapshotEvery, func() bool { return len(h.snapshots(id)) > 0 })
	h.checkConverged(id, 1)
	marker := "/home/carol/kept-" + time.Now().Format("150405") + ".txt"
	h.agentWrite(id, marker, "written before the crashes\n")

	// 1. Kill mid-snapshot: the moment the guest is paused or a copy is on disk.
	before := len(h.snapshots(id))
	dir := filepath.Join(h.dir, "snapshots", id)
	deadline := time.Now().Add(3 * snapshotEvery)
	for {
		st, _ := h.conn.State(id)
		if st == virt.Paused || hasTemp(dir) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("never saw a snapshot in progress within %s", 3*snapshotEvery)
		}
		time.Sleep(5 * time.Millisecond)
	}
	st, _ := h.conn.State(id)
	t.Logf("killing hostd mid-snapshot (domain %s, copy on disk: %v)", st, hasTemp(dir))
	h.kill()
	h.start()
	h.checkConverged(id, before)
	h.agentWrite(id, "/home/carol/after-snapshot-crash.txt", "the guest's filesystems thawed\n")
	// The schedule goes on: a new pair after the crash.
	latest := h.latestSnapshot(id)
	waitFor(t, "a snapshot pair after the crash", 3*snapshotEvery, func() bool { return h.latestSnapshot(id).After(latest) })
	h.checkConverged(id, 1)

	// 2. and 3.: rebuild, then restore, each killed right after the API accepted it and
	// again while the guest is powered off.
	for _, op := range []string{"rebuild", "restore"} {
		for _, at := range []string{"accepted", "powered off"} {
			n := len(h.snapshots(id))
			h.waitState(id, types.WorkspaceStateAvailable, boot)
			h.lifecycleOp(op, id)
			if at == "powered off" {
				// Between the power-off and the boot on the new volumes: poll fast, the
				// window is the scrub and the copy.
				deadline := time.Now().Add(time.Minute)
				for st, _ := h.conn.State(id); st.Active(); st, _ = h.conn.State(id) {
					if time.Now().After(deadline) {
						t.Fatalf("%s: the guest was never powered off", op)
					}
					time.Sleep(2 * time.Millisecond)
				}
			}
			t.Logf("killing hostd during %s (%s), state %s", op, at, h.describe(id).State)
			h.kill()
			h.start()
			h.waitState(id, types.WorkspaceStateAvailable, boot)
			h.checkConverged(id, n)
			if got := h.agentRead(id, marker); got != "written before the crashes\n" {
				t.Errorf("after %s killed while %s: the user volume's marker reads %q", op, at, got)
			}
		}
	}
}

// lifecycleOp asks hostd to rebuild or restore id.
func (h *host) lifecycleOp(op, id string) {
	h.t.Helper()
	ctx := context.Background()
	switch op {
	case "rebuild":
		out, err := h.client().RebuildWorkspaces(ctx, &workspaces.RebuildWorkspacesInput{
			RebuildWorkspaceRequests: []types.RebuildRequest{{WorkspaceId: aws.String(id)}}})
		if err != nil || len(out.FailedRequests) > 0 {
			h.t.Fatalf("rebuild %s: %v %+v", id, err, out)
		}
	case "restore":
		if _, err := h.client().RestoreWorkspace(ctx, &workspaces.RestoreWorkspaceInput{WorkspaceId: aws.String(id)}); err != nil {
			h.t.Fatalf("restore %s: %v", id, err)
		}
	}
}

// snapshots returns id's recorded pairs' times, as DescribeWorkspaceSnapshots answers.
func (h *host) snapshots(id string) []time.Time {
	h.t.Helper()
	out, err := h.client().DescribeWorkspaceSnapshots(context.Background(), &workspaces.DescribeWorkspaceSnapshotsInput{WorkspaceId: aws.String(id)})
	if err != nil {
		h.t.Fatalf("describe snapshots of %s: %v", id, err)
	}
	if len(out.RebuildSnapshots) != len(out.RestoreSnapshots) {
		h.t.Errorf("%d rebuild snapshots but %d restore snapshots: the pairs are one list", len(out.RebuildSnapshots), len(out.RestoreSnapshots))
	}
	var ts []time.Time
	for _, s := range out.RestoreSnapshots {
		ts = append(ts, aws.ToTime(s.SnapshotTime))
	}
	return ts
}

func (h *host) latestSnapshot(id string) time.Time {
	var last time.Time
	for _, t := range h.snapshots(id) {
		if t.After(last) {
			last = t
		}
	}
	return last
}

// checkConverged waits until id runs unpaused with two volumes and at least min recorded
// pairs, whose files (and only those, no unfinished copy) are on disk.
func (h *host) checkConverged(id string, min int) {
	h.t.Helper()
	dir := filepath.Join(h.dir, "snapshots", id)
	deadline := time.Now().Add(2 * time.Minute)
	for {
		st, vols := h.libvirtView(id)
		snaps := h.snapshots(id)
		ents, _ := os.ReadDir(dir)
		var why string
		switch {
		case st != virt.Running:
			why = "domain " + st.String()
		case vols != 2:
			why = fmt.Sprintf("%d volumes", vols)
		case len(snaps) < min:
			why = fmt.Sprintf("%d snapshot pairs, want at least %d", len(snaps), min)
		case hasTemp(dir) || len(ents) != 2*len(snaps):
			why = fmt.Sprintf("%d snapshot files for %d pairs", len(ents), len(snaps))
		default:
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("%s did not converge within 2m: %s", id, why)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// hasTemp reports whether dir holds a snapshot copy not yet renamed into place.
func hasTemp(dir string) bool {
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".tmp") {
			return true
		}
	}
	return false
}

// agentWrite writes a file in id's guest through its agent (a frozen filesystem blocks it
// until the guest thaws).
func (h *host) agentWrite(id, path, data string) {
	h.t.Helper()
	h.withAgent(id, func(ctx context.Context, a *agent.Client) error { return a.WriteFile(ctx, path, []byte(data)) })
}

func (h *host) agentRead(id, path string) string {
	h.t.Helper()
	var got []byte
	h.withAgent(id, func(ctx context.Context, a *agent.Client) (err error) { got, err = a.ReadFile(ctx, path); return err })
	return string(got)
}

// withAgent retries fn on a fresh connection to id's agent for up to a minute: hostd's own
// health checks share the channel, which serves one client at a time.
func (h *host) withAgent(id string, fn func(context.Context, *agent.Client) error) {
	h.t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		a, err := agent.Dial(ctx, runpaths.AgentSocket(h.dir, id))
		if err == nil {
			err = fn(ctx, a)
			a.Close()
		}
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("guest agent of %s: %v", id, err)
		}
		time.Sleep(time.Second)
	}
}
