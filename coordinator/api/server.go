package api

import (
	"context"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/execq/execq/coordinator/lease"
	"github.com/execq/execq/coordinator/liveness"
	"github.com/execq/execq/coordinator/metrics"
	"github.com/execq/execq/coordinator/store"
	"github.com/execq/execq/shared"
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
	// OutputCap bounds the bytes stored per stream; past it the head and
	// the tail are kept, the middle counted and the record marked truncated.
	OutputCap int64
	// OutputTail is the part of OutputCap kept from a stream's end; agents
	// are told it with the cap.
	OutputTail int64
	// AuthCacheTTL is how long a successful token lookup is reused (0 turns
	// the cache off).
	AuthCacheTTL time.Duration
	// AuthFailInterval and AuthFailBurst rate-limit failed authentications
	// per client address: AuthFailBurst at once, then one per interval.
	AuthFailInterval time.Duration
	AuthFailBurst    int
	// Limits are the timeout and grace defaults and maxima (control.go).
	Limits Limits
	// ReadTimeout bounds the arrival of a request's body, WriteTimeout each
	// write of a response (deadlines.go).
	ReadTimeout, WriteTimeout time.Duration
	// MaxLargeReads and MaxLargeReadQueue bound the records with large
	// output sent at once and waiting (recordstream.go).
	MaxLargeReads, MaxLargeReadQueue int
	// Contacts is told of every authenticated agent request, for the nodes'
	// liveness; nil tells no one.
	Contacts *liveness.Tracker
	// Resumer takes back the connections of lease polls parked off
	// net/http (detach.go); nil keeps every poll inside its handler.
	Resumer Resumer
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
	// failures limits failed authentications per client address.
	failures *failLimiter
	// notReady is the last readiness /readyz found, so only its changes
	// are logged.
	notReady   atomic.Bool
	largeReads *largeReads
}

// New builds the HTTP handler. gatherer serves /metrics.
func New(cfg Config, st *store.Store, poller *lease.Poller, m *metrics.Metrics, gatherer prometheus.Gatherer, log *slog.Logger) http.Handler {
	s := &Server{cfg: cfg, store: st, poller: poller, metrics: m, log: log,
		users: newTokenCache[store.User](cfg.AuthCacheTTL), nodes: newTokenCache[store.Node](cfg.AuthCacheTTL),
		failures:   newFailLimiter(cfg.AuthFailInterval, cfg.AuthFailBurst),
		largeReads: newLargeReads(cfg.MaxLargeReads, cfg.MaxLargeReadQueue)}
	if poller != nil && poller.Notifier != nil {
		poller.Notifier.OnNotify(store.AuthChannel, s.invalidate, s.flushAuth)
	}
	r := mux.NewRouter()
	// No path cleaning: it answered "/api/v1/commands/../../healthz" with a
	// redirect to wherever the dot segments led. deadlines refuses them.
	r.SkipClean(true)
	// gorilla/mux runs middleware (r.Use) only for a matched route, so these
	// two are instrumented here, under one fixed route label.
	r.NotFoundHandler = s.instrumentAs(unmatchedRoute, s.wrap(func(http.ResponseWriter, *http.Request) error {
		return &Error{http.StatusNotFound, "not_found", "no such route"}
	}))
	r.MethodNotAllowedHandler = s.instrumentAs(unmatchedRoute, s.wrap(func(http.ResponseWriter, *http.Request) error {
		return &Error{http.StatusMethodNotAllowed, "method_not_allowed", "method not allowed on this route"}
	}))

	// Unauthenticated by design: probes and scrapers carry no tokens.
	r.Handle("/healthz", s.wrap(s.healthz)).Methods(http.MethodGet)
	r.Handle("/readyz", s.wrap(s.readyz)).Methods(http.MethodGet)
	r.Handle("/metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{})).Methods(http.MethodGet)

	// Routes are registered on the root router, each wrapped in its
	// authentication, rather than on PathPrefix subrouters: gorilla/mux
	// v1.8.1 loses a subrouter's method mismatch, turning 405 into 404.
	// Public API requests are refused early (429) while the database is
	// the bottleneck, before authentication, so a refusal costs nothing.
	user := func(method, path string, h handlerFunc) {
		r.Handle("/api/v1"+path, s.shed(s.authUser(s.wrap(h)))).Methods(method)
	}
	user(http.MethodGet, "/containers", s.listContainers)
	user(http.MethodPost, "/containers/{id}/commands", s.submit)
	user(http.MethodGet, "/commands", s.listCommands)
	user(http.MethodPost, "/commands", s.submitBatch)
	user(http.MethodGet, "/commands/{id}", s.getCommand)
	user(http.MethodGet, "/commands/{id}/output", s.getOutput)
	user(http.MethodPost, "/commands/{id}/cancel", s.cancel)
	user(http.MethodGet, "/openapi.json", s.openAPI())
	admin := func(method, path string, h handlerFunc) { user(method, path, s.adminOnly(h)) }
	admin(http.MethodGet, "/grants", s.listGrants)
	admin(http.MethodPost, "/grants", s.addGrant)
	admin(http.MethodDelete, "/grants/{id}", s.revokeGrant)

	agent := func(method, path string, h handlerFunc) {
		r.Handle("/agent/v1"+path, s.authNode(s.wrap(h))).Methods(method)
	}
	agent(http.MethodPut, "/containers", s.putInventory)
	agent(http.MethodPost, "/lease", s.lease)
	// Lease keeping goes first: these calls (and their token lookups) skip
	// admission and may use the pool's reserved connections, so a running
	// command is never reaped because new work filled the pool.
	leaseKeeping := func(method, path string, h handlerFunc) {
		r.Handle("/agent/v1"+path, priority(s.authNode(s.wrap(h)))).Methods(method)
	}
	leaseKeeping(http.MethodPost, "/commands/{id}/start", s.start)
	leaseKeeping(http.MethodPost, "/commands/{id}/release", s.release)
	leaseKeeping(http.MethodPost, "/commands/{id}/heartbeat", s.heartbeat)
	leaseKeeping(http.MethodPost, "/commands/{id}/finish", s.finish)
	leaseKeeping(http.MethodPost, "/reports", s.reports)
	agent(http.MethodPost, "/control", s.control)

	r.Use(s.instrument)
	return s.deadlines(r)
}

// priority marks the request's database calls as lease keeping
// (store.WithPriority).
func priority(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		next.ServeHTTP(w, r.WithContext(store.WithPriority(r.Context())))
	})
}

