package e2e_test

import (
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/execq/execq/shared"
)

// TestHungHeartbeatIsAbandoned: one heartbeat of a quiet command is swallowed
// by the network (sent, never answered). The agent must give up on it well
// within the lease TTL the coordinator announced (3s here) and heartbeat
// again, so the command is not reaped as "agent lost" and succeeds.
func TestHungHeartbeatIsAbandoned(t *testing.T) {
	t.Parallel()
	s := newStack(t, stackOptions{leaseTTL: 3 * time.Second, heartbeat: time.Second})
	p := newFaultProxy(t, s.url(""))
	var once atomic.Bool
	p.holdWhen(func(r *http.Request) bool {
		return strings.HasSuffix(r.URL.Path, "/heartbeat") && once.CompareAndSwap(false, true)
	})
	c := s.container()
	s.startAgentAt(p.URL())
	s.waitReported(c)

	rec := s.submit(c.ID, "sh", "-c", "sleep 7; echo done")
	got := s.wait(rec.ID, time.Minute)
	if p.held.Load() != 1 {
		t.Fatalf("%d requests held, want the one heartbeat", p.held.Load())
	}
	if got.Status != shared.StatusSucceeded || got.Stdout != "done\n" {
		t.Fatalf("after one hung heartbeat: status %s stdout %q stderr %q; want succeeded", got.Status, got.Stdout, got.Stderr)
	}
}
