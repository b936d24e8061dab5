//! Stacks → a call tree → Pyroscope's names + levels layout, with a node bound.
//!
//! Layout: `names[0]` is `"total"`; `levels[d]` is a flat list of 4-tuples
//! `[x_offset, total, self, name_index]` for the nodes at depth `d`, left to right,
//! where `x_offset` is relative to the end of the previous node of that level.
//!
//! Bound: at most `max_nodes` nodes are emitted. The heaviest nodes are kept
//! (a parent is never lighter than its child, so kept nodes form a tree); the
//! cut children of a kept node are summed into one `other` child, so every
//! level's totals stay exact.

use std::collections::HashMap;

use serde::Serialize;

/// Name of the node that holds the mass of cut children.
pub const OTHER: &str = "other";

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Flamegraph {
    pub names: Vec<String>,
    pub levels: Vec<Vec<i64>>,
    pub total: i64,
    pub max_self: i64,
    /// Nodes of the full tree that were folded into `other` nodes.
    pub omitted_nodes: u64,
}

#[derive(Debug)]
struct Node {
    name: u32,
    total: i64,
    self_value: i64,
    children: Vec<usize>,
    depth: u32,
}

/// A call tree with interned names; node 0 is the root.
#[derive(Debug)]
pub struct CallTree {
    names: Vec<String>,
    name_index: HashMap<String, u32>,
    nodes: Vec<Node>,
    child_index: HashMap<(usize, u32), usize>,
}

impl Default for CallTree {
    fn default() -> Self {
        CallTree::new()
    }
}

impl CallTree {
    pub fn new() -> CallTree {
        let mut tree = CallTree {
            names: vec![],
            name_index: HashMap::new(),
            nodes: vec![],
            child_index: HashMap::new(),
        };
        let root = tree.intern("total");
        tree.nodes.push(Node {
            name: root,
            total: 0,
            self_value: 0,
            children: vec![],
            depth: 0,
        });
        tree
    }

    fn intern(&mut self, name: &str) -> u32 {
        if let Some(&i) = self.name_index.get(name) {
            return i;
        }
        let i = self.names.len() as u32;
        self.names.push(name.to_string());
        self.name_index.insert(name.to_string(), i);
        i
    }

    /// Adds `value` for a stack given root first.
    pub fn add<S: AsRef<str>>(&mut self, frames: &[S], value: i64) {
        let mut node = 0;
        self.nodes[0].total += value;
        for frame in frames {
            let name = self.intern(frame.as_ref());
            node = match self.child_index.get(&(node, name)) {
                Some(&child) => child,
                None => {
                    let child = self.nodes.len();
                    let depth = self.nodes[node].depth + 1;
                    self.nodes.push(Node {
                        name,
                        total: 0,
                        self_value: 0,
                        children: vec![],
                        depth,
                    });
                    self.nodes[node].children.push(child);
                    self.child_index.insert((node, name), child);
                    child
                }
            };
            self.nodes[node].total += value;
        }
        self.nodes[node].self_value += value;
    }

    pub fn total(&self) -> i64 {
        self.nodes[0].total
    }

    /// Which nodes to emit so that kept nodes plus `other` nodes fit `max_nodes`.
    fn keep_set(&self, max_nodes: usize) -> Vec<bool> {
        let n = self.nodes.len();
        if n <= max_nodes {
            return vec![true; n];
        }
        // Heaviest first; on ties shallower first, so a parent always precedes its children.
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| {
            let (na, nb) = (&self.nodes[a], &self.nodes[b]);
            nb.total
                .cmp(&na.total)
                .then(na.depth.cmp(&nb.depth))
                .then(a.cmp(&b))
        });
        let parents = self.parents();
        let emitted = |k: usize| -> (usize, Vec<bool>) {
            let mut keep = vec![false; n];
            for &i in &order[..k] {
                keep[i] = true;
            }
            let others = (0..n)
                .filter(|&i| keep[i] && self.nodes[i].children.iter().any(|&c| !keep[c]))
                .count();
            (k + others, keep)
        };
        // Largest prefix whose emitted size fits (emitted size grows with k).
        let (mut lo, mut hi) = (1usize, max_nodes.min(n));
        while lo < hi {
            let mid = (lo + hi).div_ceil(2);
            if emitted(mid).0 <= max_nodes {
                lo = mid
            } else {
                hi = mid - 1
            }
        }
        let keep = emitted(lo).1;
        debug_assert!((0..n).all(|i| !keep[i] || i == 0 || keep[parents[i]]));
        keep
    }

    fn parents(&self) -> Vec<usize> {
        let mut parents = vec![0; self.nodes.len()];
        for (i, node) in self.nodes.iter().enumerate() {
            for &c in &node.children {
                parents[c] = i;
            }
        }
        parents
    }

    /// Emits the names + levels layout with at most `max_nodes` nodes (minimum 2).
    pub fn to_flamegraph(&self, max_nodes: usize) -> Flamegraph {
        let keep = self.keep_set(max_nodes.max(2));
        let mut names = self.names.clone();
        let other_name = match self.name_index.get(OTHER) {
            Some(&i) => i,
            None => {
                names.push(OTHER.to_string());
                (names.len() - 1) as u32
            }
        };
        let mut levels: Vec<Vec<i64>> = Vec::new();
        let mut level_end: Vec<i64> = Vec::new();
        let mut max_self = 0;
        let mut omitted = 0u64;
        // Depth-first, children by name, so the layout is deterministic.
        let mut stack: Vec<(Emit, usize, i64)> = vec![(Emit::Node(0), 0, 0)];
        while let Some((item, depth, x)) = stack.pop() {
            if levels.len() <= depth {
                levels.push(Vec::new());
                level_end.push(0);
            }
            let (total, self_value, name) = match item {
                Emit::Node(i) => (
                    self.nodes[i].total,
                    self.nodes[i].self_value,
                    self.nodes[i].name,
                ),
                Emit::Other(total, count) => {
                    omitted += count;
                    (total, total, other_name)
                }
            };
            levels[depth].extend_from_slice(&[
                x - level_end[depth],
                total,
                self_value,
                i64::from(name),
            ]);
            level_end[depth] = x + total;
            max_self = max_self.max(self_value);
            let Emit::Node(i) = item else { continue };
            let mut kids: Vec<usize> = self.nodes[i]
                .children
                .iter()
                .copied()
                .filter(|&c| keep[c])
                .collect();
            kids.sort_by(|&a, &b| {
                self.names[self.nodes[a].name as usize]
                    .cmp(&self.names[self.nodes[b].name as usize])
            });
            let mut cut_total = 0;
            let mut cut_count = 0u64;
            for &c in self.nodes[i].children.iter().filter(|&&c| !keep[c]) {
                cut_total += self.nodes[c].total;
                cut_count += self.subtree_size(c);
            }
            // Push in reverse so the leftmost child is emitted first.
            let mut next_x = x;
            let mut planned = Vec::with_capacity(kids.len() + 1);
            for &c in &kids {
                planned.push((Emit::Node(c), depth + 1, next_x));
                next_x += self.nodes[c].total;
            }
            if cut_count > 0 {
                planned.push((Emit::Other(cut_total, cut_count), depth + 1, next_x));
            }
            stack.extend(planned.into_iter().rev());
        }
        Flamegraph {
            names,
            levels,
            total: self.total(),
            max_self,
            omitted_nodes: omitted,
        }
    }

    fn subtree_size(&self, node: usize) -> u64 {
        let mut count = 0;
        let mut stack = vec![node];
        while let Some(i) = stack.pop() {
            count += 1;
            stack.extend(&self.nodes[i].children);
        }
        count
    }
}

