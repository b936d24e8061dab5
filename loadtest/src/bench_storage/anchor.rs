//! The anchor: Coroot's profiling tables, `profiling_samples` and
//! `profiling_stacks`, as Coroot's collector creates them (coroot/coroot
//! `ch/client.go`, the `tables` list, read at commit
//! 17e1ed858943bf0eed890fea80cd1d7db585c84e; Coroot substitutes `@merge_tree`
//! / `@replacing_merge_tree` with `MergeTree()` / `ReplacingMergeTree()` on a
//! single node and the TTL with its profiles retention, 7 days here as for
//! Javelin), filled with `INSERT … SELECT` from the run's Javelin tables: the
//! same rows. Labels are the label columns Javelin has (cluster, namespace,
//! pod, container, node); `StackHash` is `stack_id`; `Stack` is `frames`.
//!
//! Rows enter `profiling_samples` by window and target, and within a
//! pod-window in the [`FillOrder`] chosen: its sorting key ends at the
//! window's end, so within a window rows keep the order they arrive in, and a
//! collector storing each profile as it arrives stores its samples in the
//! profile's own order (pprof: no particular one; [`FillOrder::Profile`]).
//!
//! ClickHouse 18.16 has no codecs, `Map`, `DateTime64` or TTL, and
//! `LowCardinality` only behind `allow_experimental_low_cardinality_type`:
//! there the closest physical equivalent is created ([`Dialect::Legacy`]):
//! `Int64` nanoseconds, `Labels` as `Nested(key, value)` (two arrays sharing
//! offsets), the server's compression method (as for Javelin's tables), and
//! the same sorting and partition keys.

/// The order each pod-window's samples enter the anchor in. Its sorting key
/// ties every row of a window, and merges keep tied rows in the order they
/// arrived, so this decides how well its `StackHash` and `Value` compress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FillOrder {
    /// In an order unrelated to the stack hash, as a collector storing each
    /// profile in the profile's own (pprof) order writes them.
    Profile,
    /// Sorted by stack hash: the anchor's best case (one sorted run of hashes
    /// per pod-window, matched by the compressor against the next).
    Sorted,
}

impl FillOrder {
    fn order_by(self) -> &'static str {
        match self {
            FillOrder::Profile => {
                "ORDER BY window_start, target_id, cityHash64(stack_id, target_id, window_start)"
            }
            FillOrder::Sorted => "ORDER BY window_start, target_id, stack_id",
        }
    }
}

/// Where the DDL comes from, for the report.
pub const SOURCE: &str = "Coroot's `profiling_samples` and `profiling_stacks` from coroot/coroot \
     `ch/client.go` (commit 17e1ed85), filled with the Javelin tables' rows";

/// How the anchor's tables are written on a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// Coroot's DDL as it is (ClickHouse 20.1+; measured on 26.9).
    Current,
    /// ClickHouse 18.16's closest equivalent; `LowCardinality(String)` where
    /// Coroot has it when `low_cardinality`, else `String`.
    Legacy { low_cardinality: bool },
}

impl Dialect {
    /// The setting the statements need on the server, if any.
    pub fn setting(self) -> Option<(&'static str, &'static str)> {
        match self {
            Dialect::Legacy {
                low_cardinality: true,
            } => Some(("allow_experimental_low_cardinality_type", "1")),
            _ => None,
        }
    }

