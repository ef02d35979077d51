// Package store is the coordinator's only door to PostgreSQL: the job table
// (commands and their output chunks), identities (users, nodes and their
// hashed tokens), the container inventory, and schema migrations.
//
// One method per query. Errors are mapped in one place (interpretError) to
// the sentinels below so the API can choose a status code with errors.Is.
// Every lease transition is a single conditional statement or a short
// transaction that re-checks node, attempt and status, so a stale agent or a
// concurrent reaper on another replica can never overwrite a newer state.
package store
