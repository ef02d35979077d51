package app_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	_ "github.com/lib/pq"

	"github.com/execq/execq/coordinator/app"
	"github.com/execq/execq/coordinator/testpg"
	"github.com/execq/execq/shared"
)

// Timing used by most tests: short enough that expiry tests run in seconds,
// long enough that a loaded CI machine heartbeating at half the TTL never
// loses a lease by accident.
const (
	testLeaseTTL  = 2 * time.Second
	testHeartbeat = time.Second
	// within is the generous bound for "soon" in poll-with-deadline helpers:
	// far above any healthy figure, so only a real fault trips it.
	within = 20 * time.Second
)

// identity is a user or a node with its bearer token.
type identity struct {
	ID    string
	Token string
}

// nodeIdentity is a node with the one container it reported.
type nodeIdentity struct {
	identity
	Container string
}

// replica is one coordinator process: an App served by an httptest server
// with its background loops running.
type replica struct {
	App *app.App
	URL string
}

// bundle is the coordinator under test with its collaborators: a fresh
// database, users (alice and bob plain but granted both nodes, root an
// admin) and two nodes, each with one reported container.
type bundle struct {
	t     testing.TB
	DBURL string
	DB    *sql.DB // direct access for assertions the API cannot make
	*replica
	Alice, Bob, Root identity
	NodeA, NodeB     nodeIdentity
	client           *http.Client
}

// with returns the bundle reporting to t, for use inside a subtest: a
// failure must end the subtest, not its parent.
func (b *bundle) with(t testing.TB) *bundle {
	c := *b
	c.t = t
	return &c
}

// replicaOptions is what a test may change before a replica starts.
type replicaOptions struct {
	cfg app.Config
	log *slog.Logger
}

// option adjusts a replica before it starts.
type option func(*replicaOptions)

// withConfig adjusts the replica's configuration.
func withConfig(f func(*app.Config)) option { return func(o *replicaOptions) { f(&o.cfg) } }

// withLogger gives the replica a logger, for tests that assert on its logs.
func withLogger(l *slog.Logger) option { return func(o *replicaOptions) { o.log = l } }

// testConfig is the configuration every test starts from. The safety poll
// is long so a test of notification wake-ups cannot pass by the back-up
// re-scan.
func testConfig(dbURL string) app.Config {
	cfg := app.DefaultConfig()
	cfg.DatabaseURL = dbURL
	cfg.LeaseTTL = testLeaseTTL
	cfg.Heartbeat = testHeartbeat
	cfg.ReapInterval = 100 * time.Millisecond
	cfg.SafetyPoll = time.Minute
	cfg.MaxWait = 30 * time.Second
	cfg.DBMaxConns = 10
	// Every test client is 127.0.0.1, and many tests send bad tokens on
	// purpose: the failed-authentication limit is tested on its own
	// (TestFailedAuthRateLimited).
	cfg.AuthFailBurst = 1 << 20
	return cfg
}

