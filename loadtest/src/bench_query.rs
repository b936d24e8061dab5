//! `bench-query`: latency of the query API's read endpoints (flamegraph, top
//! table, timeline, tags, sandwich, ranked diff) for one service × 1 h × N
//! pods, seeded through the real path (agent publisher → Kafka →
//! javelin-consumer → ClickHouse). The baseline in the same run is the bare
//! aggregation the API builds on (`sum(value) … GROUP BY stack_id`, no
//! deduplication), timed straight against ClickHouse. The requests of all cases
//! and the baseline's are interleaved (one of each per round), so a neighbour's
//! load on a shared machine falls on every case alike.
//!
//! Every API request must meet p50 ≤ 300 ms and p99 ≤ 1 s, and the answers
//! must agree with each other (the timeline's and the tags' totals with the
//! flamegraph's, the sandwich's with the top table's, the ranked diff's sides
//! with the flamegraphs of the two halves, whose grown function is its first
//! row), before and after a tenth of the parts is written twice; the run fails
//! otherwise, after printing the table.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use javelin_agent::aggregate::{Bounds, WindowAggregator};
use javelin_agent::jfr_parse::Frame;
use javelin_agent::publish::{Publisher, PublisherConfig};
use javelin_agent::spool::Destination;
use javelin_schema::wire::{ProfileType, TargetIdentity};
use serde_json::Value;

use crate::bench_consumer::futures_join;

/// The targets for every API request of this benchmark.
const P50_TARGET_MS: f64 = 300.0;
const P99_TARGET_MS: f64 = 1000.0;

/// The stack whose weight grows in the second half-hour (the ranked diff's row 0).
const GROWN_STACK: u32 = 99;

/// The mid-level frame the sandwich is timed for (in every 40th stack).
const SANDWICH_MID: &str = "app.service.Service0.execute";
/// The root-most frame: in every stack, the sandwich's worst case.
const SANDWICH_ROOT: &str = "java.lang.Thread.run";

/// The timeline's "nice" steps (seconds), as the API's contract lists them.
const NICE_STEPS: [i64; 15] = [
    10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400,
];

