//! Javelin's JFR reader against two independent oracles, on recordings made at
//! test time by real JVMs running `tests/data/DifferentialWorkload.java`:
//! JDK 17 built-in JFR, JDK 25 built-in JFR (with the CPU-time sampler) and
//! async-profiler 4.5. For each recording the per-(type, stack) totals and event
//! counts must equal those of the jfrs-based decoder the agent used before
//! (kept below as an oracle), and for the JDK recordings those of the JDK's own
//! `jfr print --json`.

use std::collections::{BTreeMap, HashMap};
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use javelin_agent::jfr_parse::{
    CpuEvent, EventRules, Frames, NO_STACK_FRAME, TypeCounts, parse_chunks, scan_chunks,
};
use javelin_schema::testkit::unique_name;
use javelin_schema::wire::{FrameType, ProfileType};
use jfrs::reader::JfrReader;
use jfrs::reader::event::Accessor;

const JDK17_JAVA: &str = "/usr/lib/jvm/java-17-openjdk-amd64/bin/java";
const JDK25_JAVA: &str = "/usr/lib/jvm/temurin-25-jdk-amd64/bin/java";
/// The library under test: `JAVELIN_TEST_ASYNC_PROFILER` (dev/test sets it).
fn async_profiler() -> String {
    std::env::var("JAVELIN_TEST_ASYNC_PROFILER").unwrap_or_else(|_| {
        panic!(
            "set JAVELIN_TEST_ASYNC_PROFILER to async-profiler 4.5's libasyncProfiler.so \
             (dev/test uses ../shared/third_party/async-profiler-4.5 when it is there)"
        )
    })
}
/// Seconds each workload runs while recorded.
const RECORD_SECONDS: u64 = 5;
/// The period the JDK recordings sample at; the parser's fallback differs on purpose.
const EXECUTION_PERIOD_NANOS: i64 = 20_000_000;
const RULES: EventRules = EventRules {
    cpu_period_nanos: 10_000_000,
    max_events: u64::MAX,
    cpu_event: CpuEvent::ExecutionSample,
    max_parse_time: None,
};

/// Whether an event belongs to the CPU event the agent does not read with
/// `cpu` (a chunk holds every recording's events; counting both would count
/// CPU twice).
fn other_cpu_event(name: &str, cpu: CpuEvent) -> bool {
    match cpu {
        CpuEvent::ExecutionSample => {
            matches!(name, "jdk.CPUTimeSample" | "jdk.CPUTimeSamplesLost")
        }
        CpuEvent::CpuTimeSample => name == "jdk.ExecutionSample",
    }
}

/// A frame as compared: name, line, frame type.
type Key = (i32, Vec<(String, i32, i32)>);

/// Per (profile type, stack): (value, events); per profile type: (raw, parsed, dropped).
#[derive(Debug, Default, PartialEq, Eq)]
struct Profile {
    stacks: BTreeMap<Key, (i64, i64)>,
    counts: BTreeMap<i32, (u64, u64, u64)>,
    /// `jdk.CPUTimeSample` events seen (JDK oracle only).
    cpu_time_samples: u64,
}

impl Profile {
    fn add(&mut self, kind: ProfileType, frames: &[(String, i32, i32)], value: i64, count: i64) {
        let slot = self
            .stacks
            .entry((kind as i32, frames.to_vec()))
            .or_default();
        slot.0 += value;
        slot.1 += count;
    }

    fn add_counts(&mut self, counts: &HashMap<ProfileType, TypeCounts>) {
        for (kind, c) in counts {
            let slot = self.counts.entry(*kind as i32).or_default();
            slot.0 += c.raw_events;
            slot.1 += c.parsed_events;
            slot.2 += c.dropped_events;
        }
    }

    fn total(&self, kind: ProfileType) -> (i64, i64) {
        self.stacks
            .iter()
            .filter(|((k, _), _)| *k == kind as i32)
            .fold((0, 0), |a, (_, v)| (a.0 + v.0, a.1 + v.1))
    }
}

fn key_frames(frames: &Frames) -> Vec<(String, i32, i32)> {
    frames
        .iter()
        .map(|f| (f.name.to_string(), f.line, f.kind))
        .collect()
}

