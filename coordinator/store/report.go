package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/execq/execq/shared"
)

// An agent's heartbeats and finishes are written without a transaction held
// across round trips: the row is read, the request is worked out here
// (appendChunks, finishEnding), and one statement writes it only if the row
// is still the version read (its xmin: any change since makes a new one).
// A row that changed in between — the keeper's heartbeat crossing an output
// heartbeat — is read again and the request worked out again. So a
// heartbeat or a finish costs two statements and one commit, with no
// connection idle in a transaction, and the statements take many commands
// at once (the report groups, group.go).
//
// Each write locks its rows in id order before it writes (the locked CTE),
// so two of them over overlapping commands — a heartbeat batch and a finish
// batch, or two replicas' — cannot deadlock.
//
// The rows are found by primary key only. A write compares no column to a
// constant status: given "status = 'queued'" and "lease_expires_at > now()",
// the planner may take a partial index of live rows (then commands_lease_idx,
// whose statistics lag behind a burst of leases) and read every live lease
// to find one row — which the single-row start did, at a cost that grew with
// the fleet.

// maxReportRounds bounds how often a request is worked out again because its
// row changed between the read and the write. Only the agent holding the
// lease writes to a running row, so more than a couple of rounds means
// something is wrong.
const maxReportRounds = 20

// errContended: a row kept changing under a report for maxReportRounds.
var errContended = errors.New("the command's row kept changing; report not written")

// reportRowsSQL reads the rows of a batch of reports, with their versions.
const reportRowsSQL = `SELECT ` + commandCols + `, xmin::text::bigint AS row_version FROM commands WHERE id = ANY($1::uuid[])`

// reportRow is a row as a report read it.
type reportRow struct {
	Command
	Version int64 `db:"row_version"`
}

// readReportRows reads the rows of ids, by id.
func (s *Store) readReportRows(ctx context.Context, ids []string) (map[string]*reportRow, error) {
	var rows []reportRow
	if err := s.db.SelectContext(ctx, &rows, reportRowsSQL, pq.Array(ids)); err != nil {
		return nil, interpretError(err)
	}
	byID := make(map[string]*reportRow, len(rows))
	for i := range rows {
		byID[rows[i].ID] = &rows[i]
	}
	return byID, nil
}

// agentRow checks that an agent may report on r: ErrNotFound if there is no
// such command, ErrForbidden if it belongs to another node.
func agentRow(r *reportRow, nodeID string) (*Command, error) {
	switch {
	case r == nil:
		return nil, ErrNotFound
	case r.NodeID != nodeID:
		return nil, ErrForbidden
	}
	return &r.Command, nil
}

// reportCols are the leading columns of every report write's unnest: the
// row's ID and version as read, then its new stream ends.
const reportCols = `id, ver, out_len, err_len, out_trunc, err_trunc, out_om, out_om_at, err_om, err_om_at`

const reportArrays = `$1::uuid[], $2::bigint[], $3::bigint[], $4::bigint[], $5::boolean[], $6::boolean[],
	$7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[]`

// lockUnchangedSQL locks, in id order, the rows of u still at the version
// read.
const lockUnchangedSQL = `locked AS MATERIALIZED (
		SELECT c.id FROM commands c JOIN u ON u.id = c.id
		WHERE c.id = ANY($1::uuid[]) AND c.xmin::text::bigint = u.ver
		ORDER BY c.id FOR UPDATE OF c)`

// ofLocked joins an UPDATE of commands c to u and to the rows locked.
const ofLocked = `FROM u WHERE c.id = ANY($1::uuid[]) AND c.id = u.id AND c.id IN (SELECT id FROM locked)`

const reportStreamSet = `stdout_len = u.out_len, stderr_len = u.err_len, stdout_truncated = u.out_trunc, stderr_truncated = u.err_trunc,
	stdout_omitted = u.out_om, stdout_omitted_at = u.out_om_at, stderr_omitted = u.err_om, stderr_omitted_at = u.err_om_at`

// reportWrites gathers the rows of one write statement: per command its row
// as read and its new stream ends (reportCols), and the chunk parts to
// store, their bytes in one buffer (sent raw by the binary protocol, not as
// a bytea[] that lib/pq sends as hex text twice the size).
type reportWrites struct {
	ids                            []string
	vers                           []int64
	outLen, errLen                 []int64
	outTrunc, errTrunc             []bool
	outOm, outOmAt, errOm, errOmAt []int64

	kIDs                  []string
	kStreams, kOffs, kEnd []int64
	data                  []byte
}

