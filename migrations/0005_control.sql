-- Operator control: cancel, timeouts, and why a command ended.
ALTER TABLE commands
    -- Limits chosen at submit (null: none). The agent enforces
    -- timeout_seconds from its start; the reaper is the backstop.
    ADD COLUMN timeout_seconds       integer,
    ADD COLUMN queue_timeout_seconds integer,
    -- created_at + queue_timeout_seconds, and started_at + timeout_seconds:
    -- stored so the reaper's scans are plain index range reads.
    ADD COLUMN queue_deadline        timestamptz,
    ADD COLUMN run_deadline          timestamptz,
    -- Why the command ended, for machines; null while live. end_signal
    -- names the signal that ended the program, when one did.
    ADD COLUMN end_reason            text CHECK (end_reason IN
        ('exited','exec_error','cancelled','timed_out','not_picked_up','agent_lost','killed')),
    ADD COLUMN end_signal            text,
    -- A cancel request: kept even when the command ended some other way.
    ADD COLUMN cancel_requested_at   timestamptz,
    ADD COLUMN cancel_requested_by   uuid REFERENCES users(id),
    ADD COLUMN cancel_grace_seconds  integer;

-- The reaper's two timeout scans, over live rows only.
CREATE INDEX commands_queue_deadline_idx ON commands (queue_deadline) WHERE status = 'queued';
CREATE INDEX commands_run_deadline_idx ON commands (run_deadline) WHERE status = 'running';
-- Every agent control poll reads the pending cancels of its node: running
-- rows with a cancel request, a handful at most.
CREATE INDEX commands_cancel_idx ON commands (node_id) WHERE status = 'running' AND cancel_requested_at IS NOT NULL;
