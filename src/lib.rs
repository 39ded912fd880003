//! The codraft binaries' shared start-up pieces.
//!
//! codraft is three binaries over two libraries:
//!
//! - `codraft` (src/main.rs): standalone mode, a gateway and a docnode in one process, the
//!   docnode called in process (the gRPC contract without the wire) and storing into the
//!   embedded file store;
//! - `gateway` (src/bin/gateway.rs): the stateless WebSocket front ([`codraft_gateway`]);
//! - `docnode` (src/bin/docnode.rs): the document owner ([`codraft_docnode`]).
//!
//! Start with the README, then the top of gateway/src/lib.rs and docnode/src/lib.rs.

pub mod limits;
pub mod shutdown;

/// Panics unless every setting of `command` has one id and one long flag of its own. Clap
/// checks that only in debug builds, at start (a clash once made `cargo run` panic before
/// serving); the binaries' tests call this so that any build checks it.
pub fn assert_settings_defined_once(command: &clap::Command) {
    let mut ids: Vec<&str> = command
        .get_arguments()
        .map(|a| a.get_id().as_str())
        .collect();
    let mut flags: Vec<&str> = command
        .get_arguments()
        .filter_map(|a| a.get_long())
        .collect();
    for names in [&mut ids, &mut flags] {
        let all = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), all, "a setting is defined twice");
    }
}
