package app_test

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/execq/execq/coordinator/app"
	"github.com/execq/execq/shared"
)

// BenchmarkLongPollWake measures how long a parked agent poll takes to
// return after an enqueue on the same replica: from the moment the submit
// answer is back to the moment the poll's answer is back. The baseline is a
// trivial authenticated GET on the same server, measured in the same
// iterations, so the figures can be quoted against it.
//
//	TEST_DATABASE_URL=… go test -run '^$' -bench LongPollWake -benchtime 500x ./coordinator/app
func BenchmarkLongPollWake(b *testing.B) { benchmarkWake(b, false) }

// BenchmarkLongPollWakeCrossReplica parks the poll on one replica and
// submits through another, so the wake-up goes through PostgreSQL's NOTIFY
// to the other process's listener.
func BenchmarkLongPollWakeCrossReplica(b *testing.B) { benchmarkWake(b, true) }

func benchmarkWake(b *testing.B, cross bool) {
	quiet := withConfig(func(c *app.Config) {
		// Leases never expire and the reaper stays idle during the run.
		c.LeaseTTL, c.Heartbeat, c.ReapInterval = time.Hour, time.Minute, time.Minute
	})
	bd := setup(b, quiet)
	bd.client = plainClient(b)
	park, submit := bd.replica, bd.replica
	if cross {
		submit = startReplica(b, bd.DBURL, quiet)
		waitListeners(b, bd.DB, 2)
	} else {
		waitListeners(b, bd.DB, 1)
	}
	// The baseline reads a command of node B, which never polls here.
	probe := bd.submit(bd.Alice, bd.NodeB.Container, "true")

	ctx := context.Background()
	var wake, get []time.Duration
	for b.Loop() {
		start := time.Now()
		r, err := bd.request(ctx, park.URL, http.MethodGet, commandPath(probe.ID), bd.Alice.Token, nil)
		if err != nil || r.Status != http.StatusOK {
			b.Fatalf("baseline GET: %v %s", err, r)
		}
		get = append(get, time.Since(start))

		ch := bd.parkPoll(ctx, park.URL, bd.NodeA, parkedWait)
		for park.App.Poller.Parked() != 1 {
			time.Sleep(50 * time.Microsecond)
		}
		// Subscribed is not yet parked: let the poll's first (empty) claim
		// finish so the enqueue is found by the wake-up, not by that claim.
		time.Sleep(2 * time.Millisecond)

		r, err = bd.request(ctx, submit.URL, http.MethodPost, submitPath(bd.NodeA.Container), bd.Alice.Token,
			shared.SubmitRequest{Program: "true"})
		submitted := time.Now()
		if err != nil || r.Status != http.StatusAccepted {
			b.Fatalf("submit: %v %s", err, r)
		}
		res := <-ch
		var lr shared.LeaseResponse
		if res.err != nil || res.resp.Status != http.StatusOK || json.Unmarshal(res.resp.Body, &lr) != nil || len(lr.Commands) != 1 {
			b.Fatalf("poll: %v %s", res.err, res.resp)
		}
		wake = append(wake, res.returned.Sub(submitted))

		// Finish it so the queue stays as empty as a healthy one.
		lc := lr.Commands[0]
		for _, step := range []struct {
			action string
			body   any
		}{
			{"start", shared.StartRequest{Attempt: lc.Attempt}},
			{"finish", shared.FinishRequest{Attempt: lc.Attempt, ExitCode: exitCode(0)}},
		} {
			r, err := bd.request(ctx, park.URL, http.MethodPost, agentCommandPath(lc.ID, step.action), bd.NodeA.Token, step.body)
			if err != nil || r.Status != http.StatusOK {
				b.Fatalf("%s: %v %s", step.action, err, r)
			}
		}
	}
	b.StopTimer()

	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	wp50, wp99 := percentile(wake, 50), percentile(wake, 99)
	gp50, gp99 := percentile(get, 50), percentile(get, 99)
	b.ReportMetric(ms(wp50), "p50-ms")
	b.ReportMetric(ms(wp99), "p99-ms")
	b.ReportMetric(ms(gp50), "get-p50-ms")
	b.ReportMetric(ms(gp99), "get-p99-ms")
	if gp50 > 0 {
		b.ReportMetric(float64(wp50)/float64(gp50), "p50/get-p50")
	}
	b.ReportMetric(float64(len(wake)), "samples")
}

// percentile returns the p-th percentile (nearest rank) of ds.
func percentile(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := (p*len(s) + 99) / 100 // ceil(p/100 * n)
	return s[max(rank, 1)-1]
}
