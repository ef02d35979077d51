package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"unicode/utf8"

	"golang.org/x/sync/semaphore"

	"github.com/execq/execq/coordinator/store"
	"github.com/execq/execq/shared"
)

// A record's output can be 64 MiB per stream, and its JSON six times that
// (a NUL byte is \u0000). Building the body in memory let one read cost
// gigabytes and let slow readers pin it, so a record is written as a stream:
// its fixed fields as encoding/json renders them, then each stream read
// from PostgreSQL in slices and encoded piece by piece. Memory per read is
// O(slice), whatever the output.
const (
	// outputSliceBytes is how much of a stream one query reads; a read
	// briefly holds about four times that (the driver's hex text, the
	// decoded bytes and database/sql's copy). A slice reads only the chunk
	// rows it overlaps (store.ReadOutput), each decompressed from its
	// start: at most one request's output. A record folded into one value
	// per stream before migration 0011 is decompressed from the stream's
	// start up to the slice's end, so slices are not made smaller: 64 MiB
	// of NULs folded is 128 queries, about 3 s of one database core.
	outputSliceBytes = 512 << 10
	// encodePieceBytes is how much of a slice is encoded and written at
	// once: the JSON of a piece is at most six times its size.
	encodePieceBytes = 32 << 10
	// largeRecordBytes is the output size past which a record read counts
	// against the large-read limit.
	largeRecordBytes = 1 << 20
)

// largeReads bounds the records with large output being sent at once, and
// the reads waiting for their turn: each holds a slice buffer and a database
// connection per slice, and a slow reader holds its turn until the write
// deadline cuts it off.
type largeReads struct {
	sem      *semaphore.Weighted
	waiting  atomic.Int64
	maxQueue int64
}

func newLargeReads(max, queue int) *largeReads {
	return &largeReads{sem: semaphore.NewWeighted(int64(max)), maxQueue: int64(queue)}
}

var errBusy = &Error{http.StatusServiceUnavailable, "busy", "too many records with large output are being sent; retry later"}

// acquire takes a turn, waiting while the queue has room; release with
// l.sem.Release(1).
func (l *largeReads) acquire(ctx context.Context) error {
	if l.sem.TryAcquire(1) {
		return nil
	}
	if l.waiting.Add(1) > l.maxQueue {
		l.waiting.Add(-1)
		return errBusy
	}
	defer l.waiting.Add(-1)
	return l.sem.Acquire(ctx, 1)
}

// errResponseStarted wraps a failure after a record's first bytes were
// sent: no error answer can follow, so wrap aborts the response instead
// (the client sees a cut connection, never a valid-looking short record).
type errResponseStarted struct{ err error }

func (e *errResponseStarted) Error() string { return "response cut short: " + e.err.Error() }
func (e *errResponseStarted) Unwrap() error { return e.err }

