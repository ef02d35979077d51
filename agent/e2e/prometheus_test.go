package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// prometheusBinary returns the path of Debian's prometheus (or promtool),
// failing the test when it is missing: like runc and PostgreSQL, it is
// installed by .ci/run, and a suite that skipped without it would pass
// having proven nothing.
func prometheusBinary(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found in PATH (apt-get install prometheus): %v", name, err)
	}
	return p
}

// promServer is a real Prometheus on loopback with a private data dir,
// scraping the given targets every second.
type promServer struct {
	t    testing.TB
	addr string
}

func startPrometheus(t testing.TB, targets map[string]string) *promServer {
	t.Helper()
	bin := prometheusBinary(t, "prometheus")
	dir := t.TempDir()
	var cfg strings.Builder
	cfg.WriteString("global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\nscrape_configs:\n")
	for job, target := range targets {
		fmt.Fprintf(&cfg, "  - job_name: %s\n    static_configs:\n      - targets: [%q]\n", job, target)
	}
	conf := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(conf, []byte(cfg.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	p := &promServer{t: t, addr: freeAddr(t)}
	cmd := exec.Command(bin, "--config.file="+conf, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+p.addr, "--log.level=warn")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start prometheus: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("--- prometheus output ---\n%s", tail(out.String(), 8<<10))
		}
	})
	eventuallyT(t, time.Minute, "prometheus ready", func() bool {
		resp, err := http.Get("http://" + p.addr + "/-/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return p
}

// query evaluates a PromQL expression at the current time through
// /api/v1/query and returns its samples by their labels' text, e.g.
// `{status="succeeded"}` (`{}` for a sample without labels).
func (p *promServer) query(expr string) map[string]float64 {
	p.t.Helper()
	resp, err := http.Get("http://" + p.addr + "/api/v1/query?query=" + url.QueryEscape(expr))
	if err != nil {
		p.t.Fatalf("query %s: %v", expr, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var body struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string `json:"resultType"`
			Result     []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(raw, &body); err != nil || body.Status != "success" || body.Data.ResultType != "vector" {
		p.t.Fatalf("query %s: %s %s (%v)", expr, resp.Status, raw, err)
	}
	samples := map[string]float64{}
	for _, r := range body.Data.Result {
		var labels []string
		for k, v := range r.Metric {
			labels = append(labels, fmt.Sprintf("%s=%q", k, v))
		}
		s, _ := r.Value[1].(string)
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			p.t.Fatalf("query %s: value %v: %v", expr, r.Value, err)
		}
		slices.Sort(labels)
		samples["{"+strings.Join(labels, ",")+"}"] = v
	}
	return samples
}

// value is the one sample expr yields, and whether there is exactly one.
func (p *promServer) value(expr string) (float64, bool) {
	p.t.Helper()
	s := p.query(expr)
	if len(s) != 1 {
		return 0, false
	}
	for _, v := range s {
		return v, true
	}
	return 0, false
}

// waitValue waits until expr yields one sample for which ok holds.
func (p *promServer) waitValue(expr, what string, ok func(float64) bool) float64 {
	p.t.Helper()
	var v float64
	eventuallyT(p.t, 90*time.Second, what+" ("+expr+")", func() bool {
		var found bool
		v, found = p.value(expr)
		return found && ok(v)
	})
	return v
}

// eventuallyT polls cond every 200ms until it holds, failing after d.
func eventuallyT(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out after %s waiting for %s", d, what)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func eq(want float64) func(float64) bool   { return func(v float64) bool { return v == want } }
func above(min float64) func(float64) bool { return func(v float64) bool { return v > min } }

// TestPrometheusScrapesTheStack runs a real Prometheus scraping a
// coordinator and a real agent, and asserts through PromQL what an on-call
// operator relies on: queue depth, in total and for the node, rises while
// commands wait for a stopped agent and falls when it starts again; the
// oldest queued age grows meanwhile; the stopped agent's node is down and
// up again after; the exec latency histogram has observations by final
// status; the ended, heartbeat and output counters move. Then promtool
// lints both /metrics endpoints.
func TestPrometheusScrapesTheStack(t *testing.T) {
	t.Parallel()
	const node = `node="e2e-node"`
	s := newStack(t, stackOptions{leaseTTL: 3 * time.Second, env: []string{"EXECQ_NODE_DOWN_AFTER=2s"}})
	agentMetrics := freeAddr(t)
	prom := startPrometheus(t, map[string]string{"coordinator": s.addr, "agent": agentMetrics})
	c := s.container()
	agent := s.startAgent("--metrics-listen", agentMetrics)
	s.waitReported(c)
	prom.waitValue(`up{job="agent"}`, "the agent scraped", eq(1))
	prom.waitValue(`execq_node_up{`+node+`}`, "the agent's node up", eq(1))

	// The agent stops; commands wait for it.
	agent.signal(syscall.SIGTERM)
	agent.wantCleanExit("after SIGTERM with nothing running")
	prom.waitValue(`execq_node_up{`+node+`}`, "the stopped agent's node down", eq(0))
	ids := []string{
		s.submit(c.ID, "sh", "-c", "echo out; echo err >&2; sleep 2").ID, // runs past a heartbeat
		s.submit(c.ID, "sh", "-c", "echo failing >&2; exit 3").ID,
		s.submit(c.ID, "true").ID,
	}
	prom.waitValue(`execq_queue_depth{status="queued"}`, "queue depth up while the agent is stopped", eq(3))
	prom.waitValue(`execq_node_queue_depth{`+node+`,status="queued"}`, "the node's queue depth up", eq(3))
	age := prom.waitValue(`execq_node_oldest_queued_age_seconds{`+node+`}`, "an oldest-queued age", above(0))
	prom.waitValue(`execq_node_oldest_queued_age_seconds{`+node+`}`, "the oldest-queued age growing", above(age))
	prom.waitValue(`execq_queue_oldest_age_seconds`, "the total oldest-queued age growing", above(age))

	// The agent starts again: the queue drains.
	s.startAgent("--metrics-listen", agentMetrics)
	for _, id := range ids {
		s.wait(id, time.Minute)
	}
	prom.waitValue(`execq_queue_depth{status="queued"}`, "queue depth back to 0", eq(0))
	prom.waitValue(`execq_node_queue_depth{`+node+`,status="queued"}`, "the node's queue depth back to 0", eq(0))
	prom.waitValue(`execq_node_up{`+node+`}`, "the restarted agent's node up", eq(1))
	if v, ok := prom.value(`execq_node_oldest_queued_age_seconds{` + node + `}`); ok {
		t.Errorf("the drained node still has an oldest-queued age (%v)", v)
	}

	// Exec latency by final status, and the counters.
	prom.waitValue(`sum(execq_exec_duration_seconds_count{status="succeeded"})`, "exec latency observed for succeeded", eq(2))
	prom.waitValue(`sum(execq_exec_duration_seconds_count{status="failed"})`, "exec latency observed for failed", eq(1))
	prom.waitValue(`histogram_quantile(1, sum by (le) (execq_exec_duration_seconds_bucket{status="succeeded"}))`,
		"the slowest succeeded command in a bucket past its 2 s sleep", func(v float64) bool { return v >= 2 })
	prom.waitValue(`execq_commands_ended_total{status="succeeded",end_reason="exited"}`, "succeeded endings counted", eq(2))
	prom.waitValue(`execq_commands_ended_total{status="failed",end_reason="exited"}`, "failed endings counted", eq(1))
	prom.waitValue(`execq_heartbeats_total`, "heartbeats counted", above(0))
	prom.waitValue(`execq_output_bytes_received_total{stream="stdout"}`, "stdout bytes counted", eq(float64(len("out\n"))))
	prom.waitValue(`execq_output_bytes_received_total{stream="stderr"}`, "stderr bytes counted", eq(float64(len("err\nfailing\n"))))
	prom.waitValue(`sum(execq_agent_commands_executed_total)`, "the agent's own counter scraped", eq(3))

	t.Run("promtool check metrics", func(t *testing.T) {
		promtool := prometheusBinary(t, "promtool")
		for name, base := range map[string]string{"coordinator": s.url(""), "agent": "http://" + agentMetrics} {
			resp, err := http.Get(base + "/metrics")
			if err != nil {
				t.Fatalf("%s metrics: %v", name, err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			cmd := exec.Command(promtool, "check", "metrics")
			cmd.Stdin = bytes.NewReader(body)
			if out, err := cmd.CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
				t.Errorf("promtool check metrics on the %s: %v\n%s", name, err, out)
			}
		}
	})
}
