//! The HotSpot dynamic attach protocol, spoken directly (no jattach, no JDK tools
//! on the node).
//!
//! Handshake: connect to `<target root>/tmp/.java_pid<nspid>`; if the socket is
//! not there, create `.attach_pid<nspid>` in the target's cwd (else its tmp),
//! send SIGQUIT (only when the process catches it: SIGQUIT's default action
//! kills a non-JVM), and poll for the socket with a deadline. A socket that is
//! there but refuses connections is stale (a previous JVM with the same nspid
//! in a reused /tmp, or a listener that died): it is removed, whoever owns it
//! (another user's dead socket would block the JVM's own listener for good),
//! and the handshake starts over ([`stale_sockets_recovered`]).
//!
//! Host safety: the target's /tmp is opened through [`crate::rootfs`] (no link
//! followed, owned by root or the JVM's user); a socket used must be a socket
//! owned by the JVM's user, is reached through that directory's descriptor, and the
//! peer's credentials (`SO_PEERCRED`) must name the target process itself, so a
//! link swapped in at the last moment cannot point the agent at another
//! process. Connect, request and the whole reply share one deadline
//! ([`AttachTarget::timeout`]): a peer that accepts and then trickles or never
//! answers cannot hold the agent longer.
//!
//! Requests use v1 framing (`1\0<cmd>\0<arg0>\0<arg1>\0<arg2>\0`), which every
//! HotSpot since JDK 6 accepts (JDK 25 included). The reply is a status line and
//! free text; a `0` status can still carry a failure (`jcmd` errors, JDK 21+ `load`),
//! so callers check the text too ([`Reply::expect`]).
//!
//! Everything here is blocking and runs on a blocking thread: no setns/seteuid,
//! which would affect every thread of the agent. `/proc/<pid>/root` paths reach
//! into the target's mount namespace as root.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;

use crate::rootfs::{Dir, Kind, Root, RootFsError};

/// Stale `.java_pid` sockets removed since the agent started.
static STALE_SOCKETS_RECOVERED: AtomicU64 = AtomicU64::new(0);

/// How many stale attach sockets this process removed and recovered from.
pub fn stale_sockets_recovered() -> u64 {
    STALE_SOCKETS_RECOVERED.load(Ordering::Relaxed)
}

/// Longest command name the JVM accepts.
const MAX_COMMAND_LEN: usize = 16;
/// Longest argument the JVM accepts (`AttachOperation::arg_length_max`).
const MAX_ARG_LEN: usize = 1024;
/// v1 requests carry exactly three arguments.
const ARG_COUNT: usize = 3;
/// Replies larger than this are cut: the agent never needs more, and a target must not make it allocate without bound.
const MAX_REPLY_BYTES: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("attach is disabled in the target (-XX:+DisableAttachMechanism)")]
    Disabled,
    #[error(
        "process {0} does not catch SIGQUIT; not signalling it (not a HotSpot JVM, or started with -Xrs before its listener came up)"
    )]
    NoSigQuitHandler(u32),
    #[error("the attach listener of process {pid} did not appear within {waited:?}")]
    ListenerTimeout { pid: u32, waited: Duration },
    #[error(
        "attach to process {pid} did not complete within {waited:?} (connect, request and reply)"
    )]
    Timeout { pid: u32, waited: Duration },
    #[error("the attach socket of process {pid} is served by process {peer}; not talking to it")]
    WrongPeer { pid: u32, peer: i32 },
    #[error("attach files of process {pid}: {source}")]
    Files {
        pid: u32,
        #[source]
        source: RootFsError,
    },
    #[error("request too large: {0}")]
    RequestTooLarge(String),
    #[error("the JVM answered status {status}: {message}")]
    Failed { status: i32, message: String },
    #[error("unexpected reply: {0:?}")]
    Malformed(String),
    #[error("attach I/O on process {pid}: {source}")]
    Io {
        pid: u32,
        #[source]
        source: std::io::Error,
    },
}

/// A JVM reachable through `/proc/<pid>/root`.
#[derive(Debug, Clone)]
pub struct AttachTarget {
    /// pid in the agent's (host) pid namespace.
    pub pid: u32,
    /// pid inside the target's own pid namespace (names the socket).
    pub nspid: u32,
    /// One deadline for a whole operation: connect (including starting the
    /// listener, itself at most 10 s), request and the whole reply.
    pub timeout: Duration,
}

