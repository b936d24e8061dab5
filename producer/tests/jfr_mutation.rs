//! A bounded mutation run of the agent's JFR parser (`scan_chunks` + `parse_chunks`,
//! as the agent calls them) over real recordings: the JDK 17 and JDK 25 fixtures and
//! an async-profiler 4.5 one (see `data/asprof45-jdk17-demo.txt`).
//!
//! An allocation failure or a stack overflow aborts the process, and `catch_unwind`
//! cannot stop that, so the parser runs in a child process: this test binary
//! re-executed on the ignored test [`mutation_child`], under `prlimit --as` (the
//! address space a DaemonSet pod would give it, 3 GiB by default), with a deadline
//! per case. An abort, a signal, a hang, a panic (even one the parser catches) or an
//! inconsistent outcome fails the run; each failure names its case and seed and
//! leaves the input in a temp file with the command that reproduces it.
//!
//! Knobs (environment): `JAVELIN_JFR_MUTATIONS` cases (default 1200),
//! `JAVELIN_JFR_MUTATION_SEED`, `JAVELIN_JFR_MUTATION_AS_BYTES`,
//! `JAVELIN_JFR_MUTATION_CASE_SECS` (deadline per case, default 20).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use javelin_agent::jfr_parse::{EventRules, parse_chunks, scan_chunks};
use javelin_schema::wire::ProfileType;

const FIXTURES: [(&str, &[u8]); 3] = [
    ("jdk17", include_bytes!("data/demo-jdk17.jfr")),
    ("jdk25", include_bytes!("data/demo-jdk25.jfr")),
    ("asprof45", include_bytes!("data/asprof45-jdk17-demo.jfr")),
];

const CHILD_TEST: &str = "mutation_child";
const ENV_CASES: &str = "JAVELIN_JFR_MUTATIONS";
const ENV_SEED: &str = "JAVELIN_JFR_MUTATION_SEED";
const ENV_AS_BYTES: &str = "JAVELIN_JFR_MUTATION_AS_BYTES";
const ENV_CASE_SECS: &str = "JAVELIN_JFR_MUTATION_CASE_SECS";
/// Set by the driver for the child: `<first>..<end>` case indices to run.
const ENV_CHILD_RANGE: &str = "JAVELIN_JFR_MUTATION_CHILD_RANGE";
/// Reproduction: the child parses this one file instead of generated cases.
const ENV_FILE: &str = "JAVELIN_JFR_MUTATION_FILE";

const DEFAULT_CASES: u64 = 1200;
const DEFAULT_SEED: u64 = 0x6a61_7665_6c69_6e31;
const DEFAULT_AS_BYTES: u64 = 3 << 30;
/// The agent parses on tokio's blocking threads, whose stack is 2 MiB.
const PARSE_STACK: usize = 2 << 20;
/// Header size of a JFR chunk.
const HEADER: usize = 68;

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => {
            let v = v.trim();
            let parsed = match v.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => v.parse(),
            };
            parsed.unwrap_or_else(|_| panic!("{name}={v} is not a number"))
        }
        Err(_) => default,
    }
}

/// xorshift64*: small, deterministic, no dependency.
struct Rng(u64);

