package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/execq/execq/shared"
)

// NotifyChannel is the PostgreSQL NOTIFY channel an enqueue signals on; the
// payload is the node ID whose agents should re-scan the queue.
const NotifyChannel = "execq_commands"

// FinishedChannel is notified with a command ID when it becomes terminal, to
// wake GET …?wait= callers on every replica.
const FinishedChannel = "execq_finished"

// Command is a row of the job table without its assembled output.
type Command struct {
	ID              string         `db:"id"`
	ContainerID     string         `db:"container_id"`
	NodeID          string         `db:"node_id"`
	RequestedBy     string         `db:"requested_by"`
	Program         string         `db:"program"`
	Args            pq.StringArray `db:"args"`
	Status          shared.Status  `db:"status"`
	CreatedAt       time.Time      `db:"created_at"`
	Attempt         int            `db:"attempt"`
	LeasedBy        sql.NullString `db:"leased_by"`
	LeaseExpiresAt  sql.NullTime   `db:"lease_expires_at"`
	StartedAt       sql.NullTime   `db:"started_at"`
	FinishedAt      sql.NullTime   `db:"finished_at"`
	ExitCode        sql.NullInt32  `db:"exit_code"`
	StdoutLen       int64          `db:"stdout_len"`
	StderrLen       int64          `db:"stderr_len"`
	StdoutTruncated bool           `db:"stdout_truncated"`
	StderrTruncated bool           `db:"stderr_truncated"`
	// StdoutOmitted / StderrOmitted count the bytes dropped from the
	// middle of a stream past the output cap; *OmittedAt is where, as a
	// position in the stored bytes (the length of the head kept).
	StdoutOmitted   int64 `db:"stdout_omitted"`
	StdoutOmittedAt int64 `db:"stdout_omitted_at"`
	StderrOmitted   int64 `db:"stderr_omitted"`
	StderrOmittedAt int64 `db:"stderr_omitted_at"`
	// Control holds the timeouts, end reason and cancel request (control.go).
	Control
	// QueuedSeconds is set by Claim only: the time from enqueue to this
	// lease, both read on the database's clock, so replicas whose clocks
	// differ from the database's report the same figure.
	QueuedSeconds float64 `db:"queued_seconds"`
}

// CommandWithOutput adds the assembled output, present once terminal.
type CommandWithOutput struct {
	Command
	Stdout []byte `db:"stdout"`
	Stderr []byte `db:"stderr"`
}

const commandCols = `id, container_id, node_id, requested_by, program, args, status, created_at, attempt,
	leased_by, lease_expires_at, started_at, finished_at, exit_code,
	stdout_len, stderr_len, stdout_truncated, stderr_truncated,
	stdout_omitted, stdout_omitted_at, stderr_omitted, stderr_omitted_at, ` + controlCols

// GapError says a chunk started past the stored end of its stream. Offsets
// are what is stored, so the agent resends from there.
type GapError struct {
	Offsets shared.Offsets
}

func (e *GapError) Error() string {
	return fmt.Sprintf("output gap: stored stdout=%d stderr=%d", e.Offsets.Stdout, e.Offsets.Stderr)
}

// enqueueSQL inserts a queued command for a known container the user $3
// may use (mayUse: an admin, or a grant selecting it) and notifies its node. $8 and $9 are the run and queue timeouts. $6 and $7 are the
// idempotency key and request hash, NULL for a
// plain submit: such a row is outside the partial unique index, so ON
// CONFLICT never applies to it. With a key, a row already holding it makes
// the insert do nothing (after waiting for the transaction that wrote it, if
// that is still open) and return no row.
var enqueueSQL = enqueueQuery("")

// enqueueUnflushedSQL is enqueueSQL whose commit does not wait for its WAL
// to be flushed (see EnqueueUnflushed).
var enqueueUnflushedSQL = enqueueQuery(` AND (SELECT set_config('synchronous_commit', 'off', true)) = 'off'`)

func enqueueQuery(target string) string {
	return `
	WITH target AS (SELECT node_id FROM containers c WHERE id = $2 AND ` + mayUse("c", "$3") + target + `),
	ins AS (
		INSERT INTO commands (id, container_id, node_id, requested_by, program, args, status, idempotency_key, idempotency_hash,
			timeout_seconds, queue_timeout_seconds, queue_deadline)
		SELECT $1, $2, target.node_id, $3, $4, $5, 'queued', $6, $7,
			$8::int, $9::int, now() + $9::int * interval '1 second' FROM target
		ON CONFLICT (requested_by, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
		RETURNING ` + commandCols + `, stdout, stderr)
	SELECT ins.* FROM ins, LATERAL (SELECT pg_notify('` + NotifyChannel + `', ins.node_id::text)) AS n`
}

