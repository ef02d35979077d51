package api

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/execq/execq/coordinator/store"
	"github.com/execq/execq/shared"
)

// maxGrantBody bounds POST /api/v1/grants: a user name and a selector.
const maxGrantBody = shared.MaxSelectorBytes + 1024

// GrantJSON renders a stored grant; the CLI prints the same form.
func GrantJSON(g store.Grant) shared.Grant {
	return shared.Grant{ID: g.ID, UserID: g.UserID, User: g.UserName,
		Selector: shared.Selector(g.Selector).String(), CreatedAt: g.CreatedAt.UTC()}
}

// listGrants answers every grant (admins only).
func (s *Server) listGrants(w http.ResponseWriter, r *http.Request) error {
	gs, err := s.store.ListGrants(r.Context())
	if err != nil {
		return err
	}
	list := shared.GrantList{Grants: make([]shared.Grant, len(gs))}
	for i, g := range gs {
		list.Grants[i] = GrantJSON(g)
	}
	return writeJSON(w, http.StatusOK, list)
}

// addGrant gives a user the containers a selector matches (admins only):
// 201 with the new grant, or 200 with the existing one when the user
// already holds the same selector.
func (s *Server) addGrant(w http.ResponseWriter, r *http.Request) error {
	var req shared.GrantRequest
	if err := decodeJSON(w, r, maxGrantBody, &req); err != nil {
		return err
	}
	if req.User == "" || len(req.User) > 200 {
		return invalidField("user", "must name the user to grant to (at most 200 bytes)")
	}
	sel, err := shared.ParseSelector(req.Selector)
	if err != nil {
		return err
	}
	g, created, err := s.store.CreateGrant(r.Context(), req.User, sel)
	if errors.Is(err, store.ErrNotFound) {
		return invalidField("user", fmt.Sprintf("there is no user named %q", req.User))
	}
	if err != nil {
		return err
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
		s.log.Info("grant added", "grant_id", g.ID, "user_id", g.UserID, "selector", shared.Selector(g.Selector).String(),
			"by_user_id", userFrom(r).ID)
	}
	return writeJSON(w, status, GrantJSON(g))
}

// revokeGrant deletes a grant (admins only) and answers it.
func (s *Server) revokeGrant(w http.ResponseWriter, r *http.Request) error {
	id, err := pathUUID(r, "id")
	if err != nil {
		return err
	}
	g, err := s.store.RevokeGrant(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		return &Error{http.StatusNotFound, "not_found", "no grant " + id}
	}
	if err != nil {
		return err
	}
	s.log.Info("grant revoked", "grant_id", g.ID, "user_id", g.UserID, "by_user_id", userFrom(r).ID)
	return writeJSON(w, http.StatusOK, GrantJSON(g))
}