/// Javelin's reader, as the agent calls it.
fn ours(bytes: &[u8], max_events: u64, cpu: CpuEvent) -> Profile {
    let (chunks, error) = scan_chunks(bytes);
    assert_eq!(error, None, "scan");
    assert!(!chunks.is_empty());
    let mut profile = Profile::default();
    let mut budget = max_events;
    let rules = EventRules {
        cpu_event: cpu,
        ..RULES
    };
    let outcome = parse_chunks(bytes, &chunks, rules, &mut budget, &mut |k, f, v, c| {
        profile.add(k, &key_frames(f), v, c)
    });
    assert_eq!(outcome.error, None, "parse");
    profile.add_counts(&outcome.counts);
    profile
}

// ---------------------------------------------------------------------------
// Oracle 1: the jfrs-based decoder the agent used before its own reader, with
// the same rules (plus jdk.CPUTimeSample), written against jfrs' object model.
// ---------------------------------------------------------------------------

fn oracle_frame_type(description: &str) -> FrameType {
    match description {
        "Interpreted" => FrameType::Interpreted,
        "JIT compiled" => FrameType::Jit,
        "Inlined" => FrameType::Inlined,
        "Native" => FrameType::Native,
        "C1 compiled" => FrameType::C1,
        "C++" => FrameType::Cpp,
        "Kernel" => FrameType::Kernel,
        _ => FrameType::Unspecified,
    }
}

fn oracle_class_name(internal: &str) -> String {
    let name = match internal.find("$$Lambda") {
        Some(i) => &internal[..i + "$$Lambda".len()],
        None => internal,
    };
    name.replace('/', ".")
}

fn oracle_event_type(name: &str) -> Option<ProfileType> {
    match name {
        "jdk.ExecutionSample" | "jdk.CPUTimeSample" => Some(ProfileType::Cpu),
        "jdk.ObjectAllocationSample"
        | "jdk.ObjectAllocationInNewTLAB"
        | "jdk.ObjectAllocationOutsideTLAB" => Some(ProfileType::Alloc),
        "jdk.JavaMonitorEnter" => Some(ProfileType::Lock),
        "jdk.ThreadPark" => Some(ProfileType::Park),
        _ => None,
    }
}

fn long_field(value: &Accessor<'_>, name: &str) -> Option<i64> {
    let f = value.get_field(name)?;
    i64::try_from(f.value)
        .ok()
        .or_else(|| i32::try_from(f.value).ok().map(i64::from))
}

fn symbol(value: &Accessor<'_>, field: &str) -> Option<String> {
    let s = value.get_field(field)?.resolve()?.get_field("string")?;
    <&str>::try_from(s.value).ok().map(str::to_string)
}

fn oracle_stack(value: &Accessor<'_>) -> Option<Vec<(String, i32, i32)>> {
    let trace = value.get_field("stackTrace")?;
    let mut frames = Vec::new();
    for frame in trace.get_field("frames")?.as_iter()? {
        let method = frame.get_field("method")?;
        let class = method
            .get_field("type")
            .and_then(|t| symbol(&t, "name"))
            .unwrap_or_default();
        let name = symbol(&method, "name").unwrap_or_default();
        let line = frame
            .get_field("lineNumber")
            .and_then(|l| i32::try_from(l.value).ok())
            .unwrap_or(0)
            .max(0);
        let kind = frame
            .get_field("type")
            .and_then(|t| t.resolve())
            .and_then(|t| t.get_field("description"))
            .and_then(|d| <&str>::try_from(d.value).ok().map(oracle_frame_type))
            .unwrap_or(FrameType::Unspecified);
        frames.push((
            format!("{}.{name}", oracle_class_name(&class)),
            line,
            kind as i32,
        ));
    }
    frames.reverse();
    Some(frames)
}

