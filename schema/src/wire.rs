//! The `javelin.v1` wire format and helpers around it.

use prost::Message;
use xxhash_rust::xxh3::Xxh3;

/// Messages generated from `proto/javelin/v1/profile.proto`.
#[allow(missing_debug_implementations, clippy::all)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/javelin.v1.rs"));
}

pub use v1::{
    Accounting, FrameType, Limits, ProfileType, ProfileWindow, Stack, TargetIdentity, TargetState,
    TargetStatus,
};

/// Why a payload is not a usable message.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not a javelin.v1 protobuf message: {0}")]
    Protobuf(#[from] prost::DecodeError),
    #[error("invalid message: {0}")]
    Invalid(String),
}

impl ProfileType {
    /// All profile types carried on the wire, in display order.
    pub const ALL: [ProfileType; 4] = [
        ProfileType::Cpu,
        ProfileType::Alloc,
        ProfileType::Lock,
        ProfileType::Park,
    ];

    /// The short name used in storage, the API and the UI.
    pub fn name(self) -> &'static str {
        match self {
            ProfileType::Unspecified => "unspecified",
            ProfileType::Cpu => "cpu",
            ProfileType::Alloc => "alloc",
            ProfileType::Lock => "lock",
            ProfileType::Park => "park",
        }
    }

    /// Parses a short name as produced by [`ProfileType::name`].
    pub fn from_name(name: &str) -> Option<ProfileType> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Unit of `Stack::value` for this type (part of the contract).
    pub fn value_unit(self) -> &'static str {
        match self {
            ProfileType::Alloc => "bytes",
            ProfileType::Unspecified => "",
            ProfileType::Cpu | ProfileType::Lock | ProfileType::Park => "nanoseconds",
        }
    }

    /// Unit of `Stack::count` for this type.
    pub fn count_unit(self) -> &'static str {
        match self {
            ProfileType::Cpu => "samples",
            ProfileType::Alloc => "objects",
            ProfileType::Lock | ProfileType::Park => "events",
            ProfileType::Unspecified => "",
        }
    }
}

impl TargetState {
    /// The short name used in storage, the API and the UI.
    pub fn name(self) -> &'static str {
        match self {
            TargetState::Unspecified => "unspecified",
            TargetState::Profiling => "profiling",
            TargetState::OrphanedRecovered => "orphaned_recovered",
            TargetState::ExternalConflict => "external_conflict",
            TargetState::UnknownProfiler => "unknown_profiler",
            TargetState::AttachFailed => "attach_failed",
            TargetState::Disabled => "disabled",
            TargetState::Exited => "exited",
            TargetState::OverTargetLimit => "over_target_limit",
        }
    }
}

/// Stable id of one JVM lifetime.
pub fn target_id(cluster: &str, node: &str, pid: u32, jvm_start_ms: i64) -> u64 {
    let mut h = Xxh3::new();
    h.update(b"javelin.target.v1");
    for part in [cluster.as_bytes(), node.as_bytes()] {
        h.update(&(part.len() as u64).to_le_bytes());
        h.update(part);
    }
    h.update(&pid.to_le_bytes());
    h.update(&jvm_start_ms.to_le_bytes());
    h.digest()
}

/// Deterministic id of (target, profile type, window start, part): a replayed or
/// re-sent window part always carries the same id.
pub fn window_id(
    target_id: u64,
    profile_type: ProfileType,
    window_start_ms: i64,
    part_index: u32,
) -> u64 {
    let mut h = Xxh3::new();
    h.update(b"javelin.window.v1");
    h.update(&target_id.to_le_bytes());
    h.update(&(profile_type as i32).to_le_bytes());
    h.update(&window_start_ms.to_le_bytes());
    h.update(&part_index.to_le_bytes());
    h.digest()
}

/// Deterministic id of a Kafka message (topic, partition, offset): the ledger
/// id of a message that could not be read as a window, the same on redelivery.
pub fn message_id(topic: &str, partition: i32, offset: i64) -> u64 {
    let mut h = Xxh3::new();
    h.update(b"javelin.message.v1");
    h.update(&(topic.len() as u32).to_le_bytes());
    h.update(topic.as_bytes());
    h.update(&partition.to_le_bytes());
    h.update(&offset.to_le_bytes());
    h.digest()
}

