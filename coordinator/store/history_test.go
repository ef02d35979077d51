package store

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/execq/execq/shared"
)

// TestHistory walks every page of several filters over rows that share
// timestamps (the id breaks ties) and checks each walk returns exactly the
// matching rows, newest first, once each.
func TestHistory(t *testing.T) {
	t.Parallel()
	f := setup(t)
	bob, _, err := f.st.CreateUser(f.ctx, "bob", false)
	if err != nil {
		t.Fatal(err)
	}
	other := uuid.NewString()
	// 120 rows over 30 distinct timestamps: 4 rows per instant, alternating
	// users, containers and statuses.
	f.exec(`INSERT INTO commands (id, container_id, node_id, requested_by, program, args, status, created_at)
		SELECT gen_random_uuid(), CASE WHEN i % 3 = 0 THEN $1::uuid ELSE $2::uuid END, $3,
			CASE WHEN i % 2 = 0 THEN $4::uuid ELSE $5::uuid END, 'p' || i, '{}',
			CASE WHEN i % 5 = 0 THEN 'failed' ELSE 'succeeded' END,
			timestamptz '2026-01-01 00:00:00Z' + (i / 4) * interval '1 second'
		FROM generate_series(0, 119) AS i`, other, f.container, f.node.ID, f.user.ID, bob.ID)
	since := time.Date(2026, 1, 1, 0, 0, 10, 0, time.UTC)

	for _, tc := range []struct {
		name  string
		flt   HistoryFilter
		where string
		args  []any
	}{
		{"everyone", HistoryFilter{}, `true`, nil},
		{"one user", HistoryFilter{RequestedBy: bob.ID}, `requested_by = $1`, []any{bob.ID}},
		{"one container", HistoryFilter{ContainerID: other}, `container_id = $1`, []any{other}},
		{"one status", HistoryFilter{Status: shared.StatusFailed}, `status = 'failed'`, nil},
		{"since", HistoryFilter{Since: since}, `created_at >= $1`, []any{since}},
		{"all filters", HistoryFilter{RequestedBy: f.user.ID, ContainerID: f.container, Status: shared.StatusSucceeded, Since: since},
			`requested_by = $1 AND container_id = $2 AND status = 'succeeded' AND created_at >= $3`, []any{f.user.ID, f.container, since}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var want []string
			if err := f.st.db.SelectContext(f.ctx, &want, `SELECT id FROM commands WHERE `+tc.where+
				` ORDER BY created_at DESC, id DESC`, tc.args...); err != nil {
				t.Fatal(err)
			}
			if len(want) == 0 {
				t.Fatal("the filter matches nothing; the test data is wrong")
			}
			var got []string
			flt := tc.flt
			flt.Limit = 7 // not a divisor of the tie groups: pages end mid-instant
			for page := 0; ; page++ {
				if page > len(want) {
					t.Fatalf("more than %d pages", page)
				}
				cs, err := f.st.History(f.ctx, flt)
				if err != nil {
					t.Fatal(err)
				}
				for _, c := range cs {
					got = append(got, c.ID)
				}
				if len(cs) < flt.Limit {
					break
				}
				last := cs[len(cs)-1]
				flt.After = &HistoryPosition{CreatedAt: last.CreatedAt, ID: last.ID}
			}
			if !slices.Equal(got, want) {
				t.Errorf("walked %d ids, want %d in (created_at, id) descending order:\n got %v\nwant %v", len(got), len(want), got, want)
			}
		})
	}
}

// TestHistoryUsesIndexes checks the history query's plan for every
// combination of the filters the API offers, on a table of 100k commands:
// none may read the whole table.
func TestHistoryUsesIndexes(t *testing.T) {
	t.Parallel()
	f := setup(t)
	users := []string{f.user.ID}
	for i := range 9 {
		u, _, err := f.st.CreateUser(f.ctx, fmt.Sprint("user", i), false)
		if err != nil {
			t.Fatal(err)
		}
		users = append(users, u.ID)
	}
	// 10 users, 50 containers, mostly succeeded, over the last ~28 hours.
	f.exec(`INSERT INTO commands (id, container_id, node_id, requested_by, program, args, status, created_at)
		SELECT gen_random_uuid(), ('00000000-0000-0000-0000-0000000000' || lpad((i % 50)::text, 2, '0'))::uuid, $1,
			($2::uuid[])[1 + i % 10], 'true', '{}',
			(ARRAY['succeeded','succeeded','succeeded','succeeded','succeeded','succeeded','succeeded','failed','failed','cancelled'])[1 + (i / 7) % 10],
			now() - interval '100000 seconds' + i * interval '1 second'
		FROM generate_series(1, 100000) AS i`, f.node.ID, "{"+strings.Join(users, ",")+"}")
	f.exec(`ANALYZE commands`)

	container := "00000000-0000-0000-0000-000000000007"
	var pos HistoryPosition
	if err := f.st.db.QueryRowContext(f.ctx, `SELECT created_at, id FROM commands ORDER BY created_at DESC OFFSET 5000 LIMIT 1`).
		Scan(&pos.CreatedAt, &pos.ID); err != nil {
		t.Fatal(err)
	}
	for combo := range 1 << 5 {
		flt := HistoryFilter{Limit: 51}
		var name []string
		if combo&1 != 0 {
			flt.RequestedBy = users[3]
			name = append(name, "requested_by")
		}
		if combo&2 != 0 {
			flt.ContainerID = container
			name = append(name, "container_id")
		}
		if combo&4 != 0 {
			flt.Status = shared.StatusFailed
			name = append(name, "status")
		}
		if combo&8 != 0 {
			flt.Since = time.Now().Add(-time.Hour)
			name = append(name, "since")
		}
		if combo&16 != 0 {
			flt.After = &pos
			name = append(name, "cursor")
		}
		if len(name) == 0 {
			name = append(name, "no filter")
		}
		t.Run(strings.Join(name, "+"), func(t *testing.T) {
			f.wantNoSeqScan(t, historySQL, historyArgs(flt)...)
			// The query itself runs, with these parameters.
			if _, err := f.st.History(f.ctx, flt); err != nil {
				t.Fatal(err)
			}
		})
	}
	// The idempotent submit's lookups run on every keyed submit, over the
	// same table: they go by the unique index.
	t.Run("idempotency key expiry", func(t *testing.T) { f.wantNoSeqScan(t, expireKeySQL, users[3], "k") })
	t.Run("idempotency key holder", func(t *testing.T) { f.wantNoSeqScan(t, keyHolderSQL, users[3], "k") })
}

// wantNoSeqScan fails t if the plan of query reads all of commands.
func (f *fixture) wantNoSeqScan(t *testing.T, query string, args ...any) {
	t.Helper()
	plan, raw := f.explain(t, query, args...)
	if seq := plan.seqScans("commands"); len(seq) > 0 {
		t.Errorf("plan reads the whole commands table (%s):\n%s", strings.Join(seq, "; "), raw)
	}
}
