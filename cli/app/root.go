package app

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/execq/execq/cli/client"
)

// Exit statuses execq itself uses (the program's own pass through exec and
// wait); see the package documentation for the whole table.
const (
	ExitAgentLost   = 122
	ExitNotPickedUp = 123
	ExitTimedOut    = 124
	ExitExecqError  = 125
	ExitCannotStart = 126
	ExitCancelled   = 130
	// exitError is what commands other than exec, attach and wait exit with on an
	// error.
	exitError = 1
)

// DefaultServer is the coordinator make run starts.
const DefaultServer = "http://127.0.0.1:8080"

// Version is set at link time (-ldflags "-X …/cli/app.Version=v1.2.3");
// otherwise the module's build information says what was built.
var Version = ""

// Env is what the command line runs with: its streams, its environment and
// the interrupts it receives. Tests give their own.
type Env struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	Getenv         func(string) string
	// Signals delivers SIGINT and SIGTERM. exec acts on each press itself;
	// other commands stop at the first.
	Signals <-chan os.Signal
}

// ExitError ends execq with Code. An empty Message prints nothing (the
// reason was printed already, or the status says it all).
type ExitError struct {
	Code    int
	Message string
}

func (e *ExitError) Error() string { return e.Message }

// options are the global flags, after the environment fallbacks.
type options struct {
	server, token, tokenFile, caFile string
	verbose                          bool
}

// cli carries what every command needs.
type cli struct {
	env    Env
	opts   options
	client *client.Client
}

// Main runs the command line with args (without the program name) and
// returns the exit status.
func Main(args []string, env Env) int {
	if env.Getenv == nil {
		env.Getenv = os.Getenv
	}
	c := &cli{env: env}
	root := c.rootCommand()
	root.SetArgs(args)
	root.SetIn(env.Stdin)
	root.SetOut(env.Stdout)
	root.SetErr(env.Stderr)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return 0
	}
	code := exitError
	if cmd != nil && cmd.Annotations[annotExitTable] != "" {
		code = ExitExecqError
	}
	if errors.Is(err, context.Canceled) {
		// Ctrl-C while waiting (wait, logs -f): the shell's convention.
		code = ExitCancelled
	}
	var ee *ExitError
	if errors.As(err, &ee) {
		code = ee.Code
		if ee.Message == "" {
			return code
		}
	}
	fmt.Fprintln(env.Stderr, "execq: "+describe(err))
	return code
}

// annotExitTable marks the commands whose exit status is the command's
// (exec, wait): their own failures exit 125, not 1.
const annotExitTable = "execq-exit-table"

