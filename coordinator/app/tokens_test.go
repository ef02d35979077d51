package app_test

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/execq/execq/coordinator/app"
	"github.com/execq/execq/coordinator/store"
	"github.com/execq/execq/shared"
)

// revocationBound is how soon every replica must refuse a revoked token in
// these tests: generous for a loaded machine, yet far below the cache TTL
// they run with (longCacheTTL), so only the notification can explain it.
const (
	revocationBound = 5 * time.Second
	longCacheTTL    = 10 * time.Minute
)

// waitAuthListeners waits until n replicas LISTEN on the token channel.
func waitAuthListeners(t testing.TB, db *sql.DB, n int) {
	t.Helper()
	eventually(t, within, func() bool {
		var got int
		err := db.QueryRow(`SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND query ILIKE 'LISTEN%' AND query LIKE '%` + store.AuthChannel + `%'`).Scan(&got)
		return err == nil && got >= n
	}, "%d replicas never listened on %s", n, store.AuthChannel)
}

// twoReplicas starts a bundle and a second replica on its database, both
// caching verified tokens for longCacheTTL.
func twoReplicas(t *testing.T) (*bundle, []*replica) {
	longCache := withConfig(func(c *app.Config) { c.AuthCacheTTL = longCacheTTL })
	b := setup(t, longCache)
	other := startReplica(t, b.DBURL, longCache)
	waitAuthListeners(t, b.DB, 2)
	return b, []*replica{b.replica, other}
}

// userStatus is what GET /api/v1/commands answers a token on one replica.
func (b *bundle) userStatus(r *replica, token string) int {
	b.t.Helper()
	return b.doAt(r.URL, http.MethodGet, "/api/v1/commands", token, nil).Status
}

// nodeStatus is what a zero-wait lease answers a node token on one replica.
func (b *bundle) nodeStatus(r *replica, token string) int {
	b.t.Helper()
	return b.doAt(r.URL, http.MethodPost, shared.AgentPathLease, token, shared.LeaseRequest{Max: 1}).Status
}

// wantEverywhere waits, for at most revocationBound, until status(token)
// answers want on every replica.
func wantEverywhere(t *testing.T, replicas []*replica, status func(*replica, string) int, token string, want int, what string) {
	t.Helper()
	for i, r := range replicas {
		eventually(t, revocationBound, func() bool { return status(r, token) == want },
			"replica %d: %s: still not %d", i, what, want)
	}
}

