package app_test

import (
	"context"
	"encoding/json"
	stdmaps "maps"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/execq/execq/shared"
)

// authzWorld is the authorization matrix's cast on top of setup's bundle:
// node A reports a "blue" and a "red" container; gina holds a grant on
// team=blue, ursula has no grant, rex held the same grant as gina and lost
// it after submitting; root is the admin.
type authzWorld struct {
	*bundle
	Gina, Ursula, Rex identity
	Blue, Red         string // node A's containers, labelled team=blue and team=red
	RexGrant          string
}

func newAuthzWorld(t *testing.T) *authzWorld {
	t.Helper()
	w := &authzWorld{bundle: setup(t), Blue: uuid.NewString(), Red: uuid.NewString()}
	ctx := context.Background()
	mk := func(name string) identity {
		u, tok, err := w.App.Store.CreateUser(ctx, name, false)
		if err != nil {
			t.Fatalf("create user %s: %v", name, err)
		}
		return identity{u.ID, tok}
	}
	w.Gina, w.Ursula, w.Rex = mk("gina"), mk("ursula"), mk("rex")
	w.mustJSON(w.URL, http.MethodPut, shared.AgentPathContainers, w.NodeA.Token, shared.InventoryRequest{
		Containers: []shared.ContainerReport{
			{ID: w.Blue, Name: "blue", State: "running", Labels: map[string]string{"team": "blue", "io.execq/tier": "web"}},
			{ID: w.Red, Name: "red", State: "running", Labels: map[string]string{"team": "red"}},
		}}, http.StatusOK, nil)
	for _, user := range []string{"gina", "rex"} {
		var g shared.Grant
		w.mustJSON(w.URL, http.MethodPost, "/api/v1/grants", w.Root.Token,
			shared.GrantRequest{User: user, Selector: "team=blue"}, http.StatusCreated, &g)
		if user == "rex" {
			w.RexGrant = g.ID
		}
	}
	return w
}

// submitAs submits a command and returns the answer.
func (w *authzWorld) submitAs(user identity, container string) response {
	w.t.Helper()
	return w.do(http.MethodPost, submitPath(container), user.Token, shared.SubmitRequest{Program: "true"})
}

// submitted submits a command that must be accepted and returns its ID.
func (w *authzWorld) submitted(user identity, container string) string {
	w.t.Helper()
	r := w.submitAs(user, container)
	if r.Status != http.StatusAccepted {
		w.t.Fatalf("submit to %s: %s", container, r)
	}
	var rec shared.CommandExecutionRecord
	if err := json.Unmarshal(r.Body, &rec); err != nil {
		w.t.Fatal(err)
	}
	return rec.ID
}

