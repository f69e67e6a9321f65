// Package workspaces is how zeroclient reaches hostd: its WorkSpaces API (AWS's protocol)
// over hostd's root-only unix socket, through the AWS SDK, and hostd's own operations on
// that socket (session reports, the catalog). hostd owns WorkSpace and catalog records;
// zeroclient looks them up, starts stopped AutoStop ones and follows the catalog.
package workspaces

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/workspaces"
	"github.com/aws/aws-sdk-go-v2/service/workspaces/types"

	"deskhost/internal/catalog"
)

// Workspace is what the broker needs to know about a WorkSpace.
type Workspace struct {
	ID           string
	DirectoryID  string
	UserName     string
	State        string
	RunningMode  string
	Protocol     string // PCOIP or WSP
	ComputerName string
	BundleID     string
}

// Backend is what the broker asks of hostd.
type Backend interface {
	// ForUser returns the user's WorkSpace (the guide: one per user); ok is false if none.
	ForUser(ctx context.Context, directoryID, userName string) (ws Workspace, ok bool, err error)
	Describe(ctx context.Context, id string) (Workspace, error)
	Start(ctx context.Context, id string) error
}

// Client talks to hostd.
type Client struct {
	api  *workspaces.Client
	http *http.Client // for hostd's own operations, which the SDK does not know
}

// Dial returns a client for hostd's socket (nothing is connected until the first call).
func Dial(socket string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		MaxIdleConnsPerHost: 16,
	}
	hc := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	return &Client{http: hc, api: workspaces.New(workspaces.Options{
		BaseEndpoint: aws.String("http://hostd"),
		Region:       "local",
		// hostd's socket checks the peer (root) instead of SigV4; the SDK signs anyway.
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: "local", SecretAccessKey: "local", Source: "hostd socket"}, nil
		}),
		HTTPClient: hc,
		// hostd throttles its API per principal (the guide's 2 calls/s, burst 5), the local
		// socket included: a throttled call is retried with the SDK's backoff.
		RetryMaxAttempts: 5,
	})}
}

func convert(w types.Workspace) Workspace {
	out := Workspace{ID: aws.ToString(w.WorkspaceId), DirectoryID: aws.ToString(w.DirectoryId), UserName: aws.ToString(w.UserName),
		State: string(w.State), ComputerName: aws.ToString(w.ComputerName), BundleID: aws.ToString(w.BundleId)}
	if p := w.WorkspaceProperties; p != nil {
		out.RunningMode = string(p.RunningMode)
		if len(p.Protocols) > 0 {
			out.Protocol = string(p.Protocols[0])
		}
	}
	if out.Protocol == "" {
		out.Protocol = "PCOIP"
	}
	return out
}

// ForUser implements Backend.
func (c *Client) ForUser(ctx context.Context, directoryID, userName string) (Workspace, bool, error) {
	out, err := c.api.DescribeWorkspaces(ctx, &workspaces.DescribeWorkspacesInput{DirectoryId: aws.String(directoryID), UserName: aws.String(userName)})
	if err != nil {
		return Workspace{}, false, fmt.Errorf("hostd: describe WorkSpaces of %s/%s: %w", directoryID, userName, err)
	}
	for _, w := range out.Workspaces {
		if w.State == types.WorkspaceStateTerminated || w.State == types.WorkspaceStateTerminating {
			continue
		}
		if strings.EqualFold(aws.ToString(w.UserName), userName) {
			return convert(w), true, nil
		}
	}
	return Workspace{}, false, nil
}

// Describe implements Backend.
func (c *Client) Describe(ctx context.Context, id string) (Workspace, error) {
	out, err := c.api.DescribeWorkspaces(ctx, &workspaces.DescribeWorkspacesInput{WorkspaceIds: []string{id}})
	if err != nil {
		return Workspace{}, fmt.Errorf("hostd: describe %s: %w", id, err)
	}
	if len(out.Workspaces) != 1 {
		return Workspace{}, fmt.Errorf("hostd: WorkSpace %s not found", id)
	}
	return convert(out.Workspaces[0]), nil
}

// Start implements Backend.
func (c *Client) Start(ctx context.Context, id string) error {
	out, err := c.api.StartWorkspaces(ctx, &workspaces.StartWorkspacesInput{StartWorkspaceRequests: []types.StartRequest{{WorkspaceId: aws.String(id)}}})
	if err != nil {
		return fmt.Errorf("hostd: start %s: %w", id, err)
	}
	if len(out.FailedRequests) > 0 {
		f := out.FailedRequests[0]
		return errors.New("hostd: start " + id + ": " + aws.ToString(f.ErrorCode) + ": " + aws.ToString(f.ErrorMessage))
	}
	return nil
}

// own calls one of hostd's own operations (Deskhost.<op>), which the SDK does not know,
// on its local socket.
func (c *Client) own(ctx context.Context, op string, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://hostd/", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("X-Amz-Target", "Deskhost."+op)
	req.Header.Set("Content-Type", "application/x-amz-json-1.1")
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(msg))
	}
	if out == nil {
		return nil
	}
	return json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(out)
}

// ReportConnections tells hostd which WorkSpaces users are streaming now (hostd's own
// operation ReportConnections, on its local socket only): the whole list, every other
// WorkSpace counts as disconnected.
func (c *Client) ReportConnections(ctx context.Context, connected []string) error {
	if connected == nil {
		connected = []string{}
	}
	if err := c.own(ctx, "ReportConnections", struct{ ConnectedWorkspaceIds []string }{connected}, nil); err != nil {
		return fmt.Errorf("hostd: report connections: %w", err)
	}
	return nil
}

// Catalog is what zeroclient enforces, as hostd's store holds it: the registered
// directories with their login settings (secrets included), device access and IP access
// control groups, at a revision.
type Catalog struct {
	Revision    uint64
	Directories []catalog.Directory
	IpGroups    []catalog.IPGroup
}

// MaxCatalogWait bounds one long poll, inside the client's request timeout.
const MaxCatalogWait = 20 * time.Second

// DescribeCatalog reads the catalog (hostd's own operation DescribeCatalog, local socket
// only). With wait > 0 hostd answers as soon as the revision differs from since, or after
// wait with the same revision.
func (c *Client) DescribeCatalog(ctx context.Context, since uint64, wait time.Duration) (Catalog, error) {
	in := map[string]any{}
	if wait > 0 {
		in["SinceRevision"], in["WaitSeconds"] = since, int(min(wait, MaxCatalogWait)/time.Second)
	}
	var out Catalog
	if err := c.own(ctx, "DescribeCatalog", in, &out); err != nil {
		return Catalog{}, fmt.Errorf("hostd: describe catalog: %w", err)
	}
	return out, nil
}
