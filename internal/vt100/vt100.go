// Package vt100 is a small terminal emulator for tests: it applies the output of a
// program written for a VT100 (printable text, CR, LF, BS, cursor addressing, erase in
// line and display; other escape sequences are ignored) to an 80×24 screen, so a test
// can read what an operator would see. The init console's tests and the appliance's VM
// tests use it.
package vt100

import (
	"strconv"
	"strings"
	"sync"
)

// Screen is a terminal screen. It is an io.Writer; safe for concurrent use.
type Screen struct {
	mu         sync.Mutex
	rows, cols int
	cells      [][]rune
	r, c       int // cursor, 0-based
	state      int // 0 text, 1 after ESC, 2 in CSI
	params     []byte
}

// New returns a blank screen.
func New(rows, cols int) *Screen {
	s := &Screen{rows: rows, cols: cols}
	s.clear()
	return s
}

func (s *Screen) clear() {
	s.cells = make([][]rune, s.rows)
	for i := range s.cells {
		s.cells[i] = blank(s.cols)
	}
}

func blank(n int) []rune {
	r := make([]rune, n)
	for i := range r {
		r[i] = ' '
	}
	return r
}

// Write applies terminal output.
func (s *Screen) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, b := range p {
		s.byte(b)
	}
	return len(p), nil
}

func (s *Screen) byte(b byte) {
	switch s.state {
	case 1:
		switch b {
		case '[':
			s.state, s.params = 2, s.params[:0]
		case 'c': // reset
			s.clear()
			s.r, s.c, s.state = 0, 0, 0
		default:
			s.state = 0 // ESC x: ignored
		}
		return
	case 2:
		if b >= 0x40 && b <= 0x7e {
			s.csi(b)
			s.state = 0
			return
		}
		s.params = append(s.params, b)
		return
	}
	switch b {
	case 0x1b:
		s.state = 1
	case '\r':
		s.c = 0
	case '\n':
		s.lineFeed()
	case '\b':
		if s.c > 0 {
			s.c--
		}
	case '\t':
		s.c = (s.c/8 + 1) * 8
		if s.c >= s.cols {
			s.c = s.cols - 1
		}
	case 0x07, 0x00:
	default:
		if b < 0x20 {
			return
		}
		if s.c >= s.cols { // autowrap
			s.c = 0
			s.lineFeed()
		}
		s.cells[s.r][s.c] = rune(b)
		s.c++
	}
}

func (s *Screen) lineFeed() {
	if s.r < s.rows-1 {
		s.r++
		return
	}
	copy(s.cells, s.cells[1:])
	s.cells[s.rows-1] = blank(s.cols)
}

func (s *Screen) csi(final byte) {
	ps := strings.TrimLeft(string(s.params), "?")
	var args []int
	for _, f := range strings.Split(ps, ";") {
		n, _ := strconv.Atoi(f)
		args = append(args, n)
	}
	arg := func(i, def int) int {
		if i < len(args) && args[i] > 0 {
			return args[i]
		}
		return def
	}
	switch final {
	case 'H', 'f':
		s.r, s.c = clamp(arg(0, 1)-1, s.rows), clamp(arg(1, 1)-1, s.cols)
	case 'A':
		s.r = clamp(s.r-arg(0, 1), s.rows)
	case 'B':
		s.r = clamp(s.r+arg(0, 1), s.rows)
	case 'C':
		s.c = clamp(s.c+arg(0, 1), s.cols)
	case 'D':
		s.c = clamp(s.c-arg(0, 1), s.cols)
	case 'J':
		switch arg(0, 0) {
		case 0:
			s.eraseLine(s.r, s.c, s.cols)
			for r := s.r + 1; r < s.rows; r++ {
				s.cells[r] = blank(s.cols)
			}
		case 1:
			for r := 0; r < s.r; r++ {
				s.cells[r] = blank(s.cols)
			}
			s.eraseLine(s.r, 0, s.c+1)
		case 2, 3:
			s.clear()
		}
	case 'K':
		switch arg(0, 0) {
		case 0:
			s.eraseLine(s.r, s.c, s.cols)
		case 1:
			s.eraseLine(s.r, 0, s.c+1)
		case 2:
			s.eraseLine(s.r, 0, s.cols)
		}
	}
	// 'm' (attributes), 'h'/'l' (modes) and the rest change nothing we read.
}

func (s *Screen) eraseLine(r, from, to int) {
	if to > s.cols {
		to = s.cols
	}
	for c := from; c < to; c++ {
		s.cells[r][c] = ' '
	}
}

func clamp(v, n int) int {
	if v < 0 {
		return 0
	}
	if v >= n {
		return n - 1
	}
	return v
}

// Lines returns the screen's rows without trailing spaces.
func (s *Screen) Lines() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, s.rows)
	for i, r := range s.cells {
		out[i] = strings.TrimRight(string(r), " ")
	}
	return out
}

// String is the screen as text, one row a line.
func (s *Screen) String() string { return strings.Join(s.Lines(), "\n") }

// Contains reports whether some row contains sub.
func (s *Screen) Contains(sub string) bool {
	for _, l := range s.Lines() {
		if strings.Contains(l, sub) {
			return true
		}
	}
	return false
}

// Row returns the row holding sub, or "".
func (s *Screen) Row(sub string) string {
	for _, l := range s.Lines() {
		if strings.Contains(l, sub) {
			return l
		}
	}
	return ""
}
