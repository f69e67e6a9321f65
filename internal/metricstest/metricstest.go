// Package metricstest checks a deskhost Prometheus exporter's output in tests: it parses
// (expfmt), follows the conventions (promlint, the linter of `promtool check metrics`),
// lives under the deskhost_ namespace, and passes `promtool check metrics` itself when
// promtool is installed (Debian package prometheus; CI=true requires it).
package metricstest

import (
	"bytes"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"deskhost/internal/testenv"
)

// Namespace prefixes every deskhost metric.
const Namespace = "deskhost_"

// foreign are the standard collectors' prefixes, which keep their own names.
var foreign = []string{"go_", "process_", "promhttp_"}

// Scrape GETs url and returns the body.
func Scrape(t testing.TB, url string) []byte {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("scrape %s: %s %v\n%s", url, res.Status, err, b)
	}
	return b
}

// Check parses an exposition in the text format and lints it; it returns the families by
// name.
func Check(t testing.TB, exposition []byte) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(exposition))
	if err != nil {
		t.Fatalf("exposition does not parse: %v\n%s", err, exposition)
	}
	for name := range fams {
		if !strings.HasPrefix(name, Namespace) && !hasAnyPrefix(name, foreign) {
			t.Errorf("metric %s is outside the %s namespace", name, Namespace)
		}
	}
	problems, err := promlint.New(bytes.NewReader(exposition)).Lint()
	if err != nil {
		t.Fatalf("promlint: %v", err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	promtool(t, exposition)
	return fams
}

func promtool(t testing.TB, exposition []byte) {
	t.Helper()
	path, err := exec.LookPath("promtool")
	if err != nil {
		if testenv.CI() {
			t.Fatal("CI=true and promtool is missing (Debian package prometheus, scripts/packages/hostd.txt)")
		}
		t.Log("promtool is not installed (apt-get install prometheus): promlint only")
		return
	}
	cmd := exec.Command(path, "check", "metrics")
	cmd.Stdin = bytes.NewReader(exposition)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}

func hasAnyPrefix(s string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// Value returns the value of the series of family name whose labels include want, and
// whether there is one (counters, gauges and untyped; a histogram's sample count).
func Value(fams map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if have[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		case m.Untyped != nil:
			return m.Untyped.GetValue(), true
		}
	}
	return 0, false
}
