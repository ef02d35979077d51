package api

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/execq/execq/coordinator/lease"
	"github.com/execq/execq/coordinator/store"
	"github.com/execq/execq/shared"
)

// Limits on agent requests.
const (
	maxInventoryBody = 4 << 20
	maxInventory     = 10000
	maxLeaseBatch    = 100
	maxSmallBody     = 4 << 10
	// MaxChunkBody bounds a heartbeat or finish body: shared.MaxRequestOutputBytes
	// in base64 (4/3 of it) with ample room for the envelope.
	MaxChunkBody = shared.MaxRequestOutputBytes*4/3 + 1<<20
)

func (s *Server) putInventory(w http.ResponseWriter, r *http.Request) error {
	var req shared.InventoryRequest
	if err := decodeJSON(w, r, maxInventoryBody, &req); err != nil {
		return err
	}
	if len(req.Containers) > maxInventory {
		return badRequest("invalid_field", fmt.Sprintf("containers: at most %d per node", maxInventory))
	}
	cs := make([]store.Container, len(req.Containers))
	seen := map[string]bool{}
	for i, c := range req.Containers {
		id, err := uuid.Parse(c.ID)
		if err != nil || len(c.ID) != 36 {
			return badRequest("invalid_field", fmt.Sprintf("containers[%d].id %q is not a UUID", i, c.ID))
		}
		if seen[id.String()] {
			return badRequest("invalid_field", fmt.Sprintf("containers[%d].id %s is listed twice", i, id))
		}
		seen[id.String()] = true
		if len(c.Name) > 256 || len(c.State) > 64 || strings.ContainsRune(c.Name+c.State, 0) {
			return badRequest("invalid_field", fmt.Sprintf("containers[%d]: name (≤256 bytes) or state (≤64 bytes) invalid", i))
		}
		if err := shared.ValidateReportedLabels(fmt.Sprintf("containers[%d].labels", i), c.Labels); err != nil {
			return err
		}
		cs[i] = store.Container{ID: id.String(), Name: c.Name, State: c.State, Labels: c.Labels}
	}
	rejected, err := s.store.ReplaceInventory(r.Context(), nodeFrom(r).ID, cs)
	if err != nil {
		return err
	}
	if len(rejected) > 0 {
		s.log.Warn("containers already reported by another node were not recorded for this one",
			"node_id", nodeFrom(r).ID, "container_ids", rejected)
	}
	return writeJSON(w, http.StatusOK, shared.InventoryResponse{Accepted: len(cs) - len(rejected), Rejected: rejected})
}

// lease is the long-poll. It holds no database connection while parked.
func (s *Server) lease(w http.ResponseWriter, r *http.Request) error {
	var req shared.LeaseRequest
	if err := decodeJSON(w, r, maxSmallBody, &req); err != nil {
		return err
	}
	if req.Max < 1 || req.Max > maxLeaseBatch {
		return badRequest("invalid_field", fmt.Sprintf("max must be between 1 and %d", maxLeaseBatch))
	}
	if err := shared.ValidateWaitMillis(req.WaitMillis); err != nil {
		return err
	}
	wait := min(time.Duration(req.WaitMillis)*time.Millisecond, s.cfg.MaxWait)
	node := nodeFrom(r).ID
	s.holdFor(w, wait)
	var detach func() (lease.Detached, bool)
	if s.detachable(r) {
		detach = func() (lease.Detached, bool) { return s.detachLease(w, node) }
	}
	cmds, parked, err := s.poller.PollOrPark(r.Context(), node, req.Max, wait, detach)
	if parked {
		return nil // answered off this handler (detach.go)
	}
	if err != nil {
		return err
	}
	if len(cmds) > 0 && r.Context().Err() != nil {
		// The agent left while its claim committed: nobody will start
		// these, so they go back to the queue now, not after their TTL.
		s.releaseUndelivered(r.Context(), node, cmds)
		return r.Context().Err()
	}
	// Written and flushed here, so a connection that broke is known now.
	err = writeJSON(w, http.StatusOK, s.leaseResponse(node, cmds))
	if err == nil {
		err = http.NewResponseController(w).Flush()
	}
	if err != nil && len(cmds) > 0 {
		s.releaseUndelivered(r.Context(), node, cmds)
	}
	return nil // the answer is sent, or cannot be
}

// leaseResponse is a poll's answer carrying cmds.
func (s *Server) leaseResponse(node string, cmds []store.Command) shared.LeaseResponse {
	resp := shared.LeaseResponse{
		Commands:        make([]shared.LeasedCommand, len(cmds)),
		LeaseTTLMillis:  int(s.cfg.LeaseTTL.Milliseconds()),
		HeartbeatMillis: int(s.cfg.Heartbeat.Milliseconds()),
		OutputCapBytes:  s.cfg.OutputCap,
		OutputTailBytes: s.cfg.OutputTail,
	}
	for i, c := range cmds {
		resp.Commands[i] = shared.LeasedCommand{
			ID: c.ID, ContainerID: c.ContainerID, Program: c.Program, Args: []string(c.Args),
			Attempt: c.Attempt, LeaseExpiresAt: c.LeaseExpiresAt.Time.UTC(),
		}
		s.controlLease(&resp.Commands[i], c)
		if resp.Commands[i].Args == nil {
			resp.Commands[i].Args = []string{}
		}
		if c.Attempt == 1 { // a lease taken again after expiry is not a new dispatch
			s.metrics.Dispatch.Observe(c.QueuedSeconds)
		}
		s.log.Debug("command leased", "command_id", c.ID, "container_id", c.ContainerID, "node_id", node, "attempt", c.Attempt)
	}
	return resp
}

