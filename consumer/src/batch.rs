//! A batch of consumed messages and the rows they become, and the write that
//! isolates poison.
//!
//! A ClickHouse failure is an outage unless it is proven to belong to one
//! message ([`javelin_schema::clickhouse_error`] decides which codes can be
//! about the data at all). When a write is refused as data, the batch is split
//! in halves until the refused messages are alone; a message is poison only if
//! it fails alone while the server takes other writes: its batch-mates landed,
//! or, when none did, the server's probe write passes. When most of a batch is
//! refused, it is the table or the server, not the messages: an outage.

use std::future::Future;

use javelin_schema::clickhouse_error::{ErrorClass, classify};
use javelin_schema::rows::{LedgerRow, TargetStatusRow};

use crate::convert::{Source, WindowRows};
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

/// Rows of one batch, borrowed from the consumed messages.
#[derive(Debug, Default)]
pub struct Batch<'a> {
    pub windows: Vec<&'a WindowRows>,
    pub ledger: Vec<&'a LedgerRow>,
    pub statuses: Vec<&'a TargetStatusRow>,
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

/// Something that writes a batch in one attempt (the ClickHouse sink; a fault injector in tests).
pub trait BatchWriter {
    fn write_batch(
        &mut self,
        batch: &Batch<'_>,
    ) -> impl Future<Output = Result<(), clickhouse::error::Error>> + Send;

    /// Whether the server takes writes now, writing nothing.
    fn probe(&mut self) -> impl Future<Output = Result<(), clickhouse::error::Error>> + Send;
}

/// Why a batch is not stored yet: an outage, retried as a whole (writes are
/// idempotent), never dead-lettered.
#[derive(Debug, thiserror::Error)]
pub enum Unstored {
    #[error("{0}")]
    Unavailable(#[from] clickhouse::error::Error),
    #[error(
        "ClickHouse refused {refused} of {messages} messages as data ({first}): too many to be poison, treated as an outage"
    )]
    MostRefused {
        refused: usize,
        messages: usize,
        first: String,
    },
    #[error(
        "ClickHouse refused a message ({refused}) and its probe write failed too ({probe}): an outage"
    )]
    ProbeFailed {
        refused: String,
        probe: clickhouse::error::Error,
    },
}

impl Unstored {
    /// The server's code, for the logs and metrics.
    pub fn code(&self) -> Option<u32> {
        match self {
            Unstored::Unavailable(e) | Unstored::ProbeFailed { probe: e, .. } => {
                javelin_schema::clickhouse_error::code_of(e)
            }
            Unstored::MostRefused { first, .. } => {
                javelin_schema::clickhouse_error::server_code(first)
            }
        }
    }
}

