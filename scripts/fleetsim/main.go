package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-cleanhttp"
	"golang.org/x/sync/errgroup"

	"github.com/execq/execq/coordinator/store"
	"github.com/execq/execq/shared"
)

// config is what one run measures; see the flags in main.
type config struct {
	adminURL     string
	bin          string
	nodes        int
	containers   int
	rate         float64
	backlog      int
	batch        int
	live         bool
	duration     time.Duration
	exec         time.Duration
	replicas     int
	submitters   int
	heartbeat    bool
	idle         bool
	probes       int
	pgbenchTime  time.Duration
	pgbenchConns int
	keep         bool
	seedRows     int64
	tls          bool
	workDir      string
}

func main() {
	var c config
	flag.StringVar(&c.adminURL, "admin-url", os.Getenv("TEST_DATABASE_URL"), "PostgreSQL admin URL of the cluster to use (env TEST_DATABASE_URL); a fresh database is created on it")
	flag.StringVar(&c.bin, "coordinator", "bin/execq-coordinator", "coordinator binary to run")
	flag.IntVar(&c.nodes, "n", 2000, "simulated agents (one node each)")
	flag.IntVar(&c.containers, "containers", 4, "containers per node; also how many commands an agent runs at once")
	flag.Float64Var(&c.rate, "rate", 0, "submit this many commands per second for -duration; 0 = burn down -backlog")
	flag.IntVar(&c.backlog, "backlog", 20000, "commands queued before the agents start, for the burn-down")
	flag.IntVar(&c.batch, "batch", 0, "submit the backlog this many commands per request (POST /api/v1/commands); 0 = one request per command")
	flag.BoolVar(&c.live, "live", false, "burn-down with the agents parked first and the backlog submitted inside the window: jobs/s includes the submits")
	flag.DurationVar(&c.duration, "duration", 30*time.Second, "measured window of a -rate run or of -idle; the longest a burn-down may take")
	flag.DurationVar(&c.exec, "exec", 0, "how long each command \"executes\"")
	flag.IntVar(&c.replicas, "replicas", 1, "coordinator replicas (1 or 2); agents and submits alternate between them")
	flag.IntVar(&c.submitters, "submitters", 32, "concurrent submit requests at most")
	flag.BoolVar(&c.heartbeat, "heartbeat", true, "send one heartbeat with a line of output per command (else the output goes with finish)")
	flag.BoolVar(&c.idle, "idle", false, "idle-fleet mode: park -n agents, measure their cost and one probe agent's pickup")
	flag.IntVar(&c.probes, "probes", 40, "commands the probe agent runs before and while the fleet is parked (-idle)")
	flag.DurationVar(&c.pgbenchTime, "pgbench", 10*time.Second, "pgbench -N duration (0 = skip)")
	flag.IntVar(&c.pgbenchConns, "pgbench-clients", 8, "pgbench -c")
	flag.BoolVar(&c.keep, "keep", false, "keep the run's database")
	flag.Int64Var(&c.seedRows, "seed-rows", 0, "measure the work twice in one run: on the empty job table, then after filling it with this many finished commands (a grown history), and compare")
	flag.BoolVar(&c.tls, "tls", false, "the replicas serve HTTPS (a certificate made for the run) and the agents connect over TLS, as a real fleet does")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, c); err != nil {
		fmt.Fprintln(os.Stderr, "fleetsim:", err)
		os.Exit(1)
	}
}

// fleet is a run's database, replicas and agents.
type fleet struct {
	cfg      config
	cl       *cluster
	dbName   string
	replicas []*replica
	agents   []*simAgent
	probe    *simAgent
	rec      *recorder
	user     string       // admin token for submits
	refused  atomic.Int64 // submits answered 429, retried
	http     *http.Client
	runDB    *sql.DB // the measured database, for its per-relation statistics
	pki      *pki    // nil: plain HTTP
}