fn oracle_period(value: &Accessor<'_>, execution_sample_id: Option<i64>) -> Option<i64> {
    let name = value
        .get_field("name")
        .and_then(|n| <&str>::try_from(n.value).ok())?;
    let setting = value
        .get_field("value")
        .and_then(|v| <&str>::try_from(v.value).ok())?;
    match name {
        "period"
            if execution_sample_id.is_some() && long_field(value, "id") == execution_sample_id =>
        {
            let (number, unit) = setting.trim().split_once(' ')?;
            let n: f64 = number.parse().ok()?;
            let scale = match unit {
                "ns" => 1.0,
                "us" => 1e3,
                "ms" => 1e6,
                "s" => 1e9,
                _ => return None,
            };
            Some((n * scale).round() as i64).filter(|&ns| ns > 0)
        }
        "interval" => setting.trim().parse::<i64>().ok().filter(|&ns| ns > 0),
        _ => None,
    }
}

fn jfrs_oracle(bytes: &[u8], max_events: u64, cpu: CpuEvent) -> Profile {
    let (chunks, error) = scan_chunks(bytes);
    assert_eq!(error, None);
    let mut profile = Profile::default();
    let mut budget = max_events;
    for info in chunks {
        let slice = &bytes[info.offset..info.offset + info.size];
        let mut reader = JfrReader::new(Cursor::new(slice));
        let (mut chunk_reader, chunk) = reader
            .chunks()
            .next()
            .expect("one chunk")
            .expect("jfrs reads the chunk");
        let execution_sample_id = chunk
            .metadata
            .type_pool
            .get_types()
            .find(|t| t.name() == "jdk.ExecutionSample")
            .map(|t| t.class_id);
        let mut counts: HashMap<ProfileType, TypeCounts> = HashMap::new();
        let mut execution: BTreeMap<Vec<(String, i32, i32)>, i64> = BTreeMap::new();
        let mut period = None;
        let no_stack = vec![(NO_STACK_FRAME.to_string(), 0, FrameType::Unspecified as i32)];
        for event in chunk_reader.events(&chunk) {
            let event = event.expect("jfrs decodes the event");
            let name = event.class.name();
            if other_cpu_event(name, cpu) {
                continue;
            }
            let value = event.value();
            if name == "jdk.ActiveSetting" {
                period = period.or_else(|| oracle_period(&value, execution_sample_id));
                continue;
            }
            if name == "jdk.CPUTimeSamplesLost" {
                let lost = long_field(&value, "lostSamples").unwrap_or(0).max(0) as u64;
                let c = counts.entry(ProfileType::Cpu).or_default();
                c.raw_events += lost;
                c.dropped_events += lost;
                continue;
            }
            let Some(kind) = oracle_event_type(name) else {
                continue;
            };
            let c = counts.entry(kind).or_default();
            c.raw_events += 1;
            if budget == 0 {
                c.dropped_events += 1;
                continue;
            }
            budget -= 1;
            let ticks =
                |t: i64| (i128::from(t) * 1_000_000_000 / i128::from(info.ticks_per_second)) as i64;
            let weight = match name {
                "jdk.ExecutionSample" => Some(0),
                "jdk.CPUTimeSample" => long_field(&value, "samplingPeriod").map(ticks),
                "jdk.ObjectAllocationInNewTLAB" => long_field(&value, "tlabSize")
                    .filter(|&t| t != 0)
                    .or_else(|| long_field(&value, "allocationSize")),
                "jdk.ObjectAllocationOutsideTLAB" => long_field(&value, "allocationSize"),
                "jdk.ObjectAllocationSample" => long_field(&value, "weight"),
                _ => {
                    if kind == ProfileType::Park {
                        let class = value
                            .get_field("parkedClass")
                            .and_then(|c| c.resolve())
                            .and_then(|c| symbol(&c, "name"));
                        let idle = class.is_none_or(|n| {
                            n.ends_with("$ConditionObject") || n.ends_with("ConditionNode")
                        });
                        if idle {
                            c.raw_events -= 1;
                            budget += 1;
                            continue;
                        }
                    }
                    long_field(&value, "duration").map(ticks)
                }
            };
            let frames = oracle_stack(&value)
                .filter(|f| !f.is_empty())
                .unwrap_or_else(|| no_stack.clone());
            match weight {
                Some(_) if name == "jdk.ExecutionSample" => {
                    c.parsed_events += 1;
                    *execution.entry(frames).or_default() += 1;
                }
                Some(w) if w >= 0 => {
                    c.parsed_events += 1;
                    profile.add(kind, &frames, w, 1);
                }
                _ => c.dropped_events += 1,
            }
        }
        let period = period.unwrap_or(RULES.cpu_period_nanos);
        for (frames, samples) in execution {
            profile.add(ProfileType::Cpu, &frames, samples * period, samples);
        }
        profile.add_counts(&counts);
    }
    profile
}

