//! Shared by the query API tests: seeded windows with known totals and the
//! API binary on a free port.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use javelin_schema::migrations::{MigrateOptions, migrate};
use javelin_schema::rows::{LedgerRow, SampleRow, StackRow, StoredPartRow, TargetStatusRow, table};
use javelin_schema::stack_id_of_names;
use javelin_schema::testkit::{Reaped, clickhouse_client, clickhouse_url, unique_name};
use serde_json::Value;

/// One seeded window of one pod: (frames, value) per stack.
pub struct Seed {
    pub pod: &'static str,
    pub stacks: Vec<(Vec<&'static str>, i64)>,
    pub truncated: bool,
    pub dropped_events: u64,
}

pub fn seeds() -> Vec<Seed> {
    vec![
        Seed {
            pod: "pod-a",
            stacks: vec![
                (vec!["main", "a", "leaf"], 100),
                (vec!["main", "b"], 50),
                (vec!["main", "rec", "rec", "rec"], 30),
            ],
            truncated: true,
            dropped_events: 7,
        },
        Seed {
            pod: "pod-b",
            stacks: vec![(vec!["main", "a", "leaf"], 10), (vec!["main", "c"], 40)],
            truncated: false,
            dropped_events: 0,
        },
    ]
}

pub fn now_s() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32)
}

/// The window id of target `target_id`'s seeded window.
pub fn window_id_of(target_id: u64, window_start: u32) -> u64 {
    javelin_schema::wire::window_id(
        target_id,
        javelin_schema::wire::ProfileType::Cpu,
        i64::from(window_start) * 1000 + 17,
        0,
    )
}

/// Names a stored copy of a window part to readers (as the consumer does
/// after the copy's samples are acknowledged).
pub async fn record_stored(
    db: &clickhouse::Client,
    target_id: u64,
    window_start: u32,
    window_id: u64,
    insert_id: u64,
) {
    let mut insert = db
        .insert::<StoredPartRow>(table::STORED_PARTS)
        .await
        .expect("insert");
    insert
        .write(&StoredPartRow {
            service: "svc".into(),
            profile_type: "cpu".into(),
            window_start,
            target_id,
            window_id,
            insert_id,
            stored_at: window_start + 12,
        })
        .await
        .expect("stored part");
    insert.end().await.expect("stored parts");
}

pub async fn seed(db: &clickhouse::Client, window_start: u32) {
    let mut samples = db
        .insert::<SampleRow>(table::SAMPLES)
        .await
        .expect("insert");
    let mut stacks = db.insert::<StackRow>(table::STACKS).await.expect("insert");
    let mut ledger = db
        .insert::<LedgerRow>(table::INGEST_LEDGER)
        .await
        .expect("insert");
    for (t, s) in seeds().iter().enumerate() {
        for (frames, value) in &s.stacks {
            let names: Vec<String> = frames.iter().map(|f| f.to_string()).collect();
            let id = stack_id_of_names(&names);
            let row = SampleRow {
                service: "svc".into(),
                profile_type: "cpu".into(),
                window_start,
                cluster: "c".into(),
                namespace: "ns".into(),
                pod: s.pod.into(),
                container: "app".into(),
                node: "n".into(),
                target_id: t as u64 + 1,
                window_id: window_id_of(t as u64 + 1, window_start),
                stack_id: id,
                value: *value,
                count: 1,
                insert_id: 1,
                app_version: String::new(),
            };
            samples.write(&row).await.expect("sample");
            stacks
                .write(&StackRow {
                    service: "svc".into(),
                    stack_id: id,
                    frames: names,
                    lines: vec![],
                    frame_types: vec![],
                    last_seen: window_start,
                })
                .await
                .expect("stack");
        }
        ledger
            .write(&LedgerRow {
                window_id: t as u64 + 100,
                service: "svc".into(),
                profile_type: "cpu".into(),
                window_start,
                window_start_ms: i64::from(window_start) * 1000,
                window_end_ms: i64::from(window_start) * 1000 + 10_000,
                target_id: t as u64 + 1,
                pod: s.pod.into(),
                part_index: 0,
                part_count: 1,
                raw_events: 100,
                parsed_events: 100,
                stacks: s.stacks.len() as u64,
                dropped_events: s.dropped_events,
                dropped_stacks: u64::from(s.truncated),
                truncated: u8::from(s.truncated),
                jfr_bytes: 0,
                parse_micros: 0,
                topic: "t".into(),
                partition: 0,
                offset: t as i64,
                status: if s.truncated { "truncated" } else { "accepted" }.into(),
                reason: String::new(),
                ingested_at: window_start + 12,
                ingest_latency_ms: 2000,
            })
            .await
            .expect("ledger");
    }
    samples.end().await.expect("samples");
    stacks.end().await.expect("stacks");
    ledger.end().await.expect("ledger");
    for t in 0..seeds().len() as u64 {
        record_stored(
            db,
            t + 1,
            window_start,
            window_id_of(t + 1, window_start),
            1,
        )
        .await;
    }
    let mut status = db
        .insert::<TargetStatusRow>(table::TARGET_STATUS)
        .await
        .expect("insert");
    // (pod, state, last error, recorder, failed collects, oversized messages)
    for (t, (pod, state, error, recorder, failed_collects, oversized_messages)) in [
        ("pod-a", "profiling", "", "async-profiler", 2, 1),
        (
            "pod-b",
            "external_conflict",
            "libasyncProfiler.so loaded from /opt/other",
            "jfr",
            0,
            0,
        ),
        (
            "pod-c",
            "over_target_limit",
            "not profiled: 64 JVMs on this node are profiled already (--max-targets)",
            "",
            0,
            0,
        ),
        ("pod-d", "profiling", "", "jfr-cpu-time", 0, 0),
    ]
    .into_iter()
    .enumerate()
    {
        status
            .write(&TargetStatusRow {
                service: "svc".into(),
                target_id: t as u64 + 1,
                cluster: "c".into(),
                namespace: "ns".into(),
                pod: pod.into(),
                container: "app".into(),
                node: "n".into(),
                pid: 100 + t as u32,
                state: state.into(),
                recorder: recorder.into(),
                last_error: error.into(),
                observed_at: window_start + 5,
                agent_version: "test".into(),
                windows_published: 1,
                spool_dropped_messages: 0,
                dropped_events: 0,
                dropped_stacks: 0,
                truncated_windows: 0,
                failed_collects,
                oversized_messages,
                sampling: "async-profiler: cpu every 10 ms; 60-s windows".into(),
            })
            .await
            .expect("status");
    }
    status.end().await.expect("status");
}

