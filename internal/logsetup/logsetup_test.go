package logsetup

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/execq/execq/internal/envflag"
)

// parse builds a Config from args and variables, as a daemon does.
func parse(t *testing.T, env map[string]string, args ...string) (Config, error) {
	t.Helper()
	c := Defaults()
	f := envflag.New("prog", func(k string) string { return env[k] })
	f.Stdout, f.Stderr = io.Discard, io.Discard
	c.Flags(f)
	return c, f.Parse(args)
}

// logTo logs one line through c to a file and returns what was written.
func logTo(t *testing.T, c Config, env map[string]string, stream func(*os.File) string) string {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if stream != nil {
		env = map[string]string{"JOURNAL_STREAM": stream(f)}
	}
	log := c.New(f, func(k string) string { return env[k] })
	log.Debug("hidden at info")
	log.Info("hello", "command_id", "c1")
	raw, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	return string(raw)
}

func devIno(f *os.File) string {
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		panic(err)
	}
	return fmt.Sprintf("%d:%d", st.Dev, st.Ino)
}

// TestFlags: the defaults, the variables, the flags, and errors that name
// what to fix.
func TestFlags(t *testing.T) {
	c, err := parse(t, nil)
	if err != nil || c.Format != Auto || c.Level != 0 {
		t.Fatalf("defaults: %+v %v", c, err)
	}
	c, err = parse(t, map[string]string{"EXECQ_LOG_FORMAT": "JSON", "EXECQ_LOG_LEVEL": "debug"})
	if err != nil || c.Format != JSON || c.Level != -4 {
		t.Fatalf("variables: %+v %v", c, err)
	}
	c, err = parse(t, map[string]string{"EXECQ_LOG_FORMAT": "json"}, "--log-format", "text", "--log-level", "error")
	if err != nil || c.Format != Text || c.Level != 8 {
		t.Fatalf("flags over variables: %+v %v", c, err)
	}
	if _, err := parse(t, map[string]string{"EXECQ_LOG_FORMAT": "xml"}); err == nil || !strings.Contains(err.Error(), "EXECQ_LOG_FORMAT") {
		t.Fatalf("bad variable: %v", err)
	}
	if _, err := parse(t, nil, "--log-level", "loud"); err == nil || !strings.Contains(err.Error(), "log-level") {
		t.Fatalf("bad flag: %v", err)
	}
}

// TestFormats: json and text as asked; auto is JSON when the output is not
// a terminal; the level filters.
func TestFormats(t *testing.T) {
	for _, tc := range []struct {
		format Format
		json   bool
	}{{JSON, true}, {Auto, true}, {Text, false}} {
		out := logTo(t, Config{Format: tc.format}, nil, nil)
		if strings.Contains(out, "hidden") || strings.Count(out, "\n") != 1 {
			t.Errorf("%s: want one line at info: %q", tc.format, out)
		}
		var line map[string]any
		isJSON := json.Unmarshal([]byte(out), &line) == nil
		if isJSON != tc.json {
			t.Errorf("%s: JSON=%v, want %v: %q", tc.format, isJSON, tc.json, out)
		}
		if tc.json && (line["command_id"] != "c1" || line["time"] == nil) {
			t.Errorf("%s: %q lacks command_id or time", tc.format, out)
		}
		if !tc.json && (!strings.Contains(out, "level=INFO") || !strings.Contains(out, "time=")) {
			t.Errorf("%s: %q", tc.format, out)
		}
	}
}

// TestJournal: writing to the journal stream ($JOURNAL_STREAM names the
// output's device and inode) drops the time, which the journal records
// itself; a variable naming another stream (inherited by a child whose
// stderr goes elsewhere) does not.
func TestJournal(t *testing.T) {
	for _, format := range []Format{JSON, Text} {
		out := logTo(t, Config{Format: format}, nil, devIno)
		if strings.Contains(out, "time") || !strings.Contains(out, "hello") {
			t.Errorf("%s to the journal: %q, want no time", format, out)
		}
	}
	other, err := os.Create(filepath.Join(t.TempDir(), "other"))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	out := logTo(t, Config{Format: JSON}, nil, func(*os.File) string { return devIno(other) })
	if !strings.Contains(out, `"time"`) {
		t.Errorf("JOURNAL_STREAM of another file: %q, want the time kept", out)
	}
}