impl Rng {
    /// An independent stream per case, so any case can be regenerated alone.
    fn for_case(seed: u64, index: u64) -> Rng {
        let mut s = seed ^ index.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        s = (s ^ (s >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        s = (s ^ (s >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((s ^ (s >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

// ---------------------------------------------------------------------------
// A JFR file as chunks of records, so mutations can change a record's length and
// still produce a file whose sizes and offsets agree (and so reach the decoder).

/// JFR's varint: 7 bits per byte, little-endian groups, the 9th byte carries 8 bits.
fn varint(value: i64) -> Vec<u8> {
    let mut u = value as u64;
    let mut out = Vec::with_capacity(9);
    for i in 0..9 {
        if i == 8 {
            out.push(u as u8);
            break;
        }
        let low = (u & 0x7f) as u8;
        u >>= 7;
        if u == 0 {
            out.push(low);
            break;
        }
        out.push(low | 0x80);
    }
    out
}

/// `value` in exactly `len` bytes (redundant continuation bytes, as the JDK writes sizes).
fn padded_varint(value: u64, len: usize) -> Option<Vec<u8>> {
    if len == 0 || len > 8 || value >> (7 * len) != 0 {
        return None;
    }
    Some(
        (0..len)
            .map(|i| {
                let low = ((value >> (7 * i)) & 0x7f) as u8;
                if i + 1 < len { low | 0x80 } else { low }
            })
            .collect(),
    )
}

/// (value, encoded length) of the varint at the start of `b`.
fn read_varint(b: &[u8]) -> Option<(i64, usize)> {
    let mut value = 0u64;
    for i in 0..9 {
        let byte = *b.get(i)?;
        if i == 8 {
            return Some(((value | u64::from(byte) << 56) as i64, 9));
        }
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value as i64, i + 1));
        }
    }
    None
}

#[derive(Clone)]
struct Record {
    /// Bytes the size prefix had in the original (kept when the new size fits).
    size_len: usize,
    /// The record after its size prefix: type id, then fields.
    body: Vec<u8>,
}

#[derive(Clone)]
struct Chunk {
    header: Vec<u8>,
    records: Vec<Record>,
    /// Record indices the header's constant pool and metadata offsets point at.
    cpool: usize,
    metadata: usize,
}

impl Chunk {
    /// Splits a fixture's chunks into records (fixtures use compressed integers).
    fn parse_all(bytes: &[u8]) -> Vec<Chunk> {
        let mut chunks = Vec::new();
        let mut at = 0;
        while at + HEADER <= bytes.len() {
            let be = |o: usize| {
                let mut a = [0u8; 8];
                a.copy_from_slice(&bytes[at + o..at + o + 8]);
                i64::from_be_bytes(a) as usize
            };
            let (size, cpool_offset, meta_offset) = (be(8), be(16), be(24));
            let mut records = Vec::new();
            let (mut cpool, mut metadata) = (0, 0);
            let mut pos = HEADER;
            while pos < size {
                let (len, size_len) = read_varint(&bytes[at + pos..]).expect("fixture record size");
                if pos == cpool_offset {
                    cpool = records.len();
                }
                if pos == meta_offset {
                    metadata = records.len();
                }
                records.push(Record {
                    size_len,
                    body: bytes[at + pos + size_len..at + pos + len as usize].to_vec(),
                });
                pos += len as usize;
            }
            chunks.push(Chunk {
                header: bytes[at..at + HEADER].to_vec(),
                records,
                cpool,
                metadata,
            });
            at += size;
        }
        chunks
    }

    fn record_bytes(record: &Record) -> Vec<u8> {
        let mut size_len = record.size_len;
        loop {
            let total = (size_len + record.body.len()) as u64;
            if let Some(mut out) = padded_varint(total, size_len) {
                out.extend_from_slice(&record.body);
                return out;
            }
            size_len += 1;
        }
    }

    /// The chunk with its header's size and offsets recomputed from the records.
    fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.header.clone();
        let (mut cpool, mut metadata) = (HEADER, HEADER);
        for (i, record) in self.records.iter().enumerate() {
            if i == self.cpool {
                cpool = out.len();
            }
            if i == self.metadata {
                metadata = out.len();
            }
            out.extend_from_slice(&Self::record_bytes(record));
        }
        let len = out.len() as i64;
        out[8..16].copy_from_slice(&len.to_be_bytes());
        out[16..24].copy_from_slice(&(cpool as i64).to_be_bytes());
        out[24..32].copy_from_slice(&(metadata as i64).to_be_bytes());
        out
    }

    /// Byte offset of record `index` inside the serialized chunk.
    fn record_offset(&self, index: usize) -> usize {
        HEADER
            + self.records[..index]
                .iter()
                .map(|r| Self::record_bytes(r).len())
                .sum::<usize>()
    }

    fn is_checkpoint(record: &Record) -> bool {
        read_varint(&record.body).is_some_and(|(t, _)| t == 1)
    }

    /// Mostly the metadata and constant-pool records: their counts size allocations.
    fn pick_record(&self, rng: &mut Rng) -> usize {
        match rng.below(3) {
            0 => self.metadata,
            1 => {
                let pools: Vec<usize> = (0..self.records.len())
                    .filter(|&i| Self::is_checkpoint(&self.records[i]))
                    .collect();
                if pools.is_empty() {
                    self.cpool
                } else {
                    pools[rng.below(pools.len())]
                }
            }
            _ => rng.below(self.records.len()),
        }
    }
}

fn to_file(chunks: &[Chunk]) -> Vec<u8> {
    chunks.iter().flat_map(Chunk::to_bytes).collect()
}

/// Start offsets of the varints a body decodes into when read as a varint stream
/// (exact for integer fields; strings and bytes make the rest approximate).
fn varint_positions(body: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < body.len() {
        let Some((_, len)) = read_varint(&body[at..]) else {
            break;
        };
        out.push((at, len));
        at += len;
    }
    out
}

const EXTREMES: [i64; 10] = [
    0x7fff_ffff,
    0xffff_ffff,
    -1,
    0,
    i64::MAX,
    i64::MIN,
    0x8000_0000,
    1 << 40,
    0x7fff_fff0,
    1 << 20,
];

/// Replaces one varint of one record with an extreme value; sizes are fixed up.
fn extreme_varint(chunk: &mut Chunk, rng: &mut Rng) -> String {
    let r = chunk.pick_record(rng);
    let body = &mut chunk.records[r].body;
    let mut positions = varint_positions(body);
    // Half the time a count-like varint (array lengths, pool and string counts are small).
    if rng.below(2) == 0 {
        let counts: Vec<(usize, usize)> = positions
            .iter()
            .copied()
            .filter(|&(at, _)| {
                read_varint(&body[at..]).is_some_and(|(v, _)| (1..=256).contains(&v))
            })
            .collect();
        if !counts.is_empty() {
            positions = counts;
        }
    }
    if positions.is_empty() {
        return format!("record {r}: empty");
    }
    let (at, len) = positions[rng.below(positions.len())];
    // 0x7fffffff most often: as an i32 count it is the largest a reader may trust.
    let value = match rng.below(3) {
        0 => 0x7fff_ffff,
        _ => EXTREMES[rng.below(EXTREMES.len())],
    };
    body.splice(at..at + len, varint(value));
    format!("record {r} varint at +{at} := {value:#x}")
}

/// Replaces the metadata's element tree with a chain of nested `class` elements.
fn deep_metadata(chunk: &mut Chunk, depth: usize) -> String {
    let body = &mut chunk.records[chunk.metadata].body;
    // type, start, duration, metadata id
    let mut at = 0;
    for _ in 0..4 {
        at += read_varint(&body[at..]).expect("metadata header").1;
    }
    let (count, len) = read_varint(&body[at..]).expect("string count");
    at += len;
    let mut class_index = None;
    for i in 0..count {
        let encoding = body[at];
        at += 1;
        match encoding {
            0 | 1 => {}
            2 => at += read_varint(&body[at..]).expect("pool ref").1,
            3 | 5 => {
                let (n, len) = read_varint(&body[at..]).expect("string length");
                at += len;
                if &body[at..at + n as usize] == b"class" {
                    class_index = class_index.or(Some(i));
                }
                at += n as usize;
            }
            4 => {
                let (n, len) = read_varint(&body[at..]).expect("char count");
                at += len;
                let mut chars = Vec::new();
                for _ in 0..n {
                    let (c, len) = read_varint(&body[at..]).expect("char");
                    chars.push(c);
                    at += len;
                }
                if chars == b"class".map(i64::from) {
                    class_index = class_index.or(Some(i));
                }
            }
            other => panic!("fixture metadata string encoding {other}"),
        }
    }
    let class_index = class_index.expect("a \"class\" string in the metadata");
    // Root name, then per level: no attributes, one child named "class".
    let mut tree = varint(class_index);
    let level: Vec<u8> = [varint(0), varint(1), varint(class_index)].concat();
    for _ in 0..depth {
        tree.extend_from_slice(&level);
    }
    tree.extend_from_slice(&[0, 0]);
    body.truncate(at);
    body.extend_from_slice(&tree);
    format!("metadata elements nested {depth} deep")
}

/// One mutated input: what was done, and the bytes.
struct Case {
    fixture: &'static str,
    mutation: String,
    bytes: Vec<u8>,
    max_events: u64,
}

/// Case `index` of the run with `seed`. The first cases are the unmutated fixtures.
fn make_case(seed: u64, index: u64) -> Case {
    let mut rng = Rng::for_case(seed, index);
    let (fixture, original) = FIXTURES[(index % FIXTURES.len() as u64) as usize];
    // Every third case has a small event budget, so the budget path is mutated too.
    let max_events = if index % 3 == 1 { 500 } else { 1_000_000 };
    let case = |mutation: String, bytes: Vec<u8>| Case {
        fixture,
        mutation,
        bytes,
        max_events,
    };
    if index < FIXTURES.len() as u64 {
        return case("none (control)".into(), original.to_vec());
    }
    let mut chunks = Chunk::parse_all(original);
    let chunk = &mut chunks[0];
    let kind = rng.below(16);
    match kind {
        // Byte flips anywhere, sizes not fixed up.
        0 | 1 => {
            let mut bytes = original.to_vec();
            let flips = 1 + rng.below(8);
            for _ in 0..flips {
                let i = rng.below(bytes.len());
                bytes[i] ^= 1 << rng.below(8);
            }
            case(format!("{flips} bit flips"), bytes)
        }
        // Extreme integers (0x7fffffff, -1, 0, huge) where counts, ids and sizes live.
        2..=6 => {
            let what = (0..1 + rng.below(3))
                .map(|_| extreme_varint(chunk, &mut rng))
                .collect::<Vec<_>>()
                .join("; ");
            case(what, to_file(&chunks))
        }
        7 => {
            let cut = rng.below(original.len());
            case(
                format!("file truncated to {cut} bytes"),
                original[..cut].to_vec(),
            )
        }
        8 => {
            let r = chunk.pick_record(&mut rng);
            let body = &mut chunk.records[r].body;
            let keep = rng.below(body.len().max(1));
            body.truncate(keep);
            case(
                format!("record {r} cut to {keep} body bytes"),
                to_file(&chunks),
            )
        }
        9 => {
            let r = chunk.pick_record(&mut rng);
            let copies = 1 + rng.below(3);
            for _ in 0..copies {
                chunk.records.insert(r, chunk.records[r].clone());
            }
            if chunk.cpool > r {
                chunk.cpool += copies;
            }
            if chunk.metadata > r {
                chunk.metadata += copies;
            }
            case(format!("record {r} duplicated {copies}x"), to_file(&chunks))
        }
        10 => {
            let (a, b) = (chunk.pick_record(&mut rng), chunk.pick_record(&mut rng));
            chunk.records.swap(a, b);
            // Half the time the header follows the moved records.
            let follow = rng.below(2) == 0;
            if follow {
                for index in [&mut chunk.cpool, &mut chunk.metadata] {
                    if *index == a {
                        *index = b;
                    } else if *index == b {
                        *index = a;
                    }
                }
            }
            case(
                format!("records {a} and {b} swapped, header follows: {follow}"),
                to_file(&chunks),
            )
        }
        11 => {
            let depth = [64, 10_000, 200_000][rng.below(3)];
            let what = deep_metadata(chunk, depth);
            case(what, to_file(&chunks))
        }
        // A record size pointing past the end of the chunk (or the file).
        12 => {
            let r = rng.below(chunk.records.len());
            let at = chunk.record_offset(r);
            let mut bytes = to_file(&chunks);
            let past = (bytes.len() - at + 1 + rng.below(1 << 20)) as u64;
            let len = read_varint(&bytes[at..]).map_or(1, |(_, l)| l);
            let size = padded_varint(past, len.max(4)).expect("size fits");
            bytes.splice(at..at + len, size);
            case(format!("record {r} size {past}, past the end"), bytes)
        }
        // Header offsets into the middle of a record, or extreme header values.
        13 => {
            let mut bytes = to_file(&chunks);
            let field = [16usize, 24, 48, 56, 32, 40][rng.below(6)];
            let value = if field <= 24 {
                (HEADER + rng.below(bytes.len() - HEADER)) as i64
            } else {
                EXTREMES[rng.below(EXTREMES.len())]
            };
            bytes[field..field + 8].copy_from_slice(&value.to_be_bytes());
            case(format!("header field @{field} := {value:#x}"), bytes)
        }
        // The chunk twice, the second copy mutated.
        14 => {
            let mut second = chunks[0].clone();
            let what = extreme_varint(&mut second, &mut rng);
            chunks.push(second);
            case(format!("chunk repeated, copy: {what}"), to_file(&chunks))
        }
        _ => {
            let mut bytes = original.to_vec();
            let i = HEADER + rng.below(bytes.len() - HEADER);
            let end = (i + 1 + rng.below(64)).min(bytes.len());
            bytes[i..end].fill(0xff);
            case(format!("bytes {i}..{end} := 0xff"), bytes)
        }
    }
}

// ---------------------------------------------------------------------------
// The child: parses cases and reports one line per case on stdout.

static PANIC: Mutex<Option<String>> = Mutex::new(None);

/// Parses like the agent does and checks the outcome is consistent. `Ok` is a
/// one-line summary; `Err` a violation.
fn check_case(bytes: &[u8], max_events: u64) -> Result<String, String> {
    let (chunks, scan_error) = scan_chunks(bytes);
    let rules = EventRules {
        cpu_period_nanos: 10_000_000,
        max_events,
        cpu_event: javelin_agent::jfr_parse::CpuEvent::ExecutionSample,
        max_parse_time: None,
    };
    let mut budget = max_events;
    let mut delivered: BTreeMap<&'static str, (u64, i128)> = BTreeMap::new();
    let mut bad_sample = None;
    let outcome = parse_chunks(
        bytes,
        &chunks,
        rules,
        &mut budget,
        &mut |kind, frames, value, count| {
            if value < 0 || count < 1 || frames.is_empty() {
                bad_sample.get_or_insert(format!(
                    "{} sample with value {value}, count {count}, {} frames",
                    kind.name(),
                    frames.len()
                ));
            }
            let d = delivered.entry(kind.name()).or_default();
            d.0 += count.max(0) as u64;
            d.1 += i128::from(value);
        },
    );
    if let Some(bad) = bad_sample {
        return Err(bad);
    }
    let mut parsed_total = 0;
    for kind in ProfileType::ALL {
        let c = outcome.counts.get(&kind).copied().unwrap_or_default();
        parsed_total += c.parsed_events;
        if c.parsed_events + c.dropped_events > c.raw_events {
            return Err(format!("{}: {c:?}: parsed + dropped > raw", kind.name()));
        }
        if c.raw_events > bytes.len() as u64 {
            return Err(format!("{}: {c:?} from {} bytes", kind.name(), bytes.len()));
        }
        let samples = delivered.get(kind.name()).map_or(0, |d| d.0);
        if samples != c.parsed_events {
            return Err(format!(
                "{}: {samples} samples delivered, {} counted as parsed",
                kind.name(),
                c.parsed_events
            ));
        }
    }
    if parsed_total > max_events || budget > max_events {
        return Err(format!(
            "{parsed_total} events parsed with a budget of {max_events} ({budget} left)"
        ));
    }
    let error = outcome.error.clone().or(scan_error);
    let totals: Vec<String> = delivered
        .iter()
        .map(|(k, (n, v))| format!("{k}={n}/{v}"))
        .collect();
    Ok(format!(
        "chunks={}/{} {} error={}",
        outcome.chunks,
        chunks.len(),
        totals.join(","),
        error.map_or("none".to_string(), |e| format!("{e:?}").replace('\n', " ")),
    ))
}

/// Runs one case on a thread with the agent's blocking-thread stack; a panic,
/// caught by the parser or not, is a failure.
fn run_case(bytes: Vec<u8>, max_events: u64) -> Result<String, String> {
    *PANIC.lock().unwrap_or_else(|e| e.into_inner()) = None;
    let joined = std::thread::Builder::new()
        .stack_size(PARSE_STACK)
        .spawn(move || check_case(&bytes, max_events))
        .map_err(|e| format!("spawning the parse thread: {e}"))?
        .join();
    if let Some(message) = PANIC.lock().unwrap_or_else(|e| e.into_inner()).take() {
        return Err(format!("panicked: {}", message.replace('\n', " ")));
    }
    joined.map_err(|_| "panicked (no message)".to_string())?
}

fn address_space_limit() -> String {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|l| l.starts_with("Max address space"))
                .map(|l| l.split_whitespace().nth(3).unwrap_or("?").to_string())
        })
        .unwrap_or_else(|| "?".into())
}

/// The child-process entry of [`mutated_recordings_never_abort_hang_or_panic`].
/// Lines: `LIMIT <bytes>`, then `START i` and `DONE i <summary>` / `FAIL i <why>`.
#[test]
#[ignore = "child-process entry of mutated_recordings_never_abort_hang_or_panic, run by it with --ignored"]
fn mutation_child() {
    std::panic::set_hook(Box::new(|info| {
        eprintln!("{info}");
        *PANIC.lock().unwrap_or_else(|e| e.into_inner()) = Some(info.to_string());
    }));
    let mut out = std::io::stdout().lock();
    // A line of its own: the harness has printed "test mutation_child ... " without one.
    writeln!(out, "\nLIMIT {}", address_space_limit()).expect("stdout");
    let report = |out: &mut std::io::StdoutLock<'_>, i: u64, result: Result<String, String>| {
        match result {
            Ok(summary) => writeln!(out, "DONE {i} {summary}"),
            Err(why) => writeln!(out, "FAIL {i} {why}"),
        }
        .and_then(|()| out.flush())
        .expect("stdout");
    };
    if let Ok(path) = std::env::var(ENV_FILE) {
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
        let max_events = env_u64("JAVELIN_JFR_MUTATION_MAX_EVENTS", 1_000_000);
        writeln!(out, "START 0")
            .and_then(|()| out.flush())
            .expect("stdout");
        report(&mut out, 0, run_case(bytes, max_events));
        return;
    }
    let range = std::env::var(ENV_CHILD_RANGE).unwrap_or_else(|_| {
        panic!("{CHILD_TEST} is run by the mutation test (set {ENV_CHILD_RANGE} or {ENV_FILE})")
    });
    let (first, end) = range
        .split_once("..")
        .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)))
        .unwrap_or_else(|| panic!("{ENV_CHILD_RANGE}={range}"));
    let seed = env_u64(ENV_SEED, DEFAULT_SEED);
    for i in first..end {
        let case = make_case(seed, i);
        writeln!(out, "START {i}")
            .and_then(|()| out.flush())
            .expect("stdout");
        report(&mut out, i, run_case(case.bytes, case.max_events));
    }
}

