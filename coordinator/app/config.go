package app

import (
	"errors"
	"fmt"
	"time"
)

// Config is the coordinator's configuration. Every field has a flag and an
// EXECQ_* environment variable (see cmd/execq-coordinator); defaults live in
// DefaultConfig.
type Config struct {
	// Listen is the HTTP address (EXECQ_LISTEN).
	Listen string
	// DatabaseURL is a lib/pq connection URL (EXECQ_DATABASE_URL).
	DatabaseURL string
	// DBMaxConns bounds the pool (EXECQ_DB_MAX_CONNS). Parked long-polls use
	// none, so this is sized for request concurrency, not agent count.
	DBMaxConns int
	// DBQueryTimeout bounds each database call, pool wait included
	// (EXECQ_DB_QUERY_TIMEOUT): past it the request answers 503.
	DBQueryTimeout time.Duration
	// DBReservedConns is the part of the pool kept for agents' start,
	// heartbeat, finish and release (EXECQ_DB_RESERVED_CONNS): every other
	// database call is admitted at most DBMaxConns-DBReservedConns at a
	// time, so a running command's heartbeat never waits behind new work.
	// 0 turns the reserve and admission control off; -1 (the default)
	// reserves a quarter of the pool, at least one connection.
	DBReservedConns int
	// DBMaxWaiting is how many admitted-class calls may wait for a
	// connection before the public API refuses new requests with 429 and
	// Retry-After, without touching the database (EXECQ_DB_MAX_WAITING).
	DBMaxWaiting int
	// LeaseTTL is how long a lease, or a running command, survives without a
	// heartbeat before the reaper acts (EXECQ_LEASE_TTL).
	LeaseTTL time.Duration
	// Heartbeat is the interval agents are told to heartbeat at
	// (EXECQ_HEARTBEAT_INTERVAL). Must leave room for retries within LeaseTTL.
	Heartbeat time.Duration
	// NodeDownAfter is how long after its agent's last contact a node is
	// reported down (execq_node_up 0; EXECQ_NODE_DOWN_AFTER). Contacts are
	// written every quarter of it (see liveness), so a live agent is never
	// reported down, and a stopped one is within 1.25 times it.
	NodeDownAfter time.Duration
	// MaxWait caps a long-poll (EXECQ_LONGPOLL_MAX_WAIT).
	MaxWait time.Duration
	// SafetyPoll is how often the replica checks, with one query for all its
	// parked polls, for work whose notification was lost (EXECQ_SAFETY_POLL).
	SafetyPoll time.Duration
	// ReapInterval is how often the reaper runs (EXECQ_REAP_INTERVAL).
	ReapInterval time.Duration
	// Retention is how long a terminal command (and its output) is kept
	// after it finished (EXECQ_RETENTION); older ones are deleted every
	// PruneInterval by any replica. 0 keeps them forever.
	Retention time.Duration
	// PruneInterval is how often a replica deletes commands past the
	// retention; not a flag.
	PruneInterval time.Duration
	// OutputCap is the bytes kept per stream per command
	// (EXECQ_OUTPUT_CAP_BYTES): past it the head and the tail of the stream
	// are kept, the middle is dropped and the record says truncated.
	OutputCap int64
	// OutputTail is how much of the cap goes to a stream's tail
	// (EXECQ_OUTPUT_TAIL_BYTES); 0 means half. The rest is the head.
	OutputTail int64
	// AuthCacheTTL is how long a verified token is trusted without asking
	// the database again (EXECQ_AUTH_CACHE_TTL); 0 disables the cache.
	AuthCacheTTL time.Duration
	// AuthFailInterval and AuthFailBurst rate-limit failed authentications
	// per client address (EXECQ_AUTH_FAIL_INTERVAL, EXECQ_AUTH_FAIL_BURST):
	// AuthFailBurst failures at once, then one per AuthFailInterval; past
	// that the address gets 429 with Retry-After.
	AuthFailInterval time.Duration
	AuthFailBurst    int
	// ShutdownGrace bounds how long in-flight requests may finish at stop
	// (EXECQ_SHUTDOWN_GRACE).
	ShutdownGrace time.Duration
	// IdleTimeout closes a keep-alive connection that sends no new request
	// for this long (EXECQ_HTTP_IDLE_TIMEOUT), so idle clients cannot hold
	// file descriptors forever.
	IdleTimeout time.Duration
	// ReadTimeout bounds the reading of a request: its headers, and its body
	// from the time the headers arrived (EXECQ_HTTP_READ_TIMEOUT). A client
	// sending a body slower than that is cut off, with a token or without.
	ReadTimeout time.Duration
	// WriteTimeout bounds every write of a response
	// (EXECQ_HTTP_WRITE_TIMEOUT): a client that stops reading is cut off
	// after it, and its connection and buffers freed. A response making
	// progress is not cut; long-polls extend theirs over their wait.
	WriteTimeout time.Duration
	// MaxLargeReads bounds the records with large output (over 1 MiB) being
	// sent at once (EXECQ_MAX_LARGE_READS); up to MaxLargeReadQueue more
	// wait their turn (EXECQ_MAX_LARGE_READ_QUEUE), past that the answer is
	// 503 with Retry-After.
	MaxLargeReads     int
	MaxLargeReadQueue int
	// DefaultTimeout and MaxTimeout bound a command's run from its start
	// (EXECQ_DEFAULT_TIMEOUT, EXECQ_MAX_TIMEOUT); whole seconds.
	DefaultTimeout time.Duration
	MaxTimeout     time.Duration
	// DefaultQueueTimeout and MaxQueueTimeout bound how long a command may
	// wait for an agent to start it (EXECQ_DEFAULT_QUEUE_TIMEOUT,
	// EXECQ_MAX_QUEUE_TIMEOUT); whole seconds.
	DefaultQueueTimeout time.Duration
	MaxQueueTimeout     time.Duration
	// DefaultGrace and MaxGrace are the time between SIGTERM and SIGKILL
	// when a command is cancelled or times out (EXECQ_DEFAULT_GRACE,
	// EXECQ_MAX_GRACE); whole seconds.
	DefaultGrace time.Duration
	MaxGrace     time.Duration
	// TLS serves HTTPS, optionally with client certificates (tls.go).
	TLS TLSConfig
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		Listen:          "127.0.0.1:8080",
		DBMaxConns:      20,
		DBQueryTimeout:  10 * time.Second,
		DBReservedConns: -1,
		DBMaxWaiting:    100,
		LeaseTTL:        15 * time.Second,
		Heartbeat:       3 * time.Second,
		NodeDownAfter:   2 * time.Minute,
		MaxWait:         30 * time.Second,
		SafetyPoll:      5 * time.Second,
		ReapInterval:    time.Second,
		Retention:       30 * 24 * time.Hour,
		PruneInterval:   time.Minute,
		OutputCap:       16 << 20,
		ShutdownGrace:   10 * time.Second,
		// Revocations reach every replica's cache by notification at once;
		// the TTL is the back-stop for a listener that is down. Longer than
		// an agent's re-poll (30 s), so an idle agent's poll costs no token
		// lookup: at 10 s every parked agent cost one lookup per re-poll
		// (10,000 agents: ~330 commits/s); at 2 min it is one per 2 min. The
		// same default as Kubernetes' webhook token cache.
		AuthCacheTTL: 2 * time.Minute,
		IdleTimeout:  90 * time.Second,
		ReadTimeout:  30 * time.Second,
		WriteTimeout: 30 * time.Second,

		MaxLargeReads:     8,
		MaxLargeReadQueue: 64,

		AuthFailInterval: time.Second,
		AuthFailBurst:    20,

		DefaultTimeout:      time.Hour,
		MaxTimeout:          24 * time.Hour,
		DefaultQueueTimeout: time.Hour,
		MaxQueueTimeout:     7 * 24 * time.Hour,
		DefaultGrace:        10 * time.Second,
		MaxGrace:            5 * time.Minute,

		TLS: TLSConfig{ReloadInterval: DefaultTLSReloadInterval},
	}
}

