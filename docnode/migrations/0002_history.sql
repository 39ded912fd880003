-- Version history (issue 16): checkpoints and authors' names. Applied once, like 0001.

-- Every snapshot ever written, kept as a checkpoint of the history: the text at any revision
-- is the nearest checkpoint at or before it plus the ops after it. Compaction deletes op-log
-- rows only below a checkpoint, so these are what stays of history older than
-- HISTORY_RETENTION_DAYS.
CREATE TABLE checkpoints (
    document TEXT NOT NULL,
    revision BIGINT NOT NULL,
    -- UTF-8 bytes, as snapshots.text.
    text     BYTEA NOT NULL,
    PRIMARY KEY (document, revision)
);
INSERT INTO checkpoints (document, revision, text)
    SELECT document, revision, text FROM snapshots;

-- The name and colour each author (a connection's user id) last gave, for the history.
CREATE TABLE authors (
    document TEXT NOT NULL,
    author   BIGINT NOT NULL,
    name     TEXT NOT NULL,
    hue      INTEGER NOT NULL,
    PRIMARY KEY (document, author)
);
