package app_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/execq/execq/coordinator/app"
	"github.com/execq/execq/shared"
)

// Overload tests force the conditions an overloaded database creates — an
// answer that arrives after the query timeout, a connection that is not
// free — with a proxy that holds one answer, or a lock the test holds, so
// the condition is certain rather than hoped for.

// overloadTimeout is the query timeout of the tests that hold an answer
// past it.
const overloadTimeout = 300 * time.Millisecond

// holdProxy forwards connections to PostgreSQL and can hold, once, the
// server's answer to the first statement whose text contains a pattern.
type holdProxy struct {
	url    string
	target string
	ln     net.Listener

	mu   sync.Mutex
	rule *holdRule
}

// holdRule is one armed hold.
type holdRule struct {
	pattern []byte
	// hit is closed once a connection sent the pattern: its answer is
	// held from then on.
	hit     chan struct{}
	release chan struct{}
	once    sync.Once
}

// Release lets the held answer through.
func (r *holdRule) Release() { r.once.Do(func() { close(r.release) }) }

func newHoldProxy(t testing.TB, dbURL string) *holdProxy {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatalf("parse %q: %v", dbURL, err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &holdProxy{target: u.Host, ln: ln}
	u.Host = ln.Addr().String()
	p.url = u.String()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.forward(c)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		if p.rule != nil {
			p.rule.Release()
		}
		p.mu.Unlock()
	})
	return p
}

// holdAnswerTo arms a hold: the next statement sent whose text contains
// pattern reaches PostgreSQL, but its answer is held until Release.
func (p *holdProxy) holdAnswerTo(t testing.TB, pattern string) *holdRule {
	r := &holdRule{pattern: []byte(pattern), hit: make(chan struct{}), release: make(chan struct{})}
	p.mu.Lock()
	p.rule = r
	p.mu.Unlock()
	t.Cleanup(r.Release)
	return r
}

