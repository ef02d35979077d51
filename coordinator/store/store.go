package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
	"golang.org/x/sync/semaphore"

	"github.com/execq/execq/shared"
)

// Sentinel errors. The API maps them to status codes.
var (
	// ErrNotFound: no such row, or one the caller may not see.
	ErrNotFound = errors.New("not found")
	// ErrConflict: a unique name is taken.
	ErrConflict = errors.New("conflict")
	// ErrUnavailable: PostgreSQL cannot be reached; the request may be retried.
	ErrUnavailable = errors.New("database unavailable")
	// ErrForbidden: the command or lease belongs to another node.
	ErrForbidden = errors.New("forbidden")
	// ErrLeaseLost: the caller's lease expired, was replaced, or the command
	// was reaped or finished under another lease.
	ErrLeaseLost = errors.New("lease lost")
	// ErrCancelled: the command was cancelled before it started.
	ErrCancelled = errors.New("cancelled")
	// ErrTimeout: a call ran past the query timeout and its statement was
	// cancelled. PostgreSQL answered; the request may be retried.
	ErrTimeout = errors.New("database statement timed out")
)

// Store wraps the connection pool.
type Store struct {
	db           *sqlx.DB
	queryTimeout time.Duration
	// gate admits calls not marked WithPriority (see deadline); nil when
	// Options.ReservedConns is 0.
	gate    *semaphore.Weighted
	waiting atomic.Int64
	// waitingShed counts the waiting calls marked WithShedding.
	waitingShed atomic.Int64
	maxWaiting  int
	// ended is told of every command this store made terminal (see
	// OnEnded); nil tells no one.
	ended func(status shared.Status, reason shared.EndReason, n int)

	// Agents' reports, committed in groups (group.go, report.go).
	starts     *group[startReq, StartResult]
	heartbeats *group[heartbeatReq, HeartbeatResult]
	finishes   *group[finishReq, FinishCallResult]
	// Polls' claims, committed in groups too (claim.go).
	claims *group[claimReq, []Command]
	// Single submits, committed in groups too (enqueuegroup.go).
	enqueues *group[enqueueReq, enqueueRes]
}

// Options tune the pool.
type Options struct {
	// MaxConns bounds open connections. Long-polls never hold one while they
	// wait, so a small pool serves many agents.
	MaxConns int
	// QueryTimeout bounds every store call (waiting for a pooled connection
	// included), so a database that stops answering — a dropped network, a
	// stuck lock — turns into a 503 instead of requests that hang. 0 means
	// DefaultQueryTimeout.
	QueryTimeout time.Duration
	// ReservedConns is the part of the pool kept for calls marked
	// WithPriority (an agent renewing its lease, starting, finishing or
	// releasing a command): other calls are admitted at most
	// MaxConns-ReservedConns at a time, so however much new work queues
	// up, a running command's heartbeat finds a connection. 0 turns
	// admission off (every call goes straight to the pool).
	ReservedConns int
	// MaxWaiting is how many calls marked WithShedding may wait for
	// admission before Busy reports the database overloaded, so new
	// requests are refused early instead of queueing past the query
	// timeout.
	MaxWaiting int
	// ReportBatch bounds the agents' starts, heartbeats or finishes, the
	// polls' claims, or the single submits, committed together in one statement (group.go);
	// 0 means DefaultReportBatch, 1 commits each on its own.
	ReportBatch int
	// ReportSlots is how many batches of each kind may be in flight at
	// once; 0 means DefaultReportSlots. More than one keeps a heartbeat
	// carrying megabytes from holding up the others.
	ReportSlots int
}

// Defaults of Options.ReportBatch and ReportSlots.
const (
	DefaultReportBatch = 100
	DefaultReportSlots = 2
)

// DefaultQueryTimeout is Options.QueryTimeout's default.
const DefaultQueryTimeout = 10 * time.Second

// answerSlack is how long past its server-side statement_timeout a
// committing statement's answer is awaited (see commitOne) before the
// network is deemed gone.
const answerSlack = 10 * time.Second

type ctxKey int

const (
	priorityKey ctxKey = iota
	admittedKey
	sheddableKey
)

// WithPriority marks ctx's store calls as lease keeping (start, heartbeat,
// finish, release): they skip admission and may use the reserved part of
// the pool.
func WithPriority(ctx context.Context) context.Context {
	return context.WithValue(ctx, priorityKey, true)
}

