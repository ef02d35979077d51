// Package api is the coordinator's HTTP surface: the public REST API for
// operators (/api/v1), the agent protocol (/agent/v1, see docs/protocol.md),
// health endpoints and /metrics. The public API is described by
// docs/openapi.yaml, served at /api/v1/openapi.json (openapi.go); the
// integration tests hold every public exchange to it.
//
// Handlers are small functions that return an error; one wrapper turns
// errors into a status code and the JSON envelope
// {"error":{"code":"…","message":"…"}}. Internal detail is logged, never
// sent. Every request body is size-limited and decoded strictly, and every
// rejection happens before anything is written.
//
// Authentication (auth.go) caches verified tokens per replica and drops an
// identity when PostgreSQL notifies store.AuthChannel, so a revocation
// reaches every replica at once; failed authentications are rate-limited
// per client address (faillimit.go) before any database lookup.
//
// No client can hold the server (deadlines.go): a request's body has a read
// deadline set before authentication, every write of an answer its own
// write deadline, and long-polls and follows extend theirs over their
// waits. A record is written as a stream from the stored bytes, read in
// slices, with the records of large output sent a bounded number at a time
// (recordstream.go), so memory does not grow with output or slow readers.
package api
