package client

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	cleanhttp "github.com/hashicorp/go-cleanhttp"
	retryablehttp "github.com/hashicorp/go-retryablehttp"

	"github.com/execq/execq/shared"
)

// Defaults for zero Config fields.
const (
	DefaultRetryMax       = 4
	DefaultRetryWaitMin   = 250 * time.Millisecond
	DefaultRetryWaitMax   = 5 * time.Second
	DefaultRequestTimeout = 30 * time.Second
	DefaultMaxLeaseWait   = 30 * time.Second
	// pollSlack is how much longer than the wait a lease attempt may take
	// before the client gives up on it: the coordinator answers a parked
	// poll at the end of the wait, plus network and queueing time.
	pollSlack = 30 * time.Second
	// maxResponseBytes bounds a decoded answer. A lease of 100 commands
	// with maximal arguments is about 35 MiB of JSON.
	maxResponseBytes = 64 << 20
	maxErrorBytes    = 64 << 10
)

// Config configures a Client.
type Config struct {
	// BaseURL is the coordinator, e.g. "https://coordinator.example:8443".
	BaseURL string
	// Token is the node's bearer token.
	Token string
	// Logger receives each attempt of a request at Debug, unless the
	// call's context carries its own (WithLogger); nil discards them.
	Logger *slog.Logger
	// RetryMax is how often a request that failed on the network or with a
	// 5xx is retried before the error is returned.
	RetryMax int
	// RetryWaitMin and RetryWaitMax bound the exponential backoff between
	// retries.
	RetryWaitMin, RetryWaitMax time.Duration
	// RequestTimeout bounds one attempt of every request but the lease.
	RequestTimeout time.Duration
	// MaxLeaseWait is the longest wait Lease is asked for; a lease attempt
	// times out 30s after it.
	MaxLeaseWait time.Duration
	// TLS configures the default transport's TLS (see NewTLSConfig); nil
	// verifies the coordinator against the system roots.
	TLS *tls.Config
	// Transport replaces the default pooled transport (tests).
	Transport http.RoundTripper
	// UserAgent is sent with every request.
	UserAgent string
}

// NewTransport is the agent's default transport to the coordinator, with
// tlsConfig for an https:// coordinator (nil: Go's defaults).
func NewTransport(tlsConfig *tls.Config) *http.Transport {
	t := cleanhttp.DefaultPooledTransport()
	// One agent runs up to 100 commands, each heartbeating, plus the
	// polls: keep their connections instead of redialling.
	t.MaxIdleConnsPerHost = 128
	t.TLSClientConfig = tlsConfig
	// HTTP/1.1 only, over TLS too (cleanhttp forces an attempt at
	// HTTP/2). The coordinator parks a lease poll that finds nothing off
	// net/http, holding its connection and a small record and no
	// goroutine; that needs the connection to itself, which an HTTP/2
	// stream does not have: parked inside net/http a poll costs ≈ 57 KiB,
	// and an idle fleet is thousands of them. HTTP/2 would buy an agent
	// little: its requests are one poll, a control poll while commands
	// run, and the heartbeats and reports of its commands, each on a kept
	// connection of its own (MaxIdleConnsPerHost above).
	t.ForceAttemptHTTP2 = false
	t.Protocols = new(http.Protocols)
	t.Protocols.SetHTTP1(true)
	return t
}

// Client is the agent's protocol client. It is safe for concurrent use.
type Client struct {
	base      string
	token     string
	userAgent string
	short     *retryablehttp.Client
	poll      *retryablehttp.Client
}

