package testpg

import (
	"context"
	"database/sql"
	"fmt"
	"runtime"
	"strings"
	"testing"
)

func TestNewGivesEachTestItsOwnDatabase(t *testing.T) {
	admin, err := sql.Open("postgres", AdminURL(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = admin.Close() })

	var names []string
	t.Run("use", func(t *testing.T) {
		for i := 0; i < 2; i++ {
			db, err := sql.Open("postgres", New(t))
			if err != nil {
				t.Fatal(err)
			}
			// Left open on purpose: the drop must force it closed.
			var name string
			if err := db.QueryRowContext(context.Background(), "SELECT current_database()").Scan(&name); err != nil {
				t.Fatalf("connect to new database: %v", err)
			}
			if !strings.HasPrefix(name, NamePrefix) {
				t.Errorf("database %q lacks prefix %q", name, NamePrefix)
			}
			var tables int
			if err := db.QueryRow("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'").Scan(&tables); err != nil {
				t.Fatal(err)
			}
			if tables != 0 {
				t.Errorf("new database has %d tables, want an empty one", tables)
			}
			if _, err := db.Exec("CREATE TABLE t (id int)"); err != nil {
				t.Fatal(err)
			}
			names = append(names, name)
		}
		if names[0] == names[1] {
			t.Fatalf("two calls returned the same database %q", names[0])
		}
	})

	// The subtest has finished, so its cleanups have dropped both databases.
	for _, name := range names {
		var n int
		if err := admin.QueryRow("SELECT count(*) FROM pg_database WHERE datname = $1", name).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Errorf("database %s still exists after its test ended", name)
		}
	}
}

func TestNewFailsLoudlyWithoutServer(t *testing.T) {
	for _, tc := range []struct {
		name, url, want string
	}{
		{"unset", "", EnvVar + " is not set"},
		{"unreachable", "postgres://postgres@127.0.0.1:1/postgres?sslmode=disable", "cannot reach PostgreSQL"},
		{"not a URL", "host=localhost", "must be a postgres:// URL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(EnvVar, tc.url)
			msg := runFatal(t, func(tb testing.TB) { New(tb) })
			if !strings.Contains(msg, tc.want) || !strings.Contains(msg, "make test") {
				t.Errorf("failure message %q: want it to contain %q and to point at `make test`", msg, tc.want)
			}
		})
	}
}

func TestDatabaseName(t *testing.T) {
	long := strings.Repeat("VeryLongTestName/", 10)
	a, b := databaseName(long), databaseName(long)
	if a == b {
		t.Errorf("names not unique: %s", a)
	}
	if len(a) > 63 {
		t.Errorf("name %q is %d bytes, PostgreSQL keeps 63", a, len(a))
	}
	if got := databaseName("TestX/sub-case"); !strings.HasSuffix(got, "_testx_sub_case") {
		t.Errorf("databaseName = %q, want the test name as a slug", got)
	}
}

// fatalRecorder is a testing.TB whose Fatalf records the message and ends the
// goroutine, as testing.T does, so the failure path can be observed.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (f *fatalRecorder) Helper()      {}
func (f *fatalRecorder) Name() string { return "fake" }
func (f *fatalRecorder) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func runFatal(t *testing.T, fn func(testing.TB)) string {
	t.Helper()
	rec := &fatalRecorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(rec)
	}()
	<-done
	if rec.msg == "" {
		t.Fatal("expected a fatal failure, got none")
	}
	return rec.msg
}
