-- Identities. Tokens are never stored: only their SHA-256.
CREATE TABLE users (
    id          uuid PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    token_hash  bytea NOT NULL UNIQUE,
    is_admin    boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE nodes (
    id           uuid PRIMARY KEY,
    name         text NOT NULL UNIQUE,
    token_hash   bytea NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz
);

-- Containers as the agents last reported them.
CREATE TABLE containers (
    id           uuid PRIMARY KEY,
    node_id      uuid NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
    name         text NOT NULL,
    state        text NOT NULL,
    last_seen_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX containers_node_idx ON containers (node_id);

-- The job table, the system of record. status holds the public status; a
-- queued command with leased_by set is leased but not started. attempt counts
-- leases so a stale agent's start, heartbeat or finish can be told apart.
CREATE TABLE commands (
    id               uuid PRIMARY KEY,
    container_id     uuid NOT NULL,
    node_id          uuid NOT NULL REFERENCES nodes(id),
    requested_by     uuid NOT NULL REFERENCES users(id),
    program          text NOT NULL,
    args             text[] NOT NULL,
    status           text NOT NULL CHECK (status IN ('queued','running','succeeded','failed','cancelled')),
    created_at       timestamptz NOT NULL DEFAULT now(),
    attempt          integer NOT NULL DEFAULT 0,
    leased_by        uuid REFERENCES nodes(id),
    lease_expires_at timestamptz,
    started_at       timestamptz,
    finished_at      timestamptz,
    exit_code        integer,
    -- Bytes received per stream (the next expected offset), and whether the
    -- stream passed the output cap so later bytes were dropped.
    stdout_len       bigint NOT NULL DEFAULT 0,
    stderr_len       bigint NOT NULL DEFAULT 0,
    stdout_truncated boolean NOT NULL DEFAULT false,
    stderr_truncated boolean NOT NULL DEFAULT false,
    -- Assembled output, written once when the command becomes terminal.
    stdout           bytea NOT NULL DEFAULT ''::bytea,
    stderr           bytea NOT NULL DEFAULT ''::bytea
);
-- Claim scans queued commands of one node in submit order.
CREATE INDEX commands_queue_idx ON commands (node_id, created_at) WHERE status = 'queued';
-- The reaper scans live leases.
CREATE INDEX commands_lease_idx ON commands (lease_expires_at) WHERE status IN ('queued','running') AND leased_by IS NOT NULL;

-- Output while a command runs, one row per accepted chunk. Appending to a
-- bytea column would rewrite the whole value per chunk; rows keep appends
-- O(chunk). Rows are folded into commands.stdout/stderr and deleted at finish.
CREATE TABLE command_chunks (
    command_id uuid NOT NULL REFERENCES commands(id) ON DELETE CASCADE,
    stream     smallint NOT NULL, -- 1 stdout, 2 stderr
    off        bigint NOT NULL,
    data       bytea NOT NULL,
    PRIMARY KEY (command_id, stream, off)
);
