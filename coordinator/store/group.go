package store

import (
	"context"
	"errors"
	"sync"
)

// group commits concurrent calls of one kind (agents' starts, heartbeats,
// finishes) together: one statement, one commit for many commands.
// Batching is natural: a call that finds fewer than slots batches in flight
// runs at once, so an idle coordinator adds no wait; calls arriving while
// the batches are in flight queue, and the next batch takes up to max of
// them (and up to maxBytes of their output). The busier the database, the
// larger the batches, and the fewer commits per command.
//
// Each call gets its own result (a lost lease, a gap) from run. An error of
// run is the batch's — its statements committed nothing, or the database
// cannot say — and is every call's answer: none is told it succeeded. A
// batch that failed for a reason other than the database being unreachable
// or slow (a value one call brought that PostgreSQL refused) is run again a
// call at a time, so only that call fails.
type group[C, R any] struct {
	run      func(ctx context.Context, calls []C) ([]R, error)
	size     func(C) int // bytes of output a call carries
	max      int
	maxBytes int
	slots    int
	// admit: batches are new work (claims) and wait for admission like
	// any call not marked WithPriority; otherwise they keep leases
	// (reports) and use the reserved share of the pool.
	admit bool

	mu      sync.Mutex
	queue   []*pending[C, R]
	running int
	// batches counts the batches run, for tests.
	batches int
}

type pending[C, R any] struct {
	ctx  context.Context
	call C
	res  R
	err  error
	done chan struct{}
}

func newGroup[C, R any](max, maxBytes, slots int, size func(C) int, run func(context.Context, []C) ([]R, error)) *group[C, R] {
	return &group[C, R]{run: run, size: size, max: max, maxBytes: maxBytes, slots: slots}
}

// do runs call in the next batch and returns its result. A call whose ctx
// ends before a batch takes it is dropped with ctx's error; once taken, its
// answer is awaited, bounded by the query timeout, so the answer is always
// the truth about what was written.
func (g *group[C, R]) do(ctx context.Context, call C) (R, error) {
	p := &pending[C, R]{ctx: ctx, call: call, done: make(chan struct{})}
	g.mu.Lock()
	g.queue = append(g.queue, p)
	if g.running < g.slots {
		g.running++
		go g.drain()
	}
	g.mu.Unlock()
	<-p.done
	return p.res, p.err
}

// drain runs batches until the queue is empty.
func (g *group[C, R]) drain() {
	for {
		batch := g.take()
		if batch == nil {
			return
		}
		g.runBatch(batch)
	}
}

// take removes the next batch from the queue, or ends this drainer when
// there is nothing to take.
func (g *group[C, R]) take() []*pending[C, R] {
	g.mu.Lock()
	defer g.mu.Unlock()
	var batch []*pending[C, R]
	bytes, n := 0, 0
	for n < len(g.queue) && len(batch) < g.max {
		p := g.queue[n]
		if p.ctx.Err() != nil {
			p.err = p.ctx.Err()
			close(p.done)
			n++
			continue
		}
		b := g.size(p.call)
		if len(batch) > 0 && bytes+b > g.maxBytes {
			break
		}
		bytes += b
		batch = append(batch, p)
		n++
	}
	g.queue = append(g.queue[:0:0], g.queue[n:]...)
	if len(batch) == 0 {
		g.running--
		return nil
	}
	g.batches++
	return batch
}

func (g *group[C, R]) runBatch(batch []*pending[C, R]) {
	calls := make([]C, len(batch))
	for i, p := range batch {
		calls[i] = p.call
	}
	// The batch is everyone's: no single caller's context may cut it
	// short. The store bounds it (deadline, commitOne).
	ctx := context.Background()
	if !g.admit {
		ctx = WithPriority(ctx)
	}
	res, err := g.run(ctx, calls)
	if err != nil && len(batch) > 1 && !errors.Is(err, ErrUnavailable) && !errors.Is(err, ErrTimeout) {
		for _, p := range batch {
			r, err := g.run(ctx, []C{p.call})
			if err == nil {
				p.res = r[0]
			}
			p.err = err
			close(p.done)
		}
		return
	}
	for i, p := range batch {
		if err != nil {
			p.err = err
		} else {
			p.res = res[i]
		}
		close(p.done)
	}
}

// stats returns the batches run so far and the calls waiting now.
func (g *group[C, R]) stats() (batches, queued int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.batches, len(g.queue)
}
