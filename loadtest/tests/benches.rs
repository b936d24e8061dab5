//! The benchmarks run here at a small size, so one cannot go stale unnoticed:
//! `bench-consumer`'s ceiling wrote the columns of migration 1 for five
//! migrations, and nothing ran it. Each benchmark reconciles what it stored
//! (it exits non-zero on a mismatch); the test asserts that and the totals it
//! reports. The timings are not asserted: docs/benchmarks.md holds them.

mod support;

use std::process::Command;

use javelin_schema::testkit::{clickhouse_url, kafka_brokers};
use support::bin;

#[test]
fn bench_consumer_stores_every_row_through_the_consumer_and_the_ceiling() {
    let (windows, stacks) = (16u32, 40u32);
    let tcp_port =
        std::env::var("JAVELIN_CLICKHOUSE_TCP_PORT").unwrap_or_else(|_| "19000".to_string());
    let out = Command::new(bin("javelin-loadtest"))
        .arg("bench-consumer")
        .args(["--brokers", &kafka_brokers()])
        .args(["--clickhouse-url", &clickhouse_url()])
        .args(["--clickhouse-tcp-port", &tcp_port])
        .args(["--windows", &windows.to_string()])
        .args(["--stacks", &stacks.to_string()])
        .output()
        .expect("javelin-loadtest runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "bench-consumer failed:\n{stdout}\n{stderr}"
    );
    // One CPU window of `stacks` distinct stacks each: one row per stack.
    let rows = windows * stacks;
    assert!(
        stdout.contains(&format!(
            "{rows} sample rows ({windows} windows × {stacks} stacks"
        )),
        "the report names {rows} rows:\n{stdout}"
    );
    for path in [
        "| Kafka → javelin-consumer → ClickHouse",
        "| clickhouse-client INSERT",
    ] {
        assert!(
            stdout.lines().any(|l| l.starts_with(path)),
            "the report has the row {path:?}:\n{stdout}"
        );
    }
}