// releaseUndelivered gives back leases claimed for a poll whose answer will
// not reach the agent. It runs after the request's context ended, so on a
// context of its own, with lease-keeping priority. A release that fails
// leaves the leases to expire: the reaper requeues them after the TTL.
func (s *Server) releaseUndelivered(ctx context.Context, node string, cmds []store.Command) {
	ctx = store.WithPriority(context.WithoutCancel(ctx))
	if err := s.store.ReleaseUndelivered(ctx, node, cmds); err != nil {
		s.log.Warn("leases not delivered and not released; they are queued again when their TTL ends",
			"node_id", node, "count", len(cmds), "err", err)
		return
	}
	s.metrics.Undelivered.Add(float64(len(cmds)))
	s.log.Info("leases not delivered; released", "node_id", node, "count", len(cmds))
}

func (s *Server) start(w http.ResponseWriter, r *http.Request) error {
	var req shared.StartRequest
	id, err := commandRequest(w, r, maxSmallBody, &req)
	if err != nil {
		return err
	}
	if err := shared.ValidateAttempt(req.Attempt); err != nil {
		return err
	}
	exp, err := s.store.Start(r.Context(), id, nodeFrom(r).ID, req.Attempt, s.cfg.LeaseTTL)
	if err != nil {
		return err
	}
	s.reqLog(r).Debug("command started", "attempt", req.Attempt)
	return writeJSON(w, http.StatusOK, shared.StartResponse{Status: shared.StatusRunning, LeaseExpiresAt: exp.UTC()})
}

// release takes back a lease the agent will not start, queuing the command
// again at once.
func (s *Server) release(w http.ResponseWriter, r *http.Request) error {
	var req shared.ReleaseRequest
	id, err := commandRequest(w, r, maxSmallBody, &req)
	if err != nil {
		return err
	}
	if err := shared.ValidateAttempt(req.Attempt); err != nil {
		return err
	}
	if err := s.store.Release(r.Context(), id, nodeFrom(r).ID, req.Attempt); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, shared.ReleaseResponse{Status: shared.StatusQueued})
}

// commandRequest reads an agent call about one command: the command ID from
// the path and the JSON body into req.
func commandRequest(w http.ResponseWriter, r *http.Request, limit int64, req any) (string, error) {
	id, err := pathUUID(r, "id")
	if err != nil {
		return "", err
	}
	return id, decodeJSON(w, r, limit, req)
}

func (s *Server) heartbeat(w http.ResponseWriter, r *http.Request) error {
	var req shared.HeartbeatRequest
	id, err := commandRequest(w, r, MaxChunkBody, &req)
	if err != nil {
		return err
	}
	// Every number and the number of chunks are checked before the
	// database is touched: the chunks are stored under the command's row
	// lock.
	if err := req.Validate(); err != nil {
		return err
	}
	rn, err := s.store.Heartbeat(r.Context(), id, nodeFrom(r).ID, req.Attempt, req.Chunks, s.cfg.LeaseTTL, s.cfg.OutputCap)
	if err != nil {
		return err
	}
	s.metrics.Heartbeats.Inc()
	s.countOutput(rn.Received)
	return writeJSON(w, http.StatusOK, shared.HeartbeatResponse{Offsets: rn.Offsets, LeaseExpiresAt: rn.LeaseExpiresAt.UTC(),
		Cancel: rn.Cancel, CancelGraceSeconds: rn.CancelGrace})
}

func (s *Server) finish(w http.ResponseWriter, r *http.Request) error {
	var req shared.FinishRequest
	id, err := commandRequest(w, r, MaxChunkBody, &req)
	if err != nil {
		return err
	}
	if err := req.Validate(); err != nil {
		return err
	}
	if err := validEnd(req); err != nil {
		return err
	}
	res, err := s.store.Finish(r.Context(), id, nodeFrom(r).ID, req, s.cfg.OutputCap)
	s.countOutput(res.Received) // kept with a gap error too
	if err != nil {
		return err
	}
	if !res.Repeat {
		s.metrics.Exec.WithLabelValues(string(res.Status)).Observe(res.Ran.Seconds())
		s.reqLog(r).Info("command finished", "status", res.Status, "ran", res.Ran.String())
	}
	return writeJSON(w, http.StatusOK, shared.FinishResponse{Status: res.Status})
}

// countOutput counts the new output bytes a heartbeat or finish stored.
func (s *Server) countOutput(received shared.Offsets) {
	if received.Stdout > 0 {
		s.metrics.OutputBytes.WithLabelValues("stdout").Add(float64(received.Stdout))
	}
	if received.Stderr > 0 {
		s.metrics.OutputBytes.WithLabelValues("stderr").Add(float64(received.Stderr))
	}
}
