// Package liveness keeps nodes.last_seen_at, the last contact of each
// node's agent, which the metrics turn into execq_node_last_seen_timestamp_seconds
// and execq_node_up.
//
// An idle agent's re-poll touches no database (the poller answers it from
// memory, the token from the cache), and that must stay so: a write per
// request would cost the fleet one row update per agent per poll. So each
// replica notes contacts in memory and writes them in one statement per
// flush interval for all its nodes, and only for rows not written in the
// last half interval (by itself, another replica or an inventory report).
// The cost is one statement per replica per interval, and at most about one
// row update per node per interval, whatever the poll rate.
package liveness