// WithShedding marks ctx's store calls as ones the caller would rather
// refuse than queue (the public API): Busy counts how many of them wait.
// Calls not so marked (agents' claims) wait their turn without counting, so
// a burst of polls woken together does not turn users away.
func WithShedding(ctx context.Context) context.Context {
	return context.WithValue(ctx, sheddableKey, true)
}

// deadline bounds one store call (see Options.QueryTimeout) and admits it:
// a call not marked WithPriority waits, within the same bound, for one of
// the pool's unreserved connections. A call nested in an admitted one (a
// transaction inside a store method) is not admitted twice.
func (s *Store) deadline(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(ctx, s.queryTimeout)
	if s.gate == nil || ctx.Value(priorityKey) != nil || ctx.Value(admittedKey) != nil {
		return ctx, cancel
	}
	shed := ctx.Value(sheddableKey) != nil
	s.waiting.Add(1)
	if shed {
		s.waitingShed.Add(1)
	}
	err := s.gate.Acquire(ctx, 1)
	s.waiting.Add(-1)
	if shed {
		s.waitingShed.Add(-1)
	}
	if err != nil {
		// The bound passed in the queue: ctx is done, so the call fails
		// at once with ErrTimeout without touching the database.
		return ctx, cancel
	}
	var once sync.Once
	return context.WithValue(ctx, admittedKey, true), func() {
		once.Do(func() {
			cancel()
			s.gate.Release(1)
		})
	}
}

// Busy reports that Options.MaxWaiting calls marked WithShedding wait for
// admission, or for a batch of the submit group: the database is the bottleneck, and a new request should be
// refused (429) before it adds to the queue.
func (s *Store) Busy() bool {
	if s.gate == nil {
		return false
	}
	// Submits come only from the public API, so every one waiting for a
	// batch is a call the API would rather have refused.
	_, queued := s.enqueues.stats()
	return s.waitingShed.Load()+int64(queued) >= int64(s.maxWaiting)
}

// Waiting is the number of calls waiting for admission now.
func (s *Store) Waiting() int { return int(s.waiting.Load()) }

// commitOne runs fn, one autocommit statement that changes rows, so that
// its error says the truth about whether it committed. The wait for a
// connection is bounded by the call's deadline; the statement itself by
// PostgreSQL's statement_timeout (set to the query timeout on every
// connection, see Open), and it is not cancelled from this side: a context
// that ends while the answer is on its way (the deadline, or the client
// leaving) would turn a committed statement into an error, and a submit
// answered 503 although queued is retried and run twice. Only if no answer
// comes answerSlack past the statement timeout — the network is gone — is
// the outcome unknown.
func (s *Store) commitOne(ctx context.Context, fn func(ctx context.Context, conn *sqlx.Conn) error) error {
	conn, err := s.db.Connx(ctx)
	if err != nil {
		return interpretError(err)
	}
	defer conn.Close()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.queryTimeout+answerSlack)
	defer cancel()
	return fn(sctx, conn)
}

// Open connects to PostgreSQL and checks the connection.
func Open(ctx context.Context, url string, opt Options) (*Store, error) {
	cfg, err := pq.NewConfig(url)
	if err != nil {
		return nil, fmt.Errorf("database URL: %w", err)
	}
	// Binary parameters: a query with arguments goes out in one round trip
	// instead of two, and output chunks travel as raw bytes rather than
	// hex text twice their size.
	cfg.BinaryParameters = true
	queryTimeout := opt.QueryTimeout
	if queryTimeout <= 0 {
		queryTimeout = DefaultQueryTimeout
	}
	// The server bounds each statement by the query timeout, so a timeout
	// is PostgreSQL's verdict — the statement did not commit — rather than
	// this side giving up on an answer that may say it did (commitOne).
	if cfg.Runtime == nil {
		cfg.Runtime = map[string]string{}
	}
	cfg.Runtime["statement_timeout"] = strconv.FormatInt(queryTimeout.Milliseconds(), 10)
	connector, err := pq.NewConnectorConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("database URL: %w", err)
	}
	db := sqlx.NewDb(sql.OpenDB(connector), "postgres")
	if opt.MaxConns > 0 {
		db.SetMaxOpenConns(opt.MaxConns)
		db.SetMaxIdleConns(opt.MaxConns)
	}
	db.SetConnMaxIdleTime(5 * time.Minute)
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := db.PingContext(pctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("connect to database: %w", err)
	}
	st := &Store{db: db, queryTimeout: queryTimeout, maxWaiting: opt.MaxWaiting}
	st.initGroups(opt)
	if opt.ReservedConns > 0 && opt.MaxConns > opt.ReservedConns {
		st.gate = semaphore.NewWeighted(int64(opt.MaxConns - opt.ReservedConns))
	}
	return st, nil
}

