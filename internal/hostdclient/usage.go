package hostdclient

import "context"

// DescribeUsageInput is a month, "YYYY-MM".
type DescribeUsageInput struct {
	Month string
}

// UsageRow is a run of hours of one WorkSpace at one rate (hostd/metering).
type UsageRow struct {
	WorkspaceId, DirectoryId, UserName, BundleId string
	RunningMode, ComputeTypeName                 string
	RootVolumeSizeGib, UserVolumeSizeGib         int
	From, To                                     float64 // epoch seconds
	Hours, RunningHours, BillableHours           int
	Tags                                         []UsageTag
}

// UsageTag is a WorkSpace's tag as the ledger recorded it.
type UsageTag struct {
	Key   string
	Value *string
}

// DescribeUsageOutput is the month's ledger.
type DescribeUsageOutput struct {
	Month string
	Rows  []UsageRow
}

// DescribeUsage reads a month's metering ledger.
func (c *Client) DescribeUsage(ctx context.Context, in *DescribeUsageInput) (*DescribeUsageOutput, error) {
	out := &DescribeUsageOutput{}
	return out, c.Call(ctx, DeskhostTarget+"DescribeUsage", in, out)
}

// Quota is one quota and its use, as DescribeAccount's hostd-only Quotas member has it.
type Quota struct {
	Name        string
	Limit, Used int
	ErrorCode   string
}

// DescribeQuotasOutput is DescribeAccount read for its Quotas member (AWS's SDK drops it).
type DescribeQuotasOutput struct {
	Quotas []Quota
}

// DescribeQuotas lists the quotas hostd enforces and their use.
func (c *Client) DescribeQuotas(ctx context.Context) (*DescribeQuotasOutput, error) {
	out := &DescribeQuotasOutput{}
	return out, c.Call(ctx, WorkspacesTarget+"DescribeAccount", struct{}{}, out)
}
