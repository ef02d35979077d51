package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestMain lets a test run this binary's real main, exit code included: the
// test binary re-executes itself with EXECQ_TEST_RUN_MAIN=1.
func TestMain(m *testing.M) {
	if os.Getenv("EXECQ_TEST_RUN_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// runMain runs main with args and only the given environment.
func runMain(t *testing.T, env map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], args...)
	cmd.Env = []string{"EXECQ_TEST_RUN_MAIN=1"}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		code = exit.ExitCode()
	case err != nil:
		t.Fatalf("run %v: %v", args, err)
	}
	return code, out.String(), errOut.String()
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
