//! The sandwich view of one function: who calls it (an inverted tree, its
//! callers as children) and what it calls, over the stacks it appears in.

use crate::flamegraph::CallTree;
use crate::store::StackValue;

/// A function's callers and callees. Both trees are rooted at the function
/// and their root totals are its total (stacks containing it, once per stack,
/// as in the top table).
#[derive(Debug)]
pub struct Sandwich {
    /// Value of stacks whose leaf is the function (the top table's self).
    pub self_value: i64,
    pub total: i64,
    /// Root = the function; children = its direct callers, then theirs.
    pub callers: CallTree,
    /// Root = the function; children = what it calls.
    pub callees: CallTree,
}

/// Each stack is cut at the function's outermost (root-most) occurrence: the
/// path above it is who called into it, everything below (recursive calls
/// included) is what it called. Counting one position per stack keeps both
/// trees' totals equal to the function's total.
pub fn sandwich(stacks: &[StackValue], function: &str) -> Sandwich {
    let mut out = Sandwich {
        self_value: 0,
        total: 0,
        callers: CallTree::rooted(function),
        callees: CallTree::rooted(function),
    };
    for stack in stacks {
        let Some(at) = stack.frames.iter().position(|f| f == function) else {
            continue;
        };
        out.total += stack.value;
        if stack.frames.last().is_some_and(|leaf| leaf == function) {
            out.self_value += stack.value;
        }
        let callers: Vec<&str> = stack.frames[..at]
            .iter()
            .rev()
            .map(String::as_str)
            .collect();
        out.callers.add(&callers, stack.value);
        out.callees.add(&stack.frames[at + 1..], stack.value);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callers_are_inverted_callees_follow_and_totals_match_the_top_table() {
        let stacks = [
            StackValue::of(&["main", "a", "f", "g"], 10),
            StackValue::of(&["main", "b", "f"], 4),
            StackValue::of(&["main", "f", "h", "f", "g"], 3),
            StackValue::of(&["main", "x"], 100),
        ];
        let s = sandwich(&stacks, "f");
        assert_eq!((s.total, s.self_value), (17, 4));
        let callers = s.callers.to_flamegraph(100);
        assert_eq!(callers.names[0], "f");
        assert_eq!(callers.total, 17);
        // Level 1 of the callers: a (10), b (4), main (3: f called from main directly).
        let level1: Vec<(String, i64)> = callers.levels[1]
            .chunks(4)
            .map(|n| (callers.names[n[3] as usize].clone(), n[1]))
            .collect();
        assert_eq!(
            level1,
            [("a".to_string(), 10), ("b".into(), 4), ("main".into(), 3)]
        );
        let callees = s.callees.to_flamegraph(100);
        assert_eq!(callees.total, 17);
        let level1: Vec<(String, i64)> = callees.levels[1]
            .chunks(4)
            .map(|n| (callees.names[n[3] as usize].clone(), n[1]))
            .collect();
        // g (10), h (3: the recursive call stays below h); b's f was the leaf.
        assert_eq!(level1, [("g".to_string(), 10), ("h".into(), 3)]);
        let absent = sandwich(&stacks, "nope");
        assert_eq!((absent.total, absent.self_value), (0, 0));
        assert_eq!(absent.callees.to_flamegraph(100).levels.len(), 1);
    }
}
