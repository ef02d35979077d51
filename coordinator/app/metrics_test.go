package app_test

import (
	"context"
	"database/sql"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/execq/execq/coordinator/app"
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

// scrapeAll reads every sample of a replica's /metrics, by its name and
// labels as exposed (labels in name order).
func scrapeAll(t testing.TB, b *bundle, base string) map[string]float64 {
	t.Helper()
	r := b.doAt(base, http.MethodGet, "/metrics", "", nil)
	if r.Status != http.StatusOK {
		t.Fatalf("metrics: %s", r)
	}
	samples := map[string]float64{}
	for line := range strings.Lines(string(r.Body)) {
		if strings.HasPrefix(line, "#") {
			continue
		}
		name, value, ok := strings.Cut(strings.TrimSpace(line), " ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			t.Fatalf("sample %q: %v", line, err)
		}
		samples[name] = v
	}
	return samples
}

// TestMetricsPerNode: queue depth and oldest-queued age by node name, read
// in one statement at scrape time, add up to the totals; a node without
// queued commands has no age series; each node's last contact is its
// nodes.last_seen_at and it is up while that is within --node-down-after.
func TestMetricsPerNode(t *testing.T) {
	t.Parallel()
	b := setup(t) // node-a and node-b reported their inventory: seen now
	depth := func(node, status string) string {
		return fmt.Sprintf(`execq_node_queue_depth{node=%q,status=%q}`, node, status)
	}
	b.run("sleep", "9")
	for _, id := range []string{b.submit(b.Alice, b.NodeA.Container, "true").ID, b.submit(b.Alice, b.NodeA.Container, "true").ID} {
		if _, err := b.DB.Exec(`UPDATE commands SET created_at = now() - interval '1 hour' WHERE id = $1`, id); err != nil {
			t.Fatal(err)
		}
	}
	m := scrapeAll(t, b, b.URL)
	for metric, want := range map[string]float64{
		depth("node-a", "queued"): 2, depth("node-a", "running"): 1,
		depth("node-b", "queued"): 0, depth("node-b", "running"): 0,
		`execq_queue_depth{status="queued"}`: 2, `execq_queue_depth{status="running"}`: 1,
		`execq_node_up{node="node-a"}`: 1, `execq_node_up{node="node-b"}`: 1,
	} {
		if got, ok := m[metric]; !ok || got != want {
			t.Errorf("%s = %v (exposed %v), want %v", metric, got, ok, want)
		}
	}
	if age := m[`execq_node_oldest_queued_age_seconds{node="node-a"}`]; age < time.Hour.Seconds() || age != m["execq_queue_oldest_age_seconds"] {
		t.Errorf("node-a oldest queued age %v, total %v: want the same, at least an hour", age, m["execq_queue_oldest_age_seconds"])
	}
	if _, ok := m[`execq_node_oldest_queued_age_seconds{node="node-b"}`]; ok {
		t.Errorf("node-b has nothing queued but an oldest-queued age")
	}
	var seen float64
	if err := b.DB.QueryRow(`SELECT extract(epoch FROM last_seen_at)::float8 FROM nodes WHERE name = 'node-b'`).Scan(&seen); err != nil {
		t.Fatal(err)
	}
	if got := m[`execq_node_last_seen_timestamp_seconds{node="node-b"}`]; got != seen {
		t.Errorf("node-b last seen %v, want nodes.last_seen_at %v", got, seen)
	}

	// node-b's agent was last in contact three minutes ago: down, with its
	// last contact still shown. A node never seen is down with none.
	if _, err := b.DB.Exec(`UPDATE nodes SET last_seen_at = now() - interval '3 minutes' WHERE name = 'node-b'`); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.App.Store.CreateNode(context.Background(), "node-new"); err != nil {
		t.Fatal(err)
	}
	m = scrapeAll(t, b, b.URL)
	if up, ok := m[`execq_node_up{node="node-b"}`]; !ok || up != 0 {
		t.Errorf("node-b silent for 3 minutes: up %v (exposed %v), want 0", up, ok)
	}
	if up, ok := m[`execq_node_up{node="node-new"}`]; !ok || up != 0 {
		t.Errorf("node never seen: up %v (exposed %v), want 0", up, ok)
	}
	if _, ok := m[`execq_node_last_seen_timestamp_seconds{node="node-new"}`]; ok {
		t.Errorf("node never seen has a last-seen time")
	}
}

// TestNodeUpFollowsContacts: a node whose agent only long-polls (no
// inventory) is stamped as seen from its polls, stays up while it polls,
// and is reported down within a bounded time once it stops. Its polls cost
// no write each: the row is stamped at most once per half flush interval.
func TestNodeUpFollowsContacts(t *testing.T) {
	t.Parallel()
	// Long enough that a loaded machine's late flush cannot make a live
	// agent look down (stamps come every 3/8 of it), short enough to
	// watch a stopped one go down.
	const downAfter = 4 * time.Second
	b := setup(t, withConfig(func(c *app.Config) { c.NodeDownAfter = downAfter }))
	n, tok, err := b.App.Store.CreateNode(context.Background(), "node-c")
	if err != nil {
		t.Fatal(err)
	}
	// Every stamp of node-c's row, as PostgreSQL sees it.
	for _, q := range []string{
		`CREATE TABLE test_stamps (at timestamptz NOT NULL)`,
		`CREATE FUNCTION test_stamp() RETURNS trigger LANGUAGE plpgsql AS $$
			BEGIN INSERT INTO test_stamps VALUES (NEW.last_seen_at); RETURN NULL; END $$`,
		`CREATE TRIGGER test_stamp AFTER UPDATE OF last_seen_at ON nodes FOR EACH ROW
			WHEN (NEW.name = 'node-c') EXECUTE FUNCTION test_stamp()`,
	} {
		if _, err := b.DB.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	node := nodeIdentity{identity: identity{n.ID, tok}}
	up := func() float64 { return scrape(t, b, b.URL, `execq_node_up{node="node-c"}`) }
	if got := up(); got != 0 {
		t.Fatalf("node never seen: up %v, want 0", got)
	}
	// An agent polling: short polls back to back, until stopped.
	stop := make(chan struct{})
	polled := make(chan int)
	go func() {
		polls := 0
		defer func() { polled <- polls }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			r, err := b.request(context.Background(), b.URL, http.MethodPost, shared.AgentPathLease, node.Token, shared.LeaseRequest{Max: 1, WaitMillis: 50})
			if err != nil || r.Status != http.StatusOK {
				return
			}
			polls++
		}
	}()
	eventually(t, within, func() bool { return up() == 1 }, "a polling agent's node is not reported up")
	// Past the window: still up while it polls.
	time.Sleep(3 * downAfter / 2)
	if got := up(); got != 1 {
		t.Errorf("node of an agent polling for %v: up %v, want 1", 3*downAfter/2, got)
	}
	close(stop)
	polls := <-polled
	eventually(t, within, func() bool { return up() == 0 }, "the stopped agent's node is still reported up")

	// Stamps are at least half a flush interval (downAfter/8) apart on the
	// database's clock, however often the agent polled.
	var stamps int
	var minGap sql.NullFloat64
	if err := b.DB.QueryRow(`SELECT count(*), min(gap) FROM (
			SELECT extract(epoch FROM at - lag(at) OVER (ORDER BY at))::float8 AS gap FROM test_stamps) g`).Scan(&stamps, &minGap); err != nil {
		t.Fatal(err)
	}
	if stamps == 0 || stamps >= polls || (minGap.Valid && minGap.Float64 < (downAfter/8).Seconds()) {
		t.Errorf("%d polls stamped the node %d times, at least %v s apart: want fewer stamps than polls, %v apart",
			polls, stamps, minGap.Float64, downAfter/8)
	}
	t.Logf("%d polls, %d stamps", polls, stamps)
}

// TestMetricsCountEndings: execq_commands_ended_total counts commands by
// status and end reason whichever way they end: an agent's finish, a
// cancel while queued, the reaper's not-picked-up; every pair exists from
// the start.
func TestMetricsCountEndings(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ended := func(status, reason string) string {
		return fmt.Sprintf(`execq_commands_ended_total{end_reason=%q,status=%q}`, reason, status)
	}
	m := scrapeAll(t, b, b.URL)
	for _, pair := range [][2]string{{"succeeded", "exited"}, {"failed", "agent_lost"}, {"failed", "timed_out"}, {"cancelled", "cancelled"}} {
		if v, ok := m[ended(pair[0], pair[1])]; !ok || v != 0 {
			t.Errorf("%s = %v (exposed %v) at start, want 0", ended(pair[0], pair[1]), v, ok)
		}
	}
	lc := b.run("true")
	if r := b.finish(b.NodeA, shared.FinishRequest{Attempt: lc.Attempt, ExitCode: exitCode(0)}, lc.ID); r.Status != http.StatusOK {
		t.Fatalf("finish: %s", r)
	}
	// A repeated finish is not a second ending.
	if r := b.finish(b.NodeA, shared.FinishRequest{Attempt: lc.Attempt, ExitCode: exitCode(0)}, lc.ID); r.Status != http.StatusOK {
		t.Fatalf("repeated finish: %s", r)
	}
	lc = b.run("false")
	if r := b.finish(b.NodeA, shared.FinishRequest{Attempt: lc.Attempt, ExitCode: exitCode(1)}, lc.ID); r.Status != http.StatusOK {
		t.Fatalf("finish: %s", r)
	}
	rec := b.submit(b.Alice, b.NodeB.Container, "true")
	b.mustJSON(b.URL, http.MethodPost, commandPath(rec.ID)+"/cancel", b.Alice.Token, "", http.StatusOK, nil)
	b.mustJSON(b.URL, http.MethodPost, submitPath(b.NodeB.Container), b.Alice.Token,
		shared.SubmitRequest{Program: "true", QueueTimeoutSeconds: shared.Secs(1)}, http.StatusAccepted, &rec)
	b.waitStatus(b.Alice, rec.ID, shared.StatusFailed)

	m = scrapeAll(t, b, b.URL)
	for metric, want := range map[string]float64{
		ended("succeeded", "exited"):     1,
		ended("failed", "exited"):        1,
		ended("cancelled", "cancelled"):  1,
		ended("failed", "not_picked_up"): 1,
		ended("failed", "agent_lost"):    0,
	} {
		if got := m[metric]; got != want {
			t.Errorf("%s = %v, want %v", metric, got, want)
		}
	}
}

// TestMetricsCountOutputAndHeartbeats: heartbeats accepted are counted, and
// output bytes by stream as they first arrive, a retry's bytes once.
func TestMetricsCountOutputAndHeartbeats(t *testing.T) {
	t.Parallel()
	b := setup(t)
	lc := b.run("cat")
	b.heartbeat(b.NodeA, lc, stdout(0, "hello"), stderr(0, "err"))
	b.heartbeat(b.NodeA, lc, stdout(0, "hello world")) // a retry with more
	b.heartbeat(b.NodeA, lc)
	// A refused heartbeat (another node) counts nothing.
	b.wantError(b.agent(b.NodeB, lc.ID, "heartbeat", shared.HeartbeatRequest{Attempt: lc.Attempt, Chunks: []shared.Chunk{stdout(11, "x")}}),
		http.StatusForbidden, "forbidden")
	if r := b.finish(b.NodeA, shared.FinishRequest{Attempt: lc.Attempt, ExitCode: exitCode(0),
		Chunks: []shared.Chunk{stderr(3, "!")}, StdoutLength: 11, StderrLength: 4}, lc.ID); r.Status != http.StatusOK {
		t.Fatalf("finish: %s", r)
	}
	m := scrapeAll(t, b, b.URL)
	for metric, want := range map[string]float64{
		"execq_heartbeats_total":                             3,
		`execq_output_bytes_received_total{stream="stdout"}`: 11,
		`execq_output_bytes_received_total{stream="stderr"}`: 4,
	} {
		if got := m[metric]; got != want {
			t.Errorf("%s = %v, want %v", metric, got, want)
		}
	}
}
