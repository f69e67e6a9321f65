package hostconfig

import (
	"strings"
	"testing"
)

// hostd.metrics: a listen address is checked, and the section is strict.
func TestHostdMetrics(t *testing.T) {
	c, err := Parse([]byte(strings.Replace(good, "  computeTypes:", "  metrics: {listen: \"127.0.0.1:9171\"}\n  computeTypes:", 1)))
	if err != nil || c.Hostd.Metrics.Listen != "127.0.0.1:9171" {
		t.Fatalf("metrics.listen: %v %+v", err, c)
	}
	for _, tc := range []struct{ section, want string }{
		{"  metrics: {listen: 9171}\n", "hostd.metrics.listen"},
		{"  metrics: {listn: \"127.0.0.1:9171\"}\n", "listn"},
	} {
		_, err := Parse([]byte(strings.Replace(good, "  computeTypes:", tc.section+"  computeTypes:", 1)))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want an error naming %q", tc.section, err, tc.want)
		}
	}
}