func (c *cli) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "execq",
		Short: "Run commands in containers across the fleet, through the execq coordinator",
		Long: `execq runs a program in a container on any host of the fleet, shows its output live and
exits with its exit status; it also reads, waits for, cancels and lists commands.

Configuration: --server (EXECQ_SERVER, default ` + DefaultServer + `), --token (EXECQ_TOKEN) or
--token-file (EXECQ_TOKEN_FILE), --ca-file (EXECQ_CA_FILE) for a server with its own CA.
Flags override the environment.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		// Help and completion need no server; the others build the client.
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if cmd.Annotations[annotNoClient] != "" || noClient(cmd) {
				return nil
			}
			return c.setup(cmd)
		},
	}
	f := root.PersistentFlags()
	f.StringVar(&c.opts.server, "server", "", "coordinator URL (env EXECQ_SERVER; default "+DefaultServer+")")
	f.StringVar(&c.opts.token, "token", "", "user token (env EXECQ_TOKEN); prefer --token-file, a flag shows in ps")
	f.StringVar(&c.opts.tokenFile, "token-file", "", "file holding the user token (env EXECQ_TOKEN_FILE)")
	f.StringVar(&c.opts.caFile, "ca-file", "", "CA bundle to verify an https:// server against (env EXECQ_CA_FILE)")
	f.BoolVarP(&c.opts.verbose, "verbose", "v", false, "show each HTTP exchange on stderr (method, URL, status; never the token)")
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		if cmd.Name() == "exec" && cmd.ArgsLenAtDash() < 0 {
			// Most likely the program's own option, taken for execq's.
			return fmt.Errorf("%w (put -- before the program: execq exec CONTAINER -- PROGRAM [ARGS...])", err)
		}
		return fmt.Errorf("%w (execq %s --help)", err, cmd.Name())
	})
	root.AddCommand(c.execCommand(), c.attachCommand(), c.logsCommand(), c.getCommand(), c.waitCommand(), c.cancelCommand(),
		c.lsCommand(), c.containersCommand(), c.versionCommand())
	return root
}

// annotOwnSignals marks the commands that act on each interrupt themselves
// (exec, attach); the others stop at the first.
const annotOwnSignals = "execq-own-signals"

// annotNoClient marks commands that need no server.
const annotNoClient = "execq-no-client"

// noClient says whether cmd is one of cobra's own (help, completion), which
// need no server.
func noClient(cmd *cobra.Command) bool {
	for x := cmd; x != nil; x = x.Parent() {
		switch x.Name() {
		case "help", "completion", cobra.ShellCompRequestCmd, cobra.ShellCompNoDescRequestCmd:
			return true
		}
	}
	return false
}

// setup resolves the configuration (flags over environment) and builds the
// client.
func (c *cli) setup(cmd *cobra.Command) error {
	fromEnv := func(flag, env string, v *string) {
		if !cmd.Flags().Changed(flag) && *v == "" {
			*v = c.env.Getenv(env)
		}
	}
	fromEnv("server", "EXECQ_SERVER", &c.opts.server)
	fromEnv("ca-file", "EXECQ_CA_FILE", &c.opts.caFile)
	if c.opts.server == "" {
		c.opts.server = DefaultServer
	}
	// A token flag beats a token file from the environment and the other
	// way round: whichever was given on the command line wins.
	switch {
	case cmd.Flags().Changed("token") && cmd.Flags().Changed("token-file"):
		return errors.New("give --token or --token-file, not both")
	case cmd.Flags().Changed("token"):
	case cmd.Flags().Changed("token-file"):
	default:
		c.opts.token = c.env.Getenv("EXECQ_TOKEN")
		if c.opts.token == "" {
			c.opts.tokenFile = c.env.Getenv("EXECQ_TOKEN_FILE")
		}
	}
	if c.opts.tokenFile != "" && c.opts.token == "" {
		raw, err := os.ReadFile(c.opts.tokenFile)
		if err != nil {
			return fmt.Errorf("read the token file: %w", err)
		}
		c.opts.token = strings.TrimSpace(string(raw))
		if c.opts.token == "" {
			return fmt.Errorf("the token file %s is empty", c.opts.tokenFile)
		}
	}
	o := client.Options{Server: c.opts.server, Token: c.opts.token, CAFile: c.opts.caFile, UserAgent: "execq/" + version()}
	if c.opts.verbose {
		o.Trace = func(x client.Exchange) {
			if x.Err != nil {
				fmt.Fprintf(c.env.Stderr, "execq: %s %s: no answer after %s: %v\n", x.Method, x.URL, x.Duration.Round(time.Millisecond), x.Err)
				return
			}
			fmt.Fprintf(c.env.Stderr, "execq: %s %s → %d (%s)\n", x.Method, x.URL, x.Status, x.Duration.Round(time.Millisecond))
		}
	}
	cl, err := client.New(o)
	if err != nil {
		return err
	}
	c.client = cl
	// Every command but exec and attach stops at the first interrupt;
	// those two count the presses themselves.
	if cmd.Annotations[annotOwnSignals] == "" && c.env.Signals != nil {
		ctx, cancel := context.WithCancel(cmd.Context())
		go func() {
			select {
			case <-c.env.Signals:
				cancel()
			case <-ctx.Done():
			}
		}()
		cmd.SetContext(ctx)
	}
	return nil
}

// describe renders an error as the one line execq prints, with a hint on
// what to do where there is an obvious one.
func describe(err error) string {
	msg := err.Error()
	var ae *client.Error
	if errors.As(err, &ae) {
		switch ae.Code {
		case "unauthenticated":
			msg += "; check --token, --token-file or EXECQ_TOKEN"
		case "rate_limited":
			msg += "; wait and retry"
		case "unknown_container":
			msg += "; execq containers lists the containers"
		}
	}
	var unknownCA x509.UnknownAuthorityError
	if errors.As(err, &unknownCA) {
		msg += "; give the CA that signed the coordinator's certificate with --ca-file or EXECQ_CA_FILE"
	}
	if errors.Is(err, context.Canceled) {
		return "interrupted"
	}
	// One line, whatever the server or a library said.
	return strings.Join(strings.Fields(msg), " ")
}

// version is the CLI's version: set at link time, else the module's.
func version() string {
	if Version != "" {
		return Version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(devel)"
}

func (c *cli) versionCommand() *cobra.Command {
	return &cobra.Command{
		Use:         "version",
		Short:       "Print execq's version",
		Args:        cobra.NoArgs,
		Annotations: map[string]string{annotNoClient: "1"},
		RunE: func(cmd *cobra.Command, _ []string) error {
			info := ""
			if bi, ok := debug.ReadBuildInfo(); ok {
				info = " " + bi.GoVersion
			}
			fmt.Fprintf(c.env.Stdout, "execq %s%s\n", version(), info)
			return nil
		},
	}
}

// isTerminal says whether w is a terminal (for the spinner and tables).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
