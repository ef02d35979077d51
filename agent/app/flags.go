package app

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/execq/execq/internal/envflag"
)

// ParseFlags builds a Config from Defaults, then EXECQ_* variables (read
// with getenv), then command-line flags, then the token, and validates it.
// Every flag names its variable in its usage text. The token comes from
// EXECQ_AGENT_TOKEN or from the file named by --token-file; there is no
// token flag, because command lines are visible to every user of the host.
// Flags and variables follow package envflag: -h prints the help on stdout
// and returns flag.ErrHelp, a bad flag prints it on stderr.
func ParseFlags(args []string, getenv func(string) string, stdout, stderr io.Writer) (Config, error) {
	cfg := Defaults()
	b := envflag.New("execq-agent", getenv)
	b.Stdout, b.Stderr = stdout, stderr
	b.Notes = "The node token is read from EXECQ_AGENT_TOKEN, or from the file named by --token-file;\n" +
		"there is no token flag (command lines are visible to every user of the host)."

	b.String(&cfg.CoordinatorURL, "coordinator", "EXECQ_COORDINATOR", "coordinator base URL, http(s)://host:port")
	var tokenFile string
	b.String(&tokenFile, "token-file", "EXECQ_AGENT_TOKEN_FILE", "file holding the node token (else the token is read from EXECQ_AGENT_TOKEN)")
	b.String(&cfg.RuncBinary, "runc", "EXECQ_RUNC", "runc binary")
	b.String(&cfg.RuncRoot, "runc-root", "EXECQ_RUNC_ROOT", "runc root whose containers are reported and used")
	b.String(&cfg.WorkDir, "work-dir", "EXECQ_WORK_DIR", "directory for per-exec scratch files (default: system temp dir)")
	b.Int(&cfg.Concurrency, "concurrency", "EXECQ_CONCURRENCY", "commands run at once (1..100)")
	b.Duration(&cfg.LeaseWait, "lease-wait", "EXECQ_LEASE_WAIT", "how long a lease request waits on the coordinator")
	b.Duration(&cfg.DrainGrace, "grace", "EXECQ_DRAIN_GRACE", "on SIGTERM, how long running commands may finish before they are stopped")
	b.Duration(&cfg.KillAfter, "kill-after", "EXECQ_KILL_AFTER", "delay between SIGTERM and SIGKILL when a command is stopped")
	b.Duration(&cfg.ReportTimeout, "report-timeout", "EXECQ_REPORT_TIMEOUT", "at shutdown, how long stopped commands are still reported")
	b.Int64(&cfg.MaxBufferBytes, "max-buffer-bytes", "EXECQ_MAX_BUFFER_BYTES", "unacknowledged output held per command; past it the command is blocked (never dropped)")
	b.Int(&cfg.ChunkBytes, "chunk-bytes", "EXECQ_CHUNK_BYTES", "most output bytes sent in one request")
	b.Duration(&cfg.FlushInterval, "flush-interval", "EXECQ_FLUSH_INTERVAL", "longest output waits before it is sent (how far behind a follower may be)")
	b.Duration(&cfg.InventoryInterval, "inventory-interval", "EXECQ_INVENTORY_INTERVAL", "how often the container list is checked for changes")
	b.Duration(&cfg.InventoryKeepalive, "inventory-keepalive", "EXECQ_INVENTORY_KEEPALIVE", "how often an unchanged inventory is re-sent")
	b.String(&cfg.MetricsListen, "metrics-listen", "EXECQ_METRICS_LISTEN", "host:port to serve /metrics on (off when empty)")
	b.Duration(&cfg.RequestTimeout, "request-timeout", "EXECQ_REQUEST_TIMEOUT", "timeout of one coordinator request attempt (lease excepted)")
	b.Int(&cfg.RetryMax, "retry-max", "EXECQ_RETRY_MAX", "retries of a coordinator request after a network error or 5xx")
	b.Duration(&cfg.RetryWaitMin, "retry-wait-min", "EXECQ_RETRY_WAIT_MIN", "shortest backoff between retries")
	b.Duration(&cfg.RetryWaitMax, "retry-wait-max", "EXECQ_RETRY_WAIT_MAX", "longest backoff between retries")
	tlsFlags(b, &cfg.TLS)
	cfg.Log.Flags(b)

	if err := b.Parse(args); err != nil {
		return cfg, err
	}
	if rest := b.FlagSet().Args(); len(rest) > 0 {
		return cfg, fmt.Errorf("unexpected arguments %q", rest)
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
