//! A ClickHouse cluster of a test's own: `dev/stack cluster-up` in a directory
//! of its own on free ports, i.e. a private ZooKeeper and two ClickHouse nodes
//! forming cluster [`CLUSTER`] (2 shards × 1 replica). Nodes can be killed and
//! started again; dropping the cluster stops all three servers and removes the
//! directory. Several clusters may run at once (distinct directories and ports).

use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

use crate::servers::{free_port, on_fresh_ports, repo_root, rss_of_pidfile};

/// The cluster's name in the nodes' `remote_servers` (for `ON CLUSTER` and
/// `--clickhouse-cluster`).
pub const CLUSTER: &str = "javelin";

/// How many nodes (shards) the cluster has.
pub const NODES: usize = 2;

/// A private cluster; stopped and removed on drop.
#[derive(Debug)]
pub struct PrivateCluster {
    pub dir: PathBuf,
    pub zookeeper: u16,
    pub http: [u16; NODES],
    pub tcp: [u16; NODES],
    pub interserver: [u16; NODES],
    repo: PathBuf,
}

impl PrivateCluster {
    /// Starts the cluster in `<temp dir>/<name>` and returns once both nodes
    /// answer, see the cluster and reach ZooKeeper.
    pub fn start(name: &str) -> anyhow::Result<PrivateCluster> {
        // A failed attempt is torn down (drop) before fresh ports are tried.
        on_fresh_ports(|| {
            let cluster = PrivateCluster {
                dir: std::env::temp_dir().join(name),
                zookeeper: free_port()?,
                http: [free_port()?, free_port()?],
                tcp: [free_port()?, free_port()?],
                interserver: [free_port()?, free_port()?],
                repo: repo_root()?,
            };
            cluster.stack(&["cluster-up"])?;
            Ok(cluster)
        })
    }

    /// Runs `dev/stack <args>` for this cluster; on failure the error carries
    /// the end of its output (the server's own reason when one exited).
    pub fn stack(&self, args: &[&str]) -> anyhow::Result<()> {
        let ports = |p: &[u16; NODES]| format!("{},{}", p[0], p[1]);
        let out = Command::new(self.repo.join("dev/stack"))
            .args(args)
            .env("JAVELIN_STACK_DIR", &self.dir)
            .env("JAVELIN_ZOOKEEPER_PORT", self.zookeeper.to_string())
            .env("JAVELIN_CLUSTER_HTTP_PORTS", ports(&self.http))
            .env("JAVELIN_CLUSTER_TCP_PORTS", ports(&self.tcp))
            .env(
                "JAVELIN_CLUSTER_INTERSERVER_PORTS",
                ports(&self.interserver),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .context("running dev/stack")?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let tail: Vec<&str> = stderr.lines().rev().take(12).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "dev/stack {} failed for {}:\n{}",
                args.join(" "),
                self.dir.display(),
                tail.join("\n")
            );
        }
        Ok(())
    }

    /// Every node's HTTP URL, node 1 first.
    pub fn urls(&self) -> Vec<String> {
        self.http
            .iter()
            .map(|p| format!("http://127.0.0.1:{p}"))
            .collect()
    }

    /// Node 1's HTTP URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http[0])
    }

    /// SIGKILLs node `node` (1 or 2, as in `dev/stack cluster-kill-node`; its
    /// URL is `urls()[node - 1]`) and returns once the process is gone.
    pub fn kill_node(&self, node: usize) -> anyhow::Result<()> {
        self.stack(&["cluster-kill-node", &node_arg(node)?])
    }

    /// Starts node `node` (1 or 2) again on its data; returns once it answers,
    /// sees the cluster and reaches ZooKeeper. Its replicated tables take
    /// inserts from then on; after a kill they become leader (and merge) only
    /// once the old ZooKeeper session expired (up to ~20 s).
    pub fn start_node(&self, node: usize) -> anyhow::Result<()> {
        self.stack(&["cluster-start-node", &node_arg(node)?])
    }

    /// Node `node`'s (1 or 2) resident memory in bytes (from /proc), if it runs.
    pub fn rss_bytes(&self, node: usize) -> Option<u64> {
        rss_of_pidfile(&self.dir.join(format!("cluster/node{node}.pid")))
    }
}

