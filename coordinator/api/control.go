package api

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/execq/execq/coordinator/lease"
	"github.com/execq/execq/coordinator/store"
	"github.com/execq/execq/shared"
)

// Limits are the coordinator's timeout and grace settings.
type Limits struct {
	// DefaultTimeout applies when a submit gives no timeout_seconds;
	// MaxTimeout caps it.
	DefaultTimeout, MaxTimeout time.Duration
	// DefaultQueueTimeout applies when a submit gives no
	// queue_timeout_seconds; MaxQueueTimeout caps it.
	DefaultQueueTimeout, MaxQueueTimeout time.Duration
	// DefaultGrace (SIGTERM to SIGKILL) applies to timeouts and to a
	// cancel without grace_seconds; MaxGrace caps grace_seconds.
	DefaultGrace, MaxGrace time.Duration
}

// seconds resolves an optional field against a default and a range.
func seconds(v shared.Seconds, field string, def, lo, hi time.Duration) (int, error) {
	if !v.Set {
		return int(def / time.Second), nil
	}
	if v.Value < int(lo/time.Second) || v.Value > int(hi/time.Second) {
		return 0, badRequest("invalid_field", fmt.Sprintf("%s must be between %d and %d", field, int(lo/time.Second), int(hi/time.Second)))
	}
	return v.Value, nil
}

// applyLimits fills a submit's timeouts with the defaults and checks them.
func (s *Server) applyLimits(req *shared.SubmitRequest) error {
	l := s.cfg.Limits
	t, err := seconds(req.TimeoutSeconds, "timeout_seconds", l.DefaultTimeout, time.Second, l.MaxTimeout)
	if err != nil {
		return err
	}
	q, err := seconds(req.QueueTimeoutSeconds, "queue_timeout_seconds", l.DefaultQueueTimeout, time.Second, l.MaxQueueTimeout)
	if err != nil {
		return err
	}
	req.TimeoutSeconds, req.QueueTimeoutSeconds = shared.Secs(t), shared.Secs(q)
	return nil
}

// controlLease tells the agent the limits of a leased command.
func (s *Server) controlLease(lc *shared.LeasedCommand, c store.Command) {
	if c.TimeoutSeconds.Valid {
		lc.TimeoutSeconds = int(c.TimeoutSeconds.Int32)
	}
	lc.GraceSeconds = int(s.cfg.Limits.DefaultGrace / time.Second)
}

// validEnd checks the control fields of a finish.
func validEnd(req shared.FinishRequest) error {
	switch req.EndReason {
	case "", shared.EndCancelled, shared.EndTimedOut, shared.EndAgentLost:
	default:
		return badRequest("invalid_field", `end_reason must be "cancelled", "timed_out" or "agent_lost" when set`)
	}
	switch req.Signal {
	case "", "SIGTERM", "SIGKILL":
	default:
		return badRequest("invalid_field", `signal must be "SIGTERM" or "SIGKILL" when set`)
	}
	return nil
}

// controlFields renders the record's control fields.
func controlFields(c store.Command) shared.ControlFields {
	var f shared.ControlFields
	if c.TimeoutSeconds.Valid {
		v := int(c.TimeoutSeconds.Int32)
		f.TimeoutSeconds = &v
	}
	if c.QueueTimeoutSeconds.Valid {
		v := int(c.QueueTimeoutSeconds.Int32)
		f.QueueTimeoutSeconds = &v
	}
	if c.EndReason.Valid {
		v := shared.EndReason(c.EndReason.String)
		f.EndReason = &v
	}
	if c.EndSignal.Valid {
		v := c.EndSignal.String
		f.Signal = &v
	}
	if c.CancelRequestedAt.Valid {
		t := c.CancelRequestedAt.Time.UTC()
		f.CancelRequestedAt = &t
	}
	if c.CancelRequestedBy.Valid {
		v := c.CancelRequestedBy.String
		f.CancelRequestedBy = &v
	}
	return f
}

// cancelBody is the cancel request as decoded: shared.Seconds refuses null.
type cancelBody = shared.CancelRequest

// alreadyFinished is the 409 body of a cancel of a terminal command.
type alreadyFinished struct {
	Error  shared.ErrorDetail `json:"error"`
	Status shared.Status      `json:"status"`
}

