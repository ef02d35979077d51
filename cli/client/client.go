package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/execq/execq/internal/certreload"
	"github.com/execq/execq/shared"
)

// DefaultReconnect is how long Follow and Wait keep trying to reach the
// coordinator again after losing it: long enough for a restart or a
// failover, short enough that a coordinator gone for good is reported.
const DefaultReconnect = 5 * time.Minute

// Options configure a Client.
type Options struct {
	// Server is the coordinator's base URL, e.g. http://127.0.0.1:8080.
	Server string
	// Token is the user's bearer token. It is sent in the Authorization
	// header only, never in a URL, and never traced.
	Token string
	// CAFile, if set, is the only CA bundle the coordinator's certificate
	// is verified against (instead of the system roots). Ignored when
	// HTTPClient is given.
	CAFile string
	// HTTPClient replaces the default client (no overall timeout: follows
	// and waits last as long as their commands).
	HTTPClient *http.Client
	// Trace, if set, is called once per HTTP exchange (execq -v).
	Trace func(Exchange)
	// Reconnect bounds how long Follow and Wait retry a lost coordinator;
	// 0 means DefaultReconnect.
	Reconnect time.Duration
	// UserAgent is sent as User-Agent when set.
	UserAgent string
}

// Exchange describes one HTTP exchange for tracing. It carries no headers,
// so no token can leak through it.
type Exchange struct {
	Method, URL string
	// Status is the answer's status, 0 when none came (Err says why).
	Status   int
	Duration time.Duration
	Err      error
}

// Client talks to one coordinator as one user. It is safe for concurrent
// use.
type Client struct {
	base      *url.URL
	token     string
	hc        *http.Client
	trace     func(Exchange)
	reconnect time.Duration
	userAgent string
	// reached says the coordinator answered once: before that, one that
	// does not answer is reported at once (a wrong --server, a stopped
	// coordinator), after it retried within the reconnect window (a
	// restart).
	reached atomic.Bool
}

// New checks opt and builds a Client.
func New(opt Options) (*Client, error) {
	if opt.Server == "" {
		return nil, errors.New("no server: set --server or EXECQ_SERVER (e.g. http://127.0.0.1:8080)")
	}
	base, err := url.Parse(strings.TrimRight(opt.Server, "/"))
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return nil, fmt.Errorf("server %q is not an http:// or https:// URL", opt.Server)
	}
	if opt.Token == "" {
		return nil, errors.New("no token: set --token, --token-file or EXECQ_TOKEN")
	}
	if strings.ContainsAny(opt.Token, " \t\r\n") {
		return nil, errors.New("the token holds white space: check the token file or variable")
	}
	hc := opt.HTTPClient
	if hc == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		if opt.CAFile != "" {
			if base.Scheme != "https" {
				return nil, fmt.Errorf("a CA file is given but the server %s is not https://", opt.Server)
			}
			pool, err := certreload.LoadCAFile(opt.CAFile)
			if err != nil {
				return nil, err
			}
			tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}
		}
		hc = &http.Client{Transport: tr}
	}
	c := &Client{base: base, token: opt.Token, hc: hc, trace: opt.Trace, reconnect: opt.Reconnect, userAgent: opt.UserAgent}
	if c.reconnect <= 0 {
		c.reconnect = DefaultReconnect
	}
	return c, nil
}

// Error is an error answer of the API: its status and the envelope
// {"error":{"code","message"}}.
type Error struct {
	// StatusCode is the HTTP status.
	StatusCode int
	// Code is the envelope's stable machine code (e.g. "not_found"); for
	// an answer without an envelope (a proxy's 502) it is "http_<status>".
	Code    string
	Message string
	// Status is the command's status in a 409 already_finished answer.
	Status shared.Status
	// RetryAfter is the Retry-After of a 429 or 503, if any.
	RetryAfter time.Duration
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s (%s, HTTP %d)", e.Message, e.Code, e.StatusCode)
}

// IsCode reports whether err is an API error with the given code.
func IsCode(err error, code string) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == code
}

// temporary says whether a failure may go away by itself: no answer at all
// (the coordinator restarting, a connection cut), an overloaded or
// restarting coordinator or proxy, a rate limit. A 4xx otherwise is the
// request's fault and is never retried.
func temporary(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var e *Error
	if errors.As(err, &e) {
		switch e.StatusCode {
		case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
			return true
		}
		return false
	}
	var te *TransportError
	return errors.As(err, &te)
}

