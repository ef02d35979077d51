// Command execq-coordinator serves the execq REST API and agent protocol, and
// administers the database (migrations, users, nodes).
//
//	execq-coordinator serve [flags]
//	execq-coordinator migrate [--database-url URL]
//	execq-coordinator users create --name NAME [--admin]
//	execq-coordinator nodes create --name HOST
//	execq-coordinator help [COMMAND]
//
// Flags and their EXECQ_* variables follow package envflag, as execq-agent's
// do. It exits 0 on success and on -h, 1 on any error.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/execq/execq/coordinator/app"
	"github.com/execq/execq/coordinator/store"
	"github.com/execq/execq/internal/envflag"
)

const usage = `usage:
  execq-coordinator serve [flags]                    run the API (applies pending migrations first)
  execq-coordinator migrate [flags]                  apply pending migrations and exit
  execq-coordinator users create --name NAME [--admin]   create a user; prints {"user_id","token"}
  execq-coordinator nodes create --name HOST         create a node identity for one agent; prints {"node_id","token"}
  execq-coordinator help [COMMAND]                   this text, or a command's flags
Every flag can be set by the EXECQ_* variable shown in its help ([$EXECQ_…]);
an empty variable counts as unset, and a flag wins over its variable.
Run a command with -h for its flags.`

// errUsage is a command line that names no command: the usage was printed.
var errUsage = errors.New("a command is required")

// main exits 0 on success and when help was asked for, 1 on any error.
func main() {
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], log)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "execq-coordinator:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, log *slog.Logger) error {
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, usage)
		return errUsage
	}
	switch args[0] {
	case "-h", "-help", "--help":
		fmt.Fprintln(os.Stdout, usage)
		return flag.ErrHelp
	case "help":
		if len(args) == 1 {
			fmt.Fprintln(os.Stdout, usage)
			return flag.ErrHelp
		}
		// help COMMAND is COMMAND -h.
		return run(ctx, append(append([]string{}, args[1:]...), "-h"), log)
	case "serve":
		return serve(ctx, args[1:], log)
	case "migrate":
		return migrate(ctx, args[1:], log)
	case "users", "nodes":
		if len(args) >= 2 && args[1] == "create" {
			return createIdentity(ctx, args[0]+" create", args[2:], args[0] == "users")
		}
		fmt.Fprintln(os.Stderr, usage)
		return fmt.Errorf("unknown command %q: did you mean %q?", strings.Join(args[:min(2, len(args))], " "), args[0]+" create")
	}
	fmt.Fprintln(os.Stderr, usage)
	return fmt.Errorf("unknown command %q", args[0])
}

// newFlags returns the flag set of one command; every binary of execq uses
// envflag, so -h, [$EXECQ_…] help and empty variables behave the same.
func newFlags(name, synopsis string) *envflag.Set {
	f := envflag.New("execq-coordinator "+name, os.Getenv)
	f.Synopsis = "execq-coordinator " + name + " " + synopsis
	return f
}

// parse parses a command's flags and refuses stray arguments.
func parse(f *envflag.Set, args []string) error {
	if err := f.Parse(args); err != nil {
		return err
	}
	if rest := f.FlagSet().Args(); len(rest) > 0 {
		return fmt.Errorf("unexpected arguments %q", rest)
	}
	return nil
}

