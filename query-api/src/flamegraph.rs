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
    /// The right-hand side of a diff (unused in a plain flamegraph).
    right_total: i64,
    right_self: i64,
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
        CallTree::rooted("total")
    }

    /// A tree whose root is named `root` (`names[0]`), e.g. the function of a
    /// sandwich view.
    pub fn rooted(root: &str) -> CallTree {
        let mut tree = CallTree {
            names: vec![],
            name_index: HashMap::new(),
            nodes: vec![],
            child_index: HashMap::new(),
        };
        let root = tree.intern(root);
        tree.nodes.push(Node {
            name: root,
            total: 0,
            self_value: 0,
            right_total: 0,
            right_self: 0,
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
        let leaf = self.path(frames);
        for &i in &leaf {
            self.nodes[i].total += value;
        }
        if let Some(&last) = leaf.last() {
            self.nodes[last].self_value += value;
        }
    }

    /// Adds `value` to the right-hand side of a diff.
    pub fn add_right<S: AsRef<str>>(&mut self, frames: &[S], value: i64) {
        let leaf = self.path(frames);
        for &i in &leaf {
            self.nodes[i].right_total += value;
        }
        if let Some(&last) = leaf.last() {
            self.nodes[last].right_self += value;
        }
    }

    /// The nodes from the root to the stack's leaf, created as needed.
    fn path<S: AsRef<str>>(&mut self, frames: &[S]) -> Vec<usize> {
        let mut path = Vec::with_capacity(frames.len() + 1);
        let mut node = 0;
        path.push(0);
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
                        right_total: 0,
                        right_self: 0,
                        children: vec![],
                        depth,
                    });
                    self.nodes[node].children.push(child);
                    self.child_index.insert((node, name), child);
                    child
                }
            };
            path.push(node);
        }
        path
    }

    pub fn total(&self) -> i64 {
        self.nodes[0].total
    }

    /// Which nodes to emit so that kept nodes plus `other` nodes fit
    /// `max_nodes`, heaviest by `weight` first (a parent weighs at least as much
    /// as any child).
    fn keep_set(&self, max_nodes: usize, weight: &[f64]) -> Vec<bool> {
        let n = self.nodes.len();
        if n <= max_nodes {
            return vec![true; n];
        }
        // Heaviest first; on ties shallower first, so a parent always precedes its children.
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| {
            let (na, nb) = (&self.nodes[a], &self.nodes[b]);
            weight[b]
                .total_cmp(&weight[a])
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
        let weight: Vec<f64> = self.nodes.iter().map(|n| n.total as f64).collect();
        let keep = self.keep_set(max_nodes.max(2), &weight);
        let (names, other_name) = self.names_with_other();
        let mut levels: Vec<Vec<i64>> = Vec::new();
        let mut max_self = 0;
        let mut omitted = 0u64;
        self.layout(&keep, &weight, |depth, x_offset, item| {
            if levels.len() <= depth {
                levels.push(Vec::new());
            }
            let (total, self_value, name) = match item {
                Item::Node(i) => {
                    let n = &self.nodes[i];
                    (n.total, n.self_value, n.name)
                }
                Item::Other(cut) => {
                    omitted += cut.iter().map(|&c| self.subtree_size(c)).sum::<u64>();
                    let total = cut.iter().map(|&c| self.nodes[c].total).sum();
                    (total, total, other_name)
                }
            };
            max_self = max_self.max(self_value);
            // Widths are integer totals: the f64 offsets are exact below 2^53.
            levels[depth].extend_from_slice(&[x_offset as i64, total, self_value, i64::from(name)]);
        });
        Flamegraph {
            names,
            levels,
            total: self.total(),
            max_self,
            omitted_nodes: omitted,
        }
    }

    /// Emits a diff of the left (`add`) and right (`add_right`) sides. A node's
    /// width is its share of the left total plus its share of the right total,
    /// so both sides count equally whatever their sizes.
    pub fn to_diff(&self, max_nodes: usize) -> DiffFlamegraph {
        let (left, right) = (self.nodes[0].total, self.nodes[0].right_total);
        let share = |v: i64, of: i64| if of == 0 { 0.0 } else { v as f64 / of as f64 };
        let weight: Vec<f64> = self
            .nodes
            .iter()
            .map(|n| share(n.total, left) + share(n.right_total, right))
            .collect();
        let keep = self.keep_set(max_nodes.max(2), &weight);
        let (names, other_name) = self.names_with_other();
        let mut levels: Vec<Vec<f64>> = Vec::new();
        let mut omitted = 0u64;
        self.layout(&keep, &weight, |depth, x_offset, item| {
            if levels.len() <= depth {
                levels.push(Vec::new());
            }
            let (width, name, lt, ls, rt, rs) = match item {
                Item::Node(i) => {
                    let n = &self.nodes[i];
                    (
                        weight[i],
                        n.name,
                        n.total,
                        n.self_value,
                        n.right_total,
                        n.right_self,
                    )
                }
                Item::Other(cut) => {
                    omitted += cut.iter().map(|&c| self.subtree_size(c)).sum::<u64>();
                    let lt: i64 = cut.iter().map(|&c| self.nodes[c].total).sum();
                    let rt: i64 = cut.iter().map(|&c| self.nodes[c].right_total).sum();
                    let width = cut.iter().map(|&c| weight[c]).sum();
                    (width, other_name, lt, lt, rt, rt)
                }
            };
            levels[depth].extend_from_slice(&[
                x_offset,
                width,
                f64::from(name),
                lt as f64,
                ls as f64,
                rt as f64,
                rs as f64,
            ]);
        });
        DiffFlamegraph {
            names,
            levels,
            left_total: left,
            right_total: right,
            omitted_nodes: omitted,
        }
    }

    /// The interned names plus `other` (index of `other` returned).
    fn names_with_other(&self) -> (Vec<String>, u32) {
        let mut names = self.names.clone();
        let other = match self.name_index.get(OTHER) {
            Some(&i) => i,
            None => {
                names.push(OTHER.to_string());
                (names.len() - 1) as u32
            }
        };
        (names, other)
    }

    /// Walks the kept tree depth-first (children by name, cut children as one
    /// `other` after them) and calls `emit(depth, x offset from the previous
    /// node of that depth, item)`, widths taken from `weight`.
    fn layout(&self, keep: &[bool], weight: &[f64], mut emit: impl FnMut(usize, f64, Item)) {
        let mut level_end: Vec<f64> = Vec::new();
        let mut stack: Vec<(Item, usize, f64)> = vec![(Item::Node(0), 0, 0.0)];
        while let Some((item, depth, x)) = stack.pop() {
            if level_end.len() <= depth {
                level_end.push(0.0);
            }
            let width = match &item {
                Item::Node(i) => weight[*i],
                Item::Other(cut) => cut.iter().map(|&c| weight[c]).sum(),
            };
            let offset = x - level_end[depth];
            level_end[depth] = x + width;
            let Item::Node(i) = item else {
                emit(depth, offset, item);
                continue;
            };
            emit(depth, offset, Item::Node(i));
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
            let cut: Vec<usize> = self.nodes[i]
                .children
                .iter()
                .copied()
                .filter(|&c| !keep[c])
                .collect();
            let mut next_x = x;
            let mut planned = Vec::with_capacity(kids.len() + 1);
            for &c in &kids {
                planned.push((Item::Node(c), depth + 1, next_x));
                next_x += weight[c];
            }
            if !cut.is_empty() {
                planned.push((Item::Other(cut), depth + 1, next_x));
            }
            // Reversed so the leftmost child is emitted first.
            stack.extend(planned.into_iter().rev());
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

/// What the layout emits: a kept node, or the cut children of a kept node as one `other`.
#[derive(Debug, Clone)]
enum Item {
    Node(usize),
    Other(Vec<usize>),
}

/// A diff flamegraph: `levels[d]` is a flat list of 7-tuples
/// `[x_offset, width, name_index, left_total, left_self, right_total, right_self]`;
/// width = left share + right share of the node (the root's width is 2 when
/// both sides have data), x_offset relative to the previous node's end.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DiffFlamegraph {
    pub names: Vec<String>,
    pub levels: Vec<Vec<f64>>,
    pub left_total: i64,
    pub right_total: i64,
    pub omitted_nodes: u64,
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

    #[test]
    fn a_diff_normalises_each_side_by_its_total() {
        let mut tree = CallTree::new();
        // Left: a 50 %, b 50 %. Right (10× bigger): a 20 %, b 80 %.
        tree.add(&["main", "a"], 5);
        tree.add(&["main", "b"], 5);
        tree.add_right(&["main", "a"], 20);
        tree.add_right(&["main", "b"], 80);
        let diff = tree.to_diff(100);
        assert_eq!((diff.left_total, diff.right_total), (10, 100));
        let level = &diff.levels[2];
        let node = |k: usize| &level[k * 7..k * 7 + 7];
        let name = |k: usize| diff.names[node(k)[2] as usize].clone();
        assert_eq!((name(0), name(1)), ("a".to_string(), "b".to_string()));
        assert!((node(0)[1] - 0.7).abs() < 1e-9, "a: 0.5 + 0.2");
        assert!((node(1)[1] - 1.3).abs() < 1e-9, "b: 0.5 + 0.8");
        assert_eq!(&node(0)[3..], &[5.0, 5.0, 20.0, 20.0]);
        assert!((diff.levels[0][1] - 2.0).abs() < 1e-9);
    }
}
