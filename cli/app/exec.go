package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"

	"github.com/execq/execq/cli/client"
	"github.com/execq/execq/shared"
)

// execOptions are exec's flags.
type execOptions struct {
	detach         bool
	timeout        time.Duration
	queueTimeout   time.Duration
	grace          time.Duration
	idempotencyKey string
}

const exitTable = `Exit status:
  0-255  the program's own exit status
  122    its agent was lost while it ran (end_reason agent_lost)
  123    no agent started it within its queue timeout (not_picked_up)
  124    it ran past --timeout and was stopped (timed_out)
  125    execq itself failed (usage, API error, coordinator unreachable)
  126    the program could not be started (exec_error: not found, not executable)
  128+n  it was killed by signal n that execq did not send (killed)
  130    it was cancelled, or execq stopped waiting for it
When the program did not exit by itself, the last line on stderr says why ("execq: …").`

func (c *cli) execCommand() *cobra.Command {
	var o execOptions
	cmd := &cobra.Command{
		Use:   "exec [flags] CONTAINER -- PROGRAM [ARGS...]",
		Short: "Run a program in a container, show its output live, exit with its status",
		Long: `exec submits PROGRAM with ARGS to run in CONTAINER (its UUID, or its name as execq containers
shows it), copies the program's stdout and stderr to execq's own as they are written (the
exact bytes), and exits with the program's exit status.

Ctrl-C cancels the command (SIGTERM, then SIGKILL after --grace); a second Ctrl-C stops
waiting and prints the command's ID, for execq attach, execq wait or execq logs -f. A connection lost
to the coordinator (a restart, a failover) is resumed where it stopped: nothing is shown
twice or lost. Every submit carries an Idempotency-Key (--idempotency-key, or a random
one), so a retried submit never runs the program twice.

` + exitTable,
		Example: `  execq exec web-1 -- uname -a
  execq exec f47ac10b-58cc-4372-a567-0e02b2c3d479 -- sh -c 'echo out; echo err >&2; exit 7'
  execq exec --timeout 10m --detach db-1 -- /usr/local/bin/backup`,
		Args:        cobra.MinimumNArgs(2),
		Annotations: map[string]string{annotExitTable: "1", annotOwnSignals: "1"},
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.runExec(cmd, args, o)
		},
	}
	cmd.ValidArgsFunction = c.completeContainer
	f := cmd.Flags()
	f.BoolVarP(&o.detach, "detach", "d", false, "print the command's ID once it is queued and return")
	f.DurationVar(&o.timeout, "timeout", 0, "stop the program after this long running (e.g. 30s, 10m; default: the coordinator's)")
	f.DurationVar(&o.queueTimeout, "queue-timeout", 0, "give up if no agent started it within this long (default: the coordinator's)")
	f.DurationVar(&o.grace, "grace", 0, "on Ctrl-C, time between SIGTERM and SIGKILL (default: the coordinator's)")
	f.StringVar(&o.idempotencyKey, "idempotency-key", "", "submit at most once per key within 24 h (default: a random key, so retries within this run are safe)")
	return cmd
}

// completeContainer offers the container names for exec's first argument
// (shell completion asks the coordinator with the same settings).
func (c *cli) completeContainer(cmd *cobra.Command, args []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
	if len(args) > 0 || cmd.ArgsLenAtDash() >= 0 {
		return nil, cobra.ShellCompDirectiveDefault
	}
	if c.client == nil && c.setup(cmd) != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	list, err := c.client.Containers(cmd.Context())
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var names []cobra.Completion
	for _, ci := range list.Containers {
		names = append(names, cobra.CompletionWithDesc(ci.Name, ci.ID))
	}
	return names, cobra.ShellCompDirectiveNoFileComp
}

func (c *cli) attachCommand() *cobra.Command {
	var grace time.Duration
	cmd := &cobra.Command{
		Use:   "attach ID",
		Short: "Follow a command's output live and exit with its status, as exec does",
		Long: `attach picks up command ID as execq exec would have shown it: its stdout and stderr from the
start, live until it ends, then its exit status. Ctrl-C cancels it, a second Ctrl-C stops
waiting.

` + exitTable,
		Args:        cobra.ExactArgs(1),
		Annotations: map[string]string{annotExitTable: "1", annotOwnSignals: "1"},
		RunE: func(cmd *cobra.Command, args []string) error {
			rec, err := c.client.Get(cmd.Context(), args[0], 0)
			if err != nil {
				return err
			}
			var g shared.Seconds
			if cmd.Flags().Changed("grace") {
				g = shared.Secs(wholeSeconds(grace))
			}
			return c.attach(cmd.Context(), rec, g, true)
		},
	}
	cmd.Flags().DurationVar(&grace, "grace", 0, "on Ctrl-C, time between SIGTERM and SIGKILL (default: the coordinator's)")
	return cmd
}

