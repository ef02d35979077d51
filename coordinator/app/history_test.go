package app_test

import (
	"net/http"
	"net/url"
	"slices"
	"testing"

	"github.com/execq/execq/shared"
)

// historyPath is GET /api/v1/commands with a query.
func historyPath(q url.Values) string { return "/api/v1/commands?" + q.Encode() }

// walkHistory follows next_cursor from the first page to the last and
// returns every entry, failing on a repeated id.
func (b *bundle) walkHistory(user identity, q url.Values) []shared.HistoryEntry {
	b.t.Helper()
	var all []shared.HistoryEntry
	seen := map[string]bool{}
	q = maps(q)
	for pages := 0; ; pages++ {
		if pages > 1000 {
			b.t.Fatal("history never ends")
		}
		var page shared.HistoryPage
		b.mustJSON(b.URL, http.MethodGet, historyPath(q), user.Token, nil, http.StatusOK, &page)
		for _, e := range page.Commands {
			if seen[e.ID] {
				b.t.Fatalf("command %s on two pages", e.ID)
			}
			seen[e.ID] = true
		}
		all = append(all, page.Commands...)
		if page.NextCursor == nil {
			return all
		}
		q.Set("cursor", *page.NextCursor)
	}
}

func maps(q url.Values) url.Values {
	c := url.Values{}
	for k, v := range q {
		c[k] = slices.Clone(v)
	}
	return c
}

func ids(es []shared.HistoryEntry) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.ID
	}
	return out
}

// TestHistoryPagination submits 250 commands for two users on two containers
// and pages through them: every walk sees exactly what it may, newest first,
// with no duplicate and no gap; each user sees only their own, an admin
// everyone's.
func TestHistoryPagination(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var alice, bob, onA, submitted []string // in submit order
	for i := range 250 {
		user, mine := b.Alice, &alice
		if i%2 == 1 {
			user, mine = b.Bob, &bob
		}
		container := b.NodeA.Container
		if i%5 == 0 {
			container = b.NodeB.Container
		}
		rec := b.submit(user, container, "echo", "n")
		*mine = append(*mine, rec.ID)
		submitted = append(submitted, rec.ID)
		if container == b.NodeA.Container {
			onA = append(onA, rec.ID)
		}
	}
	// Submits were sequential, so newest first is submit order reversed.
	order := slices.Clone(submitted)
	slices.Reverse(order)
	if got := ids(b.walkHistory(b.Root, url.Values{"limit": {"500"}})); !slices.Equal(got, order) {
		t.Fatalf("admin sees %d commands in one page of 500, want all 250 newest first", len(got))
	}
	subset := func(keep []string) []string {
		var out []string
		for _, id := range order {
			if slices.Contains(keep, id) {
				out = append(out, id)
			}
		}
		return out
	}
	for _, tc := range []struct {
		name string
		user identity
		q    url.Values
		want []string
	}{
		{"alice, default limit", b.Alice, nil, subset(alice)},
		{"bob, limit 7", b.Bob, url.Values{"limit": {"7"}}, subset(bob)},
		{"admin, limit 13", b.Root, url.Values{"limit": {"13"}}, order},
		{"admin, limit 1", b.Root, url.Values{"limit": {"1"}}, order},
		{"admin filters bob", b.Root, url.Values{"requested_by": {b.Bob.ID}, "limit": {"20"}}, subset(bob)},
		{"alice filters herself", b.Alice, url.Values{"requested_by": {b.Alice.ID}, "limit": {"20"}}, subset(alice)},
		{"alice asks for bob's", b.Alice, url.Values{"requested_by": {b.Bob.ID}}, nil},
		{"admin by container", b.Root, url.Values{"container_id": {b.NodeA.Container}, "limit": {"30"}}, subset(onA)},
		{"bob by container", b.Bob, url.Values{"container_id": {b.NodeA.Container}, "limit": {"30"}},
			subset(slices.DeleteFunc(slices.Clone(bob), func(id string) bool { return !slices.Contains(onA, id) }))},
		{"admin by status", b.Root, url.Values{"status": {"queued"}, "limit": {"100"}}, order},
		{"nothing failed", b.Root, url.Values{"status": {"failed"}}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := b.with(t)
			got := ids(b.walkHistory(tc.user, tc.q))
			if !slices.Equal(got, tc.want) {
				t.Errorf("walked %d commands, want %d, newest first", len(got), len(tc.want))
			}
		})
	}
	// since keeps the newest: everything from bob's last submit on.
	last := b.get(b.Bob, bob[len(bob)-1])
	got := ids(b.walkHistory(b.Root, url.Values{"since": {last.CreatedAt.Format("2006-01-02T15:04:05.999999999Z07:00")}}))
	if !slices.Equal(got, order[:slices.Index(order, last.ID)+1]) {
		t.Errorf("since %s: got %v", last.CreatedAt, got)
	}

	// A page that ends exactly at the last command says so.
	var page shared.HistoryPage
	b.mustJSON(b.URL, http.MethodGet, historyPath(url.Values{"limit": {"125"}}), b.Alice.Token, nil, http.StatusOK, &page)
	if len(page.Commands) != 125 || page.NextCursor != nil {
		t.Errorf("a full last page: %d entries, next_cursor %v; want 125 and null", len(page.Commands), page.NextCursor)
	}
}

