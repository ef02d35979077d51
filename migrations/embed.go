// Package migrations holds the versioned SQL schema, embedded into the
// coordinator binary. Files are applied in name order, each once, and never
// edited after they land: a change is a new file.
package migrations

import "embed"

// FS holds the *.sql files.
//
//go:embed *.sql
var FS embed.FS