func serve(ctx context.Context, args []string, log *slog.Logger) error {
	cfg := app.DefaultConfig()
	f := newFlags("serve", "[flags]")
	f.String(&cfg.Listen, "listen", "EXECQ_LISTEN", "HTTP listen address")
	f.String(&cfg.DatabaseURL, "database-url", "EXECQ_DATABASE_URL", "PostgreSQL URL")
	f.Int(&cfg.DBMaxConns, "db-max-conns", "EXECQ_DB_MAX_CONNS", "max open database connections")
	f.Duration(&cfg.DBQueryTimeout, "db-query-timeout", "EXECQ_DB_QUERY_TIMEOUT", "longest a database call may take before the request answers 503")
	f.Duration(&cfg.LeaseTTL, "lease-ttl", "EXECQ_LEASE_TTL", "lease lifetime without heartbeat")
	f.Duration(&cfg.Heartbeat, "heartbeat-interval", "EXECQ_HEARTBEAT_INTERVAL", "heartbeat interval told to agents")
	f.Duration(&cfg.MaxWait, "longpoll-max-wait", "EXECQ_LONGPOLL_MAX_WAIT", "longest long-poll wait")
	f.Duration(&cfg.SafetyPoll, "safety-poll", "EXECQ_SAFETY_POLL", "re-scan interval of parked polls without notification")
	f.Duration(&cfg.ReapInterval, "reap-interval", "EXECQ_REAP_INTERVAL", "reaper interval")
	f.Int64(&cfg.OutputCap, "output-cap-bytes", "EXECQ_OUTPUT_CAP_BYTES", "bytes kept per output stream")
	f.Duration(&cfg.AuthCacheTTL, "auth-cache-ttl", "EXECQ_AUTH_CACHE_TTL", "how long a verified token is reused without a database lookup (0 = off)")
	f.Duration(&cfg.ShutdownGrace, "shutdown-grace", "EXECQ_SHUTDOWN_GRACE", "time in-flight requests get at stop")
	f.Duration(&cfg.IdleTimeout, "http-idle-timeout", "EXECQ_HTTP_IDLE_TIMEOUT", "close a keep-alive connection idle this long")
	f.Duration(&cfg.ReadTimeout, "http-read-timeout", "EXECQ_HTTP_READ_TIMEOUT", "longest a client may take to send a request's headers, and its body after them")
	f.Duration(&cfg.WriteTimeout, "http-write-timeout", "EXECQ_HTTP_WRITE_TIMEOUT", "longest one write of a response may block on a client not reading (long-polls extend theirs by their wait)")
	f.Int(&cfg.MaxLargeReads, "max-large-reads", "EXECQ_MAX_LARGE_READS", "records with more than 1 MiB of output sent at once")
	f.Int(&cfg.MaxLargeReadQueue, "max-large-read-queue", "EXECQ_MAX_LARGE_READ_QUEUE", "large record reads waiting their turn; past it 503 with Retry-After")
	f.Duration(&cfg.DefaultTimeout, "default-timeout", "EXECQ_DEFAULT_TIMEOUT", "run timeout of a command whose submit gives no timeout_seconds")
	f.Duration(&cfg.MaxTimeout, "max-timeout", "EXECQ_MAX_TIMEOUT", "largest timeout_seconds a submit may ask for")
	f.Duration(&cfg.DefaultQueueTimeout, "default-queue-timeout", "EXECQ_DEFAULT_QUEUE_TIMEOUT", "how long a command may wait for an agent to start it, when its submit gives no queue_timeout_seconds")
	f.Duration(&cfg.MaxQueueTimeout, "max-queue-timeout", "EXECQ_MAX_QUEUE_TIMEOUT", "largest queue_timeout_seconds a submit may ask for")
	f.Duration(&cfg.DefaultGrace, "default-grace", "EXECQ_DEFAULT_GRACE", "time between SIGTERM and SIGKILL when a command is cancelled (no grace_seconds) or times out")
	f.Duration(&cfg.MaxGrace, "max-grace", "EXECQ_MAX_GRACE", "largest grace_seconds a cancel may ask for")
	if err := parse(f, args); err != nil {
		return err
	}
	a, err := app.New(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer a.Close()
	return a.Run(ctx)
}

func migrate(ctx context.Context, args []string, log *slog.Logger) error {
	var url string
	f := newFlags("migrate", "[flags]")
	f.String(&url, "database-url", "EXECQ_DATABASE_URL", "PostgreSQL URL")
	if err := parse(f, args); err != nil {
		return err
	}
	st, err := openStore(ctx, url)
	if err != nil {
		return err
	}
	defer st.Close()
	applied, err := st.Migrate(ctx)
	if err != nil {
		return err
	}
	log.Info("migrations applied", "applied", applied)
	return nil
}

// createIdentity creates a user or a node and prints its ID and token, the
// only time the token is shown.
func createIdentity(ctx context.Context, what string, args []string, user bool) error {
	var url, name string
	var admin bool
	f := newFlags(what, "--name NAME [flags]")
	f.String(&url, "database-url", "EXECQ_DATABASE_URL", "PostgreSQL URL")
	f.String(&name, "name", "", "unique name")
	if user {
		f.Bool(&admin, "admin", "", "may read every user's commands")
	}
	if err := parse(f, args); err != nil {
		return err
	}
	if name == "" || len(name) > 200 {
		return errors.New("--name is required (at most 200 bytes)")
	}
	st, err := openStore(ctx, url)
	if err != nil {
		return err
	}
	defer st.Close()
	if _, err := st.Migrate(ctx); err != nil {
		return err
	}
	out := map[string]string{}
	if user {
		u, tok, err := st.CreateUser(ctx, name, admin)
		if err != nil {
			return err
		}
		out["user_id"], out["token"] = u.ID, tok
	} else {
		n, tok, err := st.CreateNode(ctx, name)
		if err != nil {
			return err
		}
		out["node_id"], out["token"] = n.ID, tok
	}
	return json.NewEncoder(os.Stdout).Encode(out)
}

func openStore(ctx context.Context, url string) (*store.Store, error) {
	if url == "" {
		return nil, errors.New("--database-url (EXECQ_DATABASE_URL) is required")
	}
	return store.Open(ctx, url, store.Options{MaxConns: 2})
}
