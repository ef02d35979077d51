package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/jmoiron/sqlx"
	"golang.org/x/sys/unix"

	"github.com/execq/execq/shared"
)

// ControlChannel is notified with a node ID when one of its running commands
// gets a cancel request, to wake that node's control long-polls on every
// replica.
const ControlChannel = "execq_control"

// Control is the part of a command row about operator control: its limits,
// why it ended, and a cancel request.
type Control struct {
	TimeoutSeconds      sql.NullInt32  `db:"timeout_seconds"`
	QueueTimeoutSeconds sql.NullInt32  `db:"queue_timeout_seconds"`
	EndReason           sql.NullString `db:"end_reason"`
	EndSignal           sql.NullString `db:"end_signal"`
	CancelRequestedAt   sql.NullTime   `db:"cancel_requested_at"`
	CancelRequestedBy   sql.NullString `db:"cancel_requested_by"`
	CancelGraceSeconds  sql.NullInt32  `db:"cancel_grace_seconds"`
}

const controlCols = `timeout_seconds, queue_timeout_seconds, end_reason, end_signal,
	cancel_requested_at, cancel_requested_by, cancel_grace_seconds`

// optSeconds is an optional number of seconds as a query parameter.
func optSeconds(s shared.Seconds) sql.NullInt32 {
	return sql.NullInt32{Int32: int32(s.Value), Valid: s.Set}
}

// ending is how finalize makes a command terminal.
type ending struct {
	status shared.Status
	exit   sql.NullInt32
	// note is appended to stderr: an execq line saying what happened.
	note string
	// clearLease drops leased_by so a later finish by the old lease is refused.
	clearLease bool
	reason     shared.EndReason
	// signal names the signal that ended the program, if one did.
	signal string
}

// finishEnding decides, from an agent's finish, the command's status, end
// reason and execq line. c is the locked row.
func finishEnding(ctx context.Context, q sqlx.QueryerContext, c *Command, req shared.FinishRequest) (ending, error) {
	e := ending{status: shared.StatusFailed, signal: req.Signal}
	if req.ExitCode != nil {
		e.exit = sql.NullInt32{Int32: int32(*req.ExitCode), Valid: true}
	}
	switch req.EndReason {
	case shared.EndCancelled:
		e.reason = shared.EndCancelled
		who, err := cancelledBy(ctx, q, c)
		if err != nil {
			return e, err
		}
		if req.ExitCode == nil && req.Error == "" {
			// Stopped between start and exec: it never ran, which is
			// what the contract's "cancelled" means.
			e.status = shared.StatusCancelled
			e.note = fmt.Sprintf("execq: cancelled by %s before the program was executed\n", who)
			break
		}
		e.note = fmt.Sprintf("execq: cancelled by %s; %s\n", who, howStopped(req, int(c.CancelGraceSeconds.Int32)))
	case shared.EndTimedOut:
		e.reason = shared.EndTimedOut
		e.note = fmt.Sprintf("execq: timed out after %d s; %s\n", c.TimeoutSeconds.Int32, howStopped(req, -1))
	case shared.EndAgentLost:
		e.reason = shared.EndAgentLost
		e.note = "execq: " + req.Error + "\n"
	case "":
		switch {
		case req.Error != "" || req.ExitCode == nil:
			e.reason = shared.EndExecError
			e.note = "execq: " + req.Error + "\n"
		case *req.ExitCode == 0:
			e.status, e.reason = shared.StatusSucceeded, shared.EndExited
		default:
			e.reason = shared.EndExited
			if sig := signalOfStatus(*req.ExitCode); sig != "" {
				e.reason, e.signal = shared.EndKilled, sig
				e.note = fmt.Sprintf("execq: the program was killed by %s (exit status %d), a signal execq did not send\n", sig, *req.ExitCode)
			}
		}
	default:
		return e, fmt.Errorf("finish: unknown end_reason %q", req.EndReason)
	}
	return e, nil
}

// signalOfStatus names the signal runc exec's status 128+n stands for, or
// "" if the status is not one. runc exec reports a program killed by signal
// n that way; a program exiting with 128+n itself cannot be told apart.
func signalOfStatus(code int) string {
	n := code - 128
	if n < 1 || n > 31 {
		return ""
	}
	return unix.SignalName(syscall.Signal(n))
}

