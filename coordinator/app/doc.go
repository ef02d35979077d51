// Package app wires the coordinator together: configuration, the database,
// migrations, the notification listener, the reaper and the HTTP server. The
// binary and the end-to-end tests both start the coordinator through it.
package app
