//! async-profiler as a dynamically loaded agent library.
//!
//! The library (a node path from configuration) is copied into the target's
//! filesystem at [`TARGET_LIBRARY`] when missing or different, because the JVM
//! resolves the path in its own mount namespace. Every command is an attach
//! `load <lib> true <options>` (how asprof drives it); a loaded library is
//! simply re-entered. One session records CPU, allocation and lock events into a
//! JFR file in the target's `/tmp/javelin/`; every window the session is
//! stopped (which finishes the file), the file read and deleted, and a new
//! session started into the next file. `timeout=` makes a session end on its
//! own if the agent disappears.
//!
//! Nothing reaches the application's output: async-profiler writes its
//! messages ("Profiling started", "Profiling stopped after …", "[ERROR] Profiler
//! is not active") to the JVM's stdout unless told otherwise, and every command
//! re-opens its log, so every command carries `quiet` (no success message) and
//! `log=` (errors and warnings into a file of ours in `/tmp/javelin/`).
//!
//! Files are named `ap-<owner>-<nspid>…`, where the owner tag names the agent
//! installation and process (see [`owner_tag`]): an agent deletes only files of
//! its own tag, and, when it recovers an orphaned session, those of the orphan's
//! tag (taken from the session marker), never anyone else's.
//!
//! An async-profiler loaded from any other path is someone else's
//! (`external_conflict`, see discovery) and is never touched.

use std::path::PathBuf;
use std::time::Duration;

use super::{CollectSlots, Collected, FINISH_SLOT_WAIT, Recorder, RecorderError, take_file};
use crate::attach::AttachTarget;
use crate::jfr_parse::scan_chunks;
use crate::rootfs::{Dir, Kind, Root};

/// Directory for the library, logs and recordings inside the target.
pub const TARGET_DIR: &str = "/tmp/javelin";
/// Where the library lives inside the target; a library mapped from here is ours.
pub const TARGET_LIBRARY: &str = "/tmp/javelin/libasyncProfiler.so";

/// async-profiler's options.
#[derive(Debug, Clone)]
pub struct AsyncProfilerSettings {
    /// `libasyncProfiler.so` on the node.
    pub library: PathBuf,
    pub cpu_interval: Duration,
    /// Sample an allocation every this many bytes.
    pub alloc_bytes: u64,
    /// Record monitor and park contention longer than this.
    pub lock_threshold: Duration,
    /// A session stops by itself after this long (agent gone).
    pub session_timeout: Duration,
    pub max_dump_bytes: u64,
}

/// The tag in the names of the files one agent process writes into targets:
/// its installation (reduced to `[A-Za-z0-9_.]`: the name also goes into
/// async-profiler's comma-separated options), its pid and its start time, the
/// same three facts a session marker records.
pub fn owner_tag(installation: &str, agent_pid: u32, agent_start_ms: i64) -> String {
    let installation: String = installation
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{installation}-{agent_pid}-{agent_start_ms}")
}

#[derive(Debug)]
pub struct AsyncProfilerRecorder {
    target: AttachTarget,
    settings: AsyncProfilerSettings,
    /// [`owner_tag`] of this agent.
    owner: String,
    /// [`owner_tag`] of an orphaned session's agent whose files `start` removes.
    orphan: Option<String>,
    session: u64,
    /// Whether a session of ours runs (as far as the last command tells).
    running: bool,
    /// Why the session meant to run since the last collect did not start: the
    /// next collect reports it (its window was not recorded) and starts again.
    restart_error: Option<RecorderError>,
    slots: CollectSlots,
}

impl AsyncProfilerRecorder {
    /// A recorder whose files carry this agent process's tag under the
    /// installation name `javelin`; see [`AsyncProfilerRecorder::owned_by`].
    pub fn new(target: AttachTarget, settings: AsyncProfilerSettings) -> AsyncProfilerRecorder {
        AsyncProfilerRecorder {
            target,
            settings,
            owner: owner_tag(
                "javelin",
                std::process::id(),
                crate::session::own_start_ms(),
            ),
            orphan: None,
            session: 0,
            running: false,
            restart_error: None,
            slots: CollectSlots::default(),
        }
    }

    /// Reads finished files only while holding one of the agent's collect slots.
    pub fn with_collect_slots(mut self, slots: CollectSlots) -> AsyncProfilerRecorder {
        self.slots = slots;
        self
    }

