//! Wire messages → ClickHouse rows.

use javelin_schema::rows::{LedgerRow, SampleRowRef, StackRowRef, StoredPartRow, TargetStatusRow};
use javelin_schema::wire::{DecodeError, ProfileWindow, TargetIdentity, TargetState, TargetStatus};
use prost::Message;

/// Where a message came from, for the ledger and the dead-letter headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// The rows one profile window part becomes. The decoded message is kept and
/// its rows are borrowed from it when written, so a batch costs no allocation
/// per row (the consumer's hot path).
#[derive(Debug, Clone)]
pub struct WindowRows {
    window: ProfileWindow,
    target: TargetIdentity,
    profile_type: &'static str,
    window_start: u32,
    /// The part's identity in `samples`, computed here from its fields (not
    /// trusted from the agent), so two windows never share a key.
    window_id: u64,
    last_seen: u32,
    pub ledger: LedgerRow,
}

impl WindowRows {
    pub fn service(&self) -> &str {
        &self.target.service
    }

    pub fn sample_count(&self) -> usize {
        self.window.stacks.len()
    }

    pub fn window_id(&self) -> u64 {
        self.window_id
    }

    /// One sample row per stack of the window, written by attempt `insert_id`.
    pub fn samples(&self, insert_id: u64) -> impl Iterator<Item = SampleRowRef<'_>> {
        let t = &self.target;
        self.window.stacks.iter().map(move |stack| SampleRowRef {
            service: &t.service,
            profile_type: self.profile_type,
            window_start: self.window_start,
            cluster: &t.cluster,
            namespace: &t.namespace,
            pod: &t.pod,
            container: &t.container,
            node: &t.node,
            target_id: t.target_id,
            window_id: self.window_id,
            stack_id: stack.stack_id,
            value: stack.value,
            count: stack.count,
            insert_id,
            app_version: &t.app_version,
        })
    }

    /// The stack ids of the window, in order (see [`Self::stack_row`]).
    pub fn stack_ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.window.stacks.iter().map(|s| s.stack_id)
    }

    /// The record that this part's copy `insert_id` is stored in full.
    pub fn stored_part(&self, insert_id: u64) -> StoredPartRow {
        StoredPartRow {
            service: self.target.service.clone(),
            profile_type: self.profile_type.to_string(),
            window_start: self.window_start,
            target_id: self.target.target_id,
            window_id: self.window_id,
            insert_id,
            stored_at: secs(crate::now_ms()),
        }
    }

    /// Seconds since the epoch stamped on this window's stack rows.
    pub fn last_seen(&self) -> u32 {
        self.last_seen
    }

    /// The stack row of the `index`-th stack.
    pub fn stack_row(&self, index: usize) -> Option<StackRowRef<'_>> {
        let stack = self.window.stacks.get(index)?;
        Some(StackRowRef {
            service: &self.target.service,
            stack_id: stack.stack_id,
            frames: self.window.frames(stack).collect(),
            lines: &stack.lines,
            frame_types: stack
                .frame_types
                .iter()
                .map(|&t| u8::try_from(t).unwrap_or(0))
                .collect(),
            last_seen: self.last_seen,
        })
    }
}

fn secs(ms: i64) -> u32 {
    u32::try_from(ms.max(0) / 1000).unwrap_or(u32::MAX)
}

/// Decodes a profile window and turns it into rows.
pub fn window_rows(
    payload: &[u8],
    source: &Source,
    now_ms: i64,
) -> Result<WindowRows, DecodeError> {
    let mut window = ProfileWindow::decode_valid(payload)?;
    check_policy(&window, now_ms)?;
    let target = window.target.take().unwrap_or_default();
    let profile_type = window.kind().name();
    let window_start = secs(window.window_start_ms);
    let window_id = javelin_schema::wire::window_id(
        target.target_id,
        window.kind(),
        window.window_start_ms,
        window.part_index,
    );
    let acc = window.accounting.unwrap_or_default();
    let ledger = LedgerRow {
        window_id: window.window_id,
        service: target.service.clone(),
        profile_type: profile_type.to_string(),
        window_start,
        window_start_ms: window.window_start_ms,
        window_end_ms: window.window_end_ms,
        target_id: target.target_id,
        pod: target.pod.clone(),
        part_index: window.part_index,
        part_count: window.part_count,
        raw_events: acc.raw_events,
        parsed_events: acc.parsed_events,
        stacks: acc.stacks,
        dropped_events: acc.dropped_events,
        dropped_stacks: acc.dropped_stacks,
        truncated: u8::from(acc.truncated),
        jfr_bytes: acc.jfr_bytes,
        parse_micros: acc.parse_micros,
        topic: source.topic.clone(),
        partition: source.partition,
        offset: source.offset,
        status: if acc.truncated {
            "truncated"
        } else {
            "accepted"
        }
        .into(),
        reason: String::new(),
        ingested_at: secs(now_ms),
        ingest_latency_ms: (now_ms - window.window_end_ms).max(0),
    };
    Ok(WindowRows {
        window,
        target,
        profile_type,
        window_start,
        window_id,
        last_seen: secs(now_ms),
        ledger,
    })
}