// shedRetryAfter is the Retry-After of a 429 overloaded: about the time a
// queue of database calls at its bound takes to drain.
const shedRetryAfter = "1"

// shed refuses a request with 429 overloaded and Retry-After while as many
// public API calls wait for a database connection as the bound allows
// (store.Busy): past the knee, queueing more only makes every request
// slower until they all time out. Nothing was done, so the request may be
// sent again as is. A request let through is counted in that bound while
// it waits.
func (s *Server) shed(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.store.Busy() {
			next.ServeHTTP(w, r.WithContext(store.WithShedding(r.Context())))
			return
		}
		s.metrics.Shed.Inc()
		w.Header().Set("Retry-After", shedRetryAfter)
		_ = writeJSON(w, http.StatusTooManyRequests, shared.ErrorBody{Error: shared.ErrorDetail{
			Code: "overloaded", Message: "the database is saturated; nothing was done, retry after the delay in Retry-After"}})
	})
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) error {
	return writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// readyz answers 503 while the database does not answer. Probes come every
// few seconds from every load balancer and supervisor, so the log gets the
// transitions (ready → not ready, and back), not a line per probe.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) error {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.store.Ping(ctx); err != nil {
		if r.Context().Err() != nil {
			return r.Context().Err() // the prober left: says nothing about the database
		}
		if s.notReady.CompareAndSwap(false, true) {
			s.log.Error("readiness: the database is unreachable; /readyz answers 503 until it is back", "err", err)
		}
		return writeJSON(w, http.StatusServiceUnavailable, shared.ErrorBody{Error: shared.ErrorDetail{
			Code: "unavailable", Message: "the database is unreachable"}})
	}
	if s.notReady.CompareAndSwap(true, false) {
		s.log.Info("readiness: the database answers again; ready")
	}
	return writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// unmatchedRoute is the route label of requests no route serves (404, 405),
// whatever their URL.
const unmatchedRoute = "unmatched"

// instrument records request counts and durations by route template, never
// by raw path, so IDs do not explode label cardinality.
func (s *Server) instrument(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		route := unmatchedRoute
		if cur := mux.CurrentRoute(r); cur != nil {
			if tpl, err := cur.GetPathTemplate(); err == nil {
				route = tpl
			}
		}
		s.observe(route, next, w, r)
	})
}

// instrumentAs is instrument with a fixed route label.
func (s *Server) instrumentAs(route string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { s.observe(route, next, w, r) })
}

func (s *Server) observe(route string, next http.Handler, w http.ResponseWriter, r *http.Request) {
	rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
	start := time.Now()
	// Deferred: a response cut short panics with http.ErrAbortHandler.
	defer func() {
		method := methodLabel(r.Method)
		s.metrics.HTTPDuration.WithLabelValues(route, method).Observe(time.Since(start).Seconds())
		s.metrics.HTTPRequests.WithLabelValues(route, method, strconv.Itoa(rec.status)).Inc()
	}()
	next.ServeHTTP(rec, r)
}

// methodLabel keeps the method label to the standard methods: a client may
// send any token as a method.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return m
	}
	return "other"
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the connection (flush, write
// deadlines) through the recorder.
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

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
