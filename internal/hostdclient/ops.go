package hostdclient

import "context"

// hostd's own operations, which AWS's SDK does not know. Adding one is its request and
// response types (the JSON members as hostd's API names them) and a method calling Call
// with its X-Amz-Target.

// ReportConnectionsInput is hostd's own ReportConnections (local socket only): the
// WorkSpaces users are streaming now, the whole list; every other WorkSpace counts as
// disconnected.
type ReportConnectionsInput struct {
	ConnectedWorkspaceIds []string
}

// ReportConnectionsOutput is its (empty) response.
type ReportConnectionsOutput struct{}

// ReportConnections tells hostd which WorkSpaces users are streaming.
func (c *Client) ReportConnections(ctx context.Context, in *ReportConnectionsInput) (*ReportConnectionsOutput, error) {
	req := *in
	if req.ConnectedWorkspaceIds == nil {
		req.ConnectedWorkspaceIds = []string{} // "none", which hostd tells from a missing list
	}
	out := &ReportConnectionsOutput{}
	return out, c.Call(ctx, WorkspacesTarget+"ReportConnections", &req, out)
}