#[derive(Debug, Clone)]
pub struct BenchQuery {
    pub brokers: String,
    pub clickhouse_url: String,
    pub pods: u32,
    pub stacks: u32,
    pub window_secs: i64,
    pub requests: usize,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Frames of stack `k`: a realistic depth (8) with shared upper layers.
fn frames(k: u32) -> Vec<Frame> {
    [
        "java.lang.Thread.run".to_string(),
        "io.netty.channel.nio.NioEventLoop.run".to_string(),
        "app.http.Server.handle".to_string(),
        format!("app.api.Controller{}.serve", k % 8),
        format!("app.service.Service{}.execute", k % 40),
        format!("app.repo.Repository{}.query", k % 120),
        format!("app.codec.Codec{}.decode", k % 400),
        format!("app.work.Step{k}.compute"),
    ]
    .iter()
    .map(|n| Frame::synthetic(n))
    .collect()
}

/// The leaf of the stack that grows in the second half.
fn grown_stack(stacks: u32) -> u32 {
    GROWN_STACK.min(stacks.saturating_sub(1))
}

/// Value of stack `k` of `pod` in a window: Zipf-like (a few stacks carry most
/// of the time); in the second half-hour the grown stack weighs twice stack 0.
fn weight(stacks: u32, k: u32, pod: u32, second_half: bool) -> i64 {
    let top = 10_000_000 * i64::from(stacks);
    if second_half && k == grown_stack(stacks) {
        2 * top + i64::from(pod)
    } else {
        top / (i64::from(k) + 1) + i64::from(pod)
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// One GET; the body, or an error naming the URL and the API's answer.
async fn get(http: &reqwest::Client, url: &str) -> anyhow::Result<Vec<u8>> {
    let response = http.get(url).send().await?;
    let status = response.status();
    let body = response.bytes().await?;
    if !status.is_success() {
        bail!("{url}: {status}: {}", String::from_utf8_lossy(&body));
    }
    Ok(body.to_vec())
}

/// One GET; the body as JSON and its size.
async fn get_json(http: &reqwest::Client, url: &str) -> anyhow::Result<(Value, usize)> {
    let body = get(http, url).await?;
    let json = serde_json::from_slice(&body).with_context(|| format!("{url}: not JSON"))?;
    Ok((json, body.len()))
}

/// What a timed request is.
enum Request {
    /// A GET of the query API.
    Api(String),
    /// The bare aggregation, straight against ClickHouse.
    Baseline,
}

/// One timed request kind and what its requests took.
struct Case {
    name: String,
    request: Request,
    /// Latencies (ms), sorted once timed.
    times: Vec<f64>,
    /// The last answer's size.
    size: usize,
    /// Sample rows read: what the API reports (`metadata.scanned_rows`, both
    /// sides of a diff), or for the baseline the rows in the range.
    scanned_rows: u64,
}

impl Case {
    fn api(name: &str, url: String) -> Self {
        Case {
            name: name.to_string(),
            request: Request::Api(url),
            times: Vec::new(),
            size: 0,
            scanned_rows: 0,
        }
    }
}

/// The baseline query's range (seconds) and the stacks it must see.
struct Baseline<'a> {
    db: &'a clickhouse::Client,
    from_s: u32,
    to_s: u32,
    stacks: usize,
}

impl Baseline<'_> {
    async fn run(&self) -> anyhow::Result<()> {
        let rows: Vec<(u64, i64)> = self
            .db
            .query("SELECT stack_id, sum(value) FROM samples WHERE service = 'bench' AND profile_type = 'cpu' AND window_start >= toDateTime(?) AND window_start < toDateTime(?) GROUP BY stack_id")
            .bind(self.from_s)
            .bind(self.to_s)
            .fetch_all()
            .await?;
        if rows.len() != self.stacks {
            bail!(
                "baseline saw {} stacks, expected {}",
                rows.len(),
                self.stacks
            );
        }
        Ok(())
    }

    async fn rows(&self) -> anyhow::Result<u64> {
        Ok(self
            .db
            .query("SELECT count() FROM samples WHERE service = 'bench' AND profile_type = 'cpu' AND window_start >= toDateTime(?) AND window_start < toDateTime(?)")
            .bind(self.from_s)
            .bind(self.to_s)
            .fetch_one()
            .await?)
    }
}

/// Times `requests` rounds of one request of every case, interleaved, so a
/// neighbour's load on a shared machine falls on all cases alike.
async fn time_rounds(
    http: &reqwest::Client,
    baseline: &Baseline<'_>,
    cases: &mut [Case],
    requests: usize,
) -> anyhow::Result<()> {
    for _ in 0..requests {
        for case in cases.iter_mut() {
            let started = Instant::now();
            match &case.request {
                Request::Api(url) => {
                    let body = get(http, url).await?;
                    case.times.push(started.elapsed().as_secs_f64() * 1000.0);
                    case.size = body.len();
                    let body: Value = serde_json::from_slice(&body)
                        .with_context(|| format!("{url}: not JSON"))?;
                    case.scanned_rows = ["metadata", "left", "right"]
                        .iter()
                        .filter_map(|m| body[m]["scanned_rows"].as_u64())
                        .sum();
                }
                Request::Baseline => {
                    baseline.run().await?;
                    case.times.push(started.elapsed().as_secs_f64() * 1000.0);
                }
            }
        }
    }
    for case in cases.iter_mut() {
        case.times.sort_by(f64::total_cmp);
    }
    Ok(())
}

fn int(body: &Value, field: &str) -> anyhow::Result<i64> {
    body[field]
        .as_i64()
        .with_context(|| format!("no integer {field:?} in {}", abbreviated(body)))
}

fn abbreviated(body: &Value) -> String {
    let text = body.to_string();
    match text.char_indices().nth(400) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text,
    }
}

/// The flamegraph's root value.
async fn flamegraph_total(http: &reqwest::Client, url: &str) -> anyhow::Result<i64> {
    int(&get_json(http, url).await?.0, "total")
}

/// Sum of the values of dense `[t, v]` points, checking they are `step` apart.
fn points_sum(points: &Value, step: i64) -> anyhow::Result<i64> {
    let points = points.as_array().context("points is not an array")?;
    let mut sum = 0;
    let mut previous: Option<i64> = None;
    for p in points {
        let (t, v) = (p[0].as_i64(), p[1].as_i64());
        let (Some(t), Some(v)) = (t, v) else {
            bail!("a point that is not [t, v]: {p}");
        };
        if let Some(previous) = previous
            && t != previous + step
        {
            bail!("points not dense: {previous} then {t} (step {step})");
        }
        previous = Some(t);
        sum += v;
    }
    Ok(sum)
}

