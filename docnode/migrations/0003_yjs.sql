-- Yjs documents (issue 17): ids `y:<room>`. The documents row (revision, password, access
-- time) and the lease are shared with OT documents; a Yjs document's revision counts the
-- updates committed so far.

-- Every update a client sent, as committed (y-protocols v1 encoding), one row per revision.
-- Rows below the document's snapshot revision are deleted when the snapshot is written.
CREATE TABLE yjs_updates (
    document     TEXT NOT NULL,
    revision     BIGINT NOT NULL,
    update_v1    BYTEA NOT NULL,
    committed_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (document, revision)
);

-- The compacted state (`encode_state_as_update`) holding every update below `revision`.
CREATE TABLE yjs_snapshots (
    document TEXT PRIMARY KEY,
    revision BIGINT NOT NULL,
    state    BYTEA NOT NULL
);
