//! Writes batches to ClickHouse: stacks (once per service, stack and day, via a
//! bounded cache), samples, ledger rows and target status, in one attempt.
//! Retrying, isolating poison and storing offsets are the callers' (see
//! `write.rs` and `batch.rs`).
//!
//! Each attempt stamps the sample rows of every window part with a fresh
//! `insert_id`, ordered by time, and once the samples are acknowledged records
//! the copy in `stored_parts`. A part written twice (a retry after a lost
//! answer, a redelivery, a replay) keeps both copies (`samples` is a plain
//! MergeTree keyed with the id), and readers count only the part's smallest
//! recorded id: exact without `FINAL`, and no merge can change which copy
//! that is. That needs every attempt of a part to be whole, so a part's rows
//! always travel in one INSERT and one block ([`MAX_INSERT_BLOCK_ROWS`]).

use std::borrow::Borrow;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};

use clickhouse::Client;
use javelin_schema::rows::{
    LedgerRow, SampleRowRef, StackRowRef, StoredPartRow, TargetStatusRow, table,
};

use crate::batch::Batch;
use crate::convert::WindowRows;

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

/// The server splits an INSERT into blocks (data parts) of at most
/// `max_insert_block_size` rows (1,048,576 by default). A copy is recorded only
/// after its whole INSERT succeeded, so correctness does not rest on one block;
/// a copy in one block is simply never half-visible while it lands. The bound
/// sits far above a batch's rows (`--batch-max-rows`, 500,000 by default).
pub const MAX_INSERT_BLOCK_ROWS: usize = 16_000_000;

impl Sink {
    pub fn new(client: Client, stack_cache_capacity: usize) -> Sink {
        Sink {
            client: client.with_setting("max_insert_block_size", MAX_INSERT_BLOCK_ROWS.to_string()),
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
        // Stacks first: a sample is never visible without its frames.
        insert::<StackRowRef<'static>>(&self.client, table::STACKS, &new_stacks).await?;
        let first_id = next_insert_id();
        insert_samples(&self.client, &batch.windows, first_id).await?;
        // Only a copy acknowledged in full is named to readers.
        let stored: Vec<StoredPartRow> = batch
            .windows
            .iter()
            .enumerate()
            .map(|(i, w)| w.stored_part(first_id + i as u64))
            .collect();
        insert::<StoredPartRow>(&self.client, table::STORED_PARTS, &stored).await?;
        insert::<LedgerRow>(&self.client, table::INGEST_LEDGER, &batch.ledger).await?;
        insert::<TargetStatusRow>(&self.client, table::TARGET_STATUS, &batch.statuses).await?;
        self.stacks.remember(&new_stacks);
        self.stacks_written += new_stacks.len() as u64;
        Ok(())
    }

    /// Whether the server takes writes into every table now, writing nothing:
    /// `INSERT … SELECT … WHERE 0` resolves the table and checks the rights
    /// like a real insert. The proof that a refused message is poison and not
    /// the server (see `batch.rs`).
    pub async fn probe(&self) -> Result<(), clickhouse::error::Error> {
        for table in WRITTEN_TABLES {
            self.client
                .query(&format!(
                    "INSERT INTO {table} SELECT * FROM {table} WHERE 0"
                ))
                .execute()
                .await?;
        }
        Ok(())
    }
}

/// Every table a batch writes.
const WRITTEN_TABLES: [&str; 5] = [
    table::STACKS,
    table::SAMPLES,
    table::STORED_PARTS,
    table::INGEST_LEDGER,
    table::TARGET_STATUS,
];

/// The first insert id of an attempt, ordered by time so that a newer copy of
/// a window part never outranks an older one (readers count the smallest id;
/// a copy that lands while a query runs is then never the one it picks):
/// microseconds since the epoch in the high bits, and 12 bits from a
/// per-process random start and a counter, so two attempts in the same
/// microsecond (other processes included) still differ. Never 0 (the id of
/// rows copied by migration 3). An attempt numbers its window parts from here
/// (a batch has far fewer than 4,096 parts per microsecond of spacing).
fn next_insert_id() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static SALT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let salt = *SALT.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        xxhash_rust::xxh3::xxh3_64(
            &[nanos.to_le_bytes(), std::process::id().to_le_bytes()].concat(),
        )
    });
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_micros() as u64);
    let low = salt.wrapping_add(COUNTER.fetch_add(1, Ordering::Relaxed)) & 0xfff;
    (micros << 12 | low).max(1)
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
/// Window part `i` of the attempt gets insert id `first_id + i`.
async fn insert_samples(
    client: &Client,
    windows: &[&WindowRows],
    first_id: u64,
) -> Result<(), clickhouse::error::Error> {
    let rows: usize = windows.iter().map(|w| w.sample_count()).sum();
    if rows < PARALLEL_INSERT_ROWS || windows.len() < 2 {
        return insert_sample_rows(client, windows, first_id).await;
    }
    let mid = windows.len() / 2;
    let (left, right) = windows.split_at(mid);
    tokio::try_join!(
        insert_sample_rows(client, left, first_id),
        insert_sample_rows(client, right, first_id + mid as u64)
    )
    .map(|_| ())
}

/// Batches of at least this many sample rows are written as two INSERTs.
const PARALLEL_INSERT_ROWS: usize = 200_000;

async fn insert_sample_rows(
    client: &Client,
    windows: &[&WindowRows],
    first_id: u64,
) -> Result<(), clickhouse::error::Error> {
    if windows.iter().all(|w| w.sample_count() == 0) {
        return Ok(());
    }
    let mut insert = client
        .insert::<SampleRowRef<'static>>(table::SAMPLES)
        .await?;
    for (i, window) in windows.iter().enumerate() {
        for row in window.samples(first_id + i as u64) {
            insert.write(&row).await?;
        }
    }
    insert.end().await
}

#[cfg(test)]
mod tests {
    use super::*;

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
