//! The built-in JFR recorder against real JVMs running the demo workload:
//! all four profile types, the hot spots they point at, and an independent count
//! of the same JFR data by the JDK's own `jfr print --json`.

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use javelin_agent::aggregate::{Bounds, WindowAggregator};
use javelin_agent::attach::AttachTarget;
use javelin_agent::jfr_parse::{EventRules, TypeCounts, parse_chunks};
use javelin_agent::recorder::{
    AsyncProfilerRecorder, AsyncProfilerSettings, JfrRecorder, JfrSettings, Recorder,
};
use javelin_schema::testkit::{DemoJvm, unique_name};
use javelin_schema::wire::{FrameType, ProfileType, ProfileWindow, TargetIdentity};

fn attach_target(jvm: &DemoJvm) -> AttachTarget {
    AttachTarget::for_pid(jvm.pid, Duration::from_secs(30)).expect("the JVM's /proc entry")
}

/// Everything collected so far from one recording.
#[derive(Default)]
struct Collection {
    jfr: Vec<u8>,
    counts: HashMap<ProfileType, TypeCounts>,
    windows: Vec<ProfileWindow>,
}

impl Collection {
    fn collect(&mut self, recorder: &mut dyn Recorder) {
        let collected = recorder.collect().expect("JFR.dump and read");
        assert!(collected.error.is_none(), "{:?}", collected.error);
        let rules = EventRules {
            cpu_period_nanos: 10_000_000,
            max_events: u64::MAX,
            cpu_event: javelin_agent::jfr_parse::CpuEvent::ExecutionSample,
            max_parse_time: None,
        };
        let mut budget = u64::MAX;
        let mut agg = WindowAggregator::new(Bounds::default());
        let outcome = parse_chunks(
            &collected.bytes,
            &collected.new_chunks,
            rules,
            &mut budget,
            &mut |k, f, v, c| agg.add(k, f, v, c),
        );
        assert!(outcome.error.is_none(), "{:?}", outcome.error);
        for (kind, c) in outcome.counts {
            let mine = self.counts.entry(kind).or_default();
            mine.raw_events += c.raw_events;
            mine.parsed_events += c.parsed_events;
            mine.dropped_events += c.dropped_events;
        }
        let target = TargetIdentity {
            service: "javelin-demo".into(),
            target_id: 1,
            ..Default::default()
        };
        self.windows
            .extend(agg.finish(&target, 0, 1, &HashMap::new(), 0, 0));
        for chunk in &collected.new_chunks {
            self.jfr
                .extend_from_slice(&collected.bytes[chunk.offset..chunk.offset + chunk.size]);
        }
    }

    fn total(&self, kind: ProfileType) -> i64 {
        self.windows
            .iter()
            .filter(|w| w.kind() == kind)
            .flat_map(|w| &w.stacks)
            .map(|s| s.value)
            .sum()
    }

    /// Value per "application leaf": the deepest frame of each stack outside the
    /// JDK (java.*, jdk.*, sun.*), i.e. the workload method the samples point at.
    fn by_app_leaf(&self, kind: ProfileType) -> Vec<(String, i64)> {
        let mut sums: HashMap<String, i64> = HashMap::new();
        for w in self.windows.iter().filter(|w| w.kind() == kind) {
            for s in &w.stacks {
                let leaf = w
                    .frames(s)
                    .filter(|f| !["java.", "jdk.", "sun."].iter().any(|p| f.starts_with(p)))
                    .last()
                    .unwrap_or("<jdk only>")
                    .to_string();
                *sums.entry(leaf).or_default() += s.value;
            }
        }
        let mut v: Vec<(String, i64)> = sums.into_iter().collect();
        v.sort_by_key(|entry| std::cmp::Reverse(entry.1));
        v
    }
}