#[derive(Debug, Clone, Copy)]
enum Emit {
    Node(usize),
    /// Sum of cut children: (total, number of nodes folded).
    Other(i64, u64),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes levels back into (depth, absolute x, total, self, name) tuples.
    fn decode(fg: &Flamegraph) -> Vec<(usize, i64, i64, i64, String)> {
        let mut out = vec![];
        for (d, level) in fg.levels.iter().enumerate() {
            let mut end = 0;
            for t in level.chunks(4) {
                let x = end + t[0];
                out.push((d, x, t[1], t[2], fg.names[t[3] as usize].clone()));
                end = x + t[1];
            }
        }
        out
    }

    #[test]
    fn builds_pyroscope_levels() {
        let mut tree = CallTree::new();
        tree.add(&["main", "a"], 3);
        tree.add(&["main", "b"], 5);
        tree.add(&["main"], 2);
        let fg = tree.to_flamegraph(8192);
        assert_eq!(fg.total, 10);
        assert_eq!(fg.names[0], "total");
        let nodes = decode(&fg);
        assert_eq!(
            nodes,
            vec![
                (0, 0, 10, 0, "total".into()),
                (1, 0, 10, 2, "main".into()),
                (2, 0, 3, 3, "a".into()),
                (2, 3, 5, 5, "b".into()),
            ]
        );
        assert_eq!(fg.max_self, 5);
        assert_eq!(fg.omitted_nodes, 0);
    }

    #[test]
    fn offsets_are_relative_to_the_previous_node_of_the_level() {
        let mut tree = CallTree::new();
        tree.add(&["x", "leaf"], 4);
        tree.add(&["y", "leaf"], 6);
        let fg = tree.to_flamegraph(100);
        // Names: total, x, leaf, y. Level 2: x/leaf at 0 (total 4), y/leaf at absolute 4 → delta 0.
        assert_eq!(fg.levels[2], vec![0, 4, 4, 2, 0, 6, 6, 2]);
    }

    #[test]
    fn max_nodes_folds_light_nodes_into_other_keeping_totals() {
        let mut tree = CallTree::new();
        for i in 0..100 {
            tree.add(
                &["main".to_string(), format!("f{i}"), "leaf".to_string()],
                i + 1,
            );
        }
        let fg = tree.to_flamegraph(20);
        let nodes = decode(&fg);
        assert!(nodes.len() <= 20, "{} nodes", nodes.len());
        assert_eq!(fg.total, 5050);
        // Every level sums to at most the total, and level 2 (f*) sums exactly to it.
        let level_sum = |d: usize| nodes.iter().filter(|n| n.0 == d).map(|n| n.2).sum::<i64>();
        assert_eq!(level_sum(1), 5050);
        assert_eq!(level_sum(2), 5050, "cut mass is in `other`");
        let other = nodes.iter().find(|n| n.4 == OTHER).expect("other node");
        assert_eq!(other.2, other.3, "other is all self");
        assert!(fg.omitted_nodes > 0);
        // Kept f-nodes are the heaviest.
        assert!(nodes.iter().any(|n| n.4 == "f99"));
        assert!(!nodes.iter().any(|n| n.4 == "f0"));
    }
}
