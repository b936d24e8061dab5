//! Totals over time: the step of a timeline, its dense points, and the
//! breakdown of a timeline by a label's values (top values + `other`).

use std::collections::HashMap;

use serde::Serialize;

use crate::store::{Bucket, TagBucket};

/// Most points a timeline has; a longer range gets a longer step.
pub const MAX_POINTS: u32 = 1_000;

/// Points a default step aims at (fewer when windows are longer).
const TARGET_POINTS: u32 = 240;

/// Steps a default (or raised) step is rounded up to, in seconds: bucket
/// edges land on round clock times.
const NICE_STEPS: &[u32] = &[
    10, 15, 30, 60, 120, 300, 600, 900, 1_800, 3_600, 7_200, 10_800, 21_600, 43_200, 86_400,
];

/// The smallest nice step of at least `at_least` seconds (whole days past a day).
fn nice(at_least: u32) -> u32 {
    NICE_STEPS
        .iter()
        .copied()
        .find(|&s| s >= at_least)
        .unwrap_or_else(|| at_least.div_ceil(86_400).saturating_mul(86_400))
}

/// The step for [from_s, to_s): the asked one (≥ 1 s), or by default a nice
/// step of at least span / [`TARGET_POINTS`] and at least the longest window
/// (a bucket shorter than a window shows gaps that are not there), and at
/// least an hour for ranges longer than a day (the hourly rollups answer
/// those; a finer step would read every raw window); raised to a nice step
/// when it would give more than [`MAX_POINTS`] points.
pub fn step(from_s: u32, to_s: u32, asked: Option<u32>, longest_window_ms: i64) -> u32 {
    let span = to_s.saturating_sub(from_s).max(1);
    let window_s =
        u32::try_from(longest_window_ms.max(0).saturating_add(999) / 1000).unwrap_or(u32::MAX);
    let step = match asked {
        Some(s) => s.max(1),
        // A window longer than the range (or a bogus length) must not
        // stretch one bucket past it.
        None => {
            let step = nice((span / TARGET_POINTS).max(window_s.min(span)).max(1));
            if span > 86_400 { step.max(3_600) } else { step }
        }
    };
    if points_in(from_s, to_s, step) > MAX_POINTS {
        // One step more than span / MAX_POINTS covers the misaligned first bucket.
        let mut raised = nice(span.div_ceil(MAX_POINTS));
        while points_in(from_s, to_s, raised) > MAX_POINTS {
            raised = nice(raised + 1);
        }
        return raised;
    }
    step
}

/// The first bucket's start: `from_s` rounded down to the step.
fn first_bucket(from_s: u32, step: u32) -> u32 {
    from_s / step * step
}

fn points_in(from_s: u32, to_s: u32, step: u32) -> u32 {
    to_s.saturating_sub(first_bucket(from_s, step))
        .div_ceil(step)
        .max(1)
}

/// `[time, value]` per bucket from the first bucket up to `to_s`, zeros
/// included (a gap is a zero, not a missing point).
pub type Points = Vec<(u32, i64)>;

/// Zero points over [from_s, to_s): one per bucket from the first.
fn zeros(from_s: u32, to_s: u32, step: u32) -> Points {
    let first = first_bucket(from_s, step);
    (0..points_in(from_s, to_s, step))
        .map(|i| (first.saturating_add(step.saturating_mul(i)), 0))
        .collect()
}

/// Adds `value` to the point of the bucket holding `time` (times come on the
/// step's grid from the same range; anything else is ignored, there is none).
fn add(points: &mut Points, step: u32, time: u32, value: i64) {
    let Some(&(first, _)) = points.first() else {
        return;
    };
    if let Some(slot) = time
        .checked_sub(first)
        .map(|d| (d / step) as usize)
        .and_then(|i| points.get_mut(i))
    {
        slot.1 += value;
    }
}

/// Dense points over [from_s, to_s) from sparse (time, value) pairs.
pub fn dense(
    from_s: u32,
    to_s: u32,
    step: u32,
    sparse: impl IntoIterator<Item = (u32, i64)>,
) -> Points {
    let mut points = zeros(from_s, to_s, step);
    for (time, value) in sparse {
        add(&mut points, step, time, value);
    }
    points
}

/// A timeline from the store's buckets.
pub fn timeline(from_s: u32, to_s: u32, step: u32, buckets: &[Bucket]) -> Points {
    dense(
        from_s,
        to_s,
        step,
        buckets.iter().map(|b| (b.time, b.value)),
    )
}

/// One label value's share of a breakdown.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TagSeries {
    pub value: String,
    pub total: i64,
    pub points: Points,
}

/// The values a breakdown does not list, summed.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Other {
    /// How many values are summed here.
    pub values: usize,
    pub total: i64,
    pub points: Points,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Breakdown {
    pub total: i64,
    pub distinct_values: usize,
    /// The `limit` values with the largest totals, largest first (ties by value).
    pub values: Vec<TagSeries>,
    pub other: Other,
}

