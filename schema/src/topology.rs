//! Where Javelin's tables live: one ClickHouse server, or a cluster of them.
//!
//! On a cluster every table is a pair: `{table}_local`, a Replicated*MergeTree
//! on each node holding that node's shard, and `{table}`, a Distributed table
//! over the local ones. Writers and readers use the plain names on both
//! layouts; what differs is how the DDL renders (see [`crate::migrations`]) and
//! a few per-query settings (here). The sharding key keeps every copy of a
//! window part on the shard of its target, so deduplication (FINAL, and the
//! smallest-insert-id rule of `stored_parts`) never has to look across shards.
//! See `docs/clickhouse-schema.md`, "Single node and cluster".

use crate::migrations::{MigrationError, ServerFeatures};

/// One server, or the cluster named in the servers' `remote_servers`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Topology {
    #[default]
    SingleNode,
    Cluster(String),
}

/// The suffix of a cluster's per-node tables.
pub const LOCAL_SUFFIX: &str = "_local";

impl Topology {
    /// From the `--clickhouse-cluster` flag: empty means one server. The name
    /// is spliced into DDL, so only plain identifiers pass.
    pub fn from_flag(cluster: Option<&str>) -> Result<Topology, MigrationError> {
        match cluster.map(str::trim) {
            None | Some("") => Ok(Topology::SingleNode),
            Some(name) if is_identifier(name) => Ok(Topology::Cluster(name.to_string())),
            Some(name) => Err(MigrationError::ClusterName(name.to_string())),
        }
    }

    /// The cluster's name, if any.
    pub fn cluster(&self) -> Option<&str> {
        match self {
            Topology::SingleNode => None,
            Topology::Cluster(name) => Some(name),
        }
    }

    /// Settings for every client that writes rows.
    ///
    /// - `async_insert=0` where the server has the setting (21.11+; chdb and
    ///   recent releases default it on): an acknowledged INSERT must mean the
    ///   rows are in a data part, because the copy is named in `stored_parts`
    ///   right after, and a buffered insert would also be deduplicated and
    ///   split by rules of its own. 18.16 refuses unknown settings, so the
    ///   setting is only sent where it exists.
    /// - `insert_distributed_sync=1` on a cluster: a Distributed table
    ///   otherwise acknowledges an INSERT once it is queued on the receiving
    ///   node, before it reaches the remote shard; "stored" must mean stored
    ///   on the shard before an offset is committed. (26.x knows the setting as
    ///   an alias of `distributed_foreground_insert`.)
    pub fn write_settings(&self, features: ServerFeatures) -> Vec<(&'static str, &'static str)> {
        let mut settings = Vec::new();
        if features.async_insert {
            settings.push(("async_insert", "0"));
        }
        if self.cluster().is_some() {
            settings.push(("insert_distributed_sync", "1"));
        }
        settings
    }

    /// Settings for every client that reads: on a cluster, a subquery over a
    /// Distributed table inside a query over one (`IN (SELECT … FROM
    /// stored_parts)`) runs against each shard's local table. That is exact
    /// because the sharding key co-locates a window part's samples with its
    /// `stored_parts` rows, and it keeps the work on the shards.
    pub fn read_settings(&self) -> Vec<(&'static str, &'static str)> {
        match self {
            Topology::SingleNode => Vec::new(),
            Topology::Cluster(_) => vec![("distributed_product_mode", "local")],
        }
    }

    /// Applies [`Topology::write_settings`] to `client`.
    pub fn writer(
        &self,
        client: clickhouse::Client,
        features: ServerFeatures,
    ) -> clickhouse::Client {
        self.write_settings(features)
            .into_iter()
            .fold(client, |c, (name, value)| c.with_setting(name, value))
    }

    /// Applies [`Topology::read_settings`] to `client`.
    pub fn reader(&self, client: clickhouse::Client) -> clickhouse::Client {
        self.read_settings()
            .into_iter()
            .fold(client, |c, (name, value)| c.with_setting(name, value))
    }