// TestRevocationReachesEveryReplica: with a token cached on both replicas
// (one request on each first) and a cache TTL of minutes, disabling,
// rotating and revoking through the store are refused on both within a
// bound far below the TTL; enabling and the new tokens work at once.
func TestRevocationReachesEveryReplica(t *testing.T) {
	t.Parallel()
	b, replicas := twoReplicas(t)
	st := b.App.Store
	ctx := context.Background()

	t.Run("user disable and enable", func(t *testing.T) {
		b := b.with(t)
		wantEverywhere(t, replicas, b.userStatus, b.Alice.Token, http.StatusOK, "alice before disable")
		if _, err := st.SetUserDisabled(ctx, store.Ref{Name: "alice"}, true); err != nil {
			t.Fatal(err)
		}
		wantEverywhere(t, replicas, b.userStatus, b.Alice.Token, http.StatusUnauthorized, "disabled alice")
		wantEverywhere(t, replicas, b.userStatus, b.Bob.Token, http.StatusOK, "bob while alice is disabled")
		if _, err := st.SetUserDisabled(ctx, store.Ref{ID: b.Alice.ID}, false); err != nil {
			t.Fatal(err)
		}
		wantEverywhere(t, replicas, b.userStatus, b.Alice.Token, http.StatusOK, "enabled alice")
	})

	t.Run("user rotate-token", func(t *testing.T) {
		b := b.with(t)
		wantEverywhere(t, replicas, b.userStatus, b.Bob.Token, http.StatusOK, "bob before rotation")
		_, tok, err := st.RotateUserToken(ctx, store.Ref{Name: "bob"})
		if err != nil {
			t.Fatal(err)
		}
		wantEverywhere(t, replicas, b.userStatus, b.Bob.Token, http.StatusUnauthorized, "bob's old token")
		wantEverywhere(t, replicas, b.userStatus, tok, http.StatusOK, "bob's new token")
	})

	t.Run("user deleted by hand", func(t *testing.T) {
		b := b.with(t)
		u, tok, err := st.CreateUser(ctx, "carol", false)
		if err != nil {
			t.Fatal(err)
		}
		wantEverywhere(t, replicas, b.userStatus, tok, http.StatusOK, "carol")
		if _, err := b.DB.Exec(`DELETE FROM users WHERE id = $1`, u.ID); err != nil {
			t.Fatal(err)
		}
		wantEverywhere(t, replicas, b.userStatus, tok, http.StatusUnauthorized, "deleted carol")
	})

	t.Run("admin demoted by hand", func(t *testing.T) {
		b := b.with(t)
		// An admin sees every user's commands; demoted, the cache must not
		// keep the admin flag.
		rec := b.submit(b.Alice, b.NodeA.Container, "true")
		for _, r := range replicas {
			b.mustJSON(r.URL, http.MethodGet, commandPath(rec.ID), b.Root.Token, nil, http.StatusOK, nil)
		}
		if _, err := b.DB.Exec(`UPDATE users SET is_admin = false WHERE id = $1`, b.Root.ID); err != nil {
			t.Fatal(err)
		}
		for i, r := range replicas {
			eventually(t, revocationBound, func() bool {
				return b.doAt(r.URL, http.MethodGet, commandPath(rec.ID), b.Root.Token, nil).Status == http.StatusNotFound
			}, "replica %d: the demoted admin still reads another user's command", i)
		}
	})

	t.Run("node revoke and rotate-token", func(t *testing.T) {
		b := b.with(t)
		// A queued command of node B, and one it has leased but not started.
		queued := b.submit(b.Alice, b.NodeB.Container, "echo", "never")
		leased := b.submit(b.Alice, b.NodeB.Container, "echo", "leased")
		lc := b.leaseCommand(b.NodeB, queued.ID)
		wantEverywhere(t, replicas, b.nodeStatus, b.NodeB.Token, http.StatusOK, "node B before revoke")
		n, failed, err := st.RevokeNode(ctx, store.Ref{Name: "node-b"})
		if err != nil {
			t.Fatal(err)
		}
		if n.Status != store.StatusRevoked || failed != 2 {
			t.Fatalf("revoke: %+v, %d commands failed; want revoked and 2", n, failed)
		}
		wantEverywhere(t, replicas, b.nodeStatus, b.NodeB.Token, http.StatusUnauthorized, "revoked node B")
		// Its start is refused by authentication, whatever replica.
		for _, r := range replicas {
			resp := b.doAt(r.URL, http.MethodPost, agentCommandPath(lc.ID, "start"), b.NodeB.Token, shared.StartRequest{Attempt: lc.Attempt})
			b.wantError(resp, http.StatusUnauthorized, "unauthenticated")
		}
		for _, id := range []string{queued.ID, leased.ID} {
			rec := b.get(b.Alice, id)
			if rec.Status != shared.StatusFailed || rec.EndReason == nil || *rec.EndReason != shared.EndNotPickedUp ||
				!strings.Contains(rec.Stderr, "revoked") {
				t.Fatalf("unstarted command of a revoked node: %+v", rec)
			}
		}
		// Its containers leave the inventory: nothing new is queued for it.
		var list shared.ContainerList
		b.mustJSON(b.URL, http.MethodGet, "/api/v1/containers", b.Root.Token, nil, http.StatusOK, &list)
		for _, c := range list.Containers {
			if c.NodeID == b.NodeB.ID {
				t.Fatalf("a revoked node's container is still listed: %+v", c)
			}
		}
		b.wantError(b.do(http.MethodPost, submitPath(b.NodeB.Container), b.Alice.Token, shared.SubmitRequest{Program: "true"}),
			http.StatusNotFound, "unknown_container")
		// Node A is untouched.
		wantEverywhere(t, replicas, b.nodeStatus, b.NodeA.Token, http.StatusOK, "node A")

		_, tok, err := st.RotateNodeToken(ctx, store.Ref{ID: b.NodeB.ID})
		if err != nil {
			t.Fatal(err)
		}
		wantEverywhere(t, replicas, b.nodeStatus, tok, http.StatusOK, "node B's new token")
		wantEverywhere(t, replicas, b.nodeStatus, b.NodeB.Token, http.StatusUnauthorized, "node B's old token")
	})
}

// TestRevokedNodeRunningCommandIsLost: a command running when its node is
// revoked is left running until its lease lapses (the agent cannot renew
// it, so it stops the program), then the reaper fails it as agent lost.
func TestRevokedNodeRunningCommandIsLost(t *testing.T) {
	t.Parallel()
	b := setup(t)
	rec := b.submit(b.Alice, b.NodeA.Container, "sleep", "60")
	lc := b.leaseCommand(b.NodeA, rec.ID)
	b.start(b.NodeA, lc)
	if _, failed, err := b.App.Store.RevokeNode(context.Background(), store.Ref{ID: b.NodeA.ID}); err != nil || failed != 0 {
		t.Fatalf("revoke: %d failed, %v; want the running command left to its lease", failed, err)
	}
	if got := b.get(b.Alice, rec.ID); got.Status != shared.StatusRunning {
		t.Fatalf("right after revoke: %s, want still running (its program may be)", got.Status)
	}
	// The token cache learns of the revocation by notification, so the
	// refusal is waited for, not expected on the very next request.
	eventually(t, within, func() bool {
		r := b.agent(b.NodeA, rec.ID, "heartbeat", shared.HeartbeatRequest{Attempt: lc.Attempt})
		return r.Status == http.StatusUnauthorized
	}, "the revoked node's heartbeat was never refused")
	got := b.waitStatus(b.Alice, rec.ID, shared.StatusFailed)
	if got.EndReason == nil || *got.EndReason != shared.EndAgentLost {
		t.Fatalf("end reason %v, want agent_lost", got.EndReason)
	}
}

