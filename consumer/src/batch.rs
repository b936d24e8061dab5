//! A batch of consumed messages and the rows they become, and the write that
//! isolates poison: when ClickHouse rejects a batch as data (not a transient
//! failure), the batch is split in halves until the rejected messages are
//! alone; everything else is written, and the rejected ones go to the DLQ.

use std::future::Future;

use javelin_schema::rows::{LedgerRow, TargetStatusRow};

use crate::convert::{Source, WindowRows};
use crate::sink::{Batch, ErrorClass, classify};
use crate::trace::Arrival;

/// What one consumed message becomes.
#[derive(Debug, Clone)]
pub enum Rows {
    Window(Box<WindowRows>),
    Status(Box<TargetStatusRow>),
    /// Invalid, and already in the dead-letter topic: nothing to write.
    DeadLettered,
    /// A refused profiles message, already in the dead-letter topic: its ledger row.
    Refused(Box<LedgerRow>),
}

/// One consumed message, kept until its rows are stored or it is dead-lettered.
#[derive(Debug, Clone)]
pub struct Pending {
    pub source: Source,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub rows: Rows,
    /// When it arrived, and the trace it continues.
    pub arrival: Arrival,
}

impl Batch<'_> {
    /// The rows of `messages`, ready to insert (borrowed: nothing is copied).
    pub fn of(messages: &[Pending]) -> Batch<'_> {
        let mut batch = Batch::default();
        for m in messages {
            match &m.rows {
                Rows::Window(w) => {
                    batch.windows.push(w);
                    batch.ledger.push(&w.ledger);
                }
                Rows::Status(s) => batch.statuses.push(s),
                Rows::Refused(row) => batch.ledger.push(row),
                Rows::DeadLettered => {}
            }
        }
        batch
    }
}

/// Something that writes a batch in one attempt (the ClickHouse sink; a fault injector in tests).
pub trait BatchWriter {
    fn write_batch(
        &mut self,
        batch: &Batch<'_>,
    ) -> impl Future<Output = Result<(), clickhouse::error::Error>> + Send;
}

/// Writes the rows of `messages`. Rejected data is isolated by bisection; the
/// indexes of the messages whose rows ClickHouse refuses are returned with the
/// reason. A retryable failure stops the write and is returned as `Err` (the
/// caller retries the whole batch; writes are idempotent).
pub async fn write_isolating<W: BatchWriter>(
    writer: &mut W,
    messages: &[Pending],
) -> Result<Vec<(usize, String)>, clickhouse::error::Error> {
    let mut rejected = Vec::new();
    let mut ranges = vec![(0, messages.len())];
    while let Some((lo, hi)) = ranges.pop() {
        let batch = Batch::of(&messages[lo..hi]);
        if batch.is_empty() {
            continue;
        }
        match writer.write_batch(&batch).await {
            Ok(()) => {}
            Err(error) if classify(&error) == ErrorClass::Rejected => {
                if hi - lo == 1 {
                    rejected.push((lo, error.to_string()));
                } else {
                    let mid = lo + (hi - lo) / 2;
                    // Left half first, so messages are written in order where possible.
                    ranges.push((mid, hi));
                    ranges.push((lo, mid));
                }
            }
            Err(error) => return Err(error),
        }
    }
    rejected.sort_by_key(|r| r.0);
    Ok(rejected)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fault injection: rejects any batch containing a sample of the poisoned services.
    struct Rejecting {
        poisoned: Vec<String>,
        written: Vec<String>,
        attempts: usize,
        fail_transiently_once: bool,
    }

    impl BatchWriter for Rejecting {
        async fn write_batch(&mut self, batch: &Batch<'_>) -> Result<(), clickhouse::error::Error> {
            self.attempts += 1;
            if std::mem::take(&mut self.fail_transiently_once) {
                return Err(clickhouse::error::Error::BadResponse(
                    "Code: 252. Too many parts".into(),
                ));
            }
            if batch
                .windows
                .iter()
                .any(|w| self.poisoned.iter().any(|p| p == w.service()))
            {
                return Err(clickhouse::error::Error::BadResponse(
                    "Code: 53. Type mismatch".into(),
                ));
            }
            self.written.extend(
                batch
                    .windows
                    .iter()
                    .flat_map(|w| w.samples())
                    .map(|s| s.service.to_string()),
            );
            Ok(())
        }
    }

    fn message(i: i64, service: &str) -> Pending {
        use javelin_schema::wire::{ProfileType, ProfileWindow, Stack, TargetIdentity};
        let now = 1_764_000_000_000;
        let window = ProfileWindow {
            target: Some(TargetIdentity {
                service: service.into(),
                ..Default::default()
            }),
            profile_type: ProfileType::Cpu as i32,
            window_start_ms: now - 10_000,
            window_end_ms: now,
            part_count: 1,
            strings: vec![String::new(), "main".into()],
            stacks: vec![Stack {
                frames: vec![1],
                value: 1,
                count: 1,
                stack_id: i as u64,
                ..Default::default()
            }],
            ..Default::default()
        };
        let source = Source {
            topic: "t".into(),
            partition: 0,
            offset: i,
        };
        let rows =
            crate::convert::window_rows(&window.to_bytes(), &source, now).expect("a valid window");
        Pending {
            source,
            key: None,
            payload: vec![],
            rows: Rows::Window(Box::new(rows)),
            arrival: Arrival::untraced(),
        }
    }

    #[tokio::test]
    async fn poison_is_isolated_and_everything_else_is_written() {
        let messages: Vec<Pending> = (0..16)
            .map(|i| message(i, if i == 5 || i == 11 { "bad" } else { "ok" }))
            .collect();
        let mut writer = Rejecting {
            poisoned: vec!["bad".into()],
            written: vec![],
            attempts: 0,
            fail_transiently_once: false,
        };
        let rejected = write_isolating(&mut writer, &messages)
            .await
            .expect("no transient failure");
        assert_eq!(rejected.iter().map(|r| r.0).collect::<Vec<_>>(), [5, 11]);
        assert!(rejected[0].1.contains("Code: 53"));
        assert_eq!(
            writer.written.len(),
            14,
            "every other message landed exactly once"
        );
        assert!(
            writer.attempts <= 1 + 2 * 2 * 4,
            "bisection stays logarithmic: {} attempts",
            writer.attempts
        );
    }

    #[tokio::test]
    async fn transient_failures_are_returned_for_a_retry_of_the_whole_batch() {
        let messages: Vec<Pending> = (0..4).map(|i| message(i, "ok")).collect();
        let mut writer = Rejecting {
            poisoned: vec![],
            written: vec![],
            attempts: 0,
            fail_transiently_once: true,
        };
        assert!(write_isolating(&mut writer, &messages).await.is_err());
        assert!(writer.written.is_empty());
        assert_eq!(
            write_isolating(&mut writer, &messages)
                .await
                .expect("retry")
                .len(),
            0
        );
        assert_eq!(writer.written.len(), 4);
    }

    #[test]
    fn dead_lettered_messages_have_no_rows() {
        let mut m = message(0, "ok");
        m.rows = Rows::DeadLettered;
        assert!(Batch::of(&[m]).is_empty());
    }
}