func run(ctx context.Context, c config) error {
	if c.adminURL == "" {
		return errors.New("no -admin-url (or TEST_DATABASE_URL): `make bench-fleet` passes the dev cluster's")
	}
	if c.replicas < 1 || c.replicas > 2 || c.nodes < 0 || c.containers < 1 || c.seedRows < 0 {
		return errors.New("want -replicas 1 or 2, -n >= 0, -containers >= 1, -seed-rows >= 0")
	}
	if c.idle {
		c.replicas = 1
		if c.seedRows > 0 {
			return errors.New("-seed-rows compares work runs; it does not apply to -idle")
		}
	}
	limit, err := raiseOpenFiles(1 << 20)
	if err != nil {
		return fmt.Errorf("raise the open-files limit: %w", err)
	}
	// This process holds a connection per agent, and so does each replica
	// (which inherits the limit).
	if need := uint64(c.nodes + 1000); limit < need {
		return fmt.Errorf("open-files limit %d, want at least %d for %d agents (ulimit -n)", limit, need, c.nodes)
	}
	c.workDir, err = os.MkdirTemp("", "fleetsim-")
	if err != nil {
		return err
	}
	f := &fleet{cfg: c, rec: newRecorder(), dbName: fmt.Sprintf("fleetsim_%d", time.Now().UnixNano())}
	if c.tls {
		if f.pki, err = newPKI(c.workDir); err != nil {
			return err
		}
		pt := cleanhttp.DefaultTransport()
		pt.TLSClientConfig = f.pki.clientTLS()
		probeClient = &http.Client{Transport: pt, Timeout: 30 * time.Second}
	}
	t := cleanhttp.DefaultPooledTransport()
	t.MaxIdleConnsPerHost = c.submitters * 2
	t.TLSClientConfig = f.pki.clientTLS()
	f.http = &http.Client{Transport: t, Timeout: 60 * time.Second}
	if f.cl, err = openCluster(ctx, c.adminURL); err != nil {
		return err
	}
	if err := f.cl.create(ctx, f.dbName); err != nil {
		return err
	}
	if !c.keep {
		defer f.cl.drop(context.WithoutCancel(ctx), f.dbName)
	}
	defer func() {
		if f.runDB != nil {
			f.runDB.Close()
		}
	}()
	fmt.Printf("fleetsim: %d agents × %d containers, %d replica(s) over %s, %d CPUs, database %s, logs in %s\n",
		c.nodes, c.containers, c.replicas, f.pki.scheme(), runtime.NumCPU(), f.dbName, c.workDir)
	// Before setup, which starts the replicas: one started before an
	// interrupt or a failed setup is stopped too, not left running.
	defer func() {
		for _, r := range f.replicas {
			r.stop()
		}
	}()
	if err := f.setup(ctx); err != nil {
		return err
	}
	if c.seedRows > 0 {
		return f.compareSeeded(ctx)
	}
	var res results
	if c.idle {
		err = f.idle(ctx, &res)
	} else {
		err = f.work(ctx, &res)
	}
	if err != nil {
		return err
	}
	for _, r := range f.replicas {
		r.stop()
	}
	f.replicas = nil
	if c.pgbenchTime > 0 {
		fmt.Printf("pgbench -N -c %d for %s on the same cluster...\n", c.pgbenchConns, c.pgbenchTime)
		if res.pgbenchTPS, err = f.cl.pgbench(ctx, c.pgbenchConns, c.pgbenchTime); err != nil {
			return err
		}
	}
	res.refused = f.refused.Load()
	res.print(c)
	f.printErrors()
	return nil
}

