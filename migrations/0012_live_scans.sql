-- Every periodic query (the reaper's scans, the safety check, the queue
-- metrics, the claim of every poll, the pending cancels of every control
-- poll) reads live rows only, through one index of live rows ordered by
-- node, whatever the statistics say and however many commands went
-- through the table since its last vacuum
-- (TestPeriodicQueriesReadOnlyLiveIndexes,
-- TestPeriodicQueriesReadLiveRowsAfterChurn).
--
-- Two things made them read more on a big table:
--
-- 1. commands_history_status_idx held every row, live or not, by status.
--    On a big table the statistics are nearly always those of an empty
--    queue (autovacuum analyzes again only once a tenth of the table
--    changed), and then an index leading with status looks as cheap as any
--    partial one for "status = 'running'": the reaper, the safety check,
--    the claim and the pending cancels all took it. Its 'queued' and
--    'running' ranges hold an entry for every version of every command that
--    passed through them, dead until a vacuum removes it (102 buffers per
--    job on a table of 5 million finished rows against 8 on an empty one).
--    It now holds terminal rows only: history filtered by a terminal status
--    still reads about a page of entries per page of results, and history
--    filtered by queued or running reads the live rows (below) and sorts
--    them.
--
-- 2. The reaper's own indexes were ordered by a time: lease expiry
--    (commands_lease_idx), queue and run deadlines. Every transition
--    leaves the row's previous entry behind, dead, with a time that soon
--    passes, so the past end of such an index, the very range "expired
--    before now" reads, fills with dead entries; and since new entries
--    always go in at the other end, nothing but a vacuum removes them (a
--    B-tree drops entries marked dead only from a page it inserts into).
--    On a big table vacuums are rare, and may skip the indexes altogether
--    (they do when under 2 % of the table's pages have dead rows). Measured
--    with 300 live rows, before and after 20,000 commands went through
--    their life without a vacuum, statistics fresh: the run timeout scan
--    read 60 → 1,421 buffers (commands_run_deadline_idx), the safety check
--    171 → 1,751 (commands_queue_deadline_idx), the expired-lease requeue
--    1,564 → 3,931 (commands_lease_idx).
--
-- What replaces them is the index of live rows ordered by node, with the
-- times the reaper compares as trailing key columns: a scan with no node
-- reads it whole — one entry per live row, a few hundred to a page — and
-- compares the times in the index entries, fetching from the table only
-- the rows that are due. Its entries are grouped by node, so every node's
-- next submit or transition inserts into the page that holds that node's
-- dead entries, and the B-tree drops those already marked dead (every scan
-- marks what it finds dead) instead of splitting the page: it stays the
-- size of the live queue without a vacuum (28 pages for 2,000 live rows
-- after 50,000 commands, against 149 for commands_lease_idx alone). The
-- claim seeks its node in it (node_id, status = 'queued', in created_at
-- order), as it did in commands_queue_idx, which it replaces too. The
-- queue metrics read it index only, as before.
--
-- Fewer indexes also means fewer entries per transition: a submit, claim,
-- start, heartbeat or finish that changes an indexed column enters the new
-- version in every index whose predicate it satisfies; the table had 13
-- indexes and now has 9.
DROP INDEX commands_history_status_idx;
CREATE INDEX commands_history_status_idx ON commands (status, created_at DESC, id DESC)
    WHERE status IN ('succeeded','failed','cancelled');

DROP INDEX commands_lease_idx;
DROP INDEX commands_queue_deadline_idx;
DROP INDEX commands_run_deadline_idx;
DROP INDEX commands_queue_idx;
DROP INDEX commands_live_node_idx;
CREATE INDEX commands_live_node_idx ON commands (node_id, status, created_at, lease_expires_at, queue_deadline, run_deadline)
    WHERE status IN ('queued','running');