    /// The `CREATE TABLE` statements, stacks first.
    pub fn create(self, db: &str) -> [String; 2] {
        match self {
            Dialect::Current => [
                format!(
                    "CREATE TABLE {db}.profiling_stacks (
    ServiceName LowCardinality(String) CODEC(ZSTD(1)),
    Hash UInt64 CODEC(ZSTD(1)),
    LastSeen DateTime64(9) CODEC(Delta, ZSTD(1)),
    Stack Array(String) CODEC(ZSTD(1))
) ENGINE ReplacingMergeTree()
PRIMARY KEY (ServiceName, Hash)
TTL toDateTime(LastSeen) + toIntervalDay(7)
PARTITION BY toDate(LastSeen)
ORDER BY (ServiceName, Hash)"
                ),
                format!(
                    "CREATE TABLE {db}.profiling_samples (
    ServiceName LowCardinality(String) CODEC(ZSTD(1)),
    Type LowCardinality(String) CODEC(ZSTD(1)),
    Start DateTime64(9) CODEC(Delta, ZSTD(1)),
    End DateTime64(9) CODEC(Delta, ZSTD(1)),
    Labels Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    StackHash UInt64 CODEC(ZSTD(1)),
    Value Int64 CODEC(ZSTD(1))
) ENGINE MergeTree()
TTL toDateTime(Start) + toIntervalDay(7)
PARTITION BY toDate(Start)
ORDER BY (ServiceName, Type, toUnixTimestamp(Start), toUnixTimestamp(End))"
                ),
            ],
            Dialect::Legacy { low_cardinality } => {
                let lc = if low_cardinality {
                    "LowCardinality(String)"
                } else {
                    "String"
                };
                [
                    format!(
                        "CREATE TABLE {db}.profiling_stacks (
    ServiceName {lc}, Hash UInt64, LastSeen Int64, Stack Array(String)
) ENGINE = ReplacingMergeTree()
PARTITION BY toDate(toDateTime(intDiv(LastSeen, 1000000000)))
ORDER BY (ServiceName, Hash)"
                    ),
                    format!(
                        "CREATE TABLE {db}.profiling_samples (
    ServiceName {lc}, Type {lc}, Start Int64, End Int64,
    Labels Nested(key {lc}, value String),
    StackHash UInt64, Value Int64
) ENGINE = MergeTree()
PARTITION BY toDate(toDateTime(intDiv(Start, 1000000000)))
ORDER BY (ServiceName, Type, intDiv(Start, 1000000000), intDiv(End, 1000000000))"
                    ),
                ]
            }
        }
    }

    /// The `INSERT … SELECT` statements from the Javelin tables, stacks first.
    pub fn fill(self, db: &str, window_secs: i64, order: FillOrder) -> [String; 2] {
        let labels = ["cluster", "namespace", "pod", "container", "node"];
        let values: Vec<String> = labels
            .iter()
            .map(|l| format!("CAST({l} AS String)"))
            .collect();
        let order = order.order_by();
        match self {
            Dialect::Current => {
                let map: Vec<String> = labels
                    .iter()
                    .zip(&values)
                    .map(|(k, v)| format!("'{k}', {v}"))
                    .collect();
                [
                    format!(
                        "INSERT INTO {db}.profiling_stacks (ServiceName, Hash, LastSeen, Stack) \
                         SELECT service, stack_id, toDateTime64(last_seen, 9), frames FROM {db}.stacks FINAL"
                    ),
                    format!(
                        "INSERT INTO {db}.profiling_samples (ServiceName, Type, Start, End, Labels, StackHash, Value) \
                         SELECT service, profile_type, toDateTime64(window_start, 9), \
                         toDateTime64(window_start + {window_secs}, 9), map({}), stack_id, value \
                         FROM {db}.samples {order}",
                        map.join(", ")
                    ),
                ]
            }
            Dialect::Legacy { .. } => {
                let keys: Vec<String> = labels.iter().map(|k| format!("'{k}'")).collect();
                let ns = "toInt64(toUInt32(window_start))";
                [
                    format!(
                        "INSERT INTO {db}.profiling_stacks (ServiceName, Hash, LastSeen, Stack) \
                         SELECT service, stack_id, toInt64(toUInt32(last_seen)) * 1000000000, frames \
                         FROM {db}.stacks FINAL"
                    ),
                    format!(
                        "INSERT INTO {db}.profiling_samples \
                         (ServiceName, Type, Start, End, `Labels.key`, `Labels.value`, StackHash, Value) \
                         SELECT service, profile_type, {ns} * 1000000000, ({ns} + {window_secs}) * 1000000000, \
                         [{}], [{}], stack_id, value FROM {db}.samples {order}",
                        keys.join(", "),
                        values.join(", ")
                    ),
                ]
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_dialect_is_coroots_ddl() {
        let [stacks, samples] = Dialect::Current.create("db");
        assert!(stacks.contains("LastSeen DateTime64(9) CODEC(Delta, ZSTD(1))"));
        assert!(samples.contains("Labels Map(LowCardinality(String), String) CODEC(ZSTD(1))"));
        assert!(samples.contains(
            "ORDER BY (ServiceName, Type, toUnixTimestamp(Start), toUnixTimestamp(End))"
        ));
        let [_, fill] = Dialect::Current.fill("db", 60, FillOrder::Profile);
        assert!(fill.contains("map('cluster', CAST(cluster AS String), 'namespace'"));
        assert!(fill.contains("toDateTime64(window_start + 60, 9)"));
    }

    #[test]
    fn legacy_dialect_avoids_what_18_16_lacks() {
        for lc in [true, false] {
            let d = Dialect::Legacy {
                low_cardinality: lc,
            };
            let ddl = d.create("db").join("\n");
            for absent in ["CODEC", "Map(", "DateTime64", "TTL"] {
                assert!(!ddl.contains(absent), "{absent} in {ddl}");
            }
            assert_eq!(ddl.contains("LowCardinality"), lc);
            assert_eq!(d.setting().is_some(), lc);
            let fill = d.fill("db", 60, FillOrder::Sorted).join("\n");
            assert!(fill.contains("`Labels.key`, `Labels.value`"));
            assert!(fill.contains("(toInt64(toUInt32(window_start)) + 60) * 1000000000"));
        }
    }
}
