package store

import (
	"errors"
	"testing"
	"time"

	"github.com/lib/pq"

	"github.com/execq/execq/shared"
)

// authListener listens on AuthChannel of the fixture's database.
func (f *fixture) authListener() *pq.Listener {
	f.t.Helper()
	l := pq.NewListener(f.url, 10*time.Millisecond, time.Second, nil)
	f.t.Cleanup(func() { l.Close() })
	if err := l.Listen(AuthChannel); err != nil {
		f.t.Fatalf("listen: %v", err)
	}
	return l
}

// wantNote waits for one notification with payload want.
func wantNote(t *testing.T, l *pq.Listener, want, after string) {
	t.Helper()
	select {
	case n := <-l.Notify:
		if n == nil || n.Extra != want {
			t.Fatalf("after %s: notification %+v, want %q", after, n, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("after %s: no notification %q", after, want)
	}
}

// wantNoNote checks nothing is notified within a short while: the
// statements before it committed, so their notifications were delivered.
func wantNoNote(t *testing.T, l *pq.Listener, after string) {
	t.Helper()
	select {
	case n := <-l.Notify:
		t.Fatalf("after %s: unexpected notification %+v", after, n)
	case <-time.After(200 * time.Millisecond):
	}
}

// TestAuthTriggers: every change to what a token grants notifies
// AuthChannel with the identity, whoever makes it; a lookup keeping
// last_seen_at does not (it would empty caches for nothing).
func TestAuthTriggers(t *testing.T) {
	t.Parallel()
	f := setup(t)
	l := f.authListener()
	u, tok, err := f.st.CreateUser(f.ctx, "bob", false)
	if err != nil {
		t.Fatal(err)
	}
	wantNoNote(t, l, "create")
	if _, err := f.st.UserByToken(f.ctx, tok); err != nil { // sets last_seen_at
		t.Fatal(err)
	}
	wantNoNote(t, l, "lookup")
	var seen *time.Time
	if err := f.st.db.Get(&seen, `SELECT last_seen_at FROM users WHERE id = $1`, u.ID); err != nil || seen == nil {
		t.Fatalf("last_seen_at after a lookup: %v %v", seen, err)
	}

	userNote := "user:" + u.ID
	for _, step := range []struct {
		name string
		do   func() error
	}{
		{"disable", func() error { _, err := f.st.SetUserDisabled(f.ctx, Ref{Name: "bob"}, true); return err }},
		{"enable", func() error { _, err := f.st.SetUserDisabled(f.ctx, Ref{ID: u.ID}, false); return err }},
		{"rotate", func() error { _, _, err := f.st.RotateUserToken(f.ctx, Ref{Name: "bob"}); return err }},
		{"promote by hand", func() error {
			_, err := f.st.db.Exec(`UPDATE users SET is_admin = true WHERE id = $1`, u.ID)
			return err
		}},
		{"delete by hand", func() error { _, err := f.st.db.Exec(`DELETE FROM users WHERE id = $1`, u.ID); return err }},
	} {
		if err := step.do(); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		wantNote(t, l, userNote, step.name)
	}
	// Enabling an enabled user changes nothing and tells nobody.
	if _, err := f.st.SetUserDisabled(f.ctx, Ref{Name: "alice"}, false); err != nil {
		t.Fatal(err)
	}
	wantNoNote(t, l, "enable of an enabled user")

	nodeNote := "node:" + f.node.ID
	if _, _, err := f.st.RevokeNode(f.ctx, Ref{ID: f.node.ID}); err != nil {
		t.Fatal(err)
	}
	wantNote(t, l, nodeNote, "revoke")
	if _, _, err := f.st.RotateNodeToken(f.ctx, Ref{Name: "node-a"}); err != nil {
		t.Fatal(err)
	}
	wantNote(t, l, nodeNote, "rotate node")
}

// TestRevokeNodeKeepsHistory: a revoked node's finished and running commands
// stay as they were, its queued ones fail with not_picked_up, its
// containers leave the inventory, and its row stays.
func TestRevokeNodeKeepsHistory(t *testing.T) {
	t.Parallel()
	f := setup(t)
	run := f.running()
	queued := f.enqueue("echo", "later")

	n, failed, err := f.st.RevokeNode(f.ctx, Ref{Name: "node-a"})
	if err != nil || failed != 1 || n.Status != StatusRevoked || n.RevokedAt == nil {
		t.Fatalf("revoke: %+v, %d failed, %v; want revoked, 1 failed", n, failed, err)
	}
	if _, err := f.st.NodeByToken(f.ctx, "whatever"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("lookup: %v", err)
	}
	var status string
	if err := f.st.db.Get(&status, `SELECT status FROM commands WHERE id = $1`, run.ID); err != nil || status != string(shared.StatusRunning) {
		t.Fatalf("running command after revoke: %q %v; want running, left to its lease", status, err)
	}
	var reason string
	if err := f.st.db.Get(&reason, `SELECT status || '/' || end_reason FROM commands WHERE id = $1`, queued.ID); err != nil ||
		reason != string(shared.StatusFailed)+"/"+string(shared.EndNotPickedUp) {
		t.Fatalf("queued command after revoke: %q %v", reason, err)
	}
	var containers, nodes int
	if err := f.st.db.Get(&containers, `SELECT count(*) FROM containers`); err != nil || containers != 0 {
		t.Fatalf("containers after revoke: %d %v", containers, err)
	}
	if err := f.st.db.Get(&nodes, `SELECT count(*) FROM nodes`); err != nil || nodes != 1 {
		t.Fatalf("nodes after revoke: %d %v", nodes, err)
	}
	// Again: harmless, nothing more to fail, revoked_at kept.
	n2, failed, err := f.st.RevokeNode(f.ctx, Ref{ID: n.ID})
	if err != nil || failed != 0 || !n2.RevokedAt.Equal(*n.RevokedAt) {
		t.Fatalf("second revoke: %+v, %d, %v", n2, failed, err)
	}
	if _, _, err := f.st.RevokeNode(f.ctx, Ref{Name: "nowhere"}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("revoke of an unknown node: %v, want ErrNotFound", err)
	}
}
