// Package grafana holds the Grafana dashboard for deskhost's exporters (deskhost.json);
// its test checks the dashboard against the exporters themselves.
package grafana

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	hostdmetrics "deskhost/hostd/metrics"
	"deskhost/hostd/store"
	"deskhost/hostd/workspace"
	"deskhost/internal/testenv"
	netcfgmetrics "deskhost/netcfg/metrics"
	"deskhost/netcfg/reconcile"
	zcmetrics "deskhost/zeroclient/metrics"
)

type dashboard struct {
	Inputs []struct {
		Name, Type string
		PluginID   string `json:"pluginId"`
	} `json:"__inputs"`
	Title, UID    string
	SchemaVersion int `json:"schemaVersion"`
	Templating    struct {
		List []struct {
			Name       string
			Datasource struct{ UID string }
			Definition string
		}
	}
	Panels []struct {
		ID         int
		Type       string
		Title      string
		Datasource struct{ Type, UID string }
		GridPos    struct{ H, W, X, Y int } `json:"gridPos"`
		Targets    []struct {
			RefID      string `json:"refId"`
			Expr       string
			Datasource struct{ UID string }
		}
	}
}

// TestDashboard: deskhost.json is a dashboard Grafana imports (its datasource an import
// input, unique panel ids, every panel placed and queried), every query is valid PromQL
// (promtool check rules) and names only metrics deskhost's exporters have.
func TestDashboard(t *testing.T) {
	b, err := os.ReadFile("deskhost.json")
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	dec := json.NewDecoder(strings.NewReader(string(b)))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("deskhost.json: %v", err)
	}
	if d.Title == "" || d.UID == "" || d.SchemaVersion < 30 || len(d.Panels) == 0 {
		t.Fatalf("title %q uid %q schemaVersion %d panels %d", d.Title, d.UID, d.SchemaVersion, len(d.Panels))
	}
	if len(d.Inputs) != 1 || d.Inputs[0].Name != "DS_PROMETHEUS" || d.Inputs[0].Type != "datasource" || d.Inputs[0].PluginID != "prometheus" {
		t.Fatalf("__inputs %+v: want one prometheus datasource input DS_PROMETHEUS", d.Inputs)
	}
	const ds = "${DS_PROMETHEUS}"
	exists := exporterMetrics(t)
	nameRe := regexp.MustCompile(`\bdeskhost_[a-z0-9_]+`)
	ids := map[int]bool{}
	var exprs []string
	uses := func(where, expr string) {
		names := nameRe.FindAllString(expr, -1)
		if len(names) == 0 {
			t.Errorf("%s: %q names no deskhost metric", where, expr)
		}
		for _, n := range names {
			if !exists[n] {
				t.Errorf("%s: %s is not a metric deskhost exports", where, n)
			}
		}
	}
	for _, v := range d.Templating.List {
		if v.Datasource.UID != ds {
			t.Errorf("variable %s: datasource %q, want %s", v.Name, v.Datasource.UID, ds)
		}
		uses("variable "+v.Name, v.Definition)
	}
	for _, p := range d.Panels {
		where := fmt.Sprintf("panel %d %q", p.ID, p.Title)
		if ids[p.ID] || p.ID == 0 {
			t.Errorf("%s: id missing or not unique", where)
		}
		ids[p.ID] = true
		if p.Type == "" || p.GridPos.W == 0 || p.GridPos.H == 0 || p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("%s: type %q gridPos %+v", where, p.Type, p.GridPos)
		}
		if p.Datasource.UID != ds || len(p.Targets) == 0 {
			t.Errorf("%s: datasource %q, %d targets", where, p.Datasource.UID, len(p.Targets))
		}
		for _, tg := range p.Targets {
			if tg.RefID == "" || tg.Datasource.UID != ds {
				t.Errorf("%s: target %q refId %q datasource %q", where, tg.Expr, tg.RefID, tg.Datasource.UID)
			}
			uses(where, tg.Expr)
			exprs = append(exprs, tg.Expr)
		}
	}
	checkPromQL(t, exprs)
}

// checkPromQL has promtool parse every query, as recording rules with Grafana's
// variables filled in.
func checkPromQL(t *testing.T, exprs []string) {
	path, err := exec.LookPath("promtool")
	if err != nil {
		testenv.Missing(t, "promtool is missing (Debian package prometheus, scripts/packages/hostd.txt)")
	}
	fill := strings.NewReplacer("$__rate_interval", "5m", "$host", ".*", "$directory", ".*")
	var rules strings.Builder
	rules.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	for i, e := range exprs {
		q, _ := json.Marshal(fill.Replace(e))
		fmt.Fprintf(&rules, "      - record: dashboard:query%d\n        expr: %s\n", i, q)
	}
	file := filepath.Join(t.TempDir(), "rules.yml")
	if err := os.WriteFile(file, []byte(rules.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(path, "check", "rules", file).CombinedOutput(); err != nil {
		t.Errorf("promtool check rules (the dashboard's queries): %v\n%s", err, out)
	}
}

// exporterMetrics returns every series name the three exporters produce (a histogram's
// _bucket, _sum and _count), each fed once so that its labelled series exist.
func exporterMetrics(t *testing.T) map[string]bool {
	st, err := store.OpenBolt(filepath.Join(t.TempDir(), "hostd.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	w := workspace.Workspace{ID: "ws-0123456789", DirectoryID: "d-0123456789", State: workspace.Available,
		Properties: workspace.Properties{RunningMode: workspace.AutoStop, ComputeTypeName: "STANDARD"}}
	if err := st.Update(func(tx store.Tx) error { return store.PutJSON(tx, store.Workspaces, w.ID, w) }); err != nil {
		t.Fatal(err)
	}
	h := hostdmetrics.New(hostdmetrics.Options{Store: st, Quota: 1})
	h.Scrubbed(1, time.Second)
	h.Reconciled(time.Second)
	z := zcmetrics.New()
	l := []string{w.DirectoryID, w.ID}
	z.ConnectionAttempt.WithLabelValues(l...).Inc()
	z.ConnectionSuccess.WithLabelValues(l...).Inc()
	z.ConnectionFailure.WithLabelValues(l...).Inc()
	z.SessionLaunchTime.WithLabelValues(l...).Observe(1)
	z.SessionDisconnect.WithLabelValues(l...).Inc()
	z.UserConnected.WithLabelValues(l...).Set(1)
	z.InSessionLatency.WithLabelValues(l...).Set(0.02)
	z.Logins.WithLabelValues(w.DirectoryID, "ok").Inc()
	n := netcfgmetrics.New()
	n.Applied(&reconcile.Result{Changed: true, Duration: time.Millisecond}, nil)

	names := map[string]bool{}
	for _, g := range []prometheus.Gatherer{h.Registry, z.Registry, n.Registry} {
		fams, err := g.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range fams {
			names[f.GetName()] = true
			if f.GetType() == dto.MetricType_HISTOGRAM {
				for _, s := range []string{"_bucket", "_sum", "_count"} {
					names[f.GetName()+s] = true
				}
			}
		}
	}
	return names
}
