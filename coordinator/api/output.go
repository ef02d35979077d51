package api

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/execq/execq/coordinator/lease"
	"github.com/execq/execq/coordinator/store"
	"github.com/execq/execq/shared"
)

const (
	// outputPieceBytes is how much of a stream one read takes from the
	// database and holds in memory: a 64 MiB stream and a slow client cost
	// this much per request, not the stream's size.
	outputPieceBytes = 128 << 10
	// statusHeader carries the command's status: a header on a plain read,
	// a trailer at the end of a follow (the final status, known only then).
	statusHeader = "X-Execq-Status"
	// omittedHeader and omittedAtHeader say how many bytes were dropped
	// from the middle of the stream past the output cap, and where in the
	// bytes sent (headers or trailers, like the status; absent when none).
	omittedHeader   = "X-Execq-Omitted"
	omittedAtHeader = "X-Execq-Omitted-At"
)

// setOmitted sets the omission headers (or trailers) if bytes were dropped.
func setOmitted(h http.Header, p store.OutputPiece) {
	if p.Omitted > 0 {
		h.Set(omittedHeader, strconv.FormatInt(p.Omitted, 10))
		h.Set(omittedAtHeader, strconv.FormatInt(p.OmittedAt, 10))
	}
}

// outputParams are the query parameters of GET …/output.
type outputParams struct {
	stream int
	offset int64
	follow bool
}

func parseOutputParams(r *http.Request) (outputParams, error) {
	q := r.URL.Query()
	var p outputParams
	name := q.Get("stream")
	if name == "" {
		name = shared.StreamStdout
	}
	if p.stream = store.StreamNumber(name); p.stream == 0 {
		return p, badRequest("invalid_stream", `stream must be "stdout" or "stderr"`)
	}
	if v := q.Get("offset"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return p, badRequest("invalid_field", fmt.Sprintf("offset %q must be a byte offset: a whole number, 0 or more", v))
		}
		p.offset = n
	}
	if v := q.Get("follow"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return p, badRequest("invalid_field", fmt.Sprintf(`follow %q must be "true" or "false"`, v))
		}
		p.follow = b
	}
	return p, nil
}

// getOutput returns a stream's exact bytes from ?offset= (the record's JSON
// strings can only show valid UTF-8). Without ?follow it sends the bytes
// stored now; with ?follow=true it keeps sending them as they arrive until
// the command is terminal and every byte was sent. Either way the stream is
// read in bounded pieces.
func (s *Server) getOutput(w http.ResponseWriter, r *http.Request) error {
	p, err := parseOutputParams(r)
	if err != nil {
		return err
	}
	id, err := pathUUID(r, "id")
	if err != nil {
		return err
	}
	var wake, finished <-chan struct{}
	if p.follow {
		// Subscribe before the first read, so output stored or a finish
		// between the read and the wait still wakes it.
		ch, cancel := s.poller.Notifier.Subscribe(lease.Key(store.OutputChannel, id))
		defer cancel()
		fin, cancelFin := s.poller.Notifier.Subscribe(lease.Key(store.FinishedChannel, id))
		defer cancelFin()
		wake, finished = ch, fin
	}
	piece, err := s.store.ReadOutput(r.Context(), id, p.stream, p.offset, outputPieceBytes)
	if err == nil && !mayRead(userFrom(r), piece.RequestedBy) {
		err = store.ErrNotFound
	}
	if err != nil {
		return err
	}
	if piece.Status.Terminal() && p.offset > piece.End {
		return badRequest("invalid_field", fmt.Sprintf("offset %d is past the end of the stream (%d bytes)", p.offset, piece.End))
	}
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("X-Content-Type-Options", "nosniff")
	if !p.follow {
		return s.sendStored(w, r, id, p, piece)
	}
	h.Set("Cache-Control", "no-store")
	h.Set("Trailer", statusHeader+", "+omittedHeader+", "+omittedAtHeader)
	w.WriteHeader(http.StatusOK)
	return s.follow(w, r, id, p, piece, wake, finished)
}

