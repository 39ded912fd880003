//! Cursor geometry: moving cursors and selections through committed ops, and clamping what a
//! client sends to the document.

use codraft_ot::Operation;

use super::pb;

/// Moves every cursor and selection of a user through a committed op, as Rustpad does.
pub(super) fn transform_cursor(data: &mut pb::CursorData, operation: &Operation) {
    for cursor in &mut data.cursors {
        *cursor = operation.transform_index(*cursor);
    }
    for selection in &mut data.selections {
        selection.start = operation.transform_index(selection.start);
        selection.end = operation.transform_index(selection.end);
    }
}

/// Clamps positions to the document so a bad client cannot confuse others.
pub(super) fn clamp_cursor(mut data: pb::CursorData, len: u64) -> pb::CursorData {
    for cursor in &mut data.cursors {
        *cursor = (*cursor).min(len);
    }
    for selection in &mut data.selections {
        selection.start = selection.start.min(len);
        selection.end = selection.end.min(len);
    }
    data
}
