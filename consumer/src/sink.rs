//! Writes batches to ClickHouse: stacks (once per service, stack and day, via a
//! bounded cache), samples, ledger rows and target status. A batch is retried
//! with capped, jittered exponential backoff until it lands; its offsets are
//! stored only afterwards, so nothing is committed past unsaved data.

use std::borrow::Borrow;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

use clickhouse::Client;
use javelin_schema::rows::{
    AttemptRow, LedgerRow, SampleRowRef, StackRowRef, TargetStatusRow, table,
};

use crate::convert::WindowRows;

/// Rows of one batch, borrowed from the consumed messages.
#[derive(Debug, Default)]
pub struct Batch<'a> {
    pub windows: Vec<&'a WindowRows>,
    pub ledger: Vec<&'a LedgerRow>,
    pub statuses: Vec<&'a TargetStatusRow>,
}

impl Batch<'_> {
    pub fn samples(&self) -> usize {
        self.windows.iter().map(|w| w.sample_count()).sum()
    }

    /// Sample, ledger and status rows (stack rows depend on the stack cache).
    pub fn rows(&self) -> usize {
        self.samples() + self.ledger.len() + self.statuses.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows() == 0
    }
}

/// How an insert failure should be handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Network, timeouts, server overload, memory limit, too many parts, read-only…: try again later.
    Retryable,
    /// The data itself is refused (type mismatch, cannot parse, unknown table): retrying cannot help.
    Rejected,
}

/// ClickHouse error codes that mean "try again later" (the set the ClickHouse
/// Kafka Connect sink retries, plus 159/209/210 transport codes).
const RETRYABLE_CODES: &[u32] = &[
    3, 107, 159, 164, 202, 203, 209, 210, 241, 242, 252, 285, 319, 425, 999, 1002,
];

/// Classifies an error by its transport kind or the server's `Code: N`.
pub fn classify(error: &clickhouse::error::Error) -> ErrorClass {
    use clickhouse::error::Error as E;
    match error {
        E::Network(_) | E::TimedOut => ErrorClass::Retryable,
        E::BadResponse(text) => match server_code(text) {
            Some(code) if RETRYABLE_CODES.contains(&code) => ErrorClass::Retryable,
            Some(_) => ErrorClass::Rejected,
            // No code: a proxy or a half-started server answered.
            None => ErrorClass::Retryable,
        },
        _ => ErrorClass::Retryable,
    }
}