// ---------------------------------------------------------------------------
// Oracle 2: the JDK's own `jfr print --json`.
// ---------------------------------------------------------------------------

/// `PT1M2.5S` → nanoseconds.
fn iso_duration_nanos(text: &str) -> i64 {
    let mut rest = text
        .strip_prefix("PT")
        .unwrap_or_else(|| panic!("not a duration: {text}"));
    let mut nanos = 0f64;
    for (unit, scale) in [('H', 3600e9), ('M', 60e9), ('S', 1e9)] {
        if let Some(i) = rest.find(unit) {
            nanos += rest[..i].parse::<f64>().expect("number") * scale;
            rest = &rest[i + 1..];
        }
    }
    nanos.round() as i64
}

fn json_stack(stack: &serde_json::Value) -> Vec<(String, i32, i32)> {
    let Some(frames) = stack["frames"].as_array() else {
        return vec![(NO_STACK_FRAME.to_string(), 0, FrameType::Unspecified as i32)];
    };
    let mut out: Vec<(String, i32, i32)> = frames
        .iter()
        .map(|f| {
            let class = f["method"]["type"]["name"].as_str().unwrap_or("");
            let name = f["method"]["name"].as_str().unwrap_or("");
            let line = f["lineNumber"].as_i64().unwrap_or(0).max(0) as i32;
            let kind = oracle_frame_type(f["type"].as_str().unwrap_or("")) as i32;
            (format!("{}.{name}", oracle_class_name(class)), line, kind)
        })
        .collect();
    out.reverse();
    if out.is_empty() {
        out.push((NO_STACK_FRAME.to_string(), 0, FrameType::Unspecified as i32));
    }
    out
}

/// Per (type, stack) totals by the JDK's `jfr print --json`, with the agent's rules.
fn jdk_oracle(jfr_tool: &Path, file: &Path, cpu: CpuEvent) -> Profile {
    let output = Command::new(jfr_tool)
        .args([
            "print",
            "--json",
            "--stack-depth",
            "4096",
            "--events",
            "jdk.ExecutionSample,jdk.CPUTimeSample,jdk.ObjectAllocationSample,jdk.JavaMonitorEnter,jdk.ThreadPark",
        ])
        .arg(file)
        .output()
        .expect("jfr print runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("jfr print emits JSON");
    let mut profile = Profile::default();
    for e in json["recording"]["events"].as_array().expect("events") {
        let v = &e["values"];
        if e["type"].as_str() == Some("jdk.CPUTimeSample") {
            profile.cpu_time_samples += 1;
        }
        if e["type"]
            .as_str()
            .is_some_and(|name| other_cpu_event(name, cpu))
        {
            continue;
        }
        let (kind, weight) = match e["type"].as_str() {
            Some("jdk.ExecutionSample") => (ProfileType::Cpu, EXECUTION_PERIOD_NANOS),
            Some("jdk.CPUTimeSample") => (
                ProfileType::Cpu,
                iso_duration_nanos(v["samplingPeriod"].as_str().expect("samplingPeriod")),
            ),
            Some("jdk.ObjectAllocationSample") => {
                (ProfileType::Alloc, v["weight"].as_i64().expect("weight"))
            }
            Some("jdk.JavaMonitorEnter") => (
                ProfileType::Lock,
                iso_duration_nanos(v["duration"].as_str().expect("duration")),
            ),
            Some("jdk.ThreadPark") => {
                let class = v["parkedClass"]["name"].as_str().unwrap_or("");
                if class.is_empty()
                    || class.ends_with("$ConditionObject")
                    || class.ends_with("ConditionNode")
                {
                    continue;
                }
                (
                    ProfileType::Park,
                    iso_duration_nanos(v["duration"].as_str().expect("duration")),
                )
            }
            other => panic!("unexpected event {other:?}"),
        };
        profile.add(kind, &json_stack(&v["stackTrace"]), weight, 1);
    }
    profile
}

// ---------------------------------------------------------------------------
// Recording.
// ---------------------------------------------------------------------------

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The workload compiled once per test process (for Java 17, so both JDKs run it).
fn workload_classes() -> &'static Path {
    static CLASSES: OnceLock<PathBuf> = OnceLock::new();
    CLASSES.get_or_init(|| {
        let out = repo_root()
            .join("target/test-java")
            .join(unique_name("jfr_differential"));
        let ok = Command::new("javac")
            .args(["--release", "17", "-d"])
            .arg(&out)
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/DifferentialWorkload.java"))
            .status()
            .expect("javac runs");
        assert!(ok.success(), "javac failed");
        out
    })
}

