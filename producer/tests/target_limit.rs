//! JVMs beyond `--max-targets`, with the real agent binary, two real JVMs and
//! the stack's broker (`dev/stack up`): the JVM without a slot is published as
//! `over_target_limit` once (not every discovery tick), counted in the agent's
//! metrics, and profiled as soon as the other JVM exits.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use javelin_schema::testkit::{
    DemoJvm, Reaped, TopicLog, create_topics, kafka_brokers, unique_name,
};
use javelin_schema::wire::{ProfileWindow, TargetState, TargetStatus};
use prost::Message;

/// Statuses of `pid` seen on the status topic, in order.
fn states(log: &TopicLog, pid: u32) -> Vec<(TargetState, String)> {
    log.payloads()
        .iter()
        .filter_map(|p| TargetStatus::decode(p.as_slice()).ok())
        .filter(|s| s.target.as_ref().is_some_and(|t| t.pid == pid))
        .map(|s| {
            (
                TargetState::try_from(s.state).unwrap_or(TargetState::Unspecified),
                s.last_error,
            )
        })
        .collect()
}

fn wait_for<T>(what: &str, deadline: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn wait_for_or_none<T>(deadline: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn metrics(url: &str) -> String {
    let rest = url.strip_prefix("http://").expect("an http URL");
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut stream = std::net::TcpStream::connect(host).expect("metrics endpoint");
    write!(stream, "GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").expect("request");
    let mut body = String::new();
    stream.read_to_string(&mut body).expect("response");
    body
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_jvm_over_the_target_limit_is_reported_once_and_profiled_when_a_slot_frees() {
    let first = DemoJvm::start(&["-Xmx64m"]);
    let second = DemoJvm::start(&["-Xmx64m"]);
    let run = unique_name("javelin_limit");
    let (profiles, status) = (format!("{run}.profiles"), format!("{run}.status"));
    create_topics(&[&profiles, &status], 1).await;
    let status_log = TopicLog::follow(&status);
    let profiles_log = TopicLog::follow(&profiles);
    let logs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/e2e-logs");
    std::fs::create_dir_all(&logs).expect("log dir");
    let log = logs.join(format!("{run}.agent.log"));
    let mut agent = Reaped(
        Command::new(env!("CARGO_BIN_EXE_javelin-agent"))
            .args(["--brokers", &kafka_brokers()])
            .args(["--profiles-topic", &profiles, "--status-topic", &status])
            .args(["--pid", &format!("{},{}", first.pid, second.pid)])
            .args(["--max-targets", "1", "--window-secs", "2"])
            .args(["--min-jvm-age-secs", "0", "--discovery-interval-secs", "1"])
            .args(["--recording-name", &run, "--installation", &run])
            .args(["--metrics-listen", "127.0.0.1:0", "--kubernetes-api", "off"])
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("agent log"))
            .spawn()
            .expect("the agent starts"),
    );
    let url = {
        let mut line = String::new();
        BufReader::new(agent.0.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("the metrics line");
        // "javelin-agent metrics on http://127.0.0.1:<port>/metrics"
        line.trim()
            .rsplit(' ')
            .next()
            .unwrap_or_default()
            .to_string()
    };
    // One JVM gets the slot, the other waits.
    let first_has_it = wait_for(
        "one profiling, one over the limit",
        Duration::from_secs(60),
        || {
            let over = |pid| {
                states(&status_log, pid)
                    .iter()
                    .any(|s| s.0 == TargetState::OverTargetLimit)
            };
            let profiling = |pid| {
                states(&status_log, pid)
                    .iter()
                    .any(|s| s.0 == TargetState::Profiling)
            };
            if profiling(first.pid) && over(second.pid) {
                Some(true)
            } else if profiling(second.pid) && over(first.pid) {
                Some(false)
            } else {
                None
            }
        },
    );
    let (profiled, waiting) = if first_has_it {
        (first, second)
    } else {
        (second, first)
    };
    let over = states(&status_log, waiting.pid);
    assert!(
        over[0].1.contains("--max-targets"),
        "the status says why: {:?}",
        over[0].1
    );
    // Several discovery ticks later: still one status (the next is due after 5 min).
    let mut seen = String::new();
    let counted = wait_for_or_none(Duration::from_secs(20), || {
        let text = metrics(&url);
        seen = text
            .lines()
            .filter(|l| l.starts_with("javelin_agent_targets"))
            .collect::<Vec<_>>()
            .join("\n");
        (metric(&text, "javelin_agent_targets_over_limit_total") == Some(1.0)
            && metric(&text, "javelin_agent_targets_unprofiled") == Some(1.0))
        .then_some(())
    });
    assert!(
        counted.is_some(),
        "the metrics count the waiting JVM:\n{seen}"
    );
    // Let discovery ticks pass (1 s each) before checking what they did not
    // publish: three windows (2 s each) of the profiled JVM.
    let windows_of = |pid| {
        profiles_log
            .payloads()
            .iter()
            .filter_map(|p| ProfileWindow::decode(p.as_slice()).ok())
            .filter(|w| w.target.as_ref().is_some_and(|t| t.pid == pid))
            .map(|w| w.window_start_ms)
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    };
    wait_for(
        "three windows of the profiled JVM",
        Duration::from_secs(60),
        || (windows_of(profiled.pid) >= 3).then_some(()),
    );
    let over_count = states(&status_log, waiting.pid)
        .iter()
        .filter(|s| s.0 == TargetState::OverTargetLimit)
        .count();
    assert_eq!(over_count, 1, "reported once, not every discovery tick");
    assert!(
        !states(&status_log, waiting.pid)
            .iter()
            .any(|s| s.0 == TargetState::Profiling),
        "not profiled while the slot is taken"
    );
    // The slot frees up: the waiting JVM is profiled.
    drop(profiled);
    wait_for(
        "the waiting JVM to be profiled",
        Duration::from_secs(60),
        || {
            states(&status_log, waiting.pid)
                .iter()
                .any(|s| s.0 == TargetState::Profiling)
                .then_some(())
        },
    );
    wait_for("the gauge to drop to 0", Duration::from_secs(20), || {
        (metric(&metrics(&url), "javelin_agent_targets_unprofiled") == Some(0.0)).then_some(())
    });
    drop(waiting);
}