func (p *holdProxy) forward(c net.Conn) {
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		c.Close()
		return
	}
	var held atomic.Pointer[holdRule]
	closeBoth := func() { c.Close(); up.Close() }
	go func() { // client to server: watch for the pattern
		defer closeBoth()
		buf := make([]byte, 64<<10)
		var tail []byte
		for {
			n, err := c.Read(buf)
			if n > 0 {
				seen := append(tail, buf[:n]...)
				p.mu.Lock()
				if r := p.rule; r != nil && bytes.Contains(seen, r.pattern) {
					// Armed before the statement is passed on, so its
					// answer cannot slip through.
					p.rule = nil
					held.Store(r)
					close(r.hit)
				}
				p.mu.Unlock()
				tail = append([]byte(nil), seen[max(0, len(seen)-256):]...)
				if _, err := up.Write(buf[:n]); err != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	defer closeBoth()
	buf := make([]byte, 64<<10)
	for { // server to client: held while a rule says so
		n, err := up.Read(buf)
		if n > 0 {
			if r := held.Load(); r != nil {
				<-r.release
			}
			if _, err := c.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// withHoldProxy points the replica at a holdProxy and sets the query
// timeout the held answers outlast.
func withHoldProxy(t testing.TB, p **holdProxy) option {
	return withConfig(func(c *app.Config) {
		*p = newHoldProxy(t, c.DatabaseURL)
		c.DatabaseURL = (*p).url
		c.DBQueryTimeout = overloadTimeout
	})
}

// pastTheTimeout waits until the held statement committed (seen on a
// direct connection) and the query timeout of the call that sent it has
// certainly passed: it was set before the statement was sent.
func pastTheTimeout(t *testing.T, r *holdRule, committed func() bool) {
	t.Helper()
	select {
	case <-r.hit:
	case <-time.After(within):
		t.Fatal("the statement to hold was never sent")
	}
	eventually(t, within, committed, "the held statement never committed")
	time.Sleep(3 * overloadTimeout)
}

// count runs a count(*) query on a direct connection.
func count(t testing.TB, db *sql.DB, query string, args ...any) int {
	t.Helper()
	var n int
	if err := db.QueryRow(query, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

// TestSubmitCommittedAnswers2xx: the answer to a submit's INSERT arrives
// after the query timeout (an overloaded database: the statement committed,
// its answer was slow). The command is queued, so the submit answers 202
// with it — never 503, which invites a retry that would run it twice.
func TestSubmitCommittedAnswers2xx(t *testing.T) {
	t.Parallel()
	var p *holdProxy
	b := setup(t, withHoldProxy(t, &p))
	hold := p.holdAnswerTo(t, "INSERT INTO commands")
	done := make(chan response, 1)
	go func() {
		done <- b.do(http.MethodPost, submitPath(b.NodeA.Container), b.Alice.Token,
			shared.SubmitRequest{Program: "echo", Args: []string{"held-submit"}})
	}()
	pastTheTimeout(t, hold, func() bool {
		return count(t, b.DB, `SELECT count(*) FROM commands WHERE args = '{held-submit}'`) == 1
	})
	hold.Release()
	r := <-done
	if r.Status != http.StatusAccepted {
		t.Fatalf("submit whose INSERT committed: %s, want 202 with the queued command", r)
	}
	var rec shared.CommandExecutionRecord
	if err := json.Unmarshal(r.Body, &rec); err != nil {
		t.Fatalf("decode %s: %v", r, err)
	}
	if got := count(t, b.DB, `SELECT count(*) FROM commands WHERE id = $1 AND args = '{held-submit}'`, rec.ID); got != 1 {
		t.Fatalf("the answer names %s, not the queued command", rec.ID)
	}
}

// TestLeaseUndeliveredIsReleased: the agent's long-poll connection drops
// while its claim commits. The lease could not be delivered, so it is
// released at once — not left to sit out its TTL (a minute here) — and the
// command is handed out again to the next poll.
func TestLeaseUndeliveredIsReleased(t *testing.T) {
	t.Parallel()
	var p *holdProxy
	b := setup(t, withHoldProxy(t, &p), withConfig(func(c *app.Config) {
		c.LeaseTTL, c.Heartbeat = time.Minute, 20*time.Second
	}))
	// The poll's request context ends when its connection drops: a test
	// server around the replica's handler says when the handler saw that.
	gone := make(chan struct{})
	var once sync.Once
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == shared.AgentPathLease {
			context.AfterFunc(r.Context(), func() { once.Do(func() { close(gone) }) })
		}
		b.App.Handler.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)

	rec := b.submit(b.Alice, b.NodeA.Container, "true")
	hold := p.holdAnswerTo(t, "UPDATE commands c SET attempt")
	ctx, cancel := context.WithCancel(context.Background())
	polled := make(chan error, 1)
	go func() {
		_, err := b.request(ctx, srv.URL, http.MethodPost, shared.AgentPathLease, b.NodeA.Token, shared.LeaseRequest{Max: 1, WaitMillis: 0})
		polled <- err
	}()
	select {
	case <-hold.hit:
	case <-time.After(within):
		t.Fatal("the claim was never sent")
	}
	eventually(t, within, func() bool {
		return count(t, b.DB, `SELECT count(*) FROM commands WHERE id = $1 AND leased_by IS NOT NULL`, rec.ID) == 1
	}, "the claim never committed")
	cancel() // the agent's connection drops
	<-polled
	select {
	case <-gone:
	case <-time.After(within):
		t.Fatal("the handler never saw the connection drop")
	}
	hold.Release()
	eventually(t, within, func() bool {
		return count(t, b.DB, `SELECT count(*) FROM commands WHERE id = $1 AND status = 'queued' AND leased_by IS NULL`, rec.ID) == 1
	}, "the undelivered lease was not released")
	b.leaseCommand(b.NodeA, rec.ID)
}

// TestFinishTimeoutIs503: the query timeout passes during a finish (the
// answer to its read of the row held past it). The agent gets 503
// "timeout", which it retries — never 500 — and nothing of the timed-out
// finish was kept; the retry completes it.
func TestFinishTimeoutIs503(t *testing.T) {
	t.Parallel()
	var p *holdProxy
	b := setup(t, withHoldProxy(t, &p))
	rec := b.submit(b.Alice, b.NodeA.Container, "true")
	lc := b.leaseCommand(b.NodeA, rec.ID)
	b.start(b.NodeA, lc)

	// A finish with part of its output: it reads the row (the statement
	// held here) before it writes anything.
	hold := p.holdAnswerTo(t, "AS row_version FROM commands")
	done := make(chan response, 1)
	go func() {
		done <- b.agent(b.NodeA, lc.ID, "finish", shared.FinishRequest{Attempt: lc.Attempt, ExitCode: exitCode(0),
			StdoutLength: 4, Chunks: []shared.Chunk{{Stream: shared.StreamStdout, Offset: 0, Data: []byte("ab")}}})
	}()
	select {
	case <-hold.hit:
	case <-time.After(within):
		t.Fatal("the statement to hold was never sent")
	}
	time.Sleep(3 * overloadTimeout)
	hold.Release()
	b.wantError(<-done, http.StatusServiceUnavailable, "timeout")
	if got := count(t, b.DB, `SELECT count(*) FROM command_chunks WHERE command_id = $1`, rec.ID); got != 0 {
		t.Fatalf("%d chunks kept from the timed-out finish, want none", got)
	}
	r := b.agent(b.NodeA, lc.ID, "finish", shared.FinishRequest{Attempt: lc.Attempt, ExitCode: exitCode(0),
		StdoutLength: 4, Chunks: []shared.Chunk{{Stream: shared.StreamStdout, Offset: 0, Data: []byte("abcd")}}})
	if r.Status != http.StatusOK {
		t.Fatalf("finish retried: %s", r)
	}
	if got := b.output(b.Alice, rec.ID, shared.StreamStdout); string(got) != "abcd" {
		t.Fatalf("stdout %q, want abcd", got)
	}
}

// TestOverloadShedsAndKeepsLeases saturates the database for new work: a
// pool of 3 with 1 reserved, both unreserved connections held by requests
// stuck on a lock the test holds, and as many calls waiting for them as
// --db-max-waiting allows. A new submit is refused at once with 429 and
// Retry-After, without touching the database (it would otherwise wait out
// the query timeout), while a running command's heartbeat and finish go
// through on the reserved connection: a healthy agent is not failed as
// lost because new work filled the pool.
func TestOverloadShedsAndKeepsLeases(t *testing.T) {
	t.Parallel()
	b := setup(t, withConfig(func(c *app.Config) {
		c.DBMaxConns, c.DBReservedConns, c.DBMaxWaiting = 3, 1, 2
		c.DBQueryTimeout = time.Minute // the stuck requests stay stuck
	}))
	rec := b.submit(b.Alice, b.NodeA.Container, "true")
	lc := b.leaseCommand(b.NodeA, rec.ID)
	b.start(b.NodeA, lc)

	tx, err := b.DB.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.Exec(`LOCK TABLE containers IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	// Requests that need the locked table, one at a time so each is known
	// to be in place: two on the unreserved connections, blocked in
	// PostgreSQL, then two waiting for them.
	stuck := make(chan response, 4)
	list := func() {
		go func() { stuck <- b.do(http.MethodGet, "/api/v1/containers", b.Alice.Token, nil) }()
	}
	name := dbName(t, b.DBURL)
	for i := 1; i <= 2; i++ {
		list()
		eventually(t, within, func() bool {
			return count(t, b.DB, `SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'`, name) == i
		}, "a request never reached the lock")
	}
	for i := 1; i <= 2; i++ {
		list()
		eventually(t, within, func() bool { return b.App.Store.Waiting() == i }, "a request never queued for a connection")
	}

	r := b.do(http.MethodPost, submitPath(b.NodeA.Container), b.Alice.Token, shared.SubmitRequest{Program: "true"})
	b.wantError(r, http.StatusTooManyRequests, "overloaded")
	if got := r.Header.Get("Retry-After"); got != "1" {
		t.Errorf("Retry-After %q, want 1", got)
	}
	if got := count(t, b.DB, `SELECT count(*) FROM commands`); got != 1 {
		t.Errorf("%d commands after the refused submit, want 1", got)
	}

	// Lease keeping goes through while the lock is still held, for longer
	// than the lease TTL with the reaper running every 100ms: the command
	// is renewed, not reaped.
	b.heartbeat(b.NodeA, lc, shared.Chunk{Stream: shared.StreamStdout, Offset: 0, Data: []byte("ok")})
	for range 3 {
		time.Sleep(testHeartbeat)
		b.heartbeat(b.NodeA, lc)
	}
	if r := b.agent(b.NodeA, lc.ID, "finish", shared.FinishRequest{Attempt: lc.Attempt, ExitCode: exitCode(0), StdoutLength: 2}); r.Status != http.StatusOK {
		t.Fatalf("finish while the pool is saturated: %s", r)
	}

	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	for range 4 {
		if r := <-stuck; r.Status != http.StatusOK {
			t.Errorf("a stuck request once the lock was released: %s", r)
		}
	}
	if got := b.get(b.Alice, rec.ID); got.Status != shared.StatusSucceeded || got.Stdout != "ok" {
		t.Errorf("record %+v, want succeeded with stdout ok", got)
	}
	// No longer saturated: submits are taken again.
	b.submit(b.Alice, b.NodeA.Container, "true")
}

// TestKeyedSubmitCommittedAnswers2xx: a submit with an Idempotency-Key is a
// transaction; the answer to its COMMIT arrives after the query timeout.
// The command is queued, so the submit answers 202 with it.
func TestKeyedSubmitCommittedAnswers2xx(t *testing.T) {
	t.Parallel()
	var p *holdProxy
	b := setup(t, withHoldProxy(t, &p), withConfig(func(c *app.Config) { c.ReapInterval = time.Hour }))
	hold := p.holdAnswerTo(t, "COMMIT")
	done := make(chan response, 1)
	go func() {
		done <- b.submitKeyed(b.URL, submitPath(b.NodeA.Container), b.Alice.Token,
			shared.SubmitRequest{Program: "echo", Args: []string{"held-keyed-submit"}}, "held-1")
	}()
	pastTheTimeout(t, hold, func() bool {
		return count(t, b.DB, `SELECT count(*) FROM commands WHERE args = '{held-keyed-submit}'`) == 1
	})
	hold.Release()
	if r := <-done; r.Status != http.StatusAccepted {
		t.Fatalf("keyed submit whose COMMIT succeeded: %s, want 202", r)
	}
}
