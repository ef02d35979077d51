package app_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/execq/execq/coordinator/app"
	"github.com/execq/execq/shared"
)

// send posts body verbatim with the given Content-Type ("" sends none).
func (b *bundle) send(method, path, token, contentType string, body []byte) response {
	b.t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), method, b.URL+path, bytes.NewReader(body))
	if err != nil {
		b.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := b.client.Do(req)
	if err != nil {
		b.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		b.t.Fatal(err)
	}
	return response{Status: resp.StatusCode, Header: resp.Header, Body: data}
}

// bodyRoute is one route that reads a JSON body, with a body it accepts.
type bodyRoute struct {
	name   string
	method string
	path   string
	token  string
	// body renders a body the route accepts; field and value name one
	// string field (JSON-encoded value) that the strictness cases vary.
	body func(field, value string) string
	// field is a string field of the body, for the invalid UTF-8 cases.
	field string
}

// bodyRoutes lists every route that reads a JSON body, each with a body it
// would accept: a running command lc and a queued one for release.
func (b *bundle) bodyRoutes(lc shared.LeasedCommand, queued shared.LeasedCommand, running shared.CommandExecutionRecord) []bodyRoute {
	user, node := b.Alice.Token, b.NodeA.Token
	att := lc.Attempt
	return []bodyRoute{
		{"submit", "POST", submitPath(b.NodeA.Container), user,
			func(f, v string) string { return fmt.Sprintf(`{%q:%s,"args":["x"]}`, f, v) }, "program"},
		{"cancel", "POST", commandPath(running.ID) + "/cancel", user,
			func(f, v string) string { return `{"grace_seconds":5}` }, ""},
		{"inventory", "PUT", shared.AgentPathContainers, node,
			func(f, v string) string {
				return fmt.Sprintf(`{"containers":[{"id":%q,%q:%s,"state":"running"}]}`, b.NodeA.Container, f, v)
			}, "name"},
		{"lease", "POST", shared.AgentPathLease, node,
			func(f, v string) string { return `{"max":1,"wait_ms":0}` }, ""},
		{"start", "POST", agentCommandPath(lc.ID, "start"), node,
			func(f, v string) string { return fmt.Sprintf(`{"attempt":%d}`, att) }, ""},
		{"release", "POST", agentCommandPath(queued.ID, "release"), node,
			func(f, v string) string { return fmt.Sprintf(`{"attempt":%d}`, queued.Attempt) }, ""},
		{"heartbeat", "POST", agentCommandPath(lc.ID, "heartbeat"), node,
			func(f, v string) string {
				return fmt.Sprintf(`{"attempt":%d,"chunks":[{%q:%s,"offset":0,"data":"YWJj"}]}`, att, f, v)
			}, "stream"},
		{"finish", "POST", agentCommandPath(lc.ID, "finish"), node,
			func(f, v string) string {
				return fmt.Sprintf(`{"attempt":%d,"stdout_length":3,"exit_code":1,%q:%s}`, att, f, v)
			}, "error"},
		{"control", "POST", shared.AgentPathControl, node,
			func(f, v string) string { return fmt.Sprintf(`{"wait_ms":0,"known":[%s]}`, v) }, "known"},
	}
}