/// The ledger row of a profiles message the consumer refused (it is in the
/// dead-letter topic): what could be read of its identity, else the message
/// key (the agent keys by service) and the message's own timestamp, so a
/// redelivery lands on the same row.
pub fn refused_ledger_row(
    key: Option<&[u8]>,
    payload: &[u8],
    source: &Source,
    message_time_ms: Option<i64>,
    reason: &str,
    now_ms: i64,
) -> LedgerRow {
    let mut row = match ProfileWindow::decode(payload) {
        Ok(window) if window.target.is_some() => {
            let target = window.target.clone().unwrap_or_default();
            LedgerRow {
                window_id: window.window_id,
                service: target.service,
                profile_type: window.kind().name().to_string(),
                window_start: secs(window.window_start_ms),
                window_start_ms: window.window_start_ms,
                window_end_ms: window.window_end_ms,
                target_id: target.target_id,
                pod: target.pod,
                part_index: window.part_index,
                part_count: window.part_count,
                ..refused_row_defaults()
            }
        }
        _ => {
            let at = message_time_ms.filter(|t| *t > 0).unwrap_or(now_ms);
            LedgerRow {
                window_id: javelin_schema::wire::message_id(
                    &source.topic,
                    source.partition,
                    source.offset,
                ),
                service: key
                    .map(|k| String::from_utf8_lossy(k).into_owned())
                    .unwrap_or_default(),
                window_start: secs(at),
                window_start_ms: at,
                window_end_ms: at,
                ..refused_row_defaults()
            }
        }
    };
    // A window's own start may be absurd (that may be why it was refused):
    // the row is filed under the time it arrived, which retention understands.
    if row.window_start_ms <= 0 || row.window_start_ms > now_ms + MAX_FUTURE_MS {
        row.window_start = secs(message_time_ms.filter(|t| *t > 0).unwrap_or(now_ms));
    }
    row.topic = source.topic.clone();
    row.partition = source.partition;
    row.offset = source.offset;
    row.status = "rejected".into();
    row.reason = reason.chars().take(1000).collect();
    row.ingested_at = secs(now_ms);
    row
}

fn refused_row_defaults() -> LedgerRow {
    LedgerRow {
        window_id: 0,
        service: String::new(),
        profile_type: String::new(),
        window_start: 0,
        window_start_ms: 0,
        window_end_ms: 0,
        target_id: 0,
        pod: String::new(),
        part_index: 0,
        part_count: 0,
        raw_events: 0,
        parsed_events: 0,
        stacks: 0,
        dropped_events: 0,
        dropped_stacks: 0,
        truncated: 0,
        jfr_bytes: 0,
        parse_micros: 0,
        topic: String::new(),
        partition: 0,
        offset: 0,
        status: String::new(),
        reason: String::new(),
        ingested_at: 0,
        ingest_latency_ms: 0,
    }
}

/// Windows may start at most this far in the future (clock skew between nodes).
pub const MAX_FUTURE_MS: i64 = 3_600_000;
/// A window may last at most this long.
pub const MAX_WINDOW_MS: i64 = 86_400_000;
/// Stacks in one message at most (the agent's own bounds are far below).
pub const MAX_STACKS_PER_MESSAGE: usize = 1_000_000;

/// The consumer's policy on top of the wire contract: sane timestamps and sizes.
fn check_policy(window: &ProfileWindow, now_ms: i64) -> Result<(), DecodeError> {
    let invalid = |m: String| Err(DecodeError::Invalid(m));
    if window.window_start_ms > now_ms + MAX_FUTURE_MS {
        return invalid(format!(
            "window starts {} ms in the future",
            window.window_start_ms - now_ms
        ));
    }
    if window.window_start_ms <= 0 {
        return invalid(format!(
            "window start {} is not a time",
            window.window_start_ms
        ));
    }
    if window.window_end_ms - window.window_start_ms > MAX_WINDOW_MS {
        return invalid(format!(
            "window of {} ms is longer than a day",
            window.window_end_ms - window.window_start_ms
        ));
    }
    if window.stacks.len() > MAX_STACKS_PER_MESSAGE {
        return invalid(format!(
            "{} stacks in one message (limit {MAX_STACKS_PER_MESSAGE})",
            window.stacks.len()
        ));
    }
    Ok(())
}