// howStopped says how the agent's stop ended the program. grace < 0: not
// known here.
func howStopped(req shared.FinishRequest, grace int) string {
	exit := ""
	if req.ExitCode != nil {
		exit = fmt.Sprintf(" (exit status %d)", *req.ExitCode)
	}
	switch {
	case req.ExitCode == nil && req.Error == "":
		return "the program had not been executed yet"
	case req.ExitCode == nil:
		return "the program's outcome is unknown: " + req.Error
	case req.Signal == "":
		// Neither signal's status: the program handled SIGTERM and
		// exited, or exited on its own just before.
		return "the program exited after SIGTERM or just before it" + exit
	case req.Signal == "SIGKILL" && grace >= 0:
		return fmt.Sprintf("the program was still running %d s after SIGTERM and was ended by SIGKILL%s", grace, exit)
	case req.Signal == "SIGKILL":
		return "the program was still running after SIGTERM and its grace period, and was ended by SIGKILL" + exit
	}
	return fmt.Sprintf("the program was ended by %s%s", req.Signal, exit)
}

// cancelledBy names the user who asked for c's cancel, and when.
func cancelledBy(ctx context.Context, q sqlx.QueryerContext, c *Command) (string, error) {
	if !c.CancelRequestedBy.Valid {
		return "an operator", nil
	}
	var name string
	err := sqlx.GetContext(ctx, q, &name, `SELECT name FROM users WHERE id = $1`, c.CancelRequestedBy.String)
	if errors.Is(err, sql.ErrNoRows) {
		name = "a deleted user"
	} else if err != nil {
		return "", interpretError(err)
	}
	return fmt.Sprintf("%s (%s) at %s", name, c.CancelRequestedBy.String,
		c.CancelRequestedAt.Time.UTC().Format("2006-01-02T15:04:05.000Z")), nil
}

// CancelOutcome is what Cancel did.
type CancelOutcome int

const (
	// CancelledQueued: the command had not started and is now cancelled.
	CancelledQueued CancelOutcome = iota + 1
	// CancelRequested: it is running; its agent is told to stop it.
	CancelRequested
	// AlreadyFinished: it was terminal; nothing changed.
	AlreadyFinished
)

// Cancel cancels a command on behalf of user: its submitter or an admin;
// anyone else gets ErrNotFound, as for an unknown ID. A queued one — leased or not — becomes cancelled at once, and an
// agent holding its lease is refused at start. A running one gets the
// request recorded (the first request's grace stands) and its node's control
// polls are woken. It returns the record as it is after the change (for a
// terminal one, without its output).
func (s *Store) Cancel(ctx context.Context, id string, user User, graceSeconds int) (CommandWithOutput, CancelOutcome, error) {
	ctx, cancel := s.deadline(ctx)
	defer cancel()
	var (
		out CommandWithOutput
		res CancelOutcome
	)
	err := s.WithTx(ctx, func(tx *sqlx.Tx) error {
		var c Command
		err := tx.GetContext(ctx, &c, `SELECT `+commandCols+` FROM commands WHERE id = $1 FOR UPDATE`, id)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return interpretError(err)
		}
		if !user.IsAdmin && c.RequestedBy != user.ID {
			return ErrNotFound // another user's command: as if unknown
		}
		record := func() error {
			_, err := tx.ExecContext(ctx, `UPDATE commands SET cancel_requested_at = now(), cancel_requested_by = $2,
				cancel_grace_seconds = $3 WHERE id = $1`, id, user.ID, graceSeconds)
			return interpretError(err)
		}
		switch {
		case c.Status.Terminal():
			res = AlreadyFinished
			out.Command = c // the status is all the answer needs, not the output
			return nil
		case c.Status == shared.StatusQueued:
			res = CancelledQueued
			if err := record(); err != nil {
				return err
			}
			// leased_by stays: an agent holding the lease asks to start
			// and is told "cancelled", not "lease lost".
			note := fmt.Sprintf("execq: cancelled by %s (%s) before it started\n", user.Name, user.ID)
			if _, err := finalize(ctx, tx, id, ending{status: shared.StatusCancelled, note: note, reason: shared.EndCancelled}); err != nil {
				return err
			}
		default:
			res = CancelRequested
			if !c.CancelRequestedAt.Valid {
				if err := record(); err != nil {
					return err
				}
			}
			if _, err := tx.ExecContext(ctx, `SELECT pg_notify('`+ControlChannel+`', $1::text)`, c.NodeID); err != nil {
				return interpretError(err)
			}
		}
		// A running command's record has no output yet (wholeOutputCols), and
		// a queued one cancelled has only its execq line.
		return interpretError(tx.GetContext(ctx, &out, `SELECT `+commandCols+`, `+wholeOutputCols+` FROM commands c WHERE id = $1`, id))
	})
	if err != nil {
		return out, 0, fmt.Errorf("cancel command %s: %w", id, err)
	}
	if res == CancelledQueued {
		s.countEnded(shared.StatusCancelled, shared.EndCancelled, 1)
	}
	return out, res, nil
}

// pendingCancelsSQL runs on every control poll of every agent: through
// commands_cancel_idx it reads only the node's running rows with a cancel
// request.
const pendingCancelsSQL = `
	SELECT id AS command_id, attempt, coalesce(cancel_grace_seconds, 0) AS grace_seconds FROM commands
	WHERE node_id = $1 AND status = 'running' AND cancel_requested_at IS NOT NULL`

