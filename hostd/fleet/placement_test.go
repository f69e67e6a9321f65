package fleet

import (
	"fmt"
	"strings"
	"testing"

	"deskhost/hostd/workspace"
	"deskhost/internal/catalog"
)

var value = map[catalog.ComputeType]catalog.Hardware{catalog.ComputeValue: {VCPUs: 1, MemoryMiB: 256}}

func host(id string, vcpus, mib int) Host {
	return Host{ID: id, Name: id, Capacity: Resources{vcpus, mib}, ComputeTypes: value}
}

// place runs placement n times, each WorkSpace added to its host's load as the service's
// transaction would, and returns the host of each.
func placeN(t *testing.T, hosts []Host, alive map[string]bool, n int) ([]string, error) {
	t.Helper()
	var all []workspace.Workspace
	var out []string
	for i := range n {
		loads := Loads(hosts, all)
		var cands []Candidate
		for _, h := range hosts {
			cands = append(cands, Candidate{Host: h, Alive: alive[h.ID], Load: loads[h.ID]})
		}
		h, err := Place(cands, catalog.ComputeValue)
		if err != nil {
			return out, err
		}
		out = append(out, h.ID)
		all = append(all, workspace.Workspace{ID: fmt.Sprintf("ws-%08d", i), Host: h.ID, State: workspace.Pending,
			Properties: workspace.Properties{ComputeTypeName: "VALUE"}})
	}
	return out, nil
}

func TestPlaceSpreads(t *testing.T) {
	hosts := []Host{host("host-a", 4, 2048), host("host-b", 4, 2048), host("host-c", 4, 2048)}
	alive := map[string]bool{"host-a": true, "host-b": true, "host-c": true}
	got, err := placeN(t, hosts, alive, 6)
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, h := range got {
		count[h]++
	}
	if count["host-a"] != 2 || count["host-b"] != 2 || count["host-c"] != 2 {
		t.Errorf("6 WorkSpaces on 3 equal hosts: %v (%v), want 2 each", count, got)
	}
	// A bigger host takes more, in proportion to its room.
	hosts = []Host{host("host-a", 8, 4096), host("host-b", 2, 1024)}
	got, _ = placeN(t, hosts, map[string]bool{"host-a": true, "host-b": true}, 6)
	count = map[string]int{}
	for _, h := range got {
		count[h]++
	}
	if count["host-a"] <= count["host-b"] {
		t.Errorf("the larger host took %d, the smaller %d: %v", count["host-a"], count["host-b"], got)
	}
}

func TestPlaceSkipsDrainingDownAndFull(t *testing.T) {
	d := host("host-d", 4, 2048)
	d.Draining = true
	x := host("host-x", 4, 2048)
	x.Down = true
	g := host("host-g", 4, 2048)
	g.ComputeTypes = map[catalog.ComputeType]catalog.Hardware{catalog.ComputeGraphics: {VCPUs: 4, MemoryMiB: 2048}}
	small := host("host-s", 2, 512)
	hosts := []Host{d, x, g, small, host("host-n", 4, 2048)}
	alive := map[string]bool{"host-d": true, "host-x": true, "host-g": true, "host-s": true} // host-n: no lease
	got, err := placeN(t, hosts, alive, 2)
	if err != nil || strings.Join(got, ",") != "host-s,host-s" {
		t.Fatalf("placed on %v (%v); only host-s is alive, ready, offers VALUE and has room", got, err)
	}
	_, err = placeN(t, hosts, alive, 3)
	if !catalog.IsError(err, catalog.ResourceUnavailable) {
		t.Fatalf("the third WorkSpace: %v, want ResourceUnavailableException", err)
	}
	for _, want := range []string{"host-d is draining", "host-x is down", "host-g has no hardware for compute type VALUE", "host-n is down", "host-s has 0 vCPU, 0 MiB free of 2 vCPU, 512 MiB"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the refusal does not say %q: %v", want, err)
		}
	}
	if _, err := Place(nil, catalog.ComputeValue); !catalog.IsError(err, catalog.ResourceUnavailable) || !strings.Contains(err.Error(), "no host") {
		t.Errorf("no hosts at all: %v", err)
	}
}

func TestPlaceCountsStoppedAndIgnoresTerminated(t *testing.T) {
	hosts := []Host{host("host-a", 1, 256), host("host-b", 1, 256)}
	all := []workspace.Workspace{
		{ID: "ws-1", Host: "host-a", State: workspace.Stopped, Properties: workspace.Properties{ComputeTypeName: "VALUE"}},
		{ID: "ws-2", Host: "host-b", State: workspace.Terminated, Properties: workspace.Properties{ComputeTypeName: "VALUE"}},
	}
	loads := Loads(hosts, all)
	if loads["host-a"].Reserved != (Resources{1, 256}) || loads["host-a"].Running != (Resources{}) || loads["host-b"].Workspaces != 0 {
		t.Fatalf("loads: %+v", loads)
	}
	h, err := Place([]Candidate{{hosts[0], true, loads["host-a"]}, {hosts[1], true, loads["host-b"]}}, catalog.ComputeValue)
	if err != nil || h.ID != "host-b" {
		t.Fatalf("placed on %s (%v): a STOPPED WorkSpace keeps its room, a TERMINATED one does not", h.ID, err)
	}
}

func TestJoinCodes(t *testing.T) {
	c := JoinCode([]byte("ca"), []byte("key"))
	if len(c) != 12 || c == JoinCode([]byte("ca2"), []byte("key")) || c == JoinCode([]byte("ca"), []byte("key2")) {
		t.Fatalf("code %q", c)
	}
	f := FormatCode(c)
	for _, typed := range []string{f, strings.ToLower(f), strings.ReplaceAll(f, "-", " "), c} {
		if n, err := NormalizeCode(typed); err != nil || n != c {
			t.Errorf("%q → %q, %v", typed, n, err)
		}
	}
	for _, bad := range []string{"", "ABCD-EFGH", "ABCD-EFGH-JKL1", "ABCD-EFGH-JKLM-N", "ABCD/EFGH/JKLM"} {
		if _, err := NormalizeCode(bad); !catalog.IsError(err, catalog.InvalidParameterValues) {
			t.Errorf("%q: %v", bad, err)
		}
	}
	for _, good := range []string{"dmi-uuid:4c4c4544-0035-3010-8044-b4c04f4b4e32", "mac:52:54:00:12:34:56"} {
		if err := CheckHardwareID(good); err != nil {
			t.Errorf("%s: %v", good, err)
		}
	}
	for _, bad := range []string{"", "4c4c4544", "uuid:x", "mac:", "dmi-uuid:a/b"} {
		if err := CheckHardwareID(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
