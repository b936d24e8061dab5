//! The top table: per function, self (the value of stacks where it is the
//! leaf) and total (the value of stacks it appears in, counted once per stack
//! even under recursion), computed from the untruncated stack aggregates.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::store::StackValue;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TopRow {
    pub name: String,
    #[serde(rename = "self")]
    pub self_value: i64,
    pub total: i64,
}

/// Which column orders the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortBy {
    SelfValue,
    Total,
}

/// Per function (by name): (self, total) over the stacks. Self is the value
/// of stacks where it is the leaf; total of stacks it appears in, once per
/// stack however often it recurses.
pub fn function_values(stacks: &[StackValue]) -> HashMap<&str, (i64, i64)> {
    let mut by_name: HashMap<&str, (i64, i64)> = HashMap::new();
    let mut seen: HashSet<&str> = HashSet::new();
    for stack in stacks {
        seen.clear();
        for frame in &stack.frames {
            if seen.insert(frame.as_str()) {
                by_name.entry(frame).or_default().1 += stack.value;
            }
        }
        if let Some(leaf) = stack.frames.last() {
            by_name.entry(leaf).or_default().0 += stack.value;
        }
    }
    by_name
}

/// The table, sorted descending by `sort` (then by name), and the number of
/// functions before `limit` cut it.
pub fn top(stacks: &[StackValue], sort: SortBy, limit: usize) -> (Vec<TopRow>, usize) {
    let by_name = function_values(stacks);
    let functions = by_name.len();
    let mut rows: Vec<TopRow> = by_name
        .into_iter()
        .map(|(name, (self_value, total))| TopRow {
            name: name.to_string(),
            self_value,
            total,
        })
        .collect();
    let key = |r: &TopRow| match sort {
        SortBy::SelfValue => (r.self_value, r.total),
        SortBy::Total => (r.total, r.self_value),
    };
    rows.sort_by(|a, b| key(b).cmp(&key(a)).then_with(|| a.name.cmp(&b.name)));
    rows.truncate(limit);
    (rows, functions)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stack(frames: &[&str], value: i64) -> StackValue {
        StackValue::of(frames, value)
    }

    #[test]
    fn recursion_counts_once_per_stack_and_self_is_the_leaf() {
        let stacks = [
            stack(&["main", "fib", "fib", "fib"], 10),
            stack(&["main", "fib", "add"], 4),
            stack(&["main"], 1),
        ];
        let (rows, functions) = top(&stacks, SortBy::Total, 10);
        assert_eq!(functions, 3);
        let row = |n: &str| rows.iter().find(|r| r.name == n).cloned().expect(n);
        assert_eq!(row("main").total, 15);
        assert_eq!(row("main").self_value, 1);
        assert_eq!(row("fib").total, 14, "not 34: once per stack");
        assert_eq!(row("fib").self_value, 10);
        assert_eq!(row("add").self_value, 4);
        assert_eq!(rows[0].name, "main");
        let (by_self, _) = top(&stacks, SortBy::SelfValue, 1);
        assert_eq!(by_self, vec![row("fib")]);
    }
}
