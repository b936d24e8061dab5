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
//! own if the agent disappears, and `quiet,log=` keeps async-profiler's
//! messages out of the application's stdout.
//!
//! An async-profiler loaded from any other path is someone else's
//! (`external_conflict`, see discovery) and is never touched.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use super::{Collected, Recorder, RecorderError, take_file};
use crate::attach::AttachTarget;
use crate::jfr_parse::scan_chunks;

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

#[derive(Debug)]
pub struct AsyncProfilerRecorder {
    target: AttachTarget,
    settings: AsyncProfilerSettings,
    session: u64,
}

impl AsyncProfilerRecorder {
    pub fn new(target: AttachTarget, settings: AsyncProfilerSettings) -> AsyncProfilerRecorder {
        AsyncProfilerRecorder {
            target,
            settings,
            session: 0,
        }
    }

    fn file(&self) -> String {
        format!("{TARGET_DIR}/ap-{}-{}.jfr", self.target.nspid, self.session)
    }

    /// The `start` options for the current session.
    pub fn start_options(&self) -> String {
        let s = &self.settings;
        format!(
            "start,event=cpu,interval={},alloc={},lock={},jfr,quiet,log={TARGET_DIR}/ap-{}.log,file={},timeout={}",
            s.cpu_interval.as_nanos(),
            s.alloc_bytes,
            s.lock_threshold.as_nanos(),
            self.target.nspid,
            self.file(),
            s.session_timeout.as_secs().max(1),
        )
    }

    /// One async-profiler command through `load`; success needs `return code: 0`
    /// in the reply (JDK 21+ answers status 0 even when loading failed).
    fn command(&self, options: &str) -> Result<(), RecorderError> {
        self.target
            .execute("load", &[TARGET_LIBRARY, "true", options])?
            .expect("return code: 0")?;
        Ok(())
    }

    /// Copies the library into the target unless an identical copy is there.
    fn install_library(&self) -> Result<(), RecorderError> {
        let lib_err = |path: &std::path::Path| {
            let path = path.display().to_string();
            move |source| RecorderError::Library { path, source }
        };
        let source = &self.settings.library;
        let bytes = std::fs::read(source).map_err(lib_err(source))?;
        let dir = self.target.in_target(TARGET_DIR);
        let dest = self.target.in_target(TARGET_LIBRARY);
        if std::fs::read(&dest).is_ok_and(|existing| existing == bytes) {
            return Ok(());
        }
        std::fs::create_dir_all(&dir).map_err(lib_err(&dir))?;
        // World-writable and sticky like /tmp: JVMs running as any user write their recordings here.
        set_mode(&dir, 0o1777).map_err(lib_err(&dir))?;
        let tmp = dest.with_extension("so.partial");
        let mut file = std::fs::File::create(&tmp).map_err(lib_err(&tmp))?;
        file.write_all(&bytes).map_err(lib_err(&tmp))?;
        drop(file);
        set_mode(&tmp, 0o755).map_err(lib_err(&tmp))?;
        // Rename: a JVM that already mapped the old file keeps its copy intact.
        std::fs::rename(&tmp, &dest).map_err(lib_err(&dest))?;
        Ok(())
    }
}

fn set_mode(path: &std::path::Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

impl Recorder for AsyncProfilerRecorder {
    fn kind(&self) -> &'static str {
        "async-profiler"
    }

    fn start(&mut self, _stale: Option<&str>) -> Result<(), RecorderError> {
        self.install_library()?;
        // A session of ours may still run (agent restarted): stop it first; "not active" is fine.
        let _ = self.command("stop");
        self.session += 1;
        self.command(&self.start_options())
    }

    fn collect(&mut self) -> Result<Collected, RecorderError> {
        // Stop finishes the JFR file; the next session starts right away so the gap stays small.
        let stopped = self.command("stop");
        let local = self.target.in_target(&self.file());
        self.session += 1;
        let restarted = self.command(&self.start_options());
        stopped?;
        let bytes = take_file(&local, self.settings.max_dump_bytes);
        restarted?;
        let bytes = bytes?;
        let (new_chunks, error) = scan_chunks(&bytes);
        Ok(Collected {
            bytes,
            new_chunks,
            error,
        })
    }

    fn stop(&mut self) -> Result<(), RecorderError> {
        let result = self.command("stop");
        let _ = std::fs::remove_file(self.target.in_target(&self.file()));
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_options_name_every_event_and_a_safety_timeout() {
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
        let mut recorder = AsyncProfilerRecorder::new(target, settings);
        recorder.session = 3;
        assert_eq!(
            recorder.start_options(),
            "start,event=cpu,interval=10000000,alloc=524288,lock=10000000,jfr,quiet,\
             log=/tmp/javelin/ap-7.log,file=/tmp/javelin/ap-7-3.jfr,timeout=180"
        );
        assert!(
            recorder.start_options().len() <= 1024,
            "fits one v1 attach argument"
        );
    }
}
