package api

import (
	"net/http"
)

// Who may do what (the README's "Who may exec where"):
//
//   - Admins may do everything.
//   - Anyone else may submit only to containers a grant of theirs selects
//     (the grant check runs in the enqueue statement itself, store.mayUse),
//     and lists only those. A container they may not use answers exactly
//     as an unknown one: 404 unknown_container, same message.
//   - Everyone reads, waits on and cancels the commands they submitted,
//     whatever their grants say now: revoking a grant stops new submits,
//     while what already runs stays visible and stoppable by its owner.
//     Another user's command is 404, as an unknown one.
//   - Grants are managed by admins only; to anyone else those routes do not
//     exist (404 not_found, the answer for an unknown route), so a user
//     cannot even learn that there is something to be refused.

// errUnknownContainer is the one answer for a container that was never
// reported, is gone, or is not the caller's to use.
func errUnknownContainer(id string) *Error {
	return &Error{http.StatusNotFound, "unknown_container", "no container " + id + " that you may use"}
}

// errNoRoute is the answer for a route that does not exist, and for an
// admin route to a non-admin.
var errNoRoute = &Error{http.StatusNotFound, "not_found", "no such route"}

// adminOnly lets admins through and answers anyone else as if the route
// did not exist.
func (s *Server) adminOnly(h handlerFunc) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		if !userFrom(r).IsAdmin {
			return errNoRoute
		}
		return h(w, r)
	}
}