// enqueueArgs are enqueueSQL's parameters; key "" is a plain submit.
func enqueueArgs(containerID, requestedBy string, req shared.SubmitRequest, key string, hash []byte) []any {
	var k, h any // NULL, not an empty string or bytea
	if key != "" {
		k, h = key, hash
	}
	args := req.Args
	if args == nil {
		args = []string{} // the column holds [], never NULL
	}
	return []any{uuid.NewString(), containerID, requestedBy, req.Program, pq.StringArray(args), k, h,
		optSeconds(req.TimeoutSeconds), optSeconds(req.QueueTimeoutSeconds)}
}

// Enqueue inserts a queued command for a known container and notifies the
// container's node, in one statement: the notification is delivered when it
// commits, so a woken poller always finds the row. ErrNotFound means the
// container was never reported (or is gone), or requestedBy may not use it
// (not an admin, and no grant selects it): the two are one answer, so a
// caller learns nothing about containers they may not use.
func (s *Store) Enqueue(ctx context.Context, containerID, requestedBy string, req shared.SubmitRequest) (CommandWithOutput, error) {
	// The wait in the group is bounded as the wait for admission is: a
	// submit not taken into a batch by then fails with ErrTimeout, having
	// done nothing.
	ctx, cancel := context.WithTimeout(ctx, s.queryTimeout)
	defer cancel()
	r, err := s.enqueues.do(ctx, enqueueReq{containerID: containerID, requestedBy: requestedBy, req: req})
	if err == nil {
		err = r.err
	}
	if err != nil && !errors.Is(err, ErrNotFound) {
		err = fmt.Errorf("enqueue on container %s: %w", containerID, interpretError(err))
	}
	return r.cmd, err
}

// EnqueueUnflushed is Enqueue whose commit does not wait for the disk: the
// row is visible and its node notified at once, but a crash of PostgreSQL
// in the next few milliseconds (wal_writer_delay at most) may lose it. It
// is for a submit that waits for its command (POST …?wait=), whose answer
// comes later: a later synchronous commit flushes all WAL written before
// it, this one's included — the start's, before the program runs, and the
// finish's, before the record is terminal — so only an answer given while
// the command is still queued needs FlushCommand first.
func (s *Store) EnqueueUnflushed(ctx context.Context, containerID, requestedBy string, req shared.SubmitRequest) (CommandWithOutput, error) {
	c, err := s.enqueueOne(ctx, enqueueUnflushedSQL, containerID, requestedBy, req)
	if err != nil && !errors.Is(err, ErrNotFound) {
		err = fmt.Errorf("enqueue on container %s: %w", containerID, err)
	}
	return c, err
}

// flushSQL makes the command's enqueue durable, if it is still there. A
// commit waits for the WAL to be flushed up to it — past every commit
// before it — only if its transaction has an ID and wrote WAL of its own; a
// transactional logical message (a few bytes, ignored by anything but a
// logical decoding client) does both without touching a row, so no claim
// finds the command locked meanwhile. A row a crash already lost is not
// found, and nothing is written for it. Its commit waits for the flush
// whatever the server's synchronous_commit says (set_config for this
// statement's own transaction): returning before it would break the
// promise of the answer that follows.
const flushSQL = `SELECT pg_logical_emit_message(true, 'execq.flush', '')::text FROM commands
	WHERE id = $1 AND (SELECT set_config('synchronous_commit', 'on', true)) = 'on'`

// FlushCommand returns once command id's row is on disk: ErrNotFound when
// it is not there (an EnqueueUnflushed that a crash lost).
func (s *Store) FlushCommand(ctx context.Context, id string) error {
	ctx, cancel := s.deadline(ctx)
	defer cancel()
	var lsn string
	err := s.commitOne(ctx, func(ctx context.Context, conn *sqlx.Conn) error {
		return conn.GetContext(ctx, &lsn, flushSQL, id)
	})
	if errors.Is(err, sql.ErrNoRows) {
		return ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("flush command %s: %w", id, interpretError(err))
	}
	return nil
}

// enqueueOne runs query (enqueueSQL or enqueueUnflushedSQL) for one plain
// submit: ErrNotFound when the container is unknown or not the user's,
// other errors interpreted.
func (s *Store) enqueueOne(ctx context.Context, query, containerID, requestedBy string, req shared.SubmitRequest) (CommandWithOutput, error) {
	ctx, cancel := s.deadline(ctx)
	defer cancel()
	var c CommandWithOutput
	err := s.commitOne(ctx, func(ctx context.Context, conn *sqlx.Conn) error {
		return conn.GetContext(ctx, &c, query, enqueueArgs(containerID, requestedBy, req, "", nil)...)
	})
	if errors.Is(err, sql.ErrNoRows) {
		return c, ErrNotFound
	}
	return c, interpretError(err)
}

