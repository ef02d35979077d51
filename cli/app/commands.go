package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/execq/execq/cli/client"
	"github.com/execq/execq/shared"
)

// output formats of get, ls and containers.
const (
	formatTable = ""
	formatJSON  = "json"
	formatWide  = "wide"
)

func checkFormat(format string, wide bool) error {
	switch format {
	case formatTable, formatJSON:
		return nil
	case formatWide:
		if wide {
			return nil
		}
	}
	if wide {
		return fmt.Errorf("-o %q: want json or wide", format)
	}
	return fmt.Errorf("-o %q: want json", format)
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func (c *cli) logsCommand() *cobra.Command {
	var follow bool
	var stream string
	cmd := &cobra.Command{
		Use:   "logs [-f] [--stream stdout|stderr] ID",
		Short: "Print a command's output: stdout to stdout, stderr to stderr, exact bytes",
		Long: `logs prints the output of command ID as stored: its stdout on execq's stdout and its stderr on
execq's stderr, byte for byte. With -f it goes on printing as the command writes, until it
ends, resuming across lost connections. --stream picks one stream.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			streams := []string{shared.StreamStdout, shared.StreamStderr}
			switch stream {
			case "":
			case shared.StreamStdout, shared.StreamStderr:
				streams = []string{stream}
			default:
				return fmt.Errorf("--stream %q: want stdout or stderr", stream)
			}
			return c.logs(cmd.Context(), args[0], streams, follow)
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "go on printing output as it is written, until the command ends")
	cmd.Flags().StringVar(&stream, "stream", "", "only this stream: stdout or stderr")
	return cmd
}

func (c *cli) logs(ctx context.Context, id string, streams []string, follow bool) error {
	dest := func(stream string) io.Writer {
		if stream == shared.StreamStderr {
			return c.env.Stderr
		}
		return c.env.Stdout
	}
	if !follow {
		for _, s := range streams {
			if _, err := c.client.Output(ctx, id, s, 0, dest(s)); err != nil {
				return err
			}
		}
		return nil
	}
	var g errgroup.Group
	for _, s := range streams {
		g.Go(func() error { return c.copyStream(ctx, id, s, dest(s)) })
	}
	if err := g.Wait(); err != nil {
		return err
	}
	return ctx.Err()
}

func (c *cli) getCommand() *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "get ID",
		Short: "Show a command's record",
		Long:  "get shows the record of command ID: a summary by default, the whole record with -o json.",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkFormat(format, false); err != nil {
				return err
			}
			rec, err := c.client.Get(cmd.Context(), args[0], 0)
			if err != nil {
				return err
			}
			if format == formatJSON {
				return printJSON(c.env.Stdout, rec)
			}
			return printRecord(c.env.Stdout, rec)
		},
	}
	cmd.Flags().StringVarP(&format, "output", "o", "", "json: the whole record")
	return cmd
}

// printRecord prints a record as "field: value" lines; the output itself
// is left to execq logs (exact bytes).
func printRecord(w io.Writer, r *shared.CommandExecutionRecord) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, v) }
	row("id", r.ID)
	row("container", r.ContainerID)
	row("requested by", r.RequestedBy)
	row("command", commandLine(r.Program, r.Args))
	row("status", string(r.Status))
	if r.EndReason != nil {
		row("end reason", string(*r.EndReason))
	}
	if r.ExitCode != nil {
		row("exit code", strconv.Itoa(*r.ExitCode))
	}
	if r.Signal != nil {
		row("signal", *r.Signal)
	}
	row("created", stamp(&r.CreatedAt))
	if r.StartedAt != nil {
		row("started", stamp(r.StartedAt))
	}
	if r.FinishedAt != nil {
		row("finished", stamp(r.FinishedAt))
	}
	if r.TimeoutSeconds != nil {
		row("timeout", fmt.Sprintf("%d s", *r.TimeoutSeconds))
	}
	if r.CancelRequestedAt != nil {
		row("cancel requested", stamp(r.CancelRequestedAt))
	}
	row("stdout", sizeNote(r.StdoutBytes, r.StdoutTruncated))
	row("stderr", sizeNote(r.StderrBytes, r.StderrTruncated))
	return tw.Flush()
}

func sizeNote(n int64, truncated bool) string {
	s := fmt.Sprintf("%d bytes", n)
	if truncated {
		s += " (past the cap: head and tail kept)"
	}
	return s
}

func stamp(t *time.Time) string {
	if t == nil {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

// commandLine shows a program and its arguments as a shell would take
// them, quoting what needs it.
func commandLine(program string, args []string) string {
	parts := make([]string, 0, 1+len(args))
	for _, a := range append([]string{program}, args...) {
		if a == "" || strings.ContainsAny(a, " \t\n'\"\\$`|&;<>()*?[]#~{}!") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		parts = append(parts, a)
	}
	return strings.Join(parts, " ")
}

func (c *cli) waitCommand() *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "wait ID",
		Short: "Wait for a command to end and exit with its status",
		Long: `wait waits until command ID has ended, prints its status and exits as execq exec would have.

` + exitTable,
		Args:        cobra.ExactArgs(1),
		Annotations: map[string]string{annotExitTable: "1"},
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkFormat(format, false); err != nil {
				return err
			}
			rec, err := c.client.Wait(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if format == formatJSON {
				if err := printJSON(c.env.Stdout, rec); err != nil {
					return err
				}
			} else {
				fmt.Fprintln(c.env.Stdout, statusLine(rec))
			}
			code, _ := outcome(rec)
			if code != 0 {
				return &ExitError{Code: code}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&format, "output", "o", "", "json: print the final record")
	return cmd
}

// statusLine says how a command ended (or where it is) in a few words.
func statusLine(r *shared.CommandExecutionRecord) string {
	s := string(r.Status)
	if r.EndReason != nil {
		s += " (" + string(*r.EndReason)
		if r.ExitCode != nil {
			s += ", exit code " + strconv.Itoa(*r.ExitCode)
		}
		if r.Signal != nil {
			s += ", " + *r.Signal
		}
		s += ")"
	}
	return s
}

func (c *cli) cancelCommand() *cobra.Command {
	var grace, wait time.Duration
	cmd := &cobra.Command{
		Use:   "cancel ID",
		Short: "Cancel a queued or running command",
		Long: `cancel cancels command ID: a queued one never runs; a running one gets SIGTERM, then SIGKILL
after --grace. With --wait it returns once the command has ended.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			opt := client.CancelOptions{Wait: wait}
			if cmd.Flags().Changed("grace") {
				opt.Grace = shared.Secs(wholeSeconds(grace))
			}
			rec, err := c.client.Cancel(cmd.Context(), args[0], opt)
			var ae *client.Error
			if errors.As(err, &ae) && ae.Code == "already_finished" {
				return fmt.Errorf("command %s already ended: %s", args[0], ae.Status)
			}
			if err != nil {
				return err
			}
			if rec.Status.Terminal() {
				fmt.Fprintf(c.env.Stdout, "%s %s\n", rec.ID, statusLine(rec))
			} else {
				fmt.Fprintf(c.env.Stdout, "%s %s, cancel requested\n", rec.ID, rec.Status)
			}
			return nil
		},
	}
	cmd.Flags().DurationVar(&grace, "grace", 0, "time between SIGTERM and SIGKILL (default: the coordinator's)")
	cmd.Flags().DurationVar(&wait, "wait", 0, "wait up to this long for the command to end (e.g. 30s)")
	return cmd
}

func (c *cli) lsCommand() *cobra.Command {
	var (
		format, container, status, cursor string
		limit                             int
		all                               bool
	)
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List commands, newest first",
		Long: `ls lists your commands (everyone's for an admin), newest first, one page at a time; it says
on stderr how to get the next page. --all walks every page.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkFormat(format, true); err != nil {
				return err
			}
			ctx := cmd.Context()
			q := client.HistoryQuery{Status: shared.Status(status), Limit: limit, Cursor: cursor}
			if container != "" {
				id, err := c.client.ResolveContainer(ctx, container)
				if err != nil {
					return err
				}
				q.ContainerID = id
			}
			var entries []shared.HistoryEntry
			for {
				page, err := c.client.History(ctx, q)
				if err != nil {
					return err
				}
				if format == formatJSON && !all {
					return printJSON(c.env.Stdout, page)
				}
				entries = append(entries, page.Commands...)
				if page.NextCursor == nil {
					break
				}
				if !all {
					fmt.Fprintf(c.env.Stderr, "more: execq ls --cursor %s (with the same filters), or --all\n", *page.NextCursor)
					break
				}
				q.Cursor = *page.NextCursor
			}
			if format == formatJSON {
				return printJSON(c.env.Stdout, shared.HistoryPage{Commands: entries})
			}
			return printHistory(c.env.Stdout, entries, format == formatWide)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&format, "output", "o", "", "json (the page as the API returns it) or wide (more columns)")
	f.StringVar(&container, "container", "", "only this container (UUID or name)")
	f.StringVar(&status, "status", "", "only this status: queued, running, succeeded, failed or cancelled")
	f.IntVar(&limit, "limit", 0, fmt.Sprintf("commands per page, 1-%d (default %d)", shared.MaxHistoryLimit, shared.DefaultHistoryLimit))
	f.StringVar(&cursor, "cursor", "", "the page after this cursor (printed by the previous page)")
	f.BoolVar(&all, "all", false, "walk every page")
	return cmd
}

func printHistory(w io.Writer, entries []shared.HistoryEntry, wide bool) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if wide {
		fmt.Fprintln(tw, "ID\tCONTAINER\tSTATUS\tEND REASON\tEXIT\tCREATED\tSTARTED\tFINISHED\tREQUESTED BY\tCOMMAND")
	} else {
		fmt.Fprintln(tw, "ID\tCONTAINER\tSTATUS\tEXIT\tCREATED\tCOMMAND")
	}
	for _, e := range entries {
		r := e.CommandExecutionRecord
		exit := ""
		if r.ExitCode != nil {
			exit = strconv.Itoa(*r.ExitCode)
		}
		cmdline := commandLine(r.Program, r.Args)
		if wide {
			reason := ""
			if r.EndReason != nil {
				reason = string(*r.EndReason)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.ContainerID, r.Status, reason, exit,
				stamp(&r.CreatedAt), stamp(r.StartedAt), stamp(r.FinishedAt), r.RequestedBy, cmdline)
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, short(r.ContainerID), r.Status, exit,
			stamp(&r.CreatedAt), clip(cmdline, 60))
	}
	return tw.Flush()
}

// short is the first block of a UUID, enough to tell containers apart on
// one screen (-o wide shows it whole).
func short(id string) string {
	if i := strings.IndexByte(id, '-'); i > 0 {
		return id[:i]
	}
	return id
}

func clip(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

func (c *cli) containersCommand() *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "containers",
		Short: "List the containers the agents report",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkFormat(format, true); err != nil {
				return err
			}
			list, err := c.client.Containers(cmd.Context())
			if err != nil {
				return err
			}
			if format == formatJSON {
				return printJSON(c.env.Stdout, list)
			}
			tw := tabwriter.NewWriter(c.env.Stdout, 0, 4, 2, ' ', 0)
			wide := format == formatWide
			if wide {
				fmt.Fprintln(tw, "ID\tNAME\tSTATE\tNODE\tLAST SEEN\tLABELS")
			} else {
				fmt.Fprintln(tw, "ID\tNAME\tSTATE\tNODE\tLAST SEEN")
			}
			for _, ci := range list.Containers {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s", ci.ID, ci.Name, ci.State, short(ci.NodeID), stamp(&ci.LastSeen))
				if wide {
					fmt.Fprintf(tw, "\t%s", labelList(ci.Labels))
				}
				fmt.Fprintln(tw)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVarP(&format, "output", "o", "", "json (the list as the API returns it) or wide (with the labels grants select on)")
	return cmd
}

// labelList shows labels as k=v,k=v in key order.
func labelList(labels map[string]string) string {
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		keys[i] = k + "=" + labels[k]
	}
	return strings.Join(keys, ",")
}
