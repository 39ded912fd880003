-- Version history of Yjs documents (issue 17): as for OT documents, every compacted state
-- written is kept as a checkpoint, and a Yjs document's updates are no longer deleted when a
-- snapshot is written but by compaction, below the newest checkpoint whose preceding updates
-- are all older than HISTORY_RETENTION_DAYS. The state at any revision is the nearest
-- checkpoint at or before it plus the updates after it.
CREATE TABLE yjs_checkpoints (
    document TEXT NOT NULL,
    revision BIGINT NOT NULL,
    state    BYTEA NOT NULL,
    PRIMARY KEY (document, revision)
);
INSERT INTO yjs_checkpoints (document, revision, state)
    SELECT document, revision, state FROM yjs_snapshots;