// New returns a client for cfg.
func New(cfg Config) (*Client, error) {
	u, err := url.Parse(cfg.BaseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("coordinator URL %q: want http(s)://host[:port]", cfg.BaseURL)
	}
	if cfg.Token == "" {
		return nil, errors.New("coordinator client: empty node token")
	}
	if cfg.RetryMax == 0 {
		cfg.RetryMax = DefaultRetryMax
	}
	if cfg.RetryWaitMin == 0 {
		cfg.RetryWaitMin = DefaultRetryWaitMin
	}
	if cfg.RetryWaitMax == 0 {
		cfg.RetryWaitMax = DefaultRetryWaitMax
	}
	if cfg.RequestTimeout == 0 {
		cfg.RequestTimeout = DefaultRequestTimeout
	}
	if cfg.MaxLeaseWait == 0 {
		cfg.MaxLeaseWait = DefaultMaxLeaseWait
	}
	if cfg.Transport == nil {
		cfg.Transport = NewTransport(cfg.TLS)
	}
	if cfg.UserAgent == "" {
		cfg.UserAgent = "execq-agent"
	}
	logs := attemptLog{cfg.Logger}
	if logs.base == nil {
		logs.base = slog.New(slog.DiscardHandler)
	}
	mk := func(timeout time.Duration) *retryablehttp.Client {
		return &retryablehttp.Client{
			HTTPClient: &http.Client{Transport: cfg.Transport, Timeout: timeout},
			// Attempts are logged by the hooks below, through the
			// logger of the call's context (logger.go).
			Logger:         nil,
			RequestLogHook: logs.request,
			RetryWaitMin:   cfg.RetryWaitMin,
			RetryWaitMax:   cfg.RetryWaitMax,
			RetryMax:       cfg.RetryMax,
			CheckRetry:     logs.checkRetry,
			Backoff:        backoff,
			// Hand back the last answer so its JSON envelope can be read.
			ErrorHandler: retryablehttp.PassthroughErrorHandler,
		}
	}
	return &Client{
		base:      strings.TrimRight(cfg.BaseURL, "/"),
		token:     cfg.Token,
		userAgent: cfg.UserAgent,
		short:     mk(cfg.RequestTimeout),
		poll:      mk(cfg.MaxLeaseWait + pollSlack),
	}, nil
}

// ReportInventory replaces the node's container inventory
// (PUT /agent/v1/containers).
func (c *Client) ReportInventory(ctx context.Context, containers []shared.ContainerReport) (*shared.InventoryResponse, error) {
	if containers == nil {
		containers = []shared.ContainerReport{}
	}
	var out shared.InventoryResponse
	err := c.do(ctx, c.short, "report inventory", http.MethodPut, shared.AgentPathContainers, shared.InventoryRequest{Containers: containers}, &out)
	return &out, err
}

// Lease long-polls for up to req.Max commands (POST /agent/v1/lease). An
// answer without commands is normal.
func (c *Client) Lease(ctx context.Context, req shared.LeaseRequest) (*shared.LeaseResponse, error) {
	var out shared.LeaseResponse
	err := c.do(ctx, c.poll, "lease commands", http.MethodPost, shared.AgentPathLease, req, &out)
	return &out, err
}

// Start asks the coordinator to mark a leased command running. Only a nil
// error allows executing it.
func (c *Client) Start(ctx context.Context, commandID string, attempt int) (*shared.StartResponse, error) {
	var out shared.StartResponse
	err := c.do(ctx, c.short, "start command "+commandID, http.MethodPost, commandPath(commandID, "start"), shared.StartRequest{Attempt: attempt}, &out)
	return &out, err
}

// Release gives back a lease the agent will not start, so the command is
// queued again at once rather than when the lease expires.
func (c *Client) Release(ctx context.Context, commandID string, attempt int) (*shared.ReleaseResponse, error) {
	var out shared.ReleaseResponse
	err := c.do(ctx, c.short, "release command "+commandID, http.MethodPost, commandPath(commandID, "release"), shared.ReleaseRequest{Attempt: attempt}, &out)
	return &out, err
}

// Heartbeat renews the lease of a running command and appends output.
func (c *Client) Heartbeat(ctx context.Context, commandID string, req shared.HeartbeatRequest) (*shared.HeartbeatResponse, error) {
	if req.Chunks == nil {
		req.Chunks = []shared.Chunk{}
	}
	var out shared.HeartbeatResponse
	// The coordinator would refuse it (400) after a round trip; an agent
	// bug is reported here, with what is wrong.
	if err := req.Validate(); err != nil {
		return &out, fmt.Errorf("heartbeat command %s: invalid request: %w", commandID, err)
	}
	err := c.do(ctx, c.short, "heartbeat command "+commandID, http.MethodPost, commandPath(commandID, "heartbeat"), req, &out)
	return &out, err
}

