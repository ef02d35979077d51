package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/execq/execq/coordinator/store"
	"github.com/execq/execq/shared"
)

// Error is an error with the status and code to send.
type Error struct {
	Status  int
	Code    string
	Message string
}

func (e *Error) Error() string { return e.Message }

func badRequest(code, msg string) *Error { return &Error{http.StatusBadRequest, code, msg} }

// handlerFunc is a handler that reports failure by returning an error.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

// writeJSON sends v with the given status.
func writeJSON(w http.ResponseWriter, status int, v any) error {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	return json.NewEncoder(w).Encode(v)
}

// wrap turns a handlerFunc into an http.Handler, mapping its error to a
// response in one place.
func (s *Server) wrap(h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		err := h(w, r)
		if err == nil {
			return
		}
		log := s.reqLog(r)
		var cut *errResponseStarted
		if errors.As(err, &cut) {
			// The status line and part of the body are sent: no error
			// answer can follow. Abort, so the client sees a cut
			// connection rather than a short document.
			if r.Context().Err() != nil || isTimeout(err) || errors.Is(err, http.ErrHandlerTimeout) {
				log.Info("response cut short: the client stopped reading or left", "method", r.Method, "path", r.URL.Path, "err", err)
			} else {
				log.Error("response cut short", "method", r.Method, "path", r.URL.Path, "err", err)
			}
			panic(http.ErrAbortHandler)
		}
		var gap *store.GapError
		if errors.As(err, &gap) {
			log.Info("output gap", "path", r.URL.Path, "stdout_offset", gap.Offsets.Stdout, "stderr_offset", gap.Offsets.Stderr)
			_ = writeJSON(w, http.StatusConflict, shared.GapBody{
				Error:   shared.ErrorDetail{Code: shared.CodeOutputGap, Message: "a chunk starts past the stored end of its stream; resend from the offsets given"},
				Offsets: gap.Offsets,
			})
			return
		}
		e := toAPIError(err)
		if e.Status >= 500 {
			log.Error("request failed", "method", r.Method, "path", r.URL.Path, "status", e.Status, "err", err)
		} else {
			log.Info("request refused", "method", r.Method, "path", r.URL.Path, "status", e.Status, "code", e.Code, "err", err)
		}
		_ = writeJSON(w, e.Status, shared.ErrorBody{Error: shared.ErrorDetail{Code: e.Code, Message: e.Message}})
	})
}

// toAPIError maps store sentinels and everything else to a response.
func toAPIError(err error) *Error {
	var e *Error
	var verr *shared.ValidationError
	switch {
	case errors.As(err, &e):
		return e
	case errors.As(err, &verr):
		return badRequest("invalid_field", verr.Error())
	case errors.Is(err, store.ErrTimeout):
		// PostgreSQL answered, but the statement ran past the query timeout
		// (a held lock, an overloaded database): not the same as unreachable.
		return &Error{http.StatusServiceUnavailable, "timeout", "a database statement timed out; retry later"}
	case errors.Is(err, store.ErrUnavailable):
		return &Error{http.StatusServiceUnavailable, "unavailable", "the database is unreachable; retry later"}
	case errors.Is(err, store.ErrNotFound):
		return &Error{http.StatusNotFound, "not_found", "no such resource"}
	case errors.Is(err, store.ErrForbidden):
		return &Error{http.StatusForbidden, shared.CodeForbidden, "this command belongs to another node"}
	case errors.Is(err, store.ErrLeaseLost):
		return &Error{http.StatusConflict, shared.CodeLeaseLost, "the lease on this command is no longer yours (expired, replaced or reaped)"}
	case errors.Is(err, store.ErrCancelled):
		return &Error{http.StatusConflict, shared.CodeCancelled, "the command was cancelled before it started"}
	case errors.Is(err, store.ErrConflict):
		return &Error{http.StatusConflict, "conflict", err.Error()}
	case errors.Is(err, store.ErrLengthMismatch):
		return badRequest("invalid_length", err.Error())
	case errors.Is(err, context.Canceled):
		// The client went away; nobody reads this answer.
		return &Error{499, "client_closed", "request cancelled"}
	case errors.Is(err, context.DeadlineExceeded):
		// Only the store's query timeout sets a deadline on a request.
		return &Error{http.StatusServiceUnavailable, "timeout", "a database statement timed out; retry later"}
	}
	return &Error{http.StatusInternalServerError, "internal", "internal error"}
}