/// Runs the workload under `java` with `jvm_args` (which write the recording to
/// `file` when the JVM exits) and returns the recording.
fn record(java: &str, jvm_args: &[String], file: &Path) -> Vec<u8> {
    assert!(Path::new(java).exists(), "{java} is missing");
    let mut child = Command::new(java)
        .args(jvm_args)
        .arg("-cp")
        .arg(workload_classes())
        .arg("DifferentialWorkload")
        .arg(RECORD_SECONDS.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("java starts");
    let deadline = Instant::now() + Duration::from_secs(RECORD_SECONDS + 90);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{java} did not exit within the deadline");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{java} exited with {status}");
    let bytes = std::fs::read(file).unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
    assert!(!bytes.is_empty(), "empty recording");
    bytes
}

fn jdk_recording(java: &str, extra: &str, file: &Path) -> Vec<u8> {
    let settings = format!(
        "-XX:StartFlightRecording=filename={},dumponexit=true,settings=profile,\
         jdk.ExecutionSample#period={}ms,jdk.JavaMonitorEnter#threshold=1ms,\
         jdk.ThreadPark#threshold=1ms{extra}",
        file.display(),
        EXECUTION_PERIOD_NANOS / 1_000_000
    );
    record(java, &[settings], file)
}

/// Every type of the corpus has data, and both oracles agree with us.
fn assert_matches_jfrs(name: &str, bytes: &[u8], kinds: &[ProfileType], cpu: CpuEvent) -> Profile {
    let mine = ours(bytes, u64::MAX, cpu);
    for kind in kinds {
        let (value, events) = mine.total(*kind);
        assert!(value > 0 && events > 0, "{name}: no {} data", kind.name());
    }
    let oracle = jfrs_oracle(bytes, u64::MAX, cpu);
    assert_profiles_equal(name, &mine, &oracle);
    // The event budget cuts the same events in both.
    let all: u64 = mine.counts.values().map(|c| c.0).sum();
    let budget = all / 3;
    assert_profiles_equal(
        &format!("{name} with a budget of {budget}"),
        &ours(bytes, budget, cpu),
        &jfrs_oracle(bytes, budget, cpu),
    );
    eprintln!(
        "{name}: {} bytes, {} stacks, counts {:?}",
        bytes.len(),
        mine.stacks.len(),
        mine.counts
    );
    mine
}

fn assert_profiles_equal(name: &str, mine: &Profile, oracle: &Profile) {
    assert_eq!(mine.counts, oracle.counts, "{name}: event counts");
    for (key, theirs) in &oracle.stacks {
        assert_eq!(
            mine.stacks.get(key),
            Some(theirs),
            "{name}: type {} stack {:?}",
            key.0,
            key.1
        );
    }
    assert_eq!(mine.stacks.len(), oracle.stacks.len(), "{name}: stacks");
}

/// Per stack: equal event counts, values equal within 1 ns per event (the JDK
/// prints durations converted from ticks, rounded differently).
fn assert_matches_jdk(name: &str, mine: &Profile, jdk: &Profile) {
    let mut checked = 0;
    for (key, (value, events)) in &jdk.stacks {
        let Some((my_value, my_events)) = mine.stacks.get(key) else {
            panic!(
                "{name}: the JDK has type {} stack {:?}, we do not",
                key.0, key.1
            );
        };
        assert_eq!(my_events, events, "{name}: events of {key:?}");
        assert!(
            my_value.abs_diff(*value) <= *events as u64,
            "{name}: {key:?}: ours {my_value}, the JDK's {value}"
        );
        checked += 1;
    }
    assert_eq!(mine.stacks.len(), jdk.stacks.len(), "{name}: stacks");
    assert!(checked > 0);
}

