package main

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"time"

	"github.com/lib/pq"
)

// cluster is the PostgreSQL server the run uses, reached through its
// maintenance database so that the simulator's own queries never count in
// the measured database's statistics.
type cluster struct {
	adminURL string
	admin    *sql.DB
}

func openCluster(ctx context.Context, adminURL string) (*cluster, error) {
	db, err := sql.Open("postgres", adminURL)
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(2)
	if err := db.PingContext(ctx); err != nil {
		return nil, fmt.Errorf("reach PostgreSQL at the admin URL: %w", err)
	}
	return &cluster{adminURL: adminURL, admin: db}, nil
}

// urlFor is the admin URL pointed at database name.
func (c *cluster) urlFor(name string) string {
	u, _ := url.Parse(c.adminURL)
	u.Path = "/" + name
	return u.String()
}

func (c *cluster) create(ctx context.Context, name string) error {
	_, err := c.admin.ExecContext(ctx, "CREATE DATABASE "+pq.QuoteIdentifier(name))
	return err
}

func (c *cluster) drop(ctx context.Context, name string) error {
	_, err := c.admin.ExecContext(ctx, "DROP DATABASE IF EXISTS "+pq.QuoteIdentifier(name)+" WITH (FORCE)")
	return err
}

// checkpoint flushes every dirty page now, so a measured window does not
// pay for writes made before it.
func (c *cluster) checkpoint(ctx context.Context) error {
	_, err := c.admin.ExecContext(ctx, "CHECKPOINT")
	return err
}

// dbStats are a database's cumulative counters: committed transactions,
// and the shared buffers its statements touched (hits and reads) — the work
// its queries did, which unlike time does not depend on the machine's load.
type dbStats struct {
	commits, buffers int64
}

// stats reads the database's counters. PostgreSQL publishes a backend's
// counts at most once a second, so callers let a second pass before and
// after the window they measure.
func (c *cluster) stats(ctx context.Context, name string) (dbStats, error) {
	var s dbStats
	// A new snapshot each time: the statistics of a transaction are
	// otherwise frozen at their first read.
	if _, err := c.admin.ExecContext(ctx, "SELECT pg_stat_clear_snapshot()"); err != nil {
		return s, err
	}
	err := c.admin.QueryRowContext(ctx, "SELECT xact_commit, blks_hit + blks_read FROM pg_stat_database WHERE datname = $1", name).Scan(&s.commits, &s.buffers)
	return s, err
}

// relationBuffersSQL is what each table and index of the current database
// has touched in shared buffers (hits and reads), by name.
const relationBuffersSQL = `
	SELECT relname, coalesce(heap_blks_hit, 0) + coalesce(heap_blks_read, 0) FROM pg_statio_user_tables
	UNION ALL
	SELECT indexrelname, coalesce(idx_blks_hit, 0) + coalesce(idx_blks_read, 0) FROM pg_statio_user_indexes`

// relationBuffers reads relationBuffersSQL on db (a connection to the
// measured database: these views cover only the database they are read in).
func relationBuffers(ctx context.Context, db *sql.DB) (map[string]int64, error) {
	if _, err := db.ExecContext(ctx, "SELECT pg_stat_clear_snapshot()"); err != nil {
		return nil, err
	}
	rows, err := db.QueryContext(ctx, relationBuffersSQL)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	m := map[string]int64{}
	for rows.Next() {
		var name string
		var n int64
		if err := rows.Scan(&name, &n); err != nil {
			return nil, err
		}
		m[name] += n
	}
	return m, rows.Err()
}

// serverCPU is the CPU seconds each of the cluster's processes has used so
// far (backends and background workers, as pg_stat_activity lists them), by
// pid. The difference of two readings is what PostgreSQL spent in between;
// the cluster is the dev one, so the run has it to itself.
func (c *cluster) serverCPU(ctx context.Context) (map[int]float64, error) {
	rows, err := c.admin.QueryContext(ctx, "SELECT pid FROM pg_stat_activity")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	cpu := map[int]float64{}
	for rows.Next() {
		var pid int
		if err := rows.Scan(&pid); err != nil {
			return nil, err
		}
		if s, err := procCPU(pid); err == nil { // gone meanwhile
			cpu[pid] = s
		}
	}
	return cpu, rows.Err()
}

