package e2e_test

import (
	"bytes"
	"database/sql"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/execq/execq/shared"
)

// BenchmarkPostgresFailover measures what the coordinator does while its
// PostgreSQL fails over, with a real coordinator, agent and runc container:
// a private primary with a hot standby that streams from it synchronously
// (synchronous_standby_names, so every commit the coordinator was told of is
// on the standby), and the coordinator's URL naming both hosts with
// target_session_attrs=read-write, as docs/scaling.md tells an operator to
// run it. While a submitter adds a command every 50 ms (each with its own
// Idempotency-Key, retried with the same key until answered 2xx) and one
// command streams a line every 50 ms, the primary is killed (pg_ctl stop -m
// immediate, a crash) and, failoverDelay later (the failover manager's
// detection time, a setting of that manager), the standby is promoted.
//
// It prints the timeline: crash → first refused submit, the refusals by
// status, promotion → first accepted submit, promotion → first command
// started; and checks the invariants across the failover: no 500, every
// key is one command, every command ran exactly once (each appends a line
// to a file of its own in the container), the streamed output is exact.
// Run with -benchtime=1x.
func BenchmarkPostgresFailover(b *testing.B) {
	const failoverDelay = 2 * time.Second
	for range b.N {
		b.StopTimer() // the servers' set-up is not what is measured
		t0 := time.Now()
		pair := newPGPair(b)
		s := newStack(b, stackOptions{leaseTTL: 15 * time.Second, dbURL: pair.url()})
		c := s.container()
		s.startAgent()
		s.waitReported(c)
		fmt.Printf("\nfailover set-up (primary, standby, coordinator, agent) %.1f s\n", time.Since(t0).Seconds())
		b.StartTimer()

		const lines = 200
		stream := s.submit(c.ID, "sh", "-c", fmt.Sprintf(`i=0; while [ $i -lt %d ]; do echo line $i; i=$((i+1)); usleep 50000; done`, lines))
		sub := startFailoverSubmitter(s, c.ID)
		time.Sleep(2 * time.Second)

		crashed := time.Now()
		pair.ctl(0, "stop", "-m", "immediate")
		time.Sleep(failoverDelay)
		promoteStart := time.Now()
		pair.ctl(1, "promote")
		promoted := time.Now()
		time.Sleep(5 * time.Second)
		events, keys := sub.stop()

		// Every command ends, once.
		got := s.wait(stream.ID, 2*time.Minute)
		var want strings.Builder
		for i := range lines {
			fmt.Fprintf(&want, "line %d\n", i)
		}
		if got.Status != shared.StatusSucceeded || string(s.output(stream.ID, shared.StreamStdout)) != want.String() {
			b.Fatalf("streaming command across the failover: %s, stderr %q, %d bytes of stdout (want %d exact)",
				got.Status, got.Stderr, len(s.output(stream.ID, shared.StreamStdout)), want.Len())
		}
		firstStartAfter := time.Duration(-1)
		for key, id := range keys {
			rec := s.wait(id, 2*time.Minute)
			if rec.Status != shared.StatusSucceeded {
				b.Fatalf("command of key %s: %s %q", key, rec.Status, rec.Stderr)
			}
			if rec.CreatedAt.After(promoted) && (firstStartAfter < 0 || rec.StartedAt.Sub(promoted) < firstStartAfter) {
				firstStartAfter = rec.StartedAt.Sub(promoted)
			}
			ran, err := os.ReadFile(filepath.Join(c.Rootfs, "tmp", "ran-"+key))
			if err != nil || string(ran) != "x\n" {
				b.Fatalf("command of key %s ran %d times (%q, %v), want once", key, bytes.Count(ran, []byte("x\n")), ran, err)
			}
		}
		rows, distinct := pair.countKeys(b)
		if rows != len(keys) || distinct != len(keys) {
			b.Fatalf("%d submits answered 2xx, but the table has %d commands with %d distinct keys", len(keys), rows, distinct)
		}

		// The timeline, from the submitter's answers.
		codes := map[int]int{}
		var firstFail, lastFail, firstOKAfter time.Time
		for _, e := range events {
			if e.code >= 200 && e.code < 300 {
				if e.at.After(promoted) && firstOKAfter.IsZero() {
					firstOKAfter = e.at
				}
				continue
			}
			codes[e.code]++
			if firstFail.IsZero() && e.at.After(crashed) {
				firstFail = e.at
			}
			lastFail = e.at
		}
		if codes[http.StatusInternalServerError] > 0 {
			b.Fatalf("500s during the failover: %v", codes)
		}
		var codeList []string
		for code, n := range codes {
			codeList = append(codeList, fmt.Sprintf("%d×%d", n, code))
		}
		sort.Strings(codeList)
		ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
		b.ReportMetric(ms(firstFail.Sub(crashed)), "crash-to-first-refusal-ms")
		b.ReportMetric(ms(firstOKAfter.Sub(promoted)), "promoted-to-first-accept-ms")
		b.ReportMetric(ms(firstStartAfter), "promoted-to-first-start-ms")
		b.ReportMetric(ms(lastFail.Sub(firstFail)), "refusal-window-ms")
		fmt.Printf("\nPostgreSQL failover (primary crashed, standby promoted %v later; synchronous replication; target_session_attrs=read-write)\n"+
			"  crash → first refused submit %.0f ms | refusals %s (window %.0f ms, first to last) | pg_ctl promote took %.0f ms\n"+
			"  promoted → first accepted submit %.0f ms | promoted → first new command started %.0f ms\n"+
			"  %d commands submitted (each key once in the table, each ran once), streamed command exact (%d lines)\n",
			failoverDelay, ms(firstFail.Sub(crashed)), strings.Join(codeList, " "), ms(lastFail.Sub(firstFail)), ms(promoted.Sub(promoteStart)),
			ms(firstOKAfter.Sub(promoted)), ms(firstStartAfter), len(keys), lines)
	}
}

