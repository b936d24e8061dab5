//! The query API against the real ClickHouse with known seeded windows: exact
//! totals, self / total, `other`-node arithmetic, filters, diff, exports,
//! health, targets, limits, errors and auth (the error contract in detail: `errors.rs`).

mod common;

use std::time::Duration;

use common::{drop_database, get, nodes, seeded_database, start_api};
use javelin_schema::testkit::{free_port, wait_for};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread")]
async fn the_api_answers_exactly_from_seeded_windows() {
    let (database, _, from, to) = seeded_database("query_api").await;
    let (_api, base) = start_api(&database, &[]);
    let q = |path: &str, extra: &str| {
        format!("{base}/api/v1/{path}?service=svc&type=cpu&from={from}&to={to}{extra}")
    };

    // Services, types, labels.
    let (_, v) = get(&format!("{base}/api/v1/services?from={from}&to={to}")).await;
    assert_eq!(v["services"], serde_json::json!(["svc"]));
    assert_eq!(
        (v["from"].as_i64(), v["to"].as_i64()),
        (Some(from), Some(to)),
        "the range read"
    );
    let (_, v) = get(&q("profile-types", "")).await;
    assert_eq!(v["types"][0]["name"], "cpu");
    assert_eq!(v["types"][0]["unit"], "nanoseconds");
    let (_, v) = get(&q("labels", "&label=pod")).await;
    assert_eq!(v["values"], serde_json::json!(["pod-a", "pod-b"]));
    assert_eq!(v["truncated"], false);

    // Flamegraph: exact totals, filters, metadata from the ledger.
    let (status, fg) = get(&q("flamegraph", "")).await;
    assert_eq!(status, 200, "{fg}");
    assert_eq!(fg["total"], 230);
    let all = nodes(&fg);
    let node = |name: &str, depth: usize| {
        all.iter()
            .find(|n| n.1 == name && n.0 == depth)
            .cloned()
            .unwrap_or_else(|| panic!("{name} at {depth}"))
    };
    assert_eq!(node("main", 1).2, 230);
    assert_eq!(node("a", 2).2, 110);
    assert_eq!(node("leaf", 3).3, 110, "self of leaf");
    assert_eq!(node("rec", 4).3, 30);
    assert_eq!(fg["metadata"]["scanned_rows"], 5);
    assert_eq!(fg["metadata"]["window_parts"], 2);
    assert_eq!(fg["metadata"]["truncated_parts"], 1);
    assert_eq!(fg["metadata"]["dropped_events"], 7);
    let (_, only_b) = get(&q("flamegraph", "&pod=pod-b")).await;
    assert_eq!(only_b["total"], 50);
    assert_eq!(only_b["metadata"]["truncated_parts"], 0);
    let (_, none) = get(&q("flamegraph", "&namespace=elsewhere")).await;
    assert_eq!(none["total"], 0);

    // `other` arithmetic: every level still sums to the total it covers.
    let (_, cut) = get(&q("flamegraph", "&max_nodes=4")).await;
    let cut_nodes = nodes(&cut);
    assert!(cut_nodes.len() <= 4, "{cut_nodes:?}");
    assert_eq!(cut["total"], 230);
    let level2: i64 = cut_nodes.iter().filter(|n| n.0 == 2).map(|n| n.2).sum();
    assert_eq!(level2, 230, "{cut_nodes:?}");
    assert!(cut_nodes.iter().any(|n| n.1 == "other"));
    assert!(cut["omitted_nodes"].as_u64().unwrap_or(0) > 0);

    // Top table: self and total, recursion counted once.
    let (_, top) = get(&q("top", "&sort=total&limit=3")).await;
    assert_eq!(top["functions"], 6);
    assert_eq!(top["total"], 230);
    assert_eq!(top["rows"][0]["name"], "main");
    assert_eq!(top["rows"][0]["total"], 230);
    assert_eq!(top["rows"][0]["self"], 0);
    assert_eq!(top["rows"].as_array().map(Vec::len), Some(3));
    let (_, by_self) = get(&q("top", "&sort=self")).await;
    assert_eq!(by_self["rows"][0]["name"], "leaf");
    assert_eq!(by_self["rows"][0]["self"], 110);
    let rec = by_self["rows"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["name"] == "rec"))
        .cloned()
        .expect("rec");
    assert_eq!(
        (rec["self"].as_i64(), rec["total"].as_i64()),
        (Some(30), Some(30))
    );

    // Diff of two pods, normalised by each side's total.
    let (status, diff) = get(&q("diff", "&pod=pod-a&right_pod=pod-b")).await;
    assert_eq!(status, 200, "{diff}");
    assert_eq!(
        (diff["left_total"].as_i64(), diff["right_total"].as_i64()),
        (Some(180), Some(50))
    );
    let names: Vec<String> = serde_json::from_value(diff["names"].clone()).expect("names");
    let levels: Vec<Vec<f64>> = serde_json::from_value(diff["levels"].clone()).expect("levels");
    let c = levels[2]
        .chunks(7)
        .find(|t| names[t[2] as usize] == "c")
        .expect("c in the diff");
    assert_eq!(&c[3..], &[0.0, 0.0, 40.0, 40.0]);
    assert!(
        (c[1] - 40.0 / 50.0).abs() < 1e-9,
        "c: 0 % left + 80 % right"
    );

    // Collapsed export.
    let text = reqwest::get(q("export/collapsed", "&pod=pod-a"))
        .await
        .expect("collapsed")
        .text()
        .await
        .expect("text");
    assert_eq!(text, "main;a;leaf 100\nmain;b 50\nmain;rec;rec;rec 30\n");

    // Health and targets.
    let (_, health) = get(&format!(
        "{base}/api/v1/health?service=svc&from={from}&to={to}&bucket=60"
    ))
    .await;
    assert_eq!(health["totals"]["windows"], 2);
    assert_eq!(health["totals"]["truncated_parts"], 1);
    assert_eq!(health["totals"]["accepted_parts"], 1);
    assert_eq!(health["totals"]["dropped_events"], 7);
    let (_, targets) = get(&format!(
        "{base}/api/v1/targets?service=svc&from={from}&to={to}"
    ))
    .await;
    assert_eq!(targets["targets"][1]["state"], "external_conflict");
    assert!(
        targets["targets"][1]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("/opt/other"))
    );
    // Every target with its counters, its state and what its cpu values measure.
    let rows: Vec<(&str, &str, &str, u64, u64)> = targets["targets"]
        .as_array()
        .expect("targets")
        .iter()
        .map(|t| {
            (
                t["pod"].as_str().unwrap_or("?"),
                t["state"].as_str().unwrap_or("?"),
                t["cpu_basis"].as_str().unwrap_or("?"),
                t["failed_collects"].as_u64().unwrap_or(99),
                t["oversized_messages"].as_u64().unwrap_or(99),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("pod-a", "profiling", "cpu time (async-profiler)", 2, 1),
            (
                "pod-b",
                "external_conflict",
                "sampled execution time: at most 5 running Java threads per period (JFR ExecutionSample)",
                0,
                0
            ),
            ("pod-c", "over_target_limit", "", 0, 0),
            (
                "pod-d",
                "profiling",
                "cpu time (JFR CPU-time sampler, JEP 509)",
                0,
                0
            ),
        ]
    );
    // How each session samples, as its agent reported it.
    assert_eq!(
        targets["targets"][0]["sampling"],
        "async-profiler: cpu every 10 ms; 60-s windows"
    );

    // Errors are JSON with a clear message; nothing reaches SQL unbound.
    for (url, needle) in [
        (
            format!("{base}/api/v1/flamegraph?type=cpu&from={from}&to={to}"),
            "`service` is required",
        ),
        (
            q("flamegraph", "&type=bogus").replace("type=cpu&", ""),
            "unknown profile type",
        ),
        (
            format!(
                "{base}/api/v1/flamegraph?service=svc&from={from}&to={}",
                from + 30 * 86_400_000
            ),
            "exceeds the limit",
        ),
        (q("flamegraph", "&max_nodes=1"), "max_nodes"),
        (q("labels", "&label=secret"), "unknown label"),
        (q("top", "&sort=sideways"), "unknown sort"),
        (
            format!("{base}/api/v1/services?from=abc&to=1"),
            "must be an integer",
        ),
    ] {
        let (status, body) = get(&url).await;
        assert_eq!(status, 400, "{url}: {body}");
        assert!(
            body["error"].as_str().is_some_and(|e| e.contains(needle)),
            "{url}: {body}"
        );
        assert_eq!(body["kind"], "bad_request", "{url}: {body}");
        assert!(body["request_id"].is_string(), "{url}: {body}");
    }
    let (status, body) = get(&q("flamegraph", "&pod=x' OR 1=1 --")).await;
    assert_eq!(
        (status, body["total"].as_i64()),
        (200, Some(0)),
        "quotes are values, not SQL"
    );
    let (status, body) = get(&format!("{base}/api/v1/nope")).await;
    assert_eq!((status, body["kind"].as_str()), (404, Some("not_found")));
    let (status, doc) = get(&format!("{base}/api/v1/openapi.json")).await;
    assert_eq!(status, 200);
    assert!(doc["paths"]["/api/v1/flamegraph"].is_object());

    drop_database(&database).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn limits_and_auth_are_enforced() {
    let (database, _, from, to) = seeded_database("query_limits").await;
    let token = "a-long-enough-test-token";
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let (_api, base) = start_api(
        &database,
        &[
            "--auth-token",
            token,
            "--max-rows-scanned",
            "2",
            "--metrics-listen",
            &metrics_addr,
        ],
    );
    let url = format!("{base}/api/v1/flamegraph?service=svc&from={from}&to={to}");
    let client = reqwest::Client::new();
    let anonymous = client.get(&url).send().await.expect("request");
    assert_eq!(anonymous.status().as_u16(), 401);
    let body: Value = anonymous.json().await.expect("json");
    assert_eq!(body["kind"], "unauthorized", "{body}");
    let wrong = client
        .get(&url)
        .bearer_auth("nope")
        .send()
        .await
        .expect("request");
    assert_eq!(wrong.status().as_u16(), 401);
    // Authorised, but the selection reads more rows than allowed: a clear 422.
    let limited = client
        .get(&url)
        .bearer_auth(token)
        .send()
        .await
        .expect("request");
    assert_eq!(limited.status().as_u16(), 422);
    let body: Value = limited.json().await.expect("json");
    assert_eq!(body["kind"], "scan_limit", "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("max-rows-scanned")),
        "{body}"
    );
    let open = client
        .get(format!("{base}/api/v1/openapi.json"))
        .send()
        .await
        .expect("request");
    assert_eq!(open.status().as_u16(), 200, "the document is public");

    // The metrics endpoint counts every answer by route pattern and status,
    // needs no token, and is ready while ClickHouse answers.
    let metrics = reqwest::get(format!("http://{metrics_addr}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let count = |route: &str, status: &str| {
        metrics
            .lines()
            .find(|l| {
                l.starts_with("javelin_query_requests_total{")
                    && l.contains(&format!("route=\"{route}\""))
                    && l.contains(&format!("status=\"{status}\""))
            })
            .and_then(|l| l.rsplit(' ').next())
            .map(str::to_string)
    };
    assert_eq!(
        count("/api/v1/flamegraph", "401").as_deref(),
        Some("2"),
        "{metrics}"
    );
    assert_eq!(
        count("/api/v1/flamegraph", "422").as_deref(),
        Some("1"),
        "{metrics}"
    );
    assert_eq!(
        count("/api/v1/openapi.json", "200").as_deref(),
        Some("1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("javelin_query_request_duration_seconds_bucket{"),
        "{metrics}"
    );
    wait_for("/readyz says ready", Duration::from_secs(20), || {
        let url = format!("http://{metrics_addr}/readyz");
        async move {
            let status = reqwest::get(url).await.ok()?.status().as_u16();
            (status == 200).then_some(())
        }
    })
    .await;
    drop_database(&database).await;
}

/// A window part written twice (as a retry, redelivery or replay does) is
/// counted once: the copies carry different insert ids until merges collapse
/// them, and the query counts one id per window part. A second window of the
/// same target starting in the same second (after a stall) is a different
/// part and counts in full.
#[tokio::test(flavor = "multi_thread")]
async fn a_window_part_written_twice_counts_once() {
    use javelin_schema::rows::{SampleRow, table};
    let (database, start, from, to) = seeded_database("query_dup").await;
    let db = javelin_schema::testkit::clickhouse_client().with_database(&database);
    // pod-b's part again, as a second attempt, in a new insert (a new data part, not merged yet).
    let again: Vec<SampleRow> = db
        .query("SELECT * FROM samples WHERE pod = 'pod-b'")
        .fetch_all()
        .await
        .expect("pod-b rows");
    assert_eq!(again.len(), 2);
    let mut samples = db
        .insert::<SampleRow>(table::SAMPLES)
        .await
        .expect("insert");
    for row in &again {
        samples
            .write(&SampleRow {
                insert_id: 2,
                ..row.clone()
            })
            .await
            .expect("sample");
    }
    samples.end().await.expect("samples");
    common::record_stored(&db, 2, start, again[0].window_id, 2).await;
    let raw: i64 = db
        .query("SELECT sum(value) FROM samples")
        .fetch_one()
        .await
        .expect("raw sum");
    assert_eq!(raw, 280, "the copy is physically there");

    let (_api, base) = start_api(&database, &[]);
    let (_, fg) = get(&format!(
        "{base}/api/v1/flamegraph?service=svc&type=cpu&from={from}&to={to}"
    ))
    .await;
    assert_eq!(fg["total"], 230, "counted once");
    let (_, top) = get(&format!(
        "{base}/api/v1/top?service=svc&type=cpu&from={from}&to={to}&sort=total"
    ))
    .await;
    assert_eq!(top["total"], 230);

    // A catch-up window of pod-b in the same second: another part, counted in full.
    let mut samples = db
        .insert::<SampleRow>(table::SAMPLES)
        .await
        .expect("insert");
    for row in &again {
        samples
            .write(&SampleRow {
                window_id: row.window_id ^ 0x5a5a,
                insert_id: 7,
                ..row.clone()
            })
            .await
            .expect("sample");
    }
    samples.end().await.expect("samples");
    common::record_stored(&db, 2, start, again[0].window_id ^ 0x5a5a, 7).await;
    let (_, fg) = get(&format!(
        "{base}/api/v1/flamegraph?service=svc&type=cpu&from={from}&to={to}"
    ))
    .await;
    assert_eq!(fg["total"], 280, "two windows of one second both count");

    // A copy nobody named in stored_parts (a writer that records nothing, or a
    // crash between the samples and their record) is never counted, even with
    // a smaller insert id.
    let mut samples = db
        .insert::<SampleRow>(table::SAMPLES)
        .await
        .expect("insert");
    for row in &again {
        samples
            .write(&SampleRow {
                insert_id: 0,
                ..row.clone()
            })
            .await
            .expect("sample");
    }
    samples.end().await.expect("samples");
    let (_, fg) = get(&format!(
        "{base}/api/v1/flamegraph?service=svc&type=cpu&from={from}&to={to}"
    ))
    .await;
    assert_eq!(fg["total"], 280, "an unrecorded copy does not count");

    // A part copied by migration 3 (insert id 0, window id made from the
    // second) wins over every later copy of the same target and second: those
    // are redeliveries or replays of the range ingested before the upgrade.
    let migrated_id = 0xfeed;
    let mut samples = db
        .insert::<SampleRow>(table::SAMPLES)
        .await
        .expect("insert");
    for row in &again {
        samples
            .write(&SampleRow {
                window_id: migrated_id,
                insert_id: 0,
                ..row.clone()
            })
            .await
            .expect("sample");
    }
    samples.end().await.expect("samples");
    common::record_stored(&db, 2, start, migrated_id, 0).await;
    let (_, fg) = get(&format!(
        "{base}/api/v1/flamegraph?service=svc&type=cpu&from={from}&to={to}"
    ))
    .await;
    assert_eq!(
        fg["total"], 230,
        "pod-b's migrated part alone: its later copies and the same-second window are redeliveries"
    );
    drop_database(&database).await;
}

/// An upgrade from before migration 3 copies `samples` once, straight into
/// migration 7's layout: what the user then sees equals the same profiles
/// written by a current consumer, though the old table held every row twice (a
/// redelivery, not merged yet) and knew no window parts.
#[tokio::test(flavor = "multi_thread")]
async fn an_upgrade_from_before_migration_3_counts_every_sample_once() {
    use javelin_schema::migrations::{MigrateOptions, migrate, migrate_up_to};
    let server = javelin_schema::testkit::clickhouse_client();
    // The same profiles in a current database (the reference)…
    let current = javelin_schema::testkit::unique_name("query_fold_current");
    migrate(&server, &current, MigrateOptions::default())
        .await
        .expect("the current schema");
    let hour = (common::now_s() - 7200) / 3600 * 3600;
    let (early, late) = (hour - 13, hour + 47);
    let reference = server.clone().with_database(&current);
    common::seed(&reference, early).await;
    common::seed(&reference, late).await;
    // …and in one of migration 2, filled from it: the old columns, twice.
    let old = javelin_schema::testkit::unique_name("query_fold_old");
    migrate_up_to(&server, &old, MigrateOptions::default(), 2)
        .await
        .expect("the schema of migration 2");
    let columns = "service, profile_type, window_start, cluster, namespace, pod, container, \
                   node, target_id, stack_id, value, count";
    for statement in [
        format!("INSERT INTO {old}.samples ({columns}) SELECT {columns} FROM {current}.samples"),
        format!("INSERT INTO {old}.samples ({columns}) SELECT {columns} FROM {current}.samples"),
        format!("INSERT INTO {old}.stacks SELECT * FROM {current}.stacks"),
        format!("INSERT INTO {old}.ingest_ledger SELECT * FROM {current}.ingest_ledger"),
    ] {
        server
            .query(&statement)
            .execute()
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
    let report = migrate(&server, &old, MigrateOptions::default())
        .await
        .expect("the upgrade");
    assert_eq!(report.applied, vec![3, 4, 5, 6, 7, 8]);
    let tables: Vec<String> = server
        .query("SELECT name FROM system.tables WHERE database = ? AND name LIKE 'samples%' ORDER BY name")
        .bind(&old)
        .fetch_all()
        .await
        .expect("tables");
    assert_eq!(
        tables,
        ["samples", "samples_rollup", "samples_v1"],
        "one copy, no samples_v3"
    );

    let (_reference_api, reference_base) = start_api(&current, &[]);
    let (_upgraded_api, upgraded_base) = start_api(&old, &[]);
    let ms = |s: u32| i64::from(s) * 1000;
    let ranges = [
        (ms(early - 30), ms(late + 30)),
        (ms(hour + 5), ms(late + 30)),
    ];
    for (from, to) in ranges {
        for (path, extra) in [
            ("flamegraph", ""),
            ("flamegraph", "&pod=pod-b"),
            ("top", "&sort=total"),
            ("diff", "&pod=pod-a&right_pod=pod-b"),
            ("timeline", "&step=60"),
        ] {
            let query = format!("/api/v1/{path}?service=svc&type=cpu&from={from}&to={to}{extra}");
            let (status, want) = get(&format!("{reference_base}{query}")).await;
            assert_eq!(status, 200, "{query}: {want}");
            let (status, got) = get(&format!("{upgraded_base}{query}")).await;
            assert_eq!(status, 200, "{query}: {got}");
            assert_eq!(
                got, want,
                "{query}: the upgraded database answers differently"
            );
        }
    }
    // What the seed makes the user see: each window 230.
    let (_, both) = get(&format!(
        "{upgraded_base}/api/v1/flamegraph?service=svc&type=cpu&from={}&to={}",
        ms(early - 30),
        ms(late + 30)
    ))
    .await;
    assert_eq!(both["total"], 460, "{both}");
    drop_database(&current).await;
    drop_database(&old).await;
}

/// Migration 7 (samples with dictionaries and codecs) run on a database being read:
/// every answer a user sees is the same before and after, on ranges that cut
/// through an hour, with a redelivered copy and an unrecorded one in the data.
#[tokio::test(flavor = "multi_thread")]
async fn an_upgrade_to_migration_7_changes_no_answer() {
    use javelin_schema::migrations::{MigrateOptions, migrate, migrate_up_to};
    use javelin_schema::rows::{SampleRow, table};
    let database = javelin_schema::testkit::unique_name("query_upgrade7");
    let server = javelin_schema::testkit::clickhouse_client();
    migrate_up_to(&server, &database, MigrateOptions::default(), 6)
        .await
        .expect("the schema of migration 6");
    let db = server.clone().with_database(&database);
    // Two windows: 13 s before an hour boundary and 47 s after it.
    let hour = (common::now_s() - 7200) / 3600 * 3600;
    let (early, late) = (hour - 13, hour + 47);
    common::seed(&db, early).await;
    common::seed(&db, late).await;
    // pod-b's late part again (a redelivery, recorded) and once unrecorded.
    let again: Vec<SampleRow> = db
        .query("SELECT * FROM samples WHERE pod = 'pod-b' AND window_start = ?")
        .bind(late)
        .fetch_all()
        .await
        .expect("pod-b rows");
    for insert_id in [2, 0] {
        let mut samples = db
            .insert::<SampleRow>(table::SAMPLES)
            .await
            .expect("insert");
        for row in &again {
            samples
                .write(&SampleRow {
                    insert_id,
                    ..row.clone()
                })
                .await
                .expect("sample");
        }
        samples.end().await.expect("samples");
    }
    common::record_stored(&db, 2, late, again[0].window_id, 2).await;

    let (_api, base) = start_api(&database, &[]);
    let ms = |s: u32| i64::from(s) * 1000;
    // Both windows; the late one only (the range starts inside its hour); the early one only.
    let ranges = [
        (ms(early - 30), ms(late + 30)),
        (ms(hour + 5), ms(late + 30)),
        (ms(early - 30), ms(hour)),
    ];
    let answers = || async {
        let mut out = Vec::new();
        for (from, to) in ranges {
            for (path, extra) in [
                ("flamegraph", ""),
                ("flamegraph", "&pod=pod-b"),
                ("top", "&sort=total"),
                ("diff", "&pod=pod-a&right_pod=pod-b"),
                ("timeline", "&step=60"),
                ("labels", "&label=pod"),
            ] {
                let url =
                    format!("{base}/api/v1/{path}?service=svc&type=cpu&from={from}&to={to}{extra}");
                let (status, body) = get(&url).await;
                assert_eq!(status, 200, "{url}: {body}");
                out.push((url, body));
            }
            let collapsed = reqwest::get(format!(
                "{base}/api/v1/export/collapsed?service=svc&type=cpu&from={from}&to={to}"
            ))
            .await
            .expect("collapsed")
            .text()
            .await
            .expect("text");
            out.push(("collapsed".into(), Value::String(collapsed)));
        }
        out
    };
    let before = answers().await;
    // What the seed makes the user see: each window 230, pod-b's counted once.
    assert_eq!(before[0].1["total"], 460, "{}", before[0].1);
    assert_eq!(before[7].1["total"], 230, "{}", before[7].1);
    assert_eq!(before[14].1["total"], 230, "{}", before[14].1);

    let report = migrate(&server, &database, MigrateOptions::default())
        .await
        .expect("migration 7");
    assert_eq!(report.applied, vec![7, 8]);
    let stack_id: String = db
        .query("SELECT type FROM system.columns WHERE database = currentDatabase() AND table = 'samples' AND name = 'stack_id'")
        .fetch_one()
        .await
        .expect("stack_id's type");
    assert_eq!(stack_id, "LowCardinality(UInt64)");
    let after = answers().await;
    for ((url, old), (_, new)) in before.iter().zip(&after) {
        assert_eq!(old, new, "{url}: the answer changed with the layout");
    }
    drop_database(&database).await;
}