// add appends command c as worked out from the row version ver, with its
// parts.
func (w *reportWrites) add(ver int64, c *Command, rows chunkRows) {
	w.ids, w.vers = append(w.ids, c.ID), append(w.vers, ver)
	w.outLen, w.errLen = append(w.outLen, c.StdoutLen), append(w.errLen, c.StderrLen)
	w.outTrunc, w.errTrunc = append(w.outTrunc, c.StdoutTruncated), append(w.errTrunc, c.StderrTruncated)
	w.outOm, w.outOmAt = append(w.outOm, c.StdoutOmitted), append(w.outOmAt, c.StdoutOmittedAt)
	w.errOm, w.errOmAt = append(w.errOm, c.StderrOmitted), append(w.errOmAt, c.StderrOmittedAt)
	from := int64(0)
	for i := range rows.streams {
		w.data = append(w.data, rows.data[from:rows.ends[i]]...)
		from = rows.ends[i]
		w.kIDs = append(w.kIDs, c.ID)
		w.kStreams = append(w.kStreams, rows.streams[i])
		w.kOffs = append(w.kOffs, rows.offs[i])
		w.kEnd = append(w.kEnd, int64(len(w.data)))
	}
}

func (w *reportWrites) args() []any {
	return []any{pq.Array(w.ids), pq.Array(w.vers), pq.Array(w.outLen), pq.Array(w.errLen), pq.Array(w.outTrunc), pq.Array(w.errTrunc),
		pq.Array(w.outOm), pq.Array(w.outOmAt), pq.Array(w.errOm), pq.Array(w.errOmAt)}
}

// chunkArgs are the chunk parts' arrays and bytes; never NULL.
func (w *reportWrites) chunkArgs() []any {
	data := w.data
	if data == nil {
		data = []byte{}
	}
	return []any{pq.Array(nonNil(w.kIDs)), pq.Array(nonNil(w.kStreams)), pq.Array(nonNil(w.kOffs)), pq.Array(nonNil(w.kEnd)), data}
}

// nonNil turns a nil slice into an empty one: pq.Array sends nil as NULL.
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// appendSQL stores chunk parts and new stream ends for every row still as
// read, renews the lease of those marked renew ($13 ms; a finish that found
// a gap keeps what arrived without renewing), and wakes the followers of
// those whose output moved. It returns the rows it wrote.
var appendSQL = `
	WITH u AS (
		SELECT * FROM unnest(` + reportArrays + `, $11::boolean[], $12::boolean[])
		AS u(` + reportCols + `, renew, notify)),
	` + lockUnchangedSQL + `,
	upd AS (
		UPDATE commands c SET ` + reportStreamSet + `,
			lease_expires_at = CASE WHEN u.renew THEN now() + $13 * interval '1 millisecond' ELSE c.lease_expires_at END
		` + ofLocked + `
		RETURNING c.id, c.lease_expires_at, u.notify),
	ins AS (` + fmt.Sprintf(insertChunksSQL, 14, 15, 16, 17, 18) + `)
	SELECT upd.id::text AS id, upd.lease_expires_at FROM upd,
		LATERAL (SELECT CASE WHEN upd.notify THEN pg_notify('` + OutputChannel + `', upd.id::text) END) AS n`

// startSQL marks leased commands running, each if its lease is still the
// caller's and unexpired and its queue deadline has not passed. The status
// they must have comes with the rows (u.was), not as a constant: see the
// top of this file.
const startSQL = `
	WITH u AS (SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::int[], $4::text[]) AS u(id, node, attempt, was)),
	locked AS MATERIALIZED (
		SELECT c.id, u.node, u.attempt FROM commands c JOIN u ON u.id = c.id
		WHERE c.id = ANY($1::uuid[]) AND c.leased_by = u.node AND c.attempt = u.attempt AND c.status = u.was
			AND c.lease_expires_at > now() AND (c.queue_deadline IS NULL OR c.queue_deadline > now())
		ORDER BY c.id FOR UPDATE OF c)
	UPDATE commands c SET status = 'running', started_at = now(),
		lease_expires_at = now() + $5 * interval '1 millisecond',
		run_deadline = now() + c.timeout_seconds * interval '1 second'
	FROM locked WHERE c.id = ANY($1::uuid[]) AND c.id = locked.id
	RETURNING c.id::text AS id, locked.node::text AS node, locked.attempt, c.lease_expires_at`

