//! The UI's states in a real browser (Debian's Chromium driven by
//! playwright-core, `ui_states.cjs`) against the real query API, over rows
//! written into a database of the test's own with the consumer's row types:
//!
//! - a slow answer for an older selection never overwrites a newer view (the
//!   old requests are aborted; with abort disabled in the page, the late
//!   answers are discarded); a refresh with nothing changed makes 3 requests (flamegraph, top, timeline);
//!   the health chart has a labelled time axis adapted to the range, and a
//!   value axis;
//! - a query over the row limit (`--max-rows-scanned 1`) shows the scan-limit
//!   message, not an outage;
//! - with `--auth-token`: the sign-in form, a wrong token refused, the right
//!   one shows data and stays in sessionStorage only, sign-out forgets it;
//! - a range over closed hours the consumer rolled up: the summary says how
//!   many hours came from rollups and how much was read raw, and the total is
//!   the API's (every window counted once);
//! - ClickHouse stopped (a private server): a banner, the last good view kept
//!   and marked stale; started again: the next periodic refresh clears it.
//!
//! Needs `dev/stack up` and `cargo build --workspace --bins`; installs node
//! modules and Chromium through `dev/tools` (per-user cache). Screenshots go to
//! `target/ui-screenshots/<run>/`.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use javelin_loadtest::servers::PrivateClickHouse;
use javelin_schema::migrations::{MigrateOptions, migrate};
use javelin_schema::rows::{LedgerRow, SampleRow, StackRow, StoredPartRow, TargetStatusRow, table};
use javelin_schema::stack_id_of_names;
use javelin_schema::testkit::{Reaped, clickhouse_url, dev_tool, unique_name};
use javelin_schema::wire::{ProfileType, window_id};
use serde_json::Value;
use support::bin;

/// One browser test at a time: the machine may have two cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The services written; each has its own function names.
const SERVICES: [&str; 2] = ["ui-alpha", "ui-beta"];
/// Windows per service: one a minute, the newest a minute ago.
const WINDOWS: u32 = 12;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf()
}

fn now_s() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32)
}

/// The stacks of one window of `service` (frames root first, value in ms of cpu).
fn stacks_of(service: &str) -> Vec<(Vec<String>, i64)> {
    let p = service.replace('-', ".");
    let f = |n: &str| format!("{p}.{n}");
    vec![
        (vec![f("Main.run"), f("Work.hot")], 700),
        (vec![f("Main.run"), f("Work.warm")], 200),
        (vec![f("Main.run"), f("Io.read"), f("Io.wait")], 100),
    ]
}

/// Writes one window of `shape` for (service, pod, target id) starting at
/// `start`: its samples and its `stored_parts` row (stored 12 s after its
/// start); returns its window id.
async fn write_window(
    samples: &mut clickhouse::insert::Insert<SampleRow>,
    stored: &mut clickhouse::insert::Insert<StoredPartRow>,
    (service, pod, target_id): (&str, &str, u64),
    start: u32,
    shape: &[(Vec<String>, i64)],
) -> u64 {
    let id = window_id(target_id, ProfileType::Cpu, i64::from(start) * 1000, 0);
    for (frames, ms) in shape {
        samples
            .write(&SampleRow {
                service: service.to_string(),
                profile_type: "cpu".into(),
                window_start: start,
                cluster: "c".into(),
                namespace: "ns".into(),
                pod: pod.to_string(),
                container: "app".into(),
                node: "n".into(),
                target_id,
                window_id: id,
                stack_id: stack_id_of_names(frames),
                value: ms * 1_000_000,
                count: 1,
                insert_id: 1,
                app_version: String::new(),
            })
            .await
            .expect("sample");
    }
    stored
        .write(&StoredPartRow {
            service: service.to_string(),
            profile_type: "cpu".into(),
            window_start: start,
            target_id,
            window_id: id,
            insert_id: 1,
            stored_at: start + 12,
        })
        .await
        .expect("stored part");
    id
}

