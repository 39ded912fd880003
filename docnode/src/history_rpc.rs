//! The version-history calls of the `DocNode` service: `GetHistory`, `GetTextAt`, `GetDiff`
//! and `Restore` (docs/api.md describes the HTTP endpoints the gateway makes of them).
//!
//! The reads need no actor: they read committed rows through [`crate::timeline`], so any
//! docnode can answer them and none loads the document. A restore is an edit, so it goes
//! through the document's actor on its owner like every other edit.

use std::{collections::HashSet, sync::Arc, time::Duration};

use codraft_common::ids::{is_yjs, valid_any_document_id, valid_client_id, valid_document_id};
use codraft_proto as pb;
use tokio::sync::oneshot;
use tonic::Status;

use crate::{
    document::{Command, DocumentHandle, JoinRefused, Restored, RESTORE_AUTHOR},
    store::{HistoryExtent, Store},
    timeline::{self, PastError},
    wire, yjs,
};

/// Longest idempotency key a restore takes (the edit's client id adds `restore-`).
pub const MAX_IDEMPOTENCY_KEY: usize = 40;

fn extent_to_proto(extent: &HistoryExtent) -> pb::HistoryExtent {
    pb::HistoryExtent {
        revision: extent.revision,
        exact_from: extent.exact_from,
        checkpoints: extent.checkpoints.clone(),
    }
}

/// A history error for the caller, or a failed store as a gRPC status.
fn history_error(error: PastError) -> Result<pb::HistoryError, Status> {
    use pb::history_error::Kind;
    let kind = match &error {
        PastError::UnknownDocument(_) => Kind::UnknownDocument,
        PastError::OutOfRange { .. } => Kind::OutOfRange,
        PastError::Compacted { .. } => Kind::Compacted,
        PastError::BadRequest(_) => Kind::BadRequest,
        PastError::Store(e) => return Err(Status::unavailable(e.to_string())),
    };
    Ok(pb::HistoryError {
        kind: kind.into(),
        message: error.to_string(),
        extent: error.extent().map(extent_to_proto),
    })
}

/// Checks the id of a history read, which OT and Yjs documents both have.
fn check_document(id: &str) -> Result<(), Status> {
    if valid_any_document_id(id) {
        Ok(())
    } else {
        Err(Status::invalid_argument("invalid document id"))
    }
}

/// Checks the id of a call only OT documents have (a diff's authorship spans and a restore
/// are made of OT operations).
fn check_ot_document(id: &str, call: &str) -> Result<(), Status> {
    if is_yjs(id) {
        return Err(Status::invalid_argument(format!(
            "{call} is for OT documents only; a Yjs document has its history and its text at \
             any revision"
        )));
    }
    if valid_document_id(id) {
        Ok(())
    } else {
        Err(Status::invalid_argument("invalid document id"))
    }
}

/// The names and colours of `authors`, as the store has them (the restore author is named
/// here, since no client ever introduced it).
async fn authors_of(
    store: &dyn Store,
    document: &str,
    authors: impl IntoIterator<Item = u64>,
) -> Result<Vec<pb::HistoryAuthor>, PastError> {
    let wanted: HashSet<u64> = authors.into_iter().collect();
    let mut out: Vec<pb::HistoryAuthor> = store
        .authors(document)
        .await?
        .into_iter()
        .filter(|a| wanted.contains(&a.author))
        .map(|a| pb::HistoryAuthor {
            user_id: a.author,
            name: a.name,
            hue: a.hue,
        })
        .collect();
    // (In a Yjs document, author 0 is an update that only deleted: no restore, no name.)
    if wanted.contains(&RESTORE_AUTHOR) && !is_yjs(document) {
        out.push(pb::HistoryAuthor {
            user_id: RESTORE_AUTHOR,
            name: "Restore".into(),
            hue: 0,
        });
    }
    Ok(out)
}