/// A parsed reply: the status code and the text after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: i32,
    pub text: String,
}

impl Reply {
    /// Succeeds only if the status is 0 and the text contains `marker`: DCmds report
    /// many failures with status 0 and an explanation.
    pub fn expect(self, marker: &str) -> Result<Reply, AttachError> {
        if self.status == 0 && self.text.contains(marker) {
            Ok(self)
        } else {
            Err(AttachError::Failed {
                status: self.status,
                message: self.text.trim().to_string(),
            })
        }
    }
}

/// Encodes a v1 request, checking the JVM's limits first.
pub fn encode_request(command: &str, args: &[&str]) -> Result<Vec<u8>, AttachError> {
    if command.is_empty() || command.len() > MAX_COMMAND_LEN || command.contains('\0') {
        return Err(AttachError::RequestTooLarge(format!("command {command:?}")));
    }
    if args.len() > ARG_COUNT {
        return Err(AttachError::RequestTooLarge(format!(
            "{} arguments (v1 allows {ARG_COUNT})",
            args.len()
        )));
    }
    if let Some(arg) = args
        .iter()
        .find(|a| a.len() > MAX_ARG_LEN || a.contains('\0'))
    {
        return Err(AttachError::RequestTooLarge(format!(
            "argument of {} bytes (limit {MAX_ARG_LEN}, no NUL): {:.60}…",
            arg.len(),
            arg
        )));
    }
    let mut out =
        Vec::with_capacity(8 + command.len() + args.iter().map(|a| a.len() + 1).sum::<usize>());
    out.extend_from_slice(b"1\0");
    out.extend_from_slice(command.as_bytes());
    out.push(0);
    for i in 0..ARG_COUNT {
        out.extend_from_slice(args.get(i).copied().unwrap_or("").as_bytes());
        out.push(0);
    }
    Ok(out)
}

/// Parses `"<status>\n<text>"`. A non-zero status is an error carrying the text.
pub fn parse_reply(raw: &[u8]) -> Result<Reply, AttachError> {
    let text = String::from_utf8_lossy(raw);
    let (first, rest) = text.split_once('\n').unwrap_or((&text, ""));
    let status: i32 = first
        .trim()
        .parse()
        .map_err(|_| AttachError::Malformed(text.chars().take(200).collect()))?;
    if status != 0 {
        return Err(AttachError::Failed {
            status,
            message: rest.trim().to_string(),
        });
    }
    Ok(Reply {
        status,
        text: rest.to_string(),
    })
}

