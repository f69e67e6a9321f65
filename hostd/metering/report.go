package metering

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"deskhost/hostd/store"
	"deskhost/internal/catalog"
)

// Month is a UTC calendar month.
type Month struct{ Start time.Time }

var monthRe = regexp.MustCompile(`^[0-9]{4}-[0-9]{2}$`)

// ParseMonth parses "YYYY-MM". A bad value is an InvalidParameterValues error naming it.
func ParseMonth(s string) (Month, error) {
	t, err := time.Parse("2006-01", s)
	if !monthRe.MatchString(s) || err != nil {
		return Month{}, catalog.Errorf(catalog.InvalidParameterValues, "month %q: want YYYY-MM with a month 01 to 12, e.g. 2026-11", s)
	}
	return Month{Start: t.UTC()}, nil
}

// End is the first instant after the month.
func (m Month) End() time.Time { return m.Start.AddDate(0, 1, 0) }

func (m Month) String() string { return m.Start.Format("2006-01") }

// Row is a run of adjacent hours of one WorkSpace in a month on the same terms (mode,
// compute type, volume sizes, tags): a compute or mode change starts a new row, so each
// row bills at one rate.
type Row struct {
	Month       string
	WorkspaceID string
	DirectoryID string
	UserName    string
	BundleID    string
	RunningMode string
	ComputeType string
	RootGiB     int
	UserGiB     int
	From, To    time.Time // To: the end of the last hour
	// Hours the WorkSpace existed, of which it ran RunningHours; BillableHours are
	// Hours for AlwaysOn, RunningHours for AutoStop.
	Hours, RunningHours, BillableHours int
	Tags                               []catalog.Tag
}

// Report reads month's ledger: rows by WorkSpace, then time.
func Report(st store.Store, m Month) ([]Row, error) {
	var entries []Entry
	err := st.View(func(tx store.Tx) error {
		entries = entries[:0]
		return tx.ForEach(store.Usage, func(k string, v []byte) error {
			var e Entry
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("decode %s/%s: %w", store.Usage, k, err)
			}
			if !e.Hour.Before(m.Start) && e.Hour.Before(m.End()) {
				entries = append(entries, e)
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("metering: read ledger: %w", err)
	}
	// Keys sort by WorkSpace then hour, so entries come in row order.
	var rows []Row
	var last Entry
	for i, e := range entries {
		if i == 0 || !e.sameTerms(last) || !e.Hour.Equal(last.Hour.Add(time.Hour)) {
			rows = append(rows, Row{Month: m.String(), WorkspaceID: e.WorkspaceID, DirectoryID: e.DirectoryID, UserName: e.UserName,
				BundleID: e.BundleID, RunningMode: string(e.RunningMode), ComputeType: e.ComputeType,
				RootGiB: e.RootVolumeGiB, UserGiB: e.UserVolumeGiB, From: e.Hour.UTC(), Tags: e.Tags})
		}
		r := &rows[len(rows)-1]
		r.To = e.Hour.UTC().Add(time.Hour)
		r.Hours++
		if e.Running {
			r.RunningHours++
		}
		if e.Billable() {
			r.BillableHours++
		}
		last = e
	}
	return rows, nil
}

// CSVHeader is the export's columns.
var CSVHeader = []string{"month", "workspace_id", "directory_id", "user_name", "bundle_id", "running_mode", "compute_type",
	"root_volume_gib", "user_volume_gib", "from", "to", "hours", "running_hours", "billable_hours", "tags"}

// WriteCSV writes rows under CSVHeader. Times are RFC 3339 UTC; tags are
// key=value pairs joined by & with both sides URL-escaped (a tag may hold = or ;).
func WriteCSV(w io.Writer, rows []Row) error {
	cw := csv.NewWriter(w)
	if err := cw.Write(CSVHeader); err != nil {
		return err
	}
	for _, r := range rows {
		if err := cw.Write([]string{r.Month, r.WorkspaceID, r.DirectoryID, r.UserName, r.BundleID, r.RunningMode, r.ComputeType,
			strconv.Itoa(r.RootGiB), strconv.Itoa(r.UserGiB), r.From.UTC().Format(time.RFC3339), r.To.UTC().Format(time.RFC3339),
			strconv.Itoa(r.Hours), strconv.Itoa(r.RunningHours), strconv.Itoa(r.BillableHours), FormatTags(r.Tags)}); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

// FormatTags writes tags as the CSV's tags column.
func FormatTags(tags []catalog.Tag) string {
	parts := make([]string, len(tags))
	for i, t := range tags {
		parts[i] = url.QueryEscape(t.Key) + "=" + url.QueryEscape(t.Value)
	}
	return strings.Join(parts, "&")
}