// Get returns a command with its whole output once terminal, in one value:
// for tests and small records. The API reads a record with GetHead and
// ReadOutput, in slices.
func (s *Store) Get(ctx context.Context, id string) (CommandWithOutput, error) {
	ctx, cancel := s.deadline(ctx)
	defer cancel()
	var c CommandWithOutput
	err := s.db.GetContext(ctx, &c, `SELECT `+commandCols+`, `+wholeOutputCols+` FROM commands c WHERE id = $1`, id)
	if errors.Is(err, sql.ErrNoRows) {
		return c, ErrNotFound
	}
	return c, interpretError(err)
}

// CommandHead is a command with the sizes of its stored output, read
// without the output itself: a record with large output is sent from it in
// slices (ReadOutput), so a read costs O(slice), not O(output).
type CommandHead struct {
	Command
	StdoutSize int64 `db:"stdout_size"`
	StderrSize int64 `db:"stderr_size"`
}

var getHeadSQL = `SELECT ` + commandCols + `, ` + stdoutEndSQL + ` AS stdout_size, ` + stderrEndSQL + ` AS stderr_size
	FROM commands c WHERE id = $1`

// GetHead returns a command and the sizes of its stored streams: the end
// of each stream's last chunk row, one probe of the chunks' primary key
// each (storedEndSQL). octet_length reads a size from a TOAST pointer's
// header, so no output is fetched nor decompressed.
func (s *Store) GetHead(ctx context.Context, id string) (CommandHead, error) {
	ctx, cancel := s.deadline(ctx)
	defer cancel()
	var c CommandHead
	err := s.db.GetContext(ctx, &c, getHeadSQL, id)
	if errors.Is(err, sql.ErrNoRows) {
		return c, ErrNotFound
	}
	return c, interpretError(err)
}

// Stream numbers as stored in command_chunks.
const (
	streamStdout = 1
	streamStderr = 2
)

// StreamNumber maps a wire stream name to its stored number (0 if unknown).
func StreamNumber(name string) int {
	switch name {
	case shared.StreamStdout:
		return streamStdout
	case shared.StreamStderr:
		return streamStderr
	}
	return 0
}

// claimSQL leases queued commands for a batch of polls: for each node of
// $1, up to the matching $2 of its queued commands, for $3 milliseconds, in
// one statement and one commit (the claim group, claim.go). Each node's
// subquery seeks its node's queued rows in commands_live_node_idx (in
// submit order) and the update goes by primary key. A node appears at most once in
// $1 (claimMany sums the polls of one node), since a subquery does not skip
// rows its own statement locked and two of one node would pick the same.
//
// Its commit does not wait for its WAL to be flushed (synchronous_commit
// off, set for this statement's own transaction by set_config): a lease is
// not a promise anyone relies on before the start, and the start commits
// synchronously, which flushes all WAL written before it, the claim's
// included. So a claim a crash loses was never started: the start that
// follows recovery finds the row as it was before the claim and is refused
// (lease_lost). The command may then be claimed again under the same attempt
// — attempts are counted in the row the crash rolled back — and the agent
// that still holds the lost lease would be told yes to its start too; that
// is why an agent runs one session per command and drops a lease for a
// command it already runs (agent/worker). It takes a disk flush off every
// command's path (docs/protocol.md, "What one command costs").
const claimSQL = `
	UPDATE commands c SET attempt = c.attempt + 1, leased_by = c.node_id,
		lease_expires_at = now() + $3 * interval '1 millisecond'
	WHERE c.id IN (
		SELECT q.id FROM unnest($1::uuid[], $2::int[]) AS r(node_id, n),
		LATERAL (SELECT id FROM commands
			WHERE node_id = r.node_id AND status = 'queued' AND (leased_by IS NULL OR lease_expires_at < now())
			ORDER BY created_at LIMIT r.n
			FOR UPDATE SKIP LOCKED) q)
		AND (SELECT set_config('synchronous_commit', 'off', true)) = 'off'
	RETURNING ` + commandCols + `, greatest(extract(epoch FROM now() - c.created_at), 0)::float8 AS queued_seconds`

