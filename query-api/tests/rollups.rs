//! Hourly rollups against the real ClickHouse, through the query API: two
//! databases get the same windows (odd milliseconds, a gap, two pods, a
//! ragged range), the consumer's builder rolls one of them up, and every
//! answer (flamegraph, pod-filtered flamegraph, top, hourly timeline and tag
//! breakdown, diff)
//! must equal the other database's raw one, also after a redelivery and a
//! replay into a closed hour, before and after the rebuild; and while the
//! server refuses every build (the rollup table missing), and after.

mod common;

use common::{get, start_api_at};
use javelin_consumer::rollup::{BuildIds, Due, RollupOptions, build, pass};
use javelin_schema::migrations::{MigrateOptions, migrate};
use javelin_schema::rollup::RESOLUTION_S;
use javelin_schema::rows::{LedgerRow, SampleRow, StackRow, StoredPartRow, table};
use javelin_schema::stack_id_of_names;
use javelin_schema::testkit::chdb::ChdbServer;
use javelin_schema::testkit::{Reaped, clickhouse_client, clickhouse_url, unique_name};
use serde_json::Value;

const SERVICE: &str = "roll";

/// One window part of one pod: its start (ms), window id, insert id and stacks.
#[derive(Clone)]
struct Part {
    pod: &'static str,
    target_id: u64,
    start_ms: i64,
    window_id: u64,
    insert_id: u64,
    stacks: Vec<(Vec<&'static str>, i64)>,
    /// The agent cut the part short (its ledger row says `truncated`).
    truncated: bool,
}

/// Windows every 7 min 13.417 s from 40 min before `base` for 4 h, two pods
/// with their own namespace, container, node and version, none from `base` +
/// 1 h 20 min to + 1 h 50 min (a gap inside one hour), values that differ per
/// window; and three windows on edges: exactly on an hour, on the first second
/// of the range and in its last millisecond. Every fourth window's parts were
/// truncated by the agent.
fn windows(base: u32) -> Vec<Part> {
    let mut parts = Vec::new();
    let first = i64::from(base) * 1000 - 40 * 60_000 + 417;
    let mut k = 0;
    loop {
        let start_ms = first + k * 433_417;
        if start_ms > i64::from(base) * 1000 + 4 * 3_600_000 {
            break;
        }
        let offset = start_ms - i64::from(base) * 1000;
        let in_gap = (80 * 60_000..110 * 60_000).contains(&offset);
        for (target_id, pod) in [(1u64, "pod-a"), (2, "pod-b")] {
            if in_gap || (pod == "pod-b" && k % 3 == 0) {
                continue;
            }
            let v = 10 + k * 7 + target_id as i64;
            parts.push(Part {
                pod,
                target_id,
                start_ms,
                window_id: javelin_schema::wire::window_id(
                    target_id,
                    javelin_schema::wire::ProfileType::Cpu,
                    start_ms,
                    0,
                ),
                insert_id: 1,
                truncated: k % 4 == 1,
                stacks: vec![
                    (vec!["main", "serve", "parse"], v),
                    (vec!["main", "serve", "render"], 2 * v + 1),
                    (vec!["main", "gc"], (k % 5) + 1),
                ],
            });
        }
        k += 1;
    }
    for (n, start_ms) in [
        i64::from(base + 3600) * 1000,
        i64::from(base - 1235) * 1000,
        i64::from(base + 3 * 3600 + 777) * 1000 + 999,
    ]
    .into_iter()
    .enumerate()
    {
        parts.push(Part {
            pod: "pod-a",
            target_id: 1,
            start_ms,
            window_id: 0xed9e + n as u64,
            insert_id: 1,
            truncated: false,
            stacks: vec![(vec!["main", "edge"], 100 + n as i64)],
        });
    }
    parts
}

/// The labels of a target: (namespace, container, version).
fn labels(target_id: u64) -> (&'static str, &'static str, &'static str) {
    if target_id == 1 {
        ("ns-a", "app", "1.2")
    } else {
        ("ns-b", "sidecar", "1.3")
    }
}

/// The hours of some builds, ascending.
fn hours_of(built: &[Due]) -> Vec<u32> {
    let mut hours: Vec<u32> = built.iter().map(|d| d.bucket).collect();
    hours.sort_unstable();
    hours
}

/// Writes `parts` as the consumer does: samples, stacks, ledger, then each
/// copy named in `stored_parts`.
async fn write(db: &clickhouse::Client, parts: &[Part]) {
    let mut samples = db
        .insert::<SampleRow>(table::SAMPLES)
        .await
        .expect("insert");
    let mut stacks = db.insert::<StackRow>(table::STACKS).await.expect("insert");
    let mut ledger = db
        .insert::<LedgerRow>(table::INGEST_LEDGER)
        .await
        .expect("insert");
    for part in parts {
        let window_start = u32::try_from(part.start_ms / 1000).expect("start");
        let (namespace, container, version) = labels(part.target_id);
        for (frames, value) in &part.stacks {
            let names: Vec<String> = frames.iter().map(|f| f.to_string()).collect();
            let id = stack_id_of_names(&names);
            samples
                .write(&SampleRow {
                    service: SERVICE.into(),
                    profile_type: "cpu".into(),
                    window_start,
                    cluster: "c".into(),
                    namespace: namespace.into(),
                    pod: part.pod.into(),
                    container: container.into(),
                    node: format!("node-{}", part.target_id),
                    target_id: part.target_id,
                    window_id: part.window_id,
                    stack_id: id,
                    value: *value,
                    count: 1,
                    insert_id: part.insert_id,
                    app_version: version.into(),
                })
                .await
                .expect("sample");
            stacks
                .write(&StackRow {
                    service: SERVICE.into(),
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
                window_id: part.window_id,
                service: SERVICE.into(),
                profile_type: "cpu".into(),
                window_start,
                window_start_ms: part.start_ms,
                window_end_ms: part.start_ms + 60_000,
                target_id: part.target_id,
                pod: part.pod.into(),
                part_index: 0,
                part_count: 1,
                raw_events: 10,
                parsed_events: 10,
                stacks: part.stacks.len() as u64,
                dropped_events: u64::from(part.target_id == 2),
                dropped_stacks: 0,
                truncated: u8::from(part.truncated),
                jfr_bytes: 0,
                parse_micros: 0,
                topic: "t".into(),
                partition: 0,
                offset: 0,
                status: if part.truncated {
                    "truncated"
                } else {
                    "accepted"
                }
                .into(),
                reason: String::new(),
                ingested_at: window_start + 70,
                ingest_latency_ms: 1000,
            })
            .await
            .expect("ledger");
    }
    samples.end().await.expect("samples");
    stacks.end().await.expect("stacks");
    ledger.end().await.expect("ledger");
    let mut stored = db
        .insert::<StoredPartRow>(table::STORED_PARTS)
        .await
        .expect("insert");
    for part in parts {
        let window_start = u32::try_from(part.start_ms / 1000).expect("start");
        stored
            .write(&StoredPartRow {
                service: SERVICE.into(),
                profile_type: "cpu".into(),
                window_start,
                target_id: part.target_id,
                window_id: part.window_id,
                insert_id: part.insert_id,
                stored_at: window_start + 70,
            })
            .await
            .expect("stored part");
    }
    stored.end().await.expect("stored parts");
}

/// An answer without what differs by design between a rolled-up and a raw
/// read: rows read and the resolution.
fn answer(mut v: Value) -> Value {
    for key in ["metadata", "left", "right"] {
        if let Some(m) = v.get_mut(key).and_then(Value::as_object_mut) {
            m.remove("scanned_rows");
            m.remove("resolution");
        }
    }
    v
}

/// The queries a user makes of the range, by name.
fn queries(from: i64, to: i64) -> Vec<(&'static str, String)> {
    let scope = format!("service={SERVICE}&type=cpu&from={from}&to={to}");
    let half = from + (to - from) / 2;
    let listed = format!("service={SERVICE}&from={from}&to={to}");
    vec![
        ("services", format!("services?from={from}&to={to}")),
        ("profile types", format!("profile-types?{listed}")),
        ("pods", format!("labels?{listed}&label=pod")),
        ("versions", format!("labels?{listed}&label=version")),
        ("nodes", format!("labels?{listed}&label=node")),
        ("flamegraph", format!("flamegraph?{scope}")),
        ("flamegraph pod-b", format!("flamegraph?{scope}&pod=pod-b")),
        (
            "flamegraph version",
            format!("flamegraph?{scope}&version=1.3"),
        ),
        (
            "flamegraph labels",
            format!("flamegraph?{scope}&namespace=ns-a&container=app&node=node-1"),
        ),
        ("top", format!("top?{scope}&sort=total")),
        ("timeline", format!("timeline?{scope}&step=3600")),
        ("tags", format!("tags?{scope}&label=pod&step=3600")),
        (
            "tags version",
            format!("tags?{scope}&label=version&step=7200"),
        ),
        (
            "diff",
            format!(
                "diff?service={SERVICE}&type=cpu&from={from}&to={half}&right_from={half}&right_to={to}"
            ),
        ),
    ]
}

/// Asks both APIs every query; they must agree. Returns the rolled-up side's
/// flamegraph resolution and total.
async fn agree(rolled: &str, raw: &str, from: i64, to: i64, when: &str) -> (Value, i64) {
    let mut resolution = Value::Null;
    let mut total = 0;
    for (name, query) in queries(from, to) {
        let (status_a, a) = get(&format!("{rolled}/api/v1/{query}")).await;
        let (status_b, b) = get(&format!("{raw}/api/v1/{query}")).await;
        assert_eq!(
            (status_a, status_b),
            (200, 200),
            "{when}: {name}: {a} / {b}"
        );
        for side in ["metadata", "left", "right"] {
            if let Some(m) = b.get(side) {
                assert!(
                    m["resolution"]["rollup_seconds"].is_null()
                        && m["resolution"]["raw_seconds"].is_u64(),
                    "{when}: {name}: the database without rollups answers raw: {m}"
                );
            }
        }
        if name == "flamegraph" {
            resolution = a["metadata"]["resolution"].clone();
            total = a["total"].as_i64().expect("total");
        }
        assert_eq!(
            answer(a),
            answer(b),
            "{when}: {name} differs from the raw answer"
        );
    }
    (resolution, total)
}

/// A database the builder rolls up and one left raw, both migrated on the
/// same server, written the same windows.
struct Twin {
    server: clickhouse::Client,
    names: [String; 2],
    rolled: clickhouse::Client,
    raw: clickhouse::Client,
}

impl Twin {
    async fn migrated(server: &clickhouse::Client, prefix: &str) -> Twin {
        let names = [
            unique_name(&format!("{prefix}_on")),
            unique_name(&format!("{prefix}_off")),
        ];
        for db in &names {
            migrate(server, db, MigrateOptions::default())
                .await
                .expect("migrate");
        }
        Twin {
            server: server.clone(),
            rolled: server.clone().with_database(&names[0]),
            raw: server.clone().with_database(&names[1]),
            names,
        }
    }

    /// A query API over each, at `url`: (their processes, rolled-up, raw).
    fn apis(&self, url: &str) -> ([Reaped; 2], String, String) {
        let (a, rolled, _) = start_api_at(url, &self.names[0], &[]);
        let (b, raw, _) = start_api_at(url, &self.names[1], &[]);
        ([a, b], rolled, raw)
    }

    async fn drop(self) {
        for db in &self.names {
            self.server
                .query(&format!("DROP DATABASE {db}"))
                .execute()
                .await
                .expect("drop");
        }
    }
}

/// Six hours back: every hour of [`windows`]' range is closed.
fn base_of(now: u32) -> u32 {
    (now - 6 * 3600) / RESOLUTION_S * RESOLUTION_S
}

/// The range the tests read, at odd milliseconds: 20 min 34.567 s before the
/// first whole hour to 12 min 57.123 s after the third.
fn ragged_range(base: u32) -> (i64, i64) {
    (
        i64::from(base) * 1000 - 1_234_567,
        i64::from(base + 3 * 3600) * 1000 + 777_123,
    )
}

/// The builder's options in these tests: every closed hour due at once.
const OPTIONS: RollupOptions = RollupOptions {
    every: std::time::Duration::from_secs(60),
    grace: std::time::Duration::ZERO,
    max_builds: 100,
    retention_days: 7,
};

#[tokio::test(flavor = "multi_thread")]
async fn rolled_up_hours_answer_exactly_as_raw_windows_on_18_16() {
    exactly_as_raw(&clickhouse_client(), &clickhouse_url()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rolled_up_hours_answer_exactly_as_raw_windows_on_26_9() {
    let chdb = ChdbServer::start(&unique_name("rollups_chdb")).expect("chdb-server starts");
    exactly_as_raw(&chdb.client(), &chdb.url).await;
}

/// The whole drill on the ClickHouse at `url`: built, written to after the
/// build (a redelivery and a replay), rebuilt; every answer equal to the raw one.
async fn exactly_as_raw(server: &clickhouse::Client, url: &str) {
    let twin = Twin::migrated(server, "rollup").await;
    let (rolled, raw) = (&twin.rolled, &twin.raw);
    let now = common::now_s();
    let base = base_of(now);
    let mut parts = windows(base);
    // A pod seen only inside a whole (rolled-up) hour: its label values are
    // listed from the rollups.
    parts.push(Part {
        pod: "pod-c",
        target_id: 3,
        start_ms: i64::from(base + 3600) * 1000 + 1_234_567,
        window_id: 0xc0de,
        insert_id: 1,
        truncated: false,
        stacks: vec![(vec!["main", "serve", "c-only"], 777)],
    });
    let expected: i64 = parts
        .iter()
        .filter(|p| {
            let s = p.start_ms / 1000;
            s >= i64::from(base) - 1235 && s < i64::from(base) + 3 * 3600 + 778
        })
        .flat_map(|p| p.stacks.iter().map(|(_, v)| *v))
        .sum();
    write(rolled, &parts).await;
    write(raw, &parts).await;
    let (from, to) = ragged_range(base);
    let (_apis, rolled_api, raw_api) = twin.apis(url);

    let (resolution, total) = agree(&rolled_api, &raw_api, from, to, "nothing built").await;
    assert_eq!(total, expected, "the seeded total");
    assert_eq!(resolution["rollup_buckets"], 0);

    let options = OPTIONS;
    let mut ids = BuildIds::default();
    // A pass builds at most `max_builds` hours, newest first, and says more are due.
    let bounded = RollupOptions {
        max_builds: 2,
        ..options.clone()
    };
    let first = pass(rolled, &bounded, now, &mut ids).await.expect("pass");
    let report = pass(rolled, &options, now, &mut ids).await.expect("pass");
    assert!(first.more && !report.more, "{first:?} / {report:?}");
    assert!(
        first.failed.is_empty() && report.failed.is_empty(),
        "{report:?}"
    );
    assert_eq!(
        hours_of(&first.built),
        [base + 2 * 3600, base + 3 * 3600],
        "the newest first"
    );
    // Then every other hour with windows (the first is 40 min before `base`).
    assert_eq!(hours_of(&report.built), [base - 3600, base, base + 3600]);
    let again = pass(rolled, &options, now, &mut ids).await.expect("pass");
    assert!(
        again.built.is_empty() && !again.more,
        "nothing is due again: {again:?}"
    );
    let (resolution, total) = agree(&rolled_api, &raw_api, from, to, "built").await;
    assert_eq!(total, expected);
    assert_eq!(resolution["rollup_seconds"], 3600);
    assert_eq!(resolution["rollup_buckets"], 3, "the three whole hours");
    assert_eq!(
        resolution["raw_seconds"],
        1235 + 778,
        "the ragged edges only: {resolution}"
    );

    // A build interrupted after its rows, before its `rollup_builds` row (a
    // newer id than every recorded build of the hour): never read.
    rolled
        .query(
            "INSERT INTO samples_rollup (service, profile_type, resolution, bucket_start, build_id,
                 namespace, pod, container, node, app_version, stack_id, value, count)
             SELECT ?, 'cpu', 3600, toDateTime(?), toUInt64(18446744073709551000), 'ns-a', 'pod-a',
                 'app', 'node-1', '1.2', toUInt64(42), toInt64(1000000), toInt64(1)",
        )
        .bind(SERVICE)
        .bind(base + 3600)
        .execute()
        .await
        .expect("an unrecorded build's rows");
    let (_, total) = agree(&rolled_api, &raw_api, from, to, "an unrecorded build").await;
    assert_eq!(total, expected, "an unrecorded build is not read");

    // A redelivery into a closed hour: a second copy of a part, a later attempt.
    let again: Vec<Part> = parts
        .iter()
        .filter(|p| {
            p.start_ms / 1000 >= i64::from(base + 3600)
                && p.start_ms / 1000 < i64::from(base + 7200)
        })
        .take(1)
        .map(|p| Part {
            insert_id: 2,
            ..p.clone()
        })
        .collect();
    assert_eq!(again.len(), 1);
    // A replay of a window the hour never had (pod-b, in the second hour).
    let replayed = Part {
        pod: "pod-b",
        target_id: 2,
        start_ms: i64::from(base + 2 * 3600) * 1000 + 1_999_001,
        window_id: 0x5eed,
        insert_id: 3,
        truncated: true,
        stacks: vec![(vec!["main", "serve", "replayed"], 1000)],
    };
    for db in [&rolled, &raw] {
        write(db, &again).await;
        write(db, std::slice::from_ref(&replayed)).await;
    }
    let (resolution, total) = agree(
        &rolled_api,
        &raw_api,
        from,
        to,
        "written to after the build",
    )
    .await;
    assert_eq!(
        total,
        expected + 1000,
        "the replayed window counts, the redelivery does not"
    );
    assert_eq!(
        resolution["rollup_buckets"], 1,
        "the two hours written to are read raw"
    );

    let report = pass(rolled, &options, now, &mut ids).await.expect("pass");
    assert_eq!(
        hours_of(&report.built),
        [base + 3600, base + 2 * 3600],
        "exactly the hours written to are rebuilt"
    );
    // Another consumer whose pass listed an hour before it was rebuilt builds
    // nothing when its turn comes: a build with the hour's count exists.
    let listed = Due {
        service: SERVICE.into(),
        profile_type: "cpu".into(),
        bucket: base + 3600,
    };
    assert!(
        !build(rolled, &listed, ids.take()).await.expect("build"),
        "an hour already current is not built again"
    );
    let (resolution, total) = agree(&rolled_api, &raw_api, from, to, "rebuilt").await;
    assert_eq!(total, expected + 1000);
    assert_eq!(resolution["rollup_buckets"], 3);
    // The ledger's account of a rolled-up range: every part in it (the
    // redelivery is the same part), pod-b's one dropped event per part.
    let in_range: Vec<&Part> = parts
        .iter()
        .chain(std::iter::once(&replayed))
        .filter(|p| {
            let s = p.start_ms / 1000;
            s >= i64::from(base) - 1235 && s < i64::from(base) + 3 * 3600 + 778
        })
        .collect();
    let (_, fg) = get(&format!(
        "{rolled_api}/api/v1/flamegraph?service={SERVICE}&type=cpu&from={from}&to={to}"
    ))
    .await;
    assert_eq!(fg["metadata"]["window_parts"], in_range.len());
    assert_eq!(
        fg["metadata"]["dropped_events"],
        in_range.iter().filter(|p| p.target_id == 2).count()
    );
    let cut = in_range.iter().filter(|p| p.truncated).count();
    assert!(cut > 0, "the fixture truncates some parts in the range");
    assert_eq!(fg["metadata"]["truncated_parts"], cut);

    // A range inside one hour is read raw.
    let inside = (
        i64::from(base) * 1000 + 60_000,
        i64::from(base) * 1000 + 1_800_000,
    );
    let (resolution, _) = agree(&rolled_api, &raw_api, inside.0, inside.1, "inside an hour").await;
    assert_eq!(resolution["rollup_seconds"], Value::Null);
    twin.drop().await;
}

/// The server refusing every build (the rollup table missing, detached before
/// any build was recorded): the pass goes on over every hour, counts each
/// failure with the server's error, records no build, and every answer stays
/// the raw one; with the table back, the next pass builds them all and the
/// answers are still the raw ones. (Not drilled: `samples_rollup` missing
/// while builds are recorded; rolled-up reads then fail with the server's
/// error rather than fall back to raw.)
#[tokio::test(flavor = "multi_thread")]
async fn builds_the_server_refuses_leave_answers_exact_and_are_retried() {
    let twin = Twin::migrated(&clickhouse_client(), "rollup_refused").await;
    let rolled = &twin.rolled;
    let now = common::now_s();
    let base = base_of(now);
    let parts = windows(base);
    write(rolled, &parts).await;
    write(&twin.raw, &parts).await;
    let (from, to) = ragged_range(base);
    let (_apis, rolled_api, raw_api) = twin.apis(&clickhouse_url());
    let options = OPTIONS;
    let hours = [
        base - 3600,
        base,
        base + 3600,
        base + 2 * 3600,
        base + 3 * 3600,
    ];
    let mut ids = BuildIds::default();

    rolled
        .query("DETACH TABLE samples_rollup")
        .execute()
        .await
        .expect("detach");
    let refused = pass(rolled, &options, now, &mut ids)
        .await
        .expect("the pass itself goes on");
    let mut failed: Vec<u32> = refused.failed.iter().map(|(d, _)| d.bucket).collect();
    failed.sort_unstable();
    assert_eq!(failed, hours, "every hour tried and failed: {refused:?}");
    assert!(refused.built.is_empty(), "{refused:?}");
    assert!(
        refused
            .failed
            .iter()
            .all(|(_, e)| e.contains("Code: 60") && e.contains("samples_rollup")),
        "the server's error is kept: {refused:?}"
    );
    let (resolution, _) = agree(&rolled_api, &raw_api, from, to, "builds refused").await;
    assert_eq!(resolution["rollup_buckets"], 0, "no build is read");

    rolled
        .query("ATTACH TABLE samples_rollup")
        .execute()
        .await
        .expect("attach");
    let report = pass(rolled, &options, now, &mut ids).await.expect("pass");
    assert!(report.failed.is_empty(), "{report:?}");
    assert_eq!(hours_of(&report.built), hours, "retried: every hour built");
    let (resolution, _) = agree(&rolled_api, &raw_api, from, to, "built after the fault").await;
    assert_eq!(resolution["rollup_buckets"], 3);
    twin.drop().await;
}

/// docs/operations/replay.md's "re-ingesting a range that ClickHouse lost":
/// samples of a part were lost before its hour was built (the build is short,
/// and names the hour's full `stored_parts` count), then the range is cleared
/// the way the runbook says (every day partition of `samples`, `stored_parts`,
/// `samples_rollup` and `rollup_builds`) and written again. The short build
/// must not be read once the count is back to what it saw.
#[tokio::test(flavor = "multi_thread")]
async fn a_range_cleared_and_replayed_as_the_runbook_says_is_read_exactly() {
    let server = clickhouse_client();
    let twin = Twin::migrated(&server, "rollup_cleared").await;
    let rolled = &twin.rolled;
    let now = common::now_s();
    let base = base_of(now);
    let parts = windows(base);
    // The first part of the second whole hour lost its samples, not its record.
    let lost = parts
        .iter()
        .position(|p| p.start_ms / 1000 >= i64::from(base + 3600))
        .expect("a part in the hour");
    let mut damaged = parts.clone();
    damaged[lost].stacks.clear();
    write(rolled, &damaged).await;
    write(&twin.raw, &parts).await;
    let options = OPTIONS;
    let mut ids = BuildIds::default();
    let report = pass(rolled, &options, now, &mut ids).await.expect("pass");
    assert_eq!(report.built.len(), 5, "{report:?}");

    // The runbook: drop the range's days from the four tables, replay.
    for table in ["samples", "stored_parts", "samples_rollup", "rollup_builds"] {
        let days = server
            .query("SELECT DISTINCT partition FROM system.parts WHERE database = ? AND table = ? AND active")
            .bind(&twin.names[0])
            .bind(table)
            .fetch_all::<String>()
            .await
            .expect("partitions");
        for day in days {
            rolled
                .query(&format!("ALTER TABLE {table} DROP PARTITION '{day}'"))
                .execute()
                .await
                .expect("drop partition");
        }
    }
    write(rolled, &parts).await;
    let (from, to) = ragged_range(base);
    let (_apis, rolled_api, raw_api) = twin.apis(&clickhouse_url());
    let (resolution, _) = agree(&rolled_api, &raw_api, from, to, "replayed").await;
    assert_eq!(resolution["rollup_buckets"], 0, "nothing built since");
    let report = pass(rolled, &options, now, &mut ids).await.expect("pass");
    assert_eq!(report.built.len(), 5, "{report:?}");
    let (resolution, _) = agree(&rolled_api, &raw_api, from, to, "rebuilt").await;
    assert_eq!(resolution["rollup_buckets"], 3);
    twin.drop().await;
}

/// A query API of this release against a database before migration 8 (upgraded
/// before `migrate`, against the runbook's order) answers from raw windows and
/// says why in its log, rather than failing every long read.
#[tokio::test(flavor = "multi_thread")]
async fn a_database_before_migration_8_is_read_raw() {
    let database = unique_name("rollup_before8");
    javelin_schema::migrations::migrate_up_to(
        &clickhouse_client(),
        &database,
        MigrateOptions::default(),
        7,
    )
    .await
    .expect("the schema of migration 7");
    let start = common::now_s() / 10 * 10 - 1800;
    common::seed(&clickhouse_client().with_database(&database), start).await;
    let (_api, base, log) = start_api_at(&clickhouse_url(), &database, &[]);
    // Two hours and more: whole hours the API would read from rollups.
    let (from, to) = (
        i64::from(start - 3 * 3600) * 1000,
        i64::from(start + 60) * 1000,
    );
    let (status, fg) = get(&format!(
        "{base}/api/v1/flamegraph?service=svc&type=cpu&from={from}&to={to}"
    ))
    .await;
    assert_eq!(status, 200, "{fg}");
    assert_eq!(fg["total"], 230, "every seeded sample, read raw");
    assert!(fg["metadata"]["resolution"]["rollup_seconds"].is_null());
    assert!(
        !log.lines_with("no rollup tables").is_empty(),
        "the log says why: {}",
        log.text()
    );
    common::drop_database(&database).await;
}
