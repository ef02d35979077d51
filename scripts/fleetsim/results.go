package main

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// results is what one run prints.
type results struct {
	// work mode
	jobs                int
	window              time.Duration
	dispatch, e2e       []time.Duration
	cpu                 float64 // coordinator CPU seconds over the window, all replicas
	rss, peakRSS        float64 // MiB, all replicas
	maxConns, maxActive int
	meanActive          float64
	meanIdleInTx        float64
	simCPU              float64 // the simulator's CPU seconds over the window
	commits             int64
	pgCPU               float64 // PostgreSQL CPU seconds over the window
	buffers             int64   // shared buffers touched (blks_hit + blks_read)
	relations           map[string]int64
	submitErrors        int64
	// burn-down: the backlog's submits (outside the window unless -live)
	submitWindow           time.Duration
	submitCommits          int64
	submitPGCPU, submitCPU float64
	refused                int64 // submits answered 429 and retried
	pgbenchTPS             float64
	seeded                 int64 // finished commands seeded before the run
	// idle mode
	idleBase, idleParked      idleFigures
	idleWindow                time.Duration
	idleCommitsPerSec         float64
	idleCPUPerSec             float64
	pickupAlone, pickupParked []time.Duration
}

func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }

func (r *results) print(c config) {
	fmt.Println()
	if c.idle {
		r.printIdle(c)
		return
	}
	jobsPerSec := float64(r.jobs) / r.window.Seconds()
	mode := fmt.Sprintf("burn-down of %d", c.backlog)
	if c.live {
		mode += " submitted live"
	}
	if c.batch > 0 {
		mode += fmt.Sprintf(", submitted %d per request", c.batch)
	}
	if c.rate > 0 {
		mode = fmt.Sprintf("%.0f/s offered for %s", c.rate, c.duration)
	}
	fmt.Printf("fleet: %d agents × %d containers, %d replica(s), %s, exec %s, heartbeat %v, %d finished commands seeded\n",
		c.nodes, c.containers, c.replicas, mode, c.exec, c.heartbeat, r.seeded)
	fmt.Printf("  jobs/s end to end         %.0f  (%d jobs in %.1fs)\n", jobsPerSec, r.jobs, r.window.Seconds())
	fmt.Printf("  dispatch p50/p99          %s / %s  (submit → leased)\n", ms(quantile(r.dispatch, .5)), ms(quantile(r.dispatch, .99)))
	fmt.Printf("  end to end p50/p99        %s / %s  (submit → finished)\n", ms(quantile(r.e2e, .5)), ms(quantile(r.e2e, .99)))
	if r.jobs > 0 {
		fmt.Printf("  coordinator CPU           %.2f s per 1,000 jobs  (%.2f cores)\n", r.cpu/float64(r.jobs)*1000, r.cpu/r.window.Seconds())
		fmt.Printf("  commits per job           %.2f  (xact_commit delta %d)\n", float64(r.commits)/float64(r.jobs), r.commits)
		fmt.Printf("  PostgreSQL CPU            %.2f ms per job  (%.2f cores)\n", r.pgCPU/float64(r.jobs)*1000, r.pgCPU/r.window.Seconds())
		fmt.Printf("  buffers touched per job   %.0f  (blks_hit + blks_read)\n", float64(r.buffers)/float64(r.jobs))
		type rel struct {
			name string
			n    int64
		}
		var rels []rel
		for name, n := range r.relations {
			rels = append(rels, rel{name, n})
		}
		slices.SortFunc(rels, func(a, b rel) int { return int(b.n - a.n) })
		var top []string
		for _, x := range rels[:min(6, len(rels))] {
			top = append(top, fmt.Sprintf("%s %.0f", x.name, float64(x.n)/float64(r.jobs)))
		}
		fmt.Printf("  … by relation, per job    %s\n", strings.Join(top, ", "))
	}
	if c.rate <= 0 && r.submitWindow > 0 {
		fmt.Printf("  submits                   %.0f commands/s  (%d in %.1fs)\n", float64(c.backlog)/r.submitWindow.Seconds(), c.backlog, r.submitWindow.Seconds())
		if !c.live {
			fmt.Printf("  submit cost               %.2f commits, %.2f ms PostgreSQL CPU, %.2f ms coordinator CPU per command\n",
				float64(r.submitCommits)/float64(c.backlog), r.submitPGCPU/float64(c.backlog)*1000, r.submitCPU/float64(c.backlog)*1000)
		}
	}
	fmt.Printf("  coordinator RSS           %.0f MiB (peak %.0f MiB)\n", r.rss, r.peakRSS)
	fmt.Printf("  PostgreSQL connections    max %d open, max %d active; mean %.1f active, %.1f idle in transaction\n", r.maxConns, r.maxActive, r.meanActive, r.meanIdleInTx)
	fmt.Printf("  simulator CPU             %.2f cores (the fleet shares the machine)\n", r.simCPU/r.window.Seconds())
	if r.refused > 0 {
		fmt.Printf("  submits refused (429)     %d, retried after Retry-After\n", r.refused)
	}
	if r.submitErrors > 0 {
		fmt.Printf("  submits failed/not sent   %d\n", r.submitErrors)
	}
	if r.pgbenchTPS > 0 {
		fmt.Printf("  pgbench -N -c %d           %.0f tps\n", c.pgbenchConns, r.pgbenchTPS)
		fmt.Printf("  jobs/s ÷ pgbench tps      %.3f\n", jobsPerSec/r.pgbenchTPS)
	}
}

func (r *results) printIdle(c config) {
	b, p := r.idleBase, r.idleParked
	fmt.Printf("idle fleet: %d parked agents on one replica, %s window\n", c.nodes, r.idleWindow.Round(time.Second))
	fmt.Printf("  parked long-polls          %d (before: %d)\n", p.parked, b.parked)
	fmt.Printf("  coordinator RSS            %.0f MiB (before: %.0f MiB)\n", p.rss, b.rss)
	fmt.Printf("  goroutines                 %d (before: %d)\n", p.goroutines, b.goroutines)
	fmt.Printf("  PostgreSQL connections     %d now, max %d in the window (before: %d)\n", p.conns, p.maxConns, b.conns)
	fmt.Printf("  commits/s while idle       %.1f\n", r.idleCommitsPerSec)
	fmt.Printf("  coordinator CPU while idle %.3f cores\n", r.idleCPUPerSec)
	a50, a99 := quantile(r.pickupAlone, .5), quantile(r.pickupAlone, .99)
	p50, p99 := quantile(r.pickupParked, .5), quantile(r.pickupParked, .99)
	fmt.Printf("  pickup p50/p99 alone       %s / %s\n", ms(a50), ms(a99))
	fmt.Printf("  pickup p50/p99 parked      %s / %s  (p99 ratio %.2f)\n", ms(p50), ms(p99), float64(p99)/float64(max(a99, 1)))
	if r.pgbenchTPS > 0 {
		fmt.Printf("  pgbench -N -c %d            %.0f tps; idle commits/s ÷ pgbench tps %.4f\n", c.pgbenchConns, r.pgbenchTPS, r.idleCommitsPerSec/r.pgbenchTPS)
	}
}
