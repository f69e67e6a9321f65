package vt100

import "testing"

func TestScreen(t *testing.T) {
	s := New(4, 10)
	s.Write([]byte("hello\r\nworld"))
	s.Write([]byte("\x1b[1;3HXY\x1b[2;1H\x1b[Kab\x1b[0m"))
	if l := s.Lines(); l[0] != "heXYo" || l[1] != "ab" {
		t.Errorf("cursor addressing, erase line: %q", l)
	}
	// Writing past the last column wraps; past the last row scrolls.
	s.Write([]byte("\x1b[4;9Hlong text"))
	if l := s.Lines(); l[0] != "ab" || l[2] != "        lo" || l[3] != "ng text" {
		t.Errorf("wrap and scroll: %q", l)
	}
	s.Write([]byte("\x1b[H\x1b[2Jfresh"))
	if got := s.Lines(); got[0] != "fresh" || got[1] != "" {
		t.Errorf("after clear: %q", got)
	}
	if !s.Contains("fres") || s.Row("fresh") != "fresh" || s.Contains("hello") {
		t.Error("Contains/Row")
	}
}