// StartCall is one start: the lease that asks to run its command.
type StartCall struct {
	ID, NodeID string
	Attempt    int
}

// StartResult is one call's outcome in a batch: the renewed lease's expiry.
type StartResult struct {
	LeaseExpiresAt time.Time
	Err            error
}

// Start marks a leased command running: the agent's permission to execute.
// It is idempotent for the same lease (a retried request whose answer was
// lost gets the same yes) and refuses anything else.
// Concurrent starts are committed together (group.go).
func (s *Store) Start(ctx context.Context, id, nodeID string, attempt int, ttl time.Duration) (time.Time, error) {
	res, err := s.starts.do(ctx, startReq{StartCall{ID: id, NodeID: nodeID, Attempt: attempt}, ttl})
	if err != nil {
		return time.Time{}, err
	}
	return res.LeaseExpiresAt, res.Err
}

// startMany runs starts in one statement; a call it did not start is told
// why from its row: cancelled, already started by this very lease (the
// same yes again), or lost.
func (s *Store) startMany(ctx context.Context, calls []StartCall, ttl time.Duration) ([]StartResult, error) {
	ctx, cancel := s.deadline(ctx)
	defer cancel()
	ids, nodes, attempts, was := make([]string, len(calls)), make([]string, len(calls)), make([]int64, len(calls)), make([]string, len(calls))
	for i, c := range calls {
		ids[i], nodes[i], attempts[i], was[i] = c.ID, c.NodeID, int64(c.Attempt), string(shared.StatusQueued)
	}
	written, err := s.writeReports(ctx, startSQL, []any{pq.Array(ids), pq.Array(nodes), pq.Array(attempts), pq.Array(was), ttl.Milliseconds()})
	if err != nil {
		return nil, fmt.Errorf("start %d commands: %w", len(calls), err)
	}
	started := map[string]time.Time{}
	for _, w := range written {
		started[leaseKey(w.ID, w.Node.String, w.Attempt.Int64)] = w.At.Time
	}
	res := make([]StartResult, len(calls))
	var refused []string
	for i, c := range calls {
		if exp, ok := started[leaseKey(c.ID, c.NodeID, int64(c.Attempt))]; ok {
			res[i].LeaseExpiresAt = exp
		} else {
			refused = append(refused, c.ID)
		}
	}
	if len(refused) == 0 {
		return res, nil
	}
	rows, err := s.readReportRows(ctx, refused)
	if err != nil {
		return nil, fmt.Errorf("start %d commands: %w", len(calls), err)
	}
	for i, call := range calls {
		if _, ok := started[leaseKey(call.ID, call.NodeID, int64(call.Attempt))]; ok {
			continue
		}
		c, err := agentRow(rows[call.ID], call.NodeID)
		switch {
		case err != nil:
			res[i].Err = err
		case c.Status == shared.StatusCancelled:
			res[i].Err = ErrCancelled
		case c.Status == shared.StatusRunning && c.owns(call.NodeID, call.Attempt):
			res[i].LeaseExpiresAt = c.LeaseExpiresAt.Time
		default:
			res[i].Err = ErrLeaseLost
		}
	}
	return res, nil
}

// HeartbeatCall is one heartbeat: the lease it renews and the chunks it
// carries.
type HeartbeatCall struct {
	ID, NodeID string
	Attempt    int
	Chunks     []shared.Chunk
}

// Renewal is what a heartbeat stored and what the agent must know.
type Renewal struct {
	Offsets        shared.Offsets
	LeaseExpiresAt time.Time
	// Received counts the new output bytes the heartbeat brought, per
	// stream (a retry's bytes already stored are not new).
	Received shared.Offsets
	// Cancel is set when an operator asked for the command to be cancelled;
	// CancelGrace is then the time between SIGTERM and SIGKILL.
	Cancel      bool
	CancelGrace int
}

// HeartbeatResult is one call's outcome in a batch.
type HeartbeatResult struct {
	Renewal
	Err error
}

