// Package presence tells hostd which WorkSpaces users are streaming, so that hostd's
// AutoStop timer (guide §2.3: stopped "after a specified period of inactivity") and
// DescribeWorkspacesConnectionStatus see the gateway's sessions. It sends the whole list
// each time, on every change and every interval, so a lost report is made good by the
// next and a restarted hostd or zeroclient needs nothing replayed.
package presence

import (
	"context"
	"log/slog"
	"slices"
	"time"
)

// Interval is how often the list goes to hostd even when unchanged; hostd stops trusting
// a session it has not heard of for four intervals (service.ConnectionReportStale).
const Interval = 30 * time.Second

// Sender delivers a report (zeroclient/workspaces.Client: hostd's ReportConnections).
type Sender interface {
	ReportConnections(ctx context.Context, connected []string) error
}

// Reporter sends the gateway's sessions to hostd.
type Reporter struct {
	list     func() []string
	send     Sender
	interval time.Duration
	log      *slog.Logger
	kick     chan struct{}
}

// New makes a reporter of list's WorkSpaces. interval is how often the list goes even
// when unchanged (hostd's service.ConnectionReportInterval).
func New(list func() []string, send Sender, interval time.Duration, log *slog.Logger) *Reporter {
	return &Reporter{list: list, send: send, interval: interval, log: log, kick: make(chan struct{}, 1)}
}

// Changed asks for a report now. It never blocks; a nil Reporter ignores it.
func (r *Reporter) Changed() {
	if r == nil {
		return
	}
	select {
	case r.kick <- struct{}{}:
	default: // one is due already
	}
}

// retryAfter is how soon a failed report is tried again.
const retryAfter = 2 * time.Second

// Run reports until ctx ends, then sends one last report (what the list is by then: the
// sessions a shutting-down gateway has closed are gone from it).
func (r *Reporter) Run(ctx context.Context) {
	t := time.NewTimer(0)
	defer t.Stop()
	var sent []string
	failing := false
	report := func(ctx context.Context) {
		ids := r.list()
		err := r.send.ReportConnections(ctx, ids)
		switch {
		case err != nil && !failing:
			r.log.Warn("presence: report to hostd failed; retrying", "err", err)
		case err == nil && (failing || !slices.Equal(ids, sent)):
			r.log.Info("presence: reported", "connected", ids)
		}
		failing = err != nil
		if err == nil {
			sent = ids
		}
		next := r.interval
		if failing {
			next = retryAfter
		}
		t.Reset(next)
	}
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			report(fctx)
			cancel()
			return
		case <-r.kick:
			report(ctx)
		case <-t.C:
			report(ctx)
		}
	}
}
