package app

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/execq/execq/agent/runc/runctest"
	"github.com/execq/execq/shared"
)

// TestAgentInProcess starts a whole agent against a minimal coordinator:
// it must report its container, long-poll, serve metrics, and drain to a
// nil return when its context ends.
func TestAgentInProcess(t *testing.T) {
	ctr := runctest.Start(t, runctest.Options{})
	var (
		mu        sync.Mutex
		inventory []shared.ContainerReport
		leases    atomic.Int32
	)
	coord := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer node-secret" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		switch {
		case r.Method == http.MethodPut && r.URL.Path == shared.AgentPathContainers:
			var req shared.InventoryRequest
			_ = json.NewDecoder(r.Body).Decode(&req)
			mu.Lock()
			inventory = req.Containers
			mu.Unlock()
			_ = json.NewEncoder(w).Encode(shared.InventoryResponse{Accepted: len(req.Containers)})
		case r.Method == http.MethodPost && r.URL.Path == shared.AgentPathLease:
			var req shared.LeaseRequest
			_ = json.NewDecoder(r.Body).Decode(&req)
			if req.Max != 3 {
				t.Errorf("lease max %d, want the free capacity 3", req.Max)
			}
			leases.Add(1)
			select {
			case <-time.After(time.Duration(req.WaitMillis) * time.Millisecond):
			case <-r.Context().Done():
				return
			}
			_ = json.NewEncoder(w).Encode(shared.LeaseResponse{Commands: []shared.LeasedCommand{}, HeartbeatMillis: 1000, LeaseTTLMillis: 10000})
		default:
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	defer coord.Close()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	metricsAddr := ln.Addr().String()
	ln.Close()

	cfg := Defaults()
	cfg.CoordinatorURL = coord.URL
	cfg.Token = "node-secret"
	cfg.RuncBinary = runctest.RuncBinary(t)
	cfg.RuncRoot = ctr.Root
	cfg.WorkDir = t.TempDir()
	cfg.Concurrency = 3
	cfg.LeaseWait = 2 * time.Second
	cfg.InventoryInterval = 100 * time.Millisecond
	cfg.MetricsListen = metricsAddr
	var logs strings.Builder
	var logMu sync.Mutex
	logger := slog.New(slog.NewJSONHandler(writerFunc(func(p []byte) (int, error) {
		logMu.Lock()
		defer logMu.Unlock()
		return logs.Write(p)
	}), nil))
	a, err := New(cfg, logger, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()

	deadline := time.Now().Add(20 * time.Second)
	for {
		mu.Lock()
		got := inventory
		mu.Unlock()
		if len(got) == 1 && got[0].ID == ctr.ID && got[0].State == "running" && leases.Load() > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("inventory %+v, %d leases", got, leases.Load())
		}
		time.Sleep(20 * time.Millisecond)
	}

	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, name := range []string{"execq_agent_commands_running", "execq_agent_commands_executed_total", "execq_agent_exec_duration_seconds", "execq_agent_output_bytes_total", "execq_agent_inventory_containers 1"} {
		if !strings.Contains(string(body), name) {
			t.Errorf("metrics lack %s", name)
		}
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("agent did not stop after its context ended")
	}
	logMu.Lock()
	defer logMu.Unlock()
	if strings.Contains(logs.String(), "node-secret") {
		t.Fatal("the token was logged")
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