/// Migrates `database` on the server at `url` and writes [`SERVICES`]' windows
/// (the third-newest of each truncated), stacks, ledger and target status.
async fn seed(url: &str, database: &str) {
    let server = clickhouse::Client::default()
        .with_url(url)
        .with_validation(false);
    migrate(&server, database, MigrateOptions::default())
        .await
        .expect("migrate");
    let db = server.with_database(database);
    let now = now_s() / 10 * 10;
    let mut samples = db
        .insert::<SampleRow>(table::SAMPLES)
        .await
        .expect("insert");
    let mut stacks = db.insert::<StackRow>(table::STACKS).await.expect("insert");
    let mut ledger = db
        .insert::<LedgerRow>(table::INGEST_LEDGER)
        .await
        .expect("insert");
    let mut stored = db
        .insert::<StoredPartRow>(table::STORED_PARTS)
        .await
        .expect("insert");
    let mut status = db
        .insert::<TargetStatusRow>(table::TARGET_STATUS)
        .await
        .expect("insert");
    for (i, service) in SERVICES.iter().enumerate() {
        let target_id = i as u64 + 1;
        let pod = format!("{service}-0");
        let shape = stacks_of(service);
        for (frames, _) in &shape {
            stacks
                .write(&StackRow {
                    service: service.to_string(),
                    stack_id: stack_id_of_names(frames),
                    frames: frames.clone(),
                    lines: vec![],
                    frame_types: vec![],
                    last_seen: now,
                })
                .await
                .expect("stack");
        }
        for k in 1..=WINDOWS {
            let start = now - 60 * k;
            let id = write_window(
                &mut samples,
                &mut stored,
                (service, &pod, target_id),
                start,
                &shape,
            )
            .await;
            let truncated = k == 3;
            ledger
                .write(&LedgerRow {
                    window_id: id,
                    service: service.to_string(),
                    profile_type: "cpu".into(),
                    window_start: start,
                    window_start_ms: i64::from(start) * 1000,
                    window_end_ms: i64::from(start) * 1000 + 10_000,
                    target_id,
                    pod: pod.clone(),
                    part_index: 0,
                    part_count: 1,
                    raw_events: 100,
                    parsed_events: 100,
                    stacks: shape.len() as u64,
                    dropped_events: 0,
                    dropped_stacks: u64::from(truncated),
                    truncated: u8::from(truncated),
                    jfr_bytes: 0,
                    parse_micros: 0,
                    topic: "t".into(),
                    partition: 0,
                    offset: i64::from(k),
                    status: if truncated { "truncated" } else { "accepted" }.into(),
                    reason: String::new(),
                    ingested_at: start + 12,
                    ingest_latency_ms: 2000,
                })
                .await
                .expect("ledger");
        }
        status
            .write(&TargetStatusRow {
                service: service.to_string(),
                target_id,
                cluster: "c".into(),
                namespace: "ns".into(),
                pod,
                container: "app".into(),
                node: "n".into(),
                pid: 100 + i as u32,
                state: "profiling".into(),
                recorder: "async-profiler".into(),
                last_error: String::new(),
                observed_at: now - 30,
                agent_version: "test".into(),
                windows_published: u64::from(WINDOWS),
                spool_dropped_messages: 0,
                dropped_events: 0,
                dropped_stacks: 0,
                truncated_windows: 1,
                failed_collects: 0,
                oversized_messages: 0,
                sampling: String::new(),
            })
            .await
            .expect("status");
    }
    samples.end().await.expect("samples");
    stacks.end().await.expect("stacks");
    ledger.end().await.expect("ledger");
    stored.end().await.expect("stored parts");
    status.end().await.expect("status");
}

/// The service whose windows are hours old (rolled up by the test).
const HISTORY: &str = "ui-history";

/// Writes [`HISTORY`]'s windows: one every 10 min, 7 s past the ten minutes,
/// over the three closed hours before the last one (each window 1 s of cpu).
/// Returns the first of those hours (epoch seconds).
async fn seed_history(url: &str, database: &str) -> u32 {
    let db = clickhouse::Client::default()
        .with_url(url)
        .with_validation(false)
        .with_database(database);
    let first_hour = now_s() / 3600 * 3600 - 4 * 3600;
    let shape = stacks_of(HISTORY);
    let mut stacks = db.insert::<StackRow>(table::STACKS).await.expect("insert");
    for (frames, _) in &shape {
        stacks
            .write(&StackRow {
                service: HISTORY.into(),
                stack_id: stack_id_of_names(frames),
                frames: frames.clone(),
                lines: vec![],
                frame_types: vec![],
                last_seen: now_s(),
            })
            .await
            .expect("stack");
    }
    stacks.end().await.expect("stacks");
    let mut samples = db
        .insert::<SampleRow>(table::SAMPLES)
        .await
        .expect("insert");
    let mut stored = db
        .insert::<StoredPartRow>(table::STORED_PARTS)
        .await
        .expect("insert");
    for j in 0..18 {
        let start = first_hour + 600 * j + 7;
        write_window(
            &mut samples,
            &mut stored,
            (HISTORY, "history-0", 9),
            start,
            &shape,
        )
        .await;
    }
    samples.end().await.expect("samples");
    stored.end().await.expect("stored parts");
    first_hour
}

