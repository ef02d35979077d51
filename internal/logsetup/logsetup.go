package logsetup

import (
	"fmt"
	"log/slog"
	"os"
	"strings"
	"syscall"

	"golang.org/x/term"

	"github.com/execq/execq/internal/envflag"
)

// Format is how log lines are written.
type Format string

// The formats --log-format accepts.
const (
	// Auto is Text when the output is a terminal, JSON otherwise (a file,
	// a pipe, the journal): what a person reads, or what a log shipper
	// parses.
	Auto Format = "auto"
	Text Format = "text"
	JSON Format = "json"
)

// MarshalText implements encoding.TextMarshaler (for the help's default).
func (f Format) MarshalText() ([]byte, error) { return []byte(f), nil }

// UnmarshalText accepts auto, text or json, in any case.
func (f *Format) UnmarshalText(b []byte) error {
	switch v := Format(strings.ToLower(string(b))); v {
	case Auto, Text, JSON:
		*f = v
		return nil
	}
	return fmt.Errorf("log format %q: want auto, text or json", b)
}

// Level is the least severe level logged: a slog.Level whose text form is
// lower case, as operators type it.
type Level slog.Level

// MarshalText implements encoding.TextMarshaler.
func (l Level) MarshalText() ([]byte, error) {
	return []byte(strings.ToLower(slog.Level(l).String())), nil
}

// UnmarshalText accepts debug, info, warn or error (slog's names, in any
// case).
func (l *Level) UnmarshalText(b []byte) error { return (*slog.Level)(l).UnmarshalText(b) }

// Config is how a daemon logs.
type Config struct {
	Format Format
	Level  Level
}

// Defaults is auto format at info level.
func Defaults() Config { return Config{Format: Auto, Level: Level(slog.LevelInfo)} }

// Flags registers --log-format and --log-level, with their variables, on f.
func (c *Config) Flags(f *envflag.Set) {
	f.Text(&c.Format, "log-format", "EXECQ_LOG_FORMAT", "auto, text or json",
		"log format: text, json, or auto (text on a terminal, else json)")
	f.Text(&c.Level, "log-level", "EXECQ_LOG_LEVEL", "debug, info, warn or error",
		"least severe level logged: debug, info, warn or error")
}

// New returns a logger writing to out (the daemon's stderr) as configured.
// getenv reads $JOURNAL_STREAM (os.Getenv if nil): when out is the stream
// systemd connected to the journal, lines carry no time, as the journal
// records its own for each.
func (c Config) New(out *os.File, getenv func(string) string) *slog.Logger {
	if getenv == nil {
		getenv = os.Getenv
	}
	opts := &slog.HandlerOptions{Level: slog.Level(c.Level)}
	if toJournal(out, getenv("JOURNAL_STREAM")) {
		opts.ReplaceAttr = dropTime
	}
	format := c.Format
	if format == Auto || format == "" {
		format = JSON
		if term.IsTerminal(int(out.Fd())) {
			format = Text
		}
	}
	if format == Text {
		return slog.New(slog.NewTextHandler(out, opts))
	}
	return slog.New(slog.NewJSONHandler(out, opts))
}

// toJournal reports whether out is the journal stream named by
// $JOURNAL_STREAM ("device:inode" of the socket). Checking the descriptor,
// not only the variable, matters: a child of a service inherits the
// variable with its stderr redirected elsewhere.
func toJournal(out *os.File, stream string) bool {
	if stream == "" {
		return false
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(out.Fd()), &st); err != nil {
		return false
	}
	return stream == fmt.Sprintf("%d:%d", st.Dev, st.Ino)
}

// dropTime removes the record's time.
func dropTime(groups []string, a slog.Attr) slog.Attr {
	if len(groups) == 0 && a.Key == slog.TimeKey {
		return slog.Attr{}
	}
	return a
}