impl AttachTarget {
    /// The target for a host pid, reading its namespace pid from /proc.
    pub fn for_pid(pid: u32, timeout: Duration) -> std::io::Result<AttachTarget> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let nspid = crate::discovery::parse_nspid(&status).unwrap_or(pid);
        Ok(AttachTarget {
            pid,
            nspid,
            timeout,
        })
    }

    fn proc_path(&self, rest: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/{rest}", self.pid))
    }

    /// An absolute path inside the target's filesystem, seen from the agent.
    pub fn in_target(&self, path: &str) -> PathBuf {
        self.proc_path("root").join(path.trim_start_matches('/'))
    }

    /// The target's `/tmp`, seen from the agent.
    pub fn tmp_dir(&self) -> PathBuf {
        self.proc_path("root/tmp")
    }

    fn socket_name(&self) -> String {
        format!(".java_pid{}", self.nspid)
    }

    fn io(&self) -> impl Fn(std::io::Error) -> AttachError + '_ {
        move |source| AttachError::Io {
            pid: self.pid,
            source,
        }
    }

    fn files(&self) -> impl Fn(RootFsError) -> AttachError + '_ {
        move |source| AttachError::Files {
            pid: self.pid,
            source,
        }
    }

    /// Runs one diagnostic command line (`jcmd` operation), e.g. `JFR.check`.
    pub fn jcmd(&self, line: &str) -> Result<Reply, AttachError> {
        self.execute("jcmd", &[line])
    }

    /// Sends one request and reads the whole reply. The JVM serves one
    /// operation at a time; callers serialize per target.
    pub fn execute(&self, command: &str, args: &[&str]) -> Result<Reply, AttachError> {
        let request = encode_request(command, args)?;
        // One deadline for the whole operation: connecting (and starting the
        // listener) and the reply share `timeout`, so a recorder operation's
        // worst case is known (the agent's shutdown arithmetic counts on it).
        let deadline = Instant::now() + self.timeout;
        let uid = crate::rootfs::process_uid(self.pid).map_err(self.io())?;
        // The target's /tmp: root's (the usual sticky /tmp) or the JVM user's.
        let tmp = Root::of_process(self.pid)
            .and_then(|root| root.open_dir("/tmp", &[0, uid]))
            .map_err(self.files())?;
        let mut stream = match self.connect_existing(&tmp, uid, deadline)? {
            Some(stream) => stream,
            None => {
                self.start_listener(&tmp, uid, deadline)?;
                self.connect(&tmp, deadline)?.ok_or_else(|| {
                    self.io()(std::io::Error::new(
                        std::io::ErrorKind::ConnectionRefused,
                        "the attach listener refused the connection right after starting",
                    ))
                })?
            }
        };
        self.exchange(&mut stream, &request, deadline)
    }

    /// Connects to a listener already there. `None` when there is none, or
    /// there was a stale socket (now removed).
    fn connect_existing(
        &self,
        tmp: &Dir,
        uid: u32,
        deadline: Instant,
    ) -> Result<Option<UnixStream>, AttachError> {
        let name = self.socket_name();
        // Any owner here: a dead socket of another user must be seen to be removed.
        let Some(stat) = tmp.check(&name, Kind::Socket, &[]).map_err(self.files())? else {
            return Ok(None);
        };
        // Connecting sends nothing: `connect` checks the peer is the target first.
        if let Some(stream) = self.connect(tmp, deadline)? {
            if stat.st_uid == uid {
                return Ok(Some(stream));
            }
            // Alive, but not the JVM's user's: never used, refused as found
            // (unless it was replaced by the JVM's own meanwhile: start over).
            drop(stream);
            tmp.check(&name, Kind::Socket, &[uid])
                .map_err(self.files())?;
            return Ok(None);
        }
        // Refused: nobody listens on it. Removed whoever owns it: HotSpot binds
        // `<socket>.tmp` and renames it over this path, which a sticky /tmp
        // refuses across users, so another user's dead socket (a root JVM
        // killed earlier at this pid) would keep the JVM unattachable for good.
        // Only that same entry goes: a socket, by that owner, no link followed.
        if tmp
            .remove_if(&name, Kind::Socket, &[stat.st_uid])
            .map_err(self.files())?
        {
            STALE_SOCKETS_RECOVERED.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                pid = self.pid,
                socket = %name,
                owner = stat.st_uid,
                "removed a stale attach socket (nothing listening); starting the attach listener"
            );
        }
        Ok(None)
    }

    /// Connects to the socket before `deadline`; `None` when refused.
    /// Non-blocking, retried while the listener's backlog is full, and the peer
    /// must be the target process.
    fn connect(&self, tmp: &Dir, deadline: Instant) -> Result<Option<UnixStream>, AttachError> {
        use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, sockopt};
        use std::os::fd::AsRawFd;
        let errno = |e: Errno| self.io()(e.into());
        let fd = nix::sys::socket::socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )
        .map_err(errno)?;
        // Through the checked directory's descriptor, not a path that could be re-resolved.
        let addr = UnixAddr::new(&tmp.fd_path().join(self.socket_name())).map_err(errno)?;
        let mut pause = Duration::from_millis(5);
        loop {
            match nix::sys::socket::connect(fd.as_raw_fd(), &addr) {
                Ok(()) => break,
                Err(Errno::ECONNREFUSED) => return Ok(None),
                // Backlog full (unix sockets never answer EINPROGRESS), or a signal.
                Err(Errno::EAGAIN | Errno::EINTR) => {}
                Err(e) => return Err(errno(e)),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(self.timed_out());
            }
            std::thread::sleep(pause.min(left));
            pause = (pause * 2).min(Duration::from_millis(100));
        }
        let peer = nix::sys::socket::getsockopt(&fd, sockopt::PeerCredentials).map_err(errno)?;
        if u32::try_from(peer.pid()).ok() != Some(self.pid) {
            return Err(AttachError::WrongPeer {
                pid: self.pid,
                peer: peer.pid(),
            });
        }
        let stream = UnixStream::from(fd);
        stream.set_nonblocking(false).map_err(self.io())?;
        Ok(Some(stream))
    }

    fn timed_out(&self) -> AttachError {
        AttachError::Timeout {
            pid: self.pid,
            waited: self.timeout,
        }
    }

    /// Writes the request and reads the reply to its end, all before `deadline`.
    fn exchange(
        &self,
        stream: &mut UnixStream,
        request: &[u8],
        deadline: Instant,
    ) -> Result<Reply, AttachError> {
        let left = || {
            let left = deadline.saturating_duration_since(Instant::now());
            (!left.is_zero()).then_some(left)
        };
        let timed_out = |e: &std::io::Error| {
            matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            )
        };
        let mut written = 0;
        while written < request.len() {
            let remaining = left().ok_or_else(|| self.timed_out())?;
            stream
                .set_write_timeout(Some(remaining))
                .map_err(self.io())?;
            match stream.write(&request[written..]) {
                Ok(0) => return Err(self.io()(std::io::ErrorKind::WriteZero.into())),
                Ok(n) => written += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if timed_out(&e) => return Err(self.timed_out()),
                Err(e) => return Err(self.io()(e)),
            }
        }
        let mut raw = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            // Every read gets only what is left of the one deadline.
            let remaining = left().ok_or_else(|| self.timed_out())?;
            stream
                .set_read_timeout(Some(remaining))
                .map_err(self.io())?;
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let room = (MAX_REPLY_BYTES as usize).saturating_sub(raw.len());
                    raw.extend_from_slice(&buf[..n.min(room)]);
                    if raw.len() >= MAX_REPLY_BYTES as usize {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if timed_out(&e) => return Err(self.timed_out()),
                Err(e) => return Err(self.io()(e)),
            }
        }
        parse_reply(&raw)
    }

    fn listener_ready(&self, tmp: &Dir, uid: u32) -> bool {
        tmp.check(&self.socket_name(), Kind::Socket, &[uid])
            .is_ok_and(|s| s.is_some())
    }

    /// Starts the JVM's attach listener: trigger file, SIGQUIT, wait for the socket.
    fn start_listener(&self, tmp: &Dir, uid: u32, deadline: Instant) -> Result<(), AttachError> {
        if !catches_sigquit(self.pid).map_err(self.io())? {
            return Err(AttachError::NoSigQuitHandler(self.pid));
        }
        let (dir, name) = self.create_trigger(tmp, uid)?;
        let result = self.signal_and_wait(tmp, uid, deadline);
        let _ = dir.as_ref().unwrap_or(tmp).remove(&name);
        result
    }

    /// Creates `.attach_pid<nspid>` in the target's cwd, else in its tmp (the
    /// JVM looks in both and accepts a trigger owned by root). Created
    /// `O_EXCL | O_NOFOLLOW`; a leftover regular file of root's or the JVM
    /// user's is replaced, anything else at that name is left alone.
    /// Returns the cwd directory when the trigger went there (`None`: tmp).
    fn create_trigger(&self, tmp: &Dir, uid: u32) -> Result<(Option<Dir>, String), AttachError> {
        let name = format!(".attach_pid{}", self.nspid);
        let create = |dir: &Dir| -> Result<(), RootFsError> {
            if dir.create_new(&name, 0o600).is_ok() {
                return Ok(());
            }
            dir.remove_if(&name, Kind::File, &[0, uid])?;
            dir.create_new(&name, 0o600).map(drop)
        };
        // /proc/<pid>/cwd is a magic link to the JVM's working directory: following it is the point.
        if let Ok(cwd) = Root::open(self.proc_path("cwd")).and_then(|r| r.open_dir(".", &[]))
            && create(&cwd).is_ok()
        {
            return Ok((Some(cwd), name));
        }
        create(tmp).map_err(self.files())?;
        Ok((None, name))
    }

    fn signal_and_wait(&self, tmp: &Dir, uid: u32, until: Instant) -> Result<(), AttachError> {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.pid).unwrap_or(i32::MAX));
        let send = || nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGQUIT);
        send().map_err(|e| self.io()(e.into()))?;
        let start = Instant::now();
        let deadline = self
            .timeout
            .min(Duration::from_secs(10))
            .min(until.saturating_duration_since(start));
        let mut step = Duration::from_millis(20);
        let mut resent = false;
        while start.elapsed() < deadline {
            std::thread::sleep(step);
            if self.listener_ready(tmp, uid) {
                return Ok(());
            }
            // The process may have exited meanwhile.
            nix::sys::signal::kill(pid, None).map_err(|e| self.io()(e.into()))?;
            // Like JDK 24+'s client, signal once more halfway: the first signal can
            // race with the JVM installing its handler.
            if !resent && start.elapsed() > deadline / 2 {
                resent = true;
                send().map_err(|e| self.io()(e.into()))?;
            }
            step = (step + Duration::from_millis(20)).min(Duration::from_millis(200));
        }
        Err(AttachError::ListenerTimeout {
            pid: self.pid,
            waited: deadline,
        })
    }
}

