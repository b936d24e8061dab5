//! Which CPU sampler the built-in JFR recorder uses: JDK 25's CPU-time sampler
//! (`jdk.CPUTimeSample`, a per-thread CPU timer) where the kernel lets the JVM
//! create its timers, `jdk.ExecutionSample` elsewhere, and the fallback (with
//! the reason) where JDK 25 cannot create them. The accuracy of the resulting
//! totals is checked end to end in loadtest/tests/cpu_accuracy.rs.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use javelin_agent::attach::AttachTarget;
use javelin_agent::recorder::{JfrRecorder, JfrSettings, Recorder};
use javelin_schema::testkit::unique_name;

/// Busy threads in the workload: more than ExecutionSample's 5 per period.
const THREADS: usize = 8;
const JDK25: &str = "/usr/lib/jvm/temurin-25-jdk-amd64/bin/java";
const JDK17: &str = "java";

fn data(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(file)
}

/// `BusyThreads.java` run as a single-file source program by `java`, behind
/// `wrapper` (e.g. `prlimit …`), killed when dropped.
struct BusyJvm {
    child: Child,
    pid: u32,
}

impl Drop for BusyJvm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl BusyJvm {
    fn start(java: &str, wrapper: &[&str]) -> BusyJvm {
        if java.starts_with('/') {
            assert!(
                Path::new(java).exists(),
                "{java} is missing: this test needs that JDK"
            );
        }
        let mut argv: Vec<String> = wrapper.iter().map(|s| s.to_string()).collect();
        argv.push(java.into());
        argv.push(data("BusyThreads.java").display().to_string());
        argv.push(THREADS.to_string());
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {argv:?}: {e}"));
        let mut line = String::new();
        let stdout = child.stdout.take().expect("stdout");
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .expect("the workload prints its pid");
        // The JVM's own pid: a wrapper that execs keeps it, one that forks would not.
        let pid = line
            .trim()
            .strip_prefix("busy-threads pid ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line {line:?} from {argv:?}"));
        BusyJvm { child, pid }
    }
}

fn attach(jvm: &BusyJvm) -> AttachTarget {
    AttachTarget::for_pid(jvm.pid, Duration::from_secs(30)).expect("the JVM's /proc entry")
}

/// SIGPROF timers on thread CPU clocks in /proc/<pid>/timers.
fn sampler_timers(pid: u32) -> usize {
    let text = std::fs::read_to_string(format!("/proc/{pid}/timers")).expect("/proc/<pid>/timers");
    text.split("ID:")
        .filter(|entry| entry.contains("signal: 27/") && entry.contains("notify: signal/tid."))
        .count()
}

#[test]
fn jdk25_recorder_uses_the_cpu_time_sampler_with_a_timer_per_busy_thread() {
    let jvm = BusyJvm::start(JDK25, &[]);
    let mut recorder = JfrRecorder::new(
        attach(&jvm),
        unique_name("cpu_time"),
        JfrSettings::default(),
    );
    recorder.start(None).expect("JFR.start");
    assert_eq!(recorder.kind(), "jfr-cpu-time");
    assert_eq!(recorder.notice(), None);
    let timers = sampler_timers(jvm.pid);
    assert!(
        timers >= THREADS,
        "{timers} sampler timers for {THREADS} busy threads"
    );
    recorder.stop().expect("JFR.stop");
    // JFR.stop disables the sampler: its timers are deleted.
    assert_eq!(sampler_timers(jvm.pid), 0);
}

#[test]
fn jdk17_recorder_uses_execution_samples() {
    let jvm = BusyJvm::start(JDK17, &[]);
    let mut recorder = JfrRecorder::new(attach(&jvm), unique_name("exec"), JfrSettings::default());
    recorder.start(None).expect("JFR.start");
    assert_eq!(recorder.kind(), "jfr");
    assert_eq!(recorder.notice(), None);
    recorder.stop().expect("JFR.stop");
}

/// Event counts by type in JFR bytes, by the JDK's own `jfr summary`.
fn jfr_summary(bytes: &[u8]) -> BTreeMap<String, u64> {
    let file = std::env::temp_dir().join(format!("{}.jfr", unique_name("cpu_fallback")));
    std::fs::write(&file, bytes).expect("write jfr");
    let jfr = Path::new(JDK25).with_file_name("jfr");
    let out = Command::new(jfr)
        .arg("summary")
        .arg(&file)
        .output()
        .expect("jfr summary runs");
    let _ = std::fs::remove_file(&file);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let name = words.next().filter(|n| n.starts_with("jdk."))?;
            Some((name.to_string(), words.next()?.parse().ok()?))
        })
        .collect()
}

/// Where the kernel refuses the sampler's per-thread timers (here: no pending
/// signals allowed, RLIMIT_SIGPENDING = 0, so `timer_create` fails), JDK 25
/// records no CPU at all and says nothing; the recorder notices, falls back to
/// ExecutionSample and says why.
#[test]
fn jdk25_without_cpu_timers_falls_back_to_execution_samples_and_says_why() {
    assert!(
        Command::new("prlimit")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success()),
        "prlimit (util-linux) is needed to start a JVM with RLIMIT_SIGPENDING = 0"
    );
    let jvm = BusyJvm::start(JDK25, &["prlimit", "--sigpending=0"]);
    let mut recorder = JfrRecorder::new(
        attach(&jvm),
        unique_name("fallback"),
        JfrSettings::default(),
    );
    recorder.start(None).expect("JFR.start");
    assert_eq!(recorder.kind(), "jfr");
    let notice = recorder.notice().expect("a notice saying why").to_string();
    assert!(notice.contains("per-thread CPU timers"), "{notice}");
    assert!(notice.contains("jdk.ExecutionSample"), "{notice}");
    // And the CPU is sampled the old way, nothing of the new.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut jfr = Vec::new();
    loop {
        let collected = recorder.collect().expect("JFR.dump");
        for c in &collected.new_chunks {
            jfr.extend_from_slice(&collected.bytes[c.offset..c.offset + c.size]);
        }
        let summary = jfr_summary(&jfr);
        if summary.get("jdk.ExecutionSample").copied().unwrap_or(0) >= 50 {
            assert_eq!(summary.get("jdk.CPUTimeSample").copied().unwrap_or(0), 0);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no ExecutionSamples within 60 s: {summary:?}"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    recorder.stop().expect("JFR.stop");
}