/// The default timeline step the contract promises for this data: the first
/// nice step of at least span / 240 and at least the window length.
fn expected_step(span_s: i64, window_secs: i64) -> i64 {
    let at_least = (span_s + 239) / 240;
    NICE_STEPS
        .iter()
        .copied()
        .find(|&s| s >= at_least.max(window_secs))
        .unwrap_or(86_400)
}

/// Where the API answers; every check appends what failed to `failures`.
struct Api<'a> {
    http: &'a reqwest::Client,
    base: &'a str,
    /// The hour: `from`, `to` (ms).
    range: (i64, i64),
    /// Prefixes the failures of checks.
    phase: &'static str,
    failures: &'a mut Vec<String>,
}

impl Api<'_> {
    /// `path` for the bench service's CPU profile over the hour.
    fn url(&self, path: &str, extra: &str) -> String {
        self.url_in(path, self.range, extra)
    }

    fn url_in(&self, path: &str, (from, to): (i64, i64), extra: &str) -> String {
        format!(
            "{}/api/v1/{path}?service=bench&type=cpu&from={from}&to={to}{extra}",
            self.base
        )
    }

    /// The ranked diff of the first against the second half-hour.
    fn diff_url(&self) -> String {
        let (from, to) = self.range;
        let mid = from + (to - from) / 2;
        self.url_in(
            "diff/functions",
            (from, mid),
            &format!("&right_from={mid}&right_to={to}"),
        )
    }

    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            let what = format!("{}{}", self.phase, what());
            eprintln!("check failed: {what}");
            self.failures.push(what);
        }
    }
}

/// The cross-checks between the endpoints' answers.
async fn check_answers(api: &mut Api<'_>, cfg: &BenchQuery) -> anyhow::Result<()> {
    let (from, to) = api.range;
    let mid = from + (to - from) / 2;
    let flame_total = flamegraph_total(api.http, &api.url("flamegraph", "")).await?;

    // Timeline: dense points of the promised step, summing to the flamegraph's total.
    let (timeline, _) = get_json(api.http, &api.url("timeline", "")).await?;
    let step = int(&timeline, "step_seconds")?;
    let want_step = expected_step((to - from) / 1000, cfg.window_secs);
    api.check(step == want_step, || {
        format!("timeline: default step {step} s, expected {want_step} s")
    });
    let timeline_total = int(&timeline, "total")?;
    let points = points_sum(&timeline["points"], step)?;
    api.check(timeline_total == flame_total && points == flame_total, || {
        format!(
            "timeline: total {timeline_total}, points sum {points}, flamegraph total {flame_total}"
        )
    });

    // Tags by pod: the 10 largest values and the rest add up to the flamegraph's total.
    let (tags, _) = get_json(api.http, &api.url("tags", "&label=pod")).await?;
    let values = tags["values"].as_array().context("tags: no values")?;
    let mut sum = 0;
    let mut largest = i64::MAX;
    for v in values {
        let total = int(v, "total")?;
        let points = points_sum(&v["points"], int(&tags, "step_seconds")?)?;
        api.check(points == total, || {
            format!(
                "tags: value {} total {total}, points sum {points}",
                v["value"]
            )
        });
        api.check(total <= largest, || {
            format!("tags: values not by total desc at {}", v["value"])
        });
        largest = total;
        sum += total;
    }
    let other = int(&tags["other"], "total")?;
    let other_values = int(&tags["other"], "values")?;
    let tags_total = int(&tags, "total")?;
    let distinct = int(&tags, "distinct_values")?;
    let shown = i64::from(cfg.pods.min(10));
    api.check(
        values.len() as i64 == shown && other_values == i64::from(cfg.pods) - shown,
        || {
            format!(
                "tags: {} values + {other_values} in other, expected {shown} + {}",
                values.len(),
                i64::from(cfg.pods) - shown
            )
        },
    );
    api.check(distinct == i64::from(cfg.pods), || {
        format!("tags: {distinct} distinct pods, expected {}", cfg.pods)
    });
    api.check(
        sum + other == tags_total && tags_total == flame_total,
        || {
            format!(
                "tags: values {sum} + other {other} vs total {tags_total}, flamegraph total {flame_total}"
            )
        },
    );

    // Sandwich: total and self are the top table's for that function.
    let (top, _) = get_json(api.http, &api.url("top", "&sort=total&limit=10000")).await?;
    let rows = top["rows"].as_array().context("top: no rows")?;
    for function in [SANDWICH_MID, SANDWICH_ROOT] {
        let row = rows
            .iter()
            .find(|r| r["name"] == function)
            .with_context(|| format!("{function} is not in the top table"))?;
        let (top_total, top_self) = (int(row, "total")?, int(row, "self")?);
        let (sandwich, _) = get_json(
            api.http,
            &api.url("sandwich", &format!("&function={function}")),
        )
        .await?;
        let (total, self_value) = (int(&sandwich, "total")?, int(&sandwich, "self")?);
        api.check(total == top_total && self_value == top_self, || {
            format!(
                "sandwich {function}: total {total} self {self_value}; top table: total {top_total} self {top_self}"
            )
        });
        for tree in ["callers", "callees"] {
            let t = &sandwich[tree];
            let (name, root) = (t["names"][0].as_str(), t["total"].as_i64());
            api.check(name == Some(function) && root == Some(total), || {
                format!("sandwich {function}: {tree} root {name:?} = {root:?}, total {total}")
            });
        }
        if function == SANDWICH_ROOT {
            api.check(total == flame_total, || {
                format!("sandwich {function}: total {total}, flamegraph total {flame_total}")
            });
        }
    }

    // Ranked diff, first vs second half-hour: its sides are the halves' flamegraphs,
    // and the function made to grow is row 0.
    let left = flamegraph_total(api.http, &api.url_in("flamegraph", (from, mid), "")).await?;
    let right = flamegraph_total(api.http, &api.url_in("flamegraph", (mid, to), "")).await?;
    let (diff, _) = get_json(api.http, &api.diff_url()).await?;
    let (lt, rt) = (int(&diff, "left_total")?, int(&diff, "right_total")?);
    api.check(lt == left && rt == right, || {
        format!(
            "ranked diff: left_total {lt} right_total {rt}; flamegraphs of the halves {left} and {right}"
        )
    });
    let grown = format!("app.work.Step{}.compute", grown_stack(cfg.stacks));
    let first = &diff["rows"][0];
    api.check(first["name"] == grown.as_str(), || {
        format!(
            "ranked diff: row 0 is {}, expected {grown}",
            abbreviated(first)
        )
    });
    Ok(())
}