/// The demo's hot spot per type (loadtest/java/src/JavelinDemo.java): the
/// search path's BM25 scan, the report's per-row buffers, the inventory's
/// monitor held over a slow write, the database's single connection (a
/// ReentrantLock).
const HOT_SPOTS: [(ProfileType, &str); 4] = [
    (ProfileType::Cpu, "SearchIndex.score"),
    (ProfileType::Alloc, "CsvWriter.writeRow"),
    (ProfileType::Lock, "InventoryService.reserve"),
    (ProfileType::Park, "Database.execute"),
];
const CPU_HOT_SPOT: &str = HOT_SPOTS[0].1;

/// Collects from a fresh recording until every type's top frame is its hot spot (deadline 60 s).
fn record_demo(mut recorder: Box<dyn Recorder>) -> (Collection, Box<dyn Recorder>) {
    recorder.start(None).expect("the recorder starts");
    let mut collection = Collection::default();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        std::thread::sleep(Duration::from_secs(2));
        collection.collect(recorder.as_mut());
        let done = HOT_SPOTS.iter().all(|(kind, hot)| {
            collection
                .by_app_leaf(*kind)
                .first()
                .is_some_and(|(leaf, _)| leaf == hot)
        });
        if done
            && collection
                .by_app_leaf(ProfileType::Cpu)
                .first()
                .is_some_and(|(_, v)| *v >= 500_000_000)
        {
            return (collection, recorder);
        }
        assert!(
            Instant::now() < deadline,
            "hot spots not found within 60 s: {:#?}",
            HOT_SPOTS
                .iter()
                .map(|(k, _)| (k.name(), collection.by_app_leaf(*k)))
                .collect::<Vec<_>>()
        );
    }
}

fn jfr_recorder(jvm: &DemoJvm) -> Box<dyn Recorder> {
    Box::new(JfrRecorder::new(
        attach_target(jvm),
        unique_name("javelin_test"),
        JfrSettings::default(),
    ))
}

/// Every profile type is non-empty and its top application frame is the workload's hot spot.
fn assert_hot_spots(recorder: Box<dyn Recorder>) {
    let (collection, mut recorder) = record_demo(recorder);
    for (kind, hot) in HOT_SPOTS {
        let ranking = collection.by_app_leaf(kind);
        assert_eq!(
            ranking.first().map(|r| r.0.as_str()),
            Some(hot),
            "{}: {ranking:?}",
            kind.name()
        );
        assert!(collection.total(kind) > 0, "{} is empty", kind.name());
        let counts = collection.counts[&kind];
        assert_eq!(counts.dropped_events, 0, "{}", kind.name());
        assert_eq!(counts.parsed_events, counts.raw_events, "{}", kind.name());
    }
    // Frames keep their source line and how the JVM ran them.
    let hot_frames: Vec<(i32, i32)> = collection
        .windows
        .iter()
        .filter(|w| w.kind() == ProfileType::Cpu)
        .flat_map(|w| {
            w.stacks.iter().flat_map(move |s| {
                w.frames(s)
                    .zip(s.lines.iter().zip(&s.frame_types))
                    .filter(|(name, _)| *name == CPU_HOT_SPOT)
                    .map(|(_, (line, kind))| (*line, *kind))
            })
        })
        .collect();
    assert!(!hot_frames.is_empty());
    assert!(
        hot_frames.iter().all(|(line, _)| *line > 0),
        "{hot_frames:?}"
    );
    let executed = [
        FrameType::Interpreted,
        FrameType::Jit,
        FrameType::Inlined,
        FrameType::C1,
    ]
    .map(|t| t as i32);
    assert!(
        hot_frames.iter().all(|(_, kind)| executed.contains(kind)),
        "{hot_frames:?}"
    );
    recorder.stop().expect("the recorder stops");
}

#[test]
fn builtin_jfr_profiles_all_four_types_at_the_workload_hot_spots() {
    let jvm = DemoJvm::start(&[]);
    assert_hot_spots(jfr_recorder(&jvm));
}

