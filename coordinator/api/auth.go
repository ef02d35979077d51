package api

import (
	"context"
	"errors"
	"net/http"

	"github.com/execq/execq/coordinator/store"
)

type ctxKey int

const (
	userKey ctxKey = iota
	nodeKey
)

var errUnauthenticated = &Error{http.StatusUnauthorized, "unauthenticated", "a valid bearer token is required"}

// authUser admits requests bearing a user token. A node token is unknown
// among users and gets the same 401: the two identities never mix.
func (s *Server) authUser(next http.Handler) http.Handler {
	return s.authenticate(next, func(ctx context.Context, tok string) (context.Context, error) {
		u, ok := s.users.get(tok)
		if !ok {
			var err error
			if u, err = s.store.UserByToken(ctx, tok); err != nil {
				return ctx, err
			}
			s.users.put(tok, u)
		}
		return context.WithValue(ctx, userKey, u), nil
	})
}

// authNode admits requests bearing a node token.
func (s *Server) authNode(next http.Handler) http.Handler {
	return s.authenticate(next, func(ctx context.Context, tok string) (context.Context, error) {
		n, ok := s.nodes.get(tok)
		if !ok {
			var err error
			if n, err = s.store.NodeByToken(ctx, tok); err != nil {
				return ctx, err
			}
			s.nodes.put(tok, n)
		}
		return context.WithValue(ctx, nodeKey, n), nil
	})
}

func (s *Server) authenticate(next http.Handler, lookup func(context.Context, string) (context.Context, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.wrap(func(w http.ResponseWriter, r *http.Request) error {
			tok, ok := bearer(r)
			if !ok {
				w.Header().Set("WWW-Authenticate", `Bearer realm="execq"`)
				return errUnauthenticated
			}
			ctx, err := lookup(r.Context(), tok)
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

func userFrom(r *http.Request) store.User { return r.Context().Value(userKey).(store.User) }
func nodeFrom(r *http.Request) store.Node { return r.Context().Value(nodeKey).(store.Node) }
