//! Recorders: how profiling data is taken from a JVM, one window at a time.
//!
//! - [`jfr::JfrRecorder`]: the JVM's built-in Flight Recorder, driven with `jcmd`
//!   operations (the fallback, and the mode where no async-profiler is configured);
//! - [`async_profiler::AsyncProfilerRecorder`]: async-profiler loaded as an agent
//!   library, stopped, read and restarted every window.
//!
//! Both hand back JFR bytes with the chunks that are new in this window; parsing
//! and aggregation are the same for both. Every method blocks (attach I/O) and
//! runs on a blocking thread.

pub mod async_profiler;
pub mod jfr;

pub use async_profiler::{AsyncProfilerRecorder, AsyncProfilerSettings};
pub use jfr::{JfrRecorder, JfrSettings};

use crate::attach::AttachError;
use crate::jfr_parse::{ChunkInfo, JfrError};

/// A profiling session in one JVM.
pub trait Recorder: Send + std::fmt::Debug {
    /// `jfr` or `async-profiler`, as written in session markers and status.
    fn kind(&self) -> &'static str;
    /// Starts the session, first stopping `stale` (an orphaned session of ours
    /// under an older recording name) and any session of ours still running.
    fn start(&mut self, stale: Option<&str>) -> Result<(), RecorderError>;
    /// The JFR data recorded since the last call.
    fn collect(&mut self) -> Result<Collected, RecorderError>;
    /// Ends the session.
    fn stop(&mut self) -> Result<(), RecorderError>;
}

#[derive(Debug, thiserror::Error)]
pub enum RecorderError {
    #[error(transparent)]
    Attach(#[from] AttachError),
    #[error("reading the dump {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the recorder's library {path}: {source}")]
    Library {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the dump has {size} bytes, over the {limit}-byte limit; window dropped")]
    TooLarge { size: u64, limit: u64 },
}

/// New JFR data from one window.
#[derive(Debug, Default)]
pub struct Collected {
    pub bytes: Vec<u8>,
    /// Chunks of `bytes` not seen in earlier windows.
    pub new_chunks: Vec<ChunkInfo>,
    /// Problem with the rest of the file, if any (reported, never fatal).
    pub error: Option<JfrError>,
}

/// Reads a file the JVM wrote (a path as seen from the agent) and deletes it;
/// a file over `limit` bytes is deleted unread and reported.
pub fn take_file(path: &std::path::Path, limit: u64) -> Result<Vec<u8>, RecorderError> {
    let read = || {
        let err = |source| RecorderError::Read {
            path: path.display().to_string(),
            source,
        };
        let size = std::fs::metadata(path).map_err(err)?.len();
        if size > limit {
            return Err(RecorderError::TooLarge { size, limit });
        }
        std::fs::read(path).map_err(err)
    };
    let result = read();
    let _ = std::fs::remove_file(path);
    result
}