    /// Names this recorder's files with `owner` (an [`owner_tag`]).
    pub fn owned_by(mut self, owner: String) -> AsyncProfilerRecorder {
        self.owner = owner;
        self
    }

    /// `start` removes the files left in the target by the orphaned session of
    /// the agent tagged `orphan` (an [`owner_tag`]).
    pub fn recovering(mut self, orphan: String) -> AsyncProfilerRecorder {
        self.orphan = Some(orphan);
        self
    }

    /// The start of every file name of `owner`'s for this target.
    fn prefix(&self, owner: &str) -> String {
        format!("ap-{owner}-{}", self.target.nspid)
    }

    /// The current session's JFR file's name in [`TARGET_DIR`].
    fn file_name(&self) -> String {
        format!("{}-{}.jfr", self.prefix(&self.owner), self.session)
    }

    /// The current session's JFR file, as the JVM sees it.
    fn file(&self) -> String {
        format!("{TARGET_DIR}/{}", self.file_name())
    }

    /// async-profiler's log for this target: its name in [`TARGET_DIR`].
    fn log_name(&self) -> String {
        format!("{}.log", self.prefix(&self.owner))
    }

    /// async-profiler's log for this target, as the JVM sees it.
    fn log(&self) -> String {
        format!("{TARGET_DIR}/{}", self.log_name())
    }

    /// The `start` options for the current session.
    pub fn start_options(&self) -> String {
        let s = &self.settings;
        format!(
            "start,event=cpu,interval={},alloc={},lock={},jfr,file={},timeout={}",
            s.cpu_interval.as_nanos(),
            s.alloc_bytes,
            s.lock_threshold.as_nanos(),
            self.file(),
            s.session_timeout.as_secs().max(1),
        )
    }

    /// One async-profiler command through `load`, made quiet and logging into
    /// our file (async-profiler opens the log anew on every command, and stdout
    /// when none is given); success needs `return code: 0` in the reply (JDK
    /// 21+ answers status 0 even when loading failed).
    fn command(&self, action: &str) -> Result<(), RecorderError> {
        let options = format!("{action},quiet,log={}", self.log());
        self.target
            .execute("load", &[TARGET_LIBRARY, "true", &options])?
            .expect("return code: 0")?;
        Ok(())
    }

    /// Whether our library is mapped into the JVM, i.e. a session of ours may run.
    fn library_loaded(&self) -> bool {
        std::fs::read_to_string(format!("/proc/{}/maps", self.target.pid))
            .is_ok_and(|maps| maps.contains(TARGET_LIBRARY))
    }

    /// Starts the next session into a new file.
    fn start_session(&mut self) -> Result<(), RecorderError> {
        self.session += 1;
        let started = self.command(&self.start_options());
        self.running = started.is_ok();
        started
    }

    /// Our directory in the target (no link followed on the way, owned by
    /// root, the agent's or the JVM's user, as `install_library` accepts it)
    /// and the uid the JVM creates files with.
    fn target_dir(&self) -> Option<(Dir, u32)> {
        let pid = self.target.pid;
        let jvm_uid = crate::rootfs::process_uid(pid).ok()?;
        let agent = nix::unistd::geteuid().as_raw();
        let dir = Root::of_process(pid)
            .and_then(|root| root.open_dir(TARGET_DIR, &[0, agent, jvm_uid]))
            .ok()?;
        Some((dir, jvm_uid))
    }

