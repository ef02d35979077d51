package shared

import "time"

// Grant lets a non-admin user use the containers its selector matches
// (labels.go). It is the body of POST /api/v1/grants's answer and an entry
// of GET /api/v1/grants, and what `execq-coordinator grants` prints.
type Grant struct {
	ID     string `json:"grant_id"`
	UserID string `json:"user_id"`
	User   string `json:"user"`
	// Selector is written canonically: requirements sorted by key.
	Selector  string    `json:"selector"`
	CreatedAt time.Time `json:"created_at"`
}

// GrantRequest is the body of POST /api/v1/grants: the user by name and
// the selector as written.
type GrantRequest struct {
	User     string `json:"user"`
	Selector string `json:"selector"`
}

// GrantList is the body of GET /api/v1/grants.
type GrantList struct {
	Grants []Grant `json:"grants"`
}