// TestAuthorizationMatrix asserts the exact status of every user route
// (submit, get, output, follow, cancel, history, containers, grants) for
// an admin, a granted user, a user without grants and a user whose grant
// was revoked, on a granted and an ungranted container and on commands of
// their own and of others.
func TestAuthorizationMatrix(t *testing.T) {
	t.Parallel()
	w := newAuthzWorld(t)
	unknown := uuid.NewString()

	// Commands to read, and separate ones to cancel (cancel changes them).
	// Rex submits while his grant holds.
	ginaCmd, ginaCancel := w.submitted(w.Gina, w.Blue), w.submitted(w.Gina, w.Blue)
	rexCmd, rexCancel := w.submitted(w.Rex, w.Blue), w.submitted(w.Rex, w.Blue)
	rootRed, rootCancel := w.submitted(w.Root, w.Red), w.submitted(w.Root, w.Red)
	w.mustJSON(w.URL, http.MethodDelete, "/api/v1/grants/"+w.RexGrant, w.Root.Token, nil, http.StatusOK, nil)

	users := map[string]identity{"root": w.Root, "gina": w.Gina, "ursula": w.Ursula, "rex": w.Rex}
	type want map[string]int // user → status
	for _, tc := range []struct {
		route, method, path string
		want                want
	}{
		// Submit: the grant decides; rex's was revoked.
		{"submit", http.MethodPost, submitPath(w.Blue), want{"root": 202, "gina": 202, "ursula": 404, "rex": 404}},
		{"submit", http.MethodPost, submitPath(w.Red), want{"root": 202, "gina": 404, "ursula": 404, "rex": 404}},
		{"submit", http.MethodPost, submitPath(w.NodeB.Container), want{"root": 202, "gina": 404, "ursula": 404, "rex": 404}},
		{"submit", http.MethodPost, submitPath(unknown), want{"root": 404, "gina": 404, "ursula": 404, "rex": 404}},
		// Reading: one's own commands, whatever the grants say now.
		{"get", http.MethodGet, commandPath(ginaCmd), want{"root": 200, "gina": 200, "ursula": 404, "rex": 404}},
		{"get", http.MethodGet, commandPath(rexCmd), want{"root": 200, "gina": 404, "ursula": 404, "rex": 200}},
		{"get", http.MethodGet, commandPath(rootRed), want{"root": 200, "gina": 404, "ursula": 404, "rex": 404}},
		{"get-wait", http.MethodGet, commandPath(rexCmd) + "?wait=0s", want{"root": 200, "gina": 404, "ursula": 404, "rex": 200}},
		{"output", http.MethodGet, commandPath(ginaCmd) + "/output", want{"root": 200, "gina": 200, "ursula": 404, "rex": 404}},
		{"output", http.MethodGet, commandPath(rexCmd) + "/output?stream=stderr", want{"root": 200, "gina": 404, "ursula": 404, "rex": 200}},
		{"output", http.MethodGet, commandPath(rootRed) + "/output", want{"root": 200, "gina": 404, "ursula": 404, "rex": 404}},
		{"history", http.MethodGet, "/api/v1/commands", want{"root": 200, "gina": 200, "ursula": 200, "rex": 200}},
		{"containers", http.MethodGet, "/api/v1/containers", want{"root": 200, "gina": 200, "ursula": 200, "rex": 200}},
		// Grants are admins' business; to anyone else the routes do not exist.
		{"grants", http.MethodGet, "/api/v1/grants", want{"root": 200, "gina": 404, "ursula": 404, "rex": 404}},
		{"grants-add", http.MethodPost, "/api/v1/grants", want{"root": 200, "gina": 404, "ursula": 404, "rex": 404}},
		{"grants-revoke", http.MethodDelete, "/api/v1/grants/" + uuid.NewString(), want{"root": 404, "gina": 404, "ursula": 404, "rex": 404}},
		// Cancel another's command: refused as unknown, nothing changes.
		{"cancel", http.MethodPost, commandPath(ginaCancel) + "/cancel", want{"ursula": 404, "rex": 404}},
		{"cancel", http.MethodPost, commandPath(rexCancel) + "/cancel", want{"gina": 404, "ursula": 404}},
		{"cancel", http.MethodPost, commandPath(rootCancel) + "/cancel", want{"gina": 404, "ursula": 404, "rex": 404}},
		// Cancel one's own (rex after the revoke too), and an admin anyone's.
		{"cancel", http.MethodPost, commandPath(ginaCancel) + "/cancel", want{"gina": 200}},
		{"cancel", http.MethodPost, commandPath(rexCancel) + "/cancel", want{"rex": 200}},
		{"cancel", http.MethodPost, commandPath(rootCancel) + "/cancel", want{"root": 200}},
		{"cancel", http.MethodPost, commandPath(rexCmd) + "/cancel", want{"root": 200}},
		// Follow the output (the cancelled commands are terminal, so a
		// follow allowed ends at once).
		{"follow", http.MethodGet, commandPath(ginaCancel) + "/output?follow=true", want{"root": 200, "gina": 200, "ursula": 404, "rex": 404}},
		{"follow", http.MethodGet, commandPath(rexCancel) + "/output?follow=true&stream=stderr", want{"root": 200, "gina": 404, "ursula": 404, "rex": 200}},
		{"follow", http.MethodGet, commandPath(rootCancel) + "/output?follow=true", want{"root": 200, "gina": 404, "ursula": 404, "rex": 404}},
	} {
		for _, name := range slices.Sorted(stdmaps.Keys(tc.want)) {
			var body any
			switch tc.route {
			case "submit":
				body = shared.SubmitRequest{Program: "true"}
			case "grants-add":
				body = shared.GrantRequest{User: "gina", Selector: "team=blue"} // held already: 200
			}
			before := w.snapshot()
			r := w.do(tc.method, tc.path, users[name].Token, body)
			if r.Status != tc.want[name] {
				t.Errorf("%s %s %s as %s: got %s, want %d", tc.route, tc.method, tc.path, name, r, tc.want[name])
				continue
			}
			if r.Status == http.StatusNotFound {
				if after := w.snapshot(); after != before {
					t.Errorf("%s %s as %s: a 404 changed the job table", tc.route, tc.path, name)
				}
			}
		}
	}

	// A refused submit answers exactly as for a container that does not
	// exist: the body differs only by the ID it names.
	refused := w.submitAs(w.Gina, w.Red)
	missing := w.submitAs(w.Gina, unknown)
	w.wantError(refused, http.StatusNotFound, "unknown_container")
	if got, want := strings.ReplaceAll(string(refused.Body), w.Red, "ID"), strings.ReplaceAll(string(missing.Body), unknown, "ID"); got != want {
		t.Errorf("refused container answered %s, unknown one %s: existence leaks", got, want)
	}
	// The same for the grant routes and a non-admin: as an unknown route.
	noRoute := w.do(http.MethodGet, "/api/v1/no-such-route", w.Gina.Token, nil)
	if got := w.do(http.MethodGet, "/api/v1/grants", w.Gina.Token, nil); string(got.Body) != string(noRoute.Body) {
		t.Errorf("grants as a non-admin answered %s, an unknown route %s", got, noRoute)
	}

	// History: one's own commands only (rex keeps his); an admin's has all.
	history := func(user identity) []string {
		var page shared.HistoryPage
		w.mustJSON(w.URL, http.MethodGet, "/api/v1/commands?limit=500", user.Token, nil, http.StatusOK, &page)
		var ids []string
		for _, c := range page.Commands {
			if c.RequestedBy != user.ID && user != w.Root {
				t.Errorf("history of %s lists %s's command %s", user.ID, c.RequestedBy, c.ID)
			}
			ids = append(ids, c.ID)
		}
		return ids
	}
	if ids := history(w.Rex); len(ids) != 2 || !slices.Contains(ids, rexCmd) || !slices.Contains(ids, rexCancel) {
		t.Errorf("rex's history after the revoke: %v, want his 2 commands", ids)
	}
	if ids := history(w.Ursula); len(ids) != 0 {
		t.Errorf("ursula's history: %v, want empty", ids)
	}
	if ids := history(w.Root); !slices.Contains(ids, ginaCmd) || !slices.Contains(ids, rexCmd) {
		t.Errorf("root's history lacks others' commands: %v", ids)
	}

	// Containers: exactly the granted ones, with their labels; an admin
	// sees all.
	listed := func(user identity) map[string]shared.ContainerInfo {
		var list shared.ContainerList
		w.mustJSON(w.URL, http.MethodGet, "/api/v1/containers", user.Token, nil, http.StatusOK, &list)
		out := map[string]shared.ContainerInfo{}
		for _, c := range list.Containers {
			out[c.ID] = c
		}
		return out
	}
	if got := listed(w.Gina); len(got) != 1 || got[w.Blue].ID != w.Blue {
		t.Errorf("gina lists %v, want only the blue container", slices.Collect(stdmaps.Keys(got)))
	} else if want := map[string]string{"team": "blue", "io.execq/tier": "web", "node": "node-a", "container": w.Blue}; !stdmaps.Equal(got[w.Blue].Labels, want) {
		t.Errorf("blue's labels %v, want %v", got[w.Blue].Labels, want)
	}
	for name, user := range map[string]identity{"ursula": w.Ursula, "rex": w.Rex} {
		if got := listed(user); len(got) != 0 {
			t.Errorf("%s lists %v, want nothing", name, slices.Collect(stdmaps.Keys(got)))
		}
	}
	if got := listed(w.Root); len(got) != 3 || got[w.Red].Labels["team"] != "red" || got[w.NodeB.Container].Labels["node"] != "node-b" {
		t.Errorf("root lists %v, want all 3 containers with labels", got)
	}
}

