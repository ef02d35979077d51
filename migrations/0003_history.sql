-- History (GET /api/v1/commands) lists newest first with keyset pagination on
-- (created_at, id). Each filter it offers has an index whose trailing columns
-- give that order, so a page reads about `limit` index entries however large
-- the table grows: everyone's (admins), one user's (every non-admin call),
-- one container's, one status's. Other filters apply on top of whichever of
-- these the planner picks.
CREATE INDEX commands_history_idx ON commands (created_at DESC, id DESC);
CREATE INDEX commands_history_user_idx ON commands (requested_by, created_at DESC, id DESC);
CREATE INDEX commands_history_container_idx ON commands (container_id, created_at DESC, id DESC);
CREATE INDEX commands_history_status_idx ON commands (status, created_at DESC, id DESC);
