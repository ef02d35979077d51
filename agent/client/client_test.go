package client

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/execq/execq/shared"
)

func newTestClient(t *testing.T, h http.Handler, mod func(*Config)) *Client {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	cfg := Config{BaseURL: srv.URL, Token: "secret-token", RetryMax: 3, RetryWaitMin: time.Millisecond, RetryWaitMax: 5 * time.Millisecond}
	if mod != nil {
		mod(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func TestRetriesServerErrorsThenSucceeds(t *testing.T) {
	var calls atomic.Int32
	c := newTestClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if got := r.Header.Get("Authorization"); got != "Bearer secret-token" {
			t.Errorf("Authorization = %q", got)
		}
		var req shared.StartRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Attempt != 7 {
			t.Errorf("body %+v %v (a retried request must resend its body)", req, err)
		}
		if calls.Add(1) < 3 {
			writeJSON(w, http.StatusServiceUnavailable, shared.ErrorBody{Error: shared.ErrorDetail{Code: "unavailable", Message: "db down"}})
			return
		}
		if r.URL.Path != "/agent/v1/commands/abc/start" || r.Method != http.MethodPost {
			t.Errorf("%s %s", r.Method, r.URL.Path)
		}
		writeJSON(w, http.StatusOK, shared.StartResponse{Status: shared.StatusRunning})
	}), nil)
	resp, err := c.Start(context.Background(), "abc", 7)
	if err != nil || resp.Status != shared.StatusRunning {
		t.Fatalf("Start = %+v, %v", resp, err)
	}
	if calls.Load() != 3 {
		t.Fatalf("%d calls, want 3", calls.Load())
	}
}

func TestNeverRetriesClientErrors(t *testing.T) {
	for _, tc := range []struct {
		status int
		body   any
		code   string
		gap    bool
	}{
		{http.StatusConflict, shared.ErrorBody{Error: shared.ErrorDetail{Code: shared.CodeLeaseLost, Message: "gone"}}, shared.CodeLeaseLost, false},
		{http.StatusConflict, shared.GapBody{Error: shared.ErrorDetail{Code: shared.CodeOutputGap, Message: "gap"}, Offsets: shared.Offsets{Stdout: 10, Stderr: 0}}, shared.CodeOutputGap, true},
		{http.StatusForbidden, shared.ErrorBody{Error: shared.ErrorDetail{Code: shared.CodeForbidden, Message: "not yours"}}, shared.CodeForbidden, false},
		{http.StatusTooManyRequests, shared.ErrorBody{Error: shared.ErrorDetail{Code: "rate_limited", Message: "slow down"}}, "rate_limited", false},
		{http.StatusBadRequest, "not even an envelope", "", false},
	} {
		var calls atomic.Int32
		c := newTestClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			calls.Add(1)
			writeJSON(w, tc.status, tc.body)
		}), nil)
		_, err := c.Heartbeat(context.Background(), "abc", shared.HeartbeatRequest{Attempt: 1})
		if calls.Load() != 1 {
			t.Errorf("%d: %d calls, want exactly 1", tc.status, calls.Load())
		}
		var e *Error
		if !errors.As(err, &e) || e.StatusCode != tc.status || e.Code != tc.code || !IsRejected(err) || !HasCode(err, tc.code) && tc.code != "" {
			t.Errorf("%d: err %#v", tc.status, err)
		}
		off, ok := GapOffsets(err)
		if ok != tc.gap || (ok && off.Stdout != 10) {
			t.Errorf("%d: GapOffsets = %+v, %v", tc.status, off, ok)
		}
	}
}

func TestGivesUpAfterRetriesOnServerError(t *testing.T) {
	var calls atomic.Int32
	c := newTestClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		writeJSON(w, http.StatusInternalServerError, shared.ErrorBody{Error: shared.ErrorDetail{Code: "internal", Message: "boom"}})
	}), nil)
	_, err := c.Finish(context.Background(), "abc", shared.FinishRequest{Attempt: 1})
	var e *Error
	if !errors.As(err, &e) || e.StatusCode != 500 || IsRejected(err) {
		t.Fatalf("err %v", err)
	}
	if calls.Load() != 4 {
		t.Fatalf("%d calls, want 1 + RetryMax(3)", calls.Load())
	}
}