/// `GetHistory`.
pub async fn get_history(
    store: &dyn Store,
    request: pb::GetHistoryRequest,
) -> Result<pb::GetHistoryResponse, Status> {
    check_document(&request.document_id)?;
    let id = &request.document_id;
    let answer = async {
        let extent = timeline::extent(store, id).await?;
        let limit = if request.limit == 0 {
            50
        } else {
            request.limit as usize
        };
        let (sessions, next_before) =
            timeline::sessions(store, id, &extent, request.before, limit).await?;
        let authors = authors_of(store, id, sessions.iter().map(|s| s.author)).await?;
        Ok::<_, PastError>(pb::GetHistoryResponse {
            error: None,
            extent: Some(extent_to_proto(&extent)),
            sessions: sessions
                .into_iter()
                .map(|s| pb::HistorySession {
                    first_revision: s.first_revision,
                    last_revision: s.last_revision,
                    user_id: s.author,
                    started_ms: s.started_ms,
                    ended_ms: s.ended_ms,
                    inserted: s.inserted,
                    deleted: s.deleted,
                    edits: s.edits,
                })
                .collect(),
            authors,
            next_before,
        })
    };
    match answer.await {
        Ok(response) => Ok(response),
        Err(error) => Ok(pb::GetHistoryResponse {
            error: Some(history_error(error)?),
            ..Default::default()
        }),
    }
}

/// `GetTextAt`.
pub async fn get_text_at(
    store: &dyn Store,
    request: pb::GetTextAtRequest,
) -> Result<pb::GetTextAtResponse, Status> {
    check_document(&request.document_id)?;
    let id = &request.document_id;
    let answer = async {
        let extent = timeline::extent(store, id).await?;
        let revision = match (request.revision, request.at_ms) {
            (Some(revision), None) => revision,
            (None, Some(at_ms)) => timeline::revision_at(store, id, &extent, at_ms).await?,
            _ => {
                return Err(PastError::BadRequest(
                    "give exactly one of revision and at".into(),
                ))
            }
        };
        let text = if is_yjs(id) {
            let root = match request.yjs_root.as_str() {
                "" => yjs::history::DEFAULT_ROOT,
                root => root,
            };
            yjs::history::text_at(store, id, &extent, revision, root).await?
        } else {
            timeline::text_at(store, id, &extent, revision).await?
        };
        Ok(pb::GetTextAtResponse {
            error: None,
            revision,
            text,
            extent: Some(extent_to_proto(&extent)),
        })
    };
    match answer.await {
        Ok(response) => Ok(response),
        Err(error) => Ok(pb::GetTextAtResponse {
            error: Some(history_error(error)?),
            ..Default::default()
        }),
    }
}

/// `GetDiff`.
pub async fn get_diff(
    store: &dyn Store,
    request: pb::GetDiffRequest,
) -> Result<pb::GetDiffResponse, Status> {
    check_ot_document(&request.document_id, "a diff")?;
    let id = &request.document_id;
    let answer = async {
        let extent = timeline::extent(store, id).await?;
        let to = request.to.unwrap_or(extent.revision);
        let (operation, spans) = timeline::diff(store, id, &extent, request.from, to).await?;
        let authors = authors_of(store, id, spans.iter().filter_map(|s| s.1)).await?;
        Ok(pb::GetDiffResponse {
            error: None,
            operation: Some(wire::operation_to_proto(&operation)),
            spans: spans
                .into_iter()
                .map(|(length, user_id)| pb::AuthorSpan { length, user_id })
                .collect(),
            authors,
            extent: Some(extent_to_proto(&extent)),
        })
    };
    match answer.await {
        Ok(response) => Ok(response),
        Err(error) => Ok(pb::GetDiffResponse {
            error: Some(history_error(error)?),
            ..Default::default()
        }),
    }
}

