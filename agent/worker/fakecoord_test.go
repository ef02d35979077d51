package worker

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/execq/execq/agent/client"
	"github.com/execq/execq/shared"
)

// fakeCoord implements the agent protocol's server side in memory, with the
// coordinator's output rules (offsets, trimming, gaps, finish only with all
// bytes), plus hooks to inject faults. It exists to test the worker's logic;
// the real coordinator is exercised by the end-to-end tests.
type fakeCoord struct {
	t   *testing.T
	srv *httptest.Server

	mu       sync.Mutex
	queue    []shared.LeasedCommand
	wake     chan struct{} // closed when the queue grows
	cmds     map[string]*fakeCmd
	leases   []leaseCall
	hbMillis int
	// partial makes every heartbeat store only half of the new bytes it
	// carries, as a coordinator that acknowledged less than it was sent.
	partial bool
	// dropAnswers stores every other heartbeat/finish but answers 503.
	dropAnswers bool
	answers     int
	// Hooks, called without mu held; a non-zero status answers instead.
	onStart     func(id string) (int, any)
	onHeartbeat func(id string, req shared.HeartbeatRequest) (int, any)
	onFinish    func(id string, req shared.FinishRequest) (int, any)
}

type leaseCall struct {
	at   time.Time
	max  int
	wait int
}

type fakeCmd struct {
	cmd        shared.LeasedCommand
	starts     int
	out        [2][]byte
	heartbeats []time.Time
	maxRequest int // most chunk bytes seen in one request
	finish     *shared.FinishRequest
	finishes   int
	finishedAt time.Time
	releases   int
}

const testToken = "node-token"

