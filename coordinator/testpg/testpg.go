package testpg

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lib/pq"
)

// EnvVar names the environment variable holding the admin connection URL.
const EnvVar = "TEST_DATABASE_URL"

// NamePrefix starts the name of every database New creates, so leftovers of a
// killed test run are easy to find (and drop) by name.
const NamePrefix = "execq_test_"

const hint = "run the tests with `make test`, which starts the private PostgreSQL cluster (scripts/devdb.sh) and sets " + EnvVar

// adminPools holds one small pool per admin URL for the life of the test
// binary: opening a connection per test would double the connection churn of
// parallel tests for nothing.
var (
	adminMu    sync.Mutex
	adminPools = map[string]*adminPool{}
)

type adminPool struct {
	db *sql.DB
	// createOptions are appended to CREATE DATABASE.
	createOptions string
}

// AdminURL returns TEST_DATABASE_URL, failing the test if it is unset.
func AdminURL(t testing.TB) string {
	t.Helper()
	raw := strings.TrimSpace(os.Getenv(EnvVar))
	if raw == "" {
		t.Fatalf("testpg: %s is not set; %s", EnvVar, hint)
		return ""
	}
	return raw
}

// New creates a brand-new empty database on the TEST_DATABASE_URL server and
// returns a URL for it. The database is dropped, together with any connection
// still open to it, when the test and its subtests have finished.
func New(t testing.TB) string {
	t.Helper()
	admin := AdminURL(t)
	if admin == "" {
		return ""
	}
	u, err := url.Parse(admin)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		t.Fatalf("testpg: %s must be a postgres:// URL (got %q); %s", EnvVar, redact(admin), hint)
		return ""
	}

	pool, err := openAdminPool(admin)
	if err != nil {
		t.Fatalf("testpg: cannot reach PostgreSQL at %s: %v; %s", redact(admin), err, hint)
		return ""
	}

	name := databaseName(t.Name())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	db := pool.db
	if _, err := db.ExecContext(ctx, "CREATE DATABASE "+pq.QuoteIdentifier(name)+pool.createOptions); err != nil {
		t.Fatalf("testpg: create database %s: %v", name, err)
		return ""
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		// FORCE: a test that forgot to close its pool must not leak the database.
		if _, err := db.ExecContext(ctx, "DROP DATABASE IF EXISTS "+pq.QuoteIdentifier(name)+" WITH (FORCE)"); err != nil {
			t.Errorf("testpg: drop database %s: %v", name, err)
		}
	})

	u.Path = "/" + name
	return u.String()
}

// openAdminPool returns the shared pool for admin, opening and pinging it on
// first use. A failed ping is not cached, so a server that comes up later is
// used.
func openAdminPool(admin string) (*adminPool, error) {
	adminMu.Lock()
	defer adminMu.Unlock()
	if p, ok := adminPools[admin]; ok {
		return p, nil
	}
	db, err := sql.Open("postgres", admin)
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(4)
	db.SetMaxIdleConns(2)
	db.SetConnMaxIdleTime(30 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		_ = db.Close()
		return nil, err
	}
	p := &adminPool{db: db}
	// On a server without fsync (make test's fast mode) copying the template's
	// files is about four times faster than the default WAL_LOG strategy of
	// PostgreSQL 15+; with fsync on, its checkpoints make it slower.
	var fsync string
	var version int
	if err := db.QueryRowContext(ctx, "SELECT current_setting('fsync'), current_setting('server_version_num')::int").Scan(&fsync, &version); err == nil &&
		fsync == "off" && version >= 150000 {
		p.createOptions = " STRATEGY FILE_COPY"
	}
	adminPools[admin] = p
	return p, nil
}

// databaseName is NamePrefix, 16 random hex digits (the part that makes it
// unique) and as much of the test name as fits PostgreSQL's 63-byte limit, to
// tell which test a leftover database belonged to.
func databaseName(testName string) string {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("testpg: crypto/rand: %v", err)) // never happens on Linux
	}
	name := NamePrefix + hex.EncodeToString(b[:])
	var slug strings.Builder
	for _, r := range strings.ToLower(testName) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			slug.WriteRune(r)
		default:
			slug.WriteByte('_')
		}
	}
	if s := strings.Trim(slug.String(), "_"); s != "" {
		name += "_" + s
	}
	if len(name) > 63 {
		name = name[:63]
	}
	return name
}

// redact hides a password in a URL shown in a failure message.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}
