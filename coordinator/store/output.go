package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/execq/execq/shared"
)

// OutputChannel is notified with a command ID when a heartbeat stored new
// output for it, to wake followers of its output on every replica. The
// payload never carries the bytes: NOTIFY payloads are small and every
// replica receives every notification.
const OutputChannel = "execq_output"

// OutputPiece is a bounded piece of one stream's stored bytes, read in one
// statement together with what the API needs to authorise, label and end a
// follow.
type OutputPiece struct {
	RequestedBy string        `db:"requested_by"`
	Status      shared.Status `db:"status"`
	// End is the stream's stored length when read: the bytes a reader can
	// have now. Bytes below it never change, so pieces read at different
	// times join up exactly.
	End  int64  `db:"stored_end"`
	Data []byte `db:"data"`
	// Omitted bytes were dropped from the middle of the stream past the
	// output cap, at position OmittedAt of the stored bytes.
	Omitted   int64 `db:"omitted"`
	OmittedAt int64 `db:"omitted_at"`
}

// A stream's stored bytes are its chunk rows (command_chunks), live or
// terminal: a command's output is written once, as it arrives, and never
// copied. Commands finished before that (migration 0011) hold theirs folded
// into the record's column (commands.stdout/stderr) and no chunk rows; a
// command finished since holds an empty column. So a non-empty column is
// the stream, and otherwise the chunks are: each reader takes one or the
// other, exactly. %[1]s is the column, %[2]d the stream's number, c the
// commands row.

// storedEndSQL is the stored length of a stream: the end of its last chunk,
// found backwards on the primary key.
const storedEndSQL = `CASE WHEN octet_length(c.%[1]s) > 0 THEN octet_length(c.%[1]s)::bigint
		ELSE coalesce((SELECT k.off + octet_length(k.data) FROM command_chunks k
			WHERE k.command_id = c.id AND k.stream = %[2]d ORDER BY k.off DESC LIMIT 1), 0) END`

// wholeOutputSQL is a terminal stream's stored bytes in one value, empty
// while the command is live (the record's output is empty then). It is for
// the records that are small by nature (a cancel's answer) and for tests:
// the API sends a record from its head, in slices (GetHead, ReadOutput).
const wholeOutputSQL = `CASE WHEN c.status NOT IN ('succeeded','failed','cancelled') THEN ''::bytea
		WHEN octet_length(c.%[1]s) > 0 THEN c.%[1]s
		ELSE coalesce((SELECT string_agg(k.data, ''::bytea ORDER BY k.off) FROM command_chunks k
			WHERE k.command_id = c.id AND k.stream = %[2]d), ''::bytea) END`

var (
	stdoutEndSQL    = fmt.Sprintf(storedEndSQL, "stdout", streamStdout)
	stderrEndSQL    = fmt.Sprintf(storedEndSQL, "stderr", streamStderr)
	wholeOutputCols = fmt.Sprintf(wholeOutputSQL, "stdout", streamStdout) + ` AS stdout, ` +
		fmt.Sprintf(wholeOutputSQL, "stderr", streamStderr) + ` AS stderr`
)

// readOutputSQL reads up to $4 bytes of stream $2 of command $1 from byte
// $3. Only the chunk rows overlapping [$3, $3+$4) are read (the one holding
// $3 is found backwards on the primary key) and cut to the range, so a
// piece costs O(piece + one chunk) whatever the stream's size; a folded
// record's column is cut the same way. Bytes below the stored end never
// change, and a command's status and its last chunks change in one
// transaction, so one statement sees a terminal status with every byte.
const readOutputSQL = `
	SELECT c.requested_by, c.status, c.%[1]s_omitted AS omitted, c.%[1]s_omitted_at AS omitted_at,
		` + storedEndSQL + ` AS stored_end,
		CASE WHEN octet_length(c.%[1]s) > 0 THEN
			substring(c.%[1]s FROM (least($3::bigint, octet_length(c.%[1]s)) + 1)::int FOR $4::int)
		ELSE
			coalesce((SELECT string_agg(substring(k.data
					FROM (greatest($3::bigint - k.off, 0) + 1)::int
					FOR ($3::bigint + $4::int - greatest(k.off, $3::bigint))::int), ''::bytea ORDER BY k.off)
				FROM command_chunks k
				WHERE k.command_id = c.id AND k.stream = $2
					AND k.off >= coalesce((SELECT max(m.off) FROM command_chunks m
						WHERE m.command_id = c.id AND m.stream = $2 AND m.off <= $3::bigint), 0)
					AND k.off < $3::bigint + $4::int
					AND k.off + length(k.data) > $3::bigint), ''::bytea) END AS data
	FROM commands c WHERE c.id = $1`

var (
	readStdoutSQL = fmt.Sprintf(readOutputSQL, "stdout", streamStdout)
	readStderrSQL = fmt.Sprintf(readOutputSQL, "stderr", streamStderr)
)

// ReadOutput returns up to max bytes of one stream from byte offset from,
// with the stream's stored end and the command's status read in the same
// snapshot. Reading a stream piece by piece keeps the coordinator's memory
// bounded whatever its size; a from past the end gives no bytes.
func (s *Store) ReadOutput(ctx context.Context, id string, stream int, from int64, max int) (OutputPiece, error) {
	ctx, cancel := s.deadline(ctx)
	defer cancel()
	query := readStdoutSQL
	if stream == streamStderr {
		query = readStderrSQL
	}
	var p OutputPiece
	err := s.db.GetContext(ctx, &p, query, id, stream, from, max)
	if errors.Is(err, sql.ErrNoRows) {
		return p, ErrNotFound
	}
	return p, interpretError(err)
}