// PendingCancels lists the cancel orders for a node's running commands.
func (s *Store) PendingCancels(ctx context.Context, nodeID string) ([]shared.CancelOrder, error) {
	ctx, cancel := s.deadline(ctx)
	defer cancel()
	var rows []struct {
		ID    string `db:"command_id"`
		Att   int    `db:"attempt"`
		Grace int    `db:"grace_seconds"`
	}
	if err := s.db.SelectContext(ctx, &rows, pendingCancelsSQL, nodeID); err != nil {
		return nil, fmt.Errorf("pending cancels of node %s: %w", nodeID, interpretError(err))
	}
	orders := make([]shared.CancelOrder, len(rows))
	for i, r := range rows {
		orders[i] = shared.CancelOrder{CommandID: r.ID, Attempt: r.Att, GraceSeconds: r.Grace}
	}
	return orders, nil
}

// timedOutSQL finds running commands past their run deadline plus $1 ms
// (the stop grace and the lease TTL: the agent enforces the timeout itself
// and has had every chance to report). It reads commands_live_node_idx,
// comparing the deadline in its entries (0012).
const timedOutSQL = `
	SELECT id, timeout_seconds FROM commands
	WHERE status = 'running' AND run_deadline < now() - $1 * interval '1 millisecond'
	ORDER BY run_deadline LIMIT $2
	FOR UPDATE SKIP LOCKED`

// FailTimedOut is the coordinator's backstop for timeouts: a running
// command whose agent did not report it ended slack after its timeout is
// failed with end reason timed_out. Its lease is cleared, so the agent — if
// it is still there — is refused at its next heartbeat and stops the
// program. Returns the IDs failed.
func (s *Store) FailTimedOut(ctx context.Context, slack time.Duration, limit int) ([]string, error) {
	ctx, cancel := s.deadline(ctx)
	defer cancel()
	var rows []struct {
		ID      string `db:"id"`
		Timeout int    `db:"timeout_seconds"`
	}
	var ids []string
	err := s.WithTx(ctx, func(tx *sqlx.Tx) error {
		if err := tx.SelectContext(ctx, &rows, timedOutSQL, slack.Milliseconds(), limit); err != nil {
			return interpretError(err)
		}
		for _, r := range rows {
			note := fmt.Sprintf("execq: timed out after %d s; the agent did not report the end within the stop grace "+
				"and lease TTL (%s more), so the coordinator failed it\n", r.Timeout, slack)
			if _, err := finalize(ctx, tx, r.ID, ending{status: shared.StatusFailed, note: note, clearLease: true, reason: shared.EndTimedOut}); err != nil {
				return err
			}
			ids = append(ids, r.ID)
		}
		return nil
	})
	if err == nil {
		s.countEnded(shared.StatusFailed, shared.EndTimedOut, len(ids))
	}
	return ids, err
}

// notPickedUpSQL finds queued commands (leased or not) past their queue
// deadline. It reads commands_live_node_idx, comparing the deadline in its
// entries (0012).
const notPickedUpSQL = `
	SELECT c.id, c.queue_timeout_seconds, n.name AS node_name FROM commands c JOIN nodes n ON n.id = c.node_id
	WHERE c.status = 'queued' AND c.queue_deadline < now()
	ORDER BY c.queue_deadline LIMIT $1
	FOR UPDATE OF c SKIP LOCKED`

// FailNotPickedUp fails queued commands that no agent started within their
// queue timeout: end reason not_picked_up. Start refuses a command past its
// queue deadline, so none of them runs. Returns the IDs failed.
func (s *Store) FailNotPickedUp(ctx context.Context, limit int) ([]string, error) {
	ctx, cancel := s.deadline(ctx)
	defer cancel()
	var rows []struct {
		ID       string `db:"id"`
		Timeout  int    `db:"queue_timeout_seconds"`
		NodeName string `db:"node_name"`
	}
	var ids []string
	err := s.WithTx(ctx, func(tx *sqlx.Tx) error {
		if err := tx.SelectContext(ctx, &rows, notPickedUpSQL, limit); err != nil {
			return interpretError(err)
		}
		for _, r := range rows {
			note := fmt.Sprintf("execq: not picked up: no agent started the command within its queue timeout of %d s "+
				"(node %q: host down or agent stopped?); it never ran\n", r.Timeout, r.NodeName)
			if _, err := finalize(ctx, tx, r.ID, ending{status: shared.StatusFailed, note: note, clearLease: true, reason: shared.EndNotPickedUp}); err != nil {
				return err
			}
			ids = append(ids, r.ID)
		}
		return nil
	})
	if err == nil {
		s.countEnded(shared.StatusFailed, shared.EndNotPickedUp, len(ids))
	}
	return ids, err
}
