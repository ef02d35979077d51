package app_test

import (
	"math"
	"testing"
	"time"
)

// TestDispatchLatencyFirstLeaseOnDatabaseClock: the dispatch histogram
// observes a command once, at its first lease, and measures it on the
// database's clock (the one that stamped created_at), not the replica's.
// A lease that expires unstarted and is taken again is not a second
// dispatch.
func TestDispatchLatencyFirstLeaseOnDatabaseClock(t *testing.T) {
	t.Parallel()
	b := setup(t)
	rec := b.submit(b.Alice, b.NodeA.Container, "true")
	first := b.leaseCommand(b.NodeA, rec.ID)

	// The lease expires unstarted; the command is leased again.
	if _, err := b.DB.Exec(`UPDATE commands SET lease_expires_at = now() - interval '1 ms' WHERE id = $1`, rec.ID); err != nil {
		t.Fatal(err)
	}
	if again := b.leaseCommand(b.NodeA, rec.ID); again.Attempt != first.Attempt+1 {
		t.Fatalf("second lease has attempt %d, want %d", again.Attempt, first.Attempt+1)
	}

	if got := scrape(t, b, b.URL, "execq_dispatch_latency_seconds_count"); got != 1 {
		t.Errorf("dispatch latency observed %v times for one command leased twice, want 1", got)
	}
	// The claim stamped the first lease's expiry as the database's now() +
	// TTL, so the database's time of that claim is known to the microsecond.
	var created time.Time
	if err := b.DB.QueryRow(`SELECT created_at FROM commands WHERE id = $1`, rec.ID).Scan(&created); err != nil {
		t.Fatal(err)
	}
	want := first.LeaseExpiresAt.Add(-testLeaseTTL).Sub(created).Seconds()
	if got := scrape(t, b, b.URL, "execq_dispatch_latency_seconds_sum"); math.Abs(got-want) > 2e-6 {
		t.Errorf("dispatch latency sum %.6fs, want %.6fs (database claim time minus created_at)", got, want)
	}
}
