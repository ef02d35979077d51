package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
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
}

// DefaultQueryTimeout is Options.QueryTimeout's default.
const DefaultQueryTimeout = 10 * time.Second

// deadline bounds one store call; see Options.QueryTimeout.
func (s *Store) deadline(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.queryTimeout)
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
	st := &Store{db: db, queryTimeout: opt.QueryTimeout}
	if st.queryTimeout <= 0 {
		st.queryTimeout = DefaultQueryTimeout
	}
	return st, nil
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
		return err
	}
	return interpretError(tx.Commit())
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
