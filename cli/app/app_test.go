package app

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/execq/execq/shared"
)

// The commands against the real stack are tested end to end in agent/e2e
// (cli_test.go); these cover configuration, usage and the exit table.

func ptr[T any](v T) *T { return &v }

func TestOutcome(t *testing.T) {
	rec := func(st shared.Status, reason shared.EndReason, exit *int, sig *string) *shared.CommandExecutionRecord {
		r := &shared.CommandExecutionRecord{ID: "c1", Status: st, ExitCode: exit}
		if reason != "" {
			r.EndReason = &reason
		}
		r.Signal = sig
		return r
	}
	for _, tc := range []struct {
		name   string
		rec    *shared.CommandExecutionRecord
		code   int
		reason bool
	}{
		{"succeeded", rec(shared.StatusSucceeded, shared.EndExited, ptr(0), nil), 0, false},
		{"exit 7", rec(shared.StatusFailed, shared.EndExited, ptr(7), nil), 7, false},
		{"exec error", rec(shared.StatusFailed, shared.EndExecError, nil, nil), ExitCannotStart, true},
		{"timed out", rec(shared.StatusFailed, shared.EndTimedOut, ptr(143), ptr("SIGTERM")), ExitTimedOut, true},
		{"cancelled while running", rec(shared.StatusFailed, shared.EndCancelled, ptr(143), ptr("SIGTERM")), ExitCancelled, true},
		{"cancelled while queued", rec(shared.StatusCancelled, shared.EndCancelled, nil, nil), ExitCancelled, true},
		{"not picked up", rec(shared.StatusFailed, shared.EndNotPickedUp, nil, nil), ExitNotPickedUp, true},
		{"agent lost", rec(shared.StatusFailed, shared.EndAgentLost, nil, nil), ExitAgentLost, true},
		{"killed by SIGKILL", rec(shared.StatusFailed, shared.EndKilled, ptr(137), ptr("SIGKILL")), 137, true},
		{"killed by SIGSEGV", rec(shared.StatusFailed, shared.EndKilled, ptr(139), ptr("SIGSEGV")), 139, true},
	} {
		code, reason := outcome(tc.rec)
		if code != tc.code || (reason != "") != tc.reason {
			t.Errorf("%s: code %d reason %q, want %d (reason %v)", tc.name, code, reason, tc.code, tc.reason)
		}
	}
}

// recorder is a server that notes who asked what, to see which settings
// the command line used.
type recorder struct {
	mu   sync.Mutex
	auth []string
}

func newRecorder(t *testing.T) (*recorder, string) {
	t.Helper()
	rec := &recorder{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec.mu.Lock()
		rec.auth = append(rec.auth, r.Header.Get("Authorization"))
		rec.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"containers":[]}`))
	}))
	t.Cleanup(srv.Close)
	return rec, srv.URL
}

func (r *recorder) last() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.auth) == 0 {
		return ""
	}
	return r.auth[len(r.auth)-1]
}

func run(env map[string]string, args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := Main(args, Env{Stdout: &out, Stderr: &errb, Getenv: func(k string) string { return env[k] }})
	return code, out.String(), errb.String()
}

// TestFlagsOverrideEnvironment: --server and --token win over
// EXECQ_SERVER and EXECQ_TOKEN, --token-file over EXECQ_TOKEN, and the
// environment is used when no flag is given.
func TestFlagsOverrideEnvironment(t *testing.T) {
	rec, url := newRecorder(t)
	_, other := newRecorder(t)
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"EXECQ_SERVER": other, "EXECQ_TOKEN": "from-env"}
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"--server", url, "containers"}, env, "Bearer from-env"},
		{[]string{"--server", url, "--token", "from-flag", "containers"}, env, "Bearer from-flag"},
		{[]string{"--server", url, "--token-file", tokenFile, "containers"}, env, "Bearer from-file"},
		{[]string{"containers"}, map[string]string{"EXECQ_SERVER": url, "EXECQ_TOKEN_FILE": tokenFile}, "Bearer from-file"},
	} {
		code, _, stderr := run(tc.env, tc.args...)
		if code != 0 || rec.last() != tc.want {
			t.Errorf("%v: exit %d (%s), server saw %q, want %q", tc.args, code, stderr, rec.last(), tc.want)
		}
	}
}

// TestUsageErrorsAreOneLine: a mistake in the command line is one line and
// the documented status: 125 for exec, 1 for the others.
func TestUsageErrorsAreOneLine(t *testing.T) {
	_, url := newRecorder(t)
	env := map[string]string{"EXECQ_SERVER": url, "EXECQ_TOKEN": "t"}
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"exec", "c1"}, ExitExecqError, "requires at least 2 arg(s)"},
		{[]string{"exec", "--", "c1", "true"}, ExitExecqError, "name the CONTAINER before --"},
		{[]string{"exec", "--bogus", "c1", "--", "true"}, ExitExecqError, "unknown flag: --bogus"},
		{[]string{"exec", "c1", "ls", "-l"}, ExitExecqError, "put -- before the program"},
		{[]string{"get"}, 1, "accepts 1 arg(s)"},
		{[]string{"ls", "-o", "yaml"}, 1, `-o "yaml"`},
		{[]string{"logs", "--stream", "both", "x"}, 1, `--stream "both"`},
		{[]string{"--token", "a", "--token-file", "/x", "containers"}, 1, "not both"},
	} {
		code, stdout, stderr := run(env, tc.args...)
		if code != tc.code || strings.Count(stderr, "\n") != 1 || !strings.HasPrefix(stderr, "execq: ") || !strings.Contains(stderr, tc.want) || stdout != "" {
			t.Errorf("%v: exit %d, stderr %q, stdout %q; want %d and one line with %q", tc.args, code, stderr, stdout, tc.code, tc.want)
		}
	}
}

func TestHelpAndVersionNeedNoServer(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"help", "exec"}, {"version"}, {"completion", "bash"}} {
		code, stdout, stderr := run(nil, args...)
		if code != 0 || stdout == "" {
			t.Errorf("%v: exit %d, stdout %d bytes, stderr %q", args, code, len(stdout), stderr)
		}
	}
}
