package envflag

import (
	"bytes"
	"errors"
	"flag"
	"log/slog"
	"strings"
	"testing"
	"time"
)

type config struct {
	listen string
	conns  int
	cap    int64
	ttl    time.Duration
	admin  bool
}

func defaults() config {
	return config{listen: "127.0.0.1:8080", conns: 20, cap: 1024, ttl: 15 * time.Second}
}

func newSet(env map[string]string, c *config) (*Set, *bytes.Buffer, *bytes.Buffer) {
	s := New("prog", func(k string) string { return env[k] })
	var out, errOut bytes.Buffer
	s.Stdout, s.Stderr = &out, &errOut
	s.String(&c.listen, "listen", "EXECQ_LISTEN", "HTTP listen address")
	s.Int(&c.conns, "db-max-conns", "EXECQ_DB_MAX_CONNS", "max open connections")
	s.Int64(&c.cap, "output-cap-bytes", "EXECQ_OUTPUT_CAP_BYTES", "bytes kept")
	s.Duration(&c.ttl, "lease-ttl", "EXECQ_LEASE_TTL", "lease lifetime")
	s.Bool(&c.admin, "admin", "", "no variable for this one")
	return s, &out, &errOut
}

func TestPrecedenceDefaultEnvFlag(t *testing.T) {
	c := defaults()
	s, _, _ := newSet(map[string]string{"EXECQ_LISTEN": ":9", "EXECQ_DB_MAX_CONNS": "5", "EXECQ_LEASE_TTL": "1m"}, &c)
	if err := s.Parse([]string{"--db-max-conns", "7", "--admin"}); err != nil {
		t.Fatal(err)
	}
	want := config{listen: ":9", conns: 7, cap: 1024, ttl: time.Minute, admin: true}
	if c != want {
		t.Fatalf("got %+v, want %+v", c, want)
	}
}

func TestEmptyVariableIsUnset(t *testing.T) {
	c := defaults()
	s, _, _ := newSet(map[string]string{"EXECQ_LISTEN": "", "EXECQ_DB_MAX_CONNS": "", "EXECQ_OUTPUT_CAP_BYTES": "", "EXECQ_LEASE_TTL": ""}, &c)
	if err := s.Parse(nil); err != nil {
		t.Fatalf("empty variables: %v", err)
	}
	if c != defaults() {
		t.Fatalf("got %+v, want the defaults %+v", c, defaults())
	}
}

func TestMalformedVariablesAreNamed(t *testing.T) {
	c := defaults()
	s, _, _ := newSet(map[string]string{"EXECQ_DB_MAX_CONNS": "many", "EXECQ_LEASE_TTL": "15"}, &c)
	err := s.Parse(nil)
	if err == nil || !strings.Contains(err.Error(), "EXECQ_DB_MAX_CONNS") || !strings.Contains(err.Error(), "EXECQ_LEASE_TTL") {
		t.Fatalf("err %v, want both variables named", err)
	}
}

func TestHelp(t *testing.T) {
	for _, arg := range []string{"-h", "--help", "-help"} {
		c := defaults()
		// A malformed variable must not hide the help.
		s, out, errOut := newSet(map[string]string{"EXECQ_LEASE_TTL": "x"}, &c)
		if err := s.Parse([]string{arg}); !errors.Is(err, flag.ErrHelp) {
			t.Fatalf("%s: err %v, want flag.ErrHelp", arg, err)
		}
		if errOut.Len() != 0 {
			t.Fatalf("%s: help went to stderr: %q", arg, errOut)
		}
		for _, w := range []string{"usage: prog [flags]", "--listen string", "HTTP listen address [$EXECQ_LISTEN] (default 127.0.0.1:8080)",
			"--lease-ttl duration", "[$EXECQ_LEASE_TTL] (default 15s)", "--admin\n"} {
			if !strings.Contains(out.String(), w) {
				t.Fatalf("%s: help lacks %q:\n%s", arg, w, out)
			}
		}
		if strings.Contains(out.String(), "no variable for this one [$") {
			t.Fatalf("a flag without a variable names one:\n%s", out)
		}
	}
}

func TestBadFlagHelpOnStderr(t *testing.T) {
	c := defaults()
	s, out, errOut := newSet(nil, &c)
	err := s.Parse([]string{"--nope"})
	if err == nil || errors.Is(err, flag.ErrHelp) || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("err %v", err)
	}
	if out.Len() != 0 || !strings.HasPrefix(errOut.String(), "usage: prog") {
		t.Fatalf("stdout %q, stderr %q; want the help on stderr only", out, errOut)
	}
}

// TestText: a flag with a text form (here slog.Level) follows the same
// precedence, and a malformed variable is named.
func TestText(t *testing.T) {
	level := slog.LevelInfo
	s := New("prog", func(k string) string { return map[string]string{"EXECQ_LOG_LEVEL": "warn"}[k] })
	s.Text(&level, "log-level", "EXECQ_LOG_LEVEL", "debug, info, warn or error", "least severe level logged")
	if err := s.Parse(nil); err != nil || level != slog.LevelWarn {
		t.Fatalf("from the variable: %v, %v", level, err)
	}
	if err := s.Parse([]string{"--log-level", "debug"}); err != nil || level != slog.LevelDebug {
		t.Fatalf("from the flag: %v, %v", level, err)
	}
	s = New("prog", func(k string) string { return map[string]string{"EXECQ_LOG_LEVEL": "loud"}[k] })
	s.Text(&level, "log-level", "EXECQ_LOG_LEVEL", "debug, info, warn or error", "least severe level logged")
	if err := s.Parse(nil); err == nil || !strings.Contains(err.Error(), `EXECQ_LOG_LEVEL="loud": want debug, info, warn or error`) {
		t.Fatalf("malformed variable: %v", err)
	}
}