// Heartbeat renews a running command's lease and appends output chunks.
// It returns the stored offsets, and any cancel request.
// Concurrent heartbeats are committed together (group.go).
func (s *Store) Heartbeat(ctx context.Context, id, nodeID string, attempt int, chunks []shared.Chunk, ttl time.Duration, outputCap int64) (Renewal, error) {
	res, err := s.heartbeats.do(ctx, heartbeatReq{HeartbeatCall{ID: id, NodeID: nodeID, Attempt: attempt, Chunks: chunks}, ttl, outputCap})
	if err != nil {
		return Renewal{}, err
	}
	return res.Renewal, res.Err
}

// heartbeatMany runs heartbeats for distinct or repeated commands: each gets
// its own result (a lost lease, a gap) and the error is for the whole batch
// (the database failed: nobody's heartbeat may be taken as written).
func (s *Store) heartbeatMany(ctx context.Context, calls []HeartbeatCall, ttl time.Duration, outputCap int64) ([]HeartbeatResult, error) {
	ctx, cancel := s.deadline(ctx)
	defer cancel()
	res := make([]HeartbeatResult, len(calls))
	err := s.rounds(ctx, len(calls), func(i int) string { return calls[i].ID },
		func(ctx context.Context, todo []int, rows map[string]*reportRow) ([]int, error) {
			var w reportWrites
			var renew, notify []bool
			var sent []int
			for _, i := range todo {
				call, row := calls[i], rows[calls[i].ID]
				c, err := agentRow(row, call.NodeID)
				if err != nil {
					res[i].Err = err
					continue
				}
				if c.Status != shared.StatusRunning || !c.owns(call.NodeID, call.Attempt) {
					res[i].Err = ErrLeaseLost
					continue
				}
				cc := *c
				parts, changed, received, err := appendChunks(&cc, call.Chunks, outputCap)
				if err != nil {
					res[i].Err = err
					continue
				}
				w.add(row.Version, &cc, parts)
				renew, notify = append(renew, true), append(notify, changed)
				res[i].Renewal = Renewal{Offsets: cc.offsets(), Received: received,
					Cancel: c.CancelRequestedAt.Valid, CancelGrace: int(c.CancelGraceSeconds.Int32)}
				sent = append(sent, i)
			}
			if len(sent) == 0 {
				return nil, nil
			}
			args := append(w.args(), pq.Array(renew), pq.Array(notify), ttl.Milliseconds())
			written, err := s.writeReports(ctx, appendSQL, append(args, w.chunkArgs()...))
			if err != nil {
				return nil, err
			}
			var again []int
			for _, i := range sent {
				if w, ok := written[calls[i].ID]; ok {
					res[i].LeaseExpiresAt = w.At.Time
				} else {
					again = append(again, i)
				}
			}
			return again, nil
		})
	if err != nil {
		return nil, fmt.Errorf("heartbeat %d commands: %w", len(calls), err)
	}
	return res, nil
}

// written is what a report write returned for one row.
type written struct {
	ID string `db:"id"`
	// At is the renewed lease's expiry (appendSQL).
	At sql.NullTime `db:"lease_expires_at"`
	// Ran is the time from start to finish in seconds (finalizeSQL).
	Ran sql.NullFloat64 `db:"ran"`
	// Node and Attempt are the lease that wrote it (startSQL): a batch
	// may hold one command twice, asked by different leases.
	Node    sql.NullString `db:"node"`
	Attempt sql.NullInt64  `db:"attempt"`
}

// leaseKey names a lease: a command and who holds it under which attempt.
func leaseKey(id, node string, attempt int64) string {
	return fmt.Sprintf("%s/%s/%d", id, node, attempt)
}

// writeReports runs a report write (a commit point: see commitOne) and
// returns the rows it wrote, by ID.
func (s *Store) writeReports(ctx context.Context, query string, args []any) (map[string]written, error) {
	var out []written
	err := s.commitOne(ctx, func(ctx context.Context, conn *sqlx.Conn) error {
		return conn.SelectContext(ctx, &out, query, args...)
	})
	if err != nil {
		return nil, interpretError(err)
	}
	m := make(map[string]written, len(out))
	for _, r := range out {
		m[r.ID] = r
	}
	return m, nil
}