// interruptible runs f with a context that the first interrupt cancels,
// for the calls before exec follows the command (which counts the presses
// itself): a slow or retrying submit can be stopped too.
func (c *cli) interruptible(ctx context.Context, f func(context.Context) (*shared.CommandExecutionRecord, error)) (*shared.CommandExecutionRecord, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := make(chan struct{})
	watching := make(chan struct{})
	go func() {
		defer close(watching)
		select {
		case <-c.env.Signals:
			cancel()
		case <-stop:
		}
	}()
	rec, err := f(ctx)
	close(stop)
	<-watching // no interrupt is taken from attach after this
	return rec, err
}

func (c *cli) interruptibleString(ctx context.Context, f func(context.Context) (string, error)) (string, error) {
	var s string
	_, err := c.interruptible(ctx, func(ctx context.Context) (*shared.CommandExecutionRecord, error) {
		var err error
		s, err = f(ctx)
		return nil, err
	})
	return s, err
}

// wholeSeconds rounds a duration up to whole seconds, the API's unit.
func wholeSeconds(d time.Duration) int { return int(math.Ceil(d.Seconds())) }

func (c *cli) runExec(cmd *cobra.Command, args []string, o execOptions) error {
	ctx := cmd.Context()
	switch dash := cmd.ArgsLenAtDash(); {
	case dash == 0:
		return errors.New("name the CONTAINER before --: execq exec CONTAINER -- PROGRAM [ARGS...]")
	case dash > 1:
		return fmt.Errorf("one CONTAINER before --, got %d arguments: execq exec CONTAINER -- PROGRAM [ARGS...]", dash)
	}
	containerID, err := c.interruptibleString(ctx, func(ctx context.Context) (string, error) {
		return c.client.ResolveContainer(ctx, args[0])
	})
	if err != nil {
		return err
	}
	req := shared.SubmitRequest{Program: args[1], Args: args[2:]}
	if o.timeout > 0 {
		req.TimeoutSeconds = shared.Secs(wholeSeconds(o.timeout))
	}
	if o.queueTimeout > 0 {
		req.QueueTimeoutSeconds = shared.Secs(wholeSeconds(o.queueTimeout))
	}
	var grace shared.Seconds
	if cmd.Flags().Changed("grace") {
		grace = shared.Secs(wholeSeconds(o.grace))
	}
	key := o.idempotencyKey
	if key == "" {
		key = "execq-" + uuid.NewString()
	}
	rec, err := c.interruptible(ctx, func(ctx context.Context) (*shared.CommandExecutionRecord, error) {
		return c.client.Submit(ctx, containerID, req, client.SubmitOptions{IdempotencyKey: key})
	})
	if errors.Is(err, context.Canceled) {
		return &ExitError{Code: ExitCancelled, Message: fmt.Sprintf("interrupted before the coordinator answered; if it queued the command, execq ls shows it (Idempotency-Key %s)", key)}
	}
	if err != nil {
		return err
	}
	if o.detach {
		fmt.Fprintln(c.env.Stdout, rec.ID)
		return nil
	}
	return c.attach(ctx, rec, grace, true)
}

