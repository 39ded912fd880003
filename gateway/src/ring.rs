//! The gateway's routing table: the live docnodes with a shared link each, and the
//! owner of a document among them by rendezvous hashing ([`codraft_common::ring`]).

use crate::link::Link;

/// A docnode a gateway can route to.
#[derive(Clone)]
pub struct RingNode {
    /// The node's stable identity (NODE_ID).
    pub id: String,
    /// The gRPC URL the client dials.
    pub url: String,
    /// The way to it; clones share it.
    pub link: Link,
}

/// The live docnodes, as one gateway sees them.
#[derive(Clone, Default)]
pub struct Ring {
    nodes: Vec<RingNode>,
}

impl Ring {
    /// A ring over these nodes.
    pub fn new(nodes: Vec<RingNode>) -> Self {
        Self { nodes }
    }

    /// The nodes.
    pub fn nodes(&self) -> &[RingNode] {
        &self.nodes
    }

    /// Whether no docnode is known.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The owner of `document`, or `None` when there are no docnodes.
    pub fn owner(&self, document: &str) -> Option<&RingNode> {
        let id = codraft_common::ring::owner(self.nodes.iter().map(|n| n.id.as_str()), document)?;
        self.nodes.iter().find(|n| n.id == id)
    }

    /// The node with this id, if it is in the ring.
    pub fn node(&self, id: &str) -> Option<&RingNode> {
        self.nodes.iter().find(|n| n.id == id)
    }
}
