//! The short modes of the load scenarios, as the test suite runs them (every
//! scenario but `high-volume`, which is a documented command): each
//! drives the real pipeline (publisher → tansu → javelin-consumer → a ClickHouse
//! of its own, or a two-shard ClickHouse cluster with ZooKeeper) and must end
//! with a passing reconciliation — 0 lost, 0 double-counted, every drop
//! accounted for in the ledger.

use std::path::PathBuf;
use std::process::Command;

use javelin_schema::testkit::kafka_brokers;
use serde_json::Value;

/// Runs `javelin-loadtest scenario <name> --short` and returns its JSON report.
fn scenario(name: &str, extra: &[&str]) -> Value {
    let reports = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/loadtest-reports")
        .join(format!("{name}-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_javelin-loadtest"))
        .args(["scenario", name, "--short", "--brokers", &kafka_brokers()])
        .arg("--report-dir")
        .arg(&reports)
        .args(extra)
        .output()
        .expect("javelin-loadtest runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let report = stdout
        .lines()
        .find_map(|l| l.strip_prefix("report: "))
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("{name}: no report line"));
    let json: Value =
        serde_json::from_slice(&std::fs::read(&report).expect("report file")).expect("json");
    assert!(
        out.status.success() && json["passed"] == true,
        "{name} failed: {}",
        json["failures"]
    );
    assert_eq!(json["lost_cells"], 0);
    assert_eq!(json["double_counted_cells"], 0);
    assert!(json["produced_rows"].as_u64() > Some(0));
    assert!(
        reports
            .join(format!("{}.md", json["run"].as_str().unwrap_or_default()))
            .exists(),
        "markdown summary written"
    );
    json
}

#[test]
fn steady_short() {
    let r = scenario("steady", &[]);
    assert_eq!(r["consumer_starts"], 1);
    assert!(r["rows_per_second"].as_f64() > Some(0.0));
}

#[test]
fn clickhouse_outage_short() {
    let r = scenario("clickhouse-outage", &[]);
    assert_eq!(r["clickhouse_restarts_planned"], 1, "{r}");
    assert_eq!(r["clickhouse_restarts_unplanned"], 0);
    assert!(
        r["max_consumer_lag"].as_i64() > Some(0),
        "messages piled up while ClickHouse was down: {r}"
    );
}

#[test]
fn consumer_crash_short() {
    let r = scenario("consumer-crash", &[]);
    assert!(r["consumer_starts"].as_u64() >= Some(3), "{r}");
}

#[test]
fn broker_restart_short() {
    let r = scenario("broker-restart", &[]);
    assert!(
        r["delivery_retries"].as_u64() > Some(0),
        "the broker was down and the agents' spool carried the gap: {r}"
    );
    assert!(
        r["broker_disk_bytes"].as_u64() > Some(0),
        "durable storage: {r}"
    );
    assert_eq!(
        r["publish_failures"], 0,
        "nothing dropped at the agent: {r}"
    );
}

#[test]
fn cluster_node_kill_short() {
    let r = scenario("cluster-node-kill", &[]);
    assert_eq!(r["clickhouse_restarts_planned"], 1, "{r}");
    assert!(
        r["max_consumer_lag"].as_i64() > Some(0),
        "messages piled up while a shard was down: {r}"
    );
    let shards = r["rows_per_shard"].as_array().expect("rows per shard");
    assert_eq!(shards.len(), 2, "{r}");
    assert!(
        shards.iter().all(|n| n.as_u64() > Some(0)),
        "both shards hold rows: {r}"
    );
    assert_eq!(
        r["query_api_mismatches"], 0,
        "the UI's totals equal what was produced: {r}"
    );
}

#[test]
fn poison_short() {
    let r = scenario("poison", &["--poison-fraction", "0.2"]);
    assert!(r["poison_sent"].as_u64() > Some(0), "{r}");
    assert_eq!(r["rejected_in_ledger"], r["poison_sent"]);
}