pub async fn run(cfg: BenchQuery) -> anyhow::Result<()> {
    let run = format!("bench_query_{}", std::process::id());
    let topic = format!("{run}.profiles");
    let (server, db) =
        javelin_loadtest::servers::bench_setup(&cfg.brokers, &cfg.clickhouse_url, &run).await?;

    // One hour of windows for every pod, published as the agent does.
    let windows_per_pod = (3600 / cfg.window_secs) as u32;
    let expected = u64::from(cfg.pods) * u64::from(windows_per_pod) * u64::from(cfg.stacks);
    eprintln!(
        "seeding {expected} sample rows: {} pods × {windows_per_pod} windows × {} stacks",
        cfg.pods, cfg.stacks
    );
    let publisher = Publisher::new(PublisherConfig {
        brokers: cfg.brokers.clone(),
        profiles_topic: topic.clone(),
        status_topic: format!("{run}.status"),
        send_timeout: Duration::from_secs(120),
        properties: vec![],
    })?;
    let hour_start = now_ms() / 60_000 * 60_000 - 3_600_000;
    let mid = hour_start + 1_800_000;
    let stacks: Vec<_> = (0..cfg.stacks).map(|k| frames(k).into()).collect();
    for w in 0..windows_per_pod {
        let start = hour_start + i64::from(w) * cfg.window_secs * 1000;
        let mut payloads = Vec::new();
        for pod in 0..cfg.pods {
            let target = TargetIdentity {
                service: "bench".into(),
                namespace: "prod".into(),
                pod: format!("bench-{pod}"),
                container: "app".into(),
                target_id: u64::from(pod) + 1,
                ..Default::default()
            };
            let mut agg = WindowAggregator::new(Bounds {
                max_stacks_per_window: u64::MAX,
                ..Bounds::default()
            });
            for (k, s) in stacks.iter().enumerate() {
                let value = weight(cfg.stacks, k as u32, pod, start >= mid);
                agg.add(ProfileType::Cpu, s, value, 1);
            }
            for window in agg.finish(
                &target,
                start,
                start + cfg.window_secs * 1000,
                &Default::default(),
                0,
                0,
            ) {
                payloads.push(window.to_bytes());
            }
        }
        let results = futures_join(
            payloads
                .iter()
                .map(|p| publisher.send_to(Destination::Profiles, "bench", p, None)),
        )
        .await;
        for r in results {
            r?;
        }
    }

    // The real consumer stores them.
    let (_, stored) = javelin_loadtest::servers::consume_until_stored(
        &db,
        javelin_loadtest::servers::consumer_args(&cfg.clickhouse_url, &cfg.brokers, &run),
        std::env::temp_dir().join(format!("{run}.consumer.log")),
        expected,
    )
    .await?;
    eprintln!("stored in {:.1} s", stored.as_secs_f64());
    let bin = |name: &str| -> anyhow::Result<std::path::PathBuf> {
        Ok(std::env::current_exe()?.with_file_name(name))
    };

    // The query API, release build, on a free port.
    let mut api = Command::new(bin("javelin-query")?)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--clickhouse-url",
            &cfg.clickhouse_url,
        ])
        .args(["--database", &run])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting javelin-query")?;
    let mut failures = Vec::new();
    let measured = measure(&cfg, &db, &mut api, hour_start, &mut failures).await;
    let _ = api.kill();
    let _ = api.wait();
    let cases = match measured {
        Ok(cases) => cases,
        Err(e) => {
            server
                .query(&format!("DROP DATABASE {run}"))
                .execute()
                .await?;
            return Err(e);
        }
    };

    println!(
        "{expected} sample rows (1 service × 1 h × {} pods, {}-s windows, {} stacks), {} requests each",
        cfg.pods, cfg.window_secs, cfg.stacks, cfg.requests
    );
    println!();
    println!("| request | p50 | p99 | rows scanned | response | p50 / baseline p50 | target |");
    println!("|---|---|---|---|---|---|---|");
    let base_p50 = cases
        .iter()
        .find(|c| matches!(c.request, Request::Baseline))
        .map_or(0.0, |c| percentile(&c.times, 0.5));
    for c in &cases {
        let (p50, p99) = (percentile(&c.times, 0.5), percentile(&c.times, 0.99));
        let rows = crate::bench_storage::thousands(c.scanned_rows);
        if matches!(c.request, Request::Baseline) {
            println!(
                "| {} | {p50:.0} ms | {p99:.0} ms | {rows} | | 1.00 | |",
                c.name
            );
            continue;
        }
        let met = p50 <= P50_TARGET_MS && p99 <= P99_TARGET_MS;
        if !met {
            failures.push(format!(
                "{}: p50 {p50:.0} ms, p99 {p99:.0} ms (target p50 ≤ {P50_TARGET_MS} ms, p99 ≤ {P99_TARGET_MS} ms)",
                c.name
            ));
        }
        println!(
            "| {} | {p50:.0} ms | {p99:.0} ms | {rows} | {:.1} KiB | {:.2} | {} |",
            c.name,
            c.size as f64 / 1024.0,
            p50 / base_p50,
            if met { "met" } else { "**MISSED**" }
        );
    }
    server
        .query(&format!("DROP DATABASE {run}"))
        .execute()
        .await?;
    if !failures.is_empty() {
        bail!(
            "{} target(s) missed or check(s) failed:\n  {}",
            failures.len(),
            failures.join("\n  ")
        );
    }
    println!();
    println!(
        "All targets met (p50 ≤ {P50_TARGET_MS} ms, p99 ≤ {P99_TARGET_MS} ms) and all cross-checks passed."
    );
    Ok(())
}

