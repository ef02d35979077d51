package app_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/execq/execq/shared"
)

// TestMetricsFollowTheQueue: what Prometheus scrapes follows a command
// through the queue — depth while queued and running, dispatch and exec
// latency observed (by final status), HTTP traffic by route
// template (never by raw path).
func TestMetricsFollowTheQueue(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const queued, running = `execq_queue_depth{status="queued"}`, `execq_queue_depth{status="running"}`

	rec := b.submit(b.Alice, b.NodeA.Container, "true")
	if got := scrape(t, b, b.URL, queued); got != 1 {
		t.Fatalf("%s = %v after one submit, want 1", queued, got)
	}
	lc := b.leaseCommand(b.NodeA, rec.ID)
	b.start(b.NodeA, lc)
	if q, r := scrape(t, b, b.URL, queued), scrape(t, b, b.URL, running); q != 0 || r != 1 {
		t.Fatalf("queued %v running %v after start, want 0 and 1", q, r)
	}
	if got := scrape(t, b, b.URL, "execq_dispatch_latency_seconds_count"); got != 1 {
		t.Fatalf("dispatch latency observed %v times, want 1", got)
	}
	if r := b.finish(b.NodeA, shared.FinishRequest{Attempt: lc.Attempt, ExitCode: exitCode(0)}, rec.ID); r.Status != http.StatusOK {
		t.Fatalf("finish: %s", r)
	}
	if got := scrape(t, b, b.URL, running); got != 0 {
		t.Fatalf("%s = %v after finish, want 0", running, got)
	}
	if got := scrape(t, b, b.URL, `execq_exec_duration_seconds_count{status="succeeded"}`); got != 1 {
		t.Fatalf("exec duration observed %v times, want 1", got)
	}
	if got := scrape(t, b, b.URL, `execq_http_requests_total{code="202",method="POST",route="/api/v1/containers/{id}/commands"}`); got != 1 {
		t.Fatalf("submit requests counted %v, want 1 under the route template", got)
	}
}

// TestMetricsCountUnmatchedRequests: a request no route serves (404) or a
// route refuses for its method (405) is counted too, under one fixed route
// label, and an unknown method under one fixed method label, so random
// URLs and methods cannot grow the label set.
func TestMetricsCountUnmatchedRequests(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for i := range 3 {
		b.wantError(b.do(http.MethodGet, fmt.Sprintf("/random/%d", i), "", nil), http.StatusNotFound, "not_found")
	}
	b.wantError(b.do(http.MethodDelete, commandPath(uuid.NewString()), b.Alice.Token, nil), http.StatusMethodNotAllowed, "method_not_allowed")
	b.wantError(b.do(http.MethodDelete, commandPath(uuid.NewString()), b.Alice.Token, nil), http.StatusMethodNotAllowed, "method_not_allowed")
	b.wantError(b.do("BREW", "/coffee", "", nil), http.StatusNotFound, "not_found")

	for metric, want := range map[string]float64{
		`execq_http_requests_total{code="404",method="GET",route="unmatched"}`:      3,
		`execq_http_requests_total{code="405",method="DELETE",route="unmatched"}`:   2,
		`execq_http_requests_total{code="404",method="other",route="unmatched"}`:    1,
		`execq_http_request_duration_seconds_count{method="GET",route="unmatched"}`: 3,
	} {
		if got := scrape(t, b, b.URL, metric); got != want {
			t.Errorf("%s = %v, want %v", metric, got, want)
		}
	}
	body := string(b.do(http.MethodGet, "/metrics", "", nil).Body)
	for _, leak := range []string{"/random/", "/coffee", "BREW"} {
		if strings.Contains(body, leak) {
			t.Errorf("metrics carry %q from a request's URL or method", leak)
		}
	}
}
