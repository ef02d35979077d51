package api

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/execq/execq/coordinator/lease"
	"github.com/execq/execq/coordinator/store"
	"github.com/execq/execq/shared"
)

// submit enqueues a command. requested_by is the authenticated caller, never
// the body. It answers 202 with the record while the command is queued or
// running; with ?wait= the record may already be terminal, and then the
// answer is 200: nothing is left pending.
//
// A 2xx promises the command is on disk. A plain submit that waits
// enqueues without waiting for the disk (store.EnqueueUnflushed): its
// answer comes after a later synchronous commit that covers the enqueue —
// the start's, if the record says running, or the finish's, if terminal —
// so the flush of the enqueue is off the command's path. Only an answer
// given while the command is still queued (the wait ran out, the replica
// drains, a read failed) flushes it first, and a command a crash lost in
// between is an error (503), not a 202.
func (s *Server) submit(w http.ResponseWriter, r *http.Request) error {
	containerID, err := pathUUID(r, "id")
	if err != nil {
		return err
	}
	wait, err := waitParam(r, s.cfg.MaxWait)
	if err != nil {
		return err
	}
	key, err := idempotencyKey(r)
	if err != nil {
		return err
	}
	var req shared.SubmitRequest
	if err := decodeJSON(w, r, shared.MaxSubmitBodyBytes, &req); err != nil {
		return err
	}
	if err := req.Validate(); err != nil {
		return err
	}
	if err := s.applyLimits(&req); err != nil {
		return err
	}
	unflushed := wait > 0 && key == ""
	c, replay, err := s.enqueue(r.Context(), containerID, userFrom(r).ID, req, key, unflushed)
	if errors.Is(err, store.ErrNotFound) {
		return errUnknownContainer(containerID)
	}
	if err != nil {
		return err
	}
	if !replay {
		// The program, not its arguments: they may hold secrets.
		s.reqLog(r).Info("command queued", "command_id", c.ID, "program", c.Program)
	}
	// The record is answered from its head: a replay of a finished command
	// may have large output, which writeRecord streams.
	head := store.CommandHead{Command: c.Command}
	if c.Status.Terminal() {
		if head, err = s.store.GetHead(r.Context(), c.ID); err != nil {
			return err
		}
	}
	if wait > 0 {
		// Submit and wait in one call. The command is queued whatever
		// happens now, so a failed wait still answers with the queued
		// record: an error here would invite a second submit.
		done, err := s.awaitTerminal(w, r, c.ID, wait, func() (store.CommandHead, error) {
			return s.store.GetHead(r.Context(), c.ID)
		})
		if err == nil {
			head = done
		} else if r.Context().Err() != nil {
			return r.Context().Err()
		}
		if unflushed && head.Status == shared.StatusQueued {
			err := s.store.FlushCommand(r.Context(), c.ID)
			if errors.Is(err, store.ErrNotFound) {
				// Gone: a database crash lost it before it reached the
				// disk. Nothing will run; the client may submit again.
				err = fmt.Errorf("command %s lost by a database restart before it was on disk: %w", c.ID, store.ErrUnavailable)
			}
			if err != nil {
				return err
			}
		}
	}
	w.Header().Set("Location", "/api/v1/commands/"+c.ID)
	// 200 for a terminal record (submit-and-wait that finished) and for an
	// Idempotency-Key replay (the key's original command, not a new one).
	status := http.StatusAccepted
	if replay || head.Status.Terminal() {
		status = http.StatusOK
	}
	return s.writeRecord(w, r, status, head)
}

// visibleCommand loads a command the caller may read. Another user's command
// is reported as not found, so its existence does not leak.
func (s *Server) visibleCommand(r *http.Request, id string) (store.CommandHead, error) {
	c, err := s.store.GetHead(r.Context(), id)
	if err == nil && !mayRead(userFrom(r), c.RequestedBy) {
		err = store.ErrNotFound
	}
	return c, err
}

// mayRead says whether user may see a command requested by requestedBy.
func mayRead(user store.User, requestedBy string) bool {
	return user.IsAdmin || user.ID == requestedBy
}

// getCommand returns the record. With ?wait=DURATION (e.g. 30s, capped by the
// long-poll maximum) it answers as soon as the command is terminal, or with
// its current state when the wait ends. Waiting holds no database connection:
// a completion notification (from any replica) or a safety re-read wakes it.
func (s *Server) getCommand(w http.ResponseWriter, r *http.Request) error {
	wait, err := waitParam(r, s.cfg.MaxWait)
	if err != nil {
		return err
	}
	id, err := pathUUID(r, "id")
	if err != nil {
		return err
	}
	c, err := s.awaitTerminal(w, r, id, wait, func() (store.CommandHead, error) { return s.visibleCommand(r, id) })
	if err != nil {
		return err
	}
	return s.writeRecord(w, r, http.StatusOK, c)
}

