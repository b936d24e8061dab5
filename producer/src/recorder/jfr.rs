//! The built-in JFR recorder, driven over the attach protocol (`jcmd` operations).
//!
//! Start: one minimal `settings=none` recording with only the events Javelin
//! uses. Each window: `JFR.dump` to a unique file in the target's /tmp, read it
//! through `/proc/<pid>/root`, delete it, and keep only chunks not seen before
//! (every dump rotates the chunk and repeats the older ones still in the
//! recording, so chunks are de-duplicated by their start time).

use std::collections::VecDeque;
use std::time::Duration;

use super::{Collected, Recorder, RecorderError, take_file};
use crate::attach::AttachTarget;
use crate::jfr_parse::{ChunkInfo, scan_chunks};

/// JFR event settings for the recording.
#[derive(Debug, Clone)]
pub struct JfrSettings {
    pub cpu_period: Duration,
    /// `jdk.ObjectAllocationSample` throttle, e.g. `300/s`.
    pub alloc_throttle: String,
    pub lock_threshold: Duration,
    pub park_threshold: Duration,
    /// How long the JVM keeps recorded data (bounds the size of every dump).
    pub max_age: Duration,
    /// Largest dump the agent reads; a larger one is dropped and reported.
    pub max_dump_bytes: u64,
}

impl Default for JfrSettings {
    fn default() -> Self {
        JfrSettings {
            cpu_period: Duration::from_millis(10),
            alloc_throttle: "300/s".into(),
            lock_threshold: Duration::from_millis(10),
            park_threshold: Duration::from_millis(10),
            max_age: Duration::from_secs(120),
            max_dump_bytes: 256 << 20,
        }
    }
}

/// One JFR recording in one JVM, owned by this agent.
#[derive(Debug)]
pub struct JfrRecorder {
    target: AttachTarget,
    name: String,
    settings: JfrSettings,
    /// Start times of chunks already collected, oldest first; bounded.
    seen: VecDeque<i64>,
    dumps: u64,
}

/// Chunk start times remembered for de-duplication: far more than `max_age` can hold.
const SEEN_CHUNKS: usize = 4096;

impl JfrRecorder {
    pub fn new(target: AttachTarget, name: String, settings: JfrSettings) -> JfrRecorder {
        JfrRecorder {
            target,
            name,
            settings,
            seen: VecDeque::new(),
            dumps: 0,
        }
    }

    /// The `JFR.start` line: a minimal recording with only the events we aggregate.
    pub fn start_command(&self) -> String {
        let s = &self.settings;
        let ms = |d: Duration| format!("{}ms", d.as_millis());
        let stack = |e: &str| format!("+{e}#enabled=true +{e}#stackTrace=true");
        [
            format!("JFR.start name={} settings=none", self.name),
            // The recording states its real sampling period; CPU weights are taken from it.
            "+jdk.ActiveSetting#enabled=true".to_string(),
            stack("jdk.ExecutionSample"),
            format!("+jdk.ExecutionSample#period={}", ms(s.cpu_period)),
            stack("jdk.ObjectAllocationSample"),
            format!("+jdk.ObjectAllocationSample#throttle={}", s.alloc_throttle),
            stack("jdk.JavaMonitorEnter"),
            format!("+jdk.JavaMonitorEnter#threshold={}", ms(s.lock_threshold)),
            stack("jdk.ThreadPark"),
            format!("+jdk.ThreadPark#threshold={}", ms(s.park_threshold)),
            format!("maxage={}s", s.max_age.as_secs().max(1)),
        ]
        .join(" ")
    }
}

impl Recorder for JfrRecorder {
    fn kind(&self) -> &'static str {
        "jfr"
    }

    /// Starts the recording, replacing one of the same name (and `stale`, an
    /// orphaned recording of ours under an older name) left by an earlier agent
    /// run, so a JVM never carries two of ours.
    fn start(&mut self, stale: Option<&str>) -> Result<(), RecorderError> {
        // Status 0 and "Could not stop" when there is none: both fine.
        for name in std::iter::once(self.name.as_str()).chain(stale) {
            let _ = self.target.jcmd(&format!("JFR.stop name={name}"));
        }
        self.target
            .jcmd(&self.start_command())?
            .expect("Started recording")?;
        Ok(())
    }

    /// Dumps the recording and returns the chunks not collected before.
    fn collect(&mut self) -> Result<Collected, RecorderError> {
        self.dumps += 1;
        let file = format!("/tmp/{}-{}.jfr", self.name, self.dumps);
        let local = self.target.in_target(&file);
        let reply = self
            .target
            .jcmd(&format!("JFR.dump name={} filename={file}", self.name));
        let read = reply
            .map_err(RecorderError::from)
            .and_then(|r| Ok(r.expect("Dumped recording")?))
            .and_then(|_| take_file(&local, self.settings.max_dump_bytes));
        let bytes = read?;
        let (chunks, error) = scan_chunks(&bytes);
        let new_chunks: Vec<ChunkInfo> = chunks
            .into_iter()
            .filter(|c| !self.seen.contains(&c.start_nanos))
            .collect();
        for c in &new_chunks {
            if self.seen.len() == SEEN_CHUNKS {
                self.seen.pop_front();
            }
            self.seen.push_back(c.start_nanos);
        }
        Ok(Collected {
            bytes,
            new_chunks,
            error,
        })
    }

    /// Stops the recording (the agent is shutting down or the target is leaving).
    fn stop(&mut self) -> Result<(), RecorderError> {
        self.target
            .jcmd(&format!("JFR.stop name={}", self.name))?
            .expect("Stopped recording")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_command_fits_one_v1_argument() {
        let target = AttachTarget {
            pid: 1,
            nspid: 1,
            timeout: Duration::from_secs(1),
        };
        let recorder = JfrRecorder::new(target, "javelin".into(), JfrSettings::default());
        let line = recorder.start_command();
        assert!(line.len() <= 1024, "{} bytes", line.len());
        assert!(line.starts_with("JFR.start name=javelin settings=none "));
        assert!(line.contains("+jdk.ExecutionSample#period=10ms"));
        assert!(line.contains("+jdk.ThreadPark#threshold=10ms"));
        assert!(line.contains("maxage=120s"));
    }
}
