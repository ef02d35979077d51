package app

import (
	"errors"
	"flag"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/execq/execq/internal/logsetup"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestParseFlagsEnvThenFlags(t *testing.T) {
	cfg, err := ParseFlags([]string{"--concurrency", "8", "--runc-root", "/srv/runc"}, env(map[string]string{
		"EXECQ_COORDINATOR":    "http://coord:8080",
		"EXECQ_AGENT_TOKEN":    "tok\n",
		"EXECQ_CONCURRENCY":    "2",
		"EXECQ_RUNC_ROOT":      "/run/other",
		"EXECQ_DRAIN_GRACE":    "45s",
		"EXECQ_LOG_LEVEL":      "debug",
		"EXECQ_METRICS_LISTEN": "127.0.0.1:9101",
	}), io.Discard, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.CoordinatorURL != "http://coord:8080" || cfg.Token != "tok" || cfg.Concurrency != 8 || cfg.RuncRoot != "/srv/runc" ||
		cfg.DrainGrace != 45*time.Second || cfg.Log.Level != logsetup.Level(slog.LevelDebug) || cfg.MetricsListen != "127.0.0.1:9101" {
		t.Fatalf("cfg %+v", cfg)
	}
	if cfg.RuncBinary != "runc" || cfg.LeaseWait != 25*time.Second || cfg.MaxBufferBytes != 64<<20 {
		t.Fatalf("defaults not applied: %+v", cfg)
	}
}

func TestParseFlagsToken(t *testing.T) {
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte("  from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := map[string]string{"EXECQ_COORDINATOR": "https://c"}
	cfg, err := ParseFlags([]string{"--token-file", file}, env(base), io.Discard, io.Discard)
	if err != nil || cfg.Token != "from-file" {
		t.Fatalf("token file: %q %v", cfg.Token, err)
	}
	both := map[string]string{"EXECQ_COORDINATOR": "https://c", "EXECQ_AGENT_TOKEN": "x"}
	if _, err := ParseFlags([]string{"--token-file", file}, env(both), io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "keep one") {
		t.Fatalf("both token sources: %v", err)
	}
	if _, err := ParseFlags(nil, env(base), io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "EXECQ_AGENT_TOKEN") {
		t.Fatalf("no token: %v", err)
	}
	if _, err := ParseFlags([]string{"--token", "x"}, env(base), io.Discard, io.Discard); err == nil {
		t.Fatal("a --token flag must not exist")
	}
}

func TestParseFlagsErrors(t *testing.T) {
	ok := map[string]string{"EXECQ_COORDINATOR": "http://c:1", "EXECQ_AGENT_TOKEN": "t"}
	with := func(k, v string) map[string]string {
		m := map[string]string{}
		for a, b := range ok {
			m[a] = b
		}
		m[k] = v
		return m
	}
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{nil, with("EXECQ_CONCURRENCY", "many"), "EXECQ_CONCURRENCY"},
		{nil, with("EXECQ_DRAIN_GRACE", "30"), "EXECQ_DRAIN_GRACE"},
		{[]string{"--concurrency", "0"}, ok, "--concurrency"},
		{[]string{"--concurrency", "101"}, ok, "--concurrency"},
		{nil, with("EXECQ_COORDINATOR", "coord:8080"), "coordinator URL"},
		{[]string{"--chunk-bytes", "100"}, ok, "--chunk-bytes"},
		{[]string{"--max-buffer-bytes", "1024", "--chunk-bytes", "2048"}, ok, "--max-buffer-bytes"},
		{[]string{"--log-level", "loud"}, ok, "log-level"},
		{nil, with("EXECQ_LOG_FORMAT", "xml"), "EXECQ_LOG_FORMAT"},
		{[]string{"--metrics-listen", "9101"}, ok, "--metrics-listen"},
		{[]string{"extra"}, ok, "unexpected arguments"},
	} {
		_, err := ParseFlags(tc.args, env(tc.env), io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v %v: err %v, want mention of %q", tc.args, tc.env, err, tc.want)
		}
	}
	if _, err := ParseFlags([]string{"-h"}, env(ok), io.Discard, io.Discard); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h: %v", err)
	}
}