// awaitTerminal reads a command with read until it is terminal or wait has
// passed, and returns the last read. Waiting holds no database connection:
// it subscribes to completion notifications (from any replica) before its
// first read, so a finish in between is not missed, and re-reads on a
// notification or the slow safety tick. The write deadline of w is extended
// over the wait.
func (s *Server) awaitTerminal(w http.ResponseWriter, r *http.Request, id string, wait time.Duration, read func() (store.CommandHead, error)) (store.CommandHead, error) {
	var wake <-chan struct{}
	if wait > 0 {
		s.holdFor(w, wait)
		ch, cancel := s.poller.Notifier.Subscribe(lease.Key(store.FinishedChannel, id))
		defer cancel()
		wake = ch
	}
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	safety := time.NewTicker(s.poller.SafetyInterval)
	defer safety.Stop()
	for {
		c, err := read()
		if err != nil || wait == 0 || c.Status.Terminal() {
			return c, err
		}
		select {
		case <-wake:
		case <-safety.C:
		case <-deadline.C:
			wait = 0 // one last read: answer with the current state
		case <-s.poller.Draining:
			wait = 0
		case <-r.Context().Done():
			return c, r.Context().Err()
		}
	}
}

// waitParam parses ?wait= as a Go duration ("30s") or whole seconds ("30").
func waitParam(r *http.Request, max time.Duration) (time.Duration, error) {
	v := r.URL.Query().Get("wait")
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		secs, serr := strconv.Atoi(v)
		if serr != nil {
			return 0, badRequest("invalid_wait", `wait must be a duration such as "30s" or a number of seconds`)
		}
		d = time.Duration(secs) * time.Second
	}
	if d < 0 {
		return 0, badRequest("invalid_wait", "wait must not be negative")
	}
	return min(d, max), nil
}

// listContainers lists the containers the caller may use (authz.go).
func (s *Server) listContainers(w http.ResponseWriter, r *http.Request) error {
	cs, err := s.store.VisibleContainers(r.Context(), userFrom(r).ID)
	if err != nil {
		return err
	}
	list := shared.ContainerList{Containers: make([]shared.ContainerInfo, len(cs))}
	for i, c := range cs {
		list.Containers[i] = shared.ContainerInfo{ID: c.ID, NodeID: c.NodeID, Name: c.Name, State: c.State,
			LastSeen: c.LastSeen.UTC(), Labels: c.Labels}
	}
	return writeJSON(w, http.StatusOK, list)
}

// recordOutput shows stored output in the record: valid UTF-8 (invalid
// bytes become U+FFFD), with one marker line where bytes past the cap were
// dropped. Each side is made valid on its own, so a character cut by the
// drop cannot swallow the marker.
func recordOutput(b []byte, omitted, at int64) string {
	if omitted == 0 || at < 0 || at > int64(len(b)) {
		return strings.ToValidUTF8(string(b), "\uFFFD")
	}
	return strings.ToValidUTF8(string(b[:at]), "\uFFFD") + shared.OmittedMarker(omitted) +
		strings.ToValidUTF8(string(b[at:]), "\uFFFD")
}

// record renders the public CommandExecutionRecord. Output is empty until the
// command is terminal (the contract), and invalid UTF-8 is replaced so the
// JSON is always valid; /output has the exact bytes.
func record(c store.CommandWithOutput) shared.CommandExecutionRecord {
	rec := shared.CommandExecutionRecord{
		ID:              c.ID,
		ContainerID:     c.ContainerID,
		RequestedBy:     c.RequestedBy,
		Program:         c.Program,
		Args:            []string(c.Args),
		Status:          c.Status,
		CreatedAt:       c.CreatedAt.UTC(),
		StdoutTruncated: c.StdoutTruncated,
		StderrTruncated: c.StderrTruncated,
		StdoutBytes:     c.StdoutLen,
		StderrBytes:     c.StderrLen,
		ControlFields:   controlFields(c.Command),
	}
	if rec.Args == nil {
		rec.Args = []string{}
	}
	if c.Status.Terminal() {
		rec.Stdout = recordOutput(c.Stdout, c.StdoutOmitted, c.StdoutOmittedAt)
		rec.Stderr = recordOutput(c.Stderr, c.StderrOmitted, c.StderrOmittedAt)
	}
	if c.ExitCode.Valid {
		code := int(c.ExitCode.Int32)
		rec.ExitCode = &code
	}
	if c.StartedAt.Valid {
		t := c.StartedAt.Time.UTC()
		rec.StartedAt = &t
	}
	if c.FinishedAt.Valid {
		t := c.FinishedAt.Time.UTC()
		rec.FinishedAt = &t
	}
	return rec
}
