package app_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/execq/execq/coordinator/app"
	"github.com/execq/execq/shared"
)

// submitBody renders a submit request with the given args as JSON.
func submitBody(program string, args []string) string {
	js, err := json.Marshal(shared.SubmitRequest{Program: program, Args: args})
	if err != nil {
		panic(err)
	}
	return string(js)
}

func repeatArgs(n, size int) []string {
	args := make([]string, n)
	for i := range args {
		args[i] = strings.Repeat("a", size)
	}
	return args
}

// TestBadInput sends malformed and invalid requests: each gets its 4xx and
// JSON error code, and the job table (and the inventory) does not change.
func TestBadInput(t *testing.T) {
	t.Parallel()
	// A long lease so the running command below is not reaped mid-test.
	b := setup(t, withConfig(func(c *app.Config) { c.LeaseTTL, c.Heartbeat = time.Minute, 10*time.Second }))
	existing := b.submit(b.Alice, b.NodeA.Container, "ls")
	lc := b.leaseCommand(b.NodeA, existing.ID)
	b.start(b.NodeA, lc)
	b.heartbeat(b.NodeA, lc, stdout(0, "abc"))
	b.submit(b.Alice, b.NodeA.Container, "queued") // a queued row in the snapshot too

	submitA := submitPath(b.NodeA.Container)
	user, node := b.Alice.Token, b.NodeA.Token
	hbPath, finishPath := agentCommandPath(lc.ID, "heartbeat"), agentCommandPath(lc.ID, "finish")
	hb := func(chunk string) string { return fmt.Sprintf(`{"attempt":%d,"chunks":[%s]}`, lc.Attempt, chunk) }
	fin := func(extra string) string { return fmt.Sprintf(`{"attempt":%d,"exit_code":0,%s}`, lc.Attempt, extra) }

	cases := []struct {
		name   string
		method string
		path   string
		token  string
		body   string
		status int
		code   string
	}{
		// Submit: the body.
		{"malformed JSON", "POST", submitA, user, `{"program":`, 400, "malformed_json"},
		{"not JSON", "POST", submitA, user, `program=ls`, 400, "malformed_json"},
		{"empty body", "POST", submitA, user, ``, 400, "malformed_json"},
		{"JSON array", "POST", submitA, user, `[{"program":"ls"}]`, 400, "malformed_json"},
		{"JSON string", "POST", submitA, user, `"ls"`, 400, "malformed_json"},
		{"trailing garbage", "POST", submitA, user, `{"program":"ls"} x`, 400, "malformed_json"},
		{"two objects", "POST", submitA, user, `{"program":"ls"}{"program":"rm"}`, 400, "malformed_json"},
		{"unknown field", "POST", submitA, user, `{"program":"ls","env":{"A":"b"}}`, 400, "malformed_json"},
		{"JSON null", "POST", submitA, user, `null`, 400, "invalid_field"},
		{"program missing", "POST", submitA, user, `{"args":["-l"]}`, 400, "invalid_field"},
		{"program null", "POST", submitA, user, `{"program":null}`, 400, "invalid_field"},
		{"program empty", "POST", submitA, user, `{"program":""}`, 400, "invalid_field"},
		{"program blank", "POST", submitA, user, `{"program":" \t\n "}`, 400, "invalid_field"},
		{"program with NUL", "POST", submitA, user, `{"program":"ls\u0000-l"}`, 400, "invalid_field"},
		{"program not a string", "POST", submitA, user, `{"program":42}`, 400, "malformed_json"},
		{"program too long", "POST", submitA, user, submitBody(strings.Repeat("p", shared.MaxProgramBytes+1), nil), 400, "invalid_field"},
		{"args not an array", "POST", submitA, user, `{"program":"ls","args":"-l"}`, 400, "malformed_json"},
		{"arg not a string", "POST", submitA, user, `{"program":"ls","args":["-l",1]}`, 400, "malformed_json"},
		{"arg with NUL", "POST", submitA, user, `{"program":"ls","args":["-l","a\u0000b"]}`, 400, "invalid_field"},
		{"too many args", "POST", submitA, user, submitBody("ls", repeatArgs(shared.MaxArgs+1, 1)), 400, "invalid_field"},
		{"arg too long", "POST", submitA, user, submitBody("ls", repeatArgs(1, shared.MaxArgBytes+1)), 400, "invalid_field"},
		{"args too large", "POST", submitA, user, submitBody("ls", repeatArgs(shared.MaxArgsBytes/shared.MaxArgBytes+1, shared.MaxArgBytes)), 400, "invalid_field"},
		{"body too large", "POST", submitA, user, submitBody("ls", repeatArgs(shared.MaxSubmitBodyBytes/1000+1, 1000)), 413, "body_too_large"},
		// Submit: the path.
		{"container not a UUID", "POST", submitPath("not-a-uuid"), user, `{"program":"ls"}`, 400, "invalid_id"},
		{"container UUID without hyphens", "POST", submitPath(strings.ReplaceAll(b.NodeA.Container, "-", "")), user, `{"program":"ls"}`, 400, "invalid_id"},
		{"container UUID in braces", "POST", submitPath("{" + b.NodeA.Container + "}"), user, `{"program":"ls"}`, 400, "invalid_id"},
		{"unknown container", "POST", submitPath(uuid.NewString()), user, `{"program":"ls"}`, 404, "unknown_container"},
		// Reads.
		{"command not a UUID", "GET", commandPath("42"), user, ``, 400, "invalid_id"},
		{"command UUID with trailing junk", "GET", commandPath(existing.ID + "0"), user, ``, 400, "invalid_id"},
		{"unknown command", "GET", commandPath(uuid.NewString()), user, ``, 404, "not_found"},
		{"output of unknown command", "GET", commandPath(uuid.NewString()) + "/output", user, ``, 404, "not_found"},
		{"output of bogus stream", "GET", commandPath(existing.ID) + "/output?stream=bogus", user, ``, 400, "invalid_stream"},
		{"output stream in capitals", "GET", commandPath(existing.ID) + "/output?stream=STDOUT", user, ``, 400, "invalid_stream"},
		{"wait not a duration", "GET", commandPath(existing.ID) + "?wait=soon", user, ``, 400, "invalid_wait"},
		{"wait negative", "GET", commandPath(existing.ID) + "?wait=-1s", user, ``, 400, "invalid_wait"},
		{"wrong method", "DELETE", commandPath(existing.ID), user, ``, 405, "method_not_allowed"},
		{"unknown route", "GET", "/api/v1/nope", user, ``, 404, "not_found"},
		// Agent: lease.
		{"lease max 0", "POST", shared.AgentPathLease, node, `{"max":0,"wait_ms":0}`, 400, "invalid_field"},
		{"lease max 101", "POST", shared.AgentPathLease, node, `{"max":101,"wait_ms":0}`, 400, "invalid_field"},
		{"lease max missing", "POST", shared.AgentPathLease, node, `{"wait_ms":0}`, 400, "invalid_field"},
		{"lease negative wait", "POST", shared.AgentPathLease, node, `{"max":1,"wait_ms":-1}`, 400, "invalid_field"},
		{"lease unknown field", "POST", shared.AgentPathLease, node, `{"max":1,"node":"x"}`, 400, "malformed_json"},
		{"lease empty body", "POST", shared.AgentPathLease, node, ``, 400, "malformed_json"},
		// Agent: chunks and finish.
		{"chunk stream bogus", "POST", hbPath, node, hb(`{"stream":"bogus","offset":3,"data":"ZGVm"}`), 400, "invalid_field"},
		{"chunk stream missing", "POST", hbPath, node, hb(`{"offset":3,"data":"ZGVm"}`), 400, "invalid_field"},
		{"chunk negative offset", "POST", hbPath, node, hb(`{"stream":"stdout","offset":-1,"data":"ZGVm"}`), 400, "invalid_field"},
		{"chunk data not base64", "POST", hbPath, node, hb(`{"stream":"stdout","offset":3,"data":"!!!"}`), 400, "malformed_json"},
		{"bad chunk after a good one", "POST", hbPath, node, hb(`{"stream":"stdout","offset":3,"data":"ZGVm"},{"stream":"stdout","offset":-6,"data":""}`), 400, "invalid_field"},
		{"heartbeat attempt not a number", "POST", hbPath, node, `{"attempt":"1"}`, 400, "malformed_json"},
		{"heartbeat of command not a UUID", "POST", agentCommandPath("x", "heartbeat"), node, hb(``), 400, "invalid_id"},
		{"finish negative length", "POST", finishPath, node, fin(`"stdout_length":-1`), 400, "invalid_field"},
		{"finish error with NUL", "POST", finishPath, node, fin(`"stdout_length":3,"error":"a\u0000b"`), 400, "invalid_field"},
		{"finish error too long", "POST", finishPath, node, fin(`"stdout_length":3,"error":"` + strings.Repeat("e", 5000) + `"`), 400, "invalid_field"},
		{"finish chunk stream bogus", "POST", finishPath, node, fin(`"stdout_length":6,"chunks":[{"stream":"out","offset":3,"data":"ZGVm"}]`), 400, "invalid_field"},
		{"finish below stored length", "POST", finishPath, node, fin(`"stdout_length":1`), 400, "invalid_length"},
		{"start of command not a UUID", "POST", agentCommandPath("x", "start"), node, `{"attempt":1}`, 400, "invalid_id"},
		// Agent: inventory.
		{"inventory id not a UUID", "PUT", shared.AgentPathContainers, node, `{"containers":[{"id":"c1","name":"c1","state":"running"}]}`, 400, "invalid_field"},
		{"inventory id twice", "PUT", shared.AgentPathContainers, node,
			fmt.Sprintf(`{"containers":[{"id":%q,"name":"a","state":"running"},{"id":%[1]q,"name":"b","state":"running"}]}`, b.NodeA.Container), 400, "invalid_field"},
	}

	before := b.snapshot() + b.inventory()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := b.with(t)
			var body any
			if tc.method != http.MethodGet {
				body = tc.body
			}
			r := b.do(tc.method, tc.path, tc.token, body)
			b.wantError(r, tc.status, tc.code)
			if ct := r.Header.Get("Content-Type"); ct != "application/json" {
				t.Fatalf("error Content-Type %q", ct)
			}
			if after := b.snapshot() + b.inventory(); after != before {
				t.Fatalf("rejected request changed the database:\nbefore %s\nafter  %s", before, after)
			}
		})
	}

	// The limits themselves are accepted.
	t.Run("limits are inclusive", func(t *testing.T) {
		b := b.with(t)
		n := b.count(`SELECT count(*) FROM commands`)
		for _, req := range []string{
			submitBody(strings.Repeat("p", shared.MaxProgramBytes), nil),
			submitBody("ls", repeatArgs(shared.MaxArgs, 1)),
			submitBody("ls", repeatArgs(shared.MaxArgsBytes/shared.MaxArgBytes, shared.MaxArgBytes)),
		} {
			if r := b.do(http.MethodPost, submitA, user, req); r.Status != http.StatusAccepted {
				t.Fatalf("submit at the limit: %s", r)
			}
		}
		if got := b.count(`SELECT count(*) FROM commands`); got != n+3 {
			t.Fatalf("%d commands, want %d", got, n+3)
		}
	})
}