// TestGrantTakesEffectAtOnce: a grant added lets the user submit on the
// next request, and revoking it stops them on the next, with no restart
// and whatever the auth cache holds.
func TestGrantTakesEffectAtOnce(t *testing.T) {
	t.Parallel()
	w := newAuthzWorld(t)
	w.wantError(w.submitAs(w.Ursula, w.Red), http.StatusNotFound, "unknown_container")
	var g shared.Grant
	w.mustJSON(w.URL, http.MethodPost, "/api/v1/grants", w.Root.Token,
		shared.GrantRequest{User: "ursula", Selector: "node=node-a, team==red"}, http.StatusCreated, &g)
	if g.Selector != "node=node-a,team=red" || g.User != "ursula" || g.UserID != w.Ursula.ID {
		t.Fatalf("grant %+v", g)
	}
	id := w.submitted(w.Ursula, w.Red)
	w.wantError(w.submitAs(w.Ursula, w.Blue), http.StatusNotFound, "unknown_container")
	w.mustJSON(w.URL, http.MethodDelete, "/api/v1/grants/"+g.ID, w.Root.Token, nil, http.StatusOK, nil)
	w.wantError(w.submitAs(w.Ursula, w.Red), http.StatusNotFound, "unknown_container")
	w.get(w.Ursula, id) // still hers to read
	// A container that newly matches a grant is covered without a new grant.
	fresh := uuid.NewString()
	w.mustJSON(w.URL, http.MethodPut, shared.AgentPathContainers, w.NodeA.Token, shared.InventoryRequest{
		Containers: []shared.ContainerReport{
			{ID: w.Blue, Name: "blue", State: "running", Labels: map[string]string{"team": "blue"}},
			{ID: fresh, Name: "blue-2", State: "running", Labels: map[string]string{"team": "blue"}},
		}}, http.StatusOK, nil)
	w.submitted(w.Gina, fresh)
	// And one whose labels stop matching is no longer.
	w.mustJSON(w.URL, http.MethodPut, shared.AgentPathContainers, w.NodeA.Token, shared.InventoryRequest{
		Containers: []shared.ContainerReport{{ID: fresh, Name: "blue-2", State: "running", Labels: map[string]string{"team": "green"}}},
	}, http.StatusOK, nil)
	w.wantError(w.submitAs(w.Gina, fresh), http.StatusNotFound, "unknown_container")
}