// Claim leases up to max queued commands of a node in submit order. Polls
// woken together (a burst of notifications, the safety check) are claimed
// together: one UPDATE over a FOR UPDATE SKIP LOCKED subquery per node, one
// commit, each poll getting its own node's commands (claim.go). Concurrent
// claims on any replica never take the same row. A command whose earlier
// lease expired before start is claimable again.
func (s *Store) Claim(ctx context.Context, nodeID string, max int, ttl time.Duration) ([]Command, error) {
	cs, err := s.claims.do(ctx, claimReq{node: nodeID, max: max, ttl: ttl})
	if err != nil {
		return nil, fmt.Errorf("claim for node %s: %w", nodeID, err)
	}
	return cs, nil
}

// nodesWithWorkSQL names the nodes that have a claimable command: what a
// replica's safety check runs once per interval instead of a claim per
// parked poll. It reads commands_live_node_idx (live rows only, however many
// finished rows the table holds); the lease condition is the claim's own.
const nodesWithWorkSQL = `
	SELECT DISTINCT node_id::text FROM commands
	WHERE status = 'queued' AND (leased_by IS NULL OR lease_expires_at < now())`

// NodesWithWork returns the nodes that have at least one queued command a
// claim would take now. A read-only statement: it changes nothing.
func (s *Store) NodesWithWork(ctx context.Context) ([]string, error) {
	ctx, cancel := s.deadline(ctx)
	defer cancel()
	nodes := []string{}
	if err := s.db.SelectContext(ctx, &nodes, nodesWithWorkSQL); err != nil {
		return nil, fmt.Errorf("list nodes with queued work: %w", interpretError(err))
	}
	return nodes, nil
}

// owns reports whether the row is still held by this node under this lease.
func (c *Command) owns(nodeID string, attempt int) bool {
	return c.LeasedBy.Valid && c.LeasedBy.String == nodeID && c.Attempt == attempt
}

// lookupForNode reads a command on behalf of an agent: ErrNotFound if it does
// not exist, ErrForbidden if it belongs to another node.
func (s *Store) lookupForNode(ctx context.Context, q sqlx.QueryerContext, id, nodeID string, lock bool) (Command, error) {
	var c Command
	query := `SELECT ` + commandCols + ` FROM commands WHERE id = $1`
	if lock {
		query += ` FOR UPDATE`
	}
	err := sqlx.GetContext(ctx, q, &c, query, id)
	if errors.Is(err, sql.ErrNoRows) {
		return c, ErrNotFound
	}
	if err != nil {
		return c, interpretError(err)
	}
	if c.NodeID != nodeID {
		return c, ErrForbidden
	}
	return c, nil
}

// streamState is what appendChunks tracks of one stream, pointing into a
// Command.
type streamState struct {
	end       *int64 // the next offset expected, in the whole stream
	truncated *bool
	omitted   *int64 // bytes dropped; stored = end - omitted
	omittedAt *int64 // where in the stored bytes they were dropped
}

func (c *Command) stream(n int) streamState {
	if n == streamStderr {
		return streamState{&c.StderrLen, &c.StderrTruncated, &c.StderrOmitted, &c.StderrOmittedAt}
	}
	return streamState{&c.StdoutLen, &c.StdoutTruncated, &c.StdoutOmitted, &c.StdoutOmittedAt}
}

// drop records n bytes left out of the stored ones at the current stored
// end: the first drop places the record's marker there, later ones only add
// to its count.
func (st streamState) drop(n int64) {
	if n <= 0 {
		return
	}
	if *st.omitted == 0 {
		*st.omittedAt = *st.end - *st.omitted
	}
	*st.omitted += n
	*st.truncated = true
}

