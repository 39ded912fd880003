//! Which docnode owns a document: rendezvous (highest random weight) hashing.
//!
//! Every process that sees the same set of docnodes computes the same owner for a document,
//! with no coordination; when a docnode joins or leaves, only the documents whose highest
//! score moves (about 1/N of them) change owner. The hash is xxh3, whose output is fixed by
//! its specification, so processes of different builds agree during a rolling upgrade (std's
//! `DefaultHasher` promises no such stability).

use xxhash_rust::xxh3::xxh3_64;

/// The weight of `node` for `document`; the highest weight owns the document.
pub fn score(node: &str, document: &str) -> u64 {
    let mut key = Vec::with_capacity(node.len() + document.len() + 1);
    key.extend_from_slice(node.as_bytes());
    // A separator no id may contain, so ("ab", "c") and ("a", "bc") hash differently.
    key.push(0);
    key.extend_from_slice(document.as_bytes());
    xxh3_64(&key)
}

/// The owner of `document` among nodes given by id (ties, astronomically rare, go to the
/// greater id so every process still agrees).
pub fn owner<'a, I>(nodes: I, document: &str) -> Option<&'a str>
where
    I: IntoIterator<Item = &'a str>,
{
    nodes
        .into_iter()
        .max_by_key(|node| (score(node, document), *node))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn documents() -> impl Iterator<Item = String> {
        (0..20_000).map(|i| format!("doc-{i}"))
    }

    #[test]
    fn owners_are_spread_evenly() {
        let nodes = ["a", "b", "c", "d"];
        let mut counts = [0usize; 4];
        for doc in documents() {
            let o = owner(nodes, &doc).expect("nodes exist");
            let index = nodes.iter().position(|n| *n == o).expect("owner is a node");
            counts[index] += 1;
        }
        for count in counts {
            // 5,000 expected each; allow 5% either way.
            assert!((4750..=5250).contains(&count), "uneven spread: {counts:?}");
        }
    }

    #[test]
    fn adding_a_node_moves_about_one_in_n_documents() {
        let before = ["a", "b", "c", "d"];
        let after = ["a", "b", "c", "d", "e"];
        let mut moved = 0;
        for doc in documents() {
            let old = owner(before, &doc);
            let new = owner(after, &doc);
            if old != new {
                // A document only ever moves to the new node.
                assert_eq!(new, Some("e"));
                moved += 1;
            }
        }
        // 1/5 of 20,000 = 4,000; allow 5% either way.
        assert!((3800..=4200).contains(&moved), "moved {moved}");
    }

    #[test]
    fn removing_a_node_moves_only_its_documents() {
        let before = ["a", "b", "c", "d"];
        let after = ["a", "b", "d"];
        let mut moved = 0;
        for doc in documents() {
            let old = owner(before, &doc);
            let new = owner(after, &doc);
            if old != new {
                assert_eq!(old, Some("c"));
                moved += 1;
            }
        }
        // 1/4 of 20,000 = 5,000.
        assert!((4750..=5250).contains(&moved), "moved {moved}");
    }

    #[test]
    fn order_of_nodes_does_not_matter() {
        for doc in documents().take(1000) {
            assert_eq!(owner(["x", "y", "z"], &doc), owner(["z", "x", "y"], &doc));
        }
    }

    #[test]
    fn no_nodes_no_owner() {
        assert_eq!(owner([], "doc"), None);
    }
}
