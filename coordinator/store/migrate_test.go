package store

import (
	"encoding/json"
	"io/fs"
	"testing"

	"github.com/execq/execq/migrations"
)

// TestMigrateReportsEmptyListWhenNothingPending: a second run applies
// nothing and says so as [] (the migrate command logs the list as JSON; null
// reads as "unknown").
func TestMigrateReportsEmptyListWhenNothingPending(t *testing.T) {
	f := setup(t) // migrates once
	all, err := fs.Glob(migrations.FS, "*.sql")
	if err != nil || len(all) == 0 {
		t.Fatalf("embedded migrations: %v %v", all, err)
	}
	var n int
	if err := f.st.db.GetContext(f.ctx, &n, `SELECT count(*) FROM schema_migrations`); err != nil || n != len(all) {
		t.Fatalf("schema_migrations has %d rows (%v), want %d", n, err, len(all))
	}
	applied, err := f.st.Migrate(f.ctx)
	if err != nil {
		t.Fatalf("second migrate: %v", err)
	}
	js, _ := json.Marshal(applied)
	if string(js) != "[]" {
		t.Fatalf("second migrate applied %s, want []", js)
	}
}
