// Package metrics is netcfg's Prometheus exporter, under deskhost_netcfg_: how long
// applying the desired state takes (the whole apply and its nftables transaction), how
// applies end, and the flows they disconnect. `netcfg apply --serve --metrics-listen ADDR`
// serves it.
package metrics

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"deskhost/netcfg/reconcile"
)

// Metrics is netcfg's registry.
type Metrics struct {
	Registry *prometheus.Registry

	applySeconds    prometheus.Histogram
	nftablesSeconds prometheus.Histogram
	applies         *prometheus.CounterVec
	droppedFlows    prometheus.Counter
}

func name(n string) string { return prometheus.BuildFQName("deskhost", "netcfg", n) }

var buckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10}

// New registers netcfg's collectors on a fresh registry.
func New() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		applySeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: name("apply_seconds"),
			Help: "Time of one apply of the desired state (links, nftables, conntrack), changed or not.", Buckets: buckets}),
		nftablesSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: name("nftables_apply_seconds"),
			Help: "Time of an apply's nftables step: read the ruleset back, compare, and commit one transaction when it differs.", Buckets: buckets}),
		applies: prometheus.NewCounterVec(prometheus.CounterOpts{Name: name("applies_total"),
			Help: "Applies by result: changed (the host was changed), unchanged, or error."}, []string{"result"}),
		droppedFlows: prometheus.NewCounter(prometheus.CounterOpts{Name: name("dropped_flows_total"),
			Help: "Tracked flows an apply disconnected because the new rules no longer allow them."}),
	}
	for _, r := range []string{"changed", "unchanged", "error"} {
		m.applies.WithLabelValues(r) // every result present from the start
	}
	m.Registry.MustRegister(m.applySeconds, m.nftablesSeconds, m.applies, m.droppedFlows,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Applied records one apply's result (res is nil when err is not).
func (m *Metrics) Applied(res *reconcile.Result, err error) {
	if err != nil || res == nil {
		m.applies.WithLabelValues("error").Inc()
		return
	}
	m.applySeconds.Observe(res.Duration.Seconds())
	m.nftablesSeconds.Observe(res.FirewallTime.Seconds())
	m.droppedFlows.Add(float64(len(res.DroppedFlows)))
	if res.Changed {
		m.applies.WithLabelValues("changed").Inc()
	} else {
		m.applies.WithLabelValues("unchanged").Inc()
	}
}

// Handler serves the registry.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{})
}
