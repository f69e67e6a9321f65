package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/workspaces"
	"github.com/aws/aws-sdk-go-v2/service/workspaces/types"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/aws/smithy-go"

	"deskhost/hostd/etcdmember"
)

// TestHostdOnEtcd runs the real hostd with its store in a real 3-member etcd cluster
// (members served by `hostd etcd`, mutual TLS): a WorkSpace goes to AVAILABLE; with 2 of 3
// members stopped, the API answers 503 ServiceUnavailableException saying there is no
// quorum, and a refused create leaves nothing; with the members back, every record is
// there and the API works again.
func TestHostdOnEtcd(t *testing.T) {
	dir, err := os.MkdirTemp("", "dhetcd")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	c, err := etcdmember.StartCluster(ctx, dir, 3, []string{hostdBin, "etcd"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	store := fmt.Sprintf("\n    etcd:\n      endpoints: [%s]\n      caFile: %s\n      certFile: %s\n      keyFile: %s\n      prefix: /e2e/\n      timeout: 3s",
		strings.Join(c.Endpoints(), ", "), c.CAFile, c.ClientCert, c.ClientKey)
	h := newHostWith(t, hostOptions{store: store})
	h.start()
	ids := h.create("alice")
	h.waitState(ids[0], types.WorkspaceStateAvailable, 4*time.Minute)

	for _, m := range c.Members[1:] {
		if err := m.Stop(); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(3 * time.Second) // the survivor's election timeout: it knows it has no leader
	cl := workspaces.New(h.client().Options(), func(o *workspaces.Options) { o.RetryMaxAttempts = 1 })
	_, err = cl.DescribeWorkspaces(ctx, &workspaces.DescribeWorkspacesInput{})
	var ae smithy.APIError
	var re *smithyhttp.ResponseError
	if !errors.As(err, &ae) || ae.ErrorCode() != "ServiceUnavailableException" || !strings.Contains(ae.ErrorMessage(), "no quorum") ||
		!errors.As(err, &re) || re.HTTPStatusCode() != http.StatusServiceUnavailable {
		t.Fatalf("DescribeWorkspaces without quorum: %v, want a 503 ServiceUnavailableException saying there is no quorum", err)
	}
	t.Logf("without quorum: %v", err)
	out, err := cl.CreateWorkspaces(ctx, &workspaces.CreateWorkspacesInput{Workspaces: []types.WorkspaceRequest{
		{DirectoryId: aws.String(directoryID), UserName: aws.String("bob"), BundleId: aws.String(h.bundle)}}})
	if err != nil || len(out.FailedRequests) != 1 || aws.ToString(out.FailedRequests[0].ErrorCode) != "ServiceUnavailableException" ||
		!strings.Contains(aws.ToString(out.FailedRequests[0].ErrorMessage), "no quorum") {
		t.Fatalf("CreateWorkspaces without quorum: %v %+v", err, out)
	}

	for _, m := range c.Members[1:] {
		if err := m.Restart(); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.WaitServing(ctx); err != nil {
		t.Fatal(err)
	}
	all, err := h.client().DescribeWorkspaces(ctx, &workspaces.DescribeWorkspacesInput{})
	if err != nil || len(all.Workspaces) != 1 || aws.ToString(all.Workspaces[0].WorkspaceId) != ids[0] || all.Workspaces[0].State != types.WorkspaceStateAvailable {
		t.Fatalf("after quorum returned: %v %+v (want only %s, AVAILABLE)", err, all, ids[0])
	}
	if _, err := h.client().TerminateWorkspaces(ctx, &workspaces.TerminateWorkspacesInput{TerminateWorkspaceRequests: []types.TerminateRequest{{WorkspaceId: aws.String(ids[0])}}}); err != nil {
		t.Fatal(err)
	}
	h.waitState(ids[0], types.WorkspaceStateTerminated, 2*time.Minute)
}
