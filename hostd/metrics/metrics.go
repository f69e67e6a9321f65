// Package metrics is hostd's Prometheus exporter, under the deskhost_hostd_ prefix.
//
// Host metrics: capacity (CPUs, memory, the WorkSpace quota), memory and vCPUs reserved by
// WorkSpaces whose desired state runs a VM, WorkSpaces by state, guest memory scrub and
// reconcile durations.
//
// The guide's CloudWatch metrics that hostd knows (guide catalog §20): Available,
// Unhealthy, Stopped and Maintenance, one series per WorkSpace labelled directory_id and
// workspace_id (1 or 0; sum() aggregates them as CloudWatch does), the guide's name and
// meaning in each HELP text. The connection metrics are zeroclient's.
//
// Gauges are read from the store at each scrape, so they cannot drift from it.
package metrics

import (
	"bufio"
	"bytes"
	"fmt"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"deskhost/hostd/store"
	"deskhost/hostd/workspace"
	"deskhost/internal/catalog"
)

const (
	namespace = "deskhost"
	subsystem = "hostd"
)

// Options say where the scrape-time gauges come from.
type Options struct {
	Store        store.Store
	ComputeTypes map[catalog.ComputeType]catalog.Hardware
	Quota        int // the WorkSpace quota (hostd.quotas.workspaces)
	// MemTotal returns the host's memory in bytes; default: /proc/meminfo's MemTotal.
	MemTotal func() (uint64, error)
	// CPUs is the host's CPU count; default runtime.NumCPU().
	CPUs int
}

// Metrics is hostd's registry and the collectors its components feed.
type Metrics struct {
	Registry *prometheus.Registry

	scrubSeconds     prometheus.Histogram
	scrubBytes       prometheus.Counter
	reconcileSeconds prometheus.Histogram
}

func name(n string) string { return prometheus.BuildFQName(namespace, subsystem, n) }