// TestStrictJSON: on every route that reads a JSON body, invalid UTF-8
// (a raw byte or a lone surrogate escape), a key given twice and a key in
// another case are refused with 400 malformed_json before anything is
// decoded, and nothing is written. encoding/json used to turn the first
// two into U+FFFD and store them, keep the last of two keys, and match
// keys case-insensitively.
func TestStrictJSON(t *testing.T) {
	t.Parallel()
	b := setup(t, withConfig(func(c *app.Config) { c.LeaseTTL, c.Heartbeat = time.Minute, 10*time.Second }))
	lc := b.run("ls")
	b.heartbeat(b.NodeA, lc, stdout(0, "abc"))
	// A second node's command leased but not started, for release.
	queuedRec := b.submit(b.Alice, b.NodeA.Container, "queued")
	queued := b.leaseCommand(b.NodeA, queuedRec.ID)
	running := b.get(b.Alice, lc.ID)
	routes := b.bodyRoutes(lc, queued, running)

	type variant struct {
		name string
		body func(r bodyRoute) string
	}
	variants := []variant{
		{"raw 0xff in a string", func(r bodyRoute) string { return r.body(r.field, "\"a\xffb\"") }},
		{"raw 0xc0 0xaf (overlong)", func(r bodyRoute) string { return r.body(r.field, "\"a\xc0\xafb\"") }},
		{"lone high surrogate escape", func(r bodyRoute) string { return r.body(r.field, `"a\ud800b"`) }},
		{"lone low surrogate escape", func(r bodyRoute) string { return r.body(r.field, `"\udc00"`) }},
		{"high surrogate before a non-surrogate", func(r bodyRoute) string { return r.body(r.field, `"\ud800\u0041"`) }},
	}
	// Keys: the first key of each body given twice, or in capitals.
	dupFirst := func(r bodyRoute) string {
		body := r.body(r.field, `"stdout"`)
		i := strings.IndexByte(body[1:], ':') + 1 // the first key, with its colon
		if body[i+1] == '[' {                     // inventory: the whole list twice
			return `{"containers":[],` + body[1:]
		}
		j := strings.IndexAny(body[i:], ",}") + i // and its value
		return body[:j] + "," + body[1:j] + body[j:]
	}
	upperFirst := func(r bodyRoute) string {
		body := r.body(r.field, `"stdout"`)
		i := strings.IndexByte(body[1:], ':') + 1
		return "{" + strings.ToUpper(body[1:i]) + body[i:]
	}
	titleFirst := func(r bodyRoute) string {
		body := r.body(r.field, `"stdout"`)
		return `{"` + strings.ToUpper(body[2:3]) + body[3:]
	}
	variants = append(variants,
		variant{"a key given twice", dupFirst},
		variant{"a key in capitals", upperFirst},
		variant{"a key capitalised", titleFirst},
	)

	before := b.snapshot() + b.inventory()
	for _, r := range routes {
		for _, v := range variants {
			if r.field == "" && !strings.Contains(v.name, "key") {
				continue // no string field to carry the bytes
			}
			t.Run(r.name+"/"+v.name, func(t *testing.T) {
				b := b.with(t)
				body := v.body(r)
				b.wantError(b.do(r.method, r.path, r.token, body), http.StatusBadRequest, "malformed_json")
				if after := b.snapshot() + b.inventory(); after != before {
					t.Fatalf("refused %s changed the database:\nbefore %s\nafter  %s", body, before, after)
				}
			})
		}
	}

	// Nested keys are held to the same rule.
	for _, tc := range []struct{ name, path, body string }{
		{"chunk key twice", agentCommandPath(lc.ID, "heartbeat"),
			fmt.Sprintf(`{"attempt":%d,"chunks":[{"stream":"stdout","stream":"stderr","offset":3,"data":"ZGVm"}]}`, lc.Attempt)},
		{"chunk key in capitals", agentCommandPath(lc.ID, "heartbeat"),
			fmt.Sprintf(`{"attempt":%d,"chunks":[{"STREAM":"stdout","offset":3,"data":"ZGVm"}]}`, lc.Attempt)},
		{"container key twice", shared.AgentPathContainers,
			fmt.Sprintf(`{"containers":[{"id":%q,"id":%[1]q,"name":"c","state":"running"}]}`, b.NodeA.Container)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := b.with(t)
			method := http.MethodPost
			if tc.path == shared.AgentPathContainers {
				method = http.MethodPut
			}
			b.wantError(b.do(method, tc.path, b.NodeA.Token, tc.body), http.StatusBadRequest, "malformed_json")
			if after := b.snapshot() + b.inventory(); after != before {
				t.Fatalf("refused %s changed the database", tc.body)
			}
		})
	}

	// What the issue found: the duplicate stored "id", the capitals were
	// accepted.
	t.Run("the examples of the report", func(t *testing.T) {
		b := b.with(t)
		submitA := submitPath(b.NodeA.Container)
		for _, body := range []string{`{"program":"echo","program":"id"}`, `{"PROGRAM":"echo"}`, "{\"program\":\"echo\xff\"}", `{"program":"echo\ud800"}`,
			// Once refused as nulls (TestNullRejected), now before that.
			`{"PROGRAM":"echo","Args":["a",null]}`, `{"program":"echo","program":null}`} {
			b.wantError(b.do(http.MethodPost, submitA, b.Alice.Token, body), http.StatusBadRequest, "malformed_json")
		}
		if after := b.snapshot() + b.inventory(); after != before {
			t.Fatal("refused submits changed the database")
		}
	})

	// Valid text is still accepted: a surrogate pair, an escaped
	// character, multi-byte UTF-8.
	t.Run("valid UTF-8 and escapes are accepted", func(t *testing.T) {
		b := b.with(t)
		var rec shared.CommandExecutionRecord
		b.mustJSON(b.URL, http.MethodPost, submitPath(b.NodeA.Container), b.Alice.Token,
			`{"program":"echo","args":["\ud83d\ude00","\u00e9","é","😀"]}`, http.StatusAccepted, &rec)
		want := []string{"😀", "é", "é", "😀"}
		if fmt.Sprint(rec.Args) != fmt.Sprint(want) {
			t.Fatalf("args %q, want %q", rec.Args, want)
		}
	})
}

