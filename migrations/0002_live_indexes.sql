-- Queue metrics (Store.Stats) count live commands and find the oldest queued
-- one at every scrape of every replica. This index holds only live rows, so
-- that stays cheap however many finished commands the table keeps.
CREATE INDEX commands_live_idx ON commands (status, created_at) WHERE status IN ('queued','running');

-- The reaper finds lost agents through commands_lease_idx, whose predicate
-- requires leased_by: a running command always has its lease holder (Start
-- sets it; only a terminal transition clears it). Checked, so the reaper's
-- query cannot silently miss a row.
ALTER TABLE commands ADD CONSTRAINT commands_running_leased CHECK (status <> 'running' OR leased_by IS NOT NULL);
