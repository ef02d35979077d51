package metrics

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/execq/execq/coordinator/store"
)

// Buckets wide enough for both sub-millisecond dispatch and hour-long commands.
var latencyBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 14400}

// Metrics holds the collectors the API and lease code update.
type Metrics struct {
	HTTPRequests *prometheus.CounterVec
	HTTPDuration *prometheus.HistogramVec
	// Dispatch is the time from enqueue to first lease (queue wait plus
	// pickup), on the database's clock; leases after an expiry are not counted.
	Dispatch prometheus.Histogram
	// Exec is the time from start to finish as seen by the coordinator; its
	// _count by status is the number of commands finished by their agents.
	Exec      *prometheus.HistogramVec
	AgentLost prometheus.Counter
	Requeued  prometheus.Counter
	// Pruned counts terminal commands deleted past the retention.
	Pruned prometheus.Counter
	// Shed counts API requests refused 429 because the database was
	// saturated; Undelivered, leases released because their poll's answer
	// could not be delivered.
	Shed        prometheus.Counter
	Undelivered prometheus.Counter
}

// New registers the coordinator's metrics on reg. parked reports the current
// number of parked long-polls; st is read at scrape time for queue depth.
func New(reg prometheus.Registerer, st *store.Store, parked func() int) *Metrics {
	m := &Metrics{
		HTTPRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "execq_http_requests_total", Help: "HTTP requests by route template, method and status code.",
		}, []string{"route", "method", "code"}),
		HTTPDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "execq_http_request_duration_seconds", Help: "HTTP request duration by route template (long-polls included).",
			Buckets: latencyBuckets,
		}, []string{"route", "method"}),
		Dispatch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "execq_dispatch_latency_seconds", Help: "Time from enqueue to first lease by an agent.", Buckets: latencyBuckets,
		}),
		Exec: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "execq_exec_duration_seconds", Help: "Time from start to finish of commands, by final status.", Buckets: latencyBuckets,
		}, []string{"status"}),
		AgentLost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "execq_commands_agent_lost_total", Help: "Running commands failed by the reaper because heartbeats stopped.",
		}),
		Requeued: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "execq_leases_expired_total", Help: "Leases that expired before start; the commands were queued again.",
		}),
		Pruned: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "execq_commands_pruned_total", Help: "Terminal commands deleted, with their output, because they finished longer ago than the retention.",
		}),
		Shed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "execq_requests_shed_total", Help: "API requests refused 429 overloaded because too many database calls were waiting.",
		}),
		Undelivered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "execq_leases_undelivered_total", Help: "Leases claimed for a poll whose answer could not be delivered; released at once.",
		}),
	}
	reg.MustRegister(m.HTTPRequests, m.HTTPDuration, m.Dispatch, m.Exec, m.AgentLost, m.Requeued, m.Pruned, m.Shed, m.Undelivered,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "execq_db_admission_waiting", Help: "Database calls waiting for one of the pool's unreserved connections.",
		}, func() float64 { return float64(st.Waiting()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "execq_longpolls_parked", Help: "Agent long-polls waiting on this replica.",
		}, func() float64 { return float64(parked()) }),
		&queueCollector{st: st},
		collectors.NewDBStatsCollector(st.DB().DB, "execq"),
	)
	return m
}

// queueCollector reads queue depth from the job table at scrape time, so
// every replica reports the same, true figure.
type queueCollector struct{ st *store.Store }

var (
	queueDepth = prometheus.NewDesc("execq_queue_depth", "Commands by live status (queued, running).", []string{"status"}, nil)
	queueAge   = prometheus.NewDesc("execq_queue_oldest_age_seconds", "Age of the oldest queued command (0 when none).", nil, nil)
	scrapeErr  = prometheus.NewDesc("execq_queue_scrape_error", "1 if the queue could not be read from PostgreSQL at this scrape.", nil, nil)
)

func (c *queueCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- queueDepth
	ch <- queueAge
	ch <- scrapeErr
}

func (c *queueCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s, err := c.st.Stats(ctx)
	if err != nil {
		ch <- prometheus.MustNewConstMetric(scrapeErr, prometheus.GaugeValue, 1)
		return
	}
	ch <- prometheus.MustNewConstMetric(scrapeErr, prometheus.GaugeValue, 0)
	ch <- prometheus.MustNewConstMetric(queueDepth, prometheus.GaugeValue, float64(s.Queued), "queued")
	ch <- prometheus.MustNewConstMetric(queueDepth, prometheus.GaugeValue, float64(s.Running), "running")
	ch <- prometheus.MustNewConstMetric(queueAge, prometheus.GaugeValue, s.OldestQueuedS.Float64)
}
