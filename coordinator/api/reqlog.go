package api

import (
	"log/slog"
	"net/http"
	"strings"

	"github.com/gorilla/mux"

	"github.com/execq/execq/coordinator/store"
)

// reqLog is the server's logger with what the request is about: the
// command or container its route names, and the node or user it
// authenticated as. Every line about a command then carries command_id
// (and node_id or user_id), whoever writes it.
func (s *Server) reqLog(r *http.Request) *slog.Logger {
	var attrs []any
	if route := mux.CurrentRoute(r); route != nil {
		if tpl, err := route.GetPathTemplate(); err == nil {
			switch id := mux.Vars(r)["id"]; {
			case strings.Contains(tpl, "/commands/{id}"):
				attrs = append(attrs, "command_id", id)
			case strings.Contains(tpl, "/containers/{id}"):
				attrs = append(attrs, "container_id", id)
			}
		}
	}
	if n, ok := r.Context().Value(nodeKey).(store.Node); ok {
		attrs = append(attrs, "node_id", n.ID)
	}
	if u, ok := r.Context().Value(userKey).(store.User); ok {
		attrs = append(attrs, "user_id", u.ID)
	}
	return s.log.With(attrs...)
}
