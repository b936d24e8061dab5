//! Javelin's JFR reader on real recordings (JDK 17 and JDK 25 fixtures made
//! with the agent's minimal event set) and on corrupt input: every bad file
//! gives a reported error quickly, never a panic or a hang.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use javelin_agent::jfr_parse::{
    EventRules, JfrError, ParseOutcome, TypeCounts, parse_chunks, scan_chunks,
};
use javelin_schema::wire::ProfileType;

const JDK17: &[u8] = include_bytes!("data/demo-jdk17.jfr");
const JDK25: &[u8] = include_bytes!("data/demo-jdk25.jfr");

const RULES: EventRules = EventRules {
    cpu_period_nanos: 10_000_000,
    max_events: 1_000_000,
    cpu_event: javelin_agent::jfr_parse::CpuEvent::ExecutionSample,
    max_parse_time: None,
};

/// Scans and parses like the agent does; returns the outcome, the summed values and the first error.
fn parse(
    bytes: &[u8],
    max_events: u64,
) -> (ParseOutcome, HashMap<ProfileType, i64>, Option<JfrError>) {
    let (chunks, scan_error) = scan_chunks(bytes);
    let mut totals: HashMap<ProfileType, i64> = HashMap::new();
    let mut budget = max_events;
    let outcome = parse_chunks(
        bytes,
        &chunks,
        RULES,
        &mut budget,
        &mut |kind, _frames, value, _count| {
            *totals.entry(kind).or_default() += value;
        },
    );
    let error = outcome.error.clone().or(scan_error);
    (outcome, totals, error)
}

fn counts(outcome: &ParseOutcome, kind: ProfileType) -> TypeCounts {
    outcome.counts.get(&kind).copied().unwrap_or_default()
}

#[test]
fn fixtures_parse_completely_with_the_jdk_s_event_counts() {
    // Counts from `jfr summary` (park: all parks in these files are on locks).
    for (name, bytes, expected) in [
        (
            "jdk17",
            JDK17,
            [
                (ProfileType::Cpu, 412),
                (ProfileType::Alloc, 953),
                (ProfileType::Lock, 138),
                (ProfileType::Park, 87),
            ],
        ),
        (
            "jdk25",
            JDK25,
            [
                (ProfileType::Cpu, 414),
                (ProfileType::Alloc, 993),
                (ProfileType::Lock, 189),
                (ProfileType::Park, 69),
            ],
        ),
    ] {
        let (outcome, totals, error) = parse(bytes, RULES.max_events);
        assert_eq!(error, None, "{name}");
        assert_eq!(outcome.chunks, 1, "{name}");
        for (kind, events) in expected {
            let c = counts(&outcome, kind);
            assert_eq!(
                (c.raw_events, c.parsed_events, c.dropped_events),
                (events, events, 0),
                "{name} {}",
                kind.name()
            );
        }
        assert_eq!(
            totals[&ProfileType::Cpu],
            10_000_000 * expected[0].1 as i64,
            "{name}"
        );
    }
    // Park durations summed by `jfr print --json` over the same files.
    assert!(parse(JDK17, u64::MAX).1[&ProfileType::Park].abs_diff(4_831_842_592) <= 87);
    assert!(parse(JDK25, u64::MAX).1[&ProfileType::Park].abs_diff(4_372_663_715) <= 69);
}

#[test]
fn the_event_cap_drops_and_counts_the_rest() {
    let (outcome, _, error) = parse(JDK17, 100);
    assert_eq!(error, None);
    let all: Vec<TypeCounts> = ProfileType::ALL
        .iter()
        .map(|k| counts(&outcome, *k))
        .collect();
    assert_eq!(all.iter().map(|c| c.parsed_events).sum::<u64>(), 100);
    assert_eq!(
        all.iter().map(|c| c.raw_events).sum::<u64>(),
        412 + 953 + 138 + 87
    );
    assert_eq!(
        all.iter().map(|c| c.dropped_events).sum::<u64>(),
        412 + 953 + 138 + 87 - 100
    );
}

