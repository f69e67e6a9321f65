package cli

// The metering ledger (hostd usage) and the quotas (hostd quotas).

import (
	"flag"
	"strconv"
	"time"

	"deskhost/hostd/metering"
	"deskhost/internal/catalog"
	"deskhost/internal/hostdclient"
)

func init() {
	register(&command{name: "usage", args: "--month YYYY-MM [--csv|--json]", summary: "a month's metering: hours per WorkSpace, running mode, compute type, volumes, tags (UTC)", maxArgs: 0,
		flags: func(r *run, fs *flag.FlagSet) {
			fs.StringVar(&r.month, "month", "", "the month, YYYY-MM (default: this month, UTC)")
			fs.BoolVar(&r.csv, "csv", false, "print CSV (columns: "+joinCols()+")")
			jsonFlag(r, fs)
		}, run: usageCmd})
	register(&command{name: "quotas", args: "", summary: "the quotas hostd enforces (the guide's, §23) and how much of each is used", maxArgs: 0, flags: jsonFlag, run: quotasCmd})
}

func joinCols() string {
	s := ""
	for i, c := range metering.CSVHeader {
		if i > 0 {
			s += ","
		}
		s += c
	}
	return s
}

func usageCmd(r *run) int {
	if r.month == "" {
		r.month = time.Now().UTC().Format("2006-01")
	}
	// Checked here too: a bad month is a usage error before any call.
	if _, err := metering.ParseMonth(r.month); err != nil {
		return r.usageError("--month: %s", catalog.AsError(err).Message)
	}
	if r.csv && r.json {
		return r.usageError("--csv and --json: choose one")
	}
	c, code := r.sdk()
	if c == nil {
		return code
	}
	out, err := c.DescribeUsage(r.ctx, &hostdclient.DescribeUsageInput{Month: r.month})
	if err != nil {
		return r.fail(err)
	}
	if r.json {
		return r.printJSON(out.Rows)
	}
	rows := make([]metering.Row, len(out.Rows))
	for i, x := range out.Rows {
		rows[i] = metering.Row{Month: out.Month, WorkspaceID: x.WorkspaceId, DirectoryID: x.DirectoryId, UserName: x.UserName, BundleID: x.BundleId,
			RunningMode: x.RunningMode, ComputeType: x.ComputeTypeName, RootGiB: x.RootVolumeSizeGib, UserGiB: x.UserVolumeSizeGib,
			From: time.Unix(int64(x.From), 0).UTC(), To: time.Unix(int64(x.To), 0).UTC(),
			Hours: x.Hours, RunningHours: x.RunningHours, BillableHours: x.BillableHours}
		for _, t := range x.Tags {
			v := ""
			if t.Value != nil {
				v = *t.Value
			}
			rows[i].Tags = append(rows[i].Tags, catalog.Tag{Key: t.Key, Value: v})
		}
	}
	if r.csv {
		if err := metering.WriteCSV(r.stdout, rows); err != nil {
			return r.failf("write CSV: %v", err)
		}
		return exitOK
	}
	t := newTable(r.stdout)
	t.row("WORKSPACE", "USER", "MODE", "COMPUTE", "ROOT GiB", "USER GiB", "FROM", "TO", "HOURS", "RUNNING", "BILLABLE", "TAGS")
	for _, x := range rows {
		t.row(x.WorkspaceID, x.UserName, x.RunningMode, x.ComputeType, strconv.Itoa(x.RootGiB), strconv.Itoa(x.UserGiB),
			x.From.Format(time.RFC3339), x.To.Format(time.RFC3339), strconv.Itoa(x.Hours), strconv.Itoa(x.RunningHours),
			strconv.Itoa(x.BillableHours), dash(metering.FormatTags(x.Tags)))
	}
	t.flush()
	return exitOK
}

func quotasCmd(r *run) int {
	c, code := r.sdk()
	if c == nil {
		return code
	}
	out, err := c.DescribeQuotas(r.ctx)
	if err != nil {
		return r.fail(err)
	}
	if r.json {
		return r.printJSON(out.Quotas)
	}
	t := newTable(r.stdout)
	t.row("QUOTA", "LIMIT", "USED", "OVER IT")
	for _, q := range out.Quotas {
		t.row(q.Name, strconv.Itoa(q.Limit), strconv.Itoa(q.Used), q.ErrorCode)
	}
	t.flush()
	return exitOK
}