async fn drop_database(url: &str, database: &str) {
    let _ = clickhouse::Client::default()
        .with_url(url)
        .query(&format!("DROP DATABASE IF EXISTS {database}"))
        .execute()
        .await;
}

/// The run's name, log and screenshot directories.
fn run_dirs(prefix: &str) -> (String, PathBuf, PathBuf) {
    let run = unique_name(prefix);
    let logs = repo_root().join("target/e2e-logs").join(&run);
    let shots = repo_root().join("target/ui-screenshots").join(&run);
    for dir in [&logs, &shots] {
        std::fs::create_dir_all(dir).expect("a directory of the run");
    }
    (run, logs, shots)
}

/// `javelin-query` on a free port over `database` at `url`; its log in `logs`.
fn start_api(
    url: &str,
    database: &str,
    extra: &[&str],
    logs: &Path,
    name: &str,
) -> (Reaped, String) {
    let log = std::fs::File::create(logs.join(format!("{name}.log"))).expect("log file");
    let mut child = Command::new(bin("javelin-query"))
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .args(["--clickhouse-url", url, "--database", database])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("javelin-query starts");
    let stdout = child.stdout.take().expect("stdout");
    let child = Reaped(child);
    (child, javelin_schema::testkit::listening_url(stdout))
}

/// Runs `ui_states.cjs <scenario>`, answering its `ui-states: <verb>` lines
/// with `on_request`; returns its findings.
fn browser(
    scenario: &str,
    base: &str,
    dirs: (&Path, &Path),
    env: &[(&str, &str)],
    mut on_request: impl FnMut(&str) -> Result<(), String>,
) -> Value {
    let (logs, shots) = dirs;
    let node_modules = dev_tool("node");
    let chromium = dev_tool("chromium");
    let stderr_path = logs.join(format!("node-{scenario}.log"));
    let mut child = Command::new("node")
        .arg(repo_root().join("loadtest/tests/ui_states.cjs"))
        .args([scenario, base])
        .arg(shots)
        .arg(&chromium)
        .env("NODE_PATH", &node_modules)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_path).expect("node log"))
        .spawn()
        .expect("node runs");
    let mut stdin = child.stdin.take();
    let stdout = BufReader::new(child.stdout.take().expect("node's stdout"));
    let mut node = Reaped(child);
    let mut printed = Vec::new();
    for line in stdout.lines() {
        let line = line.expect("a line from node");
        if let Some(verb) = line.strip_prefix("ui-states: ") {
            let reply = match on_request(verb) {
                Ok(()) => "ok".to_string(),
                Err(e) => format!("error: {e}"),
            };
            eprintln!("UI states ({scenario}): {verb} → {reply}");
            if let Some(stdin) = stdin.as_mut() {
                writeln!(stdin, "{reply}").expect("answering node");
            }
        } else {
            printed.push(line);
        }
    }
    drop(stdin);
    let status = node.0.wait().expect("node ends");
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    eprintln!(
        "UI states ({scenario}): {}\n{stderr}screenshots in {}",
        printed.join("\n"),
        shots.display()
    );
    assert!(
        status.success(),
        "the UI states check {scenario} failed (see above)"
    );
    printed
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .expect("findings as JSON on the last line")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_old_answer_never_overwrites_a_newer_view_and_the_health_chart_has_axes() {
    let _serial = SERIAL.lock().await;
    let (run, logs, shots) = run_dirs("ui_order");
    seed(&clickhouse_url(), &run).await;
    let (_api, base) = start_api(&clickhouse_url(), &run, &[], &logs, "query");
    let findings = browser("order", &base, (&logs, &shots), &[], |v| {
        Err(format!("unexpected request {v}"))
    });
    for mode in ["abort", "ignore"] {
        let m = &findings["modes"][mode];
        assert!(
            m["summaryAfter"]
                .as_str()
                .is_some_and(|s| s.starts_with("ui-beta")),
            "{findings}"
        );
    }
    assert!(
        findings["modes"]["ignore"]["discarded"].as_u64() >= Some(1),
        "{findings}"
    );
    assert!(
        findings["modes"]["abort"]["aborted"].as_u64() >= Some(1),
        "{findings}"
    );
    assert_eq!(findings["requestsPerRefresh"], 3, "{findings}");
    assert!(
        findings["axis"]["15m"]["labels"]
            .as_array()
            .is_some_and(|l| l.len() >= 2),
        "{findings}"
    );

    // The same data behind an API whose row limit every query exceeds.
    let (_limited, limited) = start_api(
        &clickhouse_url(),
        &run,
        &["--max-rows-scanned", "1"],
        &logs,
        "query-limited",
    );
    let findings = browser("scan_limit", &limited, (&logs, &shots), &[], |v| {
        Err(format!("unexpected request {v}"))
    });
    assert_eq!(findings["kind"], "scan_limit", "{findings}");
    drop_database(&clickhouse_url(), &run).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sign_in_refuses_a_wrong_token_and_sign_out_forgets_the_right_one() {
    let _serial = SERIAL.lock().await;
    let (run, logs, shots) = run_dirs("ui_auth");
    seed(&clickhouse_url(), &run).await;
    let token = format!("ui-token-{}", unique_name("t"));
    let (_api, base) = start_api(
        &clickhouse_url(),
        &run,
        &["--auth-token", &token],
        &logs,
        "query",
    );
    // The API refuses a request without the token.
    let refused = reqwest::get(format!("{base}/api/v1/services"))
        .await
        .expect("request");
    assert_eq!(refused.status(), 401);
    let findings = browser(
        "auth",
        &base,
        (&logs, &shots),
        &[("JAVELIN_UI_TOKEN", &token)],
        |v| Err(format!("unexpected request {v}")),
    );
    assert!(
        findings["wrongMessage"]
            .as_str()
            .is_some_and(|m| m.contains("not accepted")),
        "{findings}"
    );
    drop_database(&clickhouse_url(), &run).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_range_of_rolled_up_hours_says_so_in_the_summary() {
    use javelin_consumer::rollup::{BuildIds, RollupOptions, pass};

    let _serial = SERIAL.lock().await;
    let (run, logs, shots) = run_dirs("ui_rollups");
    seed(&clickhouse_url(), &run).await;
    let first_hour = seed_history(&clickhouse_url(), &run).await;
    let db = clickhouse::Client::default()
        .with_url(clickhouse_url())
        .with_validation(false)
        .with_database(&run);
    let options = RollupOptions {
        every: std::time::Duration::from_secs(300),
        grace: std::time::Duration::from_secs(300),
        max_builds: 48,
        retention_days: 7,
    };
    let report = pass(&db, &options, now_s(), &mut BuildIds::default())
        .await
        .expect("a rollup pass");
    // (The other services' previous hour may be closed and quiet too.)
    let mut built: Vec<u32> = report
        .built
        .iter()
        .filter(|d| d.service == HISTORY)
        .map(|d| d.bucket)
        .collect();
    built.sort_unstable();
    assert_eq!(
        built,
        [first_hour, first_hour + 3600, first_hour + 7200],
        "{report:?}"
    );

    // From 20 min (and 123 ms) into the first hour to 457 ms past the third:
    // two whole hours from rollups, 40 min of the first read raw (windows
    // at :20, :30, :40 and :50), and the last 457 ms (no window; the API
    // reads whole seconds, so 1 s).
    let from_ms = (i64::from(first_hour) + 1200) * 1000 + 123;
    let to_ms = (i64::from(first_hour) + 3 * 3600) * 1000 + 457;
    let (_api, base) = start_api(&clickhouse_url(), &run, &[], &logs, "query");
    let range = format!("{HISTORY},{from_ms},{to_ms}");
    let findings = browser(
        "rollups",
        &base,
        (&logs, &shots),
        &[("JAVELIN_UI_RANGE", range.as_str())],
        |v| Err(format!("unexpected request {v}")),
    );
    assert_eq!(findings["resolution"]["rollup_buckets"], 2, "{findings}");
    assert_eq!(findings["total"], 16_000_000_000_i64, "{findings}");
    assert_eq!(findings["pageTotal"], findings["total"], "{findings}");
    let summary = findings["summary"].as_str().unwrap_or_default();
    assert!(
        summary.contains("2 h from hourly rollups, 40 min from raw windows"),
        "{findings}"
    );
    drop_database(&clickhouse_url(), &run).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn clickhouse_unavailable_shows_a_banner_over_the_stale_view_until_it_is_back() {
    let _serial = SERIAL.lock().await;
    let (run, logs, shots) = run_dirs("ui_down");
    let ch = PrivateClickHouse::start(&run).expect("a ClickHouse of the test's own");
    seed(&ch.url(), &run).await;
    let (_api, base) = start_api(&ch.url(), &run, &[], &logs, "query");
    let findings = browser(
        "unavailable",
        &base,
        (&logs, &shots),
        &[],
        |verb| match verb {
            "stop-clickhouse" | "start-clickhouse" => ch.stack(verb).map_err(|e| format!("{e:#}")),
            other => Err(format!("unknown request {other}")),
        },
    );
    assert!(
        findings["banner"]
            .as_str()
            .is_some_and(|b| b.contains("ClickHouse unavailable")),
        "{findings}"
    );
    assert!(
        findings["recoveredAfterMs"].as_u64().is_some(),
        "{findings}"
    );
}
