package app_test

import (
	"bufio"
	"bytes"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/execq/execq/coordinator/app"
	"github.com/execq/execq/shared"
)

// TestReapersOnTwoReplicas runs two replicas whose reapers race over the same
// expired leases: every lost command is failed exactly once and every lease
// expired before start is released exactly once.
func TestReapersOnTwoReplicas(t *testing.T) {
	t.Parallel()
	const lost, unstarted = 30, 10
	fast := withConfig(func(c *app.Config) {
		// Reap far more often than the default so the two replicas' passes
		// overlap on the same expired rows.
		c.ReapInterval = 5 * time.Millisecond
	})
	b := setup(t, fast)
	other := startReplica(t, b.DBURL, fast)

	for i := range lost + unstarted {
		b.submit(b.Alice, b.NodeA.Container, "sleep", strconv.Itoa(i))
	}
	var leased []shared.LeasedCommand
	eventually(t, within, func() bool {
		leased = append(leased, b.leaseAt(b.URL, b.NodeA, 100, 0).Commands...)
		return len(leased) == lost+unstarted
	}, "leased %d of %d commands", len(leased), lost+unstarted)
	for _, lc := range leased[:lost] {
		b.start(b.NodeA, lc)
	}
	// The agent dies: no heartbeat, no finish. Both reapers race over the
	// leases as they expire together.
	for _, lc := range leased[:lost] {
		got := b.waitStatus(b.Alice, lc.ID, shared.StatusFailed)
		if n := strings.Count(got.Stderr, "agent lost"); n != 1 {
			t.Fatalf("command %s: %d \"agent lost\" lines in stderr %q", lc.ID, n, got.Stderr)
		}
	}
	eventually(t, within, func() bool {
		return b.count(`SELECT count(*) FROM commands WHERE status = 'queued' AND leased_by IS NULL`) == unstarted
	}, "the %d unstarted leases were not all released", unstarted)
	for _, lc := range leased[lost:] {
		if got := b.get(b.Alice, lc.ID); got.Status != shared.StatusQueued {
			t.Fatalf("unstarted command %s became %s", lc.ID, got.Status)
		}
	}

	// The replicas' counters agree: one failure and one release per command.
	sum := func(metric string) float64 {
		return scrape(t, b, b.URL, metric) + scrape(t, b, other.URL, metric)
	}
	if n := sum("execq_commands_agent_lost_total"); n != lost {
		t.Fatalf("replicas counted %v agent losses, want %d", n, lost)
	}
	if n := sum("execq_leases_expired_total"); n != unstarted {
		t.Fatalf("replicas counted %v expired leases, want %d", n, unstarted)
	}

	// Released commands are leased again, with a new attempt, and the failed
	// ones never are.
	again := map[string]int{}
	eventually(t, within, func() bool {
		for _, c := range b.leaseAt(other.URL, b.NodeA, 100, 0).Commands {
			again[c.ID] = c.Attempt
		}
		return len(again) >= unstarted
	}, "released commands not leased again")
	for _, lc := range leased[lost:] {
		if a, ok := again[lc.ID]; !ok || a != lc.Attempt+1 {
			t.Fatalf("command %s leased again with attempt %d (present %v), want %d", lc.ID, a, ok, lc.Attempt+1)
		}
	}
	if len(again) != unstarted {
		t.Fatalf("leased again %d commands, want only the %d unstarted", len(again), unstarted)
	}
}

// scrape reads an unlabelled counter from a replica's /metrics.
func scrape(t testing.TB, b *bundle, base, metric string) float64 {
	t.Helper()
	r := b.doAt(base, http.MethodGet, "/metrics", "", nil)
	if r.Status != http.StatusOK {
		t.Fatalf("metrics: %s", r)
	}
	sc := bufio.NewScanner(bytes.NewReader(r.Body))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if ok && name == metric {
			v, err := strconv.ParseFloat(value, 64)
			if err != nil {
				t.Fatalf("metric %s: %v", metric, err)
			}
			return v
		}
	}
	t.Fatalf("metric %s not exposed", metric)
	return 0
}
