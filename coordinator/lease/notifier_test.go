package lease

import (
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	_ "github.com/lib/pq"

	"github.com/execq/execq/coordinator/testpg"
)

// stuckDatabase is a TCP server standing in for a PostgreSQL that cannot
// serve: each accepted connection is handed to serve. It counts the
// connections the client has not yet closed.
type stuckDatabase struct {
	ln       net.Listener
	mu       sync.Mutex
	open     int
	accepted chan struct{} // closed at the first connection
}

func newStuckDatabase(t *testing.T, serve func(net.Conn)) *stuckDatabase {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	db := &stuckDatabase{ln: ln, accepted: make(chan struct{})}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for first := true; ; first = false {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			db.mu.Lock()
			db.open++
			db.mu.Unlock()
			if first {
				close(db.accepted)
			}
			go func() {
				serve(c)
				// Wait for the client to hang up, then count it.
				_, _ = io.Copy(io.Discard, c)
				c.Close()
				db.mu.Lock()
				db.open--
				db.mu.Unlock()
			}()
		}
	}()
	return db
}

func (db *stuckDatabase) url() string {
	return "postgres://execq@" + db.ln.Addr().String() + "/execq?sslmode=disable"
}

func (db *stuckDatabase) openConns() int {
	db.mu.Lock()
	defer db.mu.Unlock()
	return db.open
}

// tooManyClients answers the startup message the way PostgreSQL does at
// max_connections: a FATAL ErrorResponse with SQLSTATE 53300.
func tooManyClients(c net.Conn) {
	var fields []byte
	for _, f := range []struct {
		code byte
		val  string
	}{{'S', "FATAL"}, {'V', "FATAL"}, {'C', "53300"}, {'M', "sorry, too many clients already"}} {
		fields = append(fields, f.code)
		fields = append(fields, f.val...)
		fields = append(fields, 0)
	}
	fields = append(fields, 0)
	msg := []byte{'E', 0, 0, 0, 0}
	binary.BigEndian.PutUint32(msg[1:], uint32(4+len(fields)))
	_, _ = c.Write(append(msg, fields...))
	c.Close()
}

// TestRunStopsWhateverTheDatabaseDoes: the notifier's Run ends soon after its
// context does, even when its LISTEN connection can never be established —
// the database accepts TCP and then says nothing, or refuses every client —
// and it leaves no connection open behind it. Otherwise the coordinator's
// shutdown hangs on the database.
func TestRunStopsWhateverTheDatabaseDoes(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		serve func(net.Conn)
	}{
		{"accepts and never answers", func(net.Conn) {}},
		{"at max connections", tooManyClients},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			db := newStuckDatabase(t, tc.serve)
			n := NewNotifier(db.url(), []string{"enqueued", "finished"}, slog.New(slog.DiscardHandler))
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- n.Run(ctx) }()

			// Let the listener reach the database at least once.
			select {
			case <-db.accepted:
			case <-time.After(10 * time.Second):
				t.Fatal("the notifier never connected to the database")
			}
			cancel()
			select {
			case err := <-done:
				if err != nil && !errors.Is(err, context.Canceled) {
					t.Fatalf("Run: %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Run did not return within 5s of its context ending")
			}
			deadline := time.Now().Add(5 * time.Second)
			for db.openConns() > 0 {
				if time.Now().After(deadline) {
					t.Fatalf("%d connections to the database still open after Run returned", db.openConns())
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
}

// TestRunWakesWaitersOnceListening: a notification sent before LISTEN took
// effect is lost, so a waiter that subscribed before the listener was up
// (a GET ?wait= served right after start-up) is woken to re-read once it is,
// instead of waiting for the slow safety poll.
func TestRunWakesWaitersOnceListening(t *testing.T) {
	t.Parallel()
	n := NewNotifier(testpg.New(t), []string{"enqueued"}, slog.New(slog.DiscardHandler))
	woken, cancelWait := n.Subscribe(Key("enqueued", "some-node"))
	defer cancelWait()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	defer func() { cancel(); <-done }()
	select {
	case <-woken:
	case <-time.After(10 * time.Second):
		t.Fatal("a waiter parked before the listener was up was never woken")
	}
}

// TestOnNotify: a callback gets the payload of each notification on its
// channel, and its resync runs once LISTEN has taken effect (anything
// before was missed), so state kept by notification can start over.
func TestOnNotify(t *testing.T) {
	t.Parallel()
	url := testpg.New(t)
	n := NewNotifier(url, []string{"auth", "other"}, slog.New(slog.DiscardHandler))
	payloads := make(chan string, 10)
	resynced := make(chan struct{}, 10)
	n.OnNotify("auth", func(p string) { payloads <- p }, func() { resynced <- struct{}{} })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	defer func() { cancel(); <-done }()
	select {
	case <-resynced:
	case <-time.After(10 * time.Second):
		t.Fatal("resync never ran once listening")
	}
	db, err := sql.Open("postgres", url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`SELECT pg_notify('other', 'x'), pg_notify('auth', 'user:42')`); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-payloads:
		if p != "user:42" {
			t.Fatalf("payload %q, want user:42 (and nothing of another channel)", p)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the callback never got the notification")
	}
}