/// `Restore`, on the document's owner: `handle` finds (or starts) the document's actor.
pub async fn restore(
    store: &Arc<dyn Store>,
    request: pb::RestoreRequest,
    handle: impl Fn() -> Result<DocumentHandle, Status>,
) -> Result<pb::RestoreResponse, Status> {
    check_ot_document(&request.document_id, "a restore")?;
    let key = &request.idempotency_key;
    if key.len() > MAX_IDEMPOTENCY_KEY || !valid_client_id(key) {
        return Err(Status::invalid_argument(
            "invalid idempotency key: use 1-40 of A-Z a-z 0-9 - _",
        ));
    }
    let id = &request.document_id;
    let client_id = format!("restore-{key}");
    let old = async {
        let extent = timeline::extent(&**store, id).await?;
        timeline::text_at(&**store, id, &extent, request.revision).await
    };
    let text = match old.await {
        Ok(text) => text,
        Err(error) => {
            return Ok(pb::RestoreResponse {
                error: Some(history_error(error)?),
                ..Default::default()
            })
        }
    };
    for _ in 0..10 {
        let handle = handle()?;
        // The actor answers a text request once it has loaded (and so holds the lease):
        // the exactly-once mark read after that cannot miss a previous owner's commit.
        let (reply, answer) = oneshot::channel();
        if handle.send(Command::Text { reply }).await.is_err() || answer.await.is_err() {
            let _ = tokio::time::timeout(Duration::from_secs(5), handle.stopped()).await;
            continue;
        }
        let stored_seq = store
            .last_seq(id, &client_id)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let (reply, answer) = oneshot::channel();
        let command = Command::Restore {
            text: text.clone(),
            client_id: client_id.clone(),
            stored_seq,
            reply,
        };
        if handle.send(command).await.is_ok() {
            match answer.await {
                Ok(Ok(Restored::Applied { revision })) => {
                    return Ok(pb::RestoreResponse {
                        error: None,
                        applied: true,
                        revision: Some(revision),
                    })
                }
                Ok(Ok(Restored::AlreadyApplied)) => {
                    return Ok(pb::RestoreResponse {
                        error: None,
                        applied: false,
                        revision: None,
                    })
                }
                Ok(Ok(Restored::Refused(message))) => {
                    return Err(Status::resource_exhausted(message))
                }
                Ok(Err(JoinRefused::Unavailable(message))) => {
                    return Err(Status::unavailable(message))
                }
                // The actor stopped before the commit was known: whether it committed is
                // unknown, so the same key is tried again on a fresh actor.
                Ok(Err(JoinRefused::Retry)) | Err(_) => {}
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), handle.stopped()).await;
    }
    Err(Status::unavailable(
        "document keeps unloading; retry the restore with the same idempotency key",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{sqlite::SqliteStore, DocumentCommit};
    use yrs::{ReadTxn, Text, Transact};

    /// A Yjs update that only deletes has no author of its own (0 when it opens a page): it
    /// must not be named "Restore", which is OT's author 0.
    #[tokio::test]
    async fn a_yjs_session_of_deletions_is_not_called_a_restore() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(dir.path()).expect("store");
        let doc = yrs::Doc::new();
        let text = doc.get_or_insert_text("codemirror");
        let mut updates = Vec::new();
        for delete in [false, true] {
            let before = doc.transact().state_vector();
            {
                let mut txn = doc.transact_mut();
                if delete {
                    text.remove_range(&mut txn, 0, 1);
                } else {
                    text.insert(&mut txn, 0, "ab");
                }
            }
            let update = doc.transact().encode_state_as_update_v1(&before);
            updates.push(bytes::Bytes::from(update));
        }
        let epoch = store.load("y:room").await.expect("load").epoch;
        let commit = DocumentCommit {
            document: "y:room".into(),
            base_revision: 0,
            epoch,
            ops: Vec::new(),
            language: None,
            updates,
        };
        store.commit(Arc::from([commit])).await.expect("commit");
        let page = get_history(
            &store,
            pb::GetHistoryRequest {
                document_id: "y:room".into(),
                before: None,
                limit: 50,
            },
        )
        .await
        .expect("history");
        assert_eq!(page.error, None);
        let authors: Vec<u64> = page.sessions.iter().map(|s| s.user_id).collect();
        assert_eq!(
            authors,
            vec![0, doc.client_id().get()],
            "deletions, then the typing"
        );
        assert!(
            page.authors.iter().all(|a| a.name != "Restore"),
            "{:?}",
            page.authors
        );
    }
}