// ---------------------------------------------------------------------------
// The driver.

#[derive(Debug)]
enum Outcome {
    Parsed { clean: bool, reached_decoder: bool },
    Failed(String),
}

/// Runs cases `range` in child processes, restarting after a case that kills one.
fn drive(
    range: std::ops::Range<u64>,
    seed: u64,
    as_bytes: u64,
    case_deadline: Duration,
) -> BTreeMap<u64, Outcome> {
    let exe = std::env::current_exe().expect("current_exe");
    let mut outcomes = BTreeMap::new();
    let mut next = range.start;
    while next < range.end {
        let mut child = Command::new("prlimit")
            .arg(format!("--as={as_bytes}"))
            .arg("--")
            .arg(&exe)
            .args([
                CHILD_TEST,
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ENV_CHILD_RANGE, format!("{next}..{}", range.end))
            .env(ENV_SEED, seed.to_string())
            .env_remove(ENV_FILE)
            .env("RUST_BACKTRACE", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting the child under prlimit (util-linux)");
        let (lines_tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("child stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut stderr = child.stderr.take().expect("child stderr");
        let stderr_tail = std::thread::spawn(move || {
            let mut all = Vec::new();
            let _ = stderr.read_to_end(&mut all);
            let text = String::from_utf8_lossy(&all).into_owned();
            let cut = text.len().saturating_sub(600);
            let cut = (cut..=text.len())
                .find(|&i| text.is_char_boundary(i))
                .unwrap_or(text.len());
            text[cut..].replace('\n', " | ")
        });
        let mut limit_seen = false;
        let mut current: Option<u64> = None;
        let died = loop {
            match lines.recv_timeout(case_deadline) {
                Ok(line) => {
                    let (tag, rest) = line.split_once(' ').unwrap_or((line.as_str(), ""));
                    let (index, detail) = rest.split_once(' ').unwrap_or((rest, ""));
                    let index = index.parse::<u64>().ok();
                    match (tag, index) {
                        ("LIMIT", _) => {
                            assert_eq!(
                                rest,
                                as_bytes.to_string(),
                                "the child's address-space limit"
                            );
                            limit_seen = true;
                        }
                        ("START", Some(i)) => current = Some(i),
                        ("DONE", Some(i)) => {
                            let clean = detail.contains("error=none");
                            let reached_decoder = !detail.starts_with("chunks=0/");
                            outcomes.insert(
                                i,
                                Outcome::Parsed {
                                    clean,
                                    reached_decoder,
                                },
                            );
                            current = None;
                            next = i + 1;
                        }
                        ("FAIL", Some(i)) => {
                            outcomes.insert(i, Outcome::Failed(detail.to_string()));
                            current = None;
                            next = i + 1;
                        }
                        _ => {} // the test harness's own lines
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break Some(format!("hang: no result within {case_deadline:?}"));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = child.wait().expect("waiting for the child");
                    break current.map(|_| describe_exit(status));
                }
            }
        };
        let tail = stderr_tail.join().unwrap_or_default();
        assert!(
            limit_seen || died.is_some(),
            "the child never reported its limits; stderr: {tail}"
        );
        match (died, current) {
            (Some(why), Some(i)) => {
                outcomes.insert(i, Outcome::Failed(format!("{why}; stderr: {tail}")));
                next = i + 1;
            }
            (Some(why), None) => panic!("child died between cases ({why}); stderr: {tail}"),
            (None, _) if next < range.end => {
                panic!("child stopped at case {next} of {range:?}; stderr: {tail}")
            }
            (None, _) => {}
        }
    }
    outcomes
}

fn describe_exit(status: ExitStatus) -> String {
    match (status.signal(), status.code()) {
        (Some(6), _) => "aborted (SIGABRT: allocation failure or stack overflow)".into(),
        (Some(11), _) => "killed by SIGSEGV".into(),
        (Some(sig), _) => format!("killed by signal {sig}"),
        (None, Some(code)) => format!("exited with {code} in the middle of a case"),
        (None, None) => "exited without a status".into(),
    }
}

fn repro_file(seed: u64, index: u64, bytes: &[u8]) -> PathBuf {
    let path = std::env::temp_dir().join(format!(
        "javelin-jfr-mutation-{seed:x}-{index}-{}.jfr",
        std::process::id()
    ));
    std::fs::write(&path, bytes).expect("writing the failing input");
    path
}

#[test]
fn mutated_recordings_never_abort_hang_or_panic() {
    let cases = env_u64(ENV_CASES, DEFAULT_CASES).max(FIXTURES.len() as u64);
    let seed = env_u64(ENV_SEED, DEFAULT_SEED);
    let as_bytes = env_u64(ENV_AS_BYTES, DEFAULT_AS_BYTES);
    let case_deadline = Duration::from_secs(env_u64(ENV_CASE_SECS, 20));
    let started = Instant::now();
    // Two children at once: one per core of the CI machine.
    let half = cases / 2;
    let outcomes: BTreeMap<u64, Outcome> = std::thread::scope(|s| {
        let a = s.spawn(|| drive(0..half, seed, as_bytes, case_deadline));
        let b = s.spawn(|| drive(half..cases, seed, as_bytes, case_deadline));
        let mut all = a.join().expect("driver thread");
        all.extend(b.join().expect("driver thread"));
        all
    });
    assert_eq!(outcomes.len() as u64, cases, "every case has an outcome");

    let (mut clean, mut errors, mut reached) = (0, 0, 0);
    let mut failures = Vec::new();
    for (&index, outcome) in &outcomes {
        match outcome {
            Outcome::Parsed {
                clean: c,
                reached_decoder,
            } => {
                if *c {
                    clean += 1;
                } else {
                    errors += 1;
                }
                if *reached_decoder {
                    reached += 1;
                }
                if index < FIXTURES.len() as u64 && !c {
                    failures.push(format!(
                        "control case {index} (unmutated) did not parse cleanly"
                    ));
                }
            }
            Outcome::Failed(why) => {
                let case = make_case(seed, index);
                let path = repro_file(seed, index, &case.bytes);
                failures.push(format!(
                    "case {index} (seed {seed:#x}, {}, {}, budget {}): {why}\n    input: {}\n    reproduce: JAVELIN_JFR_MUTATION_FILE={} JAVELIN_JFR_MUTATION_MAX_EVENTS={} \
                     prlimit --as={as_bytes} {} {CHILD_TEST} --exact --ignored --nocapture",
                    case.fixture,
                    case.mutation,
                    case.max_events,
                    path.display(),
                    path.display(),
                    case.max_events,
                    std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_default(),
                ));
            }
        }
    }
    eprintln!(
        "{cases} cases (seed {seed:#x}) in {:?}: {clean} parsed cleanly, {errors} reported a JfrError, \
         {reached} reached the decoder, {} failed",
        started.elapsed(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {cases} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // The run is only meaningful if mutations both pass the guard and get rejected.
    assert!(clean > 0 && errors > 0, "{clean} clean, {errors} errors");
    assert!(
        reached * 2 >= cases,
        "only {reached} of {cases} cases reached the decoder"
    );
}

/// The record model reproduces the fixtures byte for byte, so a mutation changes
/// only what it says it changes.
#[test]
fn the_record_model_round_trips_the_fixtures() {
    for (name, bytes) in FIXTURES {
        let chunks = Chunk::parse_all(bytes);
        assert_eq!(chunks.len(), 1, "{name}");
        assert!(chunks[0].records.len() > 1000, "{name}");
        assert!(
            Chunk::is_checkpoint(&chunks[0].records[chunks[0].cpool]),
            "{name}"
        );
        assert_eq!(to_file(&chunks), bytes, "{name}");
    }
}
