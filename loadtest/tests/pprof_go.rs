//! pprof where people open it: the query API's pprof export of the demo's CPU
//! profile, opened with `go tool pprof -top` (Debian's golang-go, from
//! `dev/tools go`), lists the demo's hottest functions with exactly the values
//! the API's top table gives them: flat = self and cum = total, and the same
//! grand total. The real pipeline (support/pipeline.rs): needs `dev/stack up`
//! and `cargo build --workspace --bins` first.

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use javelin_schema::testkit::{dev_tool, unique_name, wait_for};
use serde::Deserialize;
use support::pipeline::{Pipeline, now_ms};

/// The demo's CPU hot spot (loadtest/java/src/JavelinDemo.java).
const CPU_HOT_SPOT: &str = "SearchIndex.score";
/// The top table's rows compared (its hottest functions by self).
const ROWS: usize = 10;

#[derive(Debug, PartialEq, Eq, Deserialize)]
struct TopRow {
    name: String,
    #[serde(rename = "self")]
    self_value: i64,
    total: i64,
}

#[derive(Debug, PartialEq, Eq, Deserialize)]
struct Top {
    rows: Vec<TopRow>,
    total: i64,
    unit: String,
}

/// One row of `pprof -top`: flat and cum, in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PprofRow {
    flat: i64,
    cum: i64,
}

/// What `go tool pprof -top` printed, parsed.
#[derive(Debug)]
struct PprofTop {
    /// The profile's total ("… of <total> total").
    total: i64,
    /// Rows in pprof's order (flat, descending).
    rows: Vec<(String, PprofRow)>,
    text: String,
}

/// A pprof value printed with `-unit=ns`: an integer count of nanoseconds and
/// the unit ("1230000000ns"), or "0". pprof formats a value as `%.2f` of the
/// scaled value with ".00" trimmed, so at the nanosecond unit every integer
/// below 2^53 ns (104 days) prints exactly: the comparison needs no rounding.
fn nanos(token: &str) -> i64 {
    if token == "0" {
        return 0;
    }
    token
        .strip_suffix("ns")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not an integer nanosecond value: {token:?}"))
}

impl PprofTop {
    fn parse(text: &str) -> PprofTop {
        let total = text
            .lines()
            .find_map(|l| {
                let l = l.trim();
                l.starts_with("Showing nodes accounting for")
                    .then(|| l.rsplit_once(" of ")?.1.strip_suffix(" total"))
                    .flatten()
            })
            .map(nanos)
            .unwrap_or_else(|| panic!("no total in pprof's output:\n{text}"));
        let mut lines = text
            .lines()
            .skip_while(|l| !l.trim_start().starts_with("flat "));
        assert!(
            lines.next().is_some(),
            "no table in pprof's output:\n{text}"
        );
        let rows = lines
            .map(|line| {
                // "<flat> <flat%> <sum%> <cum> <cum%> <name>"; the name may hold spaces.
                let mut rest = line.trim_start();
                let mut fields = Vec::new();
                for _ in 0..5 {
                    let (field, tail) = rest
                        .split_once(char::is_whitespace)
                        .unwrap_or_else(|| panic!("short pprof row {line:?}"));
                    fields.push(field);
                    rest = tail.trim_start();
                }
                (
                    rest.to_string(),
                    PprofRow {
                        flat: nanos(fields[0]),
                        cum: nanos(fields[3]),
                    },
                )
            })
            .collect();
        PprofTop {
            total,
            rows,
            text: text.to_string(),
        }
    }
}