/// Copies the rows of `table` that match `filter` with `insert_id + 1`: a
/// second write attempt of the same window parts. Every other column is
/// copied as it is, whatever columns later migrations add.
async fn rewrite(db: &clickhouse::Client, table: &str, filter: &str) -> anyhow::Result<()> {
    let columns: Vec<String> = db
        .query(
            "SELECT name FROM system.columns WHERE database = currentDatabase() AND table = ? \
             AND default_kind NOT IN ('MATERIALIZED', 'ALIAS')",
        )
        .bind(table)
        .fetch_all()
        .await?;
    if !columns.iter().any(|c| c == "insert_id") {
        bail!("{table} has no insert_id column: {columns:?}");
    }
    let select = columns
        .iter()
        .map(|c| match c.as_str() {
            "insert_id" => "insert_id + 1".to_string(),
            "stored_at" => "now()".to_string(),
            other => other.to_string(),
        })
        .collect::<Vec<_>>()
        .join(", ");
    db.query(&format!(
        "INSERT INTO {table} ({}) SELECT {select} FROM {table} WHERE {filter}",
        columns.join(", ")
    ))
    .execute()
    .await?;
    Ok(())
}

/// The timed requests against the running API, then the re-written-parts case.
async fn measure(
    cfg: &BenchQuery,
    db: &clickhouse::Client,
    api: &mut std::process::Child,
    from: i64,
    failures: &mut Vec<String>,
) -> anyhow::Result<Vec<Case>> {
    let mut line = String::new();
    BufReader::new(api.stdout.take().context("stdout")?).read_line(&mut line)?;
    let base = line
        .trim()
        .rsplit(' ')
        .next()
        .context("address line")?
        .trim_end_matches('/')
        .to_string();
    let to = from + 3_600_000;
    let http = reqwest::Client::new();
    let mut api = Api {
        http: &http,
        base: &base,
        range: (from, to),
        phase: "",
        failures,
    };
    let flame_url = api.url("flamegraph", "");
    let baseline = Baseline {
        db,
        from_s: u32::try_from(from / 1000)?,
        to_s: u32::try_from(to / 1000)?,
        stacks: cfg.stacks as usize,
    };
    let mut cases = vec![
        Case::api("flamegraph (max_nodes 8192)", flame_url.clone()),
        Case::api(
            "top table (limit 100)",
            api.url("top", "&sort=self&limit=100"),
        ),
        Case::api("timeline (1 h, default step)", api.url("timeline", "")),
        Case::api("tags by pod (limit 10)", api.url("tags", "&label=pod")),
        Case::api(
            "sandwich, mid-level frame (`Service0.execute`, 1 stack in 40)",
            api.url("sandwich", &format!("&function={SANDWICH_MID}")),
        ),
        Case::api(
            "sandwich, root frame (`Thread.run`, every stack)",
            api.url("sandwich", &format!("&function={SANDWICH_ROOT}")),
        ),
        Case::api(
            "ranked diff, first vs second half-hour (limit 100)",
            api.diff_url(),
        ),
        Case {
            name: "baseline: `sum(value) … GROUP BY stack_id` in ClickHouse (no deduplication)"
                .to_string(),
            request: Request::Baseline,
            times: Vec::new(),
            size: 0,
            scanned_rows: baseline.rows().await?,
        },
    ];
    // Warm-up: the first query loads marks and parts into the caches.
    get_json(&http, &flame_url).await?;
    check_answers(&mut api, cfg).await?;
    time_rounds(&http, &baseline, &mut cases, cfg.requests).await?;
    let total_before = flamegraph_total(&http, &flame_url).await?;

    // A tenth of the window parts written a second time (as a retry, a
    // redelivery or a replay does), not merged yet: the query must count them once.
    for (table, filter) in [
        ("samples", "service = 'bench' AND window_id % 10 = 0"),
        ("stored_parts", "service = 'bench' AND window_id % 10 = 0"),
    ] {
        rewrite(db, table, filter).await?;
    }
    let rows_before = cases.last().map_or(0, |c| c.scanned_rows);
    let rows_after = baseline.rows().await?;
    if rows_after <= rows_before {
        bail!("the re-write added no sample rows ({rows_before} → {rows_after})");
    }
    let mut rewritten = [Case::api(
        "flamegraph, 10 % of the parts re-written (not merged)",
        flame_url.clone(),
    )];
    time_rounds(&http, &baseline, &mut rewritten, cfg.requests).await?;
    let [rewritten] = rewritten;
    // Shown above the baseline.
    cases.insert(cases.len() - 1, rewritten);
    let total_after = flamegraph_total(&http, &flame_url).await?;
    if total_after != total_before {
        bail!("re-written parts changed the flamegraph total: {total_before} → {total_after}");
    }
    // The other endpoints count them once too.
    api.phase = "with re-written parts: ";
    check_answers(&mut api, cfg).await?;
    Ok(cases)
}
