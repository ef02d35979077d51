// Package cli holds execq's operator command line: the typed client of the
// coordinator's public API (cli/client), the commands (cli/app) and the
// execq binary (cli/cmd/execq). It is a client of the public API only: it
// imports nothing of the coordinator but the shared wire types.
package cli