// setup starts a coordinator on a fresh database and creates the bundle's
// identities through the store and the agent protocol.
func setup(t testing.TB, opts ...option) *bundle {
	t.Helper()
	dbURL := testpg.New(t)
	b := &bundle{t: t, DBURL: dbURL, client: newClient(t)}
	b.replica = startReplica(t, dbURL, opts...)

	db, err := sql.Open("postgres", dbURL)
	if err != nil {
		t.Fatalf("open test database: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	b.DB = db

	ctx := context.Background()
	st := b.App.Store
	mkUser := func(name string, admin bool) identity {
		u, tok, err := st.CreateUser(ctx, name, admin)
		if err != nil {
			t.Fatalf("create user %s: %v", name, err)
		}
		return identity{u.ID, tok}
	}
	b.Alice, b.Bob, b.Root = mkUser("alice", false), mkUser("bob", false), mkUser("root", true)
	mkNode := func(name string) nodeIdentity {
		n, tok, err := st.CreateNode(ctx, name)
		if err != nil {
			t.Fatalf("create node %s: %v", name, err)
		}
		ni := nodeIdentity{identity: identity{n.ID, tok}, Container: uuid.NewString()}
		var resp shared.InventoryResponse
		b.mustJSON(b.URL, http.MethodPut, shared.AgentPathContainers, tok, shared.InventoryRequest{
			Containers: []shared.ContainerReport{{ID: ni.Container, Name: name + "-c1", State: "running"}},
		}, http.StatusOK, &resp)
		if resp.Accepted != 1 {
			t.Fatalf("inventory of %s: accepted %d, want 1", name, resp.Accepted)
		}
		return ni
	}
	b.NodeA, b.NodeB = mkNode("node-a"), mkNode("node-b")
	// alice and bob may use both nodes' containers; authz_test.go is
	// where users without grants are tested.
	for _, user := range []string{"alice", "bob"} {
		for _, node := range []string{"node-a", "node-b"} {
			if _, _, err := st.CreateGrant(ctx, user, shared.Selector{shared.LabelNode: node}); err != nil {
				t.Fatalf("grant %s to %s: %v", node, user, err)
			}
		}
	}
	return b
}

// startReplica runs an App on dbURL (migrating it if needed) behind an
// httptest server, with its background loops, until the test ends.
func startReplica(t testing.TB, dbURL string, opts ...option) *replica {
	t.Helper()
	r, _ := serveReplica(t, dbURL, (*httptest.Server).Start, opts...)
	return r
}

// serveReplica is startReplica with the server started by start (plain, or
// TLS with HTTP/2); it also returns the server.
func serveReplica(t testing.TB, dbURL string, start func(*httptest.Server), opts ...option) (*replica, *httptest.Server) {
	t.Helper()
	o := replicaOptions{cfg: testConfig(dbURL), log: testLogger()}
	for _, opt := range opts {
		opt(&o)
	}
	ctx, cancel := context.WithCancel(context.Background())
	a, err := app.New(ctx, o.cfg, o.log)
	if err != nil {
		cancel()
		t.Fatalf("app.New: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Background(ctx) }()
	srv := httptest.NewUnstartedServer(nil)
	srv.Config = a.HTTPServer()
	start(srv)
	// Cleanups run last-in first-out: stop the background loops and the
	// server (which waits for in-flight requests) before closing the pool.
	t.Cleanup(func() { a.Close() })
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("background loops: %v", err)
		}
	})
	t.Cleanup(func() {
		a.StopResuming() // before srv.Close, which never closes srv.Config
		srv.Close()
	})
	return &replica{App: a, URL: srv.URL}, srv
}

// testLogger discards logs unless EXECQ_TEST_LOG is set: failures are
// asserted on responses, and logs of parked polls outlive their test.
func testLogger() *slog.Logger {
	if os.Getenv("EXECQ_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func newClient(t testing.TB) *http.Client {
	c := plainClient(t)
	// Every exchange on the public API is held to docs/openapi.yaml.
	c.Transport = specChecked(t, c.Transport)
	return c
}

// plainClient is newClient without the OpenAPI check, for benchmarks: the
// check runs as the body is read and would count in what they time.
func plainClient(t testing.TB) *http.Client {
	tr := &http.Transport{MaxIdleConns: 1000, MaxIdleConnsPerHost: 1000, IdleConnTimeout: time.Minute}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 2 * time.Minute}
}

// response is an HTTP answer read in full.
type response struct {
	Status int
	Header http.Header
	Body   []byte
}

// errorCode returns the code of a JSON error envelope, or "" if the body is
// not one.
func (r response) errorCode() string {
	var e shared.ErrorBody
	if json.Unmarshal(r.Body, &e) != nil {
		return ""
	}
	return e.Error.Code
}

func (r response) String() string {
	body := r.Body
	if len(body) > 512 {
		body = body[:512]
	}
	return fmt.Sprintf("%d %s", r.Status, body)
}

// request sends a request to base+path. body may be nil, a []byte or string
// sent verbatim, or a value sent as JSON. token "" sends no Authorization.
func (b *bundle) request(ctx context.Context, base, method, path, token string, body any) (response, error) {
	auth := ""
	if token != "" {
		auth = "Bearer " + token
	}
	return b.requestAuth(ctx, base, method, path, auth, body)
}

// requestAuth is request with a verbatim Authorization header ("" for none).
func (b *bundle) requestAuth(ctx context.Context, base, method, path, auth string, body any) (response, error) {
	var rd io.Reader
	switch v := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(v)
	case string:
		rd = strings.NewReader(v)
	default:
		js, err := json.Marshal(v)
		if err != nil {
			return response{}, err
		}
		rd = bytes.NewReader(js)
	}
	req, err := http.NewRequestWithContext(ctx, method, base+path, rd)
	if err != nil {
		return response{}, err
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := b.client.Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return response{}, err
	}
	return response{Status: resp.StatusCode, Header: resp.Header, Body: data}, nil
}

