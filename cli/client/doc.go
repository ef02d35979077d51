// Package client is the typed Go client of the coordinator's public API
// (/api/v1): submit, get and wait, exact output and live follow, cancel,
// history and containers. The execq command line is built on it, and the
// end-to-end tests use it, so the tests exercise the client operators run.
//
// Wire types are those of package shared. An error answer becomes an
// *Error carrying the HTTP status and the envelope's code and message, so
// callers branch with errors.As on a stable code, never on text.
//
// Follow returns a reader of a stream's exact bytes that survives dropped
// connections: an answer that ends without the X-Execq-Status trailer is
// incomplete (a coordinator restarting, a load balancer cutting an idle
// connection), and the reader reconnects from the byte offset it reached,
// so nothing is lost or read twice.
package client