// failoverEvent is one submit attempt's answer (0: no answer).
type failoverEvent struct {
	at   time.Time
	code int
}

// failoverSubmitter submits a command every 50 ms, each under its own
// Idempotency-Key and retried with it until answered 2xx, as the API
// reference tells a client to.
type failoverSubmitter struct {
	s      *stack
	quit   chan struct{}
	done   chan struct{}
	mu     sync.Mutex
	events []failoverEvent
	keys   map[string]string // key → command ID
}

func startFailoverSubmitter(s *stack, container string) *failoverSubmitter {
	f := &failoverSubmitter{s: s, quit: make(chan struct{}), done: make(chan struct{}), keys: map[string]string{}}
	client := &http.Client{Timeout: 10 * time.Second}
	go func() {
		defer close(f.done)
		for i := 0; ; i++ {
			key := fmt.Sprintf("fo-%d", i)
			body, _ := json.Marshal(shared.SubmitRequest{Program: "sh", Args: []string{"-c", "echo x >> /tmp/ran-" + key}})
			for {
				req, _ := http.NewRequest("POST", s.url("/api/v1/containers/"+container+"/commands"), bytes.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+s.userToken)
				req.Header.Set("Idempotency-Key", key)
				code, id := 0, ""
				if resp, err := client.Do(req); err == nil {
					code = resp.StatusCode
					var rec shared.CommandExecutionRecord
					_ = json.NewDecoder(resp.Body).Decode(&rec)
					resp.Body.Close()
					id = rec.ID
				}
				f.mu.Lock()
				f.events = append(f.events, failoverEvent{time.Now(), code})
				if code >= 200 && code < 300 {
					f.keys[key] = id
				}
				f.mu.Unlock()
				if code >= 200 && code < 300 {
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
			select {
			case <-f.quit:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	return f
}

// stop waits for the submit in progress to be answered 2xx and returns
// every answer and the command of each key.
func (f *failoverSubmitter) stop() ([]failoverEvent, map[string]string) {
	close(f.quit)
	<-f.done
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.events, f.keys
}

// pgPair is a private PostgreSQL primary (index 0) and a hot standby (1)
// streaming from it synchronously, in a directory of its own, run as the
// postgres user (the server refuses root).
type pgPair struct {
	t     testing.TB
	bin   string
	dir   string
	ports [2]int
}

func newPGPair(t testing.TB) *pgPair {
	t.Helper()
	found, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(found) == 0 {
		t.Fatal("no /usr/lib/postgresql/*/bin/initdb: install the postgresql package")
	}
	version := func(p string) int { n, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(p)))); return n }
	sort.Slice(found, func(i, j int) bool { return version(found[i]) > version(found[j]) })
	pg, err := user.Lookup("postgres")
	if err != nil {
		t.Fatalf("the postgres user runs the servers: %v", err)
	}
	uid, _ := strconv.Atoi(pg.Uid)
	gid, _ := strconv.Atoi(pg.Gid)
	dir, err := os.MkdirTemp("", "execq-failover-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, uid, gid); err != nil {
		t.Fatal(err)
	}
	p := &pgPair{t: t, bin: filepath.Dir(found[0]), dir: dir}
	for i := range p.ports {
		_, port, _ := strings.Cut(freeAddr(t), ":")
		p.ports[i], _ = strconv.Atoi(port)
	}
	t.Cleanup(func() {
		for i := range p.ports {
			_, _ = p.run("pg_ctl", "-D", p.data(i), "stop", "-m", "immediate")
		}
		os.RemoveAll(dir)
	})

	p.must("initdb", "-D", p.data(0), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
	p.appendConf(p.data(0)+"/postgresql.conf", fmt.Sprintf(
		"listen_addresses = '127.0.0.1'\nport = %d\nunix_socket_directories = '%s'\nwal_level = replica\nhot_standby = on\n", p.ports[0], dir))
	p.ctl(0, "start")
	p.exec(0, "CREATE DATABASE execq")
	p.must("pg_basebackup", "-h", "127.0.0.1", "-p", strconv.Itoa(p.ports[0]), "-U", "postgres", "-D", p.data(1), "-R", "-X", "stream", "-c", "fast")
	// The last setting of a name in a file wins.
	p.appendConf(p.data(1)+"/postgresql.auto.conf", fmt.Sprintf(
		"port = %d\nprimary_conninfo = 'host=127.0.0.1 port=%d user=postgres application_name=standby1'\n", p.ports[1], p.ports[0]))
	p.ctl(1, "start")
	p.exec(0, "ALTER SYSTEM SET synchronous_standby_names = 'standby1'")
	p.exec(0, "SELECT pg_reload_conf()")
	deadline := time.Now().Add(30 * time.Second)
	for p.query(0, "SELECT count(*) FROM pg_stat_replication WHERE application_name = 'standby1' AND sync_state = 'sync'") != "1" {
		if time.Now().After(deadline) {
			t.Fatal("the standby never became synchronous")
		}
		time.Sleep(100 * time.Millisecond)
	}
	return p
}

func (p *pgPair) data(i int) string { return filepath.Join(p.dir, [2]string{"primary", "standby"}[i]) }

// url names both servers; lib/pq tries them in order and keeps the one
// that accepts writes.
func (p *pgPair) url() string {
	return fmt.Sprintf("host=127.0.0.1,127.0.0.1 port=%d,%d user=postgres dbname=execq sslmode=disable target_session_attrs=read-write connect_timeout=2",
		p.ports[0], p.ports[1])
}

// run runs a server binary as postgres.
func (p *pgPair) run(name string, args ...string) ([]byte, error) {
	cmd := exec.Command("runuser", append([]string{"-u", "postgres", "--", filepath.Join(p.bin, name)}, args...)...)
	cmd.Dir = "/"
	return cmd.CombinedOutput()
}

func (p *pgPair) must(name string, args ...string) {
	p.t.Helper()
	if out, err := p.run(name, args...); err != nil {
		p.t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}

// ctl runs pg_ctl on server i and waits for it (start, stop, promote).
func (p *pgPair) ctl(i int, args ...string) {
	p.t.Helper()
	p.must("pg_ctl", append([]string{"-D", p.data(i), "-l", p.data(i) + ".log", "-w", "-t", "60"}, args...)...)
}

func (p *pgPair) appendConf(path, text string) {
	p.t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		p.t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(text); err != nil {
		p.t.Fatal(err)
	}
}

func (p *pgPair) open(i int, db string) *sql.DB {
	p.t.Helper()
	conn, err := sql.Open("postgres", fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=%s sslmode=disable", p.ports[i], db))
	if err != nil {
		p.t.Fatal(err)
	}
	return conn
}

func (p *pgPair) exec(i int, q string) {
	p.t.Helper()
	db := p.open(i, "postgres")
	defer db.Close()
	if _, err := db.Exec(q); err != nil {
		p.t.Fatalf("%s: %v", q, err)
	}
}

func (p *pgPair) query(i int, q string) string {
	p.t.Helper()
	db := p.open(i, "postgres")
	defer db.Close()
	var v string
	if err := db.QueryRow(q).Scan(&v); err != nil {
		p.t.Fatalf("%s: %v", q, err)
	}
	return v
}

// countKeys counts, on the promoted standby, the failover submitter's
// commands and their distinct keys.
func (p *pgPair) countKeys(t testing.TB) (rows, distinct int) {
	t.Helper()
	db := p.open(1, "execq")
	defer db.Close()
	if err := db.QueryRow(`SELECT count(*), count(DISTINCT idempotency_key) FROM commands WHERE idempotency_key LIKE 'fo-%'`).Scan(&rows, &distinct); err != nil {
		t.Fatal(err)
	}
	return rows, distinct
}