// appendChunks stores the new part of each chunk and advances c's stream
// ends, reporting whether any moved and how many new bytes of each stream
// arrived (stored or, past the cap, counted; a retry's bytes are not new);
// the caller writes the ends to the row along with whatever else it updates. Offsets are positions in the whole stream.
// A chunk wholly below the stored end is a retry and is ignored; one
// overlapping it is trimmed; one starting past it is a gap, which refuses the
// whole request so nothing of it is half-applied — unless it is
// marked Skip and nothing was dropped from the stream yet: then the bytes in
// between are the middle the agent left out past the cap, and are counted.
// At most outputCap bytes of a stream are stored (chunk rows at positions in
// the stored bytes); anything past that is counted, not stored.
//
// It only computes: the parts kept (rows) go to the database in the
// caller's one write (report.go), however many chunks the request holds, so
// a request of many tiny chunks costs one statement, not one per chunk.
func appendChunks(c *Command, chunks []shared.Chunk, outputCap int64) (rows chunkRows, changed bool, received shared.Offsets, err error) {
	// A gap rolls back the whole request, so the offsets to resend from are
	// those stored before it, not those its earlier chunks reached.
	before := c.offsets()
	for _, ch := range chunks {
		stream := StreamNumber(ch.Stream)
		if stream == 0 {
			return rows, false, received, fmt.Errorf("unknown stream %q", ch.Stream)
		}
		st := c.stream(stream)
		if ch.Offset > *st.end {
			if !ch.Skip || *st.omitted > 0 {
				return chunkRows{}, false, received, &GapError{Offsets: before}
			}
			st.drop(ch.Offset - *st.end)
			*st.end = ch.Offset
			changed = true
		}
		end := ch.Offset + int64(len(ch.Data))
		if end <= *st.end {
			continue
		}
		data := ch.Data[*st.end-ch.Offset:]
		if stream == streamStderr {
			received.Stderr += int64(len(data))
		} else {
			received.Stdout += int64(len(data))
		}
		stored := *st.end - *st.omitted
		keep := data[:min(max(outputCap-stored, 0), int64(len(data)))]
		if len(keep) > 0 {
			rows.add(stream, stored, keep)
		}
		*st.end += int64(len(keep))
		st.drop(int64(len(data) - len(keep)))
		*st.end = end
		changed = true
	}
	return rows, changed, received, nil
}

// chunkRows are the parts of a request's chunks to insert: their streams,
// offsets in the stored bytes, and bytes (one buffer cut at ends), as the
// arrays the report statements take.
type chunkRows struct {
	streams []int64
	offs    []int64
	ends    []int64 // the end of each part in data
	data    []byte
}

func (r *chunkRows) add(stream int, off int64, data []byte) {
	if r.data == nil {
		// The usual request holds one chunk: send its bytes as they are.
		// Clipped, so a second part is appended to a copy, never over the
		// bytes that follow in the decoded request.
		r.data = slices.Clip(data)
	} else {
		r.data = append(r.data, data...)
	}
	r.streams = append(r.streams, int64(stream))
	r.offs = append(r.offs, off)
	r.ends = append(r.ends, int64(len(r.data)))
}

// offsets are the stored ends of the command's streams.
func (c *Command) offsets() shared.Offsets {
	return shared.Offsets{Stdout: c.StdoutLen, Stderr: c.StderrLen}
}

// ErrLengthMismatch: the agent declared less output than was already stored.
var ErrLengthMismatch = errors.New("declared output length is below what was already received")

// FinishResult is what Finish stored.
type FinishResult struct {
	Status shared.Status
	// Ran is the time from start to finish.
	Ran time.Duration
	// Repeat says the command had already been finished by this lease.
	Repeat bool
	// Reason is the end reason stored (not set on a repeat).
	Reason shared.EndReason
	// Received counts the new output bytes the request brought, per
	// stream; they are kept when the answer is a *GapError too.
	Received shared.Offsets
}

// finalize makes a command terminal as e says (see ending), adding e's
// execq line to stderr as its last chunk row. Its output stays in its
// chunk rows, which are its record's storage (output.go).
func finalize(ctx context.Context, tx *sqlx.Tx, id string, e ending) (time.Duration, error) {
	// One statement (it sits on every command's completion path): end the
	// command, store the line at stderr's stored end (its length less what
	// was dropped past the cap: appendChunks keeps the two in step), and
	// notify GET ?wait= callers, which is delivered at commit so a woken
	// waiter reads the terminal row.
	var ran float64
	err := tx.GetContext(ctx, &ran, `
		WITH upd AS (
			UPDATE commands SET status = $2, exit_code = $3, finished_at = now(), lease_expires_at = NULL,
				end_reason = $6, end_signal = nullif($7, ''),
				leased_by = CASE WHEN $5 THEN NULL ELSE leased_by END
			WHERE id = $1
			RETURNING id, stderr_len - stderr_omitted AS note_off,
				coalesce(extract(epoch FROM finished_at - started_at), 0)::float8 AS ran),
		note AS (
			INSERT INTO command_chunks (command_id, stream, off, data)
			SELECT upd.id, `+fmt.Sprint(streamStderr)+`, upd.note_off, convert_to($4, 'UTF8') FROM upd WHERE $4 <> '')
		SELECT upd.ran FROM upd, LATERAL (SELECT pg_notify('`+FinishedChannel+`', $1::text)) AS n`,
		id, e.status, e.exit, e.note, e.clearLease, e.reason, e.signal)
	if err != nil {
		return 0, interpretError(err)
	}
	return time.Duration(ran * float64(time.Second)), nil
}