// reservedConns resolves DBReservedConns: -1 is a quarter of the pool, at
// least one connection.
func (c Config) reservedConns() int {
	if c.DBReservedConns == -1 {
		return max(1, c.DBMaxConns/4)
	}
	return c.DBReservedConns
}

// maxOutputCap keeps a stream within what one bytea value may hold.
const maxOutputCap = 512 << 20

// outputTail is the tail part of the cap: OutputTail, or half the cap.
func (c Config) outputTail() int64 {
	if c.OutputTail == 0 {
		return c.OutputCap / 2
	}
	return c.OutputTail
}

// Validate reports the first setting an operator must fix.
func (c Config) Validate() error {
	if err := c.TLS.validate(); err != nil {
		return err
	}
	switch {
	case c.DatabaseURL == "":
		return errors.New("--database-url (EXECQ_DATABASE_URL) is required, e.g. postgres://execq@localhost/execq?sslmode=disable")
	case c.Listen == "":
		return errors.New("--listen (EXECQ_LISTEN) must not be empty")
	case c.DBMaxConns < 2:
		return errors.New("--db-max-conns (EXECQ_DB_MAX_CONNS) must be at least 2")
	case c.DBReservedConns < -1 || c.DBReservedConns >= c.DBMaxConns:
		return fmt.Errorf("--db-reserved-conns (EXECQ_DB_RESERVED_CONNS) must be -1 (a quarter of the pool), 0 (no reserve) or up to one less than --db-max-conns (%d)", c.DBMaxConns)
	case c.DBMaxWaiting < 1:
		return errors.New("--db-max-waiting (EXECQ_DB_MAX_WAITING) must be at least 1")
	case c.DBQueryTimeout < 100*time.Millisecond:
		return errors.New("--db-query-timeout (EXECQ_DB_QUERY_TIMEOUT) must be at least 100ms")
	case c.LeaseTTL < time.Second:
		return errors.New("--lease-ttl (EXECQ_LEASE_TTL) must be at least 1s")
	case c.Heartbeat <= 0 || c.Heartbeat*2 > c.LeaseTTL:
		return fmt.Errorf("--heartbeat-interval (EXECQ_HEARTBEAT_INTERVAL) must be positive and at most half the lease TTL (%s), so one lost heartbeat is survivable", c.LeaseTTL)
	case c.NodeDownAfter < time.Second:
		return errors.New("--node-down-after (EXECQ_NODE_DOWN_AFTER) must be at least 1s")
	case c.MaxWait <= 0:
		return errors.New("--longpoll-max-wait (EXECQ_LONGPOLL_MAX_WAIT) must be positive")
	case c.SafetyPoll <= 0:
		return errors.New("--safety-poll (EXECQ_SAFETY_POLL) must be positive")
	case c.ReapInterval <= 0:
		return errors.New("--reap-interval (EXECQ_REAP_INTERVAL) must be positive")
	case c.Retention < 0:
		return errors.New("--retention (EXECQ_RETENTION) must not be negative (0 keeps commands forever)")
	case c.PruneInterval <= 0:
		return errors.New("the prune interval must be positive")
	case c.AuthCacheTTL < 0:
		return errors.New("--auth-cache-ttl (EXECQ_AUTH_CACHE_TTL) must not be negative")
	case c.AuthFailInterval <= 0 || c.AuthFailInterval > time.Hour:
		return errors.New("--auth-fail-interval (EXECQ_AUTH_FAIL_INTERVAL) must be positive and at most 1h")
	case c.AuthFailBurst < 1:
		return errors.New("--auth-fail-burst (EXECQ_AUTH_FAIL_BURST) must be at least 1")
	case c.OutputCap < 1024 || c.OutputCap > maxOutputCap:
		return fmt.Errorf("--output-cap-bytes (EXECQ_OUTPUT_CAP_BYTES) must be 1024..%d (PostgreSQL's bytea limit)", maxOutputCap)
	case c.OutputTail < 0 || c.OutputTail >= c.OutputCap:
		return errors.New("--output-tail-bytes (EXECQ_OUTPUT_TAIL_BYTES) must be 0 (half the cap) or less than --output-cap-bytes, so some head is kept")
	case c.IdleTimeout <= 0:
		return errors.New("--http-idle-timeout (EXECQ_HTTP_IDLE_TIMEOUT) must be positive")
	case c.ReadTimeout <= 0:
		return errors.New("--http-read-timeout (EXECQ_HTTP_READ_TIMEOUT) must be positive")
	case c.WriteTimeout <= 0:
		return errors.New("--http-write-timeout (EXECQ_HTTP_WRITE_TIMEOUT) must be positive")
	case c.MaxLargeReads < 1 || c.MaxLargeReadQueue < 0:
		return errors.New("--max-large-reads (EXECQ_MAX_LARGE_READS) must be at least 1 and --max-large-read-queue (EXECQ_MAX_LARGE_READ_QUEUE) not negative")
	}
	return c.validateControl()
}