/// Decodes a target status message into its row.
pub fn status_row(payload: &[u8]) -> Result<TargetStatusRow, DecodeError> {
    let status = TargetStatus::decode(payload)?;
    let Some(target) = status.target else {
        return Err(DecodeError::Invalid(
            "status without target identity".into(),
        ));
    };
    let state = TargetState::try_from(status.state).unwrap_or(TargetState::Unspecified);
    Ok(TargetStatusRow {
        service: target.service,
        target_id: target.target_id,
        cluster: target.cluster,
        namespace: target.namespace,
        pod: target.pod,
        container: target.container,
        node: target.node,
        pid: target.pid,
        state: state.name().into(),
        recorder: status.recorder,
        last_error: status.last_error,
        observed_at: secs(status.observed_at_ms),
        agent_version: status.agent_version,
        windows_published: status.windows_published,
        spool_dropped_messages: status.spool_dropped_messages,
        dropped_events: status.dropped_events,
        dropped_stacks: status.dropped_stacks,
        truncated_windows: status.truncated_windows,
        failed_collects: status.failed_collects,
        oversized_messages: status.oversized_messages,
        sampling: status.sampling,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use javelin_schema::wire::{ProfileType, TargetIdentity};

    fn window(start: i64, end: i64) -> Vec<u8> {
        ProfileWindow {
            target: Some(TargetIdentity {
                service: "svc".into(),
                ..Default::default()
            }),
            profile_type: ProfileType::Cpu as i32,
            window_start_ms: start,
            window_end_ms: end,
            part_count: 1,
            strings: vec![String::new()],
            ..Default::default()
        }
        .to_bytes()
    }

    #[test]
    fn refused_messages_get_a_ledger_row_with_what_can_be_read() {
        let source = Source {
            topic: "t".into(),
            partition: 2,
            offset: 41,
        };
        let now = 1_764_000_000_000;
        let garbage = refused_ledger_row(
            Some(b"svc-x"),
            b"\xff\xfe not protobuf",
            &source,
            Some(now - 5_000),
            "bad bytes",
            now,
        );
        assert_eq!(garbage.service, "svc-x", "the key names the service");
        assert_eq!(garbage.window_start, secs(now - 5_000));
        assert_eq!(garbage.status, "rejected");
        assert_eq!((garbage.partition, garbage.offset), (2, 41));
        let again = refused_ledger_row(
            Some(b"svc-x"),
            b"\xff\xfe not protobuf",
            &source,
            Some(now - 5_000),
            "bad bytes",
            now + 60_000,
        );
        assert_eq!(
            (again.service, again.window_start, again.window_id),
            (garbage.service, garbage.window_start, garbage.window_id),
            "a redelivery lands on the same ledger row"
        );
        let future = window(now + 2 * MAX_FUTURE_MS, now + 2 * MAX_FUTURE_MS + 1);
        let row = refused_ledger_row(None, &future, &source, Some(now), "future", now);
        assert_eq!(row.service, "svc", "identity read from the window");
        assert_eq!(row.profile_type, "cpu");
        assert_eq!(row.window_start, secs(now), "filed under its arrival time");
    }

    #[test]
    fn status_rows_carry_the_state_and_every_counter() {
        use javelin_schema::wire::TargetStatus;
        let status = TargetStatus {
            target: Some(TargetIdentity {
                service: "svc".into(),
                target_id: 9,
                pid: 77,
                ..Default::default()
            }),
            state: TargetState::OverTargetLimit as i32,
            observed_at_ms: 1_764_000_000_000,
            failed_collects: 3,
            oversized_messages: 2,
            truncated_windows: 1,
            sampling: "cpu: every 10 ms; 60-s windows".into(),
            ..Default::default()
        };
        let row = status_row(&status.to_bytes()).expect("decodes");
        assert_eq!(row.sampling, "cpu: every 10 ms; 60-s windows");
        assert_eq!(row.state, "over_target_limit");
        assert_eq!((row.failed_collects, row.oversized_messages), (3, 2));
        assert_eq!((row.truncated_windows, row.target_id, row.pid), (1, 9, 77));
    }

    #[test]
    fn timestamps_must_be_sane() {
        let source = Source {
            topic: "t".into(),
            partition: 0,
            offset: 0,
        };
        let now = 1_764_000_000_000;
        assert!(window_rows(&window(now - 60_000, now), &source, now).is_ok());
        let future = window_rows(
            &window(now + 2 * MAX_FUTURE_MS, now + 2 * MAX_FUTURE_MS + 1),
            &source,
            now,
        );
        assert!(
            future
                .expect_err("future")
                .to_string()
                .contains("in the future")
        );
        assert!(window_rows(&window(0, 10), &source, now).is_err());
        assert!(window_rows(&window(now - 2 * MAX_WINDOW_MS, now), &source, now).is_err());
    }
}
