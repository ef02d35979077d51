package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/execq/execq/coordinator/store"
	"github.com/execq/execq/shared"
)

type ctxKey int

const (
	userKey ctxKey = iota
	nodeKey
)

var errUnauthenticated = &Error{http.StatusUnauthorized, "unauthenticated", "a valid bearer token is required"}

// lookup authenticates a token: from the cache if hit, else fn asks the
// database. It returns the context carrying the identity, and whether the
// answer came from the cache.
type lookup func(ctx context.Context, tok string, cachedOnly bool) (context.Context, bool, error)

// authUser admits requests bearing a user token. A node token is unknown
// among users and gets the same 401: the two identities never mix.
func (s *Server) authUser(next http.Handler) http.Handler {
	return s.authenticate(next, func(ctx context.Context, tok string, cachedOnly bool) (context.Context, bool, error) {
		u, gen, ok := s.users.get(tok)
		if !ok {
			if cachedOnly {
				return ctx, false, nil
			}
			var err error
			if u, err = s.store.UserByToken(ctx, tok); err != nil {
				return ctx, false, err
			}
			s.users.put(tok, u, gen)
		}
		return context.WithValue(ctx, userKey, u), true, nil
	})
}

// authNode admits requests bearing a node token. Each admitted request is
// noted as a contact of its node's agent, for as long as it lasts.
func (s *Server) authNode(next http.Handler) http.Handler {
	if c := s.cfg.Contacts; c != nil {
		inner := next
		next = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			defer c.Contact(nodeFrom(r).ID)()
			inner.ServeHTTP(w, r)
		})
	}
	return s.authenticate(next, func(ctx context.Context, tok string, cachedOnly bool) (context.Context, bool, error) {
		n, gen, ok := s.nodes.get(tok)
		if !ok {
			if cachedOnly {
				return ctx, false, nil
			}
			var err error
			if n, err = s.store.NodeByToken(ctx, tok); err != nil {
				return ctx, false, err
			}
			s.nodes.put(tok, n, gen)
		}
		return context.WithValue(ctx, nodeKey, n), true, nil
	})
}

// authenticate admits a request whose bearer token lookup finds. A token
// the cache knows is admitted whatever its client's failures; otherwise a
// client past its failed-authentication budget gets 429 before any database
// query, and each unknown token spends from that budget.
func (s *Server) authenticate(next http.Handler, find lookup) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.wrap(func(w http.ResponseWriter, r *http.Request) error {
			tok, ok := bearer(r)
			if !ok {
				w.Header().Set("WWW-Authenticate", `Bearer realm="execq"`)
				return errUnauthenticated
			}
			ctx, found, err := find(r.Context(), tok, true)
			if err == nil && !found {
				addr := clientAddr(r)
				if d := s.failures.wait(addr); d > 0 {
					// Answered here, not through wrap's error path: a
					// flood must not cost a log line per request.
					secs := retryAfter(d)
					w.Header().Set("Retry-After", strconv.Itoa(secs))
					return writeJSON(w, http.StatusTooManyRequests, shared.ErrorBody{Error: shared.ErrorDetail{
						Code: "rate_limited", Message: fmt.Sprintf("too many failed authentications from this address; retry after %d s", secs)}})
				}
				ctx, _, err = find(r.Context(), tok, false)
				if errors.Is(err, store.ErrNotFound) {
					s.failures.fail(addr)
				}
			}
			if errors.Is(err, store.ErrNotFound) {
				w.Header().Set("WWW-Authenticate", `Bearer realm="execq", error="invalid_token"`)
				return errUnauthenticated
			}
			if err != nil {
				return err
			}
			next.ServeHTTP(w, r.WithContext(ctx))
			return nil
		}).ServeHTTP(w, r)
	})
}

// invalidate handles a notification on store.AuthChannel: the identity it
// names ("user:ID" or "node:ID") leaves this replica's cache, so its old
// token is looked up again on its next request.
func (s *Server) invalidate(payload string) {
	kind, id, _ := strings.Cut(payload, ":")
	switch kind {
	case "user":
		s.users.drop(func(u store.User) bool { return u.ID == id })
	case "node":
		s.nodes.drop(func(n store.Node) bool { return n.ID == id })
	default:
		s.log.Warn("unknown token invalidation; flushing the token caches", "payload", payload)
		s.flushAuth()
	}
}

// flushAuth empties the token caches: after a listener reconnect any
// invalidation may have been missed.
func (s *Server) flushAuth() {
	s.users.flush()
	s.nodes.flush()
}

func userFrom(r *http.Request) store.User { return r.Context().Value(userKey).(store.User) }
func nodeFrom(r *http.Request) store.Node { return r.Context().Value(nodeKey).(store.Node) }
