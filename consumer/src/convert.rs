//! Wire messages → ClickHouse rows.

use javelin_schema::rows::{LedgerRow, SampleRow, StackRow, TargetStatusRow};
use javelin_schema::wire::{DecodeError, ProfileWindow, TargetState, TargetStatus};
use prost::Message;

/// Where a message came from, for the ledger and the dead-letter headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// The rows one profile window part becomes.
#[derive(Debug, Default, Clone)]
pub struct WindowRows {
    pub samples: Vec<SampleRow>,
    pub stacks: Vec<StackRow>,
    pub ledger: Option<LedgerRow>,
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
    let window = ProfileWindow::decode_valid(payload)?;
    check_policy(&window, now_ms)?;
    let target = window.target.clone().unwrap_or_default();
    let kind = window.kind().name().to_string();
    let window_start = secs(window.window_start_ms);
    let acc = window.accounting.unwrap_or_default();
    let mut rows = WindowRows::default();
    for stack in &window.stacks {
        rows.samples.push(SampleRow {
            service: target.service.clone(),
            profile_type: kind.clone(),
            window_start,
            cluster: target.cluster.clone(),
            namespace: target.namespace.clone(),
            pod: target.pod.clone(),
            container: target.container.clone(),
            node: target.node.clone(),
            target_id: target.target_id,
            stack_id: stack.stack_id,
            value: stack.value,
            count: stack.count,
        });
        rows.stacks.push(StackRow {
            service: target.service.clone(),
            stack_id: stack.stack_id,
            frames: window.frames(stack).map(str::to_string).collect(),
            lines: stack.lines.clone(),
            frame_types: stack
                .frame_types
                .iter()
                .map(|&t| u8::try_from(t).unwrap_or(0))
                .collect(),
            last_seen: secs(now_ms),
        });
    }
    rows.ledger = Some(LedgerRow {
        window_id: window.window_id,
        service: target.service.clone(),
        profile_type: kind,
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
    });
    Ok(rows)
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
