-- A command's output is stored once: its command_chunks rows, written as
-- the output arrives, are its record's output for good. They are no longer
-- folded into commands.stdout/stderr and deleted when the command ends
-- (every byte was written twice, the second time in the transaction that
-- ends the command, and left the first copy's TOAST to vacuum). The execq
-- line a coordinator adds to stderr is stderr's last chunk.
--
-- Rows finished before this hold their output in those columns and no
-- chunk rows; rows finished since hold empty columns. Readers take the
-- column when it is non-empty and the chunks otherwise (store/output.go),
-- which is exact for both, so the folded bytes are left where they are:
-- moving them would rewrite every finished row of the job table under the
-- migration lock, for no change a reader could see. This changes no data;
-- it says so in the catalog for whoever reads the schema.
--
-- Upgrade every replica together: a replica older than this reads a
-- terminal record's output from the columns only, so it would show empty
-- output for a command a newer replica finished.
COMMENT ON COLUMN commands.stdout IS
    'Output of commands finished before migration 0011 only; since then it is in command_chunks (stream 1) and this is empty.';
COMMENT ON COLUMN commands.stderr IS
    'Output of commands finished before migration 0011 only; since then it is in command_chunks (stream 2) and this is empty.';
COMMENT ON TABLE command_chunks IS
    'A command''s output, one row per part stored, at its offset in the stored bytes: the record''s output, live and terminal; deleted with its command.';