// OnEnded sets fn to be told, after each commit, of the commands the store
// made terminal there: by status and end reason, every way a command ends
// (an agent's finish, a cancel while queued, the reaper's agent-lost,
// timeout and not-picked-up endings, a node's revocation). Set it before
// the store is used: it is not synchronised.
func (s *Store) OnEnded(fn func(status shared.Status, reason shared.EndReason, n int)) { s.ended = fn }

// countEnded tells OnEnded's function of n committed endings.
func (s *Store) countEnded(status shared.Status, reason shared.EndReason, n int) {
	if s.ended != nil && n > 0 {
		s.ended(status, reason, n)
	}
}

// Close closes the pool.
func (s *Store) Close() error { return s.db.Close() }

// DB exposes the pool for metrics (pool statistics).
func (s *Store) DB() *sqlx.DB { return s.db }

// Ping reports whether PostgreSQL answers.
func (s *Store) Ping(ctx context.Context) error {
	ctx, cancel := s.deadline(ctx)
	defer cancel()
	return interpretError(s.db.PingContext(ctx))
}

// WithTx runs fn in a transaction, committing on nil and rolling back on an
// error or a panic.
func (s *Store) WithTx(ctx context.Context, fn func(tx *sqlx.Tx) error) (err error) {
	ctx, cancel := s.deadline(ctx)
	defer cancel()
	tx, err := s.db.BeginTxx(ctx, nil)
	if err != nil {
		return interpretError(err)
	}
	defer func() {
		if p := recover(); p != nil {
			_ = tx.Rollback()
			panic(p)
		}
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	if err = fn(tx); err != nil {
		return timedOut(ctx, err)
	}
	return timedOut(ctx, interpretError(tx.Commit()))
}

// timedOut reports an error of a transaction whose deadline passed as
// ErrTimeout. When the deadline passes, database/sql rolls the transaction
// back behind the caller's back, so the next statement or the commit fails
// with sql.ErrTxDone ("transaction has already been committed or rolled
// back"): that is a timeout, and the transaction did not commit.
func timedOut(ctx context.Context, err error) error {
	if err == nil || ctx.Err() == nil || errors.Is(err, ErrTimeout) {
		return err
	}
	if !errors.Is(err, sql.ErrTxDone) && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
		return err
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("%w: %v", ErrTimeout, err)
	}
	return fmt.Errorf("%w: %v", ctx.Err(), err) // the caller went away
}

// interpretError maps driver errors to the package sentinels, keeping the
// original in the chain for logs.
func interpretError(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, ErrNotFound) || errors.Is(err, ErrUnavailable) || errors.Is(err, ErrTimeout) {
		return err
	}
	var pqErr *pq.Error
	if errors.As(err, &pqErr) {
		switch {
		case pqErr.Code == "23505": // unique_violation
			return fmt.Errorf("%w: %s", ErrConflict, pqErr.Message)
		case pqErr.Code == "57014": // query_canceled: our deadline ran out, or the server's statement_timeout
			return fmt.Errorf("%w: %v", ErrTimeout, err)
		case pqErr.Code.Class() == "08", // connection exception
			pqErr.Code == "57P01", pqErr.Code == "57P02", pqErr.Code == "57P03", // shutdown, crash, cannot connect now
			pqErr.Code == "53300", // too many connections
			// FATAL ends the session: the server refused or dropped the
			// connection (e.g. the database does not accept connections now).
			pqErr.Fatal():
			return fmt.Errorf("%w: %v", ErrUnavailable, err)
		}
		return err
	}
	if errors.Is(err, context.DeadlineExceeded) {
		// The call's deadline (Options.QueryTimeout) passed: waiting for a
		// pooled connection, or lib/pq gave the context's error instead of
		// the server's answer to its cancel.
		return fmt.Errorf("%w: %v", ErrTimeout, err)
	}
	var netErr net.Error
	if errors.As(err, &netErr) || errors.Is(err, driver.ErrBadConn) || errors.Is(err, io.EOF) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return err
}