impl ProfileWindow {
    /// Encodes to protobuf bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.encode_to_vec()
    }

    /// Decodes and checks the invariants the consumer relies on; never panics on any input.
    pub fn decode_valid(bytes: &[u8]) -> Result<ProfileWindow, DecodeError> {
        let window = ProfileWindow::decode(bytes)?;
        window.validate()?;
        Ok(window)
    }

    /// The structural invariants of a window part. Semantic limits (sizes, time
    /// skew) are the consumer's policy and live there.
    pub fn validate(&self) -> Result<(), DecodeError> {
        let invalid = |m: String| Err(DecodeError::Invalid(m));
        let Some(target) = &self.target else {
            return invalid("missing target identity".into());
        };
        if target.service.is_empty() {
            return invalid("empty service name".into());
        }
        if ProfileType::try_from(self.profile_type).map_or(true, |t| t == ProfileType::Unspecified)
        {
            return invalid(format!("unknown profile type {}", self.profile_type));
        }
        if self.window_end_ms < self.window_start_ms {
            return invalid(format!(
                "window ends ({}) before it starts ({})",
                self.window_end_ms, self.window_start_ms
            ));
        }
        if self.part_count == 0 || self.part_index >= self.part_count {
            return invalid(format!("part {} of {}", self.part_index, self.part_count));
        }
        if self.strings.first().is_some_and(|s| !s.is_empty()) {
            return invalid("string table must start with the empty string".into());
        }
        let strings = self.strings.len();
        for (i, stack) in self.stacks.iter().enumerate() {
            if let Some(bad) = stack.frames.iter().find(|&&f| f as usize >= strings) {
                return invalid(format!("stack {i} references string {bad} of {strings}"));
            }
            if (!stack.lines.is_empty() && stack.lines.len() != stack.frames.len())
                || (!stack.frame_types.is_empty() && stack.frame_types.len() != stack.frames.len())
            {
                return invalid(format!(
                    "stack {i}: lines or frame types do not match its frames"
                ));
            }
            if stack.value < 0 || stack.count < 0 {
                return invalid(format!("stack {i} has a negative value or count"));
            }
        }
        Ok(())
    }

    /// The frames of a stack as strings, root first.
    pub fn frames<'a>(&'a self, stack: &'a Stack) -> impl Iterator<Item = &'a str> + 'a {
        stack
            .frames
            .iter()
            .map(|&i| self.strings.get(i as usize).map_or("", String::as_str))
    }

    /// The profile type, `Unspecified` when the number is unknown.
    pub fn kind(&self) -> ProfileType {
        ProfileType::try_from(self.profile_type).unwrap_or(ProfileType::Unspecified)
    }
}