func newFakeCoord(t *testing.T) *fakeCoord {
	f := &fakeCoord{t: t, wake: make(chan struct{}), cmds: make(map[string]*fakeCmd), hbMillis: 200}
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+shared.AgentPathLease, f.lease)
	mux.HandleFunc("POST "+shared.AgentPathCommands+"{id}/{action}", f.command)
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+testToken {
			writeJSON(w, http.StatusUnauthorized, shared.ErrorBody{Error: shared.ErrorDetail{Code: "unauthorized", Message: "bad token"}})
			return
		}
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeCoord) client(t *testing.T, logs *testLog) *client.Client {
	c, err := client.New(client.Config{
		BaseURL: f.srv.URL, Token: testToken,
		RetryMax: 2, RetryWaitMin: 10 * time.Millisecond, RetryWaitMax: 50 * time.Millisecond,
		RequestTimeout: 10 * time.Second, MaxLeaseWait: 2 * time.Second,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
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

func errBody(code, msg string) shared.ErrorBody {
	return shared.ErrorBody{Error: shared.ErrorDetail{Code: code, Message: msg}}
}

// enqueue queues a command and returns its id.
func (f *fakeCoord) enqueue(containerID, program string, args ...string) string {
	if args == nil {
		args = []string{}
	}
	cmd := shared.LeasedCommand{ID: uuid.NewString(), ContainerID: containerID, Program: program, Args: args, Attempt: 1}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.queue = append(f.queue, cmd)
	f.cmds[cmd.ID] = &fakeCmd{cmd: cmd}
	close(f.wake)
	f.wake = make(chan struct{})
	return cmd.ID
}

func (f *fakeCoord) lease(w http.ResponseWriter, r *http.Request) {
	var req shared.LeaseRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Max < 1 || req.Max > 100 {
		writeJSON(w, http.StatusBadRequest, errBody("bad_request", "max"))
		return
	}
	deadline := time.After(time.Duration(req.WaitMillis) * time.Millisecond)
	f.mu.Lock()
	f.leases = append(f.leases, leaseCall{at: time.Now(), max: req.Max, wait: req.WaitMillis})
	for {
		if len(f.queue) > 0 {
			n := min(req.Max, len(f.queue))
			cmds := append([]shared.LeasedCommand(nil), f.queue[:n]...)
			f.queue = f.queue[n:]
			hb := f.hbMillis
			f.mu.Unlock()
			writeJSON(w, http.StatusOK, shared.LeaseResponse{Commands: cmds, LeaseTTLMillis: 30000, HeartbeatMillis: hb})
			return
		}
		wake := f.wake
		f.mu.Unlock()
		select {
		case <-wake:
		case <-deadline:
			writeJSON(w, http.StatusOK, shared.LeaseResponse{Commands: []shared.LeasedCommand{}, LeaseTTLMillis: 30000, HeartbeatMillis: f.hbMillisLocked()})
			return
		case <-r.Context().Done():
			return
		}
		f.mu.Lock()
	}
}

func (f *fakeCoord) hbMillisLocked() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.hbMillis
}

func (f *fakeCoord) command(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	f.mu.Lock()
	c := f.cmds[id]
	f.mu.Unlock()
	if c == nil {
		writeJSON(w, http.StatusNotFound, errBody("not_found", "no such command"))
		return
	}
	switch r.PathValue("action") {
	case "start":
		var req shared.StartRequest
		_ = json.NewDecoder(r.Body).Decode(&req)
		if f.onStart != nil {
			if code, body := f.onStart(id); code != 0 {
				writeJSON(w, code, body)
				return
			}
		}
		f.mu.Lock()
		c.starts++
		f.mu.Unlock()
		writeJSON(w, http.StatusOK, shared.StartResponse{Status: shared.StatusRunning})
	case "heartbeat":
		var req shared.HeartbeatRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			writeJSON(w, http.StatusBadRequest, errBody("bad_request", err.Error()))
			return
		}
		f.mu.Lock()
		c.heartbeats = append(c.heartbeats, time.Now())
		f.mu.Unlock()
		if f.onHeartbeat != nil {
			if code, body := f.onHeartbeat(id, req); code != 0 {
				writeJSON(w, code, body)
				return
			}
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		if gap := c.apply(req.Chunks, f.partial); gap != nil {
			writeJSON(w, http.StatusConflict, shared.GapBody{Error: shared.ErrorDetail{Code: shared.CodeOutputGap, Message: "gap"}, Offsets: *gap})
			return
		}
		f.answers++
		if f.dropAnswers && f.answers%2 == 1 {
			// Stored, but the answer is lost: the agent must resend
			// from its acknowledged offsets without doubling anything.
			writeJSON(w, http.StatusServiceUnavailable, errBody("unavailable", "answer lost"))
			return
		}
		writeJSON(w, http.StatusOK, shared.HeartbeatResponse{Offsets: c.offsets()})
	case "finish":
		var req shared.FinishRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			writeJSON(w, http.StatusBadRequest, errBody("bad_request", err.Error()))
			return
		}
		if len(req.Error) > 4096 || strings.ContainsRune(req.Error, 0) {
			// As the coordinator: an error that cannot be stored.
			writeJSON(w, http.StatusBadRequest, errBody("invalid_field", "error must be at most 4096 bytes without NUL"))
			return
		}
		if f.onFinish != nil {
			if code, body := f.onFinish(id, req); code != 0 {
				writeJSON(w, code, body)
				return
			}
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		if c.finish != nil {
			writeJSON(w, http.StatusOK, shared.FinishResponse{Status: finishStatus(c.finish)})
			return
		}
		gap := c.apply(req.Chunks, false)
		if gap == nil && (int64(len(c.out[0])) != req.StdoutLength || int64(len(c.out[1])) != req.StderrLength) {
			off := c.offsets()
			gap = &off
		}
		if gap != nil {
			writeJSON(w, http.StatusConflict, shared.GapBody{Error: shared.ErrorDetail{Code: shared.CodeOutputGap, Message: "gap"}, Offsets: *gap})
			return
		}
		c.finish = &req
		c.finishes++
		c.finishedAt = time.Now()
		f.answers++
		if f.dropAnswers && f.answers%2 == 1 {
			writeJSON(w, http.StatusServiceUnavailable, errBody("unavailable", "answer lost"))
			return
		}
		writeJSON(w, http.StatusOK, shared.FinishResponse{Status: finishStatus(&req)})
	case "release":
		f.mu.Lock()
		c.releases++
		f.mu.Unlock()
		writeJSON(w, http.StatusOK, shared.ReleaseResponse{Status: shared.StatusQueued})
	default:
		writeJSON(w, http.StatusNotFound, errBody("not_found", "no such action"))
	}
}

func finishStatus(req *shared.FinishRequest) shared.Status {
	if req.ExitCode != nil && *req.ExitCode == 0 && req.Error == "" {
		return shared.StatusSucceeded
	}
	return shared.StatusFailed
}

// apply stores chunks with the coordinator's rules: below the stored end is
// ignored, an overlap is trimmed, past the end is a gap.
func (c *fakeCmd) apply(chunks []shared.Chunk, partial bool) *shared.Offsets {
	total := 0
	for _, ch := range chunks {
		total += len(ch.Data)
	}
	c.maxRequest = max(c.maxRequest, total)
	for _, ch := range chunks {
		i := 0
		if ch.Stream == shared.StreamStderr {
			i = 1
		}
		end := int64(len(c.out[i]))
		if ch.Offset > end {
			off := c.offsets()
			return &off
		}
		if ch.Offset+int64(len(ch.Data)) <= end {
			continue
		}
		add := ch.Data[end-ch.Offset:]
		if partial && len(add) > 1 {
			add = add[:len(add)/2]
		}
		c.out[i] = append(c.out[i], add...)
	}
	return nil
}

func (c *fakeCmd) offsets() shared.Offsets {
	return shared.Offsets{Stdout: int64(len(c.out[0])), Stderr: int64(len(c.out[1]))}
}

// snapshot copies a command's state.
func (f *fakeCoord) snapshot(id string) fakeCmd {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := *f.cmds[id]
	c.out = [2][]byte{bytes.Clone(c.out[0]), bytes.Clone(c.out[1])}
	c.heartbeats = append([]time.Time(nil), c.heartbeats...)
	return c
}

func (f *fakeCoord) leaseCalls() []leaseCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]leaseCall(nil), f.leases...)
}