// setup migrates the database, creates the identities, starts the replicas
// and has every agent report its inventory.
func (f *fleet) setup(ctx context.Context) error {
	c := f.cfg
	dbURL := f.cl.urlFor(f.dbName)
	st, err := store.Open(ctx, dbURL, store.Options{MaxConns: 8})
	if err != nil {
		return err
	}
	defer st.Close()
	if _, err := st.Migrate(ctx); err != nil {
		return err
	}
	if _, f.user, err = st.CreateUser(ctx, "fleetsim", true); err != nil {
		return err
	}
	tokens := make([]string, c.nodes+1) // the last one is the probe's
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i := range tokens {
		g.Go(func() error {
			var err error
			_, tokens[i], err = st.CreateNode(gctx, fmt.Sprintf("sim-%05d", i))
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	for i := range c.replicas {
		r, err := startReplica(ctx, c.bin, dbURL, filepath.Join(c.workDir, fmt.Sprintf("coordinator-%d.log", i)), f.pki)
		if err != nil {
			return err
		}
		f.replicas = append(f.replicas, r)
	}
	for i, tok := range tokens {
		a, err := newSimAgent(f.replicas[i%len(f.replicas)].URL, tok, c.containers, f.rec, f.pki.clientTLS())
		if err != nil {
			return err
		}
		a.exec, a.heartbeat = c.exec, c.heartbeat
		if i == c.nodes {
			f.probe = a
		} else {
			f.agents = append(f.agents, a)
		}
	}
	g, gctx = errgroup.WithContext(ctx)
	g.SetLimit(32)
	for _, a := range append(f.agents, f.probe) {
		g.Go(func() error { return a.reportInventory(gctx) })
	}
	return g.Wait()
}

// submit enqueues one command in container through the public API.
func (f *fleet) submit(ctx context.Context, base, container string) error {
	body, _ := json.Marshal(shared.SubmitRequest{Program: "true", Args: []string{}})
	sent := time.Now()
	raw, err := f.post(ctx, base+"/api/v1/containers/"+container+"/commands", body)
	if err != nil {
		return fmt.Errorf("submit: %w", err)
	}
	var rec struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(raw, &rec); err != nil || rec.ID == "" {
		return fmt.Errorf("submit: no id in %.200s", raw)
	}
	f.rec.mark(f.rec.submitted, rec.ID, sent)
	return nil
}

// submitBatch submits the commands of items in one request (POST
// /api/v1/commands) to base.
func (f *fleet) submitBatch(ctx context.Context, base string, items []shared.SubmitBatchItem) error {
	body, _ := json.Marshal(shared.SubmitBatch{Commands: items})
	sent := time.Now()
	raw, err := f.post(ctx, base+"/api/v1/commands", body)
	if err != nil {
		return fmt.Errorf("submit %d: %w", len(items), err)
	}
	var res shared.SubmitBatchResult
	if err := json.Unmarshal(raw, &res); err != nil || len(res.Commands) != len(items) {
		return fmt.Errorf("submit %d: %d records in %.200s", len(items), len(res.Commands), raw)
	}
	for _, rec := range res.Commands {
		f.rec.mark(f.rec.submitted, rec.ID, sent)
	}
	return nil
}

// post sends a submit's body as the user, retrying after a 429, and
// returns the answer's body, or an error for any other non-2xx answer.
func (f *fleet) post(ctx context.Context, url string, body []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+f.user)
	req.Header.Set("Content-Type", "application/json")
	var raw []byte
	var resp *http.Response
	for {
		req.Body, _ = req.GetBody()
		resp, err = f.http.Do(req)
		if err != nil {
			return nil, err
		}
		raw, _ = io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		// An early refusal (429 overloaded) is what a client retries after
		// Retry-After; it was not queued. The time it waited counts.
		if resp.StatusCode != http.StatusTooManyRequests {
			break
		}
		f.refused.Add(1)
		wait := 100 * time.Millisecond
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
			wait = time.Duration(s) * time.Second
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusAccepted && resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("HTTP %d: %.200s", resp.StatusCode, raw)
	}
	return raw, nil
}

// snapshot is what the coordinators and the database have used so far.
type snapshot struct {
	at      time.Time
	cpu     float64
	self    float64 // the simulator's own CPU seconds
	commits int64
	pgCPU   map[int]float64 // PostgreSQL's processes' CPU seconds
	buffers int64           // shared buffers touched by the database's statements
	// relations are the buffers touched per table and index.
	relations map[string]int64
}

func (f *fleet) snapshot(ctx context.Context) (snapshot, error) {
	s := snapshot{at: time.Now(), self: selfCPU()}
	for _, r := range f.replicas {
		cpu, err := r.cpuSeconds()
		if err != nil {
			return s, err
		}
		s.cpu += cpu
	}
	var err error
	if s.pgCPU, err = f.cl.serverCPU(ctx); err != nil {
		return s, err
	}
	db, err := f.cl.stats(ctx, f.dbName)
	s.commits, s.buffers = db.commits, db.buffers
	if err != nil {
		return s, err
	}
	if f.runDB == nil {
		f.runDB, err = sql.Open("postgres", f.cl.urlFor(f.dbName))
		if err != nil {
			return s, err
		}
		f.runDB.SetMaxOpenConns(1)
	}
	s.relations, err = relationBuffers(ctx, f.runDB)
	return s, err
}

// selfCPU is the CPU seconds this process has used: the simulated fleet
// competes with the coordinator and PostgreSQL for the same cores.
func selfCPU() float64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// settle lets PostgreSQL publish the backends' statistics (at most once a
// second per backend) so a snapshot sees what was committed before it.
func settle() { time.Sleep(1500 * time.Millisecond) }

// parked sums the replicas' parked long-polls.
func (f *fleet) parked() int {
	total := 0
	for _, r := range f.replicas {
		v, _ := r.gauge("execq_longpolls_parked")
		total += int(v)
	}
	return total
}

func (f *fleet) waitParked(ctx context.Context, want int) error {
	deadline := time.Now().Add(2 * time.Minute)
	for f.parked() < want {
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d of %d long-polls parked after 2 minutes", f.parked(), want)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return nil
}

// startAgents runs agents until the returned stop is called.
func startAgents(ctx context.Context, agents []*simAgent) (stop func()) {
	actx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, a := range agents {
		wg.Add(1)
		go func() { defer wg.Done(); a.run(actx) }()
	}
	return func() { cancel(); wg.Wait() }
}

// containerOf picks the i-th container of the fleet, round robin over the
// agents first so work spreads over the whole fleet.
func (f *fleet) containerOf(i int) (base, container string) {
	a := f.agents[i%len(f.agents)]
	return f.replicas[(i/len(f.agents))%len(f.replicas)].URL, a.containers[(i/len(f.agents))%len(a.containers)]
}

// work runs the burn-down or the fixed-rate load and measures it.
func (f *fleet) work(ctx context.Context, res *results) error {
	c := f.cfg
	if len(f.agents) == 0 {
		return errors.New("-n must be at least 1")
	}
	var start, end snapshot
	var err error
	var stopAgents func()
	var conns *connSampler
	if c.rate <= 0 {
		if c.live {
			// The agents park first; the submits are inside the window.
			stopAgents = startAgents(ctx, f.agents)
			if err := f.waitParked(ctx, len(f.agents)); err != nil {
				stopAgents()
				return err
			}
			settle()
		}
		before, err := f.snapshot(ctx)
		if err != nil {
			return err
		}
		if c.live {
			start = before
			conns = f.cl.sampleConnections(ctx, f.dbName, 250*time.Millisecond)
		}
		fmt.Printf("queueing %d commands...\n", c.backlog)
		if err := f.submitAll(ctx, c.backlog); err != nil {
			return err
		}
		res.submitWindow = time.Since(before.at)
		if !c.live {
			settle()
			if start, err = f.snapshot(ctx); err != nil {
				return err
			}
			res.submitCommits = start.commits - before.commits
			res.submitPGCPU = cpuSince(before.pgCPU, start.pgCPU)
			res.submitCPU = start.cpu - before.cpu
			conns = f.cl.sampleConnections(ctx, f.dbName, 250*time.Millisecond)
			stopAgents = startAgents(ctx, f.agents)
		}
		// Until every command finished, or none did for 20s (a command
		// whose lease was lost ends failed by the reaper, not by a finish).
		deadline := time.Now().Add(c.duration)
		last, progress := int64(0), time.Now()
		for done := f.rec.done.Load(); done < int64(c.backlog) && time.Now().Before(deadline) && time.Since(progress) < 20*time.Second && ctx.Err() == nil; done = f.rec.done.Load() {
			if done > last {
				last, progress = done, time.Now()
			}
			time.Sleep(20 * time.Millisecond)
		}
		res.jobs = int(f.rec.done.Load())
		res.window = f.rec.lastFinish().Sub(start.at)
	} else {
		stopAgents = startAgents(ctx, f.agents)
		if err := f.waitParked(ctx, len(f.agents)); err != nil {
			stopAgents()
			return err
		}
		settle()
		if start, err = f.snapshot(ctx); err != nil {
			return err
		}
		conns = f.cl.sampleConnections(ctx, f.dbName, 250*time.Millisecond)
		res.submitErrors = f.submitAtRate(ctx, c.rate, c.duration)
		res.window = time.Since(start.at)
		res.jobs = f.rec.finishedBetween(start.at, start.at.Add(res.window))
	}
	if c.rate <= 0 {
		// The backlog was submitted before the window: its dispatch
		// latency is its wait in the queue.
		res.dispatch, res.e2e = f.rec.latencies(time.Time{}, time.Now())
	} else {
		res.dispatch, res.e2e = f.rec.latencies(start.at, start.at.Add(res.window))
	}
	conns.end()
	res.maxConns, res.maxActive, res.meanActive, res.meanIdleInTx = conns.maxTotal, conns.maxActive, conns.meanActive(), conns.meanIdleInTx()
	res.simCPU = selfCPU() - start.self
	cpu := 0.0
	for _, r := range f.replicas {
		rss, peak, _ := r.memory()
		res.rss, res.peakRSS = res.rss+rss, res.peakRSS+peak
		cpu2, _ := r.cpuSeconds()
		cpu += cpu2
	}
	// Commits: let the backends publish before reading, then count the
	// window's CPU only up to its end.
	res.cpu = cpu - start.cpu
	settle()
	end, err = f.snapshot(ctx)
	if err != nil {
		return err
	}
	res.commits = end.commits - start.commits
	// Up to the end snapshot, so it includes the settling pause: PostgreSQL
	// idles through it.
	res.pgCPU = cpuSince(start.pgCPU, end.pgCPU)
	res.buffers = end.buffers - start.buffers
	res.relations = map[string]int64{}
	for name, n := range end.relations {
		if d := n - start.relations[name]; d > 0 {
			res.relations[name] = d
		}
	}
	stopAgents()
	return nil
}

// submitAll submits n commands as fast as -submitters allow.
func (f *fleet) submitAll(ctx context.Context, n int) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(f.cfg.submitters)
	if b := f.cfg.batch; b > 0 {
		// Each request goes to one replica with the commands that
		// containerOf spreads over the fleet: "run this on every host".
		byBase := map[string][]shared.SubmitBatchItem{}
		flush := func(base string) {
			items := byBase[base]
			delete(byBase, base)
			g.Go(func() error { return f.submitBatch(gctx, base, items) })
		}
		for i := range n {
			base, container := f.containerOf(i)
			byBase[base] = append(byBase[base], shared.SubmitBatchItem{ContainerID: container, Program: "true", Args: []string{}})
			if len(byBase[base]) == b {
				flush(base)
			}
		}
		for base := range byBase {
			flush(base)
		}
		return g.Wait()
	}
	for i := range n {
		g.Go(func() error {
			base, container := f.containerOf(i)
			return f.submit(gctx, base, container)
		})
	}
	return g.Wait()
}

// submitAtRate submits at rate per second for d (open loop: a slow answer
// does not slow the offered load, up to -submitters in flight; past that
// the offer is dropped and counted) and returns how many failed or were not
// sent.
func (f *fleet) submitAtRate(ctx context.Context, rate float64, d time.Duration) (failed int64) {
	var wg sync.WaitGroup
	var bad atomic.Int64
	sem := make(chan struct{}, f.cfg.submitters)
	start := time.Now()
	for i := 0; ; i++ {
		at := start.Add(time.Duration(float64(i) / rate * float64(time.Second)))
		if at.Sub(start) >= d || ctx.Err() != nil {
			break
		}
		time.Sleep(time.Until(at))
		select {
		case sem <- struct{}{}:
		default:
			bad.Add(1)
			f.rec.fail("submit", errors.New("not sent: every submitter busy"))
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			base, container := f.containerOf(i)
			if err := f.submit(ctx, base, container); err != nil {
				bad.Add(1)
				f.rec.fail("submit", err)
			}
		}()
	}
	wg.Wait()
	return bad.Load()
}

// idle parks the fleet and measures what it costs and what it does to one
// agent's pickup.
func (f *fleet) idle(ctx context.Context, res *results) error {
	c := f.cfg
	r := f.replicas[0]
	finished := make(chan string, 1)
	f.rec.notify = func(string) { finished <- "" }
	stopProbe := startAgents(ctx, []*simAgent{f.probe})
	defer stopProbe()
	if err := f.waitParked(ctx, 1); err != nil {
		return err
	}
	res.idleBase = f.measureIdle(ctx, r)
	fmt.Printf("probe agent alone: %d commands...\n", c.probes)
	var err error
	if res.pickupAlone, err = f.runProbes(ctx, r, finished); err != nil {
		return err
	}
	fmt.Printf("parking %d agents...\n", len(f.agents))
	stopAgents := startAgents(ctx, f.agents)
	defer stopAgents()
	if err := f.waitParked(ctx, len(f.agents)+1); err != nil {
		return err
	}
	settle()
	start, err := f.snapshot(ctx)
	if err != nil {
		return err
	}
	conns := f.cl.sampleConnections(ctx, f.dbName, 250*time.Millisecond)
	select {
	case <-time.After(c.duration):
	case <-ctx.Done():
		return ctx.Err()
	}
	conns.end()
	res.idleParked = f.measureIdle(ctx, r)
	res.idleParked.maxConns = conns.maxTotal
	cpu, _ := r.cpuSeconds()
	settle()
	end, err := f.snapshot(ctx)
	if err != nil {
		return err
	}
	res.idleWindow = end.at.Sub(start.at)
	res.idleCommitsPerSec = float64(end.commits-start.commits) / res.idleWindow.Seconds()
	res.idleCPUPerSec = (cpu - start.cpu) / c.duration.Seconds()
	fmt.Printf("probe agent with %d parked: %d commands...\n", len(f.agents), c.probes)
	if res.pickupParked, err = f.runProbes(ctx, r, finished); err != nil {
		return err
	}
	return nil
}

// idleFigures is the coordinator's state at one moment of the idle mode.
type idleFigures struct {
	parked, goroutines int
	rss                float64
	conns, maxConns    int
}

func (f *fleet) measureIdle(ctx context.Context, r *replica) idleFigures {
	var m idleFigures
	m.parked = f.parked()
	g, _ := r.gauge("go_goroutines")
	m.goroutines = int(g)
	m.rss, _, _ = r.memory()
	m.conns, _, _ = f.cl.connections(ctx, f.dbName)
	return m
}

// runProbes submits commands to the probe agent one at a time and returns
// their pickup latencies (submit → leased).
func (f *fleet) runProbes(ctx context.Context, r *replica, finished chan string) ([]time.Duration, error) {
	var out []time.Duration
	for i := range f.cfg.probes {
		if err := f.submit(ctx, r.URL, f.probe.containers[i%len(f.probe.containers)]); err != nil {
			return nil, err
		}
		select {
		case <-finished:
		case <-time.After(30 * time.Second):
			return nil, errors.New("a probe command did not finish within 30s")
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		// Let the probe park again, as an idle agent is when work arrives.
		time.Sleep(20 * time.Millisecond)
	}
	f.rec.mu.Lock()
	defer f.rec.mu.Unlock()
	for id, s := range f.rec.submitted {
		if l, ok := f.rec.leased[id]; ok {
			out = append(out, l.Sub(s))
		}
		delete(f.rec.submitted, id)
	}
	return out, nil
}

func (f *fleet) printErrors() {
	type kv struct {
		k string
		n int64
	}
	var all []kv
	f.rec.errs.Range(func(k, v any) bool {
		all = append(all, kv{k.(string), v.(*atomic.Int64).Load()})
		return true
	})
	sort.Slice(all, func(i, j int) bool { return all[i].n > all[j].n })
	for _, e := range all {
		fmt.Printf("  error ×%d: %s\n", e.n, e.k)
	}
}

// compareSeeded measures the same work twice with the same fleet and
// replicas: on the (nearly) empty job table, then after seeding it with
// -seed-rows finished commands. Each pass has its own pgbench run, and
// starts from a CHECKPOINT, so neither inherits the other's dirty pages
// (the seed writes gigabytes). It prints both and their ratios.
func (f *fleet) compareSeeded(ctx context.Context) error {
	c := f.cfg
	var runs [2]results
	for i := range runs {
		if i == 1 {
			if err := f.seed(ctx, c.seedRows); err != nil {
				return err
			}
			runs[i].seeded = c.seedRows
			f.rec.reset()
		}
		if err := f.cl.checkpoint(ctx); err != nil {
			return err
		}
		if err := f.work(ctx, &runs[i]); err != nil {
			return err
		}
		if c.pgbenchTime > 0 {
			fmt.Printf("pgbench -N -c %d for %s on the same cluster...\n", c.pgbenchConns, c.pgbenchTime)
			var err error
			if runs[i].pgbenchTPS, err = f.cl.pgbench(ctx, c.pgbenchConns, c.pgbenchTime); err != nil {
				return err
			}
		}
		runs[i].refused = f.refused.Swap(0)
		runs[i].print(c)
	}
	a, b := runs[0], runs[1]
	ratio := func(x, y float64) string {
		if y == 0 {
			return "n/a"
		}
		return fmt.Sprintf("%.2f", x/y)
	}
	rate := func(r results) float64 { return float64(r.jobs) / r.window.Seconds() }
	fmt.Printf("\nseeded ÷ empty (1.00 = unchanged; within 0.90–1.10 is the target):\n")
	fmt.Printf("  jobs/s                    %s\n", ratio(rate(b), rate(a)))
	if a.pgbenchTPS > 0 && b.pgbenchTPS > 0 {
		fmt.Printf("  jobs/s ÷ pgbench tps      %s  (pgbench %s)\n", ratio(rate(b)/b.pgbenchTPS, rate(a)/a.pgbenchTPS), ratio(b.pgbenchTPS, a.pgbenchTPS))
	}
	fmt.Printf("  dispatch p50 / p99        %s / %s\n",
		ratio(float64(quantile(b.dispatch, .5)), float64(quantile(a.dispatch, .5))),
		ratio(float64(quantile(b.dispatch, .99)), float64(quantile(a.dispatch, .99))))
	fmt.Printf("  commits per job           %s\n", ratio(float64(b.commits)/float64(max(b.jobs, 1)), float64(a.commits)/float64(max(a.jobs, 1))))
	fmt.Printf("  buffers touched per job   %s  (the database's work, whatever the machine's load)\n",
		ratio(float64(b.buffers)/float64(max(b.jobs, 1)), float64(a.buffers)/float64(max(a.jobs, 1))))
	fmt.Printf("  coordinator CPU per job   %s\n", ratio(b.cpu/float64(max(b.jobs, 1)), a.cpu/float64(max(a.jobs, 1))))
	f.printErrors()
	return nil
}
