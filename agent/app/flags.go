package app

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
)

// ParseFlags builds a Config from Defaults, then EXECQ_* variables (read
// with getenv), then command-line flags, then the token, and validates it.
// Every flag names its variable in its usage text. The token comes from
// EXECQ_AGENT_TOKEN or from the file named by --token-file; there is no
// token flag, because command lines are visible to every user of the host.
// -h returns flag.ErrHelp after printing usage to output.
func ParseFlags(args []string, getenv func(string) string, output io.Writer) (Config, error) {
	cfg := Defaults()
	fs := flag.NewFlagSet("execq-agent", flag.ContinueOnError)
	fs.SetOutput(output)
	var envErrs []error
	b := binder{fs: fs, getenv: getenv, errs: &envErrs}

	b.str(&cfg.CoordinatorURL, "coordinator", "EXECQ_COORDINATOR", "coordinator base URL, http(s)://host:port")
	var tokenFile string
	b.str(&tokenFile, "token-file", "EXECQ_AGENT_TOKEN_FILE", "file holding the node token (else the token is read from EXECQ_AGENT_TOKEN)")
	b.str(&cfg.RuncBinary, "runc", "EXECQ_RUNC", "runc binary")
	b.str(&cfg.RuncRoot, "runc-root", "EXECQ_RUNC_ROOT", "runc root whose containers are reported and used")
	b.str(&cfg.WorkDir, "work-dir", "EXECQ_WORK_DIR", "directory for per-exec scratch files (default: system temp dir)")
	b.int(&cfg.Concurrency, "concurrency", "EXECQ_CONCURRENCY", "commands run at once (1..100)")
	b.dur(&cfg.LeaseWait, "lease-wait", "EXECQ_LEASE_WAIT", "how long a lease request waits on the coordinator")
	b.dur(&cfg.DrainGrace, "grace", "EXECQ_DRAIN_GRACE", "on SIGTERM, how long running commands may finish before they are stopped")
	b.dur(&cfg.KillAfter, "kill-after", "EXECQ_KILL_AFTER", "delay between SIGTERM and SIGKILL when a command is stopped")
	b.dur(&cfg.ReportTimeout, "report-timeout", "EXECQ_REPORT_TIMEOUT", "at shutdown, how long stopped commands are still reported")
	b.int64(&cfg.MaxBufferBytes, "max-buffer-bytes", "EXECQ_MAX_BUFFER_BYTES", "unacknowledged output held per command; past it the command is blocked (never dropped)")
	b.int(&cfg.ChunkBytes, "chunk-bytes", "EXECQ_CHUNK_BYTES", "most output bytes sent in one request")
	b.dur(&cfg.InventoryInterval, "inventory-interval", "EXECQ_INVENTORY_INTERVAL", "how often the container list is checked for changes")
	b.dur(&cfg.InventoryKeepalive, "inventory-keepalive", "EXECQ_INVENTORY_KEEPALIVE", "how often an unchanged inventory is re-sent")
	b.str(&cfg.MetricsListen, "metrics-listen", "EXECQ_METRICS_LISTEN", "host:port to serve /metrics on (off when empty)")
	b.dur(&cfg.RequestTimeout, "request-timeout", "EXECQ_REQUEST_TIMEOUT", "timeout of one coordinator request attempt (lease excepted)")
	b.int(&cfg.RetryMax, "retry-max", "EXECQ_RETRY_MAX", "retries of a coordinator request after a network error or 5xx")
	b.dur(&cfg.RetryWaitMin, "retry-wait-min", "EXECQ_RETRY_WAIT_MIN", "shortest backoff between retries")
	b.dur(&cfg.RetryWaitMax, "retry-wait-max", "EXECQ_RETRY_WAIT_MAX", "longest backoff between retries")
	level := strings.ToLower(cfg.LogLevel.String())
	b.str(&level, "log-level", "EXECQ_LOG_LEVEL", "debug, info, warn or error")

	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if err := errors.Join(envErrs...); err != nil {
		return cfg, err
	}
	if err := cfg.LogLevel.UnmarshalText([]byte(level)); err != nil {
		return cfg, fmt.Errorf("--log-level (EXECQ_LOG_LEVEL) %q: want debug, info, warn or error", level)
	}
	envToken := getenv("EXECQ_AGENT_TOKEN")
	switch {
	case tokenFile != "" && envToken != "":
		return cfg, errors.New("both EXECQ_AGENT_TOKEN and --token-file (EXECQ_AGENT_TOKEN_FILE) are set: keep one")
	case tokenFile != "":
		raw, err := os.ReadFile(tokenFile)
		if err != nil {
			return cfg, fmt.Errorf("read node token: %w", err)
		}
		cfg.Token = strings.TrimSpace(string(raw))
		if cfg.Token == "" {
			return cfg, fmt.Errorf("node token file %s is empty", tokenFile)
		}
	default:
		cfg.Token = strings.TrimSpace(envToken)
	}
	return cfg, cfg.Validate()
}

// binder registers flags whose defaults come from environment variables.
type binder struct {
	fs     *flag.FlagSet
	getenv func(string) string
	errs   *[]error
}

func (b binder) usage(env, usage string) string { return usage + " [$" + env + "]" }

func (b binder) str(p *string, name, env, usage string) {
	if v := b.getenv(env); v != "" {
		*p = v
	}
	b.fs.StringVar(p, name, *p, b.usage(env, usage))
}

func (b binder) int(p *int, name, env, usage string) {
	if v := b.getenv(env); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			*b.errs = append(*b.errs, fmt.Errorf("%s=%q: want an integer", env, v))
		} else {
			*p = n
		}
	}
	b.fs.IntVar(p, name, *p, b.usage(env, usage))
}

func (b binder) int64(p *int64, name, env, usage string) {
	if v := b.getenv(env); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			*b.errs = append(*b.errs, fmt.Errorf("%s=%q: want an integer", env, v))
		} else {
			*p = n
		}
	}
	b.fs.Int64Var(p, name, *p, b.usage(env, usage))
}

func (b binder) dur(p *time.Duration, name, env, usage string) {
	if v := b.getenv(env); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			*b.errs = append(*b.errs, fmt.Errorf("%s=%q: want a duration like 30s or 2m", env, v))
		} else {
			*p = d
		}
	}
	b.fs.DurationVar(p, name, *p, b.usage(env, usage))
}
