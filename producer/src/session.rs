//! Session ownership: which agent installation owns the profiling session in a JVM.
//!
//! A marker file `.javelin-<nspid>.session` in the target's /tmp names the
//! installation, the recorder, the recording and the agent process (pid and start
//! time) that owns it. Before starting a session the agent reads it:
//! - no marker: a fresh target;
//! - our installation, and the agent process it names is gone (agent restarted,
//!   even after kill -9): `orphaned_recovered` — the old session is stopped and a
//!   new one started under our name, so the JVM never carries two;
//! - our installation, and the agent it names still runs (a second agent on the
//!   node): `external_conflict`, left alone;
//! - another installation: `external_conflict`, left alone;
//! - a marker written for an earlier process with the same pid (its JVM start
//!   time differs): stale, a fresh target.
//!
//! The marker lives in the target's /tmp (reached through `/proc/<pid>/root`), so
//! it dies with the container, and a restarted JVM starts clean. A JVM on the
//! host shares the host's /tmp, where a marker outlives its JVM (a JVM killed
//! before its session stopped): pids are reused (pid_max is often 32768), so
//! the marker names the JVM's start time, and a marker of another start is
//! ignored and replaced. It is read,
//! written and removed only through [`Marker::read`], [`Marker::write`] and
//! [`Marker::remove`] ([`crate::rootfs`]: no link followed, /tmp owned by root or
//! the JVM's user, the marker itself a small regular file owned by the agent's
//! user, which wrote it).

use std::path::PathBuf;

use crate::rootfs::{Root, RootFsError};

/// Largest marker read; a real one is about 150 bytes.
const MAX_MARKER_BYTES: u64 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum MarkerError {
    #[error("session marker: {0}")]
    Target(#[from] RootFsError),
    #[error("session marker of process {pid}: {source}")]
    Process {
        pid: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("session marker {path}: not a marker")]
    Garbled { path: String },
}

/// Contents of a marker file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    pub installation: String,
    pub recorder: String,
    pub recording: String,
    pub agent_pid: u32,
    pub agent_start_ms: i64,
    /// Start time (ms since the epoch) of the JVM the marker was written for;
    /// `None` in markers of agents before it was recorded.
    pub jvm_start_ms: Option<i64>,
}

/// Who owns the target, as far as the marker tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ownership {
    Fresh,
    /// Ours, left by an agent process that no longer runs.
    Orphaned(Marker),
    /// Another live agent or another installation.
    Foreign(Marker),
    /// Ours already (this very process): nothing to recover.
    Mine,
}

impl Marker {
    pub fn path(pid: u32, nspid: u32) -> PathBuf {
        PathBuf::from(format!("/proc/{pid}/root/tmp/{}", Marker::file_name(nspid)))
    }

    fn file_name(nspid: u32) -> String {
        format!(".javelin-{nspid}.session")
    }

    /// The target's `/tmp`, which must be a directory owned by root or the JVM's user.
    fn tmp_of(pid: u32) -> Result<crate::rootfs::Dir, MarkerError> {
        let uid = crate::rootfs::process_uid(pid)
            .map_err(|source| MarkerError::Process { pid, source })?;
        Ok(Root::of_process(pid)?.open_dir("/tmp", &[0, uid])?)
    }

    /// The marker of JVM `pid` (`nspid` inside its namespace); `None` when
    /// there is none. A link, a FIFO, a file not owned by the agent's user, an
    /// oversized or garbled file is an error: the JVM is someone else's.
    pub fn read(pid: u32, nspid: u32) -> Result<Option<Marker>, MarkerError> {
        Marker::read_in(&Marker::tmp_of(pid)?, nspid)
    }

    /// [`Marker::read`] in a given directory.
    pub fn read_in(dir: &crate::rootfs::Dir, nspid: u32) -> Result<Option<Marker>, MarkerError> {
        let name = Marker::file_name(nspid);
        let owner = nix::unistd::geteuid().as_raw();
        let bytes = match dir.read(&name, Some(&[owner]), MAX_MARKER_BYTES) {
            Ok(bytes) => bytes,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        Marker::parse(&String::from_utf8_lossy(&bytes))
            .map(Some)
            .ok_or(MarkerError::Garbled { path: name })
    }

    /// Writes this marker for JVM `pid`, atomically, replacing (never following)
    /// whatever entry is at its path.
    pub fn write(&self, pid: u32, nspid: u32) -> Result<(), MarkerError> {
        self.write_in(&Marker::tmp_of(pid)?, nspid)
    }

    /// [`Marker::write`] in a given directory.
    pub fn write_in(&self, dir: &crate::rootfs::Dir, nspid: u32) -> Result<(), MarkerError> {
        Ok(dir.write_replace(&Marker::file_name(nspid), self.render().as_bytes(), 0o644)?)
    }

    /// Removes the marker of JVM `pid` if it is a file of the agent's user;
    /// `false` when there was none.
    pub fn remove(pid: u32, nspid: u32) -> Result<bool, MarkerError> {
        let owner = nix::unistd::geteuid().as_raw();
        Ok(Marker::tmp_of(pid)?.remove_if(
            &Marker::file_name(nspid),
            crate::rootfs::Kind::File,
            &[owner],
        )?)
    }

    pub fn render(&self) -> String {
        let mut text = format!(
            "installation={}\nrecorder={}\nrecording={}\nagent_pid={}\nagent_start_ms={}\n",
            self.installation, self.recorder, self.recording, self.agent_pid, self.agent_start_ms
        );
        if let Some(start) = self.jvm_start_ms {
            text.push_str(&format!("jvm_start_ms={start}\n"));
        }
        text
    }

    /// Parses a marker; `None` for anything that is not one (treated as foreign by callers).
    pub fn parse(text: &str) -> Option<Marker> {
        let field = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                .map(str::trim)
        };
        Some(Marker {
            installation: field("installation")?.to_string(),
            recorder: field("recorder")?.to_string(),
            recording: field("recording")?.to_string(),
            agent_pid: field("agent_pid")?.parse().ok()?,
            agent_start_ms: field("agent_start_ms")?.parse().ok()?,
            jvm_start_ms: match field("jvm_start_ms") {
                Some(v) => Some(v.parse().ok()?),
                None => None,
            },
        })
    }

