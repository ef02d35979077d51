package store

import (
	"context"
	"testing"
	"time"

	"github.com/execq/execq/coordinator/testpg"
)

// TestStatementTimeoutIsQueryTimeout: every pooled connection carries the
// query timeout as PostgreSQL's statement_timeout, so a timeout is the
// server's verdict (the statement did not commit); migrations lift it on
// their own session only.
func TestStatementTimeoutIsQueryTimeout(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st, err := Open(ctx, testpg.New(t), Options{MaxConns: 1, QueryTimeout: 1500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if _, err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	// One connection: the one Migrate used is the one read here.
	var got string
	if err := st.db.GetContext(ctx, &got, `SHOW statement_timeout`); err != nil {
		t.Fatal(err)
	}
	if got != "1500ms" {
		t.Fatalf("statement_timeout %q, want 1500ms", got)
	}
}
