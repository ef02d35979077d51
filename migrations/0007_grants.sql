-- Who may exec where. A container carries labels: the annotations its agent
-- reported plus "node" (the reporting node's name) and "container" (its ID),
-- which the coordinator sets itself. A grant gives one user the containers
-- whose labels contain its selector (labels @> selector): a non-admin may
-- submit only to those, and lists only those. Admins need no grant.
ALTER TABLE containers ADD COLUMN labels jsonb NOT NULL DEFAULT '{}'::jsonb;
-- Label the containers already known, so grants by node or ID cover them
-- before their agents report again.
UPDATE containers c SET labels = jsonb_build_object('node', n.name, 'container', c.id::text)
    FROM nodes n WHERE n.id = c.node_id;
-- A user's container listing probes this index once per grant of theirs.
CREATE INDEX containers_labels_idx ON containers USING gin (labels jsonb_path_ops);

CREATE TABLE grants (
    id         uuid PRIMARY KEY,
    user_id    uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    -- The selector as a flat object of key to value, e.g. {"node":"host-1"}.
    selector   jsonb NOT NULL CHECK (jsonb_typeof(selector) = 'object' AND selector <> '{}'::jsonb),
    created_at timestamptz NOT NULL DEFAULT now()
);
-- Every submit reads the caller's grants; adding the same grant twice
-- returns the first.
CREATE UNIQUE INDEX grants_user_selector_idx ON grants (user_id, selector);