    /// Deletes the regular files the JVM wrote in the target's [`TARGET_DIR`]
    /// whose names start with `prefix` followed by `-` or `.` (so `ap-x-1-2-7`
    /// never matches files of `ap-x-1-2-77`); returns how many.
    fn remove_files(&self, prefix: &str) -> usize {
        let Some((dir, uid)) = self.target_dir() else {
            return 0;
        };
        let Ok(entries) = std::fs::read_dir(dir.fd_path()) else {
            return 0;
        };
        entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|name| {
                name.strip_prefix(prefix)
                    .is_some_and(|rest| rest.starts_with(['-', '.']))
            })
            .filter(|name| dir.remove_if(name, Kind::File, &[uid]).unwrap_or(false))
            .count()
    }

    /// Deletes one file the JVM wrote in our directory, if it is there.
    fn remove_file(&self, name: &str) {
        if let Some((dir, uid)) = self.target_dir() {
            let _ = dir.remove_if(name, Kind::File, &[uid]);
        }
    }

    /// Copies the library into the target unless an identical copy is there.
    ///
    /// Everything inside the target goes through [`crate::rootfs`]: `/tmp` and
    /// `/tmp/javelin` must be directories owned by root or the JVM's user, no
    /// link is followed, and the library must be ours (root's): a link, a FIFO
    /// or someone else's file at its path is refused, never overwritten.
    fn install_library(&self) -> Result<(), RecorderError> {
        use crate::rootfs::{Root, RootFsError};
        let lib_err = |path: &std::path::Path| {
            let path = path.display().to_string();
            move |source| RecorderError::Library { path, source }
        };
        let source = &self.settings.library;
        let bytes = std::fs::read(source).map_err(lib_err(source))?;
        let dest = self.target.in_target(TARGET_LIBRARY);
        let refused = |e: RootFsError| lib_err(&dest)(std::io::Error::other(e));
        let jvm_uid = crate::rootfs::process_uid(self.target.pid).map_err(lib_err(&dest))?;
        let agent_uid = nix::unistd::geteuid().as_raw();
        let (parent, dir_name) = TARGET_DIR.rsplit_once('/').unwrap_or(("/", TARGET_DIR));
        let file_name = TARGET_LIBRARY.rsplit('/').next().unwrap_or(TARGET_LIBRARY);
        let root = Root::of_process(self.target.pid).map_err(refused)?;
        let tmp = root.open_dir(parent, &[0, jvm_uid]).map_err(refused)?;
        let dir = tmp
            .make_dir(dir_name, 0o1777, &[agent_uid, jvm_uid])
            .map_err(refused)?;
        // World-writable and sticky like /tmp: JVMs running as any user write their recordings here.
        dir.set_mode(0o1777).map_err(refused)?;
        match dir.read(file_name, Some(&[agent_uid]), bytes.len() as u64) {
            Ok(existing) if existing == bytes => return Ok(()),
            // Ours but different or longer: replaced below.
            Ok(_) | Err(RootFsError::TooLarge { .. }) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(refused(e)),
        }
        // A new file, then renamed over: a JVM that already mapped the old one keeps it intact.
        dir.write_replace(file_name, &bytes, 0o755)
            .map_err(refused)?;
        Ok(())
    }
}

