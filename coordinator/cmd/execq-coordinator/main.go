// Command execq-coordinator serves the execq REST API and agent protocol, and
// administers the database (migrations, users, nodes).
//
//	execq-coordinator serve [flags]
//	execq-coordinator migrate [--database-url URL]
//	execq-coordinator users create --name NAME [--admin]
//	execq-coordinator nodes create --name HOST
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
	"strconv"
	"syscall"
	"time"

	"github.com/execq/execq/coordinator/app"
	"github.com/execq/execq/coordinator/store"
)

const usage = `usage:
  execq-coordinator serve [flags]                    run the API (applies pending migrations first)
  execq-coordinator migrate [flags]                  apply pending migrations and exit
  execq-coordinator users create --name NAME [--admin]   create a user; prints {"user_id","token"}
  execq-coordinator nodes create --name HOST         create a node identity for one agent; prints {"node_id","token"}
Run a command with -h for its flags.`

func main() {
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], log); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, "execq-coordinator:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, log *slog.Logger) error {
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, usage)
		return flag.ErrHelp
	}
	switch {
	case args[0] == "serve":
		return serve(ctx, args[1:], log)
	case args[0] == "migrate":
		return migrate(ctx, args[1:], log)
	case len(args) >= 2 && args[0] == "users" && args[1] == "create":
		return createIdentity(ctx, "users create", args[2:], true)
	case len(args) >= 2 && args[0] == "nodes" && args[1] == "create":
		return createIdentity(ctx, "nodes create", args[2:], false)
	}
	fmt.Fprintln(os.Stderr, usage)
	return fmt.Errorf("unknown command %q", args[0])
}

// flags binds the configuration to flags whose defaults come from EXECQ_*
// variables, falling back to app.DefaultConfig.
type flags struct {
	fs  *flag.FlagSet
	err error
}

func (f *flags) str(p *string, name, env, help string) {
	if v, ok := os.LookupEnv(env); ok {
		*p = v
	}
	f.fs.StringVar(p, name, *p, help+" ("+env+")")
}

func (f *flags) dur(p *time.Duration, name, env, help string) {
	if v, ok := os.LookupEnv(env); ok {
		d, err := time.ParseDuration(v)
		if err != nil {
			f.err = fmt.Errorf("%s=%q: %w", env, v, err)
		}
		*p = d
	}
	f.fs.DurationVar(p, name, *p, help+" ("+env+")")
}

func (f *flags) int(p *int, name, env, help string) {
	if v, ok := os.LookupEnv(env); ok {
		n, err := strconv.Atoi(v)
		if err != nil {
			f.err = fmt.Errorf("%s=%q: %w", env, v, err)
		}
		*p = n
	}
	f.fs.IntVar(p, name, *p, help+" ("+env+")")
}

func (f *flags) int64(p *int64, name, env, help string) {
	if v, ok := os.LookupEnv(env); ok {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			f.err = fmt.Errorf("%s=%q: %w", env, v, err)
		}
		*p = n
	}
	f.fs.Int64Var(p, name, *p, help+" ("+env+")")
}

func (f *flags) parse(args []string) error {
	if f.err != nil {
		return f.err
	}
	return f.fs.Parse(args)
}

func newFlags(name string) *flags {
	return &flags{fs: flag.NewFlagSet("execq-coordinator "+name, flag.ContinueOnError)}
}

func serve(ctx context.Context, args []string, log *slog.Logger) error {
	cfg := app.DefaultConfig()
	f := newFlags("serve")
	f.str(&cfg.Listen, "listen", "EXECQ_LISTEN", "HTTP listen address")
	f.str(&cfg.DatabaseURL, "database-url", "EXECQ_DATABASE_URL", "PostgreSQL URL")
	f.int(&cfg.DBMaxConns, "db-max-conns", "EXECQ_DB_MAX_CONNS", "max open database connections")
	f.dur(&cfg.DBQueryTimeout, "db-query-timeout", "EXECQ_DB_QUERY_TIMEOUT", "longest a database call may take before the request answers 503")
	f.dur(&cfg.LeaseTTL, "lease-ttl", "EXECQ_LEASE_TTL", "lease lifetime without heartbeat")
	f.dur(&cfg.Heartbeat, "heartbeat-interval", "EXECQ_HEARTBEAT_INTERVAL", "heartbeat interval told to agents")
	f.dur(&cfg.MaxWait, "longpoll-max-wait", "EXECQ_LONGPOLL_MAX_WAIT", "longest long-poll wait")
	f.dur(&cfg.SafetyPoll, "safety-poll", "EXECQ_SAFETY_POLL", "re-scan interval of parked polls without notification")
	f.dur(&cfg.ReapInterval, "reap-interval", "EXECQ_REAP_INTERVAL", "reaper interval")
	f.int64(&cfg.OutputCap, "output-cap-bytes", "EXECQ_OUTPUT_CAP_BYTES", "bytes kept per output stream")
	f.dur(&cfg.AuthCacheTTL, "auth-cache-ttl", "EXECQ_AUTH_CACHE_TTL", "how long a verified token is reused without a database lookup (0 = off)")
	f.dur(&cfg.ShutdownGrace, "shutdown-grace", "EXECQ_SHUTDOWN_GRACE", "time in-flight requests get at stop")
	if err := f.parse(args); err != nil {
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
	f := newFlags("migrate")
	f.str(&url, "database-url", "EXECQ_DATABASE_URL", "PostgreSQL URL")
	if err := f.parse(args); err != nil {
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
	f := newFlags(what)
	f.str(&url, "database-url", "EXECQ_DATABASE_URL", "PostgreSQL URL")
	f.fs.StringVar(&name, "name", "", "unique name")
	if user {
		f.fs.BoolVar(&admin, "admin", false, "may read every user's commands")
	}
	if err := f.parse(args); err != nil {
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