/// The query API on a free port, serving `database`.
pub fn start_api(database: &str, extra: &[&str]) -> (Reaped, String) {
    let (api, url, _) = start_api_at(&clickhouse_url(), database, extra);
    (api, url)
}

/// What a started API wrote to stderr (its log), collected as it is written.
#[derive(Debug, Clone, Default)]
pub struct Log(Arc<Mutex<String>>);

impl Log {
    pub fn text(&self) -> String {
        self.0.lock().map(|t| t.clone()).unwrap_or_default()
    }

    /// Lines of the log that contain `needle`.
    pub fn lines_with(&self, needle: &str) -> Vec<String> {
        self.text()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_string)
            .collect()
    }
}

/// The query API on a free port, serving `database` of the ClickHouse at
/// `clickhouse_url`, and its log (at level info, without colours).
pub fn start_api_at(clickhouse_url: &str, database: &str, extra: &[&str]) -> (Reaped, String, Log) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_javelin-query"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--clickhouse-url",
            clickhouse_url,
        ])
        .args(["--database", database])
        .args(
            (!extra.contains(&"--metrics-listen"))
                .then_some(["--metrics-listen", "127.0.0.1:0"])
                .into_iter()
                .flatten(),
        )
        .args(extra)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("javelin-query starts");
    let log = Log::default();
    let stderr = child.stderr.take().expect("stderr");
    let sink = log.clone();
    // Drains the pipe for the life of the process (a full pipe would stall it).
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Ok(mut text) = sink.0.lock() {
                text.push_str(&line);
                text.push('\n');
            }
        }
    });
    let url = javelin_schema::testkit::listening_url(child.stdout.take().expect("stdout"));
    (Reaped(child), url, log)
}

/// Flamegraph levels → (depth, name, total, self) tuples.
pub fn nodes(fg: &Value) -> Vec<(usize, String, i64, i64)> {
    let names: Vec<String> = serde_json::from_value(fg["names"].clone()).expect("names");
    let levels: Vec<Vec<i64>> = serde_json::from_value(fg["levels"].clone()).expect("levels");
    let mut out = vec![];
    for (d, level) in levels.iter().enumerate() {
        for t in level.chunks(4) {
            out.push((d, names[t[3] as usize].clone(), t[1], t[2]));
        }
    }
    out
}

pub async fn get(url: &str) -> (u16, Value) {
    let response = reqwest::get(url).await.expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// A fresh database with the seeded windows; returns it, the window start
/// and the query range (ms) around it.
pub async fn seeded_database(prefix: &str) -> (String, u32, i64, i64) {
    let database = unique_name(prefix);
    migrate(&clickhouse_client(), &database, MigrateOptions::default())
        .await
        .expect("migrate");
    let start = now_s() / 10 * 10 - 1800;
    seed(&clickhouse_client().with_database(&database), start).await;
    (
        database,
        start,
        i64::from(start - 60) * 1000,
        i64::from(start + 60) * 1000,
    )
}

pub async fn drop_database(database: &str) {
    clickhouse_client()
        .query(&format!("DROP DATABASE {database}"))
        .execute()
        .await
        .expect("drop");
}

/// The repository root.
pub fn repo() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}
