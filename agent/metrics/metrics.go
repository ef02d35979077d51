package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Result label values of CommandsExecuted.
const (
	ResultSucceeded = "succeeded"  // the program exited 0
	ResultFailed    = "failed"     // the program exited non-zero
	ResultExecError = "exec_error" // runc could not start the program
	ResultStopped   = "stopped"    // the agent ended it (shutdown, cancel)
	ResultLeaseLost = "lease_lost" // the coordinator reaped it; stopped, not reported
	ResultUnknown   = "unknown"    // runc itself died; the exit status is unknown
)

// Metrics are the agent's collectors.
type Metrics struct {
	// CommandsRunning is the number of commands being executed or reported.
	CommandsRunning prometheus.Gauge
	// CommandsExecuted counts commands that were started, by result.
	CommandsExecuted *prometheus.CounterVec
	// ExecDuration is the wall time of runc exec, start to exit.
	ExecDuration prometheus.Histogram
	// OutputBytes counts captured output bytes by stream.
	OutputBytes *prometheus.CounterVec
	// Leased counts commands handed to this agent by the coordinator.
	Leased prometheus.Counter
	// StartRefused counts leased commands not executed because start was
	// not confirmed, by reason (lease_lost, cancelled, forbidden, error,
	// draining, over_capacity, duplicate: leased again while it runs).
	StartRefused *prometheus.CounterVec
	// CoordinatorErrors counts failed coordinator requests (after the
	// client's retries), by operation.
	CoordinatorErrors *prometheus.CounterVec
	// InventoryContainers is the number of containers last reported.
	InventoryContainers prometheus.Gauge
}

// New creates the collectors and registers them on reg.
func New(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		CommandsRunning: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "execq_agent_commands_running",
			Help: "Commands this agent is executing or still reporting.",
		}),
		CommandsExecuted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "execq_agent_commands_executed_total",
			Help: "Commands this agent started executing, by result (succeeded, failed, exec_error, stopped, lease_lost, unknown).",
		}, []string{"result"}),
		ExecDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "execq_agent_exec_duration_seconds",
			Help: "Wall time of runc exec from start to exit.",
			// From a bare runc exec (~50ms) to multi-hour maintenance jobs.
			Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600},
		}),
		OutputBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "execq_agent_output_bytes_total",
			Help: "Output bytes captured from commands, by stream.",
		}, []string{"stream"}),
		Leased: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "execq_agent_commands_leased_total",
			Help: "Commands leased to this agent.",
		}),
		StartRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "execq_agent_start_refused_total",
			Help: "Leased commands dropped without executing because start was not confirmed, by reason.",
		}, []string{"reason"}),
		CoordinatorErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "execq_agent_coordinator_errors_total",
			Help: "Coordinator requests that failed after retries, by operation.",
		}, []string{"op"}),
		InventoryContainers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "execq_agent_inventory_containers",
			Help: "Containers in the last inventory report.",
		}),
	}
	reg.MustRegister(m.CommandsRunning, m.CommandsExecuted, m.ExecDuration, m.OutputBytes,
		m.Leased, m.StartRefused, m.CoordinatorErrors, m.InventoryContainers)
	// Make the common series exist at zero, so rate() works from the start.
	for _, r := range []string{ResultSucceeded, ResultFailed, ResultExecError, ResultStopped, ResultLeaseLost, ResultUnknown} {
		m.CommandsExecuted.WithLabelValues(r)
	}
	m.OutputBytes.WithLabelValues("stdout")
	m.OutputBytes.WithLabelValues("stderr")
	return m
}