impl TargetStatus {
    /// Encodes to protobuf bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.encode_to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_window() -> ProfileWindow {
        let target = TargetIdentity {
            cluster: "local".into(),
            namespace: "default".into(),
            service: "javelin-demo".into(),
            pod: "demo-0".into(),
            container: "app".into(),
            node: "node-a".into(),
            pid: 4242,
            nspid: 1,
            jvm_start_ms: 1_764_000_000_000,
            target_id: target_id("local", "node-a", 4242, 1_764_000_000_000),
            container_id: "3f1c2a9b".repeat(8),
            pod_uid: "1c9a2b3c-4d5e-6f70-8192-a3b4c5d6e7f8".into(),
            app_version: "2.4.1".into(),
        };
        let frames = ["java.lang.Thread.run", "Demo.cpuBurn"];
        ProfileWindow {
            window_id: window_id(target.target_id, ProfileType::Cpu, 1_764_000_060_000, 0),
            target: Some(target),
            profile_type: ProfileType::Cpu as i32,
            window_start_ms: 1_764_000_060_000,
            window_end_ms: 1_764_000_070_000,
            part_index: 0,
            part_count: 1,
            strings: vec![String::new(), frames[0].into(), frames[1].into()],
            stacks: vec![Stack {
                frames: vec![1, 2],
                value: 30_000_000,
                count: 3,
                stack_id: crate::stack_id_of_names(&frames),
                lines: vec![],
                frame_types: vec![],
            }],
            accounting: Some(Accounting {
                raw_events: 3,
                parsed_events: 3,
                stacks: 1,
                limits: Some(Limits {
                    max_stacks_per_window: 10,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            agent_version: "test".into(),
        }
    }

    #[test]
    fn window_round_trips_through_protobuf() {
        let window = sample_window();
        let decoded = ProfileWindow::decode_valid(&window.to_bytes()).expect("valid");
        assert_eq!(decoded, window);
        let frames: Vec<&str> = decoded.frames(&decoded.stacks[0]).collect();
        assert_eq!(frames, ["java.lang.Thread.run", "Demo.cpuBurn"]);
        assert_eq!(decoded.kind(), ProfileType::Cpu);
    }

    #[test]
    fn status_round_trips_through_protobuf() {
        let status = TargetStatus {
            target: sample_window().target,
            state: TargetState::OrphanedRecovered as i32,
            recorder: "jfr".into(),
            last_error: "previous agent process 77 is gone".into(),
            observed_at_ms: 5,
            agent_version: "test".into(),
            windows_published: 9,
            spool_dropped_messages: 1,
            dropped_events: 3,
            dropped_stacks: 4,
            truncated_windows: 2,
            failed_collects: 3,
            oversized_messages: 1,
            sampling: "cpu: every 10 ms of CPU time (event=cpu); 60-s windows".into(),
        };
        let decoded = TargetStatus::decode(status.to_bytes().as_slice()).expect("decodes");
        assert_eq!(decoded, status);
    }

    #[test]
    fn unknown_fields_are_tolerated() {
        let mut bytes = sample_window().to_bytes();
        // Field 99, varint 7: what a newer agent could add.
        bytes.extend_from_slice(&[0x98, 0x06, 0x07]);
        let decoded = ProfileWindow::decode_valid(&bytes).expect("unknown field ignored");
        assert_eq!(decoded, sample_window());
    }

    #[test]
    fn garbage_and_invalid_windows_are_rejected_with_a_reason() {
        assert!(matches!(
            ProfileWindow::decode_valid(&[0xff, 0xff, 0xff]),
            Err(DecodeError::Protobuf(_))
        ));
        let mut w = sample_window();
        w.stacks[0].frames.push(17);
        let err = ProfileWindow::decode_valid(&w.to_bytes()).expect_err("bad frame index");
        assert!(err.to_string().contains("references string 17"), "{err}");
        let mut w = sample_window();
        w.stacks[0].lines = vec![1];
        let err = ProfileWindow::decode_valid(&w.to_bytes()).expect_err("lines not parallel");
        assert!(err.to_string().contains("lines or frame types"), "{err}");
        let mut w = sample_window();
        w.part_index = 1;
        assert!(ProfileWindow::decode_valid(&w.to_bytes()).is_err());
        let mut w = sample_window();
        w.profile_type = 42;
        assert!(ProfileWindow::decode_valid(&w.to_bytes()).is_err());
        let mut w = sample_window();
        if let Some(t) = w.target.as_mut() {
            t.service.clear();
        }
        assert!(ProfileWindow::decode_valid(&w.to_bytes()).is_err());
    }

    #[test]
    fn window_ids_are_deterministic_and_distinct() {
        let a = window_id(1, ProfileType::Cpu, 1000, 0);
        assert_eq!(a, window_id(1, ProfileType::Cpu, 1000, 0));
        assert_ne!(a, window_id(1, ProfileType::Alloc, 1000, 0));
        assert_ne!(a, window_id(1, ProfileType::Cpu, 1001, 0));
        assert_ne!(a, window_id(1, ProfileType::Cpu, 1000, 1));
        assert_ne!(a, window_id(2, ProfileType::Cpu, 1000, 0));
    }

    #[test]
    fn profile_type_names_round_trip() {
        for t in ProfileType::ALL {
            assert_eq!(ProfileType::from_name(t.name()), Some(t));
        }
        assert_eq!(ProfileType::from_name("wall"), None);
    }
}