// cpuSince is the CPU seconds the processes of now used since before; a
// process started in between counts from zero.
func cpuSince(before, now map[int]float64) float64 {
	total := 0.0
	for pid, s := range now {
		total += s - before[pid]
	}
	return total
}

// connections counts the client connections to database name: all of them
// and those running a statement now.
func (c *cluster) connections(ctx context.Context, name string) (total, active int, err error) {
	total, active, _, err = c.connectionStates(ctx, name)
	return total, active, err
}

// connectionStates also counts the connections held inside a transaction
// while the coordinator does something else: a pool slot taken, no work done.
func (c *cluster) connectionStates(ctx context.Context, name string) (total, active, idleInTx int, err error) {
	err = c.admin.QueryRowContext(ctx, `
		SELECT count(*), count(*) FILTER (WHERE state = 'active'), count(*) FILTER (WHERE state LIKE 'idle in transaction%')
		FROM pg_stat_activity WHERE datname = $1 AND backend_type = 'client backend'`, name).Scan(&total, &active, &idleInTx)
	return total, active, idleInTx, err
}

// connSampler samples connections every interval until stopped and keeps
// the largest figures seen.
type connSampler struct {
	maxTotal, maxActive int
	sumActive, samples  int
	sumIdleInTx         int
	stop                chan struct{}
	done                chan struct{}
}

func (c *cluster) sampleConnections(ctx context.Context, name string, every time.Duration) *connSampler {
	s := &connSampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-s.stop:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
			total, active, idleInTx, err := c.connectionStates(ctx, name)
			if err != nil {
				continue
			}
			s.sumIdleInTx += idleInTx
			s.maxTotal, s.maxActive = max(s.maxTotal, total), max(s.maxActive, active)
			s.sumActive += active
			s.samples++
		}
	}()
	return s
}

func (s *connSampler) end() {
	close(s.stop)
	<-s.done
}

func (s *connSampler) meanActive() float64 {
	if s.samples == 0 {
		return 0
	}
	return float64(s.sumActive) / float64(s.samples)
}

func (s *connSampler) meanIdleInTx() float64 {
	if s.samples == 0 {
		return 0
	}
	return float64(s.sumIdleInTx) / float64(s.samples)
}

// pgbenchBinary finds pgbench among the installed servers, the newest first:
// Debian keeps it under /usr/lib/postgresql/N/bin, off PATH.
func pgbenchBinary() (string, error) {
	if p, err := exec.LookPath("pgbench"); err == nil {
		return p, nil
	}
	found, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pgbench")
	if len(found) == 0 {
		return "", fmt.Errorf("pgbench not found on PATH nor under /usr/lib/postgresql/*/bin (it ships with the postgresql package)")
	}
	version := func(p string) int {
		n, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(p))))
		return n
	}
	sort.Slice(found, func(i, j int) bool { return version(found[i]) > version(found[j]) })
	return found[0], nil
}

var tpsLine = regexp.MustCompile(`tps = ([0-9.]+) \(without initial connection time\)`)

// pgbench measures what the cluster commits with `pgbench -N` (no updates of
// the small tables, so no contention on them: the commit rate itself) on a
// scratch database, and returns its tps.
func (c *cluster) pgbench(ctx context.Context, clients int, d time.Duration) (float64, error) {
	bin, err := pgbenchBinary()
	if err != nil {
		return 0, err
	}
	const name = "fleetsim_pgbench"
	if err := c.drop(ctx, name); err != nil {
		return 0, err
	}
	if err := c.create(ctx, name); err != nil {
		return 0, err
	}
	defer c.drop(context.WithoutCancel(ctx), name)
	u := c.urlFor(name)
	if out, err := exec.CommandContext(ctx, bin, "-i", "-q", "-s", "1", u).CombinedOutput(); err != nil {
		return 0, fmt.Errorf("pgbench -i: %v: %s", err, out)
	}
	out, err := exec.CommandContext(ctx, bin, "-N", "-c", strconv.Itoa(clients), "-j", "2",
		"-T", strconv.Itoa(int(d.Seconds())), u).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("pgbench -N: %v: %s", err, out)
	}
	m := tpsLine.FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("no tps in pgbench output: %s", bytes.TrimSpace(out))
	}
	return strconv.ParseFloat(string(m[1]), 64)
}
