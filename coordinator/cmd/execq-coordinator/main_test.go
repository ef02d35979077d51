package main

import (
	"strings"
	"testing"

	"github.com/execq/execq/internal/maintest"
)

// TestMain lets a test run this binary's real main, exit code included.
func TestMain(m *testing.M) { maintest.Main(m, main) }

// runMain runs main with args and only the given environment.
func runMain(t *testing.T, env map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	return maintest.Run(t, env, args...)
}

// TestHelpExitsZero: every way of asking for help prints it on stdout and
// exits 0, flags listed with their variable as [$EXECQ_…], the same
// convention as execq-agent.
func TestHelpExitsZero(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"-h"}, []string{"execq-coordinator serve", "users create"}},
		{[]string{"--help"}, []string{"execq-coordinator serve"}},
		{[]string{"help"}, []string{"execq-coordinator serve"}},
		{[]string{"serve", "-h"}, []string{"--listen", "[$EXECQ_LISTEN]", "[$EXECQ_DATABASE_URL]", "[$EXECQ_SHUTDOWN_GRACE]"}},
		{[]string{"serve", "--help"}, []string{"[$EXECQ_LISTEN]"}},
		{[]string{"help", "serve"}, []string{"[$EXECQ_LISTEN]"}},
		{[]string{"migrate", "-h"}, []string{"[$EXECQ_DATABASE_URL]"}},
		{[]string{"users", "create", "-h"}, []string{"--name", "--admin", "[$EXECQ_DATABASE_URL]"}},
		{[]string{"nodes", "create", "--help"}, []string{"--name", "[$EXECQ_DATABASE_URL]"}},
		{[]string{"users", "list", "-h"}, []string{"[$EXECQ_DATABASE_URL]"}},
		{[]string{"users", "disable", "-h"}, []string{"--name", "--id", "name of the user", "[$EXECQ_DATABASE_URL]"}},
		{[]string{"help", "users", "rotate-token"}, []string{"--name", "--id"}},
		{[]string{"nodes", "revoke", "-h"}, []string{"--name", "--id", "name of the node"}},
		{[]string{"nodes", "list", "--help"}, []string{"[$EXECQ_DATABASE_URL]"}},
		{[]string{"-h"}, []string{"users disable|enable", "nodes revoke", "rotate-token"}},
		{[]string{"grants", "add", "-h"}, []string{"--user", "--selector", "[$EXECQ_DATABASE_URL]"}},
		{[]string{"grants", "revoke", "-h"}, []string{"--id"}},
		{[]string{"help", "grants"}, []string{"grants add --user NAME --selector SEL"}},
	} {
		code, stdout, stderr := runMain(t, nil, tc.args...)
		if code != 0 {
			t.Errorf("%v: exit %d, want 0 (stderr %q)", tc.args, code, stderr)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(stdout, w) {
				t.Errorf("%v: help on stdout lacks %q:\n%s", tc.args, w, stdout)
			}
		}
		if strings.Contains(stderr, "unknown command") {
			t.Errorf("%v: stderr %q", tc.args, stderr)
		}
	}
}

// TestUsageErrorsExitOne: a missing or unknown command or flag prints the
// usage on stderr and exits 1.
func TestUsageErrorsExitOne(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{nil, {"frobnicate"}, {"serve", "--no-such-flag"}, {"users"}} {
		code, stdout, stderr := runMain(t, nil, args...)
		if code != 1 || !strings.Contains(stderr, "usage") || stdout != "" {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want 1 with the usage on stderr", args, code, stdout, stderr)
		}
	}
}

// TestEmptyVariableIsUnset: EXECQ_X= is the same as no EXECQ_X (systemd
// units and shells often set empty values), so the default stands instead of
// an empty value failing to parse.
func TestEmptyVariableIsUnset(t *testing.T) {
	t.Parallel()
	code, _, stderr := runMain(t, map[string]string{"EXECQ_DB_MAX_CONNS": "", "EXECQ_LEASE_TTL": "", "EXECQ_LISTEN": "", "EXECQ_DATABASE_URL": ""}, "serve")
	if code != 1 || !strings.Contains(stderr, "--database-url (EXECQ_DATABASE_URL) is required") {
		t.Fatalf("exit %d, stderr %q; want 1 asking for the database URL and nothing else", code, stderr)
	}
	// A set but malformed variable is still an error naming it.
	code, _, stderr = runMain(t, map[string]string{"EXECQ_LEASE_TTL": "15"}, "serve")
	if code != 1 || !strings.Contains(stderr, "EXECQ_LEASE_TTL") {
		t.Fatalf("exit %d, stderr %q; want 1 naming EXECQ_LEASE_TTL", code, stderr)
	}
}
