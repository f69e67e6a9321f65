// Package metrics is zeroclient's Prometheus exporter, under deskhost_zeroclient_, with
// the guide's CloudWatch connection metrics (catalog §20) named by Prometheus' conventions
// and the CloudWatch name leading each HELP text: ConnectionAttempt, ConnectionSuccess,
// ConnectionFailure, SessionLaunchTime (seconds), SessionDisconnect, UserConnected and
// InSessionLatency (seconds),
// labelled directory_id and workspace_id. Every connection attempt (an allocate-resource
// by an authenticated user) ends as exactly one success or one failure, so Attempt =
// Success + Failure over any period, as the guide's footnotes imply.
package metrics

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics holds the collectors.
type Metrics struct {
	Registry *prometheus.Registry

	ConnectionAttempt *prometheus.CounterVec
	ConnectionSuccess *prometheus.CounterVec
	ConnectionFailure *prometheus.CounterVec
	SessionLaunchTime *prometheus.HistogramVec
	SessionDisconnect *prometheus.CounterVec
	UserConnected     *prometheus.GaugeVec
	InSessionLatency  *prometheus.GaugeVec
	// Logins counts authenticate outcomes by directory and result (not a guide metric:
	// what an operator watches for brute force).
	Logins *prometheus.CounterVec
}

var labels = []string{"directory_id", "workspace_id"}

func name(n string) string { return prometheus.BuildFQName("deskhost", "zeroclient", n) }

// New registers the collectors on a fresh registry.
func New() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		ConnectionAttempt: prometheus.NewCounterVec(prometheus.CounterOpts{Name: name("connection_attempts_total"),
			Help: "CloudWatch ConnectionAttempt: The number of connection attempts (allocate-resource by an authenticated user)."}, labels),
		ConnectionSuccess: prometheus.NewCounterVec(prometheus.CounterOpts{Name: name("connection_successes_total"),
			Help: "CloudWatch ConnectionSuccess: The number of successful connections (the gateway relayed the desktop)."}, labels),
		ConnectionFailure: prometheus.NewCounterVec(prometheus.CounterOpts{Name: name("connection_failures_total"),
			Help: "CloudWatch ConnectionFailure: The number of failed connections (refused allocation, unused or refused tag, unreachable display)."}, labels),
		SessionLaunchTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name("session_launch_seconds"),
			Help:    "CloudWatch SessionLaunchTime: The amount of time it takes to initiate a WorkSpaces session, from allocate-resource to the desktop relayed.",
			Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120}}, labels),
		SessionDisconnect: prometheus.NewCounterVec(prometheus.CounterOpts{Name: name("session_disconnects_total"),
			Help: "CloudWatch SessionDisconnect: The number of connections that were closed, including user-initiated and failed connections."}, labels),
		UserConnected: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name("user_connected"),
			Help: "CloudWatch UserConnected: The number of WorkSpaces that have a user connected (1 per WorkSpace while a user is)."}, labels),
		InSessionLatency: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name("in_session_latency_seconds"),
			Help: "CloudWatch InSessionLatency: The round trip time between the WorkSpaces client and the WorkSpace (the smoothed TCP round trip of the session's connection, sampled every 5 s while a user is connected)."}, labels),
		Logins: prometheus.NewCounterVec(prometheus.CounterOpts{Name: name("logins_total"),
			Help: "Authenticate outcomes by directory and result id."}, []string{"directory_id", "result"}),
	}
	m.Registry.MustRegister(m.ConnectionAttempt, m.ConnectionSuccess, m.ConnectionFailure, m.SessionLaunchTime,
		m.SessionDisconnect, m.UserConnected, m.InSessionLatency, m.Logins, collectors.NewGoCollector())
	return m
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{})
}
