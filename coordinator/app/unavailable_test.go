package app_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lib/pq"

	"github.com/execq/execq/coordinator/app"
	"github.com/execq/execq/shared"
)

// TestDatabaseRefusesConnections: PostgreSQL is up but refuses this
// database (ALLOW_CONNECTIONS false, sessions terminated), as during
// maintenance. Requests that need it get 503 "unavailable", never 500, and
// the coordinator recovers by itself once connections are allowed again.
func TestDatabaseRefusesConnections(t *testing.T) {
	t.Parallel()
	b := setup(t)
	admin := adminDB(t)
	name := dbName(t, b.DBURL)
	allow := func(ok bool) {
		t.Helper()
		if _, err := admin.Exec(fmt.Sprintf(`ALTER DATABASE %s ALLOW_CONNECTIONS %t`, pq.QuoteIdentifier(name), ok)); err != nil {
			t.Fatalf("alter database: %v", err)
		}
	}
	t.Cleanup(func() { allow(true) })

	b.checkOutage(func() {
		allow(false)
		if _, err := admin.Exec(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()`, name); err != nil {
			t.Fatalf("terminate backends: %v", err)
		}
	}, func() { allow(true) })
}

// TestDatabaseUnreachable cuts the network between the coordinator and
// PostgreSQL (a proxy that drops every connection), as when the server is
// down or restarting.
func TestDatabaseUnreachable(t *testing.T) {
	t.Parallel()
	var p *tcpProxy
	b := setup(t, withConfig(func(c *app.Config) {
		p = newProxy(t, c.DatabaseURL)
		c.DatabaseURL = p.url
	}))
	b.checkOutage(func() { p.setDown(true) }, func() { p.setDown(false) })
}

// checkOutage runs the outage scenario: a command exists, down() breaks the
// database, the API answers 503 while /healthz stays up, up() restores it and
// everything works again, long-poll wake-ups included.
func (b *bundle) checkOutage(down, up func()) {
	t := b.t
	t.Helper()
	rec := b.submit(b.Alice, b.NodeA.Container, "id")
	waitListeners(t, b.DB, 1)

	down()
	// Several rounds: the first may meet dead pooled connections, later ones
	// fail to connect.
	for range 3 {
		b.wantError(b.do(http.MethodGet, commandPath(rec.ID), b.Alice.Token, nil), http.StatusServiceUnavailable, "unavailable")
		b.wantError(b.do(http.MethodGet, "/readyz", "", nil), http.StatusServiceUnavailable, "unavailable")
		b.wantError(b.do(http.MethodPost, submitPath(b.NodeA.Container), b.Alice.Token, shared.SubmitRequest{Program: "id"}),
			http.StatusServiceUnavailable, "unavailable")
		b.wantError(b.do(http.MethodPost, shared.AgentPathLease, b.NodeA.Token, shared.LeaseRequest{Max: 1}),
			http.StatusServiceUnavailable, "unavailable")
		if r := b.do(http.MethodGet, "/healthz", "", nil); r.Status != http.StatusOK {
			t.Fatalf("healthz during the outage: %s", r)
		}
	}

	up()
	eventually(t, within, func() bool {
		return b.do(http.MethodGet, "/readyz", "", nil).Status == http.StatusOK
	}, "readyz never recovered")
	if got := b.get(b.Alice, rec.ID); got.Status != shared.StatusQueued {
		t.Fatalf("after recovery: %+v", got)
	}
	// The notification listener reconnects and wakes parked polls again.
	lc := b.leaseCommand(b.NodeA, rec.ID)
	b.start(b.NodeA, lc)
	waitListeners(t, b.DB, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch := b.parkPoll(ctx, b.URL, b.NodeA, parkedWait)
	waitParked(t, b.App, 1)
	enqueued := time.Now()
	next := b.submit(b.Alice, b.NodeA.Container, "id")
	wantWoken(t, ch, next.ID, enqueued)
}

// adminDB connects to the server's maintenance database.
func adminDB(t testing.TB) *sql.DB {
	t.Helper()
	u := os.Getenv("TEST_DATABASE_URL")
	if u == "" {
		t.Fatal("TEST_DATABASE_URL is not set")
	}
	db, err := sql.Open("postgres", u)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func dbName(t testing.TB, dbURL string) string {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatalf("parse %q: %v", dbURL, err)
	}
	return strings.TrimPrefix(u.Path, "/")
}

// tcpProxy forwards connections to PostgreSQL until set down, when it drops
// every open connection and closes new ones at once.
type tcpProxy struct {
	url    string
	target string
	ln     net.Listener

	mu    sync.Mutex
	down  bool
	conns map[net.Conn]struct{}
}

// newProxy listens on loopback and returns a proxy whose url is dbURL
// pointed at it.
func newProxy(t testing.TB, dbURL string) *tcpProxy {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatalf("parse %q: %v", dbURL, err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{target: u.Host, ln: ln, conns: map[net.Conn]struct{}{}}
	u.Host = ln.Addr().String()
	p.url = u.String()
	go p.serve()
	t.Cleanup(func() {
		ln.Close()
		p.setDown(true)
	})
	return p
}

func (p *tcpProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		go p.forward(c)
	}
}

func (p *tcpProxy) forward(c net.Conn) {
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	if p.down {
		p.mu.Unlock()
		c.Close()
		up.Close()
		return
	}
	p.conns[c], p.conns[up] = struct{}{}, struct{}{}
	p.mu.Unlock()
	pipe := func(dst, src net.Conn) {
		_, err := io.Copy(dst, src)
		_ = err // closed on purpose, or by a peer
		dst.Close()
		src.Close()
		p.mu.Lock()
		delete(p.conns, dst)
		delete(p.conns, src)
		p.mu.Unlock()
	}
	go pipe(up, c)
	pipe(c, up)
}

func (p *tcpProxy) setDown(down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = down
	if down {
		for c := range p.conns {
			c.Close()
			delete(p.conns, c)
		}
	}
}

// TestStuckDatabaseAnswers503: a database that stops answering — here a
// row lock held elsewhere that a start must wait for — turns into a 503
// "timeout" (not "unavailable": the database is up, the statement was
// cancelled) once the query timeout passes, not a request that hangs; and the command
// can still be started once the database answers again.
func TestStuckDatabaseAnswers503(t *testing.T) {
	t.Parallel()
	b := setup(t, withConfig(func(c *app.Config) { c.DBQueryTimeout = 300 * time.Millisecond }))
	rec := b.submit(b.Alice, b.NodeA.Container, "true")
	lc := b.leaseCommand(b.NodeA, rec.ID)

	tx, err := b.DB.Begin()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(`SELECT 1 FROM commands WHERE id = $1 FOR UPDATE`, rec.ID); err != nil {
		t.Fatal(err)
	}
	r := b.agent(b.NodeA, lc.ID, "start", shared.StartRequest{Attempt: lc.Attempt})
	// The database answered; the statement ran past the timeout.
	b.wantError(r, http.StatusServiceUnavailable, "timeout")
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	if got := b.get(b.Alice, rec.ID); got.Status != shared.StatusQueued {
		t.Fatalf("status %s after the timed-out start, want queued", got.Status)
	}
	b.start(b.NodeA, lc)
}

// TestReadyzLogsTransitions: during an outage every /readyz probe answers
// 503, but the log gets one line when the replica becomes not ready and one
// when it is ready again, not a line per probe.
func TestReadyzLogsTransitions(t *testing.T) {
	t.Parallel()
	var p *tcpProxy
	logs := &lockedBuffer{}
	b := setup(t, withLogger(slog.New(slog.NewJSONHandler(logs, nil))), withConfig(func(c *app.Config) {
		p = newProxy(t, c.DatabaseURL)
		c.DatabaseURL = p.url
	}))
	const probes = 10
	probe := func(want int) {
		t.Helper()
		for range probes {
			if r := b.do(http.MethodGet, "/readyz", "", nil); r.Status != want {
				t.Fatalf("readyz: %s, want %d", r, want)
			}
		}
	}
	probe(http.StatusOK)
	if got := readinessLogs(t, logs); len(got) != 0 {
		t.Fatalf("ready probes logged %v", got)
	}

	p.setDown(true)
	probe(http.StatusServiceUnavailable)
	got := readinessLogs(t, logs)
	if len(got) != 1 || got[0]["level"] != "ERROR" {
		t.Fatalf("%d failing probes logged %d lines, want one at ERROR: %v", probes, len(got), got)
	}

	p.setDown(false)
	eventually(t, within, func() bool {
		return b.do(http.MethodGet, "/readyz", "", nil).Status == http.StatusOK
	}, "readyz never recovered")
	probe(http.StatusOK)
	got = readinessLogs(t, logs)
	if len(got) != 2 || got[1]["level"] != "INFO" {
		t.Fatalf("after recovery: %d readiness lines, want the outage and one at INFO for the recovery: %v", len(got), got)
	}
}

// readinessLogs returns the JSON log records about readiness: those of a
// /readyz request, and the readiness transitions.
func readinessLogs(t *testing.T, logs *lockedBuffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		if line == "" {
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		msg, _ := rec["msg"].(string)
		if rec["path"] == "/readyz" || strings.HasPrefix(msg, "readiness") {
			out = append(out, rec)
		}
	}
	return out
}

// lockedBuffer is a bytes.Buffer safe for a logger and a test at once.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