// TransportError is a request that got no answer: the coordinator is down
// or unreachable, or the connection broke.
type TransportError struct {
	Method, URL string
	Err         error
}

func (e *TransportError) Error() string {
	return fmt.Sprintf("cannot reach the coordinator (%s %s): %v", e.Method, e.URL, unwrapURLError(e.Err))
}

func (e *TransportError) Unwrap() error { return e.Err }

// unwrapURLError drops *url.Error's "Get "…": " prefix: the URL is said once.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// request is one API call.
type request struct {
	method string
	path   string
	query  url.Values
	body   any
	header http.Header
}

// send performs r and returns the answer when its status is 2xx; any other
// status is read into an *Error and the body closed. A body is always sent
// as JSON with its Content-Type.
func (c *Client) send(ctx context.Context, r request) (*http.Response, error) {
	u := *c.base
	u.Path = c.base.Path + r.path
	u.RawQuery = r.query.Encode()
	var body io.Reader
	if r.body != nil {
		raw, err := json.Marshal(r.body)
		if err != nil {
			return nil, fmt.Errorf("encode %s body: %w", r.path, err)
		}
		body = bytes.NewReader(raw)
	}
	req, err := http.NewRequestWithContext(ctx, r.method, u.String(), body)
	if err != nil {
		return nil, err
	}
	for k, vs := range r.header {
		req.Header[k] = vs
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Accept", "application/json")
	if r.body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.userAgent != "" {
		req.Header.Set("User-Agent", c.userAgent)
	}
	start := time.Now()
	resp, err := c.hc.Do(req)
	if err != nil {
		c.traceExchange(r.method, u.String(), 0, start, err)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, &TransportError{Method: r.method, URL: u.String(), Err: err}
	}
	c.traceExchange(r.method, u.String(), resp.StatusCode, start, nil)
	c.reached.Store(true)
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return resp, nil
	}
	defer resp.Body.Close()
	return nil, readError(resp)
}

func (c *Client) traceExchange(method, u string, status int, start time.Time, err error) {
	if c.trace != nil {
		c.trace(Exchange{Method: method, URL: u, Status: status, Duration: time.Since(start), Err: err})
	}
}

// readError turns an error answer into an *Error.
func readError(resp *http.Response) *Error {
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var env struct {
		Error  shared.ErrorDetail `json:"error"`
		Status shared.Status      `json:"status"`
	}
	e := &Error{StatusCode: resp.StatusCode}
	if json.Unmarshal(raw, &env) == nil && env.Error.Code != "" {
		e.Code, e.Message, e.Status = env.Error.Code, env.Error.Message, env.Status
	} else {
		e.Code = "http_" + strconv.Itoa(resp.StatusCode)
		e.Message = http.StatusText(resp.StatusCode)
		if s := strings.TrimSpace(string(raw)); s != "" && len(s) < 200 && !strings.ContainsAny(s, "\n<") {
			e.Message += ": " + s
		}
	}
	if v := resp.Header.Get("Retry-After"); v != "" {
		if secs, err := strconv.Atoi(v); err == nil && secs >= 0 {
			e.RetryAfter = time.Duration(secs) * time.Second
		}
	}
	return e
}

// call sends r, retrying what the server asked to be retried (429, 503)
// when retry is set, and decodes a JSON answer into out. It returns the
// answer's status.
func (c *Client) call(ctx context.Context, r request, retry bool, out any) (int, error) {
	var resp *http.Response
	err := c.retrying(ctx, retry, func() error {
		var err error
		resp, err = c.send(ctx, r)
		return err
	})
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			return resp.StatusCode, fmt.Errorf("decode the answer of %s %s: %w", r.method, r.path, err)
		}
	}
	return resp.StatusCode, nil
}

// retrying runs f until it succeeds, fails for good, or the reconnect
// window passes. Without retry it runs once. Answers that ask for a retry
// (429, 502-504) are retried, and so is no answer at all once the
// coordinator answered before (a restart); a coordinator that never
// answered is reported at once, so a mistyped --server fails fast.
func (c *Client) retrying(ctx context.Context, retry bool, f func() error) error {
	b := backoff{}
	deadline := time.Now().Add(c.reconnect)
	for {
		err := f()
		if err == nil || !retry || !temporary(err) || time.Now().After(deadline) {
			return err
		}
		var te *TransportError
		if errors.As(err, &te) && !c.reached.Load() {
			return err
		}
		if err := b.wait(ctx, err); err != nil {
			return err
		}
	}
}

