-- A group commit is one statement (docnode/src/store/postgres.rs, COMMIT_BATCH): it checks
-- its own fence (the lease's epoch, the base revision, every row written) and, if a document
-- fails it, calls this, which aborts the statement and so the whole transaction. The
-- document's id travels in the error's detail.
CREATE OR REPLACE FUNCTION codraft_refuse_commit(document TEXT) RETURNS BOOLEAN
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'P0001', MESSAGE = 'codraft: commit refused', DETAIL = document;
END
$$;
