package app_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/execq/execq/shared"
)

// contractFields are the nine CommandExecutionRecord fields whose names and
// meaning never change.
var contractFields = []string{"id", "container_id", "requested_by", "program", "args", "status", "stdout", "stderr", "created_at"}

// checkRecordJSON decodes a record without the shared struct, so a renamed
// tag or a changed type on either side shows up, and checks the contract.
func checkRecordJSON(t *testing.T, body []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("record is not a JSON object: %v (%s)", err, body)
	}
	for _, f := range contractFields {
		v, ok := m[f]
		if !ok {
			t.Fatalf("record lacks %q: %s", f, body)
		}
		switch f {
		case "args":
			arr, ok := v.([]any)
			if !ok {
				t.Fatalf("args is %T (%v), want a JSON array (never null)", v, v)
			}
			for i, a := range arr {
				if _, ok := a.(string); !ok {
					t.Fatalf("args[%d] is %T, want string", i, a)
				}
			}
		default:
			if _, ok := v.(string); !ok {
				t.Fatalf("%s is %T (%v), want string", f, v, v)
			}
		}
	}
	for _, f := range []string{"id", "container_id", "requested_by"} {
		s := m[f].(string)
		if u, err := uuid.Parse(s); err != nil || u.String() != s {
			t.Fatalf("%s = %q is not a canonical UUID", f, s)
		}
	}
	switch shared.Status(m["status"].(string)) {
	case shared.StatusQueued, shared.StatusRunning, shared.StatusSucceeded, shared.StatusFailed, shared.StatusCancelled:
	default:
		t.Fatalf("status %q is not one of the five", m["status"])
	}
	ca := m["created_at"].(string)
	ts, err := time.Parse(time.RFC3339, ca)
	if err != nil {
		t.Fatalf("created_at %q is not RFC 3339: %v", ca, err)
	}
	if !strings.HasSuffix(ca, "Z") {
		t.Fatalf("created_at %q is not UTC with Z", ca)
	}
	if d := time.Since(ts); d < -time.Minute || d > time.Hour {
		t.Fatalf("created_at %s is not near now", ts)
	}
	return m
}

func TestRecordContract(t *testing.T) {
	t.Parallel()
	b := setup(t)

	// Submit without args: 202, Location, args [] and the caller as requester.
	r := b.do(http.MethodPost, submitPath(b.NodeA.Container), b.Alice.Token, `{"program":"uname"}`)
	if r.Status != http.StatusAccepted {
		t.Fatalf("submit: %s, want 202", r)
	}
	m := checkRecordJSON(t, r.Body)
	id := m["id"].(string)
	if loc := r.Header.Get("Location"); loc != "/api/v1/commands/"+id {
		t.Fatalf("Location %q, want /api/v1/commands/%s", loc, id)
	}
	if !strings.Contains(string(r.Body), `"args":[]`) {
		t.Fatalf("omitted args must be rendered as [] : %s", r.Body)
	}
	want := map[string]any{
		"container_id": b.NodeA.Container, "requested_by": b.Alice.ID, "program": "uname",
		"status": "queued", "stdout": "", "stderr": "",
	}
	for k, v := range want {
		if m[k] != v {
			t.Fatalf("submit answer %s = %v, want %v", k, m[k], v)
		}
	}

	// The poll answer is the same record.
	r = b.do(http.MethodGet, commandPath(id), b.Alice.Token, nil)
	if r.Status != http.StatusOK {
		t.Fatalf("get: %s", r)
	}
	got := checkRecordJSON(t, r.Body)
	for _, f := range contractFields {
		if f == "args" {
			continue
		}
		if got[f] != m[f] {
			t.Fatalf("GET %s = %v, submit answered %v", f, got[f], m[f])
		}
	}

	// Running, with output heartbeated: stdout and stderr stay empty.
	lc := b.leaseCommand(b.NodeA, id)
	if r := b.do(http.MethodGet, commandPath(id), b.Alice.Token, nil); checkRecordJSON(t, r.Body)["status"] != "queued" {
		t.Fatalf("leased but not started must still be queued: %s", r)
	}
	b.start(b.NodeA, lc)
	b.heartbeat(b.NodeA, lc, stdout(0, "Linux\n"), stderr(0, "warning\n"))
	b.heartbeat(b.NodeA, lc, stdout(6, "more\n"))
	r = b.do(http.MethodGet, commandPath(id), b.Alice.Token, nil)
	m = checkRecordJSON(t, r.Body)
	if m["status"] != "running" || m["stdout"] != "" || m["stderr"] != "" {
		t.Fatalf("running record must show empty output: %s", r.Body)
	}

	// Terminal: output appears.
	fr := b.finish(b.NodeA, shared.FinishRequest{Attempt: lc.Attempt, StdoutLength: 11, StderrLength: 8, ExitCode: exitCode(0)}, id)
	if fr.Status != http.StatusOK {
		t.Fatalf("finish: %s", fr)
	}
	r = b.do(http.MethodGet, commandPath(id), b.Alice.Token, nil)
	m = checkRecordJSON(t, r.Body)
	if m["status"] != "succeeded" || m["stdout"] != "Linux\nmore\n" || m["stderr"] != "warning\n" {
		t.Fatalf("finished record: %s", r.Body)
	}
	if m["created_at"] != got["created_at"] {
		t.Fatalf("created_at changed from %v to %v", got["created_at"], m["created_at"])
	}
}

func TestRecordArgsKeptInOrder(t *testing.T) {
	t.Parallel()
	b := setup(t)
	args := []string{"-c", "echo 'a b'", "", "ünïcödé", "--flag=x"}
	rec := b.submit(b.Alice, b.NodeA.Container, "/bin/sh", args...)
	got := b.get(b.Alice, rec.ID)
	if strings.Join(got.Args, "\x00") != strings.Join(args, "\x00") || len(got.Args) != len(args) {
		t.Fatalf("args = %q, want %q", got.Args, args)
	}
	lc := b.leaseCommand(b.NodeA, rec.ID)
	if lc.Program != "/bin/sh" || strings.Join(lc.Args, "\x00") != strings.Join(args, "\x00") || len(lc.Args) != len(args) {
		t.Fatalf("leased %q %q, want /bin/sh %q", lc.Program, lc.Args, args)
	}
}

func TestSubmitRequestedByIsRejected(t *testing.T) {
	t.Parallel()
	b := setup(t)
	before := b.snapshot()
	r := b.do(http.MethodPost, submitPath(b.NodeA.Container), b.Alice.Token,
		`{"program":"id","requested_by":"`+b.Bob.ID+`"}`)
	b.wantError(r, http.StatusBadRequest, "malformed_json")
	if !strings.Contains(string(r.Body), "requested_by") {
		t.Fatalf("the error should name the unknown field: %s", r)
	}
	if after := b.snapshot(); after != before {
		t.Fatalf("a rejected submit changed the job table:\n%s", after)
	}
}