impl Recorder for AsyncProfilerRecorder {
    fn kind(&self) -> &'static str {
        "async-profiler"
    }

    /// The events of [`Self::start_options`], in words.
    fn sampling(&self) -> String {
        let s = &self.settings;
        format!(
            "cpu: every {} ms of CPU time (event=cpu); alloc: one sample per {} KiB allocated; lock: monitor and park waits ≥ {} ms",
            s.cpu_interval.as_millis(),
            s.alloc_bytes / 1024,
            s.lock_threshold.as_millis()
        )
    }

    fn start(&mut self, stale: Option<&str>) -> Result<(), RecorderError> {
        // An orphaned JFR recording of ours (the agent used the built-in
        // recorder before): stopped, or it would record for ever next to us.
        if let Some(name) = stale {
            match self.target.jcmd(&format!("JFR.stop name={name}")) {
                Ok(reply) if reply.status == 0 => {
                    tracing::info!(
                        pid = self.target.pid,
                        recording = name,
                        "stopped an orphaned JFR recording"
                    );
                }
                // None running by that name (status != 0) is fine too.
                Ok(_) => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.install_library()?;
        // A session of ours may still run (agent restarted, or the orphan's
        // `timeout=` has not passed): stop it first. A JVM without our library
        // cannot run one, and is not asked (its answer would be an error).
        if self.library_loaded() {
            let _ = self.command("stop");
        }
        // What an orphaned session, or an earlier task of this agent for this
        // JVM, left behind: finished or abandoned recordings and logs.
        if let Some(orphan) = self.orphan.take() {
            let removed = self.remove_files(&self.prefix(&orphan));
            tracing::info!(
                pid = self.target.pid,
                removed,
                "removed the orphaned session's files"
            );
        }
        self.remove_files(&self.prefix(&self.owner));
        self.start_session()
    }

    fn collect(&mut self) -> Result<Collected, RecorderError> {
        if let Some(error) = self.restart_error.take() {
            // Nothing was recorded since the last collect: that window is lost.
            if let Err(again) = self.start_session() {
                self.restart_error = Some(again);
            }
            return Err(error);
        }
        // Stop finishes the JFR file; the next session starts right away so the gap stays small.
        let stopped = self.command("stop");
        let (finished, finished_name) = (self.target.in_target(&self.file()), self.file_name());
        if let Err(e) = self.start_session() {
            self.restart_error = Some(e);
        }
        if let Err(e) = stopped {
            // Unfinished or absent: no use to anyone, and no one else deletes it.
            self.remove_file(&finished_name);
            return Err(e);
        }
        let slot = match self.slots.acquire(None) {
            Ok(slot) => slot,
            Err(e) => {
                self.remove_file(&finished_name);
                return Err(e);
            }
        };
        let bytes = take_file(&finished, self.settings.max_dump_bytes)?;
        let (new_chunks, error) = scan_chunks(&bytes);
        Ok(Collected {
            bytes,
            new_chunks,
            error,
            slot,
        })
    }

    fn stop(&mut self) -> Result<(), RecorderError> {
        let result = if self.running {
            self.command("stop")
        } else {
            Ok(())
        };
        self.running = false;
        self.remove_file(&self.file_name());
        // The JVM keeps its log open (harmless once unlinked): nothing of ours is left.
        self.remove_file(&self.log_name());
        result
    }

    /// Stops the session and reads its file, without starting another.
    fn finish(&mut self) -> (Result<Collected, RecorderError>, Result<(), RecorderError>) {
        if let Some(error) = self.restart_error.take() {
            return (Err(error), self.stop());
        }
        let stopped = self.command("stop");
        self.running = false;
        let collected = match &stopped {
            // Stopped first, then a slot: the session ends whether or not a
            // slot comes free before the agent must exit (the file is then removed below).
            Ok(()) => self
                .slots
                .acquire(Some(std::time::Instant::now() + FINISH_SLOT_WAIT))
                .and_then(|slot| {
                    let bytes = take_file(
                        &self.target.in_target(&self.file()),
                        self.settings.max_dump_bytes,
                    )?;
                    let (new_chunks, error) = scan_chunks(&bytes);
                    Ok(Collected {
                        bytes,
                        new_chunks,
                        error,
                        slot,
                    })
                }),
            Err(e) => Err(RecorderError::Read {
                path: self.file(),
                source: std::io::Error::other(format!("the session did not stop: {e}")),
            }),
        };
        // Cleans up whatever is left (a file the failed stop left, the log).
        let _ = self.stop();
        (collected, stopped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorder() -> AsyncProfilerRecorder {
        let target = AttachTarget {
            pid: 1,
            nspid: 7,
            timeout: Duration::from_secs(1),
        };
        let settings = AsyncProfilerSettings {
            library: "/opt/javelin/libasyncProfiler.so".into(),
            cpu_interval: Duration::from_millis(10),
            alloc_bytes: 512 * 1024,
            lock_threshold: Duration::from_millis(10),
            session_timeout: Duration::from_secs(180),
            max_dump_bytes: 1 << 20,
        };
        AsyncProfilerRecorder::new(target, settings).owned_by(owner_tag("prod", 42, 1_700))
    }

    #[test]
    fn start_options_name_every_event_and_a_safety_timeout() {
        let mut recorder = recorder();
        recorder.session = 3;
        assert_eq!(
            recorder.start_options(),
            "start,event=cpu,interval=10000000,alloc=524288,lock=10000000,jfr,\
             file=/tmp/javelin/ap-prod-42-1700-7-3.jfr,timeout=180"
        );
        assert_eq!(
            recorder.sampling(),
            "cpu: every 10 ms of CPU time (event=cpu); alloc: one sample per 512 KiB allocated; \
             lock: monitor and park waits ≥ 10 ms"
        );
        // The longest command: start plus the quiet,log= every command gets.
        let command = format!("{},quiet,log={}", recorder.start_options(), recorder.log());
        assert!(command.len() <= 1024, "fits one v1 attach argument");
        assert_eq!(recorder.log(), "/tmp/javelin/ap-prod-42-1700-7.log");
    }

    #[test]
    fn owner_tags_keep_option_syntax_and_paths_intact() {
        assert_eq!(owner_tag("prod", 1, 2), "prod-1-2");
        assert_eq!(owner_tag("a,b=c/d e", 1, 2), "a_b_c_d_e-1-2");
    }
}
