package app

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/execq/execq/agent/client"
	"github.com/execq/execq/agent/inventory"
	"github.com/execq/execq/agent/runc"
	"github.com/execq/execq/agent/worker"
	"github.com/execq/execq/internal/logsetup"
	"github.com/execq/execq/shared"
)

// Config is everything the agent needs. Defaults() fills it; the flags and
// EXECQ_* variables in flags.go override it.
type Config struct {
	// CoordinatorURL is the coordinator's base URL, http(s)://host:port.
	CoordinatorURL string
	// Token is this node's agent token. It is never logged.
	Token string

	// RuncBinary is the runc executable (a path, or a name in PATH).
	RuncBinary string
	// RuncRoot is the runc state directory whose containers the agent
	// reports and runs commands in (runc --root).
	RuncRoot string
	// WorkDir holds per-exec scratch files (process spec, pid file, runc
	// log); empty means the system temp directory.
	WorkDir string

	// Concurrency is how many commands run at once (1..100).
	Concurrency int
	// LeaseWait is how long a lease request parks on the coordinator.
	LeaseWait time.Duration
	// DrainGrace is how long running commands may go on after SIGTERM.
	DrainGrace time.Duration
	// KillAfter is the delay between SIGTERM and SIGKILL when the agent
	// stops a command.
	KillAfter time.Duration
	// ReportTimeout is how long stopped commands are still reported at
	// shutdown before the agent gives up and exits.
	ReportTimeout time.Duration
	// MaxBufferBytes bounds the unacknowledged output held per command;
	// past it the command is blocked until the coordinator takes output.
	MaxBufferBytes int64
	// ChunkBytes bounds the output bytes in one request.
	ChunkBytes int
	// FlushInterval is the longest output waits before it is sent, which
	// is how far behind a follower of the output may be.
	FlushInterval time.Duration

	// InventoryInterval is how often runc's container list is checked.
	InventoryInterval time.Duration
	// InventoryKeepalive is how often the inventory is re-sent unchanged.
	InventoryKeepalive time.Duration

	// MetricsListen, if set, serves /metrics there (e.g. "127.0.0.1:9101").
	MetricsListen string
	// Log is the log format and level (main builds the logger).
	Log logsetup.Config

	// RequestTimeout bounds one attempt of a coordinator request (the
	// long-poll lease excepted: it gets LeaseWait plus slack).
	RequestTimeout time.Duration
	// RetryMax, RetryWaitMin and RetryWaitMax tune the client's retries of
	// network errors and 5xx answers.
	RetryMax                   int
	RetryWaitMin, RetryWaitMax time.Duration

	// TLS names the CA file and client certificate for an https://
	// coordinator (see client.TLSFiles).
	TLS client.TLSFiles
}

// Defaults returns the configuration used when nothing is set, in one place.
func Defaults() Config {
	return Config{
		RuncBinary:         runc.DefaultBinary,
		RuncRoot:           runc.DefaultRoot,
		Concurrency:        worker.DefaultConcurrency,
		LeaseWait:          worker.DefaultLeaseWait,
		DrainGrace:         worker.DefaultGrace,
		KillAfter:          worker.DefaultKillAfter,
		ReportTimeout:      worker.DefaultReportTimeout,
		MaxBufferBytes:     worker.DefaultMaxBufferBytes,
		ChunkBytes:         worker.DefaultChunkBytes,
		FlushInterval:      worker.DefaultFlushInterval,
		InventoryInterval:  inventory.DefaultInterval,
		InventoryKeepalive: inventory.DefaultKeepalive,
		RequestTimeout:     client.DefaultRequestTimeout,
		RetryMax:           client.DefaultRetryMax,
		RetryWaitMin:       client.DefaultRetryWaitMin,
		RetryWaitMax:       client.DefaultRetryWaitMax,
		Log:                logsetup.Defaults(),
	}
}

