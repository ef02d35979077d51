// Package testpg gives each test its own empty PostgreSQL database.
//
// Tests run against a real server, named by the TEST_DATABASE_URL environment
// variable (an admin URL such as
// postgres://postgres@127.0.0.1:25432/postgres?sslmode=disable). `make test`
// starts the private dev cluster (scripts/devdb.sh) and sets it. New creates a
// fresh database on that server for the calling test and drops it when the
// test ends, so tests can run in parallel and never see each other's rows.
//
// A missing or unreachable server fails the test: a suite that cannot reach
// its database must not pass by skipping.
package testpg