// sendStored sends the bytes from p.offset to the stored end seen by the
// first read, piece by piece. Bytes below a stored end never change, so
// later pieces join the first exactly even if the command finished between
// them (its chunks are then read from the record).
func (s *Server) sendStored(w http.ResponseWriter, r *http.Request, id string, p outputParams, piece store.OutputPiece) error {
	end := max(piece.End, p.offset)
	w.Header().Set(statusHeader, string(piece.Status))
	setOmitted(w.Header(), piece)
	w.Header().Set("Content-Length", strconv.FormatInt(end-p.offset, 10))
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	off := p.offset
	for {
		data := piece.Data[:min(int64(len(piece.Data)), end-off)]
		if err := s.writePiece(rc, w, data); err != nil {
			return s.abandon(r, id, err)
		}
		off += int64(len(data))
		if off >= end {
			return nil
		}
		var err error
		if piece, err = s.store.ReadOutput(r.Context(), id, p.stream, off, int(min(end-off, outputPieceBytes))); err != nil {
			return s.abandon(r, id, err)
		}
		if len(piece.Data) == 0 {
			// Gone (deleted) under us: stop short; the client sees fewer
			// bytes than Content-Length promised.
			return s.abandon(r, id, errors.New("stored output shrank while being read"))
		}
	}
}

// follow sends bytes as they are stored until the command is terminal and
// every byte was sent, then sets the final status as a trailer. Between
// pieces it parks on notifications (output stored, command finished, from
// any replica) or the slow safety tick, holding no database connection.
// An answer without the trailer is incomplete (the replica is stopping, the
// database failed, the client is too slow): the client reconnects with the
// offset it reached and loses and repeats nothing.
func (s *Server) follow(w http.ResponseWriter, r *http.Request, id string, p outputParams, piece store.OutputPiece, wake, finished <-chan struct{}) error {
	rc := http.NewResponseController(w)
	// Headers go out now: the client knows the follow is on even if the
	// first byte takes minutes.
	if err := s.writePiece(rc, w, nil); err != nil {
		return s.abandon(r, id, err)
	}
	safety := time.NewTicker(s.poller.SafetyInterval)
	defer safety.Stop()
	off := p.offset
	for {
		if err := s.writePiece(rc, w, piece.Data); err != nil {
			return s.abandon(r, id, err)
		}
		off += int64(len(piece.Data))
		if piece.Status.Terminal() && off >= piece.End {
			w.Header().Set(statusHeader, string(piece.Status))
			setOmitted(w.Header(), piece)
			// The trailer is written after the handler returns; give that
			// write its own deadline.
			s.holdFor(w, 0)
			return nil
		}
		if off >= piece.End {
			// Over HTTP/2 a passed write deadline resets the stream even
			// while nothing is written: extend it over the park, which a
			// safety tick ends at the latest.
			s.holdFor(w, s.poller.SafetyInterval)
			select {
			case <-wake:
			case <-finished:
			case <-safety.C:
			case <-s.poller.Draining:
				return nil // no trailer: the client reconnects elsewhere
			case <-r.Context().Done():
				return nil
			}
		}
		var err error
		if piece, err = s.store.ReadOutput(r.Context(), id, p.stream, off, outputPieceBytes); err != nil {
			return s.abandon(r, id, err)
		}
	}
}

// writePiece writes data (possibly none) under a fresh write deadline (the
// server's write timeout, as for every answer; a follower that stops reading
// is cut off after it, while parks between writes are extended on their own)
// and flushes it to the client at once.
func (s *Server) writePiece(rc *http.ResponseController, w http.ResponseWriter, data []byte) error {
	s.holdFor(w, 0)
	if len(data) > 0 {
		if _, err := w.Write(data); err != nil {
			return err
		}
	}
	return rc.Flush()
}

// abandon ends an answer whose status line is already sent: an error
// envelope cannot follow the bytes, so the answer stops short (no trailer,
// or fewer bytes than Content-Length) and the client retries from the
// offset it reached.
func (s *Server) abandon(r *http.Request, id string, err error) error {
	if r.Context().Err() == nil {
		s.log.Warn("output answer cut short", "command_id", id, "err", err)
	}
	return nil
}
