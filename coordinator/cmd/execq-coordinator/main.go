// Command execq-coordinator serves the execq REST API and agent protocol, and
// administers the database (migrations, users, nodes).
//
//	execq-coordinator serve [flags]
//	execq-coordinator migrate [--database-url URL]
//	execq-coordinator users create --name NAME [--admin]
//	execq-coordinator users list
//	execq-coordinator users disable|enable|rotate-token --name NAME | --id ID
//	execq-coordinator nodes create --name HOST
//	execq-coordinator nodes list
//	execq-coordinator nodes revoke|rotate-token --name HOST | --id ID
//	execq-coordinator grants add|list|revoke
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
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/google/uuid"

	"github.com/execq/execq/coordinator/app"
	"github.com/execq/execq/coordinator/store"
	"github.com/execq/execq/internal/envflag"
	"github.com/execq/execq/internal/logsetup"
)

const usage = `usage:
  execq-coordinator serve [flags]                    run the API (applies pending migrations first)
  execq-coordinator migrate [flags]                  apply pending migrations and exit
  execq-coordinator users create --name NAME [--admin]   create a user; prints {"user_id","token"}
  execq-coordinator users list                       list users with status, created_at, last_seen_at (JSON array)
  execq-coordinator users disable|enable --name NAME|--id ID   refuse (or again admit) a user's token on every replica
  execq-coordinator users rotate-token --name NAME|--id ID     new token, old one refused; prints {"user_id","token"}
  execq-coordinator nodes create --name HOST         create a node identity for one agent; prints {"node_id","token"}
  execq-coordinator nodes list                       list nodes with status, created_at, last_seen_at (JSON array)
  execq-coordinator nodes revoke --name HOST|--id ID refuse a node's token on every replica; its unstarted commands fail
  execq-coordinator nodes rotate-token --name HOST|--id ID     new token (re-admits a revoked node); prints {"node_id","token"}
  execq-coordinator grants add --user NAME --selector SEL   let a user use the containers SEL matches
                                                     (e.g. node=host-1,team=db); prints the grant with "grant_id"
  execq-coordinator grants list                      every grant, as JSON
  execq-coordinator grants revoke --id ID            delete a grant; prints it
  execq-coordinator help [COMMAND]                   this text, or a command's flags
Every flag can be set by the EXECQ_* variable shown in its help ([$EXECQ_…]);
an empty variable counts as unset, and a flag wins over its variable.
Run a command with -h for its flags.`

// errUsage is a command line that names no command: the usage was printed.
var errUsage = errors.New("a command is required")

// main exits 0 on success and when help was asked for, 1 on any error.
func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "execq-coordinator:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
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
		return run(ctx, append(append([]string{}, args[1:]...), "-h"))
	case "serve":
		return serve(ctx, args[1:])
	case "migrate":
		return migrate(ctx, args[1:])
	case "grants":
		return grants(ctx, args[1:])
	case "users", "nodes":
		user := args[0] == "users"
		if len(args) >= 2 {
			what := args[0] + " " + args[1]
			switch {
			case args[1] == "create":
				return createIdentity(ctx, what, args[2:], user)
			case args[1] == "list":
				return listIdentities(ctx, what, args[2:], user)
			case args[1] == "rotate-token", user && (args[1] == "disable" || args[1] == "enable"), !user && args[1] == "revoke":
				return changeIdentity(ctx, what, args[1], args[2:], user)
			}
		}
		fmt.Fprintln(os.Stderr, usage)
		verbs := "create, list, disable, enable or rotate-token"
		if !user {
			verbs = "create, list, revoke or rotate-token"
		}
		return fmt.Errorf("unknown command %q: %s takes %s", strings.Join(args[:min(2, len(args))], " "), args[0], verbs)
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

