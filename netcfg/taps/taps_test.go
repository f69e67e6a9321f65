package taps

import (
	"strings"
	"testing"
)

func TestNames(t *testing.T) {
	m, p, err := Names("ws-a1b2c3d4e5")
	if err != nil || m != "wsm-a1b2c3d4e5" || p != "wsp-a1b2c3d4e5" {
		t.Fatalf("Names = %q %q %v", m, p, err)
	}
	if _, _, err := Names("ws-" + strings.Repeat("a", 11)); err != nil {
		t.Fatalf("11 chars: %v", err)
	}
	for _, bad := range []string{"", "ws-", "wx-abc", "ws-ABC", "ws-" + strings.Repeat("a", 12), "ws-a_b"} {
		if _, _, err := Names(bad); err == nil {
			t.Errorf("Names(%q) accepted", bad)
		}
	}
	id, role, ok := Parse("wsp-a1b2c3d4e5")
	if !ok || id != "ws-a1b2c3d4e5" || role != "primary" {
		t.Fatalf("Parse = %q %q %v", id, role, ok)
	}
	if _, _, ok := Parse("eth0"); ok {
		t.Fatal("Parse(eth0) ok")
	}
}

func TestMACs(t *testing.T) {
	m1, p1, err := MACs("ws-a1b2c3d4e5")
	if err != nil {
		t.Fatal(err)
	}
	m2, p2, _ := MACs("ws-a1b2c3d4e5")
	if m1.String() != m2.String() || p1.String() != p2.String() || m1.String() == p1.String() {
		t.Fatalf("MACs not stable/distinct: %s %s %s %s", m1, m2, p1, p2)
	}
	if m1[0]&1 != 0 || m1[0]&2 == 0 {
		t.Fatalf("%s is not locally administered unicast", m1)
	}
}
