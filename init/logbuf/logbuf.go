// Package logbuf keeps a service's log: the last lines in memory (what the console shows,
// available before /perm is mounted and when it is not) and a file under /perm/log that is
// rotated by size (NAME.log, NAME.log.1, ...). Each line is stamped with the time.
package logbuf

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Log is one service's log. It is an io.Writer: bytes are split into lines.
type Log struct {
	mu      sync.Mutex
	lines   []string // ring
	next    int      // where the next line goes
	full    bool
	partial []byte
	seq     uint64 // lines ever written

	file     *os.File
	path     string
	size     int64
	maxBytes int64
	keep     int
	fileErr  error
	now      func() time.Time
}

// New returns a log keeping ring lines in memory.
func New(ring int) *Log {
	if ring < 1 {
		ring = 1
	}
	return &Log{lines: make([]string, ring), now: time.Now}
}

// SetFile starts copying lines (from now on, and the ones in memory first) to path,
// rotated at maxBytes with keep old files.
func (l *Log) SetFile(path string, maxBytes int64, keep int) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return err
	}
	st, _ := f.Stat()
	l.file, l.path, l.maxBytes, l.keep, l.size = f, path, maxBytes, keep, st.Size()
	for _, line := range l.snapshot(0) {
		l.writeFile(line)
	}
	return nil
}

// Write adds p, split into lines (a trailing partial line waits for its end).
func (l *Log) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	data := append(l.partial, p...)
	for {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			break
		}
		l.add(string(bytes.TrimRight(data[:i], "\r")))
		data = data[i+1:]
	}
	// Bound a line that never ends.
	if len(data) > 16<<10 {
		l.add(string(data))
		data = nil
	}
	l.partial = append([]byte(nil), data...)
	return len(p), nil
}

// Printf adds one line.
func (l *Log) Printf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.add(fmt.Sprintf(format, args...))
}

func (l *Log) add(s string) {
	line := l.now().UTC().Format("2006-01-02T15:04:05.000Z ") + s
	l.lines[l.next] = line
	l.next = (l.next + 1) % len(l.lines)
	if l.next == 0 {
		l.full = true
	}
	l.seq++
	l.writeFile(line)
}

func (l *Log) writeFile(line string) {
	if l.file == nil {
		return
	}
	if l.maxBytes > 0 && l.size+int64(len(line))+1 > l.maxBytes {
		l.rotate()
		if l.file == nil {
			return
		}
	}
	n, err := l.file.WriteString(line + "\n")
	l.size += int64(n)
	if err != nil && l.fileErr == nil {
		l.fileErr = err
	}
}

func (l *Log) rotate() {
	l.file.Close()
	l.file = nil
	for i := l.keep - 1; i >= 1; i-- {
		_ = os.Rename(fmt.Sprintf("%s.%d", l.path, i), fmt.Sprintf("%s.%d", l.path, i+1))
	}
	if l.keep > 0 {
		_ = os.Rename(l.path, l.path+".1")
	} else {
		_ = os.Remove(l.path)
	}
	f, err := os.OpenFile(l.path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o640)
	if err != nil {
		l.fileErr = err
		return
	}
	l.file, l.size = f, 0
}

// Lines returns the lines in memory, oldest first (at most n; n <= 0: all).
func (l *Log) Lines(n int) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.snapshot(n)
}

func (l *Log) snapshot(n int) []string {
	var out []string
	if l.full {
		out = append(out, l.lines[l.next:]...)
	}
	out = append(out, l.lines[:l.next]...)
	if n > 0 && len(out) > n {
		out = out[len(out)-n:]
	}
	return out
}

// Seq counts the lines ever written (the console redraws when it changes).
func (l *Log) Seq() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.seq
}

// FileError is the first error writing the file, if any.
func (l *Log) FileError() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.fileErr
}

// Sync flushes the file.
func (l *Log) Sync() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.file != nil {
		_ = l.file.Sync()
	}
}

// Close closes the file; the memory ring stays readable.
func (l *Log) Close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.file != nil {
		_ = l.file.Sync()
		_ = l.file.Close()
		l.file = nil
	}
}
