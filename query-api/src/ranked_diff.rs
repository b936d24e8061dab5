//! The diff as a table: functions ranked by how much their share of the
//! profile changed between a baseline (left) and a comparison (right), so the
//! biggest regression is a row to read rather than a colour to spot.

use std::collections::HashMap;

use serde::Serialize;

use crate::store::StackValue;
use crate::top::function_values;

/// Which value a share is taken of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum By {
    #[serde(rename = "self")]
    SelfValue,
    Total,
}

/// Row order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    /// Largest increase of share first (the biggest regression is row 0).
    Growth,
    /// Largest decrease first.
    Shrink,
    /// Largest change either way first.
    Abs,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RankedRow {
    pub name: String,
    pub left_self: i64,
    pub left_total: i64,
    pub right_self: i64,
    pub right_total: i64,
    /// `by`'s value over the side's total (0 for an empty side).
    pub left_share: f64,
    pub right_share: f64,
    /// `right_share - left_share`.
    pub change: f64,
}

/// Every function of either side, ordered, cut to `limit`; and the number of
/// functions before the cut.
pub fn ranked(
    left: &[StackValue],
    right: &[StackValue],
    by: By,
    order: Order,
    limit: usize,
) -> (Vec<RankedRow>, usize) {
    let (l, r) = (function_values(left), function_values(right));
    let side_total = |s: &[StackValue]| s.iter().map(|s| s.value).sum::<i64>();
    let (lt, rt) = (side_total(left), side_total(right));
    let share = |v: (i64, i64), of: i64| {
        let v = match by {
            By::SelfValue => v.0,
            By::Total => v.1,
        };
        if of == 0 { 0.0 } else { v as f64 / of as f64 }
    };
    let mut names: HashMap<&str, ()> = HashMap::with_capacity(l.len().max(r.len()));
    names.extend(l.keys().chain(r.keys()).map(|k| (*k, ())));
    let mut rows: Vec<RankedRow> = names
        .into_keys()
        .map(|name| {
            let lv = l.get(name).copied().unwrap_or_default();
            let rv = r.get(name).copied().unwrap_or_default();
            let (left_share, right_share) = (share(lv, lt), share(rv, rt));
            RankedRow {
                name: name.to_string(),
                left_self: lv.0,
                left_total: lv.1,
                right_self: rv.0,
                right_total: rv.1,
                left_share,
                right_share,
                change: right_share - left_share,
            }
        })
        .collect();
    let key = |r: &RankedRow| match order {
        Order::Growth => r.change,
        Order::Shrink => -r.change,
        Order::Abs => r.change.abs(),
    };
    rows.sort_by(|a, b| key(b).total_cmp(&key(a)).then_with(|| a.name.cmp(&b.name)));
    let functions = rows.len();
    rows.truncate(limit);
    (rows, functions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_function_that_grew_most_is_first_and_shares_are_per_side() {
        let left = [
            StackValue::of(&["main", "parse"], 60),
            StackValue::of(&["main", "score"], 30),
            StackValue::of(&["main", "slow"], 10),
        ];
        // Twice the samples: shares, not values, are compared.
        let right = [
            StackValue::of(&["main", "parse"], 80),
            StackValue::of(&["main", "score"], 60),
            StackValue::of(&["main", "slow"], 60),
        ];
        let (rows, functions) = ranked(&left, &right, By::SelfValue, Order::Growth, 10);
        assert_eq!(functions, 4);
        assert_eq!(rows[0].name, "slow");
        assert_eq!((rows[0].left_self, rows[0].right_self), (10, 60));
        assert!((rows[0].left_share - 0.1).abs() < 1e-12);
        assert!((rows[0].right_share - 0.3).abs() < 1e-12);
        assert!((rows[0].change - 0.2).abs() < 1e-12);
        // parse fell from 0.6 to 0.4: last by growth, first by shrink and by abs.
        assert_eq!(rows.last().map(|r| r.name.as_str()), Some("parse"));
        let (shrink, _) = ranked(&left, &right, By::SelfValue, Order::Shrink, 1);
        assert_eq!(shrink[0].name, "parse");
        let (abs, _) = ranked(&left, &right, By::SelfValue, Order::Abs, 2);
        let mut abs: Vec<&str> = abs.iter().map(|r| r.name.as_str()).collect();
        abs.sort_unstable();
        assert_eq!(abs, ["parse", "slow"], "both moved by 0.2");
        // By total, main is 1.0 on both sides: no change.
        let (by_total, _) = ranked(&left, &right, By::Total, Order::Abs, 10);
        let main = by_total.iter().find(|r| r.name == "main").expect("main");
        assert_eq!(
            (main.left_total, main.right_total, main.change),
            (100, 200, 0.0)
        );
        // An empty side: shares are 0, not NaN.
        let (one_sided, _) = ranked(&left, &[], By::SelfValue, Order::Shrink, 1);
        assert_eq!(
            (one_sided[0].name.as_str(), one_sided[0].right_share),
            ("parse", 0.0)
        );
    }
}
