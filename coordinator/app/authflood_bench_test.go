package app_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/execq/execq/coordinator/app"
)

// BenchmarkAuthFlood measures what a flood of bad tokens from one address
// (127.0.0.2) costs another user: the p99 of that user's GET of a record
// under the flood against the p99 of the same GET without it, measured in
// the same run. "limited" runs the default failed-authentication limit,
// "unlimited" lifts it (every bad token costs a database lookup), as
// before the limit existed. The flood runs at floodRate in both.
//
//	TEST_DATABASE_URL=… go test -run '^$' -bench AuthFlood -benchtime 2000x ./coordinator/app
func BenchmarkAuthFlood(b *testing.B) {
	for _, tc := range []struct {
		name  string
		burst int
	}{{"limited", app.DefaultConfig().AuthFailBurst}, {"unlimited", 1 << 30}} {
		b.Run(tc.name, func(b *testing.B) {
			bd := setup(b, withConfig(func(c *app.Config) {
				c.AuthFailBurst = tc.burst
				c.AuthFailInterval = app.DefaultConfig().AuthFailInterval
				c.LeaseTTL, c.Heartbeat, c.ReapInterval = time.Hour, time.Minute, time.Minute
			}))
			bd.client = plainClient(b)
			waitListeners(b, bd.DB, 1)
			rec := bd.submit(bd.Alice, bd.NodeB.Container, "true")
			ctx := context.Background()
			get := func() time.Duration {
				start := time.Now()
				r, err := bd.request(ctx, bd.URL, http.MethodGet, commandPath(rec.ID), bd.Alice.Token, nil)
				if err != nil || r.Status != http.StatusOK {
					b.Fatalf("GET: %v %s", err, r)
				}
				return time.Since(start)
			}
			var base []time.Duration
			for range 500 {
				base = append(base, get())
			}

			// The flood: floodRate bad tokens a second over 8 connections,
			// the same rate in both cases so the figures compare.
			fctx, stop := context.WithCancel(ctx)
			pace := rate.NewLimiter(floodRate, 50)
			client := floodClient(b)
			var sent, limited atomic.Int64
			var wg sync.WaitGroup
			for w := range 8 {
				wg.Go(func() {
					for i := 0; pace.Wait(fctx) == nil; i++ {
						req, _ := http.NewRequestWithContext(fctx, http.MethodGet, bd.URL+"/api/v1/commands", nil)
						req.Header.Set("Authorization", fmt.Sprintf("Bearer execq_u_bad-%d-%d", w, i))
						resp, err := client.Do(req)
						if err != nil {
							continue
						}
						_, _ = io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						sent.Add(1)
						if resp.StatusCode == http.StatusTooManyRequests {
							limited.Add(1)
						}
					}
				})
			}
			time.Sleep(200 * time.Millisecond) // past the burst
			sent.Store(0)
			limited.Store(0)
			started := time.Now()
			var flood []time.Duration
			b.ResetTimer()
			for b.Loop() {
				flood = append(flood, get())
			}
			b.StopTimer()
			elapsed := time.Since(started)
			stop()
			wg.Wait()

			ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
			bp99, fp99 := percentile(base, 99), percentile(flood, 99)
			b.ReportMetric(ms(bp99), "base-p99-ms")
			b.ReportMetric(ms(fp99), "flood-p99-ms")
			if bp99 > 0 {
				b.ReportMetric(float64(fp99)/float64(bp99), "p99/base-p99")
			}
			b.ReportMetric(ms(percentile(base, 50)), "base-p50-ms")
			b.ReportMetric(ms(percentile(flood, 50)), "flood-p50-ms")
			b.ReportMetric(float64(sent.Load())/elapsed.Seconds(), "bad-req/s")
			if n := sent.Load(); n > 0 {
				b.ReportMetric(float64(limited.Load())/float64(n), "share-429")
			}
		})
	}
}

// floodRate is the bad tokens a second of BenchmarkAuthFlood: what one
// client on this 2-CPU machine sends without the limit.
const floodRate = 2000

// floodClient sends from 127.0.0.2, another client address than the
// benchmark's user, with enough idle connections for its workers. It is not
// held to the OpenAPI description: checking would slow the flood it measures.
func floodClient(b *testing.B) *http.Client {
	tr := transportFrom(b, "127.0.0.2")
	tr.MaxIdleConnsPerHost = 16
	return &http.Client{Transport: tr, Timeout: time.Minute}
}