// TestFailedAuthRateLimited: a burst of bad tokens from one address gets
// 429 with Retry-After and the JSON envelope once its budget is spent,
// without a database lookup; a valid token from the same address, already
// verified, keeps working, and other addresses are not affected.
func TestFailedAuthRateLimited(t *testing.T) {
	t.Parallel()
	const burst = 5
	b := setup(t, withConfig(func(c *app.Config) {
		c.AuthFailBurst = burst
		c.AuthFailInterval = time.Hour // no refill within the test
		c.AuthCacheTTL = longCacheTTL
	}))
	// The listener flushes the cache once LISTEN takes effect: verify the
	// token after that.
	waitAuthListeners(t, b.DB, 1)
	b.mustJSON(b.URL, http.MethodGet, "/api/v1/commands", b.Alice.Token, nil, http.StatusOK, nil)
	b.mustJSON(b.URL, http.MethodPost, shared.AgentPathLease, b.NodeA.Token, shared.LeaseRequest{Max: 1}, http.StatusOK, nil)

	for i := range burst {
		r := b.do(http.MethodGet, "/api/v1/commands", fmt.Sprintf("execq_u_bad%d", i), nil)
		b.wantError(r, http.StatusUnauthorized, "unauthenticated")
	}
	for _, path := range []string{"/api/v1/commands", "/api/v1/containers"} {
		r := b.do(http.MethodGet, path, "execq_u_bad-more", nil)
		b.wantError(r, http.StatusTooManyRequests, "rate_limited")
		secs, err := strconv.Atoi(r.Header.Get("Retry-After"))
		if err != nil || secs < 1 || secs > 3600 {
			t.Fatalf("Retry-After %q, want whole seconds within the interval", r.Header.Get("Retry-After"))
		}
	}
	// Agent routes share the address's budget.
	r := b.do(http.MethodPost, shared.AgentPathLease, "execq_n_bad", shared.LeaseRequest{Max: 1})
	b.wantError(r, http.StatusTooManyRequests, "rate_limited")
	// A verified token from the same address still works.
	b.mustJSON(b.URL, http.MethodGet, "/api/v1/commands", b.Alice.Token, nil, http.StatusOK, nil)
	b.mustJSON(b.URL, http.MethodPost, shared.AgentPathLease, b.NodeA.Token, shared.LeaseRequest{Max: 1}, http.StatusOK, nil)
	// No token at all costs no lookup and is a plain 401.
	b.wantError(b.do(http.MethodGet, "/api/v1/commands", "", nil), http.StatusUnauthorized, "unauthenticated")

	// Another address has its own budget: its token, never verified on
	// this replica, is looked up, and its bad tokens get 401, not 429.
	other := b.with(t)
	other.client = clientFrom(t, "127.0.0.2")
	other.mustJSON(b.URL, http.MethodGet, "/api/v1/commands", b.Bob.Token, nil, http.StatusOK, nil)
	other.wantError(other.do(http.MethodGet, "/api/v1/commands", "execq_u_bad-other", nil), http.StatusUnauthorized, "unauthenticated")
}

// clientFrom is an HTTP client whose connections come from the local
// address ip (any 127/8 address is loopback on Linux), so a test can act
// as another client address.
func clientFrom(t testing.TB, ip string) *http.Client {
	return &http.Client{Transport: specChecked(t, transportFrom(t, ip)), Timeout: time.Minute}
}

// transportFrom is a transport whose connections come from ip.
func transportFrom(t testing.TB, ip string) *http.Transport {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	tr := &http.Transport{DialContext: d.DialContext}
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

// TestAuthCacheFlushedOnListenerReconnect: a change whose notification was
// missed (made with triggers off, as if sent while the listener was
// disconnected) is picked up when the listener reconnects, which flushes
// the cache, not a TTL later.
func TestAuthCacheFlushedOnListenerReconnect(t *testing.T) {
	t.Parallel()
	b, replicas := twoReplicas(t)
	wantEverywhere(t, replicas, b.userStatus, b.Alice.Token, http.StatusOK, "alice before")

	tx, err := b.DB.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.Exec(`SET LOCAL session_replication_role = replica`); err != nil { // no triggers: no notification
		t.Fatal(err)
	}
	if _, err := tx.Exec(`UPDATE users SET disabled_at = now() WHERE id = $1`, b.Alice.ID); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	for i, r := range replicas {
		if got := b.userStatus(r, b.Alice.Token); got != http.StatusOK {
			t.Fatalf("replica %d answered %d before any reconnect: the test cannot tell a flush from a miss", i, got)
		}
	}
	if _, err := b.DB.Exec(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE datname = current_database() AND query ILIKE 'LISTEN%'`); err != nil {
		t.Fatal(err)
	}
	for i, r := range replicas {
		eventually(t, within, func() bool { return b.userStatus(r, b.Alice.Token) == http.StatusUnauthorized },
			"replica %d: the disabled user's cached token survived the listener's reconnect", i)
	}
}
