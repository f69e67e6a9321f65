package logbuf

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRingAndRotation(t *testing.T) {
	l := New(3)
	l.Write([]byte("one\ntwo\r\nthr"))
	l.Write([]byte("ee\nfour\n"))
	lines := l.Lines(0)
	if len(lines) != 3 || !strings.HasSuffix(lines[0], " two") || !strings.HasSuffix(lines[2], " four") {
		t.Fatalf("ring: %q", lines)
	}
	if got := l.Lines(1); len(got) != 1 || !strings.HasSuffix(got[0], " four") {
		t.Errorf("last line: %q", got)
	}
	p := filepath.Join(t.TempDir(), "log", "svc.log")
	if err := l.SetFile(p, 200, 2); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		l.Printf("line %02d with some padding", i)
	}
	l.Close()
	for _, f := range []string{p, p + ".1", p + ".2"} {
		st, err := os.Stat(f)
		if err != nil || st.Size() > 200 {
			t.Errorf("%s: %v %v", f, st, err)
		}
	}
	if _, err := os.Stat(p + ".3"); err == nil {
		t.Error("kept more than 2 old files")
	}
	b, _ := os.ReadFile(p)
	if !strings.Contains(string(b), "line 19") {
		t.Errorf("current file lacks the last line: %q", b)
	}
	if l.Seq() != 24 {
		t.Errorf("seq %d", l.Seq())
	}
}
