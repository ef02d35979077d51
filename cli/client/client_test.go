package client

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/execq/execq/shared"
)

// The client against the real coordinator is tested end to end in
// agent/e2e (cli_test.go). These tests cover what a coordinator does not
// do on demand: answers without the envelope (a proxy's), rate limits, and
// what the client puts on the wire.

func newTestClient(t *testing.T, h http.HandlerFunc) *Client {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	c, err := New(Options{Server: srv.URL, Token: "tok"})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestErrorEnvelopeBecomesTypedError(t *testing.T) {
	c := newTestClient(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusConflict)
		io.WriteString(w, `{"error":{"code":"already_finished","message":"the command already ended with status failed"},"status":"failed"}`)
	})
	_, err := c.Cancel(context.Background(), "a1b2c3d4-0000-0000-0000-000000000001", CancelOptions{})
	var e *Error
	if !errors.As(err, &e) || e.StatusCode != 409 || e.Code != "already_finished" || e.Status != shared.StatusFailed || !IsCode(err, "already_finished") {
		t.Fatalf("got %#v (%v), want a typed already_finished error with status failed", e, err)
	}
}

func TestAnswerWithoutEnvelopeStillTyped(t *testing.T) {
	c := newTestClient(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusForbidden)
		io.WriteString(w, "<html>blocked by proxy</html>")
	})
	_, err := c.Containers(context.Background())
	var e *Error
	if !errors.As(err, &e) || e.Code != "http_403" || strings.Contains(err.Error(), "<html>") {
		t.Fatalf("got %v, want code http_403 without the HTML", err)
	}
}

// TestRateLimitedIsRetried: a 429 is waited out (Retry-After) and retried;
// a 4xx of another kind is not.
func TestRateLimitedIsRetried(t *testing.T) {
	var calls atomic.Int32
	c := newTestClient(t, func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
			io.WriteString(w, `{"error":{"code":"rate_limited","message":"slow down"}}`)
			return
		}
		io.WriteString(w, `{"containers":[]}`)
	})
	if _, err := c.Containers(context.Background()); err != nil || calls.Load() != 2 {
		t.Fatalf("err %v after %d calls, want success on the second", err, calls.Load())
	}

	calls.Store(0)
	c = newTestClient(t, func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, `{"error":{"code":"not_found","message":"no such resource"}}`)
	})
	if _, err := c.Get(context.Background(), "x", 0); !IsCode(err, "not_found") || calls.Load() != 1 {
		t.Fatalf("err %v after %d calls, want not_found at once", err, calls.Load())
	}
}

// TestRequestsCarryJSONAndToken: a body always goes with its Content-Type
// (the coordinator refuses one without), the token only in Authorization,
// and the Idempotency-Key when given.
func TestRequestsCarryJSONAndToken(t *testing.T) {
	var got *http.Request
	var body string
	c := newTestClient(t, func(w http.ResponseWriter, r *http.Request) {
		raw, _ := io.ReadAll(r.Body)
		got, body = r, string(raw)
		w.WriteHeader(http.StatusAccepted)
		io.WriteString(w, `{"id":"x","status":"queued"}`)
	})
	_, err := c.Submit(context.Background(), "f47ac10b-58cc-4372-a567-0e02b2c3d479",
		shared.SubmitRequest{Program: "true", TimeoutSeconds: shared.Secs(5)}, SubmitOptions{IdempotencyKey: "k1", Wait: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if got.Header.Get("Content-Type") != "application/json" || got.Header.Get("Authorization") != "Bearer tok" ||
		got.Header.Get("Idempotency-Key") != "k1" || got.URL.Query().Get("wait") != "2s" || strings.Contains(got.URL.String(), "tok") {
		t.Fatalf("request %s %s headers %v", got.Method, got.URL, got.Header)
	}
	if body != `{"program":"true","args":[],"timeout_seconds":5}` {
		t.Fatalf("body %s", body)
	}
}

func TestNewRefusesBadSettings(t *testing.T) {
	for _, o := range []Options{
		{Token: "t"},
		{Server: "127.0.0.1:8080", Token: "t"},
		{Server: "http://127.0.0.1:8080"},
		{Server: "http://127.0.0.1:8080", Token: "t\n"},
		{Server: "http://127.0.0.1:8080", Token: "t", CAFile: "/etc/hostname"},
	} {
		if _, err := New(o); err == nil {
			t.Errorf("New(%+v) accepted", o)
		}
	}
}

// TestSubmitManyKeys: SubmitMany sends each item's idempotency_key (and
// none for an item without one), reads which records are replays, and
// retries an answer that asks for it only when every item has a key:
// sent again, such a batch queues nothing twice.
func TestSubmitManyKeys(t *testing.T) {
	var calls atomic.Int32
	var body string
	c := newTestClient(t, func(w http.ResponseWriter, r *http.Request) {
		raw, _ := io.ReadAll(r.Body)
		body = string(raw)
		if calls.Add(1) == 1 {
			w.Header().Set("Retry-After", "0")
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, `{"error":{"code":"unavailable","message":"try again"}}`)
			return
		}
		w.WriteHeader(http.StatusAccepted)
		io.WriteString(w, `{"commands":[{"id":"a","status":"queued","replayed":true},{"id":"b","status":"queued","replayed":false}]}`)
	})
	const ctr = "f47ac10b-58cc-4372-a567-0e02b2c3d479"
	recs, err := c.SubmitMany(context.Background(), []shared.SubmitBatchItem{
		{ContainerID: ctr, Program: "true", IdempotencyKey: shared.IdemKey("k1")},
		{ContainerID: ctr, Program: "echo", Args: []string{"x"}, IdempotencyKey: shared.IdemKey("k2")},
	})
	if err != nil || calls.Load() != 2 || len(recs) != 2 || !recs[0].Replayed || recs[0].ID != "a" || recs[1].Replayed || recs[1].ID != "b" {
		t.Fatalf("keyed batch: %+v, %v after %d calls; want the second call's records", recs, err, calls.Load())
	}
	want := `{"commands":[{"container_id":"` + ctr + `","program":"true","args":[],"idempotency_key":"k1"},` +
		`{"container_id":"` + ctr + `","program":"echo","args":["x"],"idempotency_key":"k2"}]}`
	if body != want {
		t.Fatalf("body %s\nwant %s", body, want)
	}

	calls.Store(0)
	_, err = c.SubmitMany(context.Background(), []shared.SubmitBatchItem{
		{ContainerID: ctr, Program: "true", IdempotencyKey: shared.IdemKey("k1")},
		{ContainerID: ctr, Program: "true"},
	})
	if !IsCode(err, "unavailable") || calls.Load() != 1 {
		t.Fatalf("batch with an item without a key: %v after %d calls, want unavailable at once", err, calls.Load())
	}
	if want := `{"container_id":"` + ctr + `","program":"true","args":[]}]}`; !strings.HasSuffix(body, want) {
		t.Fatalf("an item without a key sent as %s", body)
	}
}