    /// Decides ownership of a target from its marker (if any) and this agent's identity.
    /// `agent_alive` tells whether a given (pid, start time) agent process still runs.
    pub fn ownership(
        existing: Option<&Marker>,
        me: &Marker,
        agent_alive: impl Fn(u32, i64) -> bool,
    ) -> Ownership {
        let Some(existing) = existing else {
            return Ownership::Fresh;
        };
        if let (Some(then), Some(now)) = (existing.jvm_start_ms, me.jvm_start_ms)
            && !same_start(then, now)
        {
            return Ownership::Fresh;
        }
        if existing.installation != me.installation {
            return Ownership::Foreign(existing.clone());
        }
        if existing.agent_pid == me.agent_pid && existing.agent_start_ms == me.agent_start_ms {
            return Ownership::Mine;
        }
        if agent_alive(existing.agent_pid, existing.agent_start_ms) {
            Ownership::Foreign(existing.clone())
        } else {
            Ownership::Orphaned(existing.clone())
        }
    }
}

/// This agent process's own start time (ms since the epoch).
pub fn own_start_ms() -> i64 {
    crate::discovery::ProcFs::new("/proc")
        .ok()
        .and_then(|p| p.start_ms(std::process::id()))
        .unwrap_or_default()
}

/// Whether the process `pid` that started at `start_ms` still runs on this host.
pub fn process_alive(pid: u32, start_ms: i64) -> bool {
    crate::discovery::ProcFs::new("/proc")
        .ok()
        .and_then(|p| p.start_ms(pid))
        .is_some_and(|s| same_start(s, start_ms))
}

/// Whether two start times computed from `/proc` name the same process start:
/// they are derived from clock ticks and the boot time, so they may differ by
/// rounding, never by a second.
fn same_start(a: i64, b: i64) -> bool {
    (a - b).abs() < 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marker(installation: &str, pid: u32) -> Marker {
        Marker {
            installation: installation.into(),
            recorder: "jfr".into(),
            recording: "javelin".into(),
            agent_pid: pid,
            agent_start_ms: 1000,
            jvm_start_ms: Some(50_000),
        }
    }

    #[test]
    fn markers_round_trip() {
        let m = marker("prod", 42);
        assert_eq!(Marker::parse(&m.render()), Some(m.clone()));
        assert_eq!(Marker::parse("garbage"), None);
        // An older agent's marker names no JVM start.
        let old = Marker {
            jvm_start_ms: None,
            ..m
        };
        assert_eq!(Marker::parse(&old.render()), Some(old.clone()));
        assert!(!old.render().contains("jvm_start_ms"));
        assert_eq!(
            Marker::parse(&format!("{}jvm_start_ms=soon\n", old.render())),
            None
        );
    }

    #[test]
    fn ownership_rules() {
        let me = marker("prod", 7);
        assert_eq!(Marker::ownership(None, &me, |_, _| false), Ownership::Fresh);
        assert_eq!(
            Marker::ownership(Some(&me), &me, |_, _| true),
            Ownership::Mine
        );
        let old = marker("prod", 5);
        assert_eq!(
            Marker::ownership(Some(&old), &me, |_, _| false),
            Ownership::Orphaned(old.clone())
        );
        assert_eq!(
            Marker::ownership(Some(&old), &me, |_, _| true),
            Ownership::Foreign(old)
        );
        let other = marker("staging", 5);
        assert_eq!(
            Marker::ownership(Some(&other), &me, |_, _| false),
            Ownership::Foreign(other.clone())
        );
    }

    #[test]
    fn a_marker_of_an_earlier_process_with_the_same_pid_is_stale() {
        let me = marker("prod", 7);
        // Another installation's live agent wrote it, but for a JVM that
        // started a minute before this one: the pid was reused.
        let earlier = Marker {
            jvm_start_ms: Some(-10_000),
            ..marker("staging", 5)
        };
        assert_eq!(
            Marker::ownership(Some(&earlier), &me, |_, _| true),
            Ownership::Fresh
        );
        let ours_earlier = Marker {
            jvm_start_ms: Some(-10_000),
            ..marker("prod", 5)
        };
        assert_eq!(
            Marker::ownership(Some(&ours_earlier), &me, |_, _| false),
            Ownership::Fresh
        );
        // The same JVM (start times agree within rounding) keeps the rules.
        let same = Marker {
            jvm_start_ms: Some(50_400),
            ..marker("staging", 5)
        };
        assert_eq!(
            Marker::ownership(Some(&same), &me, |_, _| false),
            Ownership::Foreign(same.clone())
        );
        // An older agent's marker names no start: the rules as before.
        let unknown = Marker {
            jvm_start_ms: None,
            ..marker("staging", 5)
        };
        assert_eq!(
            Marker::ownership(Some(&unknown), &me, |_, _| false),
            Ownership::Foreign(unknown.clone())
        );
    }
}
