package api

import (
	"context"
	"time"

	"deskhost/hostd/metering"
	"deskhost/hostd/service"
	"deskhost/internal/catalog"
)

// Metering and quotas: hostd's own DescribeUsage (AWS bills through its own systems), and
// the quotas DescribeAccount adds to AWS's answer.

// UsageService is the metering and quota half of what the API calls (*service.Service).
type UsageService interface {
	DescribeUsage(ctx context.Context, month string) (metering.Month, []metering.Row, error)
	Quotas(ctx context.Context) ([]service.Quota, error)
}

// DescribeUsageOperation reads a month's metering ledger.
const DescribeUsageOperation = "DescribeUsage"

var shDescribeUsageRequest = structure("DescribeUsageRequest", []string{"Month"},
	m("Month", strLen("Month", ip(1), ip(16))))

func init() {
	ownOperations[DescribeUsageOperation] = op(shDescribeUsageRequest, describeUsage)
}

type describeUsageRequest struct {
	Month string `json:"Month"`
}

// WireUsageRow is one row of DescribeUsage: a run of hours of one WorkSpace at one rate.
type WireUsageRow struct {
	WorkspaceId, DirectoryId, UserName, BundleId string
	RunningMode, ComputeTypeName                 string
	RootVolumeSizeGib, UserVolumeSizeGib         int
	From, To                                     float64 // epoch seconds, as AWS's timestamps
	Hours, RunningHours, BillableHours           int
	Tags                                         []wireTag `json:",omitempty"`
}

func describeUsage(ctx context.Context, svc Service, r *describeUsageRequest) (any, error) {
	m, rows, err := svc.DescribeUsage(ctx, r.Month)
	if err != nil {
		return nil, err
	}
	out := struct {
		Month string
		Rows  []WireUsageRow
	}{Month: m.String(), Rows: []WireUsageRow{}}
	for _, x := range rows {
		w := WireUsageRow{WorkspaceId: x.WorkspaceID, DirectoryId: x.DirectoryID, UserName: x.UserName, BundleId: x.BundleID,
			RunningMode: x.RunningMode, ComputeTypeName: x.ComputeType, RootVolumeSizeGib: x.RootGiB, UserVolumeSizeGib: x.UserGiB,
			From: epoch(x.From), To: epoch(x.To), Hours: x.Hours, RunningHours: x.RunningHours, BillableHours: x.BillableHours}
		for _, t := range x.Tags {
			w.Tags = append(w.Tags, wireTag{Key: t.Key, Value: &t.Value})
		}
		out.Rows = append(out.Rows, w)
	}
	return out, nil
}

func epoch(t time.Time) float64 { return float64(t.Unix()) }

// WireQuota is one quota in DescribeAccount's answer. AWS's DescribeAccount has no quota
// member (AWS keeps quotas in Service Quotas); hostd adds "Quotas", which AWS's SDKs and
// awscli skip as an unknown member, and `hostd quotas` reads.
type WireQuota struct {
	Name      string
	Limit     int
	Used      int
	ErrorCode catalog.ErrorType
}

func wireQuotas(ctx context.Context, svc Service) ([]WireQuota, error) {
	qs, err := svc.Quotas(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]WireQuota, len(qs))
	for i, q := range qs {
		out[i] = WireQuota{Name: q.Name, Limit: q.Limit, Used: q.Used, ErrorCode: q.Error}
	}
	return out, nil
}
