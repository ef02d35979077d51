package api

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/execq/execq/coordinator/store"
	"github.com/execq/execq/shared"
)

// historyParams are the query parameters GET /api/v1/commands accepts. Any
// other is refused, so a misspelt filter fails loudly instead of silently
// listing everything.
var historyParams = map[string]bool{
	"container_id": true, "status": true, "requested_by": true, "since": true, "limit": true, "cursor": true,
}

// listCommands answers one page of history, newest first. A non-admin sees
// only their own commands: asking for another user's yields an empty page,
// the same answer as for a user who never submitted anything, so it tells
// nothing about them.
func (s *Server) listCommands(w http.ResponseWriter, r *http.Request) error {
	flt, err := historyFilter(r.URL.RawQuery)
	if err != nil {
		return err
	}
	page := shared.HistoryPage{Commands: []shared.HistoryEntry{}}
	if user := userFrom(r); !user.IsAdmin {
		if flt.RequestedBy != "" && flt.RequestedBy != user.ID {
			return writeJSON(w, http.StatusOK, page)
		}
		flt.RequestedBy = user.ID
	}
	// One row past the page says whether another page exists.
	limit := flt.Limit
	flt.Limit++
	cs, err := s.store.History(r.Context(), flt)
	if err != nil {
		return err
	}
	if len(cs) > limit {
		cs = cs[:limit]
		last := cs[limit-1]
		cur := encodeCursor(store.HistoryPosition{CreatedAt: last.CreatedAt, ID: last.ID})
		page.NextCursor = &cur
	}
	for _, c := range cs {
		page.Commands = append(page.Commands, shared.HistoryEntry{
			CommandExecutionRecord: record(store.CommandWithOutput{Command: c}),
		})
	}
	return writeJSON(w, http.StatusOK, page)
}

// historyFilter parses and checks the query string. Each problem is a 400
// invalid_field naming the parameter.
func historyFilter(raw string) (store.HistoryFilter, error) {
	flt := store.HistoryFilter{Limit: shared.DefaultHistoryLimit}
	q, err := url.ParseQuery(raw)
	if err != nil {
		return flt, invalidField("query", "the query string is malformed: "+err.Error())
	}
	for k, vs := range q {
		if !historyParams[k] {
			return flt, invalidField(k, "is not a parameter of this endpoint (container_id, status, requested_by, since, limit, cursor)")
		}
		if len(vs) > 1 {
			return flt, invalidField(k, "must be given at most once")
		}
	}
	if v := q.Get("container_id"); v != "" {
		if flt.ContainerID, err = canonicalUUID("container_id", v); err != nil {
			return flt, err
		}
	}
	if v := q.Get("requested_by"); v != "" {
		if flt.RequestedBy, err = canonicalUUID("requested_by", v); err != nil {
			return flt, err
		}
	}
	if v := q.Get("status"); v != "" {
		st := shared.Status(v)
		switch st {
		case shared.StatusQueued, shared.StatusRunning, shared.StatusSucceeded, shared.StatusFailed, shared.StatusCancelled:
			flt.Status = st
		default:
			return flt, invalidField("status", fmt.Sprintf("%q is not one of queued, running, succeeded, failed, cancelled", v))
		}
	}
	if v := q.Get("since"); v != "" {
		if flt.Since, err = time.Parse(time.RFC3339Nano, v); err != nil {
			return flt, invalidField("since", fmt.Sprintf("%q is not an RFC 3339 timestamp such as 2026-01-02T15:04:05Z", v))
		}
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > shared.MaxHistoryLimit {
			return flt, invalidField("limit", fmt.Sprintf("must be a whole number from 1 to %d", shared.MaxHistoryLimit))
		}
		flt.Limit = n
	}
	if v := q.Get("cursor"); v != "" {
		pos, ok := decodeCursor(v)
		if !ok {
			return flt, invalidField("cursor", "is not a cursor this endpoint returned")
		}
		flt.After = &pos
	}
	return flt, nil
}

func invalidField(field, msg string) *Error {
	return badRequest("invalid_field", field+": "+msg)
}

// canonicalUUID accepts only the 36-character hyphenated form, as pathUUID.
func canonicalUUID(field, v string) (string, error) {
	id, err := uuid.Parse(v)
	if err != nil || len(v) != 36 {
		return "", invalidField(field, fmt.Sprintf("%q is not a UUID", v))
	}
	return id.String(), nil
}

// A cursor is the last entry's (created_at, id), base64url-encoded so
// clients treat it as opaque. It carries no filters: the next request
// repeats them. The timestamp keeps PostgreSQL's microseconds, so the
// keyset comparison resumes exactly after that entry.
func encodeCursor(p store.HistoryPosition) string {
	return base64.RawURLEncoding.EncodeToString([]byte(p.CreatedAt.UTC().Format(time.RFC3339Nano) + "," + p.ID))
}

func decodeCursor(v string) (store.HistoryPosition, bool) {
	var p store.HistoryPosition
	raw, err := base64.RawURLEncoding.DecodeString(v)
	if err != nil {
		return p, false
	}
	at, id, ok := strings.Cut(string(raw), ",")
	if !ok {
		return p, false
	}
	if p.CreatedAt, err = time.Parse(time.RFC3339Nano, at); err != nil {
		return p, false
	}
	u, err := uuid.Parse(id)
	if err != nil || len(id) != 36 {
		return p, false
	}
	p.ID = u.String()
	return p, true
}