// rounds drives a batch of reports: each round reads the rows of the calls
// still to do — at most one per command, so a write never meets its own
// command twice — and lets round work them out and write them; round
// returns the calls whose rows changed in between, which go to the next
// round with any repeats held back.
func (s *Store) rounds(ctx context.Context, n int, idOf func(int) string,
	round func(ctx context.Context, todo []int, rows map[string]*reportRow) (again []int, err error)) error {
	waiting := make([]int, n)
	for i := range waiting {
		waiting[i] = i
	}
	for r := 0; len(waiting) > 0; r++ {
		if r == maxReportRounds {
			return errContended
		}
		var todo, held []int
		seen := map[string]bool{}
		for _, i := range waiting {
			if seen[idOf(i)] {
				held = append(held, i)
				continue
			}
			seen[idOf(i)] = true
			todo = append(todo, i)
		}
		ids := make([]string, 0, len(seen))
		for id := range seen {
			ids = append(ids, id)
		}
		rows, err := s.readReportRows(ctx, ids)
		if err != nil {
			return err
		}
		again, err := round(ctx, todo, rows)
		if err != nil {
			return err
		}
		waiting = append(again, held...)
	}
	return nil
}

// FinishCall is one finish: the lease it ends and what the agent reported.
type FinishCall struct {
	ID, NodeID string
	Req        shared.FinishRequest
}

// FinishCallResult is one call's outcome in a batch.
type FinishCallResult struct {
	FinishResult
	Err error
}

// insertChunksSQL stores a report's chunk parts for the rows locked; its
// verbs are the numbers of the parameters holding the parts' command IDs,
// streams, offsets, ends in the bytes, and the bytes (reportWrites).
const insertChunksSQL = `INSERT INTO command_chunks (command_id, stream, off, data)
		SELECT k.id, k.stream, k.off, substring($%[5]d::bytea FROM k.start + 1 FOR k.fin - k.start)
		FROM (SELECT id, stream, off, fin, coalesce(lag(fin) OVER (ORDER BY n), 0) AS start
			FROM unnest($%[1]d::uuid[], $%[2]d::smallint[], $%[3]d::bigint[], $%[4]d::int[]) WITH ORDINALITY AS k(id, stream, off, fin, n)) AS k
		WHERE k.id IN (SELECT id FROM locked)`

// finalizeSQL makes every row still as read terminal: its new stream ends,
// its status and end; it stores the parts this request brought as chunk
// rows, as a heartbeat does, and the execq line as stderr's last chunk (at
// the stream's new stored end: its length less what was dropped past the
// cap); and it wakes GET ?wait= callers. The chunk rows are the record's
// output: nothing is copied (output.go).
var finalizeSQL = `
	WITH u AS (
		SELECT * FROM unnest(` + reportArrays + `,
			$11::text[], $12::int[], $13::boolean[], $14::text[], $15::text[], $16::text[])
		AS u(` + reportCols + `, status, exit, has_exit, note, reason, signal)),
	` + lockUnchangedSQL + `,
	upd AS (
		UPDATE commands c SET ` + reportStreamSet + `,
			status = u.status, exit_code = CASE WHEN u.has_exit THEN u.exit END, finished_at = now(), lease_expires_at = NULL,
			end_reason = u.reason, end_signal = nullif(u.signal, '')
		` + ofLocked + `
		RETURNING c.id, coalesce(extract(epoch FROM c.finished_at - c.started_at), 0)::float8 AS ran),
	ins AS (` + fmt.Sprintf(insertChunksSQL, 17, 18, 19, 20, 21) + `),
	note AS (
		INSERT INTO command_chunks (command_id, stream, off, data)
		SELECT u.id, ` + fmt.Sprint(streamStderr) + `, u.err_len - u.err_om, convert_to(u.note, 'UTF8') FROM u
		WHERE u.note <> '' AND u.id IN (SELECT id FROM locked))
	SELECT upd.id::text AS id, upd.ran FROM upd,
		LATERAL (SELECT pg_notify('` + FinishedChannel + `', upd.id::text)) AS n`

// finalWrites adds finalizeSQL's own columns to reportWrites.
type finalWrites struct {
	reportWrites
	status, note, reason, signal []string
	exit                         []int64
	hasExit                      []bool
}

