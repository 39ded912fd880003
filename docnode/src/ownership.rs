//! Whether this docnode owns a document, by its own view of the cluster.
//!
//! The view is the membership watched through Redis (or a static DOCNODES list): the owner of
//! a document is the rendezvous-hash winner among the live docnodes. A docnode refuses a
//! client for a document it does not own, naming the owner so the gateway re-routes, and it
//! releases documents it stops owning when the view changes (a docnode joined, or this one is
//! draining). Views can disagree for a moment; the store's lease epochs make sure only one
//! owner commits, and a docnode that lost a document that way remembers the winner for a
//! while so its clients are sent there instead of fighting over the lease.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use codraft_common::{
    membership::{Member, View},
    ring,
};
use tokio::sync::watch;

/// How long a document stays with the docnode that fenced this one out of it.
const FENCE_MEMORY: Duration = Duration::from_secs(30);

/// Who owns a document, as this docnode sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// This docnode.
    Mine,
    /// Another docnode.
    Elsewhere {
        /// Its id.
        node: String,
        /// Its gRPC URL, when known.
        url: Option<String>,
    },
}

/// This docnode's identity and view.
pub struct Ownership {
    me: Member,
    view: watch::Receiver<View>,
    fenced: Mutex<HashMap<String, (Member, Instant)>>,
}

impl Ownership {
    /// Ownership for docnode `me` over a membership view. An empty view (standalone, or no
    /// membership configured) means this docnode owns everything.
    pub fn new(me: Member, view: watch::Receiver<View>) -> Self {
        Self {
            me,
            view,
            fenced: Mutex::default(),
        }
    }

    /// This docnode.
    pub fn me(&self) -> &Member {
        &self.me
    }

    /// A receiver that changes with the view.
    pub fn view(&self) -> watch::Receiver<View> {
        self.view.clone()
    }

    /// Who owns `document`.
    pub fn check(&self, document: &str) -> Verdict {
        self.check_referred(document, None)
    }

    /// Who owns `document`, for a client that `referred_by` (a docnode's gRPC URL) sent here
    /// naming this docnode the owner: if that docnode is the one that fenced this one out of
    /// the document, it has let the document go, and what this docnode remembers of it is
    /// forgotten (else each would send the client to the other until the memory ran out).
    pub fn check_referred(&self, document: &str, referred_by: Option<&str>) -> Verdict {
        if let Some(winner) = self.fenced_by(document, referred_by) {
            return Verdict::Elsewhere {
                node: winner.id,
                url: Some(winner.url),
            };
        }
        let view = self.view.borrow();
        if view.is_empty() {
            return Verdict::Mine;
        }
        match ring::owner(view.iter().map(|m| m.id.as_str()), document) {
            Some(owner) if owner == self.me.id => Verdict::Mine,
            Some(owner) => Verdict::Elsewhere {
                node: owner.to_owned(),
                url: view.iter().find(|m| m.id == owner).map(|m| m.url.clone()),
            },
            None => Verdict::Mine,
        }
    }

    /// Records that `winner` took `document` from this docnode (its commit was fenced).
    pub fn lost_to(&self, document: &str, winner: Member) {
        if winner.id == self.me.id {
            return;
        }
        let mut fenced = self.lock();
        fenced.retain(|_, (_, at)| at.elapsed() < FENCE_MEMORY);
        fenced.insert(document.to_owned(), (winner, Instant::now()));
    }

    /// The docnode that fenced this one out of `document` within FENCE_MEMORY, if any; the
    /// memory ends when that docnode is the one `referred_by` (it let the document go).
    fn fenced_by(&self, document: &str, referred_by: Option<&str>) -> Option<Member> {
        let mut fenced = self.lock();
        let (winner, at) = fenced.get(document)?;
        if referred_by == Some(winner.url.as_str()) {
            fenced.remove(document);
            return None;
        }
        (at.elapsed() < FENCE_MEMORY).then(|| winner.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Member, Instant)>> {
        self.fenced
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn member(id: &str) -> Member {
        Member {
            id: id.into(),
            url: format!("http://{id}"),
        }
    }

    #[test]
    fn an_empty_view_owns_everything() {
        let (_tx, rx) = watch::channel(Arc::new(Vec::new()));
        assert_eq!(Ownership::new(member("a"), rx).check("doc"), Verdict::Mine);
    }

    #[test]
    fn the_ring_decides_and_names_the_owner() {
        let (_tx, rx) = watch::channel(Arc::new(vec![member("a"), member("b"), member("c")]));
        let a = Ownership::new(member("a"), rx);
        let mut mine = 0;
        for i in 0..300 {
            let doc = format!("d{i}");
            match a.check(&doc) {
                Verdict::Mine => mine += 1,
                Verdict::Elsewhere { node, url } => {
                    assert_ne!(node, "a");
                    assert_eq!(url, Some(format!("http://{node}")));
                }
            }
        }
        assert!((60..=140).contains(&mine), "a owns {mine} of 300");
    }

    #[test]
    fn a_node_outside_its_own_view_owns_nothing() {
        let (_tx, rx) = watch::channel(Arc::new(vec![member("b")]));
        assert!(matches!(
            Ownership::new(member("a"), rx).check("doc"),
            Verdict::Elsewhere { .. }
        ));
    }

    #[test]
    fn a_fenced_document_points_at_the_winner() {
        let (_tx, rx) = watch::channel(Arc::new(Vec::new()));
        let a = Ownership::new(member("a"), rx);
        a.lost_to("doc", member("b"));
        assert_eq!(
            a.check("doc"),
            Verdict::Elsewhere {
                node: "b".into(),
                url: Some("http://b".into())
            }
        );
        assert_eq!(a.check("other"), Verdict::Mine);
    }

    /// A docnode fenced out of a document by another whose view did not give it the document
    /// (a view behind, or a join that raced a move) sent its clients to the winner for 30 s,
    /// and the winner, by its view, sent them straight back: the document was out of reach
    /// for the whole memory. The winner's own referral ends the memory; nobody else's does.
    #[test]
    fn the_winner_sending_a_client_back_ends_the_fence_memory() {
        let (_tx, rx) = watch::channel(Arc::new(vec![member("a"), member("b")]));
        let a = Ownership::new(member("a"), rx);
        let doc = (0..1000)
            .map(|i| format!("d{i}"))
            .find(|d| a.check(d) == Verdict::Mine)
            .expect("a owns some document");
        a.lost_to(&doc, member("b"));
        let to_b = Verdict::Elsewhere {
            node: "b".into(),
            url: Some("http://b".into()),
        };
        assert_eq!(a.check(&doc), to_b);
        assert_eq!(a.check_referred(&doc, Some("http://c")), to_b);
        assert_eq!(a.check_referred(&doc, Some("http://b")), Verdict::Mine);
        assert_eq!(a.check(&doc), Verdict::Mine, "the memory is gone");
    }
}