// writeRecord answers with the record of c. A queued or running command has
// no output in its record; a terminal one's output is streamed.
func (s *Server) writeRecord(w http.ResponseWriter, r *http.Request, status int, c store.CommandHead) error {
	rec := record(store.CommandWithOutput{Command: c.Command})
	if !c.Status.Terminal() || c.StdoutSize+c.StderrSize == 0 {
		return writeJSON(w, status, rec)
	}
	if c.StdoutSize+c.StderrSize > largeRecordBytes {
		if err := s.largeReads.acquire(r.Context()); err != nil {
			if errors.Is(err, errBusy) {
				w.Header().Set("Retry-After", "1")
			}
			return err
		}
		defer s.largeReads.sem.Release(1)
	}
	doc, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	// The record with both streams empty, split around them. Outside a
	// string every quote is bare and inside one it is escaped, so the first
	// `"stdout":""` is the field itself.
	const outs = `"stdout":"","stderr":""`
	i := bytes.Index(doc, []byte(outs))
	if i < 0 {
		return fmt.Errorf("record JSON has no %s", outs)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	parts := []func() error{
		func() error { return writeAll(w, doc[:i], []byte(`"stdout":"`)) },
		func() error {
			return s.streamOutput(w, r, c.ID, store.StreamNumber("stdout"), c.StdoutSize, c.StdoutOmitted, c.StdoutOmittedAt)
		},
		func() error { return writeAll(w, []byte(`","stderr":"`)) },
		func() error {
			return s.streamOutput(w, r, c.ID, store.StreamNumber("stderr"), c.StderrSize, c.StderrOmitted, c.StderrOmittedAt)
		},
		func() error { return writeAll(w, []byte(`"`), doc[i+len(outs):], []byte("\n")) },
	}
	for _, p := range parts {
		if err := p(); err != nil {
			return &errResponseStarted{err}
		}
	}
	return nil
}

func writeAll(w io.Writer, bs ...[]byte) error {
	for _, b := range bs {
		if _, err := w.Write(b); err != nil {
			return err
		}
	}
	return nil
}

// streamOutput writes the size stored bytes of a stream as the inside of a
// JSON string, as recordOutput shows them: where omitted bytes were dropped
// past the cap (at stored position at), the marker line, each side made
// valid UTF-8 on its own.
func (s *Server) streamOutput(w io.Writer, r *http.Request, id string, stream int, size, omitted, at int64) error {
	if omitted == 0 || at < 0 || at > size {
		return s.streamRange(w, r, id, stream, 0, size)
	}
	if err := s.streamRange(w, r, id, stream, 0, at); err != nil {
		return err
	}
	marker, err := json.Marshal(shared.OmittedMarker(omitted))
	if err != nil {
		return err
	}
	if _, err := w.Write(marker[1 : len(marker)-1]); err != nil {
		return err
	}
	return s.streamRange(w, r, id, stream, at, size)
}

// streamRange writes stored bytes [from, to) of a stream as the inside of
// a JSON string, read in slices and encoded in pieces.
func (s *Server) streamRange(w io.Writer, r *http.Request, id string, stream int, from, to int64) error {
	enc := newJSONStringWriter(w)
	for off := from; off < to; {
		n := int(min(outputSliceBytes, to-off))
		piece, err := s.store.ReadOutput(r.Context(), id, stream, off, n)
		if err != nil {
			return fmt.Errorf("read output of %s at %d: %w", id, off, err)
		}
		data := piece.Data
		if len(data) != n {
			// Only a terminal record is streamed, whose bytes never change:
			// the row was deleted under us.
			return fmt.Errorf("read output of %s at %d: got %d bytes, want %d", id, off, len(data), n)
		}
		for len(data) > 0 {
			k := min(encodePieceBytes, len(data))
			if _, err := enc.Write(data[:k]); err != nil {
				return err
			}
			data = data[k:]
		}
		off += int64(n)
	}
	return enc.Close()
}

// jsonStringWriter writes bytes fed in pieces as the inside of a JSON
// string, exactly as encoding/json encodes strings.ToValidUTF8(all, "\uFFFD")
// of all the bytes at once: a run of invalid bytes becomes one U+FFFD, also
// across pieces, and a rune split between pieces is kept whole.
type jsonStringWriter struct {
	w io.Writer
	// carry is an incomplete rune at the end of the last piece (≤ 3 bytes),
	// prepended to the next.
	carry []byte
	// invalid says the bytes so far end in a run of invalid bytes, already
	// replaced.
	invalid bool
	valid   []byte
	out     bytes.Buffer
	enc     *json.Encoder
}

func newJSONStringWriter(w io.Writer) *jsonStringWriter {
	e := &jsonStringWriter{w: w}
	e.enc = json.NewEncoder(&e.out)
	return e
}

// Write encodes p, holding back an incomplete rune at its end.
func (e *jsonStringWriter) Write(p []byte) (int, error) {
	return len(p), e.encode(p, false)
}

// Close encodes what is held back: the stream ended.
func (e *jsonStringWriter) Close() error { return e.encode(nil, true) }

func (e *jsonStringWriter) encode(p []byte, final bool) error {
	data := p
	if len(e.carry) > 0 {
		data = append(e.carry, p...)
		e.carry = nil
	}
	end := len(data)
	if !final {
		// An incomplete rune can only start in the last three bytes, at
		// the last rune start; utf8.FullRune is false only for a prefix
		// that more bytes could complete.
		for i := len(data) - 1; i >= 0 && i >= len(data)-3; i-- {
			if utf8.RuneStart(data[i]) {
				if !utf8.FullRune(data[i:]) {
					end = i
				}
				break
			}
		}
		e.carry = append([]byte(nil), data[end:]...)
	}
	// strings.ToValidUTF8's loop, with its state kept between pieces.
	v := e.valid[:0]
	for i := 0; i < end; {
		c := data[i]
		if c < utf8.RuneSelf {
			v = append(v, c)
			e.invalid = false
			i++
			continue
		}
		_, wid := utf8.DecodeRune(data[i:end])
		if wid == 1 {
			if !e.invalid {
				v = append(v, "\uFFFD"...)
				e.invalid = true
			}
			i++
			continue
		}
		v = append(v, data[i:i+wid]...)
		e.invalid = false
		i += wid
	}
	e.valid = v
	if len(v) == 0 {
		return nil
	}
	e.out.Reset()
	if err := e.enc.Encode(string(v)); err != nil {
		return err
	}
	js := e.out.Bytes() // "…"\n
	_, err := e.w.Write(js[1 : len(js)-2])
	return err
}