// do sends a request to this bundle's replica and fails the test on a
// transport error.
func (b *bundle) do(method, path, token string, body any) response {
	b.t.Helper()
	return b.doAt(b.URL, method, path, token, body)
}

func (b *bundle) doAt(base, method, path, token string, body any) response {
	b.t.Helper()
	r, err := b.request(context.Background(), base, method, path, token, body)
	if err != nil {
		b.t.Fatalf("%s %s: %v", method, path, err)
	}
	return r
}

// mustJSON sends a request, checks the status and decodes the answer into out
// (unless out is nil).
func (b *bundle) mustJSON(base, method, path, token string, body any, want int, out any) response {
	b.t.Helper()
	r := b.doAt(base, method, path, token, body)
	if r.Status != want {
		b.t.Fatalf("%s %s: got %s, want status %d", method, path, r, want)
	}
	if out != nil {
		if err := json.Unmarshal(r.Body, out); err != nil {
			b.t.Fatalf("%s %s: decode %T: %v (body %s)", method, path, out, err, r)
		}
	}
	return r
}

// wantError checks a JSON error answer.
func (b *bundle) wantError(r response, status int, code string) {
	b.t.Helper()
	if r.Status != status || r.errorCode() != code {
		b.t.Fatalf("got %s, want %d with error code %q", r, status, code)
	}
	var env struct {
		Error map[string]any `json:"error"`
	}
	if err := json.Unmarshal(r.Body, &env); err != nil {
		b.t.Fatalf("error body is not a JSON envelope: %v (%s)", err, r)
	}
	if msg, _ := env.Error["message"].(string); msg == "" || len(env.Error) != 2 {
		b.t.Fatalf("error envelope must hold exactly a code and a message: %s", r)
	}
}

// User API.

func submitPath(container string) string { return "/api/v1/containers/" + container + "/commands" }
func commandPath(id string) string       { return "/api/v1/commands/" + id }

func (b *bundle) submit(user identity, container, program string, args ...string) shared.CommandExecutionRecord {
	b.t.Helper()
	var rec shared.CommandExecutionRecord
	b.mustJSON(b.URL, http.MethodPost, submitPath(container), user.Token,
		shared.SubmitRequest{Program: program, Args: args}, http.StatusAccepted, &rec)
	return rec
}

func (b *bundle) get(user identity, id string) shared.CommandExecutionRecord {
	b.t.Helper()
	var rec shared.CommandExecutionRecord
	b.mustJSON(b.URL, http.MethodGet, commandPath(id), user.Token, nil, http.StatusOK, &rec)
	return rec
}

// output reads a stream's exact bytes.
func (b *bundle) output(user identity, id, stream string) []byte {
	b.t.Helper()
	r := b.do(http.MethodGet, commandPath(id)+"/output?stream="+stream, user.Token, nil)
	if r.Status != http.StatusOK {
		b.t.Fatalf("output %s of %s: %s", stream, id, r)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/octet-stream" {
		b.t.Fatalf("output Content-Type %q, want application/octet-stream", ct)
	}
	return r.Body
}

// waitStatus polls the record until it has the status.
func (b *bundle) waitStatus(user identity, id string, want shared.Status) shared.CommandExecutionRecord {
	b.t.Helper()
	var rec shared.CommandExecutionRecord
	eventually(b.t, within, func() bool {
		rec = b.get(user, id)
		return rec.Status == want
	}, "command %s never became %s", id, want)
	return rec
}

// Agent protocol.

func agentCommandPath(id, action string) string { return shared.AgentPathCommands + id + "/" + action }

func (b *bundle) leaseAt(base string, node nodeIdentity, max, waitMS int) shared.LeaseResponse {
	b.t.Helper()
	var resp shared.LeaseResponse
	b.mustJSON(base, http.MethodPost, shared.AgentPathLease, node.Token,
		shared.LeaseRequest{Max: max, WaitMillis: waitMS}, http.StatusOK, &resp)
	return resp
}

// leaseCommand long-polls until the node is handed command id, failing on
// anything else handed out.
func (b *bundle) leaseCommand(node nodeIdentity, id string) shared.LeasedCommand {
	b.t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		resp := b.leaseAt(b.URL, node, 1, 1000)
		for _, c := range resp.Commands {
			if c.ID != id {
				b.t.Fatalf("lease handed out %s while waiting for %s", c.ID, id)
			}
			return c
		}
	}
	b.t.Fatalf("command %s was never leased to node %s", id, node.ID)
	return shared.LeasedCommand{}
}