// Finish reports a command's end with its last output.
func (c *Client) Finish(ctx context.Context, commandID string, req shared.FinishRequest) (*shared.FinishResponse, error) {
	if req.Chunks == nil {
		req.Chunks = []shared.Chunk{}
	}
	var out shared.FinishResponse
	if err := req.Validate(); err != nil {
		return &out, fmt.Errorf("finish command %s: invalid request: %w", commandID, err)
	}
	err := c.do(ctx, c.short, "finish command "+commandID, http.MethodPost, commandPath(commandID, "finish"), req, &out)
	return &out, err
}

func commandPath(id, action string) string {
	return shared.AgentPathCommands + url.PathEscape(id) + "/" + action
}

func (c *Client) do(ctx context.Context, hc *retryablehttp.Client, op, method, path string, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return fmt.Errorf("%s: encode request: %w", op, err)
	}
	req, err := retryablehttp.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.userAgent)
	resp, err := hc.Do(req)
	if err != nil {
		if resp != nil {
			resp.Body.Close()
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%s: %w", op, ctx.Err())
		}
		if reason := tlsReason(err); reason != "" {
			return &TLSError{Op: op, Reason: reason, Err: err}
		}
		return fmt.Errorf("%s: %w", op, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		if err := json.NewDecoder(io.LimitReader(resp.Body, maxResponseBytes)).Decode(out); err != nil {
			return fmt.Errorf("%s: decode %d answer: %w", op, resp.StatusCode, err)
		}
		return nil
	}
	return decodeError(op, resp)
}

func decodeError(op string, resp *http.Response) error {
	e := &Error{Op: op, StatusCode: resp.StatusCode}
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBytes))
	// GapBody is the error envelope plus offsets: one decode covers both.
	var body struct {
		Error  shared.ErrorDetail `json:"error"`
		Stdout *int64             `json:"stdout_offset"`
		Stderr *int64             `json:"stderr_offset"`
	}
	if json.Unmarshal(raw, &body) == nil {
		e.Code, e.Message = body.Error.Code, body.Error.Message
		if body.Stdout != nil && body.Stderr != nil {
			e.Offsets = &shared.Offsets{Stdout: *body.Stdout, Stderr: *body.Stderr}
		}
	}
	if e.Message == "" {
		e.Message = strings.TrimSpace(string(raw[:min(len(raw), 200)]))
	}
	return e
}

// checkRetry retries network errors and 5xx answers and never a 4xx: a 4xx
// is the coordinator's considered answer (lease lost, gap, forbidden...).
func checkRetry(ctx context.Context, resp *http.Response, err error) (bool, error) {
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	if err == nil && resp.StatusCode >= 400 && resp.StatusCode < 500 {
		return false, nil
	}
	if err != nil && tlsReason(err) != "" {
		return false, nil // a certificate problem: see TLSError
	}
	// Network errors except the hopeless ones (bad scheme, TLS trust),
	// 5xx except 501.
	return retryablehttp.DefaultRetryPolicy(ctx, resp, err)
}

// backoff is exponential from min, capped at max, with "equal jitter" (half
// fixed, half random) so a fleet of agents that lost the coordinator at the
// same moment does not come back in lockstep. A 503's Retry-After (seconds)
// is honoured up to max.
func backoff(minWait, maxWait time.Duration, attempt int, resp *http.Response) time.Duration {
	if resp != nil && resp.StatusCode == http.StatusServiceUnavailable {
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s >= 0 {
			return min(time.Duration(s)*time.Second, maxWait)
		}
	}
	d := maxWait
	if attempt < 30 {
		d = min(minWait<<attempt, maxWait)
	}
	if d <= 1 {
		return d
	}
	half := d / 2
	return half + rand.N(half+1)
}