#[test]
fn async_profiler_profiles_all_four_types_at_the_workload_hot_spots() {
    // Fails without the library, like every async-profiler test (dev/test sets
    // it, or skips these tests by name when there is none).
    let library = std::env::var_os("JAVELIN_TEST_ASYNC_PROFILER").expect(
        "JAVELIN_TEST_ASYNC_PROFILER is not set: point it at a libasyncProfiler.so (dev/test uses \
         ../shared/third_party/async-profiler-4.5/lib/libasyncProfiler.so when present), or skip \
         the async-profiler tests with `-- --skip async_profiler`",
    );
    let jvm = DemoJvm::start(&[]);
    let settings = AsyncProfilerSettings {
        library: library.into(),
        cpu_interval: Duration::from_millis(10),
        alloc_bytes: 512 * 1024,
        lock_threshold: Duration::from_millis(10),
        session_timeout: Duration::from_secs(120),
        max_dump_bytes: 256 << 20,
    };
    assert_hot_spots(Box::new(AsyncProfilerRecorder::new(
        attach_target(&jvm),
        settings,
    )));
}

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

#[test]
fn totals_equal_an_independent_count_by_jdk_jfr_print() {
    let jvm = DemoJvm::start(&[]);
    let (collection, mut recorder) = record_demo(jfr_recorder(&jvm));
    recorder.stop().expect("JFR.stop");
    let file = std::env::temp_dir().join(format!("{}.jfr", unique_name("javelin_check")));
    std::fs::write(&file, &collection.jfr).expect("write jfr");
    let output = Command::new("jfr")
        .args([
            "print",
            "--json",
            "--events",
            "jdk.ExecutionSample,jdk.ObjectAllocationSample,jdk.JavaMonitorEnter,jdk.ThreadPark",
        ])
        .arg(&file)
        .output()
        .expect("jfr print runs");
    let _ = std::fs::remove_file(&file);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("jfr print emits JSON");
    let events = json["recording"]["events"].as_array().expect("events");

    // The JDK's view, with the agent's documented rules: cpu = samples × period,
    // alloc = Σ weight, lock = Σ duration, park = Σ duration of parks on a lock
    // (no blocker, or a Condition wait, is idle and excluded).
    let mut expected: HashMap<ProfileType, (u64, i64)> = HashMap::new();
    for e in events {
        let v = &e["values"];
        let (kind, weight) = match e["type"].as_str() {
            Some("jdk.ExecutionSample") => (ProfileType::Cpu, 10_000_000),
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
        let slot = expected.entry(kind).or_default();
        slot.0 += 1;
        slot.1 += weight;
    }
    for kind in ProfileType::ALL {
        let (events, value) = expected.get(&kind).copied().unwrap_or_default();
        assert!(events > 0, "{}: the JDK saw no events", kind.name());
        assert_eq!(
            collection.counts[&kind].parsed_events,
            events,
            "{} event count",
            kind.name()
        );
        // Tick → ns conversion may round differently by at most 1 ns per event.
        let diff = (collection.total(kind) - value).unsigned_abs();
        assert!(
            diff <= events,
            "{}: agent {} vs jfr {value} ({events} events)",
            kind.name(),
            collection.total(kind)
        );
    }
}

#[test]
fn cpu_weights_come_from_the_recording_s_own_sampling_period() {
    let jvm = DemoJvm::start(&[]);
    // Recorded at 20 ms; the parser's fallback (Collection uses 10 ms) must not be used.
    let settings = JfrSettings {
        cpu_period: Duration::from_millis(20),
        ..JfrSettings::default()
    };
    let mut recorder: Box<dyn Recorder> = Box::new(JfrRecorder::new(
        attach_target(&jvm),
        unique_name("javelin_period"),
        settings,
    ));
    recorder.start(None).expect("JFR.start");
    let mut collection = Collection::default();
    let deadline = Instant::now() + Duration::from_secs(60);
    while collection
        .counts
        .get(&ProfileType::Cpu)
        .map_or(0, |c| c.parsed_events)
        < 50
    {
        assert!(Instant::now() < deadline, "no CPU samples within 60 s");
        std::thread::sleep(Duration::from_secs(2));
        collection.collect(recorder.as_mut());
    }
    let samples = collection.counts[&ProfileType::Cpu].parsed_events as i64;
    assert_eq!(collection.total(ProfileType::Cpu), samples * 20_000_000);
    recorder.stop().expect("JFR.stop");
}

/// Each dump carries only what is new: after the first collect, the JVM writes
/// (and the agent reads) just the chunks rotated since, never the older ones
/// the recording keeps for `maxage`; and no chunk is missed: a whole dump taken
/// independently at the end holds no chunk the collects did not deliver (other
/// than its own newest one). The JVM runs in UTC+5:30 (a `begin` read as
/// local time would skip 5.5 h of chunks), and another tool's dump rotates a
/// chunk between two of ours (both chunks must arrive).
#[test]
fn dumps_carry_only_new_chunks_and_miss_none() {
    let jvm = DemoJvm::start(&["-Duser.timezone=Asia/Kolkata"]);
    let name = unique_name("javelin_test");
    let mut recorder = JfrRecorder::new(attach_target(&jvm), name.clone(), JfrSettings::default());
    recorder.start(None).expect("the recorder starts");
    let mut collected_starts = std::collections::HashSet::new();
    let mut sizes = Vec::new();
    let other = std::env::temp_dir().join(format!("{name}-other.jfr"));
    for i in 0..6 {
        std::thread::sleep(Duration::from_millis(1500));
        if i == 3 {
            // Someone else's dump of every recording, mid-window.
            attach_target(&jvm)
                .jcmd(&format!("JFR.dump filename={}", other.display()))
                .expect("attach")
                .expect("Dumped recording")
                .expect("another tool's JFR.dump");
            let _ = std::fs::remove_file(&other);
            std::thread::sleep(Duration::from_millis(500));
        }
        let collected = recorder.collect().expect("JFR.dump and read");
        assert!(collected.error.is_none(), "{:?}", collected.error);
        let want = if i == 3 { 2 } else { 1 };
        assert!(
            collected.new_chunks.len() >= want,
            "dump {i}: {} new chunks, want at least {want}",
            collected.new_chunks.len()
        );
        let new_bytes: usize = collected.new_chunks.iter().map(|c| c.size).sum();
        sizes.push((collected.bytes.len(), new_bytes));
        collected_starts.extend(collected.new_chunks.iter().map(|c| c.start_nanos));
    }
    // From the second dump on, the file is exactly the new chunks.
    for (i, (file, new)) in sizes.iter().enumerate().skip(1) {
        assert_eq!(file, new, "dump {i} re-carried old chunks: {sizes:?}");
    }
    // The first dumps' chunks are still in the recording (maxage 120 s): a
    // whole dump shows what the collects would have missed.
    let whole = std::env::temp_dir().join(format!("{name}-whole.jfr"));
    attach_target(&jvm)
        .jcmd(&format!(
            "JFR.dump name={name} filename={}",
            whole.display()
        ))
        .expect("attach")
        .expect("Dumped recording")
        .expect("JFR.dump");
    let bytes = std::fs::read(&whole).expect("the whole dump");
    let _ = std::fs::remove_file(&whole);
    let (chunks, error) = javelin_agent::jfr_parse::scan_chunks(&bytes);
    assert!(error.is_none(), "{error:?}");
    let newest = chunks.iter().map(|c| c.start_nanos).max().expect("chunks");
    let missed: Vec<i64> = chunks
        .iter()
        .map(|c| c.start_nanos)
        .filter(|s| *s != newest && !collected_starts.contains(s))
        .collect();
    assert!(
        chunks.len() > 7 && missed.is_empty(),
        "{} chunks in the whole dump, {} collected, missed {missed:?}",
        chunks.len(),
        collected_starts.len()
    );
    recorder.stop().expect("JFR.stop");
}
