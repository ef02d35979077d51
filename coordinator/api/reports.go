package api

import (
	"errors"
	"fmt"
	"net/http"
	"sync"

	"github.com/google/uuid"

	"github.com/execq/execq/coordinator/store"
	"github.com/execq/execq/shared"
)

// reports takes the starts and finishes of several commands in one request
// (shared.ReportsRequest). The whole body is checked first: anything a
// per-command route would refuse as 400 refuses the request, and nothing is
// done. Then each item goes to the store as its own start or finish; the
// store commits concurrent ones together (store/group.go), so the items of
// one request share a statement and a commit. Each gets the answer its
// per-command route would have given. Only when every item failed for the
// database's sake (5xx) does the request fail as a whole — nothing of it
// was done — so the agent's client retries it like any 503.
func (s *Server) reports(w http.ResponseWriter, r *http.Request) error {
	var req shared.ReportsRequest
	if err := decodeJSON(w, r, MaxChunkBody, &req); err != nil {
		return err
	}
	if err := req.Validate(); err != nil {
		return err
	}
	ids := map[string]bool{}
	for i, it := range req.Starts {
		id, err := itemID(fmt.Sprintf("starts[%d]", i), it.CommandID)
		if err != nil {
			return err
		}
		req.Starts[i].CommandID = id
	}
	for i, it := range req.Finishes {
		id, err := itemID(fmt.Sprintf("finishes[%d]", i), it.CommandID)
		if err != nil {
			return err
		}
		if ids[id] {
			return badRequest("invalid_field", fmt.Sprintf("finishes[%d].command_id %s is listed twice", i, id))
		}
		ids[id] = true
		req.Finishes[i].CommandID = id
		if err := validEnd(it.FinishRequest); err != nil {
			return err
		}
	}
	node := nodeFrom(r).ID
	resp := shared.ReportsResponse{
		Starts:   make([]shared.StartOutcome, len(req.Starts)),
		Finishes: make([]shared.FinishOutcome, len(req.Finishes)),
	}
	errs := make([]error, len(req.Starts)+len(req.Finishes))
	log := s.reqLog(r) // node_id; each line adds its command_id
	var wg sync.WaitGroup
	for i, it := range req.Starts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out := &resp.Starts[i]
			out.CommandID = it.CommandID
			exp, err := s.store.Start(r.Context(), it.CommandID, node, it.Attempt, s.cfg.LeaseTTL)
			if errs[i] = err; err == nil {
				out.StartResponse = shared.StartResponse{Status: shared.StatusRunning, LeaseExpiresAt: exp.UTC()}
				log.Debug("command started", "command_id", it.CommandID, "attempt", it.Attempt)
			}
		}()
	}
	for i, it := range req.Finishes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out := &resp.Finishes[i]
			out.CommandID = it.CommandID
			res, err := s.store.Finish(r.Context(), it.CommandID, node, it.FinishRequest, s.cfg.OutputCap)
			s.countOutput(res.Received) // kept with a gap error too
			if errs[len(req.Starts)+i] = err; err == nil {
				out.Status = res.Status
				if !res.Repeat {
					s.metrics.Exec.WithLabelValues(string(res.Status)).Observe(res.Ran.Seconds())
					log.Info("command finished", "command_id", it.CommandID, "status", res.Status, "ran", res.Ran.String())
				}
			}
		}()
	}
	wg.Wait()
	failed := 0
	for i, err := range errs {
		if err == nil {
			continue
		}
		ie := s.itemError(r, err)
		if ie.Status >= 500 {
			failed++
		}
		if i < len(req.Starts) {
			resp.Starts[i].Error = ie
		} else {
			resp.Finishes[i-len(req.Starts)].Error = ie
		}
	}
	if failed == len(errs) {
		return errs[0]
	}
	return writeJSON(w, http.StatusOK, resp)
}

// itemID checks an item's command ID.
func itemID(item, id string) (string, error) {
	u, err := uuid.Parse(id)
	if err != nil || len(id) != 36 {
		return "", badRequest("invalid_field", fmt.Sprintf("%s.command_id %q is not a UUID", item, id))
	}
	return u.String(), nil
}

// itemError is the answer a per-command route gives for err (see wrap).
func (s *Server) itemError(r *http.Request, err error) *shared.ItemError {
	var gap *store.GapError
	if errors.As(err, &gap) {
		return &shared.ItemError{Status: http.StatusConflict, Offsets: &gap.Offsets, ErrorDetail: shared.ErrorDetail{
			Code: shared.CodeOutputGap, Message: "a chunk starts past the stored end of its stream; resend from the offsets given"}}
	}
	e := toAPIError(err)
	if e.Status >= 500 {
		s.log.Error("report item failed", "path", r.URL.Path, "status", e.Status, "err", err)
	} else {
		s.log.Info("report item refused", "path", r.URL.Path, "status", e.Status, "code", e.Code, "err", err)
	}
	return &shared.ItemError{Status: e.Status, ErrorDetail: shared.ErrorDetail{Code: e.Code, Message: e.Message}}
}