// waitFinished waits for a command's finish to be stored.
func (f *fakeCoord) waitFinished(t *testing.T, id string, within time.Duration) fakeCmd {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		f.mu.Lock()
		done := f.cmds[id].finish != nil
		f.mu.Unlock()
		if done {
			return f.snapshot(id)
		}
		time.Sleep(10 * time.Millisecond)
	}
	c := f.snapshot(id)
	t.Fatalf("command %s not finished within %v (starts %d, heartbeats %d, stdout %d bytes, stderr %d bytes)",
		id, within, c.starts, len(c.heartbeats), len(c.out[0]), len(c.out[1]))
	return c
}

// testLog collects log lines and shows them when the test failed. (t.Log
// itself must not be called once the test returned, and a goroutine's last
// line can come late.)
type testLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func newTestLog(t *testing.T) *testLog {
	l := &testLog{}
	t.Cleanup(func() {
		if t.Failed() {
			l.mu.Lock()
			defer l.mu.Unlock()
			t.Logf("log:\n%s", l.b.String())
		}
	})
	return l
}

func (l *testLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *testLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// requeue hands command id out again under the same attempt: what a
// coordinator does whose database lost, in a crash, a claim it had already
// answered (claims commit asynchronously) and took the command again.
func (f *fakeCoord) requeue(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.queue = append(f.queue, f.cmds[id].cmd)
	close(f.wake)
	f.wake = make(chan struct{})
}

// queued is how many commands wait to be leased.
func (f *fakeCoord) queued() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.queue)
}
