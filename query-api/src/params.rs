//! Query parameters → validated selections. Parameters arrive as a string map
//! so every malformed value gets its own clear message.

use std::collections::HashMap;

use javelin_schema::wire::ProfileType;
use serde::Serialize;

use crate::error::ApiError;
use crate::store::Selection;

/// Query limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub default_max_nodes: usize,
    pub max_nodes_limit: usize,
    pub max_range_ms: i64,
    /// Longest an API request may take (the query timeout plus a margin):
    /// `max_execution_time` bounds a live server's work, not a ClickHouse that
    /// accepts the connection and never answers.
    pub request_deadline: std::time::Duration,
    /// Most (label value, time bucket) pairs a breakdown (`/tags`) aggregates.
    pub max_breakdown_pairs: u64,
}

pub type Params = HashMap<String, String>;

/// A non-empty string parameter.
pub fn text<'a>(p: &'a Params, name: &str) -> Option<&'a str> {
    p.get(name).map(String::as_str).filter(|s| !s.is_empty())
}

/// An integer parameter, if present.
pub fn int(p: &Params, name: &str) -> Result<Option<i64>, ApiError> {
    text(p, name)
        .map(|s| {
            s.parse::<i64>().map_err(|_| {
                ApiError::bad_request(format!("`{name}` must be an integer, got {s:?}"))
            })
        })
        .transpose()
}

/// The range of a listing when the request names none: the last hour.
pub const DEFAULT_RANGE_MS: i64 = 3_600_000;

/// A listing's range: what was asked (or defaulted), in ms, and the
/// window-start seconds [from_s, to_s) it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Range {
    /// Milliseconds since the epoch, as used (echoed in the answer).
    pub from: i64,
    pub to: i64,
    #[serde(skip)]
    pub from_s: u32,
    #[serde(skip)]
    pub to_s: u32,
}

/// `from` / `to` (ms since the epoch) of a listing (services, profile types,
/// labels, health, targets), both optional: a missing `to` is now, a missing
/// `from` is `to` minus [`DEFAULT_RANGE_MS`] (the last hour when both are
/// missing). Malformed or empty ranges are still refused.
pub fn range(limits: &Limits, p: &Params) -> Result<Range, ApiError> {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    range_at(limits, p, now_ms)
}

/// [`range`] with the clock given.
pub fn range_at(limits: &Limits, p: &Params, now_ms: i64) -> Result<Range, ApiError> {
    let to = int(p, "to")?.unwrap_or(now_ms);
    let from = match int(p, "from")? {
        Some(from) => from,
        None => to.saturating_sub(DEFAULT_RANGE_MS).max(0),
    };
    let (from_s, to_s) = range_seconds(limits, from, to)?;
    Ok(Range {
        from,
        to,
        from_s,
        to_s,
    })
}

pub fn range_seconds(limits: &Limits, from: i64, to: i64) -> Result<(u32, u32), ApiError> {
    if from < 0 || to <= from {
        return Err(ApiError::bad_request(format!(
            "empty or negative range: from={from} to={to}"
        )));
    }
    if to - from > limits.max_range_ms {
        return Err(ApiError::bad_request(format!(
            "range of {} ms exceeds the limit of {} ms",
            to - from,
            limits.max_range_ms
        )));
    }
    let secs = |ms: i64| {
        u32::try_from(ms / 1000)
            .map_err(|_| ApiError::bad_request(format!("time {ms} out of range")))
    };
    // Windows are stored by their start second: round the end up so a window starting inside the range counts.
    Ok((secs(from)?, secs(to.saturating_add(999))?))
}

pub fn service(p: &Params) -> Result<String, ApiError> {
    text(p, "service")
        .map(str::to_string)
        .ok_or_else(|| ApiError::bad_request("`service` is required"))
}

pub fn profile_type(p: &Params) -> Result<ProfileType, ApiError> {
    let name = text(p, "type").unwrap_or("cpu");
    ProfileType::from_name(name)
        .filter(|t| *t != ProfileType::Unspecified)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "unknown profile type {name:?}; use cpu, alloc, lock or park"
            ))
        })
}