func (b *bundle) agent(node nodeIdentity, id, action string, body any) response {
	b.t.Helper()
	return b.do(http.MethodPost, agentCommandPath(id, action), node.Token, body)
}

func (b *bundle) start(node nodeIdentity, lc shared.LeasedCommand) {
	b.t.Helper()
	r := b.agent(node, lc.ID, "start", shared.StartRequest{Attempt: lc.Attempt})
	if r.Status != http.StatusOK {
		b.t.Fatalf("start %s attempt %d: %s", lc.ID, lc.Attempt, r)
	}
}

func (b *bundle) heartbeat(node nodeIdentity, lc shared.LeasedCommand, chunks ...shared.Chunk) shared.HeartbeatResponse {
	b.t.Helper()
	var hb shared.HeartbeatResponse
	r := b.agent(node, lc.ID, "heartbeat", shared.HeartbeatRequest{Attempt: lc.Attempt, Chunks: chunks})
	if r.Status != http.StatusOK {
		b.t.Fatalf("heartbeat %s attempt %d: %s", lc.ID, lc.Attempt, r)
	}
	if err := json.Unmarshal(r.Body, &hb); err != nil {
		b.t.Fatalf("decode heartbeat answer: %v", err)
	}
	return hb
}

func (b *bundle) finish(node nodeIdentity, req shared.FinishRequest, id string) response {
	b.t.Helper()
	return b.agent(node, id, "finish", req)
}

// run takes a fresh command of alice on node A through lease and start, and
// returns its lease: the common preamble of the chunk tests.
func (b *bundle) run(program string, args ...string) shared.LeasedCommand {
	b.t.Helper()
	rec := b.submit(b.Alice, b.NodeA.Container, program, args...)
	lc := b.leaseCommand(b.NodeA, rec.ID)
	b.start(b.NodeA, lc)
	return lc
}

func stdout(off int64, data string) shared.Chunk {
	return shared.Chunk{Stream: shared.StreamStdout, Offset: off, Data: []byte(data)}
}

func stderr(off int64, data string) shared.Chunk {
	return shared.Chunk{Stream: shared.StreamStderr, Offset: off, Data: []byte(data)}
}

func exitCode(n int) *int { return &n }

// Database assertions.

// count runs a count(*) query against the test database.
func (b *bundle) count(query string, args ...any) int {
	b.t.Helper()
	var n int
	if err := b.DB.QueryRow(query, args...).Scan(&n); err != nil {
		b.t.Fatalf("%s: %v", query, err)
	}
	return n
}

// snapshot captures what bad input must not change: every row of the job
// table, rendered, and every chunk.
func (b *bundle) snapshot() string {
	b.t.Helper()
	var s string
	err := b.DB.QueryRow(`SELECT
		coalesce((SELECT string_agg(c::text, E'\n' ORDER BY id) FROM commands c), '') || E'\n--\n' ||
		coalesce((SELECT string_agg(k::text, E'\n' ORDER BY command_id, stream, off) FROM command_chunks k), '')`).Scan(&s)
	if err != nil {
		b.t.Fatalf("snapshot: %v", err)
	}
	return s
}

// waitLeaseExpired waits until PostgreSQL's clock has passed the command's
// lease, so the test needs no sleep tuned to the TTL.
func (b *bundle) waitLeaseExpired(id string) {
	b.t.Helper()
	eventually(b.t, within, func() bool {
		return b.count(`SELECT count(*) FROM commands WHERE id = $1 AND lease_expires_at < now()`, id) == 1
	}, "lease of %s never expired", id)
}

// waitListeners waits until n notification listeners are connected to the
// test database, so a wake-up test does not race the LISTEN.
func waitListeners(t testing.TB, db *sql.DB, n int) {
	t.Helper()
	eventually(t, within, func() bool {
		var got int
		err := db.QueryRow(`SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND query ILIKE 'LISTEN%'`).Scan(&got)
		return err == nil && got >= n
	}, "%d notification listeners never connected", n)
}

// eventually polls cond every 20ms until it holds or timeout passes.
func eventually(t testing.TB, timeout time.Duration, cond func() bool, format string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: "+format, append([]any{timeout}, args...)...)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