/// Whether `SigCgt` in /proc/<pid>/status has SIGQUIT (signal 3, bit 2) set.
pub fn catches_sigquit(pid: u32) -> std::io::Result<bool> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    Ok(parse_sigcgt(&status).is_some_and(|mask| mask & (1 << 2) != 0))
}

fn parse_sigcgt(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_framing_pads_to_three_arguments() {
        let bytes = encode_request("jcmd", &["JFR.check"]).expect("valid");
        assert_eq!(bytes, b"1\0jcmd\0JFR.check\0\0\0");
        let bytes = encode_request("load", &["/tmp/lib.so", "true", "start"]).expect("valid");
        assert_eq!(bytes, b"1\0load\0/tmp/lib.so\0true\0start\0");
    }

    #[test]
    fn framing_enforces_the_jvm_limits() {
        assert!(encode_request("", &[]).is_err());
        assert!(encode_request("a_command_longer_than_16", &[]).is_err());
        assert!(encode_request("jcmd", &["a", "b", "c", "d"]).is_err());
        assert!(encode_request("jcmd", &[&"x".repeat(1025)]).is_err());
        assert!(encode_request("jcmd", &[&"x".repeat(1024)]).is_ok());
        assert!(encode_request("jcmd", &["a\0b"]).is_err());
    }

    #[test]
    fn replies_are_parsed_by_status_and_text() {
        let ok = parse_reply(b"0\nStarted recording 1.\n").expect("status 0");
        assert_eq!(ok.status, 0);
        assert!(ok.clone().expect("Started recording").is_ok());
        // Status 0 but the DCmd failed: the text decides.
        let failed = parse_reply(b"0\nCould not stop recording \"nope\".\n").expect("status 0");
        let err = failed
            .expect("Stopped recording")
            .expect_err("text says failure");
        assert!(
            err.to_string().contains("Could not stop recording"),
            "{err}"
        );
        match parse_reply(b"-1\njava.lang.IllegalArgumentException: Unknown diagnostic command\n") {
            Err(AttachError::Failed {
                status: -1,
                message,
            }) => assert!(message.contains("Unknown diagnostic")),
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            parse_reply(b"101\n"),
            Err(AttachError::Failed { status: 101, .. })
        ));
        assert!(matches!(parse_reply(b""), Err(AttachError::Malformed(_))));
        assert!(matches!(
            parse_reply(b"garbage"),
            Err(AttachError::Malformed(_))
        ));
    }

    #[test]
    fn sigcgt_bit_for_sigquit() {
        let status = "Name:\tjava\nSigBlk:\t0000000000000000\nSigCgt:\t2000000181005ccf\n";
        assert_eq!(parse_sigcgt(status), Some(0x2000000181005ccf));
        assert!(parse_sigcgt(status).is_some_and(|m| m & 4 != 0));
        assert_eq!(
            parse_sigcgt("Name:\tsleep\nSigCgt:\t0000000000000000\n"),
            Some(0)
        );
        assert_eq!(parse_sigcgt("Name:\tx\n"), None);
    }
}