func serve(ctx context.Context, args []string) error {
	cfg := app.DefaultConfig()
	logCfg := logsetup.Defaults()
	f := newFlags("serve", "[flags]")
	f.String(&cfg.Listen, "listen", "EXECQ_LISTEN", "HTTP listen address")
	f.String(&cfg.DatabaseURL, "database-url", "EXECQ_DATABASE_URL", "PostgreSQL URL")
	f.Int(&cfg.DBMaxConns, "db-max-conns", "EXECQ_DB_MAX_CONNS", "max open database connections")
	f.Duration(&cfg.DBQueryTimeout, "db-query-timeout", "EXECQ_DB_QUERY_TIMEOUT", "longest a database call may take before the request answers 503")
	f.Int(&cfg.DBReservedConns, "db-reserved-conns", "EXECQ_DB_RESERVED_CONNS", "connections kept for agents' start, heartbeat, finish and release (-1 = a quarter of the pool, 0 = no reserve and no admission control)")
	f.Int(&cfg.DBMaxWaiting, "db-max-waiting", "EXECQ_DB_MAX_WAITING", "database calls that may wait for a connection before new API requests are refused 429")
	f.Duration(&cfg.LeaseTTL, "lease-ttl", "EXECQ_LEASE_TTL", "lease lifetime without heartbeat")
	f.Duration(&cfg.Heartbeat, "heartbeat-interval", "EXECQ_HEARTBEAT_INTERVAL", "heartbeat interval told to agents")
	f.Duration(&cfg.NodeDownAfter, "node-down-after", "EXECQ_NODE_DOWN_AFTER", "time since an agent's last contact after which its node is reported down (execq_node_up)")
	f.Duration(&cfg.MaxWait, "longpoll-max-wait", "EXECQ_LONGPOLL_MAX_WAIT", "longest long-poll wait")
	f.Duration(&cfg.SafetyPoll, "safety-poll", "EXECQ_SAFETY_POLL", "interval of the safety check for work whose notification was lost (one query per replica)")
	f.Duration(&cfg.ReapInterval, "reap-interval", "EXECQ_REAP_INTERVAL", "reaper interval")
	f.Duration(&cfg.Retention, "retention", "EXECQ_RETENTION", "how long finished commands and their output are kept before deletion (0 = forever)")
	f.Int64(&cfg.OutputCap, "output-cap-bytes", "EXECQ_OUTPUT_CAP_BYTES", "bytes kept per output stream: past it its head and tail are kept, the middle dropped")
	f.Int64(&cfg.OutputTail, "output-tail-bytes", "EXECQ_OUTPUT_TAIL_BYTES", "part of the cap kept from a stream's end (0 = half)")
	f.Duration(&cfg.AuthCacheTTL, "auth-cache-ttl", "EXECQ_AUTH_CACHE_TTL", "how long a verified token is reused without a database lookup (0 = off)")
	f.Duration(&cfg.AuthFailInterval, "auth-fail-interval", "EXECQ_AUTH_FAIL_INTERVAL", "one failed authentication per client address is allowed per interval, past the burst; then 429")
	f.Int(&cfg.AuthFailBurst, "auth-fail-burst", "EXECQ_AUTH_FAIL_BURST", "failed authentications a client address may make at once before the interval applies")
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
	tlsFlags(f, &cfg.TLS)
	logCfg.Flags(f)
	if err := parse(f, args); err != nil {
		return err
	}
	a, err := app.New(ctx, cfg, logCfg.New(os.Stderr, os.Getenv))
	if err != nil {
		return err
	}
	defer a.Close()
	return a.Run(ctx)
}

func migrate(ctx context.Context, args []string) error {
	var url string
	logCfg := logsetup.Defaults()
	f := newFlags("migrate", "[flags]")
	f.String(&url, "database-url", "EXECQ_DATABASE_URL", "PostgreSQL URL")
	logCfg.Flags(f)
	if err := parse(f, args); err != nil {
		return err
	}
	log := logCfg.New(os.Stderr, os.Getenv)
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

// listIdentities prints every user or node as a JSON array: never tokens.
func listIdentities(ctx context.Context, what string, args []string, user bool) error {
	var url string
	f := newFlags(what, "[flags]")
	f.String(&url, "database-url", "EXECQ_DATABASE_URL", "PostgreSQL URL")
	if err := parse(f, args); err != nil {
		return err
	}
	st, err := openMigrated(ctx, url)
	if err != nil {
		return err
	}
	defer st.Close()
	var out any
	if user {
		out, err = st.ListUsers(ctx)
	} else {
		out, err = st.ListNodes(ctx)
	}
	if err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(out)
}

// changeIdentity disables, enables, revokes or rotates the token of the user
// or node named by --name or --id, and prints the result as JSON. The
// change and its notification to every replica are one statement.
func changeIdentity(ctx context.Context, what, verb string, args []string, user bool) error {
	var url string
	var ref store.Ref
	f := newFlags(what, "--name NAME | --id ID [flags]")
	f.String(&url, "database-url", "EXECQ_DATABASE_URL", "PostgreSQL URL")
	noun := "node"
	if user {
		noun = "user"
	}
	f.String(&ref.Name, "name", "", "name of the "+noun)
	f.String(&ref.ID, "id", "", "ID (UUID) of the "+noun)
	if err := parse(f, args); err != nil {
		return err
	}
	switch {
	case (ref.Name == "") == (ref.ID == ""):
		return errors.New("exactly one of --name and --id is required")
	case ref.ID != "":
		id, err := uuid.Parse(ref.ID)
		if err != nil {
			return fmt.Errorf("--id %q is not a UUID", ref.ID)
		}
		ref.ID = id.String()
	}
	st, err := openMigrated(ctx, url)
	if err != nil {
		return err
	}
	defer st.Close()
	var out any
	switch verb {
	case "disable", "enable":
		out, err = st.SetUserDisabled(ctx, ref, verb == "disable")
	case "revoke":
		var n store.NodeInfo
		var failed int
		n, failed, err = st.RevokeNode(ctx, ref)
		out = struct {
			store.NodeInfo
			CommandsFailed int `json:"commands_failed"`
		}{n, failed}
	case "rotate-token":
		if user {
			var u store.UserInfo
			var tok string
			u, tok, err = st.RotateUserToken(ctx, ref)
			out = map[string]string{"user_id": u.ID, "token": tok}
		} else {
			var n store.NodeInfo
			var tok string
			n, tok, err = st.RotateNodeToken(ctx, ref)
			out = map[string]string{"node_id": n.ID, "token": tok}
		}
	}
	if err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(out)
}

// openMigrated opens the store and applies pending migrations, so an
// administrative command works on a database no server has migrated yet.
func openMigrated(ctx context.Context, url string) (*store.Store, error) {
	st, err := openStore(ctx, url)
	if err != nil {
		return nil, err
	}
	if _, err := st.Migrate(ctx); err != nil {
		st.Close()
		return nil, err
	}
	return st, nil
}

func openStore(ctx context.Context, url string) (*store.Store, error) {
	if url == "" {
		return nil, errors.New("--database-url (EXECQ_DATABASE_URL) is required")
	}
	return store.Open(ctx, url, store.Options{MaxConns: 2})
}
