-- codraft's Postgres schema, version 1. Applied once by PgStore's migrations, inside their
-- transaction; never edit an applied migration, add the next numbered file instead.

-- One row per document that ever had a commit.
CREATE TABLE documents (
    id          TEXT PRIMARY KEY,
    -- Number of ops committed so far; a commit moves it from its base revision only.
    revision    BIGINT NOT NULL,
    language    TEXT,
    -- Kolabpad's per-document one-time password, if one was set.
    otp         TEXT,
    -- Touched by every load and commit; EXPIRY_DAYS deletes documents idle for longer.
    -- Deliberately not indexed: every commit updates it, and without an index on it (and
    -- with room left on each page) those updates are HOT, which keeps group commits cheap.
    -- The expiry sweep, once an hour, scans the table instead.
    accessed_at TIMESTAMPTZ NOT NULL DEFAULT now()
) WITH (fillfactor = 80);

-- The op log: the unique (document, revision) key is what makes a second writer fail.
CREATE TABLE oplog (
    document     TEXT NOT NULL,
    revision     BIGINT NOT NULL,
    -- The op as Rustpad JSON text. Not jsonb: jsonb refuses "\u0000", which a document may hold.
    operation    TEXT NOT NULL,
    author       BIGINT NOT NULL,
    client_id    TEXT,
    seq          BIGINT,
    committed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (document, revision)
);

-- The newest snapshot of each document; loads read it plus the log after it.
CREATE TABLE snapshots (
    document TEXT PRIMARY KEY,
    revision BIGINT NOT NULL,
    -- UTF-8 bytes, not TEXT: Postgres TEXT cannot hold U+0000, which a document may hold.
    text     BYTEA NOT NULL
);

-- Highest committed edit sequence number per (document, client id); kept when the log is
-- compacted so a re-sent old edit is still recognised (exactly once).
CREATE TABLE client_seqs (
    document  TEXT NOT NULL,
    client_id TEXT NOT NULL,
    seq       BIGINT NOT NULL,
    PRIMARY KEY (document, client_id)
);

-- Ownership: loading a document takes a new epoch; a commit must still hold the newest.
CREATE TABLE leases (
    document TEXT PRIMARY KEY,
    owner    TEXT NOT NULL,
    epoch    BIGINT NOT NULL,
    taken_at TIMESTAMPTZ NOT NULL DEFAULT now()
) WITH (fillfactor = 80);

-- Epochs come from one sequence rather than "previous epoch + 1", so they never repeat for a
-- document even after its lease row was deleted by expiry: a fenced owner stays fenced.
CREATE SEQUENCE lease_epochs AS BIGINT;