// TestContentType: a body sent as anything but application/json (curl -d
// sends application/x-www-form-urlencoded) is refused with 415
// unsupported_media_type on every route that reads one, and nothing is
// written. application/json with a UTF-8 charset, in any case, is
// accepted; so is a body without a Content-Type, which is read as JSON.
// A request without a body needs no Content-Type.
func TestContentType(t *testing.T) {
	t.Parallel()
	b := setup(t, withConfig(func(c *app.Config) { c.LeaseTTL, c.Heartbeat = time.Minute, 10*time.Second }))
	lc := b.run("ls")
	queuedRec := b.submit(b.Alice, b.NodeA.Container, "queued")
	queued := b.leaseCommand(b.NodeA, queuedRec.ID)
	running := b.get(b.Alice, lc.ID)
	routes := b.bodyRoutes(lc, queued, running)

	before := b.snapshot() + b.inventory()
	for _, r := range routes {
		for _, ct := range []string{
			"application/x-www-form-urlencoded",
			"text/plain",
			"text/json",
			"application/jsonx",
			"application/merge-patch+json",
			"multipart/form-data; boundary=x",
			"application/json; charset=latin1",
			"application/json; charset=utf-16",
			"not a media type",
		} {
			t.Run(r.name+"/"+ct, func(t *testing.T) {
				b := b.with(t)
				body := r.body(r.field, `"stdout"`)
				b.wantError(b.send(r.method, r.path, r.token, ct, []byte(body)), http.StatusUnsupportedMediaType, "unsupported_media_type")
				if after := b.snapshot() + b.inventory(); after != before {
					t.Fatalf("refused %s changed the database", body)
				}
			})
		}
	}

	t.Run("accepted types", func(t *testing.T) {
		b := b.with(t)
		submitA := submitPath(b.NodeA.Container)
		for _, ct := range []string{"application/json", "application/json; charset=utf-8", "Application/JSON; Charset=UTF-8", ""} {
			if r := b.send(http.MethodPost, submitA, b.Alice.Token, ct, []byte(`{"program":"true"}`)); r.Status != http.StatusAccepted {
				t.Fatalf("submit as %q: %s", ct, r)
			}
		}
		lease := shared.AgentPathLease
		if r := b.send(http.MethodPost, lease, b.NodeA.Token, "application/json;charset=UTF-8", []byte(`{"max":1,"wait_ms":0}`)); r.Status != http.StatusOK {
			t.Fatalf("lease: %s", r)
		}
	})

	t.Run("a cancel without a body needs no type", func(t *testing.T) {
		b := b.with(t)
		rec := b.submit(b.Alice, b.NodeB.Container, "cancel-me")
		if r := b.send(http.MethodPost, commandPath(rec.ID)+"/cancel", b.Alice.Token, "application/x-www-form-urlencoded", nil); r.Status != http.StatusOK {
			t.Fatalf("cancel without a body: %s", r)
		}
	})
}
