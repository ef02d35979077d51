package client

import (
	"context"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/execq/execq/shared"
)

// TestBatchingFallsBackToPerCommandRoutes: a coordinator older than the
// agent has no reports route (404 not_found). The start is sent again to
// its per-command route, and so is every later call, without asking the
// reports route again.
func TestBatchingFallsBackToPerCommandRoutes(t *testing.T) {
	var reports, starts, finishes atomic.Int32
	c := newTestClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case shared.AgentPathReports:
			reports.Add(1)
			writeJSON(w, http.StatusNotFound, shared.ErrorBody{Error: shared.ErrorDetail{Code: "not_found", Message: "no such route"}})
		case "/agent/v1/commands/abc/start":
			starts.Add(1)
			writeJSON(w, http.StatusOK, shared.StartResponse{Status: shared.StatusRunning})
		case "/agent/v1/commands/abc/finish":
			finishes.Add(1)
			writeJSON(w, http.StatusConflict, shared.ErrorBody{Error: shared.ErrorDetail{Code: shared.CodeLeaseLost, Message: "gone"}})
		default:
			t.Errorf("unexpected %s %s", r.Method, r.URL.Path)
		}
	}), nil)
	b := NewBatching(c)
	ctx := context.Background()
	if resp, err := b.Start(ctx, "abc", 1); err != nil || resp.Status != shared.StatusRunning {
		t.Fatalf("start: %+v, %v", resp, err)
	}
	code := 0
	if _, err := b.Finish(ctx, "abc", shared.FinishRequest{Attempt: 1, ExitCode: &code}); !HasCode(err, shared.CodeLeaseLost) {
		t.Fatalf("finish: %v, want the per-command route's lease_lost", err)
	}
	if reports.Load() != 1 || starts.Load() != 1 || finishes.Load() != 1 {
		t.Errorf("reports %d, starts %d, finishes %d requests; want 1 each", reports.Load(), starts.Load(), finishes.Load())
	}
}