// TestGrantsAPI: the admin routes' answers, and bad input refused with a
// 400 that writes nothing.
func TestGrantsAPI(t *testing.T) {
	t.Parallel()
	w := newAuthzWorld(t)
	count := func() int { return w.count(`SELECT count(*) FROM grants`) }
	before := count()
	for _, tc := range []struct {
		body any
		code string
	}{
		{shared.GrantRequest{User: "gina", Selector: ""}, "invalid_field"},
		{shared.GrantRequest{User: "gina", Selector: "team!=red"}, "invalid_field"},
		{shared.GrantRequest{User: "gina", Selector: "team in (red)"}, "invalid_field"},
		{shared.GrantRequest{User: "gina", Selector: "team=red,team=blue"}, "invalid_field"},
		{shared.GrantRequest{User: "gina", Selector: "bad key=x"}, "invalid_field"},
		{shared.GrantRequest{User: "nobody", Selector: "team=red"}, "invalid_field"},
		{shared.GrantRequest{User: "", Selector: "team=red"}, "invalid_field"},
		{`{"user":"gina","selector":"team=red","extra":1}`, "malformed_json"},
	} {
		r := w.do(http.MethodPost, "/api/v1/grants", w.Root.Token, tc.body)
		if r.Status != http.StatusBadRequest || r.errorCode() != tc.code {
			t.Errorf("POST %v: got %s, want 400 %s", tc.body, r, tc.code)
		}
	}
	if n := count(); n != before {
		t.Fatalf("refused grants wrote %d rows", n-before)
	}
	// Adding a grant twice answers the first (200), whatever the spelling.
	var first, again shared.Grant
	w.mustJSON(w.URL, http.MethodPost, "/api/v1/grants", w.Root.Token, shared.GrantRequest{User: "ursula", Selector: "team=red,node=node-a"}, http.StatusCreated, &first)
	w.mustJSON(w.URL, http.MethodPost, "/api/v1/grants", w.Root.Token, shared.GrantRequest{User: "ursula", Selector: " node == node-a ,team=red"}, http.StatusOK, &again)
	if again.ID != first.ID || again.Selector != "node=node-a,team=red" {
		t.Fatalf("repeat grant %+v, want %+v", again, first)
	}
	var list shared.GrantList
	w.mustJSON(w.URL, http.MethodGet, "/api/v1/grants", w.Root.Token, nil, http.StatusOK, &list)
	var ursula []shared.Grant
	for _, g := range list.Grants {
		if g.User == "ursula" {
			ursula = append(ursula, g)
		}
	}
	if len(ursula) != 1 || ursula[0] != first {
		t.Fatalf("ursula's grants in the list: %+v, want [%+v]", ursula, first)
	}
	w.wantError(w.do(http.MethodDelete, "/api/v1/grants/not-a-uuid", w.Root.Token, nil), http.StatusBadRequest, "invalid_id")
	w.mustJSON(w.URL, http.MethodDelete, "/api/v1/grants/"+first.ID, w.Root.Token, nil, http.StatusOK, nil)
	w.wantError(w.do(http.MethodDelete, "/api/v1/grants/"+first.ID, w.Root.Token, nil), http.StatusNotFound, "not_found")
}

