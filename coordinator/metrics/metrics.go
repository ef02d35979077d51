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
	// Ended counts the commands this replica made terminal, by status and
	// end reason, whichever way they ended (fed by store.OnEnded).
	Ended *prometheus.CounterVec
	// OutputBytes counts the new output bytes accepted from agents, by
	// stream; Heartbeats the heartbeats accepted.
	OutputBytes *prometheus.CounterVec
	Heartbeats  prometheus.Counter
}

// endings are the (status, end reason) pairs a command can end with; their
// counters exist from the start, so a rate over them needs no first event.
var endings = [][2]string{
	{"succeeded", "exited"}, {"failed", "exited"}, {"failed", "killed"}, {"failed", "exec_error"},
	{"failed", "cancelled"}, {"cancelled", "cancelled"}, {"failed", "timed_out"},
	{"failed", "not_picked_up"}, {"failed", "agent_lost"},
}

// New registers the coordinator's metrics on reg. parked reports the current
// number of parked long-polls; st is read at scrape time for queue depth
// and the nodes' last contact, a node being up if its agent was in contact
// within downAfter.
func New(reg prometheus.Registerer, st *store.Store, parked func() int, downAfter time.Duration) *Metrics {
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
		Ended: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "execq_commands_ended_total", Help: "Commands made terminal by this replica, by final status and end reason (agent finish, cancel, timeouts, agent lost, not picked up).",
		}, []string{"status", "end_reason"}),
		OutputBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "execq_output_bytes_received_total", Help: "New command output bytes accepted from agents, by stream (retried bytes already stored are not counted).",
		}, []string{"stream"}),
		Heartbeats: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "execq_heartbeats_total", Help: "Heartbeats of running commands accepted from agents.",
		}),
	}
	for _, e := range endings {
		m.Ended.WithLabelValues(e[0], e[1])
	}
	m.OutputBytes.WithLabelValues("stdout")
	m.OutputBytes.WithLabelValues("stderr")
	reg.MustRegister(m.HTTPRequests, m.HTTPDuration, m.Dispatch, m.Exec, m.AgentLost, m.Requeued, m.Pruned, m.Shed, m.Undelivered,
		m.Ended, m.OutputBytes, m.Heartbeats,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "execq_db_admission_waiting", Help: "Database calls waiting for one of the pool's unreserved connections.",
		}, func() float64 { return float64(st.Waiting()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "execq_longpolls_parked", Help: "Agent long-polls waiting on this replica.",
		}, func() float64 { return float64(parked()) }),
		&queueCollector{st: st, downAfter: downAfter},
		collectors.NewDBStatsCollector(st.DB().DB, "execq"),
	)
	return m
}

// queueCollector reads the live queue, in total and per node, and the
// nodes' last contact from the database at scrape time, in one grouped
// statement (store.Stats), so every replica reports the same, true figures.
// Per-node series are bounded by the number of nodes: every node not
// revoked, and a revoked one only while it still has live commands.
type queueCollector struct {
	st        *store.Store
	downAfter time.Duration
}

var (
	queueDepth = prometheus.NewDesc("execq_queue_depth", "Commands by live status (queued, running).", []string{"status"}, nil)
	queueAge   = prometheus.NewDesc("execq_queue_oldest_age_seconds", "Age of the oldest queued command (0 when none).", nil, nil)
	scrapeErr  = prometheus.NewDesc("execq_queue_scrape_error", "1 if the queue could not be read from PostgreSQL at this scrape.", nil, nil)
	nodeDepth  = prometheus.NewDesc("execq_node_queue_depth", "Commands by node name and live status (queued, running).", []string{"node", "status"}, nil)
	nodeAge    = prometheus.NewDesc("execq_node_oldest_queued_age_seconds", "Age of the node's oldest queued command; only nodes with queued commands.", []string{"node"}, nil)
	nodeSeen   = prometheus.NewDesc("execq_node_last_seen_timestamp_seconds", "Unix time of the node's agent's last contact with any replica (recorded to within a quarter of --node-down-after); nodes never seen are left out.", []string{"node"}, nil)
	nodeUp     = prometheus.NewDesc("execq_node_up", "1 if the node's agent was in contact within --node-down-after, else 0; nodes not revoked.", []string{"node"}, nil)
)

func (c *queueCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{queueDepth, queueAge, scrapeErr, nodeDepth, nodeAge, nodeSeen, nodeUp} {
		ch <- d
	}
}

func (c *queueCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s, err := c.st.Stats(ctx)
	if err != nil {
		ch <- prometheus.MustNewConstMetric(scrapeErr, prometheus.GaugeValue, 1)
		return
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	gauge(scrapeErr, 0)
	gauge(queueDepth, float64(s.Queued), "queued")
	gauge(queueDepth, float64(s.Running), "running")
	gauge(queueAge, s.OldestQueuedS.Float64)
	for _, n := range s.Nodes {
		gauge(nodeDepth, float64(n.Queued), n.Name, "queued")
		gauge(nodeDepth, float64(n.Running), n.Name, "running")
		if n.OldestQueuedS.Valid {
			gauge(nodeAge, n.OldestQueuedS.Float64, n.Name)
		}
		if n.Revoked {
			continue
		}
		if n.LastSeen.Valid {
			gauge(nodeSeen, n.LastSeen.Float64, n.Name)
		}
		up := 0.0
		if n.LastSeenAgoS.Valid && n.LastSeenAgoS.Float64 < c.downAfter.Seconds() {
			up = 1
		}
		gauge(nodeUp, up, n.Name)
	}
}
