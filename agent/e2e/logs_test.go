package e2e_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/execq/execq/shared"
)

// TestLogsNameTheCommandAndKeepSecrets runs a command through both daemons
// logging JSON at debug level, the most they say, and reads every line:
// none holds the command's output or a token, and every line that names
// the command carries command_id, with container_id on the agent and the
// caller (node_id or user_id) on the coordinator.
func TestLogsNameTheCommandAndKeepSecrets(t *testing.T) {
	t.Parallel()
	logFlags := []string{"EXECQ_LOG_FORMAT=json", "EXECQ_LOG_LEVEL=debug"}
	s := newStack(t, stackOptions{env: logFlags})
	c := s.container()
	agent := s.startAgent("--log-format", "json", "--log-level", "debug")
	s.waitReported(c)

	// The marker is in the output only: the arguments hold its two halves
	// apart, so a log line with the arguments would not match.
	head, tail := "out-"+uuid.NewString()[:8], uuid.NewString()
	marker := head + tail
	rec := s.submit(c.ID, "sh", "-c", `printf '%s%s\n' "$0" "$1"; printf '%s%s\n' "$0" "$1" >&2`, head, tail)
	done := s.wait(rec.ID, time.Minute)
	if done.Status != shared.StatusSucceeded || done.Stdout != marker+"\n" || done.Stderr != marker+"\n" {
		t.Fatalf("command: %+v", done)
	}

	// A refused request about the command is logged too (at Info, as 4xx).
	if code := s.do("GET", "/api/v1/commands/"+rec.ID+"?wait=soon", s.userToken, nil, nil); code != http.StatusBadRequest {
		t.Fatalf("GET with a bad wait: %d, want 400", code)
	}

	// Stopped cleanly, so every line is written.
	agent.signal(syscall.SIGTERM)
	agent.wantCleanExit("after SIGTERM")
	s.coord.signal(syscall.SIGTERM)
	s.coord.wantCleanExit("after SIGTERM")

	secrets := map[string]string{"the command's output": marker, "the user token": s.userToken, "the node token": s.nodeToken}
	for _, d := range []struct {
		p       *proc
		context []string // what a line naming the command must also carry
		want    []string // messages that must name the command
	}{
		{s.coord, nil, []string{"command queued", "command finished", "request refused"}},
		{agent, []string{"container_id"}, []string{"executing command", "command reported"}},
	} {
		seen := map[string]bool{}
		for _, line := range strings.Split(strings.TrimSpace(d.p.out.String()), "\n") {
			for what, secret := range secrets {
				if strings.Contains(line, secret) {
					t.Errorf("%s logged %s: %s", d.p.name, what, line)
				}
			}
			var fields map[string]any
			if err := json.Unmarshal([]byte(line), &fields); err != nil {
				t.Errorf("%s: a line that is not JSON with --log-format json: %q", d.p.name, line)
				continue
			}
			if !strings.Contains(line, rec.ID) {
				continue
			}
			msg, _ := fields["msg"].(string)
			seen[msg] = true
			if fields["command_id"] != rec.ID {
				t.Errorf("%s: a line naming command %s without it as command_id: %s", d.p.name, rec.ID, line)
			}
			for _, k := range d.context {
				if fields[k] == nil {
					t.Errorf("%s: a line about command %s without %s: %s", d.p.name, rec.ID, k, line)
				}
			}
			if d.p == s.coord && fields["node_id"] == nil && fields["user_id"] == nil {
				t.Errorf("%s: a line about command %s without the node or user: %s", d.p.name, rec.ID, line)
			}
			if d.p == agent && fields["container_id"] != c.ID {
				t.Errorf("%s: container_id %v, want %s: %s", d.p.name, fields["container_id"], c.ID, line)
			}
		}
		for _, m := range d.want {
			if !seen[m] {
				t.Errorf("%s: no %q line naming the command (saw %v)", d.p.name, m, seen)
			}
		}
	}
}