// Validate reports every setting the agent cannot run with, saying which
// flag or variable to fix.
func (c Config) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if c.CoordinatorURL == "" {
		add("coordinator URL is not set: use --coordinator or EXECQ_COORDINATOR")
	} else if u, err := url.Parse(c.CoordinatorURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		add("coordinator URL %q: want http(s)://host[:port] (--coordinator, EXECQ_COORDINATOR)", c.CoordinatorURL)
	}
	if err := c.validateTLS(); err != nil {
		errs = append(errs, err)
	}
	if c.Token == "" {
		add("node token is not set: put it in EXECQ_AGENT_TOKEN or a file named by --token-file")
	} else if strings.ContainsAny(c.Token, " \t\r\n") {
		add("node token contains whitespace (check the token file)")
	}
	if c.RuncBinary == "" {
		add("--runc must not be empty")
	}
	if c.RuncRoot == "" {
		add("--runc-root (EXECQ_RUNC_ROOT) must not be empty")
	}
	if c.Concurrency < 1 || c.Concurrency > worker.MaxConcurrency {
		add("--concurrency (EXECQ_CONCURRENCY) %d: must be 1..%d", c.Concurrency, worker.MaxConcurrency)
	}
	positive := []struct {
		name string
		d    time.Duration
	}{
		{"--lease-wait (EXECQ_LEASE_WAIT)", c.LeaseWait},
		{"--grace (EXECQ_DRAIN_GRACE)", c.DrainGrace},
		{"--kill-after (EXECQ_KILL_AFTER)", c.KillAfter},
		{"--report-timeout (EXECQ_REPORT_TIMEOUT)", c.ReportTimeout},
		{"--flush-interval (EXECQ_FLUSH_INTERVAL)", c.FlushInterval},
		{"--inventory-interval (EXECQ_INVENTORY_INTERVAL)", c.InventoryInterval},
		{"--inventory-keepalive (EXECQ_INVENTORY_KEEPALIVE)", c.InventoryKeepalive},
		{"--request-timeout (EXECQ_REQUEST_TIMEOUT)", c.RequestTimeout},
		{"--retry-wait-min", c.RetryWaitMin},
		{"--retry-wait-max", c.RetryWaitMax},
	}
	for _, p := range positive {
		if p.d <= 0 {
			add("%s must be positive, got %v", p.name, p.d)
		}
	}
	if c.LeaseWait > 5*time.Minute {
		add("--lease-wait %v: at most 5m", c.LeaseWait)
	}
	if c.RetryMax < 0 {
		add("--retry-max must not be negative")
	}
	if c.RetryWaitMax < c.RetryWaitMin {
		add("--retry-wait-max %v is below --retry-wait-min %v", c.RetryWaitMax, c.RetryWaitMin)
	}
	if c.ChunkBytes < 1024 || c.ChunkBytes > shared.MaxRequestOutputBytes {
		add("--chunk-bytes (EXECQ_CHUNK_BYTES) %d: must be 1 KiB..%d MiB (what the coordinator accepts in one request)", c.ChunkBytes, shared.MaxRequestOutputBytes>>20)
	}
	if c.MaxBufferBytes < int64(c.ChunkBytes) {
		add("--max-buffer-bytes (EXECQ_MAX_BUFFER_BYTES) %d must be at least --chunk-bytes %d", c.MaxBufferBytes, c.ChunkBytes)
	}
	if c.MetricsListen != "" {
		if _, _, err := net.SplitHostPort(c.MetricsListen); err != nil {
			add("--metrics-listen (EXECQ_METRICS_LISTEN) %q: want host:port: %v", c.MetricsListen, err)
		}
	}
	return errors.Join(errs...)
}

func (c Config) workerConfig() worker.Config {
	return worker.Config{
		Concurrency:    c.Concurrency,
		LeaseWait:      c.LeaseWait,
		Grace:          c.DrainGrace,
		KillAfter:      c.KillAfter,
		ReportTimeout:  c.ReportTimeout,
		MaxBufferBytes: c.MaxBufferBytes,
		ChunkBytes:     c.ChunkBytes,
		FlushInterval:  c.FlushInterval,
	}
}