func TestNetworkFailureIsNotRejected(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	c, err := New(Config{BaseURL: url, Token: "t", RetryMax: 2, RetryWaitMin: time.Millisecond, RetryWaitMax: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.ReportInventory(context.Background(), nil)
	if err == nil || IsRejected(err) {
		t.Fatalf("err %v", err)
	}
}

func TestLeaseOutlivesRequestTimeout(t *testing.T) {
	c := newTestClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req shared.LeaseRequest
		_ = json.NewDecoder(r.Body).Decode(&req)
		if r.URL.Path == shared.AgentPathLease && (req.Max != 3 || req.WaitMillis != 1000) {
			t.Errorf("lease request %+v", req)
		}
		time.Sleep(time.Second) // parked
		writeJSON(w, http.StatusOK, shared.LeaseResponse{Commands: []shared.LeasedCommand{}, HeartbeatMillis: 5000})
	}), func(cfg *Config) { cfg.RequestTimeout = 200 * time.Millisecond; cfg.MaxLeaseWait = time.Second })
	resp, err := c.Lease(context.Background(), shared.LeaseRequest{Max: 3, WaitMillis: 1000})
	if err != nil || resp.HeartbeatMillis != 5000 || len(resp.Commands) != 0 {
		t.Fatalf("Lease = %+v, %v", resp, err)
	}
	// A short request is cut at RequestTimeout (and retried).
	start := time.Now()
	_, err = c.Heartbeat(context.Background(), "x", shared.HeartbeatRequest{})
	if err == nil || time.Since(start) > 3*time.Second {
		t.Fatalf("heartbeat against a 1s handler with a 200ms timeout: %v after %v", err, time.Since(start))
	}
}

func TestContextCancelStopsRetrying(t *testing.T) {
	c := newTestClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}), func(cfg *Config) { cfg.RetryWaitMin, cfg.RetryWaitMax, cfg.RetryMax = time.Hour, time.Hour, 5 })
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Start(ctx, "x", 1)
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 5*time.Second {
		t.Fatalf("err %v after %v", err, time.Since(start))
	}
}

func TestBackoffBounded(t *testing.T) {
	for attempt := range 100 {
		d := backoff(100*time.Millisecond, 2*time.Second, attempt, nil)
		full := min(100*time.Millisecond<<min(attempt, 30), 2*time.Second)
		if attempt >= 30 {
			full = 2 * time.Second
		}
		if d < full/2 || d > full {
			t.Fatalf("attempt %d: %v not in [%v, %v]", attempt, d, full/2, full)
		}
	}
	resp := &http.Response{StatusCode: 503, Header: http.Header{"Retry-After": []string{"60"}}}
	if d := backoff(time.Millisecond, 3*time.Second, 0, resp); d != 3*time.Second {
		t.Fatalf("Retry-After capped: %v", d)
	}
}

func TestNewValidates(t *testing.T) {
	for _, cfg := range []Config{{BaseURL: "ftp://x", Token: "t"}, {BaseURL: "http://", Token: "t"}, {BaseURL: "http://x"}} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
}

// TestRefusesInvalidRequests: a heartbeat or finish the coordinator would
// refuse (too many chunks, an exit status out of range) is an error at
// once, without a request.
func TestRefusesInvalidRequests(t *testing.T) {
	var calls atomic.Int32
	c := newTestClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		writeJSON(w, http.StatusOK, struct{}{})
	}), nil)
	chunks := make([]shared.Chunk, shared.MaxRequestChunks+1)
	for i := range chunks {
		chunks[i] = shared.Chunk{Stream: shared.StreamStdout, Offset: int64(i), Data: []byte("a")}
	}
	var verr *shared.ValidationError
	if _, err := c.Heartbeat(context.Background(), "abc", shared.HeartbeatRequest{Attempt: 1, Chunks: chunks}); !errors.As(err, &verr) {
		t.Errorf("heartbeat of %d chunks: %v, want a validation error", len(chunks), err)
	}
	code := 256
	if _, err := c.Finish(context.Background(), "abc", shared.FinishRequest{Attempt: 1, ExitCode: &code}); !errors.As(err, &verr) {
		t.Errorf("finish with exit code 256: %v, want a validation error", err)
	}
	if n := calls.Load(); n != 0 {
		t.Fatalf("%d requests sent, want none", n)
	}
}
