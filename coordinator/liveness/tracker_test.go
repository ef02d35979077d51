package liveness

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"
)

// recorder is a Toucher that keeps what it was asked to stamp: the tracker's
// own logic (which nodes a flush writes, and how often) is what is under
// test here; TouchNodes itself is tested against PostgreSQL in the store.
type recorder struct {
	mu    sync.Mutex
	calls [][]string
	fresh []time.Duration
}

func (r *recorder) TouchNodes(_ context.Context, nodes []string, fresh time.Duration) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, slices.Sorted(slices.Values(nodes)))
	r.fresh = append(r.fresh, fresh)
	return len(nodes), nil
}

// TestFlushWritesEachNodeOnce: however many requests a node made since the
// last flush, a flush stamps it once, all nodes in one call; a node whose
// request is still open (a parked long-poll) is stamped at every flush; one
// whose requests all ended is stamped once more, then forgotten.
func TestFlushWritesEachNodeOnce(t *testing.T) {
	r := &recorder{}
	tr := &Tracker{Store: r, Interval: time.Minute}
	for range 1000 {
		tr.Contact("a")() // an idle agent's re-polls
	}
	parked := tr.Contact("b")
	tr.Contact("c")()
	ctx := context.Background()
	for range 2 {
		if err := tr.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	parked() // its end is a contact since the last flush
	for range 2 {
		if err := tr.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	want := [][]string{{"a", "b", "c"}, {"b"}, {"b"}}
	if !slices.EqualFunc(r.calls, want, slices.Equal) {
		t.Errorf("flushes stamped %v, want %v (then nothing)", r.calls, want)
	}
	if r.fresh[0] != 30*time.Second {
		t.Errorf("rows stamped within %v skipped, want half the interval", r.fresh[0])
	}
}