// New registers hostd's collectors on a fresh registry.
func New(o Options) *Metrics {
	if o.MemTotal == nil {
		o.MemTotal = memTotal
	}
	if o.CPUs == 0 {
		o.CPUs = runtime.NumCPU()
	}
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		scrubSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: name("memory_scrub_seconds"),
			Help:    "Time to zero and verify a WorkSpace's guest RAM after its VM is gone.",
			Buckets: []float64{0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}}),
		scrubBytes: prometheus.NewCounter(prometheus.CounterOpts{Name: name("memory_scrubbed_bytes_total"),
			Help: "Guest RAM zeroed and verified after WorkSpaces' VMs were gone."}),
		reconcileSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: name("reconcile_seconds"),
			Help:    "Time of one reconcile of a WorkSpace (store record against libvirt).",
			Buckets: []float64{0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120}}),
	}
	m.Registry.MustRegister(m.scrubSeconds, m.scrubBytes, m.reconcileSeconds, newStateCollector(o),
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Scrubbed records a guest memory scrub (the controller's hook).
func (m *Metrics) Scrubbed(bytes uint64, d time.Duration) {
	m.scrubSeconds.Observe(d.Seconds())
	m.scrubBytes.Add(float64(bytes))
}

// Reconciled records one reconcile's duration (the controller's hook).
func (m *Metrics) Reconciled(d time.Duration) { m.reconcileSeconds.Observe(d.Seconds()) }

// Handler serves the registry in Prometheus' exposition formats.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// Guide metrics: the CloudWatch name and the guide's meaning lead the HELP text.
var guideMetrics = []struct {
	name, cloudWatch, help string
	state                  workspace.State
	autoStopOnly           bool
}{
	{"workspace_available", "Available", "The number of WorkSpaces that returned a healthy status. 1 while the WorkSpace is AVAILABLE.", workspace.Available, false},
	{"workspace_unhealthy", "Unhealthy", "The number of WorkSpaces that returned an unhealthy status. 1 while the WorkSpace is UNHEALTHY.", workspace.Unhealthy, false},
	{"workspace_stopped", "Stopped", "The number of WorkSpaces that are stopped. 1 while the WorkSpace is STOPPED.", workspace.Stopped, false},
	{"workspace_maintenance", "Maintenance", "The number of WorkSpaces that are under maintenance. 1 while the WorkSpace is in MAINTENANCE; AutoStop WorkSpaces only.", workspace.Maintenance, true},
}

// allStates are the states WorkSpaces by state reports, zero or not.
var allStates = []workspace.State{workspace.Pending, workspace.Available, workspace.Impaired, workspace.Unhealthy,
	workspace.Rebooting, workspace.Starting, workspace.Rebuilding, workspace.Restoring, workspace.Maintenance,
	workspace.AdminMaintenance, workspace.Terminating, workspace.Terminated, workspace.Suspended, workspace.Updating,
	workspace.Stopping, workspace.Stopped, workspace.Error}

type stateCollector struct {
	o                                                  Options
	byState, quota, memCap, cpus, memReserved, vcpuRes *prometheus.Desc
	guide                                              []*prometheus.Desc
}

func newStateCollector(o Options) *stateCollector {
	c := &stateCollector{o: o,
		byState: prometheus.NewDesc(name("workspaces"), "WorkSpaces by state.", []string{"state"}, nil),
		quota:   prometheus.NewDesc(name("workspace_quota"), "Capacity: the most WorkSpaces this host accepts (hostd.quotas.workspaces).", nil, nil),
		memCap:  prometheus.NewDesc(name("memory_capacity_bytes"), "Capacity: the host's memory (MemTotal).", nil, nil),
		cpus:    prometheus.NewDesc(name("cpus"), "Capacity: the host's CPUs.", nil, nil),
		memReserved: prometheus.NewDesc(name("memory_reserved_bytes"),
			"Guest memory reserved by WorkSpaces whose desired state runs a VM (their compute type's memory).", nil, nil),
		vcpuRes: prometheus.NewDesc(name("vcpus_reserved"), "vCPUs reserved by WorkSpaces whose desired state runs a VM.", nil, nil),
	}
	for _, g := range guideMetrics {
		c.guide = append(c.guide, prometheus.NewDesc(name(g.name), "CloudWatch "+g.cloudWatch+": "+g.help,
			[]string{"directory_id", "workspace_id"}, nil))
	}
	return c
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range append([]*prometheus.Desc{c.byState, c.quota, c.memCap, c.cpus, c.memReserved, c.vcpuRes}, c.guide...) {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(c.quota, prometheus.GaugeValue, float64(c.o.Quota))
	ch <- prometheus.MustNewConstMetric(c.cpus, prometheus.GaugeValue, float64(c.o.CPUs))
	if mem, err := c.o.MemTotal(); err != nil {
		ch <- prometheus.NewInvalidMetric(c.memCap, err)
	} else {
		ch <- prometheus.MustNewConstMetric(c.memCap, prometheus.GaugeValue, float64(mem))
	}
	var all []workspace.Workspace
	err := c.o.Store.View(func(tx store.Tx) error {
		var err error
		all, err = store.ListJSON[workspace.Workspace](tx, store.Workspaces)
		return err
	})
	if err != nil {
		err = fmt.Errorf("read WorkSpaces: %w", err)
		for _, d := range append([]*prometheus.Desc{c.byState, c.memReserved, c.vcpuRes}, c.guide...) {
			ch <- prometheus.NewInvalidMetric(d, err)
		}
		return
	}
	count := map[workspace.State]int{}
	var memMiB, vcpus int
	for i := range all {
		w := &all[i]
		count[w.State]++
		if running, ok := w.WantsRunning(); running && ok {
			hw := c.o.ComputeTypes[catalog.ComputeType(w.Properties.ComputeTypeName)]
			memMiB += hw.MemoryMiB
			vcpus += hw.VCPUs
		}
		if w.State == workspace.Terminated {
			continue
		}
		for j, g := range guideMetrics {
			if g.autoStopOnly && w.Properties.RunningMode != workspace.AutoStop {
				continue
			}
			v := 0.0
			if w.State == g.state {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(c.guide[j], prometheus.GaugeValue, v, w.DirectoryID, w.ID)
		}
	}
	for _, s := range allStates {
		ch <- prometheus.MustNewConstMetric(c.byState, prometheus.GaugeValue, float64(count[s]), string(s))
	}
	ch <- prometheus.MustNewConstMetric(c.memReserved, prometheus.GaugeValue, float64(memMiB)*(1<<20))
	ch <- prometheus.MustNewConstMetric(c.vcpuRes, prometheus.GaugeValue, float64(vcpus))
}

// memTotal reads MemTotal from /proc/meminfo, in bytes.
func memTotal() (uint64, error) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] == "MemTotal:" {
			kb, err := strconv.ParseUint(f[1], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("/proc/meminfo MemTotal %q: %w", f[1], err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("/proc/meminfo has no MemTotal")
}