// attach follows both streams of a command to execq's stdout and stderr
// until it is terminal, then ends with its exit status. With interrupts,
// the first press cancels the command with grace, the second stops
// waiting.
func (c *cli) attach(ctx context.Context, rec *shared.CommandExecutionRecord, grace shared.Seconds, interruptCancels bool) error {
	id := rec.ID
	fctx, stop := context.WithCancel(ctx)
	defer stop()
	var sp *spinner
	if rec.Status == shared.StatusQueued && isTerminal(c.env.Stderr) {
		sp = startSpinner(fctx, c.env.Stderr, time.Now(), func(ctx context.Context) (shared.Status, error) {
			r, err := c.client.Get(ctx, id, 0)
			if err != nil {
				return "", err
			}
			return r.Status, nil
		})
	}
	stderrTail := &tailWriter{w: c.env.Stderr}
	done := make(chan error, 1)
	go func() {
		var g errgroup.Group
		g.Go(func() error { return c.copyStream(fctx, id, shared.StreamStdout, spinWriter{c.env.Stdout, sp}) })
		g.Go(func() error { return c.copyStream(fctx, id, shared.StreamStderr, spinWriter{stderrTail, sp}) })
		done <- g.Wait()
	}()
	presses := 0
	for {
		select {
		case err := <-done:
			sp.Stop()
			if err != nil {
				return fmt.Errorf("%w (the command goes on: execq attach %s)", err, id)
			}
			final, err := c.client.Get(ctx, id, 0)
			if err != nil {
				return err
			}
			code, reason := outcome(final)
			if reason != "" && !stderrTail.lastLineFromExecq() {
				fmt.Fprintln(c.env.Stderr, "execq: "+reason)
			}
			if code == 0 {
				return nil
			}
			return &ExitError{Code: code}
		case <-c.env.Signals:
			sp.Stop()
			presses++
			if presses == 1 && interruptCancels {
				fmt.Fprintf(c.env.Stderr, "execq: cancelling command %s (Ctrl-C again to stop waiting)\n", id)
				go func() {
					_, err := c.client.Cancel(fctx, id, client.CancelOptions{Grace: grace})
					if err != nil && !client.IsCode(err, "already_finished") && fctx.Err() == nil {
						fmt.Fprintln(c.env.Stderr, "execq: "+describe(err))
					}
				}()
				continue
			}
			stop()
			fmt.Fprintf(c.env.Stderr, "execq: stopped waiting for command %s; it may still be running (execq attach %s picks it up again)\n", id, id)
			return &ExitError{Code: ExitCancelled}
		}
	}
}

// copyStream copies one stream of a command, live, to w.
func (c *cli) copyStream(ctx context.Context, id, stream string, w io.Writer) error {
	f := c.client.Follow(ctx, id, stream, 0)
	defer f.Close()
	if c.opts.verbose {
		f.OnReconnect = func(off int64, cause error) {
			fmt.Fprintf(c.env.Stderr, "execq: %s of %s: connection lost at byte %d (%v); resuming\n", stream, id, off, cause)
		}
	}
	_, err := io.Copy(w, f)
	if err != nil && ctx.Err() != nil {
		return nil // stopped waiting on purpose
	}
	return err
}

// outcome maps a terminal record to execq's exit status and, when the
// program did not exit by itself, the reason to print.
func outcome(r *shared.CommandExecutionRecord) (int, string) {
	var reason shared.EndReason
	if r.EndReason != nil {
		reason = *r.EndReason
	}
	sig := ""
	if r.Signal != nil {
		sig = *r.Signal
	}
	switch {
	case r.Status == shared.StatusSucceeded:
		return 0, ""
	case reason == shared.EndCancelled || r.Status == shared.StatusCancelled:
		return ExitCancelled, fmt.Sprintf("command %s was cancelled", r.ID)
	case reason == shared.EndExited || (reason == "" && r.ExitCode != nil):
		if r.ExitCode != nil {
			return *r.ExitCode, ""
		}
		return 1, ""
	case reason == shared.EndTimedOut:
		return ExitTimedOut, fmt.Sprintf("command %s timed out", r.ID)
	case reason == shared.EndExecError:
		return ExitCannotStart, fmt.Sprintf("command %s could not be started", r.ID)
	case reason == shared.EndNotPickedUp:
		return ExitNotPickedUp, fmt.Sprintf("command %s was not picked up by an agent in time", r.ID)
	case reason == shared.EndAgentLost:
		return ExitAgentLost, fmt.Sprintf("the agent of command %s was lost", r.ID)
	case reason == shared.EndKilled:
		if n := unix.SignalNum(sig); n > 0 {
			return 128 + int(n), fmt.Sprintf("command %s was killed by %s", r.ID, sig)
		}
		if r.ExitCode != nil {
			return *r.ExitCode, fmt.Sprintf("command %s was killed", r.ID)
		}
	}
	return 1, fmt.Sprintf("command %s ended %s (end_reason %q)", r.ID, r.Status, reason)
}

// tailWriter remembers the end of what went through it, to tell whether
// the coordinator's "execq: …" line already said why the command ended.
type tailWriter struct {
	w    io.Writer
	mu   sync.Mutex
	tail []byte
}

const tailKeep = 512

func (t *tailWriter) Write(p []byte) (int, error) {
	t.mu.Lock()
	t.tail = append(t.tail, p...)
	if len(t.tail) > tailKeep {
		t.tail = append(t.tail[:0:0], t.tail[len(t.tail)-tailKeep:]...)
	}
	t.mu.Unlock()
	return t.w.Write(p)
}

func (t *tailWriter) lastLineFromExecq() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := string(t.tail)
	for len(s) > 0 && s[len(s)-1] == '\n' {
		s = s[:len(s)-1]
	}
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == '\n' {
			s = s[i+1:]
			break
		}
	}
	return len(s) >= 6 && s[:6] == "execq:"
}
