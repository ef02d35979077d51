package store

import (
	"context"
	"sort"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// claimReq is one poll's claim: up to max commands of node, leased for ttl.
type claimReq struct {
	node string
	max  int
	ttl  time.Duration
}

// maxClaimRows bounds the commands one grouped claim may lease (the sum of
// its polls' max): a batch of polls woken together costs the database at
// most what ten full single polls do.
const maxClaimRows = 1000

// initClaims sets up the claim group. Polls woken together — a burst of
// notifications for many nodes, the safety check waking every node with
// work — claim in one statement and one commit, batched naturally as the
// reports are (group.go): a lone poll claims at once. Unlike the reports, a
// claim is new work, so its batches wait for admission like any call not
// marked WithPriority: a burst of claims cannot take the connections kept
// for lease renewal.
func (s *Store) initClaims(max, slots int) {
	s.claims = newGroup(max, maxClaimRows, slots, func(c claimReq) int { return c.max },
		func(ctx context.Context, calls []claimReq) ([][]Command, error) {
			return byKey(calls, func(c claimReq) time.Duration { return c.ttl },
				func(ttl time.Duration, sub []claimReq) ([][]Command, error) {
					return s.claimMany(ctx, sub, ttl)
				})
		})
	s.claims.admit = true
}

// claimMany leases, in one statement, each call's share of its node's
// queued commands: calls for one node are summed into one row of the
// statement (see claimSQL) and the node's commands are then dealt out in
// submit order, each call taking up to its max, so no command goes to two
// polls and none claimed is left without one. An error means nothing was
// leased (or, ErrUnavailable, the database cannot say): no call gets
// commands.
func (s *Store) claimMany(ctx context.Context, calls []claimReq, ttl time.Duration) ([][]Command, error) {
	ctx, cancel := s.deadline(ctx)
	defer cancel()
	var nodes []string
	var ns []int64
	idx := map[string]int{}
	for _, c := range calls {
		i, ok := idx[c.node]
		if !ok {
			i = len(nodes)
			idx[c.node] = i
			nodes, ns = append(nodes, c.node), append(ns, 0)
		}
		ns[i] += int64(c.max)
	}
	var rows []Command
	// A commit point: the rows it leased are returned, even when a
	// caller's context ended meanwhile, so the caller can deliver or
	// release them rather than leave them to their TTL.
	err := s.commitOne(ctx, func(ctx context.Context, conn *sqlx.Conn) error {
		return conn.SelectContext(ctx, &rows, claimSQL, pq.Array(nodes), pq.Array(ns), ttl.Milliseconds())
	})
	if err != nil {
		return nil, interpretError(err)
	}
	sort.SliceStable(rows, func(i, j int) bool { return rows[i].CreatedAt.Before(rows[j].CreatedAt) })
	byNode := map[string][]Command{}
	for _, r := range rows {
		byNode[r.NodeID] = append(byNode[r.NodeID], r)
	}
	res := make([][]Command, len(calls))
	for i, c := range calls {
		q := byNode[c.node]
		n := min(c.max, len(q))
		res[i] = append([]Command{}, q[:n]...)
		byNode[c.node] = q[n:]
	}
	return res, nil
}
