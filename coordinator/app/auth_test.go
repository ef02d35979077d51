package app_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/execq/execq/coordinator/app"
	"github.com/execq/execq/shared"
)

// route is one authenticated endpoint with a body that would succeed with
// the right identity.
type route struct {
	method, path string
	body         any
}

func TestAuthentication(t *testing.T) {
	t.Parallel()
	b := setup(t, withConfig(func(c *app.Config) { c.LeaseTTL, c.Heartbeat = time.Minute, 10*time.Second }))
	lc := b.run("id")

	userRoutes := []route{
		{http.MethodGet, "/api/v1/containers", nil},
		{http.MethodPost, submitPath(b.NodeA.Container), shared.SubmitRequest{Program: "id"}},
		{http.MethodGet, commandPath(lc.ID), nil},
		{http.MethodGet, commandPath(lc.ID) + "/output", nil},
	}
	agentRoutes := []route{
		{http.MethodPut, shared.AgentPathContainers, shared.InventoryRequest{Containers: []shared.ContainerReport{}}},
		{http.MethodPost, shared.AgentPathLease, shared.LeaseRequest{Max: 1}},
		{http.MethodPost, agentCommandPath(lc.ID, "start"), shared.StartRequest{Attempt: lc.Attempt}},
		{http.MethodPost, agentCommandPath(lc.ID, "heartbeat"), shared.HeartbeatRequest{Attempt: lc.Attempt, Chunks: []shared.Chunk{stdout(0, "x")}}},
		{http.MethodPost, agentCommandPath(lc.ID, "finish"), shared.FinishRequest{Attempt: lc.Attempt, ExitCode: exitCode(0)}},
		{http.MethodPost, agentCommandPath(lc.ID, "release"), shared.ReleaseRequest{Attempt: lc.Attempt}},
	}
	headers := map[string]string{
		"no header":        "",
		"empty bearer":     "Bearer ",
		"bearer only":      "Bearer",
		"basic scheme":     "Basic " + b.Alice.Token,
		"token only":       b.Alice.Token,
		"wrong token":      "Bearer execq_u_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
		"token with junk":  "Bearer " + b.Alice.Token + "x",
		"truncated token":  "Bearer " + b.Alice.Token[:len(b.Alice.Token)-1],
		"two tokens":       "Bearer " + b.Alice.Token + " " + b.NodeA.Token,
		"node token, user": "Bearer " + b.NodeA.Token, // on user routes
		"user token, node": "Bearer " + b.Alice.Token, // on agent routes
	}

	before := b.snapshot() + b.inventory()
	try := func(b *bundle, rt route, header string) {
		b.t.Helper()
		r, err := b.withAuth(rt, header)
		if err != nil {
			b.t.Fatal(err)
		}
		b.wantError(r, http.StatusUnauthorized, "unauthenticated")
		if !strings.HasPrefix(r.Header.Get("WWW-Authenticate"), "Bearer") {
			b.t.Fatalf("%s %s with %q: 401 without a Bearer challenge: %v", rt.method, rt.path, header, r.Header)
		}
	}
	for name, h := range headers {
		t.Run(name, func(t *testing.T) {
			b := b.with(t)
			for _, rt := range userRoutes {
				if name == "user token, node" {
					continue
				}
				try(b, rt, h)
			}
			for _, rt := range agentRoutes {
				if name == "node token, user" {
					continue
				}
				// Agent routes take node tokens: a valid-looking node token
				// variant replaces the user token.
				hh := strings.ReplaceAll(h, b.Alice.Token, b.NodeA.Token)
				if name == "user token, node" {
					hh = h
				}
				try(b, rt, hh)
			}
		})
	}
	if after := b.snapshot() + b.inventory(); after != before {
		t.Fatalf("unauthenticated requests changed the database:\nbefore %s\nafter  %s", before, after)
	}

	// The scheme is case-insensitive (RFC 7235) and the right tokens work.
	r, err := b.withAuth(route{http.MethodGet, commandPath(lc.ID), nil}, "bearer "+b.Alice.Token)
	if err != nil || r.Status != http.StatusOK {
		t.Fatalf("lower-case scheme: %v %s", err, r)
	}
	b.heartbeat(b.NodeA, lc, stdout(0, "x"))

	// Probes need no token.
	for _, p := range []string{"/healthz", "/readyz"} {
		if r := b.do(http.MethodGet, p, "", nil); r.Status != http.StatusOK {
			t.Fatalf("%s without a token: %s", p, r)
		}
	}
}

// withAuth sends rt with the given Authorization header, verbatim.
func (b *bundle) withAuth(rt route, header string) (response, error) {
	return b.requestAuth(context.Background(), b.URL, rt.method, rt.path, header, rt.body)
}

func TestAuthorization(t *testing.T) {
	t.Parallel()
	b := setup(t)
	lc := b.run("id")
	b.heartbeat(b.NodeA, lc, stdout(0, "secret"))
	b.finishOK(b.NodeA, lc.ID, shared.FinishRequest{Attempt: lc.Attempt, StdoutLength: 6, ExitCode: exitCode(0)}, shared.StatusSucceeded)

	// Bob cannot see Alice's command, and cannot tell it exists.
	unknown := b.do(http.MethodGet, commandPath("00000000-0000-4000-8000-000000000000"), b.Bob.Token, nil)
	for _, p := range []string{commandPath(lc.ID), commandPath(lc.ID) + "/output", commandPath(lc.ID) + "/output?stream=stderr"} {
		r := b.do(http.MethodGet, p, b.Bob.Token, nil)
		b.wantError(r, http.StatusNotFound, "not_found")
		if string(r.Body) != string(unknown.Body) {
			t.Fatalf("another user's command answers differently from a missing one:\n%s\n%s", r.Body, unknown.Body)
		}
	}
	// The admin can read it.
	if got := b.get(b.Root, lc.ID); got.Stdout != "secret" || got.RequestedBy != b.Alice.ID {
		t.Fatalf("admin read %+v", got)
	}
	if out := b.output(b.Root, lc.ID, shared.StreamStdout); string(out) != "secret" {
		t.Fatalf("admin output %q", out)
	}
	// Bob's own submissions are his.
	rec := b.submit(b.Bob, b.NodeB.Container, "id")
	if rec.RequestedBy != b.Bob.ID {
		t.Fatalf("requested_by %s, want bob %s", rec.RequestedBy, b.Bob.ID)
	}
	b.wantError(b.do(http.MethodGet, commandPath(rec.ID), b.Alice.Token, nil), http.StatusNotFound, "not_found")
}