// TestInventoryLabels: labels are stored as reported, the reserved ones set
// by the coordinator; a report with labels out of bounds, or naming a
// reserved key, is refused with a 400 and changes nothing.
func TestInventoryLabels(t *testing.T) {
	t.Parallel()
	w := newAuthzWorld(t)
	containers := func() string {
		var s string
		if err := w.DB.QueryRow(`SELECT string_agg(id::text || labels::text, ',' ORDER BY id) FROM containers`).Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	before := containers()
	many := map[string]string{}
	for i := range shared.MaxReportedLabels + 1 {
		many["k"+strings.Repeat("x", i)] = "v"
	}
	for name, labels := range map[string]map[string]string{
		"node":      {"node": "node-b"},
		"container": {"container": w.NodeB.Container},
		"too many":  many,
		"long key":  {strings.Repeat("k", 64): "v"},
		"long val":  {"k": strings.Repeat("v", 64)},
		"bad val":   {"k": "a b"},
		"bad key":   {"a b": "v"},
	} {
		r := w.do(http.MethodPut, shared.AgentPathContainers, w.NodeA.Token, shared.InventoryRequest{
			Containers: []shared.ContainerReport{{ID: w.Blue, Name: "blue", State: "running", Labels: labels}}})
		w.with(t).wantError(r, http.StatusBadRequest, "invalid_field")
		if !strings.Contains(string(r.Body), "containers[0].labels") {
			t.Errorf("%s: the error does not name the field: %s", name, r)
		}
	}
	if after := containers(); after != before {
		t.Fatalf("refused reports changed containers:\n%s\n%s", before, after)
	}
}