// backoff waits between retries: 100 ms doubling to 2 s, jittered, or the
// server's Retry-After.
type backoff struct{ next time.Duration }

func (b *backoff) wait(ctx context.Context, cause error) error {
	if b.next == 0 {
		b.next = 100 * time.Millisecond
	}
	d := b.next/2 + rand.N(b.next/2+1)
	b.next = min(2*b.next, 2*time.Second)
	var e *Error
	if errors.As(cause, &e) && e.RetryAfter > 0 {
		d = e.RetryAfter
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (b *backoff) reset() { b.next = 0 }

// SubmitOptions are the optional parts of a submit.
type SubmitOptions struct {
	// Wait asks the coordinator to answer once the command is terminal,
	// for at most this long (?wait=).
	Wait time.Duration
	// IdempotencyKey makes the submit safe to retry: the same key answers
	// with the first command. With a key, Submit itself retries answers
	// that ask for a retry.
	IdempotencyKey string
}

// Submit enqueues program in the container and returns its record.
func (c *Client) Submit(ctx context.Context, containerID string, req shared.SubmitRequest, opt SubmitOptions) (*shared.CommandExecutionRecord, error) {
	if req.Args == nil {
		req.Args = []string{}
	}
	r := request{method: http.MethodPost, path: "/api/v1/containers/" + url.PathEscape(containerID) + "/commands",
		query: waitQuery(opt.Wait), body: req}
	if opt.IdempotencyKey != "" {
		r.header = http.Header{"Idempotency-Key": {opt.IdempotencyKey}}
	}
	var rec shared.CommandExecutionRecord
	if _, err := c.call(ctx, r, opt.IdempotencyKey != "", &rec); err != nil {
		return nil, fmt.Errorf("submit to container %s: %w", containerID, err)
	}
	return &rec, nil
}

// SubmitMany queues several commands, each in its own container, in one
// request (POST /api/v1/commands): all or none. The records come back in
// the items' order; Replayed marks an item whose IdempotencyKey already
// named that command (nothing was queued for it). An error means nothing
// was queued — unless the request's fate is unknown (the connection
// dropped before the answer). So a batch is retried, as a keyed Submit
// is, only when every item has a key: sent again, it queues nothing twice.
func (c *Client) SubmitMany(ctx context.Context, items []shared.SubmitBatchItem) ([]shared.SubmitBatchRecord, error) {
	keyed := len(items) > 0
	for i := range items {
		if items[i].Args == nil {
			items[i].Args = []string{}
		}
		keyed = keyed && items[i].IdempotencyKey.Set
	}
	var res shared.SubmitBatchResult
	if _, err := c.call(ctx, request{method: http.MethodPost, path: "/api/v1/commands", body: shared.SubmitBatch{Commands: items}}, keyed, &res); err != nil {
		return nil, fmt.Errorf("submit %d commands: %w", len(items), err)
	}
	return res.Commands, nil
}

func waitQuery(wait time.Duration) url.Values {
	q := url.Values{}
	if wait > 0 {
		q.Set("wait", wait.String())
	}
	return q
}

// Get returns a command's record; with wait > 0 the coordinator answers as
// soon as it is terminal or when the wait ends (?wait=).
func (c *Client) Get(ctx context.Context, id string, wait time.Duration) (*shared.CommandExecutionRecord, error) {
	var rec shared.CommandExecutionRecord
	if _, err := c.call(ctx, request{method: http.MethodGet, path: "/api/v1/commands/" + url.PathEscape(id), query: waitQuery(wait)}, true, &rec); err != nil {
		return nil, fmt.Errorf("get command %s: %w", id, err)
	}
	return &rec, nil
}

// waitSlice is the ?wait= of each long-poll Wait makes; the coordinator
// caps it at its own maximum and answers with the current state then.
const waitSlice = 60 * time.Second

// Wait returns the command's record once it is terminal. It long-polls,
// and rides out a coordinator restart within the reconnect window.
func (c *Client) Wait(ctx context.Context, id string) (*shared.CommandExecutionRecord, error) {
	for {
		var rec shared.CommandExecutionRecord
		err := c.retrying(ctx, true, func() error {
			_, err := c.call(ctx, request{method: http.MethodGet, path: "/api/v1/commands/" + url.PathEscape(id), query: waitQuery(waitSlice)}, false, &rec)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("wait for command %s: %w", id, err)
		}
		if rec.Status.Terminal() {
			return &rec, nil
		}
	}
}

// CancelOptions are the optional parts of a cancel.
type CancelOptions struct {
	// Grace is the time between SIGTERM and SIGKILL for a running command;
	// unset: the coordinator's default.
	Grace shared.Seconds
	// Wait asks for the answer once the command is terminal (?wait=).
	Wait time.Duration
}

// Cancel cancels a command. A command that already ended is an *Error
// with code already_finished and its Status.
func (c *Client) Cancel(ctx context.Context, id string, opt CancelOptions) (*shared.CommandExecutionRecord, error) {
	var rec shared.CommandExecutionRecord
	r := request{method: http.MethodPost, path: "/api/v1/commands/" + url.PathEscape(id) + "/cancel",
		query: waitQuery(opt.Wait), body: shared.CancelRequest{GraceSeconds: opt.Grace}}
	// A cancel is idempotent (a second one of a running command is
	// accepted again), so retrying it is safe.
	if _, err := c.call(ctx, r, true, &rec); err != nil {
		return nil, fmt.Errorf("cancel command %s: %w", id, err)
	}
	return &rec, nil
}

// HistoryQuery filters GET /api/v1/commands; zero fields are not sent.
type HistoryQuery struct {
	ContainerID string
	Status      shared.Status
	RequestedBy string
	Since       time.Time
	Limit       int
	// Cursor is a page's next_cursor, for the page after it.
	Cursor string
}

// History returns one page of commands, newest first.
func (c *Client) History(ctx context.Context, hq HistoryQuery) (*shared.HistoryPage, error) {
	q := url.Values{}
	set := func(k, v string) {
		if v != "" {
			q.Set(k, v)
		}
	}
	set("container_id", hq.ContainerID)
	set("status", string(hq.Status))
	set("requested_by", hq.RequestedBy)
	if !hq.Since.IsZero() {
		q.Set("since", hq.Since.UTC().Format(time.RFC3339Nano))
	}
	if hq.Limit > 0 {
		q.Set("limit", strconv.Itoa(hq.Limit))
	}
	set("cursor", hq.Cursor)
	var page shared.HistoryPage
	if _, err := c.call(ctx, request{method: http.MethodGet, path: "/api/v1/commands", query: q}, true, &page); err != nil {
		return nil, fmt.Errorf("list commands: %w", err)
	}
	return &page, nil
}

// Containers lists the containers the agents reported.
func (c *Client) Containers(ctx context.Context) (*shared.ContainerList, error) {
	var list shared.ContainerList
	if _, err := c.call(ctx, request{method: http.MethodGet, path: "/api/v1/containers"}, true, &list); err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	return &list, nil
}

// ContainerError is a container reference that names no container, or
// more than one.
type ContainerError struct {
	Ref string
	// Matches are the IDs of the containers the name fits (none, or
	// several).
	Matches []string
}

func (e *ContainerError) Error() string {
	if len(e.Matches) == 0 {
		return fmt.Sprintf("no container is named %q (execq containers lists them)", e.Ref)
	}
	return fmt.Sprintf("%d containers are named %q (%s): give the ID", len(e.Matches), e.Ref, strings.Join(e.Matches, ", "))
}

// ResolveContainer turns a container reference into its ID: a UUID is
// taken as it is (the coordinator says if no agent reported it), anything
// else must be the name of exactly one container as the agents report it.
func (c *Client) ResolveContainer(ctx context.Context, ref string) (string, error) {
	if id, err := uuid.Parse(ref); err == nil && len(ref) == 36 {
		return id.String(), nil
	}
	list, err := c.Containers(ctx)
	if err != nil {
		return "", err
	}
	var ids []string
	for _, ci := range list.Containers {
		if ci.Name == ref {
			ids = append(ids, ci.ID)
		}
	}
	if len(ids) != 1 {
		return "", &ContainerError{Ref: ref, Matches: ids}
	}
	return ids[0], nil
}
