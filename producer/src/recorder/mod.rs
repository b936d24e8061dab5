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
    /// What records (`jfr`, `jfr-cpu-time`, `async-profiler`), as written in
    /// session markers and status; final once `start` succeeded.
    fn kind(&self) -> &'static str;
    /// Starts the session, first stopping `stale` (an orphaned session of ours
    /// under an older recording name) and any session of ours still running.
    fn start(&mut self, stale: Option<&str>) -> Result<(), RecorderError>;
    /// The JFR data recorded since the last call.
    fn collect(&mut self) -> Result<Collected, RecorderError>;
    /// Ends the session.
    fn stop(&mut self) -> Result<(), RecorderError>;
    /// The open window's data and the end of the session (a graceful stop):
    /// the collect's result, and the stop's. A recorder whose collect starts
    /// the next session ends it here without recording further.
    fn finish(&mut self) -> (Result<Collected, RecorderError>, Result<(), RecorderError>) {
        let collected = self.collect();
        (collected, self.stop())
    }
    /// How this session samples, in words for the status and the UI: the
    /// events with their periods and thresholds, as started.
    fn sampling(&self) -> String;
    /// What the status should say about how this session samples, beyond its
    /// kind: e.g. why a JDK 25 target is not on the CPU-time sampler. `None`
    /// when there is nothing to say.
    fn notice(&self) -> Option<&str> {
        None
    }
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
    #[error("no collect slot came free in time (agent stopping); window dropped")]
    NoSlot,
}

impl RecorderError {
    /// A short name for metrics labels.
    pub fn reason(&self) -> &'static str {
        match self {
            RecorderError::Attach(_) => "attach",
            RecorderError::Read { .. } => "read",
            RecorderError::Library { .. } => "library",
            RecorderError::TooLarge { .. } => "too_large",
            RecorderError::NoSlot => "no_slot",
        }
    }
}

/// New JFR data from one window.
#[derive(Debug, Default)]
pub struct Collected {
    pub bytes: Vec<u8>,
    /// Chunks of `bytes` not seen in earlier windows.
    pub new_chunks: Vec<ChunkInfo>,
    /// Problem with the rest of the file, if any (reported, never fatal).
    pub error: Option<JfrError>,
    /// The collect slot the dump was read under; held until the data is
    /// parsed and dropped with it (`None` when the recorder has no slots).
    pub slot: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// The agent's collect slots: a dump is read into memory and parsed only
/// while holding one, so at most that many dumps are in memory at once. The
/// slot is taken after the JVM wrote the dump (the attach round trips of a
/// slow or stopped JVM hold none) and before it is read.
#[derive(Debug, Clone, Default)]
pub struct CollectSlots(Option<std::sync::Arc<tokio::sync::Semaphore>>);

/// How long a graceful stop waits for a slot before giving up the final window.
pub const FINISH_SLOT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

impl CollectSlots {
    pub fn new(slots: std::sync::Arc<tokio::sync::Semaphore>) -> CollectSlots {
        CollectSlots(Some(slots))
    }

    /// Waits for a slot (on a blocking thread), at most until `deadline`;
    /// `Ok(None)` when there are no slots to wait for.
    pub fn acquire(
        &self,
        deadline: Option<std::time::Instant>,
    ) -> Result<Option<tokio::sync::OwnedSemaphorePermit>, RecorderError> {
        let Some(slots) = &self.0 else {
            return Ok(None);
        };
        let Some(deadline) = deadline else {
            return futures::executor::block_on(slots.clone().acquire_owned())
                .map(Some)
                .map_err(|_| RecorderError::NoSlot);
        };
        loop {
            match slots.clone().try_acquire_owned() {
                Ok(permit) => return Ok(Some(permit)),
                Err(tokio::sync::TryAcquireError::Closed) => return Err(RecorderError::NoSlot),
                Err(tokio::sync::TryAcquireError::NoPermits) => {}
            }
            if std::time::Instant::now() >= deadline {
                return Err(RecorderError::NoSlot);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

/// Reads a file the JVM wrote (a path as seen from the agent) and deletes it;
/// a file over `limit` bytes is deleted unread and reported.
pub fn take_file(path: &std::path::Path, limit: u64) -> Result<Vec<u8>, RecorderError> {
    // Opened inside the target's root without following links, owned by the
    // JVM, regular, size checked first (see `rootfs`).
    let err = |source: std::io::Error| RecorderError::Read {
        path: path.display().to_string(),
        source,
    };
    let (pid, inner) = crate::rootfs::split_proc_root(path)
        .ok_or_else(|| err(std::io::Error::other("not a path inside /proc/<pid>/root")))?;
    let uid = crate::rootfs::process_uid(pid).map_err(err)?;
    let taken = crate::rootfs::Root::of_process(pid).and_then(|r| r.take(&inner, &[uid], limit));
    match taken {
        Ok(bytes) => Ok(bytes),
        Err(crate::rootfs::RootFsError::TooLarge { size, limit, .. }) => {
            Err(RecorderError::TooLarge { size, limit })
        }
        // A link, a FIFO, a foreign owner: refused, and said so.
        Err(e) => Err(err(std::io::Error::other(e))),
    }
}