fn temp_file(prefix: &str) -> PathBuf {
    std::env::temp_dir().join(format!("{}.jfr", unique_name(prefix)))
}

const ALL: [ProfileType; 4] = [
    ProfileType::Cpu,
    ProfileType::Alloc,
    ProfileType::Lock,
    ProfileType::Park,
];

#[test]
fn jdk17_recording_equals_jfrs_and_jfr_print() {
    let file = temp_file("jfr_diff_jdk17");
    let bytes = jdk_recording(JDK17_JAVA, "", &file);
    let mine = assert_matches_jfrs("jdk17", &bytes, &ALL, CpuEvent::ExecutionSample);
    let jdk = jdk_oracle(
        Path::new("/usr/lib/jvm/java-17-openjdk-amd64/bin/jfr"),
        &file,
        CpuEvent::ExecutionSample,
    );
    let _ = std::fs::remove_file(&file);
    assert_matches_jdk("jdk17", &mine, &jdk);
    // CPU is samples × the recording's own period, not the parser's fallback.
    let (value, events) = mine.total(ProfileType::Cpu);
    assert_eq!(value, events * EXECUTION_PERIOD_NANOS);
}

#[test]
fn jdk25_recording_with_cpu_time_samples_equals_jfrs_and_jfr_print() {
    let file = temp_file("jfr_diff_jdk25");
    let bytes = jdk_recording(
        JDK25_JAVA,
        ",+jdk.CPUTimeSample#enabled=true,+jdk.CPUTimeSample#throttle=10ms",
        &file,
    );
    let jfr_tool = Path::new("/usr/lib/jvm/temurin-25-jdk-amd64/bin/jfr");
    // The recording holds both CPU events, as when the application runs its
    // own recording next to ours: each rule reads exactly one of them.
    let cpu_time = assert_matches_jfrs("jdk25 cpu-time", &bytes, &ALL, CpuEvent::CpuTimeSample);
    let execution = assert_matches_jfrs("jdk25 execution", &bytes, &ALL, CpuEvent::ExecutionSample);
    let jdk_cpu_time = jdk_oracle(jfr_tool, &file, CpuEvent::CpuTimeSample);
    let jdk_execution = jdk_oracle(jfr_tool, &file, CpuEvent::ExecutionSample);
    let _ = std::fs::remove_file(&file);
    assert_matches_jdk("jdk25 cpu-time", &cpu_time, &jdk_cpu_time);
    assert_matches_jdk("jdk25 execution", &execution, &jdk_execution);
    // The CPU-time samples are there, each weighing its own sampling period
    // (10 ms or a multiple); the execution samples weigh the 20 ms period.
    assert!(
        jdk_cpu_time.cpu_time_samples > 100,
        "{} CPU-time samples",
        jdk_cpu_time.cpu_time_samples
    );
    let (value, events) = cpu_time.total(ProfileType::Cpu);
    assert!(
        value < events * EXECUTION_PERIOD_NANOS,
        "cpu {value} ns over {events} samples"
    );
    let (value, events) = execution.total(ProfileType::Cpu);
    assert_eq!(value, events * EXECUTION_PERIOD_NANOS);
}

#[test]
fn async_profiler_recording_equals_jfrs() {
    let library = async_profiler();
    assert!(
        Path::new(&library).exists(),
        "async-profiler is missing at {library}"
    );
    let file = temp_file("jfr_diff_ap");
    let agent = format!(
        "-agentpath:{library}=start,event=cpu,interval=7ms,alloc=512k,lock=1ms,jfr,file={}",
        file.display()
    );
    let bytes = record(JDK17_JAVA, &[agent], &file);
    let _ = std::fs::remove_file(&file);
    let mine = assert_matches_jfrs("async-profiler", &bytes, &ALL, CpuEvent::ExecutionSample);
    // async-profiler's `interval` setting weighs its samples, not the parser's fallback.
    let (value, events) = mine.total(ProfileType::Cpu);
    assert_eq!(value, events * 7_000_000);
}
