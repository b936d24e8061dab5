//! The benchmarks run here at a small size, so one cannot go stale unnoticed:
//! `bench-consumer`'s ceiling wrote the columns of migration 1 for five
//! migrations, and nothing ran it. Each benchmark reconciles what it stored
//! (it exits non-zero on a mismatch); the test asserts that and the totals it
//! reports. The timings are not asserted: docs/benchmarks.md holds them.

mod support;

use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use javelin_schema::testkit::{clickhouse_url, kafka_brokers, unique_name};
use support::bin;

#[test]
fn bench_consumer_stores_every_row_through_the_consumer_and_the_ceiling() {
    let (windows, stacks) = (16u32, 40u32);
    let tcp_port =
        std::env::var("JAVELIN_CLICKHOUSE_TCP_PORT").unwrap_or_else(|_| "19000".to_string());
    let (status, stdout, stderr) = run_bounded(
        "bench-consumer",
        &[
            "--brokers",
            &kafka_brokers(),
            "--clickhouse-url",
            &clickhouse_url(),
            "--clickhouse-tcp-port",
            &tcp_port,
            "--windows",
            &windows.to_string(),
            "--stacks",
            &stacks.to_string(),
        ],
        Duration::from_secs(300),
    );
    assert!(
        status.success(),
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

/// bench-query-long at a hundredth of its week (5 pods × 150 stacks, the
/// scan limit lowered to match): the raw week is refused, the UI's pickers
/// and every long-range answer come back from rollups with the raw totals
/// (the bench exits non-zero otherwise), and raw label listings are refused.
#[test]
fn bench_query_long_answers_a_week_and_its_pickers_from_rollups() {
    let (status, stdout, stderr) = run_bounded(
        "bench-query-long",
        &[
            "--clickhouse-url",
            &clickhouse_url(),
            "--pods",
            "5",
            "--stacks",
            "150",
            "--requests",
            "5",
            "--max-rows-scanned",
            "2000000",
            "--check-targets",
            "false",
        ],
        Duration::from_secs(600),
    );
    assert!(
        status.success(),
        "bench-query-long failed:\n{stdout}\n{stderr}"
    );
    for line in [
        "7560000 sample rows (1 service × 7 days × 5 pods",
        "the raw 7 days at --max-rows-scanned 2000000: HTTP 422",
        "rollups services: HTTP 200, 1 listed",
        "rollups pods: HTTP 200, 5 listed",
        "rollups nodes: HTTP 200, 5 listed",
        "raw pods: HTTP 422",
    ] {
        assert!(stdout.contains(line), "the report says {line:?}:\n{stdout}");
    }
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("| 7 days | flamegraph | rollups |")
                && l.contains(" h rolled + ")),
        "the week's flamegraph from rollups:\n{stdout}"
    );
}

/// Runs `javelin-loadtest <bench> <args>` with its output in files (no pipe to
/// fill while waiting), bounded by `limit` (a stuck run would otherwise hold
/// the suite for its own timeouts); its exit status, stdout and stderr.
fn run_bounded(bench: &str, args: &[&str], limit: Duration) -> (ExitStatus, String, String) {
    let logs = std::env::temp_dir().join(unique_name("bench_test"));
    std::fs::create_dir_all(&logs).expect("log dir");
    let file = |name: &str| std::fs::File::create(logs.join(name)).expect("log file");
    let mut child = Command::new(bin("javelin-loadtest"))
        .arg(bench)
        .args(args)
        .stdout(file("stdout"))
        .stderr(file("stderr"))
        .spawn()
        .expect("javelin-loadtest runs");
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let read = |name: &str| std::fs::read_to_string(logs.join(name)).unwrap_or_default();
    let (stdout, stderr) = (read("stdout"), read("stderr"));
    let _ = std::fs::remove_dir_all(&logs);
    let status =
        status.unwrap_or_else(|| panic!("{bench} ran past {limit:?}:\n{stdout}\n{stderr}"));
    (status, stdout, stderr)
}
