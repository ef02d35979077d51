package client

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/execq/execq/shared"
)

// Reports sends starts and finishes of several commands in one request
// (POST /agent/v1/reports) and returns each one's answer.
func (c *Client) Reports(ctx context.Context, req shared.ReportsRequest) (*shared.ReportsResponse, error) {
	if req.Starts == nil {
		req.Starts = []shared.StartItem{}
	}
	if req.Finishes == nil {
		req.Finishes = []shared.FinishItem{}
	}
	for i := range req.Finishes {
		if req.Finishes[i].Chunks == nil {
			req.Finishes[i].Chunks = []shared.Chunk{}
		}
	}
	var out shared.ReportsResponse
	if err := req.Validate(); err != nil {
		return &out, fmt.Errorf("report commands: invalid request: %w", err)
	}
	op := fmt.Sprintf("report %d starts and %d finishes", len(req.Starts), len(req.Finishes))
	err := c.do(ctx, c.short, op, http.MethodPost, shared.AgentPathReports, req, &out)
	if err == nil && (len(out.Starts) != len(req.Starts) || len(out.Finishes) != len(req.Finishes)) {
		err = fmt.Errorf("%s: the coordinator answered %d starts and %d finishes", op, len(out.Starts), len(out.Finishes))
	}
	return &out, err
}

// Batching is a Client whose Start and Finish go to the coordinator
// together with those of the agent's other commands: one reports request,
// and on the coordinator one commit, for all that are ready. Batching is
// natural: a call that finds fewer than two requests in flight is sent at
// once, so a lone command waits for nothing; calls made meanwhile go in the
// next request. Each call gets its own answer, as the per-command route
// would give it (an *Error for a refusal), so callers cannot tell the
// difference. A coordinator without the reports route (older than this
// agent, during a rolling upgrade) answers 404: from then on each call goes
// to its per-command route.
type Batching struct {
	*Client

	mu       sync.Mutex
	queue    []*report
	inflight int
	legacy   bool
}

// maxBatchRequests is how many reports requests may be in flight at once:
// more than one, so a finish uploading megabytes does not hold up a start.
const maxBatchRequests = 2

// NewBatching wraps c.
func NewBatching(c *Client) *Batching { return &Batching{Client: c} }

// report is one start or finish waiting for its answer.
type report struct {
	ctx    context.Context
	start  *shared.StartItem
	finish *shared.FinishItem
	op     string

	startRes  shared.StartResponse
	finishRes shared.FinishResponse
	err       error
	done      chan struct{}
}

func (r *report) size() (bytes, chunks int) {
	if r.finish == nil {
		return 0, 0
	}
	for _, c := range r.finish.Chunks {
		bytes += len(c.Data)
	}
	return bytes, len(r.finish.Chunks)
}

// Start asks the coordinator to mark a leased command running. Only a nil
// error allows executing it.
func (b *Batching) Start(ctx context.Context, commandID string, attempt int) (*shared.StartResponse, error) {
	r := &report{ctx: ctx, op: "start command " + commandID, start: &shared.StartItem{CommandID: commandID, Attempt: attempt}}
	if err := b.send(r); err != nil {
		return &shared.StartResponse{}, err
	}
	res := r.startRes
	return &res, nil
}

// Finish reports a command's end with its last output.
func (b *Batching) Finish(ctx context.Context, commandID string, req shared.FinishRequest) (*shared.FinishResponse, error) {
	if req.Chunks == nil {
		req.Chunks = []shared.Chunk{}
	}
	if err := req.Validate(); err != nil {
		return &shared.FinishResponse{}, fmt.Errorf("finish command %s: invalid request: %w", commandID, err)
	}
	r := &report{ctx: ctx, op: "finish command " + commandID, finish: &shared.FinishItem{CommandID: commandID, FinishRequest: req}}
	if err := b.send(r); err != nil {
		return &shared.FinishResponse{}, err
	}
	res := r.finishRes
	return &res, nil
}

