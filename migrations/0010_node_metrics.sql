-- Queue metrics (Store.Stats) count live commands per node, and find each
-- node's oldest queued one, at every scrape of every replica, in one grouped
-- statement. This index holds only live rows, in node order, with all the
-- statement reads, so it is an index-only scan whose cost follows the live
-- queue, not the table's history. It replaces commands_live_idx (0002),
-- which served the same statement when it only had totals: it gave no
-- node, so every live row was fetched from the heap; the table keeps one
-- index for its live rows, not two to update on every transition.
-- Dropping commands_live_idx matters for the claim too: on a big table the
-- statistics are nearly always those of an empty queue (autovacuum analyzes
-- again only once a tenth of the table changed), so the planner believed
-- that index as cheap as the one that seeks the claim's own node
-- (commands_queue_idx), and took it: each poll's claim read every queued
-- command of every node (TestClaimSeeksItsNodeWithStaleStatistics).
CREATE INDEX commands_live_node_idx ON commands (node_id, status, created_at) WHERE status IN ('queued','running');
DROP INDEX commands_live_idx;