/// The `N` of `Code: N.` in a ClickHouse error text.
pub fn server_code(text: &str) -> Option<u32> {
    let rest = &text[text.find("Code: ")? + 6..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Remembers which (service, stack id) were written on which day, up to
/// `capacity` entries; when full it starts over (a re-written stack is
/// harmless: ReplacingMergeTree keeps one copy).
#[derive(Debug)]
pub struct StackCache {
    seen: HashMap<String, HashMap<u64, u32>>,
    entries: usize,
    capacity: usize,
}

impl StackCache {
    pub fn new(capacity: usize) -> StackCache {
        StackCache {
            seen: HashMap::new(),
            entries: 0,
            capacity,
        }
    }

    fn is_fresh(&self, service: &str, stack_id: u64, last_seen: u32) -> bool {
        self.seen
            .get(service)
            .and_then(|ids| ids.get(&stack_id))
            .is_some_and(|&day| day == last_seen / 86_400)
    }

    fn remember(&mut self, rows: &[StackRowRef<'_>]) {
        for row in rows {
            if self.entries >= self.capacity {
                self.seen.clear();
                self.entries = 0;
            }
            let ids = match self.seen.get_mut(row.service) {
                Some(ids) => ids,
                None => self.seen.entry(row.service.to_string()).or_default(),
            };
            if ids.insert(row.stack_id, row.last_seen / 86_400).is_none() {
                self.entries += 1;
            }
        }
    }
}

#[derive(Debug)]
pub struct Sink {
    client: Client,
    stacks: StackCache,
    stacks_written: u64,
}

impl Sink {
    pub fn new(client: Client, stack_cache_capacity: usize) -> Sink {
        Sink {
            client,
            stacks: StackCache::new(stack_cache_capacity),
            stacks_written: 0,
        }
    }

    /// Stack rows written since the last call (for the metrics).
    pub fn take_stacks_written(&mut self) -> u64 {
        std::mem::take(&mut self.stacks_written)
    }

    /// One attempt at writing the whole batch.
    pub async fn write(&mut self, batch: &Batch<'_>) -> Result<(), clickhouse::error::Error> {
        let mut in_batch: HashSet<(&str, u64)> = HashSet::new();
        let mut new_stacks: Vec<StackRowRef<'_>> = Vec::new();
        for w in &batch.windows {
            for (index, id) in w.stack_ids().enumerate() {
                if self.stacks.is_fresh(w.service(), id, w.last_seen())
                    || !in_batch.insert((w.service(), id))
                {
                    continue;
                }
                new_stacks.extend(w.stack_row(index));
            }
        }
        // The attempt log first: samples are never written without a record of
        // the attempt (the query API's proof that a range has no duplicates).
        let attempts: Vec<AttemptRow> = batch.windows.iter().map(|w| w.attempt()).collect();
        insert::<AttemptRow>(&self.client, table::INSERT_ATTEMPTS, &attempts).await?;
        // Stacks next: a sample is never visible without its frames.
        insert::<StackRowRef<'static>>(&self.client, table::STACKS, &new_stacks).await?;
        insert_samples(&self.client, &batch.windows).await?;
        insert::<LedgerRow>(&self.client, table::INGEST_LEDGER, &batch.ledger).await?;
        insert::<TargetStatusRow>(&self.client, table::TARGET_STATUS, &batch.statuses).await?;
        self.stacks.remember(&new_stacks);
        self.stacks_written += new_stacks.len() as u64;
        Ok(())
    }
}

/// One INSERT of `rows` (none when there are no rows).
async fn insert<T: clickhouse::RowWrite>(
    client: &Client,
    table: &str,
    rows: &[impl Borrow<T::Value<'_>>],
) -> Result<(), clickhouse::error::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut insert = client.insert::<T>(table).await?;
    for row in rows {
        insert.write(row.borrow()).await?;
    }
    insert.end().await
}

/// The sample rows of `windows`, made on the fly from the decoded messages.
/// A large batch goes as two concurrent INSERTs: the server parses each on its
/// own thread, so encoding and parsing overlap (both halves are idempotent).
async fn insert_samples(
    client: &Client,
    windows: &[&WindowRows],
) -> Result<(), clickhouse::error::Error> {
    let rows: usize = windows.iter().map(|w| w.sample_count()).sum();
    if rows < PARALLEL_INSERT_ROWS || windows.len() < 2 {
        return insert_sample_rows(client, windows).await;
    }
    let (left, right) = windows.split_at(windows.len() / 2);
    tokio::try_join!(
        insert_sample_rows(client, left),
        insert_sample_rows(client, right)
    )
    .map(|_| ())
}

/// Batches of at least this many sample rows are written as two INSERTs.
const PARALLEL_INSERT_ROWS: usize = 200_000;

async fn insert_sample_rows(
    client: &Client,
    windows: &[&WindowRows],
) -> Result<(), clickhouse::error::Error> {
    if windows.iter().all(|w| w.sample_count() == 0) {
        return Ok(());
    }
    let mut insert = client
        .insert::<SampleRowRef<'static>>(table::SAMPLES)
        .await?;
    for window in windows {
        for row in window.samples() {
            insert.write(&row).await?;
        }
    }
    insert.end().await
}

/// Capped exponential backoff with full jitter.
#[derive(Debug, Clone)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    attempt: u32,
    seed: u64,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9e37_79b9, |d| d.as_nanos() as u64)
            | 1;
        Backoff {
            initial,
            max,
            attempt: 0,
            seed,
        }
    }

    /// The next delay: uniformly random in [cap/2, cap], cap = min(max, initial·2^attempt).
    pub fn next_delay(&mut self) -> Duration {
        let cap = self
            .initial
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        // xorshift64: jitter needs no cryptographic quality.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let half = cap / 2;
        half + Duration::from_nanos(self.seed % (half.as_nanos() as u64 + 1))
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_codes_are_parsed() {
        assert_eq!(
            server_code("Code: 252. DB::Exception: Too many parts (600)"),
            Some(252)
        );
        assert_eq!(
            server_code("Code: 53, e.displayText() = DB::Exception: Type mismatch"),
            Some(53)
        );
        assert_eq!(server_code("502 Bad Gateway"), None);
    }

    #[test]
    fn errors_are_classified() {
        use clickhouse::error::Error as E;
        assert_eq!(
            classify(&E::BadResponse(
                "Code: 252. DB::Exception: Too many parts".into()
            )),
            ErrorClass::Retryable
        );
        assert_eq!(
            classify(&E::BadResponse("Code: 241. Memory limit exceeded".into())),
            ErrorClass::Retryable
        );
        assert_eq!(
            classify(&E::BadResponse("Code: 53. Type mismatch".into())),
            ErrorClass::Rejected
        );
        assert_eq!(classify(&E::TimedOut), ErrorClass::Retryable);
    }

    #[test]
    fn backoff_grows_to_its_cap_with_jitter() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let delays: Vec<Duration> = (0..12).map(|_| b.next_delay()).collect();
        assert!(delays[0] >= Duration::from_millis(50) && delays[0] <= Duration::from_millis(100));
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(5)));
        assert!(
            delays[11] >= Duration::from_millis(2500),
            "{:?}",
            delays[11]
        );
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn stack_cache_is_bounded_and_per_day() {
        let row = |id, day: u32| StackRowRef {
            service: "s",
            stack_id: id,
            frames: vec![],
            lines: &[],
            frame_types: vec![],
            last_seen: day * 86_400 + 5,
        };
        let mut cache = StackCache::new(2);
        cache.remember(&[row(1, 10), row(2, 10)]);
        assert!(cache.is_fresh("s", 1, 10 * 86_400 + 7));
        assert!(!cache.is_fresh("other", 1, 10 * 86_400 + 7));
        assert!(
            !cache.is_fresh("s", 1, 11 * 86_400),
            "re-written once a day for retention"
        );
        cache.remember(&[row(3, 10)]);
        assert!(cache.entries <= 2);
        assert!(cache.is_fresh("s", 3, 10 * 86_400));
    }
}