/// A scratch directory removed when dropped, pass or fail.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `go tool pprof -top` of `profile`, its `nodes` heaviest functions by flat,
/// every value in nanoseconds. Go's caches, settings and pprof's own files go
/// to `scratch`, never into the repository or the home directory.
fn go_pprof_top(go: &str, profile: &Path, nodes: usize, scratch: &Path) -> PprofTop {
    let out = Command::new(go)
        .args(["tool", "pprof", "-top", "-symbolize=none", "-unit=ns"])
        // Keep the top `nodes` by flat and nothing else: no node dropped for a small cum.
        .arg(format!("-nodecount={nodes}"))
        .arg("-nodefraction=0")
        .arg(profile)
        .current_dir(scratch)
        .env("HOME", scratch)
        .env("XDG_CONFIG_HOME", scratch.join("config"))
        .env("XDG_CACHE_HOME", scratch.join("cache"))
        .env("GOCACHE", scratch.join("go-build"))
        .env("GOPATH", scratch.join("go"))
        .env("GOENV", "off")
        .env("GOFLAGS", "")
        .env("GOTOOLCHAIN", "local")
        .env("PPROF_TMPDIR", scratch.join("pprof"))
        .output()
        .expect("go tool pprof runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "go tool pprof failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PprofTop::parse(&text)
}

#[tokio::test(flavor = "multi_thread")]
async fn go_tool_pprof_shows_the_demo_s_hot_functions_with_the_top_table_s_values() {
    let go = dev_tool("go");
    let pipeline = Pipeline::start("pprof").await;
    let base = pipeline.base.clone();
    let http = reqwest::Client::new();
    let from = now_ms() - 600_000;

    // The top table and the export of one range, read while no window landed
    // in it (window values only add up, so an equal total before and after
    // the export means the export saw the same stacks), once the demo's hot
    // spot leads with at least 2 s of CPU.
    let (top, export) = wait_for(
        &format!("{CPU_HOT_SPOT} leading the CPU top table with ≥ 2 s, read twice unchanged"),
        Duration::from_secs(120),
        || {
            let (http, base) = (http.clone(), base.clone());
            let range = format!("service=javelin-demo&type=cpu&from={from}&to={}", now_ms());
            async move {
                let top_url = format!("{base}/api/v1/top?{range}&sort=self&limit={ROWS}");
                let read_top = || async {
                    let response = http.get(&top_url).send().await.ok()?;
                    response.error_for_status().ok()?.json::<Top>().await.ok()
                };
                let before = read_top().await?;
                let leads = before
                    .rows
                    .first()
                    .is_some_and(|r| r.name == CPU_HOT_SPOT && r.self_value >= 2_000_000_000);
                if !leads {
                    return None;
                }
                let export = http
                    .get(format!("{base}/api/v1/export/pprof?{range}"))
                    .send()
                    .await
                    .ok()?
                    .error_for_status()
                    .ok()?
                    .bytes()
                    .await
                    .ok()?;
                let after = read_top().await?;
                (before == after).then_some((before, export))
            }
        },
    )
    .await;
    assert_eq!(top.unit, "nanoseconds");
    assert_eq!(top.rows.len(), ROWS, "{top:?}");

    let scratch = Scratch(std::env::temp_dir().join(unique_name("pprof_go")));
    std::fs::create_dir_all(&scratch.0).expect("scratch dir");
    let profile = scratch.0.join("cpu.pb.gz");
    std::fs::write(&profile, &export).expect("write the export");
    // Twice the rows: ties in self may order differently (the API breaks them
    // by total, pprof by name), so a row at the cut may come later in pprof's list.
    let pprof = go_pprof_top(&go, &profile, 2 * ROWS, &scratch.0);
    eprintln!("top table: {top:#?}\ngo tool pprof -top:\n{}", pprof.text);

    assert_eq!(pprof.total, top.total, "the grand total\n{}", pprof.text);
    assert_eq!(
        pprof.rows.first().map(|r| r.0.as_str()),
        Some(CPU_HOT_SPOT),
        "pprof's hottest function\n{}",
        pprof.text
    );
    let by_name: HashMap<&str, PprofRow> =
        pprof.rows.iter().map(|(n, r)| (n.as_str(), *r)).collect();
    for row in &top.rows {
        assert_eq!(
            by_name.get(row.name.as_str()),
            Some(&PprofRow {
                flat: row.self_value,
                cum: row.total
            }),
            "{}: the top table's self and total as pprof's flat and cum\n{}",
            row.name,
            pprof.text
        );
    }
    // And the other way: every function pprof ranks above the table's last
    // row is in the table.
    let cut = top.rows.last().map_or(0, |r| r.self_value);
    for (name, row) in pprof.rows.iter().filter(|(_, r)| r.flat > cut) {
        assert!(
            top.rows.iter().any(|r| &r.name == name),
            "{name} ({row:?}) is missing from the top table {top:?}"
        );
    }
}
