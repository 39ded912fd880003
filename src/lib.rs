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
