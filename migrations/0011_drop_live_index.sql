-- commands_live_idx (status, created_at) over queued and running rows fits
-- every live query's status condition. On a big table the statistics are
-- nearly always those of an empty queue (autovacuum analyzes again only once
-- a tenth of the table changed), so the planner believed it as cheap as the
-- index that seeks the query's own rows, and took it: each agent poll's
-- claim read every queued command of every node instead of its node's
-- (commands_queue_idx). What it was kept for, the queue figures of
-- Store.Stats, reads commands_history_status_idx and the deadline indexes
-- just as well, and one index fewer is one write fewer per transition.
DROP INDEX commands_live_idx;