// cancel cancels a command: a queued one at once (200), a running one by
// telling its agent (202; with ?wait= as on GET, 200 once terminal). A
// terminal one is 409 already_finished with its status. Another user's
// command is 404, like an unknown one.
func (s *Server) cancel(w http.ResponseWriter, r *http.Request) error {
	wait, err := waitParam(r, s.cfg.MaxWait)
	if err != nil {
		return err
	}
	id, err := pathUUID(r, "id")
	if err != nil {
		return err
	}
	// The body is optional: read it, and decode it only if it holds
	// something.
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxSmallBody))
	if err != nil {
		return jsonError(err, maxSmallBody)
	}
	var req cancelBody
	if len(bytes.TrimSpace(raw)) > 0 {
		r.Body = io.NopCloser(bytes.NewReader(raw))
		if err := decodeJSON(w, r, maxSmallBody, &req); err != nil {
			return err
		}
	}
	l := s.cfg.Limits
	grace, err := seconds(req.GraceSeconds, "grace_seconds", l.DefaultGrace, 0, l.MaxGrace)
	if err != nil {
		return err
	}
	c, outcome, err := s.store.Cancel(r.Context(), id, userFrom(r), grace)
	if err != nil {
		return err
	}
	if outcome != store.AlreadyFinished {
		s.reqLog(r).Info("command cancel requested", "container_id", c.ContainerID, "status", c.Status, "grace_seconds", grace)
	}
	switch outcome {
	case store.AlreadyFinished:
		return writeJSON(w, http.StatusConflict, alreadyFinished{
			Error:  shared.ErrorDetail{Code: "already_finished", Message: "the command already ended with status " + string(c.Status)},
			Status: c.Status,
		})
	case store.CancelledQueued:
		return writeJSON(w, http.StatusOK, record(c))
	}
	head := store.CommandHead{Command: c.Command}
	if wait > 0 {
		done, err := s.awaitTerminal(w, r, id, wait, func() (store.CommandHead, error) { return s.store.GetHead(r.Context(), id) })
		if err == nil {
			head = done
		} else if r.Context().Err() != nil {
			return r.Context().Err()
		}
	}
	status := http.StatusAccepted
	if head.Status.Terminal() {
		status = http.StatusOK
	}
	return s.writeRecord(w, r, status, head)
}

// maxControlBody fits MaxControlKnown UUIDs with their quotes and commas.
const maxControlBody = shared.MaxControlKnown*40 + 1024

// control is the agent's control long-poll: it answers with the cancel
// orders for the node's running commands that the agent does not list as
// known, parking until there is one. Parked, it holds no database
// connection: a cancel on any replica notifies ControlChannel with the node
// ID, and a slow safety re-read covers a lost notification.
func (s *Server) control(w http.ResponseWriter, r *http.Request) error {
	var req shared.ControlRequest
	if err := decodeJSON(w, r, maxControlBody, &req); err != nil {
		return err
	}
	if err := shared.ValidateWaitMillis(req.WaitMillis); err != nil {
		return err
	}
	if len(req.Known) > shared.MaxControlKnown {
		return badRequest("invalid_field", fmt.Sprintf("known: at most %d command IDs", shared.MaxControlKnown))
	}
	known := make(map[string]bool, len(req.Known))
	for _, id := range req.Known {
		known[id] = true
	}
	node := nodeFrom(r).ID
	wake, unsubscribe := s.poller.Notifier.Subscribe(lease.Key(store.ControlChannel, node))
	defer unsubscribe()
	wait := min(time.Duration(req.WaitMillis)*time.Millisecond, s.cfg.MaxWait)
	s.holdFor(w, wait)
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	safety := time.NewTicker(s.poller.SafetyInterval)
	defer safety.Stop()
	for {
		orders, err := s.store.PendingCancels(r.Context(), node)
		if err != nil {
			return err
		}
		resp := shared.ControlResponse{Cancels: []shared.CancelOrder{}}
		for _, o := range orders {
			if !known[o.CommandID] {
				resp.Cancels = append(resp.Cancels, o)
			}
		}
		if len(resp.Cancels) > 0 {
			return writeJSON(w, http.StatusOK, resp)
		}
		select {
		case <-wake:
			continue
		case <-safety.C:
			continue
		case <-deadline.C:
		case <-s.poller.Draining:
		case <-r.Context().Done():
			return r.Context().Err()
		}
		return writeJSON(w, http.StatusOK, resp)
	}
}
