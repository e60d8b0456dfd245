//! The network's links as a graph, and the paths keys are relayed along: the fewest hops,
//! avoiding links known to be down; among paths of equal length the one whose KME IDs come
//! first in order, so every KME computes the same path from the same configuration.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};

use crate::config::Config;

/// A link between two KMEs, its IDs in order (so `A-B` and `B-A` are the same link).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct LinkName(String, String);

impl LinkName {
    /// The link between `a` and `b`.
    pub(crate) fn new(a: &str, b: &str) -> Self {
        if a <= b {
            Self(a.to_string(), b.to_string())
        } else {
            Self(b.to_string(), a.to_string())
        }
    }

    /// Its two KME IDs, in order.
    pub(crate) fn ends(&self) -> [&str; 2] {
        [&self.0, &self.1]
    }
}

impl std::fmt::Display for LinkName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.0, self.1)
    }
}

/// The KME network: who has a link with whom.
#[derive(Clone, Debug, Default)]
pub(crate) struct Topology {
    neighbours: BTreeMap<String, BTreeSet<String>>,
}

impl Topology {
    /// The network of a configuration: its `network.links` and this KME's own links.
    pub(crate) fn of(cfg: &Config) -> Self {
        let mut t = Self::default();
        for [a, b] in &cfg.network.links {
            t.add(a, b);
        }
        for l in &cfg.links {
            t.add(&cfg.kme_id, &l.peer);
        }
        t
    }

    fn add(&mut self, a: &str, b: &str) {
        self.neighbours
            .entry(a.to_string())
            .or_default()
            .insert(b.to_string());
        self.neighbours
            .entry(b.to_string())
            .or_default()
            .insert(a.to_string());
    }

    /// The shortest path of KME IDs from `from` to `to` (both included) that uses none of the
    /// `avoid` links; `None` if there is none.
    pub(crate) fn path(
        &self,
        from: &str,
        to: &str,
        avoid: &HashSet<LinkName>,
    ) -> Option<Vec<String>> {
        // Breadth first, neighbours in order: the first path found to each KME is the shortest,
        // and the first in order among the shortest.
        let mut parent: BTreeMap<&str, &str> = BTreeMap::new();
        let mut queue = VecDeque::from([from]);
        let mut seen = BTreeSet::from([from]);
        while let Some(k) = queue.pop_front() {
            if k == to {
                let mut path = vec![to.to_string()];
                let mut at = to;
                while let Some(p) = parent.get(at) {
                    path.push(p.to_string());
                    at = p;
                }
                path.reverse();
                return Some(path);
            }
            for n in self.neighbours.get(k).into_iter().flatten() {
                if !avoid.contains(&LinkName::new(k, n)) && seen.insert(n.as_str()) {
                    parent.insert(n.as_str(), k);
                    queue.push_back(n.as_str());
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topology(links: &[(&str, &str)]) -> Topology {
        let mut t = Topology::default();
        for (a, b) in links {
            t.add(a, b);
        }
        t
    }

    fn path(t: &Topology, from: &str, to: &str, avoid: &[(&str, &str)]) -> Option<String> {
        let avoid = avoid.iter().map(|(a, b)| LinkName::new(a, b)).collect();
        t.path(from, to, &avoid).map(|p| p.join(">"))
    }

    #[test]
    fn a_chain_has_one_path() {
        let t = topology(&[("A", "B"), ("B", "C"), ("C", "D")]);
        assert_eq!(path(&t, "A", "D", &[]).as_deref(), Some("A>B>C>D"));
        assert_eq!(path(&t, "D", "A", &[]).as_deref(), Some("D>C>B>A"));
        assert_eq!(path(&t, "B", "B", &[]).as_deref(), Some("B"));
        assert_eq!(path(&t, "A", "D", &[("C", "B")]), None);
        assert_eq!(path(&t, "A", "E", &[]), None);
    }

    #[test]
    fn a_mesh_takes_the_shortest_path_first_in_order_then_another() {
        // A ring A-B-C-D-A with a chord B-D.
        let t = topology(&[("A", "B"), ("B", "C"), ("C", "D"), ("D", "A"), ("B", "D")]);
        assert_eq!(path(&t, "A", "C", &[]).as_deref(), Some("A>B>C"));
        assert_eq!(path(&t, "A", "C", &[("B", "C")]).as_deref(), Some("A>D>C"));
        assert_eq!(
            path(&t, "A", "C", &[("B", "C"), ("D", "C")]).as_deref(),
            None
        );
        assert_eq!(
            path(&t, "A", "C", &[("A", "D"), ("B", "C")]).as_deref(),
            Some("A>B>D>C")
        );
    }
}
