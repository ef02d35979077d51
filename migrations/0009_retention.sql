-- Retention (Store.Prune) deletes terminal commands finished longer ago than
-- --retention, oldest first, in small batches, on every replica every
-- minute. This index holds only terminal rows in finished_at order, so each
-- batch reads just the rows it deletes, however large the history is.
CREATE INDEX commands_finished_idx ON commands (finished_at) WHERE status IN ('succeeded','failed','cancelled');
