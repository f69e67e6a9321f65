// Package logging is the one log setup of deskhost's daemons (hostd, zeroclient, netcfg,
// libvirtrun, imagebuild serve): log/slog as text or JSON on stderr, chosen with
// --log-format and --log-level.
//
// Every daemon logs with the same keys, so one query works across them: an error is
// "err" (its message), a duration is a time.Duration value (slog.Duration: "1.5s" in
// text, nanoseconds in JSON), never a pre-formatted string or float. A test in this
// package checks the repository's log calls for both.
package logging

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
)

// Formats.
const (
	Text = "text"
	JSON = "json"
)

// Options choose the handler.
type Options struct {
	Format string     // Text (default) or JSON
	Level  slog.Level // default Info
}

// New returns a logger writing to w in o's format.
func New(w io.Writer, o Options) (*slog.Logger, error) {
	ho := &slog.HandlerOptions{Level: o.Level}
	switch o.Format {
	case "", Text:
		return slog.New(slog.NewTextHandler(w, ho)), nil
	case JSON:
		return slog.New(slog.NewJSONHandler(w, ho)), nil
	}
	return nil, fmt.Errorf("log format %q: want %s or %s", o.Format, Text, JSON)
}

// Flags are a daemon's --log-format and --log-level.
type Flags struct {
	format, level string
	debug         bool
}

// Register adds --log-format and --log-level to fs.
func Register(fs *flag.FlagSet) *Flags {
	f := &Flags{}
	fs.StringVar(&f.format, "log-format", Text, "log format: text or json")
	fs.StringVar(&f.level, "log-level", "info", "log level: debug, info, warn or error")
	return f
}

// Debug forces the debug level (a daemon's older --debug flag).
func (f *Flags) Debug(on bool) { f.debug = f.debug || on }

// Options returns the parsed flags, or an error naming the bad one.
func (f *Flags) Options() (Options, error) {
	var o Options
	if err := o.Level.UnmarshalText([]byte(f.level)); err != nil {
		return o, fmt.Errorf("--log-level %q: want debug, info, warn or error", f.level)
	}
	if f.debug {
		o.Level = slog.LevelDebug
	}
	if f.format != Text && f.format != JSON {
		return o, fmt.Errorf("--log-format %q: want %s or %s", f.format, Text, JSON)
	}
	o.Format = f.format
	return o, nil
}

// Logger returns the logger the flags ask for, writing to w.
func (f *Flags) Logger(w io.Writer) (*slog.Logger, error) {
	o, err := f.Options()
	if err != nil {
		return nil, err
	}
	return New(w, o)
}