func (w *finalWrites) add(ver int64, c *Command, rows chunkRows, e ending) {
	w.reportWrites.add(ver, c, rows)
	w.status, w.note = append(w.status, string(e.status)), append(w.note, e.note)
	w.reason, w.signal = append(w.reason, string(e.reason)), append(w.signal, e.signal)
	w.exit, w.hasExit = append(w.exit, int64(e.exit.Int32)), append(w.hasExit, e.exit.Valid)
}

func (w *finalWrites) args() []any {
	return append(append(w.reportWrites.args(), pq.Array(w.status), pq.Array(w.exit), pq.Array(w.hasExit), pq.Array(w.note),
		pq.Array(w.reason), pq.Array(w.signal)), w.chunkArgs()...)
}

// Finish records a command's end: it appends the last chunks, checks every
// captured byte has arrived (a *GapError otherwise, with the chunks of this
// request kept) and sets the terminal status; the chunks stay, as the
// record's output. A repeat by the same lease returns the stored status.
// Concurrent finishes are committed together (group.go).
func (s *Store) Finish(ctx context.Context, id, nodeID string, req shared.FinishRequest, outputCap int64) (FinishResult, error) {
	res, err := s.finishes.do(ctx, finishReq{FinishCall{ID: id, NodeID: nodeID, Req: req}, outputCap})
	if err != nil {
		return FinishResult{}, err
	}
	return res.FinishResult, res.Err
}

// finishMany runs finishes; see heartbeatMany for the results.
func (s *Store) finishMany(ctx context.Context, calls []FinishCall, outputCap int64) ([]FinishCallResult, error) {
	ctx, cancel := s.deadline(ctx)
	defer cancel()
	res := make([]FinishCallResult, len(calls))
	err := s.rounds(ctx, len(calls), func(i int) string { return calls[i].ID },
		func(ctx context.Context, todo []int, rows map[string]*reportRow) ([]int, error) {
			var fw finalWrites
			var gw reportWrites // gaps: keep what arrived
			var fin, gaps []int
			for _, i := range todo {
				call, row := calls[i], rows[calls[i].ID]
				req := call.Req
				c, err := agentRow(row, call.NodeID)
				if err != nil {
					res[i].Err = err
					continue
				}
				if c.Status.Terminal() && c.owns(call.NodeID, req.Attempt) {
					res[i].FinishResult = FinishResult{Status: c.Status, Repeat: true}
					continue
				}
				if c.Status != shared.StatusRunning || !c.owns(call.NodeID, req.Attempt) {
					res[i].Err = ErrLeaseLost
					continue
				}
				cc := *c
				parts, _, received, err := appendChunks(&cc, req.Chunks, outputCap)
				if err != nil {
					res[i].Err = err
					continue
				}
				off := cc.offsets()
				if req.StdoutLength < off.Stdout || req.StderrLength < off.Stderr {
					res[i].Err = ErrLengthMismatch
					continue
				}
				if req.StdoutLength > off.Stdout || req.StderrLength > off.Stderr {
					// Keep what arrived; the agent resends the rest and
					// finishes again.
					gw.add(row.Version, &cc, parts)
					res[i].Received = received
					res[i].Err = &GapError{Offsets: off}
					gaps = append(gaps, i)
					continue
				}
				e, err := finishEnding(ctx, s.db, &cc, req)
				if err != nil {
					res[i].Err = err
					continue
				}
				fw.add(row.Version, &cc, parts, e)
				res[i].Status, res[i].Reason, res[i].Received = e.status, e.reason, received
				fin = append(fin, i)
			}
			var again []int
			if len(gaps) > 0 {
				n := len(gaps)
				args := append(gw.args(), pq.Array(make([]bool, n)), pq.Array(make([]bool, n)), int64(0))
				written, err := s.writeReports(ctx, appendSQL, append(args, gw.chunkArgs()...))
				if err != nil {
					return nil, err
				}
				for _, i := range gaps {
					if _, ok := written[calls[i].ID]; !ok {
						res[i].Err, res[i].Received = nil, shared.Offsets{}
						again = append(again, i)
					}
				}
			}
			if len(fin) > 0 {
				done, err := s.writeReports(ctx, finalizeSQL, fw.args())
				if err != nil {
					return nil, err
				}
				for _, i := range fin {
					w, ok := done[calls[i].ID]
					if !ok {
						res[i].Status, res[i].Reason, res[i].Received = "", "", shared.Offsets{}
						again = append(again, i)
						continue
					}
					res[i].Ran = time.Duration(w.Ran.Float64 * float64(time.Second))
				}
			}
			return again, nil
		})
	if err != nil {
		return nil, fmt.Errorf("finish %d commands: %w", len(calls), err)
	}
	for _, r := range res {
		if r.Err == nil && !r.Repeat && r.Status != "" {
			s.countEnded(r.Status, r.Reason, 1)
		}
	}
	return res, nil
}

