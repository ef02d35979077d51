-- Output caps keep the head and the tail of a stream and drop the middle.
-- *_omitted counts the bytes dropped from a stream's middle (0: none) and
-- *_omitted_at is where they were, as a position in the stored bytes (the
-- length of the head kept), so the record can show one marker line there
-- while the raw output gives the bytes on either side exactly. Stored chunk
-- offsets (command_chunks.off) are positions in the stored bytes; the agent's
-- offsets and *_len stay positions in the whole stream.
ALTER TABLE commands
    ADD COLUMN stdout_omitted    bigint NOT NULL DEFAULT 0,
    ADD COLUMN stdout_omitted_at bigint NOT NULL DEFAULT 0,
    ADD COLUMN stderr_omitted    bigint NOT NULL DEFAULT 0,
    ADD COLUMN stderr_omitted_at bigint NOT NULL DEFAULT 0;