// validateControl checks the timeout and grace settings: whole seconds, a
// default within its maximum.
func (c Config) validateControl() error {
	for _, l := range []struct {
		flag, env string
		def, max  time.Duration
		min       time.Duration
	}{
		{"timeout", "TIMEOUT", c.DefaultTimeout, c.MaxTimeout, time.Second},
		{"queue-timeout", "QUEUE_TIMEOUT", c.DefaultQueueTimeout, c.MaxQueueTimeout, time.Second},
		{"grace", "GRACE", c.DefaultGrace, c.MaxGrace, 0},
	} {
		switch {
		case l.def < l.min || l.def%time.Second != 0 || l.max%time.Second != 0:
			return fmt.Errorf("--default-%s and --max-%s (EXECQ_DEFAULT_%s, EXECQ_MAX_%s) must be whole seconds, the default at least %s",
				l.flag, l.flag, l.env, l.env, l.min)
		case l.def > l.max:
			return fmt.Errorf("--default-%s (EXECQ_DEFAULT_%s) %s exceeds --max-%s (EXECQ_MAX_%s) %s", l.flag, l.env, l.def, l.flag, l.env, l.max)
		case l.max > 365*24*time.Hour:
			return fmt.Errorf("--max-%s (EXECQ_MAX_%s) must be at most a year", l.flag, l.env)
		}
	}
	return nil
}
