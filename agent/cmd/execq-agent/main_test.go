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

// TestHelpExitsZero: -h and --help print the flags on stdout, each with its
// variable as [$EXECQ_…] (the same convention as execq-coordinator), and
// exit 0.
func TestHelpExitsZero(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"-h"}, {"--help"}} {
		code, stdout, stderr := runMain(t, nil, args...)
		if code != 0 {
			t.Errorf("%v: exit %d, want 0 (stderr %q)", args, code, stderr)
		}
		for _, w := range []string{"usage: execq-agent", "--coordinator", "[$EXECQ_COORDINATOR]", "[$EXECQ_CONCURRENCY]", "EXECQ_AGENT_TOKEN"} {
			if !strings.Contains(stdout, w) {
				t.Errorf("%v: help on stdout lacks %q:\n%s", args, w, stdout)
			}
		}
	}
}

// TestUsageErrorsExitOne: an unknown flag prints the usage on stderr and
// exits 1.
func TestUsageErrorsExitOne(t *testing.T) {
	t.Parallel()
	code, stdout, stderr := runMain(t, nil, "--no-such-flag")
	if code != 1 || !strings.Contains(stderr, "usage") || stdout != "" {
		t.Fatalf("exit %d, stdout %q, stderr %q; want 1 with the usage on stderr", code, stdout, stderr)
	}
}

// TestEmptyVariableIsUnset: EXECQ_X= is the same as no EXECQ_X.
func TestEmptyVariableIsUnset(t *testing.T) {
	t.Parallel()
	code, _, stderr := runMain(t, map[string]string{"EXECQ_CONCURRENCY": "", "EXECQ_LEASE_WAIT": "", "EXECQ_AGENT_TOKEN": "t", "EXECQ_COORDINATOR": ""})
	if code != 1 || strings.Contains(stderr, "EXECQ_CONCURRENCY") || strings.Contains(stderr, "EXECQ_LEASE_WAIT") || !strings.Contains(stderr, "coordinator") {
		t.Fatalf("exit %d, stderr %q; want 1 asking for the coordinator URL only", code, stderr)
	}
}