// inventory renders the containers table for before/after comparisons.
func (b *bundle) inventory() string {
	b.t.Helper()
	var s string
	if err := b.DB.QueryRow(`SELECT coalesce(string_agg(c::text, E'\n' ORDER BY id), '') FROM containers c`).Scan(&s); err != nil {
		b.t.Fatalf("inventory: %v", err)
	}
	return s
}

// TestNullRejected: JSON null where a string, a number or an object is
// expected is a 400 invalid_field on every request body, never read as ""
// or 0, and nothing is written. null stays allowed where it means "absent"
// (exit_code) and for a whole list (Go clients send a nil slice as null).
func TestNullRejected(t *testing.T) {
	t.Parallel()
	b := setup(t, withConfig(func(c *app.Config) { c.LeaseTTL, c.Heartbeat = time.Minute, 10*time.Second }))
	lc := b.run("ls")
	b.heartbeat(b.NodeA, lc, stdout(0, "abc"))
	queued := b.submit(b.Alice, b.NodeA.Container, "queued") // what an accepted lease would take

	submitA := submitPath(b.NodeA.Container)
	user, node := b.Alice.Token, b.NodeA.Token
	cmd := func(action string) string { return agentCommandPath(lc.ID, action) }
	att := lc.Attempt
	inv := func(c string) string { return `{"containers":[` + c + `]}` }
	cases := []struct {
		name   string
		method string
		path   string
		token  string
		body   string
	}{
		{"submit body null", "POST", submitA, user, `null`},
		{"submit program null", "POST", submitA, user, `{"program":null,"args":["x"]}`},
		{"submit arg null", "POST", submitA, user, `{"program":"echo","args":["a",null]}`},
		{"submit only arg null", "POST", submitA, user, `{"program":"echo","args":[null]}`},
		{"lease max null", "POST", shared.AgentPathLease, node, `{"max":null,"wait_ms":0}`},
		{"lease wait null", "POST", shared.AgentPathLease, node, `{"max":1,"wait_ms":null}`},
		{"start attempt null", "POST", cmd("start"), node, `{"attempt":null}`},
		{"release attempt null", "POST", agentCommandPath(queued.ID, "release"), node, `{"attempt":null}`},
		{"heartbeat attempt null", "POST", cmd("heartbeat"), node, `{"attempt":null}`},
		{"heartbeat chunk null", "POST", cmd("heartbeat"), node, fmt.Sprintf(`{"attempt":%d,"chunks":[null]}`, att)},
		{"heartbeat chunk stream null", "POST", cmd("heartbeat"), node, fmt.Sprintf(`{"attempt":%d,"chunks":[{"stream":null,"offset":3,"data":"ZGVm"}]}`, att)},
		{"heartbeat chunk offset null", "POST", cmd("heartbeat"), node, fmt.Sprintf(`{"attempt":%d,"chunks":[{"stream":"stdout","offset":null,"data":"ZGVm"}]}`, att)},
		{"finish attempt null", "POST", cmd("finish"), node, `{"attempt":null,"exit_code":0,"stdout_length":3}`},
		{"finish length null", "POST", cmd("finish"), node, fmt.Sprintf(`{"attempt":%d,"exit_code":0,"stdout_length":3,"stderr_length":null}`, att)},
		{"finish error null", "POST", cmd("finish"), node, fmt.Sprintf(`{"attempt":%d,"exit_code":0,"stdout_length":3,"error":null}`, att)},
		{"finish chunk null", "POST", cmd("finish"), node, fmt.Sprintf(`{"attempt":%d,"exit_code":0,"stdout_length":3,"chunks":[null]}`, att)},
		{"inventory body null", "PUT", shared.AgentPathContainers, node, `null`},
		{"inventory container null", "PUT", shared.AgentPathContainers, node, inv(`null`)},
		{"inventory name null", "PUT", shared.AgentPathContainers, node, inv(fmt.Sprintf(`{"id":%q,"name":null,"state":"running"}`, b.NodeA.Container))},
		{"inventory state null", "PUT", shared.AgentPathContainers, node, inv(fmt.Sprintf(`{"id":%q,"name":"c","state":null}`, b.NodeA.Container))},
		{"inventory id null", "PUT", shared.AgentPathContainers, node, inv(`{"id":null,"name":"c","state":"running"}`)},
	}
	before := b.snapshot() + b.inventory()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := b.with(t)
			b.wantError(b.do(tc.method, tc.path, tc.token, tc.body), http.StatusBadRequest, "invalid_field")
			if after := b.snapshot() + b.inventory(); after != before {
				t.Fatalf("rejected request changed the database:\nbefore %s\nafter  %s", before, after)
			}
		})
	}

	// Where null means absent, it is still accepted.
	t.Run("null exit_code and null lists are accepted", func(t *testing.T) {
		b := b.with(t)
		b.mustJSON(b.URL, http.MethodPost, submitA, user, `{"program":"true","args":null}`, http.StatusAccepted, nil)
		b.mustJSON(b.URL, http.MethodPost, cmd("heartbeat"), node, fmt.Sprintf(`{"attempt":%d,"chunks":null}`, att), http.StatusOK, nil)
		b.mustJSON(b.URL, http.MethodPost, cmd("finish"), node,
			fmt.Sprintf(`{"attempt":%d,"exit_code":null,"stdout_length":3,"error":"could not run"}`, att), http.StatusOK, nil)
	})
}