// TestHistoryEntries checks an entry is the record without its output, with
// the streams' byte counts instead.
func TestHistoryEntries(t *testing.T) {
	t.Parallel()
	b := setup(t)
	lc := b.run("sh", "-c", "echo hello; echo oops >&2")
	b.heartbeat(b.NodeA, lc, stdout(0, "hello\n"), stderr(0, "oops\n"))
	if r := b.finish(b.NodeA, shared.FinishRequest{Attempt: lc.Attempt, StdoutLength: 6, StderrLength: 5, ExitCode: exitCode(1)}, lc.ID); r.Status != http.StatusOK {
		t.Fatalf("finish: %s", r)
	}
	rec := b.get(b.Alice, lc.ID)
	var page shared.HistoryPage
	b.mustJSON(b.URL, http.MethodGet, historyPath(nil), b.Alice.Token, nil, http.StatusOK, &page)
	if len(page.Commands) != 1 || page.NextCursor != nil {
		t.Fatalf("history: %+v", page)
	}
	e := page.Commands[0]
	want := rec
	want.Stdout, want.Stderr = "", ""
	if e.StdoutBytes != 6 || e.StderrBytes != 5 || e.Stdout != "" || e.Stderr != "" {
		t.Errorf("entry %+v: want empty output, 6 and 5 bytes", e)
	}
	if e.ID != want.ID || e.Status != shared.StatusFailed || *e.ExitCode != 1 || !e.CreatedAt.Equal(want.CreatedAt) ||
		!slices.Equal(e.Args, want.Args) || e.Program != want.Program || e.RequestedBy != b.Alice.ID || e.ContainerID != b.NodeA.Container {
		t.Errorf("entry %+v, want the record %+v without output", e.CommandExecutionRecord, want)
	}
}

// TestHistoryRejectsBadFilters: each malformed parameter is a 400 with the
// error envelope, never a 500 and never a page that ignored it.
func TestHistoryRejectsBadFilters(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.submit(b.Alice, b.NodeA.Container, "true")
	for _, q := range []string{
		"container_id=nope",
		"container_id=" + "F47AC10B58CC4372A5670E02B2C3D479",
		"requested_by=123",
		"status=done",
		"status=QUEUED",
		"since=yesterday",
		"since=2026-01-02",
		"since=2026-13-02T00:00:00Z",
		"limit=0",
		"limit=-1",
		"limit=501",
		"limit=ten",
		"cursor=!!!",
		"cursor=bm90IGEgY3Vyc29y", // base64 of "not a cursor"
		"cursor=MjAyNi0wMS0wMVQwMDowMDowMFosbm90LWEtdXVpZA", // a timestamp and no UUID
		"containerid=" + b.NodeA.Container,
		"status=queued&status=running",
		"limit=%zz",
	} {
		t.Run(q, func(t *testing.T) {
			b := b.with(t)
			r := b.do(http.MethodGet, "/api/v1/commands?"+q, b.Alice.Token, nil)
			b.wantError(r, http.StatusBadRequest, "invalid_field")
		})
	}
	if r := b.do(http.MethodGet, "/api/v1/commands", "", nil); r.Status != http.StatusUnauthorized {
		t.Errorf("without a token: %s", r)
	}
	if r := b.do(http.MethodGet, "/api/v1/commands", b.NodeA.Token, nil); r.Status != http.StatusUnauthorized {
		t.Errorf("with a node token: %s", r)
	}
}