// send queues r and waits for its answer or the end of its context. A call
// abandoned that way may still be sent and done: as with a request whose
// answer was lost, the caller cannot know.
func (b *Batching) send(r *report) error {
	r.done = make(chan struct{})
	b.mu.Lock()
	if b.legacy {
		b.mu.Unlock()
		b.alone(r)
		return r.err
	}
	b.queue = append(b.queue, r)
	if b.inflight < maxBatchRequests {
		b.inflight++
		go b.drain()
	}
	b.mu.Unlock()
	select {
	case <-r.done:
		return r.err
	case <-r.ctx.Done():
		return fmt.Errorf("%s: %w", r.op, r.ctx.Err())
	}
}

func (b *Batching) drain() {
	for {
		batch, legacy := b.take()
		if batch == nil {
			return
		}
		if legacy {
			for _, r := range batch {
				b.alone(r)
			}
			continue
		}
		b.sendBatch(batch)
	}
}

// take removes the next batch from the queue: at most MaxReportItems, one
// request's worth of output, and each command's finish once (the
// coordinator refuses a request finishing one command twice).
func (b *Batching) take() ([]*report, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var batch, rest []*report
	bytes, chunks := 0, 0
	finishing := map[string]bool{}
	for _, r := range b.queue {
		if r.ctx.Err() != nil {
			close(r.done) // its caller has returned
			continue
		}
		nb, nc := r.size()
		dup := r.finish != nil && finishing[r.finish.CommandID]
		if len(batch) >= shared.MaxReportItems || dup ||
			(len(batch) > 0 && (bytes+nb > shared.MaxRequestOutputBytes || chunks+nc > shared.MaxRequestChunks)) {
			rest = append(rest, r)
			continue
		}
		if r.finish != nil {
			finishing[r.finish.CommandID] = true
		}
		bytes, chunks = bytes+nb, chunks+nc
		batch = append(batch, r)
	}
	b.queue = rest
	if len(batch) == 0 {
		b.inflight--
		return nil, false
	}
	return batch, b.legacy
}

// sendBatch sends one reports request and hands each call its answer. The
// request is bounded by the latest of the calls' deadlines; each caller
// stops waiting at its own.
func (b *Batching) sendBatch(batch []*report) {
	var req shared.ReportsRequest
	var latest time.Time
	for _, r := range batch {
		if r.start != nil {
			req.Starts = append(req.Starts, *r.start)
		} else {
			req.Finishes = append(req.Finishes, *r.finish)
		}
		if d, ok := r.ctx.Deadline(); ok && d.After(latest) {
			latest = d
		}
	}
	ctx, cancel := context.WithoutCancel(batch[0].ctx), func() {}
	if !latest.IsZero() {
		ctx, cancel = context.WithDeadline(ctx, latest)
	}
	resp, err := b.Reports(ctx, req)
	cancel()
	var e *Error
	if errors.As(err, &e) && e.StatusCode == http.StatusNotFound && e.Code == "not_found" {
		b.mu.Lock()
		b.legacy = true
		b.mu.Unlock()
		for _, r := range batch {
			b.alone(r)
		}
		return
	}
	si, fi := 0, 0
	for _, r := range batch {
		switch {
		case err != nil:
			r.err = fmt.Errorf("%s: %w", r.op, err)
		case r.start != nil:
			o := resp.Starts[si]
			si++
			r.startRes, r.err = o.StartResponse, itemErr(r.op, r.start.CommandID, o.CommandID, o.Error)
		default:
			o := resp.Finishes[fi]
			fi++
			r.finishRes, r.err = o.FinishResponse, itemErr(r.op, r.finish.CommandID, o.CommandID, o.Error)
		}
		close(r.done)
	}
}

// itemErr turns an item's refusal into the *Error its per-command route
// would have given.
func itemErr(op, want, got string, ie *shared.ItemError) error {
	if got != want {
		return fmt.Errorf("%s: the coordinator answered for command %s instead", op, got)
	}
	if ie == nil {
		return nil
	}
	return &Error{Op: op, StatusCode: ie.Status, Code: ie.Code, Message: ie.Message, Offsets: ie.Offsets}
}

// alone sends r to its per-command route.
func (b *Batching) alone(r *report) {
	defer close(r.done)
	if r.start != nil {
		res, err := b.Client.Start(r.ctx, r.start.CommandID, r.start.Attempt)
		r.startRes, r.err = *res, err
		return
	}
	res, err := b.Client.Finish(r.ctx, r.finish.CommandID, r.finish.FinishRequest)
	r.finishRes, r.err = *res, err
}