/// The breakdown of [from_s, to_s) by label value: the `limit` largest
/// values with their points, the rest summed into `other`. Every value's
/// total plus `other.total` is `total`. Points are built for the listed
/// values and `other` only: memory is the rows plus (`limit` + 1) series,
/// however many values the label has.
pub fn breakdown(from_s: u32, to_s: u32, step: u32, rows: &[TagBucket], limit: usize) -> Breakdown {
    let mut totals: HashMap<&str, i64> = HashMap::new();
    for row in rows {
        *totals.entry(row.tag.as_str()).or_default() += row.value;
    }
    let mut ranked: Vec<(&str, i64)> = totals.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    let distinct_values = ranked.len();
    let total = ranked.iter().map(|(_, t)| t).sum();
    let listed = limit.min(ranked.len());
    let index: HashMap<&str, usize> = ranked[..listed]
        .iter()
        .enumerate()
        .map(|(i, (value, _))| (*value, i))
        .collect();
    let mut values: Vec<TagSeries> = ranked[..listed]
        .iter()
        .map(|(value, total)| TagSeries {
            value: value.to_string(),
            total: *total,
            points: zeros(from_s, to_s, step),
        })
        .collect();
    let mut other = Other {
        values: ranked.len() - listed,
        total: ranked[listed..].iter().map(|(_, t)| t).sum(),
        points: zeros(from_s, to_s, step),
    };
    for row in rows {
        let points = match index.get(row.tag.as_str()) {
            Some(&i) => &mut values[i].points,
            None => &mut other.points,
        };
        add(points, step, row.time, row.value);
    }
    Breakdown {
        total,
        distinct_values,
        values,
        other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_steps_are_nice_cover_a_window_and_stay_under_the_point_bound() {
        let hour = 3_600;
        // An hour of 60-s windows: one bucket per window.
        assert_eq!(step(1_000_000, 1_000_000 + hour, None, 60_000), 60);
        // 5-s windows over 15 minutes: 10-s buckets (the smallest nice step).
        assert_eq!(step(1_000_000, 1_000_900, None, 5_000), 10);
        // A day: 360 s per point → 10 min.
        assert_eq!(step(1_000_000, 1_000_000 + 24 * hour, None, 60_000), 600);
        // Longer than a day: whole hours, which rollups answer (1800 otherwise).
        assert_eq!(step(1_000_000, 1_000_000 + 48 * hour, None, 60_000), 3_600);
        assert_eq!(step(1_000_000, 1_000_000 + 168 * hour, None, 60_000), 3_600);
        // Seven days of one-second buckets asked: raised to fit 1,000 points.
        let s = step(1_000_000, 1_000_000 + 7 * 24 * hour, Some(1), 0);
        assert_eq!(s, 900);
        assert!(points_in(1_000_000, 1_000_000 + 7 * 24 * hour, s) <= MAX_POINTS);
        // An asked step is kept when it fits, even if not nice.
        assert_eq!(step(1_000_000, 1_000_000 + hour, Some(7), 0), 7);
        assert_eq!(nice(100_000), 172_800);
        // A window longer than the range: one bucket of the range's (nice) size.
        assert_eq!(step(1_000_000, 1_000_120, None, 2 * 86_400_000), 120);
        assert_eq!(step(1_000_000, 1_000_120, None, i64::MAX), 120);
    }

    #[test]
    fn points_are_dense_epoch_aligned_and_cover_the_range() {
        // [1_000_017, 1_000_200) at 60 s: buckets 999_960 .. 1_000_140.
        let p = dense(1_000_017, 1_000_200, 60, [(1_000_020, 5), (1_000_140, 7)]);
        assert_eq!(
            p,
            vec![(999_960, 0), (1_000_020, 5), (1_000_080, 0), (1_000_140, 7)]
        );
    }

    #[test]
    fn a_breakdown_keeps_the_largest_values_and_sums_the_rest() {
        let row = |tag: &str, time: u32, value: i64| TagBucket {
            tag: tag.into(),
            time,
            value,
            rows: 1,
        };
        let rows = [
            row("a", 0, 5),
            row("b", 0, 3),
            row("b", 10, 4),
            row("c", 10, 2),
            row("d", 0, 2),
            row("", 10, 1),
        ];
        let b = breakdown(0, 20, 10, &rows, 2);
        assert_eq!(b.total, 17);
        assert_eq!(b.distinct_values, 5);
        let names: Vec<&str> = b.values.iter().map(|s| s.value.as_str()).collect();
        assert_eq!(names, ["b", "a"]);
        assert_eq!(b.values[0].points, vec![(0, 3), (10, 4)]);
        assert_eq!(b.other.values, 3);
        assert_eq!(b.other.total, 5, "c 2 + d 2 + (none) 1");
        assert_eq!(b.other.points, vec![(0, 2), (10, 3)]);
    }
}