/// The selection named by service, type, `{prefix}from`/`{prefix}to` and the
/// `{prefix}namespace|pod|container|node|version` filters. With a prefix (the right side of
/// a diff), a missing value falls back to the unprefixed one.
pub fn selection(
    limits: &Limits,
    p: &Params,
    prefix: &str,
) -> Result<(Selection, i64, i64), ApiError> {
    // The prefixed value, else (on the right side of a diff) the left one.
    let value = |name: &str| text(p, &format!("{prefix}{name}")).or_else(|| text(p, name));
    let bound = |name: &str| -> Result<i64, ApiError> {
        let key = if text(p, &format!("{prefix}{name}")).is_some() {
            format!("{prefix}{name}")
        } else {
            name.to_string()
        };
        int(p, &key)?.ok_or_else(|| {
            ApiError::bad_request(format!("`{key}` (ms since the epoch) is required"))
        })
    };
    let (from, to) = (bound("from")?, bound("to")?);
    let (from_s, to_s) = range_seconds(limits, from, to)?;
    let label = |name: &str| value(name).unwrap_or_default().to_string();
    Ok((
        Selection {
            service: service(p)?,
            profile_type: profile_type(p)?.name().to_string(),
            from_s,
            to_s,
            namespace: label("namespace"),
            pod: label("pod"),
            container: label("container"),
            node: label("node"),
            version: label("version"),
        },
        from,
        to,
    ))
}

/// `max_nodes`, within 2..=the configured limit.
pub fn max_nodes(limits: &Limits, p: &Params) -> Result<usize, ApiError> {
    let n = int(p, "max_nodes")?.unwrap_or(limits.default_max_nodes as i64);
    if n < 2 || n as u64 > limits.max_nodes_limit as u64 {
        return Err(ApiError::bad_request(format!(
            "max_nodes must be in 2..={}",
            limits.max_nodes_limit
        )));
    }
    Ok(n as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        default_max_nodes: 8192,
        max_nodes_limit: 1 << 20,
        max_range_ms: 7 * 86_400_000,
        request_deadline: std::time::Duration::from_secs(35),
        max_breakdown_pairs: 200_000,
    };

    fn params(pairs: &[(&str, &str)]) -> Params {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn ranges_are_validated_and_rounded_to_window_seconds() {
        assert_eq!(
            range_seconds(&LIMITS, 1_000_500, 2_000_001).ok(),
            Some((1000, 2001))
        );
        assert!(range_seconds(&LIMITS, 5, 5).is_err());
        assert!(range_seconds(&LIMITS, -5, 5).is_err());
        assert!(range_seconds(&LIMITS, 0, 8 * 86_400_000).is_err());
        let err = range(&LIMITS, &params(&[("from", "x"), ("to", "5")])).expect_err("bad");
        assert!(
            err.message.contains("`from` must be an integer"),
            "{}",
            err.message
        );
    }

    #[test]
    fn a_listing_without_a_range_reads_the_last_hour() {
        let now = 1_700_000_000_123;
        let r = range_at(&LIMITS, &params(&[]), now).expect("default");
        assert_eq!((r.from, r.to), (now - DEFAULT_RANGE_MS, now));
        assert_eq!((r.from_s, r.to_s), (1_699_996_400, 1_700_000_001));
        let r = range_at(&LIMITS, &params(&[("to", "7200000")]), now).expect("to only");
        assert_eq!((r.from, r.to), (3_600_000, 7_200_000));
        let from = (now - 10_000).to_string();
        let r = range_at(&LIMITS, &params(&[("from", &from)]), now).expect("from only");
        assert_eq!(
            (r.from, r.to),
            (now - 10_000, now),
            "from alone reads up to now"
        );
        assert!(
            range_at(&LIMITS, &params(&[("from", "5000")]), now).is_err(),
            "over the limit"
        );
        assert!(range_at(&LIMITS, &params(&[("to", "0")]), now).is_err());
        assert!(range_at(&LIMITS, &params(&[("from", "abc")]), now).is_err());
        assert!(range_at(&LIMITS, &params(&[("from", &(now + 1).to_string())]), now).is_err());
    }

    #[test]
    fn the_right_side_of_a_diff_falls_back_to_the_left() {
        let p = params(&[
            ("service", "s"),
            ("type", "alloc"),
            ("from", "1000"),
            ("to", "5000"),
            ("pod", "a"),
            ("right_pod", "b"),
        ]);
        let (left, _, _) = selection(&LIMITS, &p, "").expect("left");
        let (right, _, _) = selection(&LIMITS, &p, "right_").expect("right");
        assert_eq!((left.pod.as_str(), right.pod.as_str()), ("a", "b"));
        assert_eq!((right.from_s, right.to_s), (left.from_s, left.to_s));
        assert_eq!(right.profile_type, "alloc");
        assert!(profile_type(&params(&[("type", "bogus")])).is_err());
    }
}
