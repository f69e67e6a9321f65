package metrics

import (
	"net/http/httptest"
	"strings"
	"testing"

	"deskhost/internal/metricstest"
)

// TestExporter: the exposition parses, lints clean (promlint, promtool), and carries the
// guide's names in HELP and the values recorded.
func TestExporter(t *testing.T) {
	m := New()
	l := []string{"d-0123456789", "ws-0123456789"}
	m.ConnectionAttempt.WithLabelValues(l...).Add(3)
	m.ConnectionSuccess.WithLabelValues(l...).Add(2)
	m.ConnectionFailure.WithLabelValues(l...).Inc()
	m.SessionLaunchTime.WithLabelValues(l...).Observe(1.5)
	m.SessionDisconnect.WithLabelValues(l...).Inc()
	m.UserConnected.WithLabelValues(l...).Set(1)
	m.InSessionLatency.WithLabelValues(l...).Set(0.25)
	m.Logins.WithLabelValues("d-0123456789", "ok").Inc()
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	fams := metricstest.Check(t, metricstest.Scrape(t, srv.URL))
	want := map[string]string{"workspace_id": "ws-0123456789", "directory_id": "d-0123456789"}
	for name, c := range map[string]struct {
		cloudWatch string
		v          float64
	}{
		"deskhost_zeroclient_connection_attempts_total":  {"ConnectionAttempt", 3},
		"deskhost_zeroclient_connection_successes_total": {"ConnectionSuccess", 2},
		"deskhost_zeroclient_connection_failures_total":  {"ConnectionFailure", 1},
		"deskhost_zeroclient_session_launch_seconds":     {"SessionLaunchTime", 1},
		"deskhost_zeroclient_session_disconnects_total":  {"SessionDisconnect", 1},
		"deskhost_zeroclient_user_connected":             {"UserConnected", 1},
		"deskhost_zeroclient_in_session_latency_seconds": {"InSessionLatency", 0.25},
	} {
		if got, ok := metricstest.Value(fams, name, want); !ok || got != c.v {
			t.Errorf("%s = %v (present %v), want %v", name, got, ok, c.v)
		}
		if f := fams[name]; f == nil || !strings.HasPrefix(f.GetHelp(), "CloudWatch "+c.cloudWatch+": ") {
			t.Errorf("%s HELP does not name CloudWatch %s", name, c.cloudWatch)
		}
	}
	if got, _ := metricstest.Value(fams, "deskhost_zeroclient_logins_total", map[string]string{"result": "ok"}); got != 1 {
		t.Errorf("logins_total %v", got)
	}
}