// The calls the report groups take: a store call's arguments. The lease TTL
// and output cap come from the coordinator's configuration, the same for
// every call, but a batch holds to each call's own.
type (
	startReq struct {
		StartCall
		ttl time.Duration
	}
	heartbeatReq struct {
		HeartbeatCall
		ttl       time.Duration
		outputCap int64
	}
	finishReq struct {
		FinishCall
		outputCap int64
	}
)

func (s *Store) initGroups(opt Options) {
	max, slots := opt.ReportBatch, opt.ReportSlots
	if max <= 0 {
		max = DefaultReportBatch
	}
	if slots <= 0 {
		slots = DefaultReportSlots
	}
	// A batch carries at most one request's worth of output, so a batch
	// costs the database what the largest single request may.
	const maxBytes = shared.MaxRequestOutputBytes
	s.initClaims(max, slots)
	s.initEnqueues(max, slots)
	s.starts = newGroup(max, maxBytes, slots, func(startReq) int { return 0 },
		func(ctx context.Context, calls []startReq) ([]StartResult, error) {
			return byKey(calls, func(c startReq) time.Duration { return c.ttl },
				func(ttl time.Duration, sub []startReq) ([]StartResult, error) {
					cs := make([]StartCall, len(sub))
					for i, c := range sub {
						cs[i] = c.StartCall
					}
					return s.startMany(ctx, cs, ttl)
				})
		})
	s.heartbeats = newGroup(max, maxBytes, slots, func(c heartbeatReq) int { return chunkBytes(c.Chunks) },
		func(ctx context.Context, calls []heartbeatReq) ([]HeartbeatResult, error) {
			type key struct {
				ttl time.Duration
				cap int64
			}
			return byKey(calls, func(c heartbeatReq) key { return key{c.ttl, c.outputCap} },
				func(k key, sub []heartbeatReq) ([]HeartbeatResult, error) {
					cs := make([]HeartbeatCall, len(sub))
					for i, c := range sub {
						cs[i] = c.HeartbeatCall
					}
					return s.heartbeatMany(ctx, cs, k.ttl, k.cap)
				})
		})
	s.finishes = newGroup(max, maxBytes, slots, func(c finishReq) int { return chunkBytes(c.Req.Chunks) },
		func(ctx context.Context, calls []finishReq) ([]FinishCallResult, error) {
			return byKey(calls, func(c finishReq) int64 { return c.outputCap },
				func(outputCap int64, sub []finishReq) ([]FinishCallResult, error) {
					cs := make([]FinishCall, len(sub))
					for i, c := range sub {
						cs[i] = c.FinishCall
					}
					return s.finishMany(ctx, cs, outputCap)
				})
		})
}

// chunkBytes is the output a request carries.
func chunkBytes(chunks []shared.Chunk) int {
	n := 0
	for _, c := range chunks {
		n += len(c.Data)
	}
	return n
}

// byKey runs calls in one run per distinct key (in practice one) and puts
// the results back in the calls' order.
func byKey[C any, K comparable, R any](calls []C, keyOf func(C) K, run func(K, []C) ([]R, error)) ([]R, error) {
	var order []K
	idx := map[K][]int{}
	for i, c := range calls {
		k := keyOf(c)
		if _, ok := idx[k]; !ok {
			order = append(order, k)
		}
		idx[k] = append(idx[k], i)
	}
	res := make([]R, len(calls))
	for _, k := range order {
		sub := make([]C, len(idx[k]))
		for j, i := range idx[k] {
			sub[j] = calls[i]
		}
		r, err := run(k, sub)
		if err != nil {
			return nil, err
		}
		for j, i := range idx[k] {
			res[i] = r[j]
		}
	}
	return res, nil
}
