package api

import (
	"context"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/execq/execq/coordinator/lease"
	"github.com/execq/execq/coordinator/metrics"
	"github.com/execq/execq/coordinator/store"
)

// Config is what the handlers need beyond their collaborators.
type Config struct {
	// LeaseTTL is how long a lease or a running command lives without a
	// heartbeat.
	LeaseTTL time.Duration
	// Heartbeat is the interval agents are told to heartbeat at.
	Heartbeat time.Duration
	// MaxWait caps a long-poll's wait.
	MaxWait time.Duration
	// OutputCap bounds the bytes stored per stream; the rest is counted and
	// the record marked truncated.
	OutputCap int64
	// AuthCacheTTL is how long a successful token lookup is reused (0 turns
	// the cache off).
	AuthCacheTTL time.Duration
}

// Server holds the handlers' collaborators.
type Server struct {
	cfg     Config
	store   *store.Store
	poller  *lease.Poller
	metrics *metrics.Metrics
	log     *slog.Logger
	users   *tokenCache[store.User]
	nodes   *tokenCache[store.Node]
}

// New builds the HTTP handler. gatherer serves /metrics.
func New(cfg Config, st *store.Store, poller *lease.Poller, m *metrics.Metrics, gatherer prometheus.Gatherer, log *slog.Logger) http.Handler {
	s := &Server{cfg: cfg, store: st, poller: poller, metrics: m, log: log,
		users: newTokenCache[store.User](cfg.AuthCacheTTL), nodes: newTokenCache[store.Node](cfg.AuthCacheTTL)}
	r := mux.NewRouter()
	r.NotFoundHandler = s.wrap(func(http.ResponseWriter, *http.Request) error {
		return &Error{http.StatusNotFound, "not_found", "no such route"}
	})
	r.MethodNotAllowedHandler = s.wrap(func(http.ResponseWriter, *http.Request) error {
		return &Error{http.StatusMethodNotAllowed, "method_not_allowed", "method not allowed on this route"}
	})

	// Unauthenticated by design: probes and scrapers carry no tokens.
	r.Handle("/healthz", s.wrap(s.healthz)).Methods(http.MethodGet)
	r.Handle("/readyz", s.wrap(s.readyz)).Methods(http.MethodGet)
	r.Handle("/metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{})).Methods(http.MethodGet)

	// Routes are registered on the root router, each wrapped in its
	// authentication, rather than on PathPrefix subrouters: gorilla/mux
	// v1.8.1 loses a subrouter's method mismatch, turning 405 into 404.
	user := func(method, path string, h handlerFunc) {
		r.Handle("/api/v1"+path, s.authUser(s.wrap(h))).Methods(method)
	}
	user(http.MethodGet, "/containers", s.listContainers)
	user(http.MethodPost, "/containers/{id}/commands", s.submit)
	user(http.MethodGet, "/commands", s.listCommands)
	user(http.MethodGet, "/commands/{id}", s.getCommand)
	user(http.MethodGet, "/commands/{id}/output", s.getOutput)

	agent := func(method, path string, h handlerFunc) {
		r.Handle("/agent/v1"+path, s.authNode(s.wrap(h))).Methods(method)
	}
	agent(http.MethodPut, "/containers", s.putInventory)
	agent(http.MethodPost, "/lease", s.lease)
	agent(http.MethodPost, "/commands/{id}/start", s.start)
	agent(http.MethodPost, "/commands/{id}/release", s.release)
	agent(http.MethodPost, "/commands/{id}/heartbeat", s.heartbeat)
	agent(http.MethodPost, "/commands/{id}/finish", s.finish)

	r.Use(s.instrument)
	return r
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) error {
	return writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) error {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.store.Ping(ctx); err != nil {
		return &Error{http.StatusServiceUnavailable, "unavailable", "the database is unreachable"}
	}
	return writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// instrument records request counts and durations by route template, never
// by raw path, so IDs do not explode label cardinality.
func (s *Server) instrument(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		route := "unmatched"
		if cur := mux.CurrentRoute(r); cur != nil {
			if tpl, err := cur.GetPathTemplate(); err == nil {
				route = tpl
			}
		}
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		start := time.Now()
		next.ServeHTTP(rec, r)
		s.metrics.HTTPDuration.WithLabelValues(route, r.Method).Observe(time.Since(start).Seconds())
		s.metrics.HTTPRequests.WithLabelValues(route, r.Method, strconv.Itoa(rec.status)).Inc()
	})
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

func muxVar(r *http.Request, name string) string { return mux.Vars(r)[name] }

// bearer extracts the token of an "Authorization: Bearer" header.
func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}
