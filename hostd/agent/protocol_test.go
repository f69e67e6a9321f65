package agent

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

func TestCheckPath(t *testing.T) {
	good := []string{"/sysroot/a", "/home/alice/file.txt", "/sysroot/var/log/x", "/home/.hidden"}
	bad := []string{"", "/", "/sysroot", "/home", "/sysroot/", "/home/", "/etc/passwd", "home/a",
		"/sysroot/../etc/passwd", "/home/a/../../etc", "/home/a/..", "/home//a", "/home/a/./b",
		"/sysrootx/a", "/homes/a", "/home/a\x00b", "/proc/self/mem"}
	for _, p := range good {
		if err := CheckPath(p); err != nil {
			t.Errorf("CheckPath(%q) = %v, want ok", p, err)
		}
	}
	for _, p := range bad {
		if err := CheckPath(p); err == nil {
			t.Errorf("CheckPath(%q) accepted", p)
		}
	}
}

func TestRequestRoundTrip(t *testing.T) {
	reqs := []Request{
		{ID: 1, Op: OpStatus},
		{ID: 2, Op: OpFillMemory, Marker: "MARKER-12345678", Percent: 80},
		{ID: 3, Op: OpWriteFile, Path: "/home/a/b", Data: "x\ny\x00z\"ü"},
		{ID: 4, Op: OpReadFile, Path: "/sysroot/etc/os-release"},
		{ID: 5, Op: OpShutdown, Reboot: true},
		{ID: 6, Op: OpCrash},
		{ID: 7, Op: OpClipboardSet, Data: "copied ✓\nline 2"},
		{ID: 8, Op: OpClipboardGet},
		{ID: 9, Op: OpSilence, Seconds: 30},
		{ID: 10, Op: OpReadChunk, Path: "/sysroot/boot/vmlinuz-6.1.0-28-amd64", Offset: 8 << 20, Length: MaxChunkBytes},
		{ID: 11, Op: OpAdopt},
	}
	for _, r := range reqs {
		line, err := Encode(r)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Count(string(line), "\n") != 1 || !strings.HasSuffix(string(line), "\n") {
			t.Errorf("%v: line %q is not one newline-terminated line", r, line)
		}
		got, err := DecodeRequest(line[:len(line)-1])
		if err != nil {
			t.Errorf("%v: %v", r, err)
		}
		if got != r {
			t.Errorf("round trip: %+v != %+v", got, r)
		}
	}
	// The wire form is what the brief documents.
	line, _ := Encode(Request{ID: 7, Op: OpShutdown, Reboot: true})
	if string(line) != `{"id":7,"op":"shutdown","reboot":true}`+"\n" {
		t.Errorf("wire form %s", line)
	}
}

func TestDecodeRequestErrors(t *testing.T) {
	for _, tc := range []struct{ line, want string }{
		{`not json`, "bad request"},
		{`{"id":1}`, "missing op"},
		{`{"id":1,"op":"fill-memory","marker":"short","percent":10}`, "marker"},
		{`{"id":1,"op":"fill-memory","marker":"long enough marker","percent":0}`, "percent"},
		{`{"id":1,"op":"fill-memory","marker":"long enough marker","percent":100}`, "percent"},
		{`{"id":1,"op":"write-file","path":"/etc/shadow","data":"x"}`, "not below"},
		{`{"id":1,"op":"read-file","path":"/home/../etc/shadow"}`, ".."},
		{`{"id":1,"op":"silence"}`, "seconds"},
		{`{"id":1,"op":"silence","seconds":3601}`, "seconds"},
		{`{"id":1,"op":"read-chunk","path":"/sysroot/boot/vmlinuz","offset":0}`, "length"},
		{`{"id":1,"op":"read-chunk","path":"/sysroot/boot/vmlinuz","length":8388609}`, "length"},
		{`{"id":1,"op":"read-chunk","path":"/sysroot/boot/vmlinuz","offset":-1,"length":1}`, "offset"},
		{`{"id":1,"op":"read-chunk","path":"/boot/vmlinuz","length":1}`, "not below"},
	} {
		r, err := DecodeRequest([]byte(tc.line))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %q", tc.line, err, tc.want)
		}
		if tc.line != "not json" && r.ID != 1 {
			t.Errorf("%s: id %d not kept for the error answer", tc.line, r.ID)
		}
	}
	// Unknown ops decode fine: the agent answers with an error naming them.
	if r, err := DecodeRequest([]byte(`{"id":9,"op":"frobnicate"}`)); err != nil || r.Op != "frobnicate" {
		t.Errorf("unknown op: %+v %v", r, err)
	}
}

func TestResponseWire(t *testing.T) {
	st := &Status{WorkspaceID: "ws-abc", Hostname: "ws-abc", UptimeMs: 5, RootMounted: true, MemTotalKiB: 1, MemAvailableKiB: 1, AgentVersion: Version}
	line, err := Encode(Response{ID: 3, OK: true, Status: st})
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(line, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"id", "ok", "workspaceId", "hostname", "uptimeMs", "rootMounted", "homeMounted", "memTotalKiB", "memAvailableKiB", "agentVersion"} {
		if _, ok := m[k]; !ok {
			t.Errorf("status response lacks %q: %s", k, line)
		}
	}
	if _, ok := m["error"]; ok {
		t.Errorf("ok response carries error: %s", line)
	}
	var back Response
	if err := json.Unmarshal(line, &back); err != nil || back.Status == nil || !reflect.DeepEqual(*back.Status, *st) {
		t.Errorf("decode: %+v %v", back, err)
	}
	line, _ = Encode(Response{ID: 4, Error: `unknown op "x"`})
	if string(line) != `{"id":4,"ok":false,"error":"unknown op \"x\""}`+"\n" {
		t.Errorf("error wire form %s", line)
	}
}

func TestClipboardSetRefused(t *testing.T) {
	for _, r := range []Request{
		{Op: OpClipboardSet, Data: strings.Repeat("x", MaxClipboardBytes+1)},
		{Op: OpClipboardSet, Data: "\xff\xfe"},
	} {
		if err := r.Validate(); err == nil || !strings.Contains(err.Error(), "clipboard-set") {
			t.Errorf("clipboard-set of %d bytes: %v", len(r.Data), err)
		}
	}
}
