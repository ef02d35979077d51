package runtest

import (
	"database/sql"
	"errors"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/lib/pq"

	"github.com/execq/execq/coordinator/testpg"
)

// TestDevdbPsqlOpensProductDatabase: `make db-psql` (scripts/devdb.sh psql)
// opens execq, the database `make run` uses, and a database named by the
// caller wins over that default while keeping the dev cluster's address.
func TestDevdbPsqlOpensProductDatabase(t *testing.T) {
	admin := testpg.AdminURL(t)
	u, err := url.Parse(admin)
	if err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("postgres", admin)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	// `make run` creates execq; a cluster it never ran on gets it here.
	// Another run creating it at the same moment is fine.
	if _, err := db.Exec(`CREATE DATABASE execq`); err != nil {
		var pqErr *pq.Error
		if !errors.As(err, &pqErr) || pqErr.Code != "42P04" { // duplicate_database
			t.Fatalf("create database execq: %v", err)
		}
	}
	other := testpg.New(t)
	otherName := strings.TrimPrefix(mustParse(t, other).Path, "/")

	psql := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("scripts/devdb.sh", append([]string{"psql"}, args...)...)
		cmd.Dir = repoRoot(t)
		cmd.Env = append(os.Environ(), "EXECQ_DEV_PG_PORT="+u.Port())
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("scripts/devdb.sh psql %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(string(out))
	}
	const query = "SELECT current_database()"
	if got := psql("-Atc", query); got != "execq" {
		t.Errorf("devdb.sh psql opened %q, want execq", got)
	}
	if got := psql("-d", otherName, "-Atc", query); got != otherName {
		t.Errorf("devdb.sh psql -d %s opened %q", otherName, got)
	}
	if got := psql("-Atc", query, otherName); got != otherName {
		t.Errorf("devdb.sh psql ... %s opened %q", otherName, got)
	}
}

func mustParse(t *testing.T, raw string) *url.URL {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u
}
