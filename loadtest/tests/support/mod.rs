//! Shared by the tests that check artefacts against the binaries: where the
//! built binaries are, and which options each one accepts (read from its own
//! `--help`, so nothing here can drift from the code).

#![allow(dead_code)]

pub mod pipeline;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use javelin_schema::testkit::kafka_brokers;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

/// A built binary next to `javelin-loadtest`.
pub fn bin(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_BIN_EXE_javelin-loadtest")).with_file_name(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first",
        path.display()
    );
    path
}

/// Runs the browser script `loadtest/tests/<script>` (playwright-core in
/// Debian's Chromium) as `node <script> <before…> <shots dir> <chromium>
/// <after…>` (each script's usage line), screenshots going to
/// `target/ui-screenshots/<run>/`; echoes its output, asserts it succeeded and
/// returns the JSON findings it printed on its last line, and the screenshot
/// directory.
pub fn run_browser_script(
    script: &str,
    run: &str,
    before: &[&str],
    after: &[&str],
) -> (serde_json::Value, PathBuf) {
    use javelin_schema::testkit::dev_tool;
    let root = pipeline::repo_root();
    let shots = root.join("target").join("ui-screenshots").join(run);
    std::fs::create_dir_all(&shots).expect("screenshot dir");
    let node_modules = dev_tool("node");
    let chromium = dev_tool("chromium");
    let out = Command::new("node")
        .arg(root.join("loadtest/tests").join(script))
        .args(before)
        .arg(&shots)
        .arg(&chromium)
        .args(after)
        .env("NODE_PATH", &node_modules)
        .output()
        .expect("node runs");
    eprintln!(
        "{script}: {}{}screenshots in {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        shots.display()
    );
    assert!(out.status.success(), "{script} failed (see above)");
    let findings = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .expect("findings as JSON on the last line");
    (findings, shots)
}

/// The binaries and subcommands that take options.
pub const COMMANDS: [(&str, Option<&str>); 5] = [
    ("javelin-agent", None),
    ("javelin-consumer", Some("run")),
    ("javelin-consumer", Some("migrate")),
    ("javelin-consumer", Some("replay")),
    ("javelin-query", None),
];

/// The flags (`--x`) and environment variables (`JAVELIN_X`) one command accepts.
#[derive(Debug, Default)]
pub struct Options {
    pub flags: BTreeSet<String>,
    pub env: BTreeSet<String>,
}

impl Options {
    pub fn of(binary: &str, sub: Option<&str>) -> Options {
        let mut cmd = Command::new(bin(binary));
        cmd.args(sub).arg("--help");
        let out = cmd.output().expect("--help runs");
        assert!(out.status.success(), "{binary} {sub:?} --help failed");
        let help = String::from_utf8(out.stdout).expect("utf-8");
        let mut options = Options::default();
        for word in help.split(|c: char| c.is_whitespace() || c == '[' || c == ']' || c == '=') {
            let word = word.trim_end_matches(',');
            if word.starts_with("--") && word.len() > 2 && !["--help", "--version"].contains(&word)
            {
                options.flags.insert(word.to_string());
            } else if word.starts_with("JAVELIN_") {
                options.env.insert(word.to_string());
            }
        }
        assert!(
            options.flags.len() > 4,
            "{binary}: parsed only {} options from --help",
            options.flags.len()
        );
        options
    }
}

/// The member ids of `group`, as the broker's group coordinator lists them.
pub fn members(group: &str) -> Vec<String> {
    let client: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .create()
        .expect("client");
    let list = client
        .fetch_group_list(Some(group), Duration::from_secs(10))
        .expect("describe group");
    let mut ids: Vec<String> = list
        .groups()
        .iter()
        .flat_map(|g| g.members().iter().map(|m| m.id().to_string()))
        .collect();
    ids.sort();
    ids
}

/// Committed offsets of `group` on `topic` (partitions 0..n), without joining the group.
pub fn committed(group: &str, topic: &str, partitions: i32) -> Vec<i64> {
    let client: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .set("group.id", group)
        .create()
        .expect("client");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let got = client
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed offsets");
    (0..partitions)
        .map(|p| match got.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => o,
            _ => -1,
        })
        .collect()
}