/// Writes the rows of `messages`. Data refused by ClickHouse is isolated by
/// bisection; the indexes of proven poison messages are returned with the
/// server's reason. Anything else stops the write and is returned as
/// [`Unstored`] (the caller retries the whole batch; writes are idempotent).
pub async fn write_isolating<W: BatchWriter>(
    writer: &mut W,
    messages: &[Pending],
) -> Result<Vec<(usize, String)>, Unstored> {
    let mut refused = Vec::new();
    let mut landed = 0usize;
    let mut ranges = vec![(0, messages.len())];
    while let Some((lo, hi)) = ranges.pop() {
        let batch = Batch::of(&messages[lo..hi]);
        if batch.is_empty() {
            continue;
        }
        match writer.write_batch(&batch).await {
            Ok(()) => landed += hi - lo,
            Err(error) if classify(&error) == ErrorClass::Data => {
                if hi - lo == 1 {
                    refused.push((lo, error.to_string()));
                } else {
                    let mid = lo + (hi - lo) / 2;
                    // Left half first, so messages are written in order where possible.
                    ranges.push((mid, hi));
                    ranges.push((lo, mid));
                }
            }
            Err(error) => return Err(error.into()),
        }
    }
    if refused.is_empty() {
        return Ok(refused);
    }
    refused.sort_by_key(|r| r.0);
    let with_rows = messages
        .iter()
        .filter(|m| !Batch::of(std::slice::from_ref(*m)).is_empty())
        .count();
    if with_rows > 1 && refused.len() * 2 > with_rows {
        return Err(Unstored::MostRefused {
            refused: refused.len(),
            messages: with_rows,
            first: refused[0].1.clone(),
        });
    }
    if landed == 0
        && let Err(probe) = writer.probe().await
    {
        return Err(Unstored::ProbeFailed {
            refused: refused[0].1.clone(),
            probe,
        });
    }
    Ok(refused)
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
        /// The server's answer to every write and probe (an outage), if any.
        down: Option<&'static str>,
        probes: usize,
    }

    impl Rejecting {
        fn new(poisoned: &[&str]) -> Rejecting {
            Rejecting {
                poisoned: poisoned.iter().map(|p| p.to_string()).collect(),
                written: vec![],
                attempts: 0,
                fail_transiently_once: false,
                down: None,
                probes: 0,
            }
        }
    }

    impl BatchWriter for Rejecting {
        async fn write_batch(&mut self, batch: &Batch<'_>) -> Result<(), clickhouse::error::Error> {
            self.attempts += 1;
            if let Some(text) = self.down {
                return Err(clickhouse::error::Error::BadResponse(text.into()));
            }
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
                    .flat_map(|w| w.samples(1))
                    .map(|s| s.service.to_string()),
            );
            Ok(())
        }

        async fn probe(&mut self) -> Result<(), clickhouse::error::Error> {
            self.probes += 1;
            match self.down {
                Some(text) => Err(clickhouse::error::Error::BadResponse(text.into())),
                None => Ok(()),
            }
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
        let mut writer = Rejecting::new(&["bad"]);
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
        let mut writer = Rejecting::new(&[]);
        writer.fail_transiently_once = true;
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

    #[tokio::test]
    async fn a_table_or_rights_failure_is_an_outage_not_poison() {
        // Each of these once sent healthy messages to the DLQ.
        for text in [
            "Code: 60. DB::Exception: Table javelin.samples doesn't exist.",
            "Code: 243. DB::Exception: Cannot reserve 1.00 MiB, not enough space",
            "Code: 291. DB::Exception: Access denied to database javelin",
            "Code: 394. DB::Exception: Query was cancelled (shutting down)",
        ] {
            let messages: Vec<Pending> = (0..8).map(|i| message(i, "ok")).collect();
            let mut writer = Rejecting::new(&[]);
            writer.down = Some(text);
            let error = write_isolating(&mut writer, &messages)
                .await
                .expect_err("an outage");
            assert!(matches!(error, Unstored::Unavailable(_)), "{text}: {error}");
            assert_eq!(writer.attempts, 1, "{text}: no bisection of an outage");
        }
    }

    #[tokio::test]
    async fn a_batch_mostly_refused_as_data_is_an_outage() {
        let messages: Vec<Pending> = (0..8)
            .map(|i| message(i, if i < 5 { "bad" } else { "ok" }))
            .collect();
        let mut writer = Rejecting::new(&["bad"]);
        let error = write_isolating(&mut writer, &messages)
            .await
            .expect_err("5 of 8 refused");
        assert!(
            matches!(
                error,
                Unstored::MostRefused {
                    refused: 5,
                    messages: 8,
                    ..
                }
            ),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_lone_refused_message_is_poison_only_if_the_server_takes_writes() {
        let lone = [message(0, "bad")];
        let mut writer = Rejecting::new(&["bad"]);
        let rejected = write_isolating(&mut writer, &lone)
            .await
            .expect("probe passes");
        assert_eq!(rejected.len(), 1);
        assert_eq!(writer.probes, 1, "no batch-mate landed: the probe decides");

        // Refused as data, but the probe fails too: the server, not the message.
        struct RefusingThenDown(Rejecting);
        impl BatchWriter for RefusingThenDown {
            async fn write_batch(
                &mut self,
                batch: &Batch<'_>,
            ) -> Result<(), clickhouse::error::Error> {
                self.0.write_batch(batch).await
            }
            async fn probe(&mut self) -> Result<(), clickhouse::error::Error> {
                Err(clickhouse::error::Error::BadResponse(
                    "Code: 60. Table doesn't exist".into(),
                ))
            }
        }
        let mut writer = RefusingThenDown(Rejecting::new(&["bad"]));
        let error = write_isolating(&mut writer, &lone)
            .await
            .expect_err("probe failed");
        assert!(matches!(error, Unstored::ProbeFailed { .. }), "{error}");
    }

    #[test]
    fn dead_lettered_messages_have_no_rows() {
        let mut m = message(0, "ok");
        m.rows = Rows::DeadLettered;
        assert!(Batch::of(&[m]).is_empty());
    }
}
