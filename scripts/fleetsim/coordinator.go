package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// replica is one coordinator process.
type replica struct {
	cmd *exec.Cmd
	URL string
	log string
}

// startReplica runs bin serve on a free loopback port against dbURL, over
// HTTPS with p's certificate if p is set. The environment passes through, so
// EXECQ_* variables tune the replicas (e.g. EXECQ_DB_MAX_CONNS); listen
// address, database and TLS files are set here.
func startReplica(ctx context.Context, bin, dbURL, logPath string, p *pki) (*replica, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "serve")
	cmd.Env = append(append(os.Environ(), "EXECQ_LISTEN="+addr, "EXECQ_DATABASE_URL="+dbURL), p.env()...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	logf.Close() // the child holds its own descriptor
	r := &replica{cmd: cmd, URL: p.scheme() + "://" + addr, log: logPath}
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := probeClient.Get(r.URL + "/metrics")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return r, nil
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			r.stop()
			return nil, fmt.Errorf("coordinator on %s not serving after 60s (log: %s)", addr, logPath)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop ends the process as systemd would (SIGTERM, which drains) and waits.
func (r *replica) stop() {
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = r.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = r.cmd.Process.Kill()
		<-done
	}
}

// cpuSeconds is the user+system CPU the process has used.
func (r *replica) cpuSeconds() (float64, error) { return procCPU(r.cmd.Process.Pid) }

// procCPU is the user+system CPU process pid has used, from /proc/PID/stat
// (fields 14 and 15, in clock ticks of 1/100 s on Linux).
func procCPU(pid int) (float64, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces: count from its ')'.
	s := string(raw)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	utime, err1 := strconv.ParseFloat(fields[11], 64)
	stime, err2 := strconv.ParseFloat(fields[12], 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("parse /proc stat %q", s)
	}
	return (utime + stime) / 100, nil
}

// memory returns the resident set now and its peak, in MiB, from
// /proc/PID/status.
func (r *replica) memory() (rss, peak float64, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", r.cmd.Process.Pid))
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
		if k == "VmRSS" {
			rss = kb / 1024
		} else {
			peak = kb / 1024
		}
	}
	return rss, peak, sc.Err()
}

// gauge reads one unlabelled sample from the replica's /metrics.
func (r *replica) gauge(name string) (float64, error) {
	resp, err := probeClient.Get(r.URL + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			return strconv.ParseFloat(v, 64)
		}
	}
	return 0, fmt.Errorf("%s not in /metrics", name)
}

// raiseOpenFiles lifts this process's open-files limit (inherited by the
// replicas it starts): each simulated agent holds a connection, and so does
// the coordinator for each of them. As root the hard limit is raised too.
func raiseOpenFiles(want uint64) (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, err
	}
	// Raising the hard limit needs CAP_SYS_RESOURCE and is capped by
	// fs.nr_open: try smaller steps down to what we have.
	for try := want; try > lim.Max; try /= 2 {
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: try, Max: try}) == nil {
			return try, nil
		}
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, err
	}
	return lim.Cur, nil
}
