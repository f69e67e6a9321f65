package api

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"deskhost/hostd/service"
	"deskhost/hostd/store"
	"deskhost/hostd/workspace"
	"deskhost/internal/catalog"
	"deskhost/internal/desktopimage"
	"deskhost/internal/hostdclient"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/workspaces"
	"github.com/aws/aws-sdk-go-v2/service/workspaces/types"
)

// fakeImageDir writes a desktop image directory whose files are placeholders (the API
// tests boot nothing; hostd/controller's capture test boots the real image).
func fakeImageDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, f := range []string{"vmlinux", "initrd.img", "root.qcow2"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	m := desktopimage.Manifest{Name: "desktop", OS: "linux", Kernel: "vmlinux", Initrd: "initrd.img", Root: "root.qcow2", RootFormat: "qcow2"}
	if _, err := desktopimage.WriteManifest(dir, m); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestImageOperationsThroughSDK drives CreateWorkspaceImage, CopyWorkspaceImage,
// DeleteWorkspaceImage and DescribeWorkspaceImages through AWS's SDK: the state gates, the
// 20-image quota, the local Region only, PENDING images refused where the guide says,
// and every refusal changing nothing. (The capture itself: hostd/controller's
// TestCreateImageFromWorkspace.)
func TestImageOperationsThroughSDK(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.client(accessKeyID, secretKey)
	ctx := context.Background()
	reg, err := e.svc.RegisterImage(ctx, service.ImageRequest{Name: "base", Dir: fakeImageDir(t)})
	if err != nil {
		t.Fatal(err)
	}
	images := func() map[string]types.WorkspaceImage {
		t.Helper()
		out := map[string]types.WorkspaceImage{}
		var token *string
		for {
			r, err := c.DescribeWorkspaceImages(ctx, &workspaces.DescribeWorkspaceImagesInput{NextToken: token})
			if err != nil {
				t.Fatal(err)
			}
			for _, i := range r.Images {
				out[aws.ToString(i.ImageId)] = i
			}
			if token = r.NextToken; token == nil {
				return out
			}
		}
	}
	state := func(id string) workspace.State {
		t.Helper()
		for _, w := range e.snapshot() {
			if w.ID == id {
				return w.State
			}
		}
		t.Fatalf("no WorkSpace %s", id)
		return ""
	}
	out, err := c.CreateWorkspaces(ctx, &workspaces.CreateWorkspacesInput{Workspaces: []types.WorkspaceRequest{
		{DirectoryId: aws.String(dirID), UserName: aws.String("alice"), BundleId: aws.String(bundleStd)},
		{DirectoryId: aws.String(dirID), UserName: aws.String("bob"), BundleId: aws.String(bundleStd)},
	}})
	if err != nil || len(out.PendingRequests) != 2 {
		t.Fatalf("create: %v %+v", err, out)
	}
	alice, bob := aws.ToString(out.PendingRequests[0].WorkspaceId), aws.ToString(out.PendingRequests[1].WorkspaceId)
	create := func(name, ws string) (*workspaces.CreateWorkspaceImageOutput, error) {
		return c.CreateWorkspaceImage(ctx, &workspaces.CreateWorkspaceImageInput{Name: aws.String(name),
			Description: aws.String("golden image"), WorkspaceId: aws.String(ws), Tags: []types.Tag{{Key: aws.String("team"), Value: aws.String("a")}}})
	}
	before := len(images())

	// Refusals that change nothing: a WorkSpace that is not AVAILABLE, one that does not
	// exist, a bad name, a name in use.
	_, err = create("golden", alice)
	if ae := apiErr(t, err, "InvalidResourceStateException"); !strings.Contains(ae.ErrorMessage(), "is PENDING") {
		t.Errorf("capture of a PENDING WorkSpace: %s", ae.ErrorMessage())
	}
	e.setState(alice, workspace.Available)
	e.setState(bob, workspace.Available)
	_, err = create("golden", "ws-doesnotexist")
	apiErr(t, err, "ResourceNotFoundException")
	_, err = create("no spaces allowed", alice)
	apiErr(t, err, "InvalidParameterValuesException")
	_, err = c.CreateWorkspaceImage(ctx, &workspaces.CreateWorkspaceImageInput{Name: aws.String("golden"), WorkspaceId: aws.String(alice)})
	if err == nil {
		t.Error("CreateWorkspaceImage without a Description was accepted")
	}
	_, err = create("base", alice)
	apiErr(t, err, "ResourceAlreadyExistsException")
	if n := len(images()); n != before || state(alice) != workspace.Available {
		t.Fatalf("refused captures changed something: %d images (had %d), alice %s", n, before, state(alice))
	}

	// Accepted: the image is PENDING, the WorkSpace SUSPENDED, the controller woken.
	woken := len(e.waker.calls())
	got, err := create("golden", alice)
	if err != nil {
		t.Fatal(err)
	}
	golden := aws.ToString(got.ImageId)
	if got.State != types.WorkspaceImageStatePending || got.OperatingSystem == nil || got.OperatingSystem.Type != types.OperatingSystemTypeLinux ||
		aws.ToString(got.Name) != "golden" || got.Created == nil || aws.ToString(got.OwnerAccountId) == "" {
		t.Fatalf("CreateWorkspaceImage answered %+v", got)
	}
	if st := state(alice); st != workspace.Suspended {
		t.Errorf("alice is %s during the capture, want SUSPENDED", st)
	}
	if calls := e.waker.calls(); len(calls) != woken+1 || calls[len(calls)-1] != alice {
		t.Errorf("controller woken for %v", calls[woken:])
	}
	if i := images()[golden]; i.State != types.WorkspaceImageStatePending {
		t.Errorf("DescribeWorkspaceImages: %+v", i)
	}
	if tags, err := c.DescribeTags(ctx, &workspaces.DescribeTagsInput{ResourceId: aws.String(golden)}); err != nil || len(tags.TagList) != 1 {
		t.Errorf("the new image's tags: %v %+v", err, tags)
	}
	// While PENDING: no second capture of alice, no delete, no copy, no bundle.
	_, err = create("golden2", alice)
	apiErr(t, err, "InvalidResourceStateException")
	_, err = c.DeleteWorkspaceImage(ctx, &workspaces.DeleteWorkspaceImageInput{ImageId: aws.String(golden)})
	if ae := apiErr(t, err, "InvalidResourceStateException"); !strings.Contains(ae.ErrorMessage(), "PENDING") {
		t.Errorf("delete of a PENDING image: %s", ae.ErrorMessage())
	}
	copyOf := func(name, src, region string) (*workspaces.CopyWorkspaceImageOutput, error) {
		return c.CopyWorkspaceImage(ctx, &workspaces.CopyWorkspaceImageInput{Name: aws.String(name), SourceImageId: aws.String(src), SourceRegion: aws.String(region)})
	}
	_, err = copyOf("golden-copy", golden, testRegion)
	apiErr(t, err, "InvalidResourceStateException")
	_, err = c.CreateWorkspaceBundle(ctx, &workspaces.CreateWorkspaceBundleInput{BundleName: aws.String("golden"), BundleDescription: aws.String("golden"),
		ImageId: aws.String(golden), ComputeType: &types.ComputeType{Name: types.ComputeValue}, UserStorage: &types.UserStorage{Capacity: aws.String("10")}})
	apiErr(t, err, "InvalidResourceStateException")

	// A capture that failed shows why (the controller writes it so).
	if err := e.store.Update(func(tx store.Tx) error {
		img, err := store.GetJSON[catalog.Image](tx, store.Images, golden)
		if err != nil {
			return err
		}
		img.State, img.ErrorCode, img.ErrorMessage = catalog.ImageError, "RootVolumeFull", "the root volume (/) is 98% full"
		return store.PutJSON(tx, store.Images, golden, img)
	}); err != nil {
		t.Fatal(err)
	}
	if i := images()[golden]; i.State != types.WorkspaceImageStateError || aws.ToString(i.ErrorCode) != "RootVolumeFull" ||
		!strings.Contains(aws.ToString(i.ErrorMessage), "98% full") {
		t.Errorf("a failed image: %+v", i)
	}

	// Copy: the local Region only, an image that exists.
	_, err = copyOf("base-copy", reg.ID, "us-east-1")
	if ae := apiErr(t, err, "InvalidParameterValuesException"); !strings.Contains(ae.ErrorMessage(), "us-east-1") || !strings.Contains(ae.ErrorMessage(), testRegion) {
		t.Errorf("copy from another Region: %s", ae.ErrorMessage())
	}
	_, err = copyOf("base-copy", "wsi-doesnotexist", testRegion)
	apiErr(t, err, "ResourceNotFoundException")
	cp, err := copyOf("base-copy", reg.ID, testRegion)
	if err != nil {
		t.Fatal(err)
	}
	copied := aws.ToString(cp.ImageId)
	if copied == reg.ID || images()[copied].State != types.WorkspaceImageStateAvailable {
		t.Fatalf("copy %s: %+v", copied, images()[copied])
	}
	di, err := e.svc.LoadImage(copied)
	if err != nil {
		t.Fatalf("the copy's files: %v", err)
	}
	if b, _ := os.ReadFile(di.Root); string(b) != "root.qcow2" || di.Manifest.Name != "base-copy" {
		t.Errorf("the copy's root %q, manifest name %q", b, di.Manifest.Name)
	}

	// The quota: 20 images, then every way of making one is refused.
	for i := len(images()); i < catalog.MaxImages; i++ {
		if _, err := copyOf("fill-"+string(rune('a'+i)), reg.ID, testRegion); err != nil {
			t.Fatalf("image %d: %v", i+1, err)
		}
	}
	_, err = copyOf("one-too-many", reg.ID, testRegion)
	if ae := apiErr(t, err, "ResourceLimitExceededException"); !strings.Contains(ae.ErrorMessage(), "20") {
		t.Errorf("21st image: %s", ae.ErrorMessage())
	}
	_, err = create("one-too-many", bob)
	apiErr(t, err, "ResourceLimitExceededException")
	if n := len(images()); n != catalog.MaxImages || state(bob) != workspace.Available {
		t.Fatalf("refusals at the quota changed something: %d images, bob %s", n, state(bob))
	}
	ents, _ := os.ReadDir(filepath.Dir(di.Dir))
	// The copies' directories: not the seeded, registered or failed image's.
	if len(ents) != catalog.MaxImages-3 {
		t.Errorf("%d image directories for %d copies", len(ents), catalog.MaxImages-3)
	}

	// Delete: refused while a bundle uses the image; a copy goes, with its files.
	bundle, err := c.CreateWorkspaceBundle(ctx, &workspaces.CreateWorkspaceBundleInput{BundleName: aws.String("copied"), BundleDescription: aws.String("copied"),
		ImageId: aws.String(copied), ComputeType: &types.ComputeType{Name: types.ComputeValue}, UserStorage: &types.UserStorage{Capacity: aws.String("10")}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.DeleteWorkspaceImage(ctx, &workspaces.DeleteWorkspaceImageInput{ImageId: aws.String(copied)})
	if ae := apiErr(t, err, "ResourceAssociatedException"); !strings.Contains(ae.ErrorMessage(), aws.ToString(bundle.WorkspaceBundle.BundleId)) {
		t.Errorf("delete of an image a bundle uses: %s", ae.ErrorMessage())
	}
	if _, err := c.DeleteWorkspaceBundle(ctx, &workspaces.DeleteWorkspaceBundleInput{BundleId: bundle.WorkspaceBundle.BundleId}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.DeleteWorkspaceImage(ctx, &workspaces.DeleteWorkspaceImageInput{ImageId: aws.String(copied)}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(di.Dir); !os.IsNotExist(err) {
		t.Errorf("the deleted copy's directory is still there: %v", err)
	}
	if _, err := os.Stat(filepath.Join(reg.Dir, "root.qcow2")); err != nil {
		t.Errorf("deleting the copy touched the source: %v", err)
	}
	// The failed image can be deleted (it is not PENDING).
	if _, err := c.DeleteWorkspaceImage(ctx, &workspaces.DeleteWorkspaceImageInput{ImageId: aws.String(golden)}); err != nil {
		t.Errorf("delete of an ERROR image: %v", err)
	}
}

// TestImportWorkspaceImageThroughAPI: AWS's ImportWorkspaceImage (an EC2 image id) says how
// to import here; hostd's own ImportWorkspaceImage refuses bad sources, ingestion
// processes and base images without changing anything, and accepts a good one as a
// PENDING image its controller is woken for. (The import itself: hostd/controller's
// TestImportWorkspaceImage.)
func TestImportWorkspaceImageThroughAPI(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.client(accessKeyID, secretKey)
	ctx := context.Background()
	reg, err := e.svc.RegisterImage(ctx, service.ImageRequest{Name: "base", Dir: fakeImageDir(t)})
	if err != nil {
		t.Fatal(err)
	}
	count := func() int {
		t.Helper()
		imgs, err := e.svc.DescribeWorkspaceImages(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		return len(imgs)
	}
	before := count()
	_, err = c.ImportWorkspaceImage(ctx, &workspaces.ImportWorkspaceImageInput{Ec2ImageId: aws.String("ami-0123456789abcdef0"),
		IngestionProcess: types.WorkspaceImageIngestionProcessByolRegular, ImageName: aws.String("byol"), ImageDescription: aws.String("byol")})
	if ae := apiErr(t, err, "ResourceNotFoundException"); !strings.Contains(ae.ErrorMessage(), "Deskhost.ImportImage") {
		t.Errorf("import of an EC2 image: %s", ae.ErrorMessage())
	}
	disk := filepath.Join(t.TempDir(), "disk.qcow2")
	if err := os.WriteFile(disk, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	in := func(src, ingestion, base string) *hostdclient.ImportImageInput {
		return &hostdclient.ImportImageInput{Source: src, IngestionProcess: ingestion, ImageName: "byol", ImageDescription: "BYOL image", BaseImageId: base}
	}
	for _, tc := range []struct {
		in         *hostdclient.ImportImageInput
		code, want string
	}{
		{in("images/disk.qcow2", "BYOL_REGULAR", ""), "InvalidParameterValuesException", "neither an absolute path nor an http(s) URL"},
		{in("/nonexistent/disk.qcow2", "BYOL_REGULAR", ""), "InvalidParameterValuesException", "/nonexistent/disk.qcow2"},
		{in("ftp://example.com/disk.qcow2", "BYOL_REGULAR", ""), "InvalidParameterValuesException", "neither"},
		{in("https://", "BYOL_REGULAR", ""), "InvalidParameterValuesException", "not a valid URL"},
		{in("ami-0123456789abcdef0", "BYOL_REGULAR", ""), "InvalidParameterValuesException", "no EC2"},
		{in(disk, "BYOL_REGULAR_WSP", ""), "InvalidParameterValuesException", "only PCoIP"},
		{in(disk, "BYOL_GRAPHICS", ""), "InvalidParameterValuesException", "no GPUs"},
		{in(disk, "BYOL_REGULAR", "wsi-doesnotexist"), "ResourceNotFoundException", "wsi-doesnotexist"},
	} {
		_, err := c.ImportImage(ctx, tc.in)
		if ae := apiErr(t, err, tc.code); !strings.Contains(ae.ErrorMessage(), tc.want) {
			t.Errorf("import %+v: %s, want it to say %q", *tc.in, ae.ErrorMessage(), tc.want)
		}
	}
	if n := count(); n != before {
		t.Fatalf("refused imports changed the images: %d, had %d", n, before)
	}

	woken := len(e.waker.calls())
	out, err := c.ImportImage(ctx, in(disk, "BYOL_REGULAR", ""))
	if err != nil {
		t.Fatal(err)
	}
	imgs, err := e.svc.DescribeWorkspaceImages(ctx, []string{out.ImageId})
	if err != nil || len(imgs) != 1 {
		t.Fatalf("the new import: %v %+v", err, imgs)
	}
	if i := imgs[0]; i.Status() != catalog.ImagePending || i.Import != disk || i.BaseImage != reg.ID || i.Name != "byol" {
		t.Errorf("the new import: %+v (base should default to the registered image %s)", i, reg.ID)
	}
	if calls := e.waker.calls(); len(calls) != woken+1 || calls[woken] != out.ImageId {
		t.Errorf("woken for %v, want the import %s", calls[woken:], out.ImageId)
	}
	_, err = c.DeleteWorkspaceImage(ctx, &workspaces.DeleteWorkspaceImageInput{ImageId: aws.String(out.ImageId)})
	apiErr(t, err, "InvalidResourceStateException")
	_, err = c.ImportImage(ctx, in(disk, "BYOL_REGULAR", ""))
	apiErr(t, err, "ResourceAlreadyExistsException") // the name is taken
}
