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
//! - a marker written for an earlier process with the same pid: stale, a fresh
//!   target (see [`Marker::stale`]).
//!
//! The marker lives in the target's /tmp (reached through `/proc/<pid>/root`), so
//! it dies with the container, and a restarted JVM starts clean. A JVM on the
//! host shares the host's /tmp, where a marker outlives its JVM (the agent
//! cannot reach a JVM's /tmp once it exited, and a killed agent removes
//! nothing): pids are reused (pid_max is often 32768), so the marker names the
//! JVM (boot id and start ticks), and a marker of another JVM is ignored and
//! replaced. Leftovers in the host's /tmp are small (≈ 150 bytes, one per pid
//! at most) and go with the host's /tmp clean-up. It is read,
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
    /// The JVM the marker was written for ([`crate::discovery::JvmProcess::start_id`]);
    /// `None` in markers of agents before it was recorded.
    pub jvm: Option<String>,
}

/// A marker without a JVM identity (an older agent's) is taken for an earlier
/// process's when its file is older than the JVM by more than this (a margin
/// for clock steps; the agent writes its marker after the JVM started).
const LEGACY_MARKER_MARGIN_MS: i64 = 60_000;

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

    /// [`Marker::read`] with the file's modification time (ms since the epoch).
    pub fn read_dated(pid: u32, nspid: u32) -> Result<Option<(Marker, i64)>, MarkerError> {
        let dir = Marker::tmp_of(pid)?;
        let Some(stat) = dir.stat(&Marker::file_name(nspid))? else {
            return Ok(None);
        };
        let written_ms = stat.st_mtime * 1000 + stat.st_mtime_nsec / 1_000_000;
        Ok(Marker::read_in(&dir, nspid)?.map(|m| (m, written_ms)))
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
        if let Some(jvm) = &self.jvm {
            text.push_str(&format!("jvm={jvm}\n"));
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
            jvm: field("jvm").map(str::to_string),
        })
    }

    /// Whether this marker, found at the JVM's marker path, was written for an
    /// earlier process with the same pid: it names another JVM than `me`
    /// does, or (an older agent's marker, naming none) its file is older than
    /// the JVM (`jvm_start_ms`) by more than a minute.
    pub fn stale(&self, me: &Marker, written_ms: i64, jvm_start_ms: i64) -> bool {
        match (&self.jvm, &me.jvm) {
            (Some(then), Some(now)) => !same_jvm(then, now),
            (None, _) => written_ms < jvm_start_ms - LEGACY_MARKER_MARGIN_MS,
            (Some(_), None) => false,
        }
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

/// Whether two JVM identities (`<boot id>:<start ticks>`) name the same
/// process; a reader that could not read the boot id wrote it empty, and then
/// the start ticks alone decide (two agents must not disagree on one JVM).
fn same_jvm(a: &str, b: &str) -> bool {
    match (a.rsplit_once(':'), b.rsplit_once(':')) {
        (Some((boot_a, ticks_a)), Some((boot_b, ticks_b))) => {
            ticks_a == ticks_b && (boot_a == boot_b || boot_a.is_empty() || boot_b.is_empty())
        }
        _ => a == b,
    }
}

/// Whether two start times computed from `/proc` (by different processes, at
/// different times) name the same process start: they add the start ticks to
/// `btime`, whole seconds of a wall clock that may have been stepped between
/// the two readings, so they may differ by a second. A pid comes round again
/// only after the whole pid space was used.
fn same_start(a: i64, b: i64) -> bool {
    (a - b).abs() <= 1500
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
            jvm: Some("boot-a:5000".into()),
        }
    }

    #[test]
    fn markers_round_trip() {
        let m = marker("prod", 42);
        assert_eq!(Marker::parse(&m.render()), Some(m.clone()));
        assert_eq!(Marker::parse("garbage"), None);
        // An older agent's marker names no JVM start.
        let old = Marker { jvm: None, ..m };
        assert_eq!(Marker::parse(&old.render()), Some(old.clone()));
        assert!(!old.render().contains("jvm="));
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
        let (written, jvm_start) = (1_000_000, 1_000_000 - 5_000);
        // Another JVM (other start ticks, or another boot): stale, whoever wrote it.
        for other in ["boot-a:4999", "boot-b:5000"] {
            let earlier = Marker {
                jvm: Some(other.into()),
                ..marker("staging", 5)
            };
            assert!(earlier.stale(&me, written, jvm_start), "{other}");
        }
        // This JVM: not stale, however old the file looks (clock steps), also
        // when one side could not read the boot id.
        assert!(!marker("staging", 5).stale(&me, 0, jvm_start));
        let no_boot_id = Marker {
            jvm: Some(":5000".into()),
            ..marker("staging", 5)
        };
        assert!(!no_boot_id.stale(&me, written, jvm_start));
        let other_ticks = Marker {
            jvm: Some(":4000".into()),
            ..marker("staging", 5)
        };
        assert!(other_ticks.stale(&me, written, jvm_start));
        // An older agent's marker names no JVM: stale when its file is older
        // than the JVM by more than the margin, not when written after it.
        let legacy = Marker {
            jvm: None,
            ..marker("staging", 5)
        };
        assert!(legacy.stale(&me, jvm_start - 60_001, jvm_start));
        assert!(!legacy.stale(&me, jvm_start - 59_000, jvm_start));
        assert!(!legacy.stale(&me, jvm_start + 1, jvm_start));
    }

    #[test]
    fn start_times_of_one_process_read_across_a_clock_step_agree() {
        // btime is whole seconds: a step moves a reading by exactly a second.
        assert!(same_start(10_000, 11_000));
        assert!(same_start(10_000, 10_001));
        assert!(!same_start(10_000, 12_000));
    }
}