fn node_arg(node: usize) -> anyhow::Result<String> {
    if !(1..=NODES).contains(&node) {
        bail!("the cluster's nodes are 1..={NODES}, not {node}");
    }
    Ok(node.to_string())
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let _ = self.stack(&["cluster-down"]);
        if std::env::var_os("JAVELIN_KEEP_SCENARIO_DIRS").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `sql` on a node; the server's error text when it fails.
    async fn query(url: &str, sql: &str, settings: &str) -> Result<String, String> {
        let resp = reqwest::Client::new()
            .post(format!("{url}/?{settings}"))
            .body(sql.to_string())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let ok = resp.status().is_success();
        let body = resp.text().await.map_err(|e| e.to_string())?;
        if ok {
            Ok(body.trim().to_string())
        } else {
            Err(body)
        }
    }

    fn pids(cluster: &PrivateCluster) -> Vec<String> {
        ["zookeeper", "node1", "node2"]
            .iter()
            .map(|s| {
                std::fs::read_to_string(cluster.dir.join(format!("cluster/{s}.pid")))
                    .expect("a pid file per server")
                    .trim()
                    .to_string()
            })
            .collect()
    }

    fn runs(pid: &str) -> bool {
        // A zombie (state Z) has exited already.
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|r| !r.trim_start().starts_with('Z'))
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_private_clusters_run_at_once_and_survive_a_node_kill() {
        let name = javelin_schema::testkit::unique_name("cluster_test");
        let (a, b) = std::thread::scope(|s| {
            let a = s.spawn(|| PrivateCluster::start(&format!("{name}_a")));
            let b = s.spawn(|| PrivateCluster::start(&format!("{name}_b")));
            (a.join().expect("thread"), b.join().expect("thread"))
        });
        let (a, b) = (a.expect("cluster a starts"), b.expect("cluster b starts"));
        assert_ne!(a.zookeeper, b.zookeeper, "a ZooKeeper per cluster");
        for url in a.urls().iter().chain(b.urls().iter()) {
            let n = query(
                url,
                &format!("SELECT count() FROM system.clusters WHERE cluster = '{CLUSTER}'"),
                "",
            )
            .await
            .expect("system.clusters");
            assert_eq!(n, "2", "{url} sees both shards");
        }

        let ddl = [
            format!("CREATE DATABASE d ON CLUSTER {CLUSTER}"),
            format!(
                "CREATE TABLE d.t_local ON CLUSTER {CLUSTER} (k String, v UInt64) \
                 ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{{shard}}/d/t', '{{replica}}') ORDER BY k"
            ),
            format!(
                "CREATE TABLE d.t ON CLUSTER {CLUSTER} AS d.t_local \
                 ENGINE = Distributed({CLUSTER}, d, t_local, cityHash64(k))"
            ),
        ];
        for sql in &ddl {
            query(&a.url(), sql, "").await.expect("ON CLUSTER DDL");
        }
        let insert = |prefix: &str| {
            format!(
                "INSERT INTO d.t SELECT concat('{prefix}', toString(number)), number FROM numbers(100)"
            )
        };
        let sync = "insert_distributed_sync=1";
        query(&a.url(), &insert("a"), sync).await.expect("insert");
        let count = "SELECT count() FROM d.t";
        assert_eq!(query(&a.urls()[1], count, "").await.as_deref(), Ok("100"));

        a.kill_node(2).expect("kill node 2");
        let err = query(&a.url(), &insert("b"), sync)
            .await
            .expect_err("a synchronous insert fails while a shard is down");
        assert!(err.starts_with("Code: 279"), "{err}");
        let err = query(&a.url(), count, "")
            .await
            .expect_err("half of the data is gone");
        assert!(err.starts_with("Code: 279"), "{err}");
        assert_eq!(
            query(&b.url(), "SELECT count() FROM system.clusters", "")
                .await
                .as_deref()
                .map(|s| s != "0"),
            Ok(true),
            "the other cluster is untouched"
        );

        a.start_node(2).expect("start node 2");
        query(&a.url(), &insert("b"), sync)
            .await
            .expect("insert after the restart");
        assert_eq!(query(&a.urls()[1], count, "").await.as_deref(), Ok("200"));

        let all: Vec<String> = pids(&a).into_iter().chain(pids(&b)).collect();
        let dirs = [a.dir.clone(), b.dir.clone()];
        drop(a);
        drop(b);
        for pid in &all {
            assert!(!runs(pid), "pid {pid} still runs after drop");
        }
        if std::env::var_os("JAVELIN_KEEP_SCENARIO_DIRS").is_none() {
            assert!(
                dirs.iter().all(|d| !d.exists()),
                "the directories are removed"
            );
        }
    }
}