    /// Refuses a database laid out for the other topology (or another
    /// cluster), judged by `samples`: a Distributed table over a cluster, or a
    /// table of its own. A writer without `--clickhouse-cluster` on a cluster
    /// database would insert asynchronously (rows queued on the receiving
    /// node, offsets committed before they reach their shard) and its
    /// retention would find no parts; a reader would fail every query. A
    /// database without `samples` (not migrated yet) passes. `db` must have
    /// the database selected.
    pub async fn verify(
        &self,
        db: &clickhouse::Client,
        database: &str,
    ) -> Result<(), MigrationError> {
        #[derive(Debug, serde::Deserialize, clickhouse::Row)]
        struct Engine {
            engine: String,
            engine_full: String,
        }
        let found = db
            .query("SELECT engine, engine_full FROM system.tables WHERE database = currentDatabase() AND name = ?")
            .bind(crate::rows::table::SAMPLES)
            .fetch_all::<Engine>()
            .await?;
        let Some(found) = found.first() else {
            return Ok(());
        };
        let cluster_of_db = (found.engine == "Distributed").then(|| {
            found
                .engine_full
                .trim_start_matches("Distributed(")
                .split(',')
                .next()
                .unwrap_or_default()
                .trim()
                .trim_matches(|c| c == '\'' || c == '`' || c == '"')
                .to_string()
        });
        let mismatch = |found: String, flag: String, hint: String| {
            Err(MigrationError::LayoutMismatch {
                database: database.to_string(),
                found,
                flag,
                hint,
            })
        };
        match (cluster_of_db, self.cluster()) {
            (None, None) => Ok(()),
            (Some(a), Some(b)) if a == b => Ok(()),
            (Some(a), None) => mismatch(
                format!("holds the tables of cluster {a} (Distributed)"),
                "--clickhouse-cluster is empty".into(),
                format!("set --clickhouse-cluster {a} (JAVELIN_CLICKHOUSE_CLUSTER={a})"),
            ),
            (Some(a), Some(b)) => mismatch(
                format!("holds the tables of cluster {a} (Distributed)"),
                format!("--clickhouse-cluster is {b}"),
                format!("set --clickhouse-cluster {a}"),
            ),
            (None, Some(b)) => mismatch(
                "holds single-server tables".into(),
                format!("--clickhouse-cluster is {b}"),
                "leave --clickhouse-cluster empty, or migrate a new database on the cluster (docs/clickhouse-schema.md, moving from one server to a cluster)".into(),
            ),
        }
    }

    /// The table holding a node's rows of `table`: itself on one server.
    pub fn local_table(&self, table: &str) -> String {
        match self {
            Topology::SingleNode => table.to_string(),
            Topology::Cluster(_) => format!("{table}{LOCAL_SUFFIX}"),
        }
    }
}

/// The Distributed table's sharding key for `table` (and for its `_next`
/// rebuild). Everything about one target goes to one shard: every copy of a
/// window part (retries, redeliveries, replays, the parts migration 3 copied),
/// its `stored_parts` rows and its ledger rows, and its status rows; so FINAL
/// and the query's per-part choice of copy are shard-local and exact. A stack
/// row is keyed by its own id (ReplacingMergeTree copies meet on one shard).
pub fn shard_key(table: &str) -> Option<&'static str> {
    use crate::rows::table;
    let base = table.strip_suffix("_next").unwrap_or(table);
    match base {
        table::SAMPLES
        | table::STORED_PARTS
        | table::INGEST_LEDGER
        | table::TARGET_STATUS
        | "insert_attempts" => Some("cityHash64(service, target_id)"),
        table::STACKS => Some("cityHash64(service, stack_id)"),
        // An hour's rows and its builds on one shard (readers name the builds
        // they read as literals, so correctness does not depend on it).
        table::SAMPLES_ROLLUP | table::ROLLUP_BUILDS => {
            Some("cityHash64(service, profile_type, bucket_start)")
        }
        _ => None,
    }
}

pub(crate) fn is_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn features(version: &str) -> ServerFeatures {
        ServerFeatures::from_version(version).expect("parses")
    }

    #[test]
    fn settings_follow_the_server_and_the_layout() {
        let single = Topology::SingleNode;
        let cluster = Topology::Cluster("javelin".into());
        assert!(single.write_settings(features("18.16.1")).is_empty());
        assert_eq!(
            cluster.write_settings(features("18.16.1")),
            vec![("insert_distributed_sync", "1")]
        );
        assert_eq!(
            single.write_settings(features("26.9.2.1")),
            vec![("async_insert", "0")]
        );
        assert_eq!(
            cluster.write_settings(features("26.9.2.1")),
            vec![("async_insert", "0"), ("insert_distributed_sync", "1")]
        );
        assert!(single.read_settings().is_empty());
        assert_eq!(
            cluster.read_settings(),
            vec![("distributed_product_mode", "local")]
        );
    }

    #[test]
    fn cluster_names_are_plain_identifiers() {
        assert_eq!(Topology::from_flag(None).ok(), Some(Topology::SingleNode));
        assert_eq!(
            Topology::from_flag(Some("")).ok(),
            Some(Topology::SingleNode)
        );
        assert_eq!(
            Topology::from_flag(Some("javelin")).ok(),
            Some(Topology::Cluster("javelin".into()))
        );
        for bad in ["a b", "x;DROP", "1c", "a'b"] {
            assert!(Topology::from_flag(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_target_table_shards_by_target() {
        for table in [
            "samples",
            "samples_next",
            "stored_parts",
            "ingest_ledger",
            "target_status",
        ] {
            assert_eq!(
                shard_key(table),
                Some("cityHash64(service, target_id)"),
                "{table}"
            );
        }
        assert_eq!(shard_key("stacks"), Some("cityHash64(service, stack_id)"));
        assert_eq!(shard_key("schema_migrations"), None);
    }
}