/// Asserts that `bytes` is reported as broken within a second.
fn assert_reported(what: &str, bytes: &[u8]) -> JfrError {
    let started = Instant::now();
    let (_, _, error) = parse(bytes, RULES.max_events);
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(1), "{what}: took {elapsed:?}");
    error.unwrap_or_else(|| panic!("{what}: no error reported"))
}

#[test]
fn truncated_garbage_zero_size_and_negative_size_files_are_reported() {
    let truncated = assert_reported("truncated", &JDK17[..JDK17.len() / 2]);
    assert!(
        truncated.to_string().contains("bytes available"),
        "{truncated}"
    );

    let garbage: Vec<u8> = (0..100_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    assert!(matches!(
        assert_reported("garbage", &garbage),
        JfrError::BadChunk { .. }
    ));

    // The first record after the 68-byte header gets size 0 (jfrs would spin on it).
    let mut zero = JDK17.to_vec();
    zero[68] = 0;
    let error = assert_reported("zero-size record", &zero);
    assert!(error.to_string().contains("size 0"), "{error}");

    // A negative chunk size in the header (jfrs would panic allocating it).
    let mut negative = JDK17.to_vec();
    negative[8..16].copy_from_slice(&(-1_000i64).to_be_bytes());
    assert!(
        assert_reported("negative chunk size", &negative)
            .to_string()
            .contains("chunk size -1000")
    );

    // A record whose varint size decodes negative.
    let mut negative_record = JDK17.to_vec();
    negative_record[68..77].copy_from_slice(&[0xff; 9]);
    assert!(
        assert_reported("negative record size", &negative_record)
            .to_string()
            .contains("size -")
    );

    // A chunk still being written (file state byte ≠ 0) is not parsed.
    let mut live = JDK17.to_vec();
    live[64] = 7;
    assert_eq!(
        assert_reported("unfinished chunk", &live),
        JfrError::Unfinished { offset: 0 }
    );
}

#[test]
fn good_chunks_before_a_bad_one_still_count() {
    let mut two = JDK17.to_vec();
    two.extend_from_slice(&JDK25[..1000]);
    let (outcome, _, error) = parse(&two, RULES.max_events);
    assert!(matches!(error, Some(JfrError::BadChunk { offset, .. }) if offset == JDK17.len()));
    assert_eq!(counts(&outcome, ProfileType::Cpu).parsed_events, 412);
}

/// Mutation fuzzing over the guarded parser: random byte flips, truncations and
/// splices of the real fixtures. Every case must finish quickly without a panic;
/// the values it reports must never exceed what the events could carry.
#[test]
fn mutated_recordings_never_panic_or_hang() {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let started = Instant::now();
    let (mut parsed, mut errors) = (0, 0);
    for case in 0..400 {
        let base = if case % 2 == 0 { JDK17 } else { JDK25 };
        let mut bytes = base.to_vec();
        match next() % 4 {
            0 => {
                for _ in 0..(1 + next() % 8) {
                    let i = (next() as usize) % bytes.len();
                    bytes[i] ^= 1 << (next() % 8);
                }
            }
            1 => bytes.truncate((next() as usize) % bytes.len()),
            2 => {
                let i = 68 + (next() as usize) % (bytes.len() - 68);
                let len = 1 + (next() as usize) % 64;
                let end = (i + len).min(bytes.len());
                bytes[i..end].fill(0xff);
            }
            _ => {
                let i = (next() as usize) % bytes.len();
                bytes[i] = 0;
            }
        }
        let case_started = Instant::now();
        let (_, _, error) = parse(&bytes, RULES.max_events);
        assert!(
            case_started.elapsed() < Duration::from_secs(2),
            "case {case} took {:?}",
            case_started.elapsed()
        );
        if error.is_some() {
            errors += 1
        } else {
            parsed += 1
        }
    }
    eprintln!(
        "400 mutations: {parsed} parsed, {errors} reported errors, {:?}",
        started.elapsed()
    );
    assert!(errors > 0 && parsed > 0);
}
