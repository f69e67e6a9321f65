package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/workspaces"
	"github.com/aws/aws-sdk-go-v2/service/workspaces/types"

	"deskhost/hostd/virt"
	"deskhost/internal/hostdclient"
)

// TestKilledHostdConvergesOnImages kills hostd with SIGKILL during an image capture (right
// after CreateWorkspaceImage was accepted, and while the copy's sanitising boot runs) and
// during an import (while its test boot runs). Both start again from their first step
// after the restart: the image must end AVAILABLE, the captured WorkSpace be AVAILABLE
// again with its domain running, and no domain or volume of a sanitising or test boot be
// left behind.
func TestKilledHostdConvergesOnImages(t *testing.T) {
	h := newHost(t)
	h.start()
	id := h.create("dave")[0]
	h.waitState(id, types.WorkspaceStateAvailable, boot)
	ctx := context.Background()

	for i, at := range []string{"accepted", "sanitising boot"} {
		out, err := h.client().CreateWorkspaceImage(ctx, &workspaces.CreateWorkspaceImageInput{
			WorkspaceId: aws.String(id), Name: aws.String(fmt.Sprintf("crash-capture-%d", i)), Description: aws.String("captured across a crash")})
		if err != nil {
			t.Fatalf("capture: %v", err)
		}
		img := aws.ToString(out.ImageId)
		if at == "sanitising boot" {
			h.waitDomainRunning(img, 2*time.Minute)
		}
		t.Logf("killing hostd during a capture (%s): WorkSpace %s", at, h.describe(id).State)
		h.kill()
		h.start()
		h.waitImage(img, 5*time.Minute)
		h.waitState(id, types.WorkspaceStateAvailable, boot)
		h.checkNoIsolatedBoots(img, id)
	}

	var imp hostdclient.ImportImageOutput
	if err := h.client().Call(ctx, hostdclient.DeskhostTarget+"ImportImage", &hostdclient.ImportImageInput{
		Source: h.image, IngestionProcess: "BYOL_REGULAR", ImageName: "crash-import", ImageDescription: "imported across a crash"}, &imp); err != nil {
		t.Fatalf("import: %v", err)
	}
	h.waitDomainRunning(imp.ImageId, 2*time.Minute)
	t.Log("killing hostd during an import's test boot")
	h.kill()
	h.start()
	h.waitImage(imp.ImageId, 5*time.Minute)
	h.checkNoIsolatedBoots(imp.ImageId, id)
}

// waitDomainRunning waits until libvirt runs a domain named name.
func (h *host) waitDomainRunning(name string, within time.Duration) {
	h.t.Helper()
	deadline := time.Now().Add(within)
	for {
		if st, err := h.conn.State(name); err == nil && st.Active() {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("no domain %s ran within %s", name, within)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitImage waits until image id is AVAILABLE, as DescribeWorkspaceImages says.
func (h *host) waitImage(id string, within time.Duration) {
	h.t.Helper()
	deadline := time.Now().Add(within)
	for {
		out, err := h.client().DescribeWorkspaceImages(context.Background(), &workspaces.DescribeWorkspaceImagesInput{ImageIds: []string{id}})
		if err != nil || len(out.Images) != 1 {
			h.t.Fatalf("describe image %s: %v %+v", id, err, out)
		}
		img := out.Images[0]
		switch img.State {
		case types.WorkspaceImageStateAvailable:
			return
		case types.WorkspaceImageStateError:
			h.t.Fatalf("image %s: ERROR %s: %s", id, aws.ToString(img.ErrorCode), aws.ToString(img.ErrorMessage))
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("image %s is %s after %s", id, img.State, within)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// checkNoIsolatedBoots fails if a domain or volume named for image is left, or any domain
// but the WorkSpace ws's and volumes but its two.
func (h *host) checkNoIsolatedBoots(image, ws string) {
	h.t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		var left []string
		if st, err := h.conn.State(image); err == nil && st != virt.Missing {
			left = append(left, "domain "+image+" "+st.String())
		}
		vols, err := h.conn.Volumes(h.pool, "")
		if err != nil {
			h.t.Fatal(err)
		}
		for _, v := range vols {
			if !strings.HasPrefix(v.Name, ws+"-") {
				left = append(left, "volume "+v.Name)
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("left after the image %s converged: %s", image, strings.Join(left, ", "))
		}
		time.Sleep(200 * time.Millisecond)
	}
}
