//! Files inside a target's root filesystem, opened by root without being fooled.
//!
//! The agent runs as root and reaches a container's files through
//! `/proc/<pid>/root`. Everything in there belongs to the container: a symlink
//! at `/tmp/x.jfr` pointing at `/etc/shadow` (an absolute symlink followed
//! through `/proc/<pid>/root` resolves against the *agent's* root), a FIFO whose
//! `open` blocks, a device, a file planted by another user. So every path is
//! resolved with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS |
//! RESOLVE_NO_MAGICLINKS)` from a descriptor of the target's root (a walk with
//! `O_NOFOLLOW` on every component where openat2 is missing or filtered), the
//! last component is opened `O_PATH | O_NOFOLLOW` and checked with `fstat`
//! (type, owner, size) before it is reopened for I/O through `/proc/self/fd`,
//! so a FIFO or a device is never opened for reading at all. Files are created
//! `O_CREAT | O_EXCL | O_NOFOLLOW` and replaced with `renameat`, which never
//! follows a link; entries are removed with `unlinkat`.

use std::ffi::OsStr;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{FileStat, Mode, SFlag};

/// What a path is expected to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Socket,
}

impl Kind {
    fn of(stat: &FileStat) -> &'static str {
        match SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT {
            SFlag::S_IFREG => "regular file",
            SFlag::S_IFDIR => "directory",
            SFlag::S_IFSOCK => "socket",
            SFlag::S_IFIFO => "FIFO",
            SFlag::S_IFLNK => "symbolic link",
            SFlag::S_IFCHR => "character device",
            SFlag::S_IFBLK => "block device",
            _ => "special file",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::File => "regular file",
            Kind::Dir => "directory",
            Kind::Socket => "socket",
        }
    }

    fn matches(self, stat: &FileStat) -> bool {
        Kind::of(stat) == self.name()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RootFsError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: refused: a symbolic link, or a path leaving the target's root")]
    Symlink { path: String },
    #[error("{path}: refused: a {found}, expected a {expected}")]
    WrongKind {
        path: String,
        found: &'static str,
        expected: &'static str,
    },
    #[error("{path}: refused: owned by uid {uid}, expected one of {expected:?}")]
    WrongOwner {
        path: String,
        uid: u32,
        expected: Vec<u32>,
    },
    #[error("{path}: {size} bytes, over the {limit}-byte limit")]
    TooLarge { path: String, size: u64, limit: u64 },
    #[error("{path}: not a plain path inside the target's root")]
    BadPath { path: String },
}

impl RootFsError {
    /// The path (or one of its directories) does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, RootFsError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }

    fn io(path: &str, errno: Errno) -> RootFsError {
        match errno {
            // ELOOP: RESOLVE_NO_SYMLINKS or O_NOFOLLOW met a link; EXDEV: a
            // magic link or `..` out of the root.
            Errno::ELOOP | Errno::EXDEV => RootFsError::Symlink { path: path.into() },
            e => RootFsError::Io {
                path: path.into(),
                source: e.into(),
            },
        }
    }
}

type Result<T> = std::result::Result<T, RootFsError>;

/// A descriptor of a root directory: `/proc/<pid>/root` for a target.
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
    path: PathBuf,
    /// Resolve with the `O_NOFOLLOW` walk even where openat2 exists (tests).
    walk_only: bool,
}

impl Root {
    /// Opens `path` as a root. `/proc/<pid>/root` is a magic link to the
    /// target's root and following it is the point.
    pub fn open(path: impl Into<PathBuf>) -> Result<Root> {
        let path = path.into();
        let fd = nix::fcntl::open(
            &path,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| RootFsError::io(&path.display().to_string(), e))?;
        Ok(Root {
            fd,
            path,
            walk_only: false,
        })
    }

    /// Like [`Root::open`], resolving without openat2 as on kernels before 5.6.
    #[doc(hidden)]
    pub fn open_without_openat2(path: impl Into<PathBuf>) -> Result<Root> {
        Ok(Root {
            walk_only: true,
            ..Root::open(path)?
        })
    }

    /// The root filesystem of process `pid`.
    pub fn of_process(pid: u32) -> Result<Root> {
        Root::open(format!("/proc/{pid}/root"))
    }

    fn display(&self, rel: &str) -> String {
        format!("{}/{}", self.path.display(), rel.trim_start_matches('/'))
    }

    /// Opens the directory `rel` (absolute inside the root, or relative to it),
    /// which must be owned by one of `owners`.
    pub fn open_dir(&self, rel: &str, owners: &[u32]) -> Result<Dir> {
        let path = self.display(rel);
        let rel = rel.trim_start_matches('/');
        let rel = if rel.is_empty() { "." } else { rel };
        // O_PATH without O_DIRECTORY: a link at the end is opened as itself
        // and named as a link by `check`, not reported as "not a directory".
        let fd = resolve(&self.fd, self.walk_only, rel, OFlag::O_PATH, Mode::empty())
            .map_err(|e| RootFsError::io(&path, e))?;
        let stat = nix::sys::stat::fstat(&fd).map_err(|e| RootFsError::io(&path, e))?;
        check(&path, &stat, Kind::Dir, owners)?;
        Ok(Dir { fd, path, stat })
    }

    /// The parent directory of `rel` and its last component.
    fn split<'a>(&self, rel: &'a str, dir_owners: Option<&[u32]>) -> Result<(Dir, &'a str)> {
        let trimmed = rel.trim_start_matches('/');
        let (parent, name) = trimmed.rsplit_once('/').unwrap_or(("", trimmed));
        valid_name(name).ok_or_else(|| RootFsError::BadPath {
            path: self.display(rel),
        })?;
        let any = [];
        let dir = self.open_dir(parent, dir_owners.unwrap_or(&any))?;
        Ok((dir, name))
    }

    /// Reads the regular file `rel` owned by one of `owners` (any owner when
    /// `None`), at most `limit` bytes.
    pub fn read(&self, rel: &str, owners: Option<&[u32]>, limit: u64) -> Result<Vec<u8>> {
        let (dir, name) = self.split(rel, None)?;
        dir.read(name, owners, limit)
    }

    /// Reads the regular file `rel` (any owner), following links *inside* the
    /// root only: `RESOLVE_IN_ROOT` resolves an absolute link against the
    /// target's root and stops `..` at it. For files a container legitimately
    /// reaches through links (`/var/run` → `/run`, Kubernetes' projected
    /// service-account files); reading is all that is done with them. Refused
    /// where openat2 is missing (no safe equivalent).
    pub fn read_in_root(&self, rel: &str, limit: u64) -> Result<Vec<u8>> {
        let path = self.display(rel);
        let how = OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        let rel = rel.trim_start_matches('/');
        let mut opened = Err(Errno::ENOSYS);
        if !self.walk_only {
            for _ in 0..3 {
                opened = nix::fcntl::openat2(self.fd.as_fd(), rel, how);
                if !matches!(opened, Err(Errno::EAGAIN)) {
                    break;
                }
            }
        }
        let fd = opened.map_err(|e| RootFsError::io(&path, e))?;
        let stat = nix::sys::stat::fstat(&fd).map_err(|e| RootFsError::io(&path, e))?;
        check(&path, &stat, Kind::File, &[])?;
        let file = reopen(&fd, OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY)
            .map_err(|e| RootFsError::io(&path, e))?;
        read_bounded(
            &path,
            Opened {
                file: File::from(file),
                stat,
            },
            limit,
        )
    }

    /// Reads the regular file `rel` owned by one of `owners` and removes it.
    /// A file over `limit` is removed unread; a refused entry is left alone.
    pub fn take(&self, rel: &str, owners: &[u32], limit: u64) -> Result<Vec<u8>> {
        let (dir, name) = self.split(rel, None)?;
        dir.take(name, owners, limit)
    }
}

/// An open directory inside a target's root; every operation takes one plain
/// name (no `/`, `.` or `..`) and never follows a link.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: String,
    stat: FileStat,
}

/// A file checked and opened for reading, with its size.
#[derive(Debug)]
pub struct Opened {
    pub file: File,
    pub stat: FileStat,
}

impl Dir {
    /// The directory's owner.
    pub fn owner(&self) -> u32 {
        self.stat.st_uid
    }

    /// A path naming this directory for calls that take only paths
    /// (`connect(2)`): `/proc/self/fd/<n>`, valid while `self` lives.
    pub fn fd_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
    }

    fn display(&self, name: &str) -> String {
        format!("{}/{name}", self.path.trim_end_matches('/'))
    }

    fn name<'a>(&self, name: &'a str) -> Result<&'a str> {
        valid_name(name).ok_or_else(|| RootFsError::BadPath {
            path: self.display(name),
        })
    }

    /// The entry `name` itself (a link is not followed); `None` when absent.
    pub fn stat(&self, name: &str) -> Result<Option<FileStat>> {
        let name = self.name(name)?;
        match nix::sys::stat::fstatat(&self.fd, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(stat) => Ok(Some(stat)),
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(RootFsError::io(&self.display(name), e)),
        }
    }

    /// Checks the entry `name` is a `kind` owned by one of `owners` (any when empty).
    pub fn check(&self, name: &str, kind: Kind, owners: &[u32]) -> Result<Option<FileStat>> {
        let Some(stat) = self.stat(name)? else {
            return Ok(None);
        };
        check(&self.display(name), &stat, kind, owners)?;
        Ok(Some(stat))
    }

    /// Opens the regular file `name` for reading after checking its owner
    /// (any when `None`). Opened as `O_PATH` first, so a FIFO or a device is
    /// refused without being opened.
    pub fn open_file(&self, name: &str, owners: Option<&[u32]>) -> Result<Opened> {
        let name = self.name(name)?;
        let path = self.display(name);
        let fd = nix::fcntl::openat(
            &self.fd,
            name,
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| RootFsError::io(&path, e))?;
        let stat = nix::sys::stat::fstat(&fd).map_err(|e| RootFsError::io(&path, e))?;
        check(&path, &stat, Kind::File, owners.unwrap_or(&[]))?;
        // Reopening the checked inode itself: no window for a swap.
        let file = nix::fcntl::open(
            format!("/proc/self/fd/{}", fd.as_raw_fd()).as_str(),
            OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK | OFlag::O_NOCTTY,
            Mode::empty(),
        )
        .map_err(|e| RootFsError::io(&path, e))?;
        Ok(Opened {
            file: File::from(file),
            stat,
        })
    }

    /// Reads the regular file `name`, at most `limit` bytes (a file that grows
    /// past `limit` while read is refused too).
    pub fn read(&self, name: &str, owners: Option<&[u32]>, limit: u64) -> Result<Vec<u8>> {
        let opened = self.open_file(name, owners)?;
        read_bounded(&self.display(name), opened, limit)
    }

    /// Reads the regular file `name` and removes it. A file over `limit` is
    /// removed unread; a refused entry (link, FIFO, foreign owner) stays.
    pub fn take(&self, name: &str, owners: &[u32], limit: u64) -> Result<Vec<u8>> {
        let opened = self.open_file(name, Some(owners))?;
        let (dev, ino) = (opened.stat.st_dev, opened.stat.st_ino);
        let result = read_bounded(&self.display(name), opened, limit);
        // Remove only the inode we read, not something swapped in meanwhile.
        if self
            .stat(name)
            .ok()
            .flatten()
            .is_some_and(|s| s.st_dev == dev && s.st_ino == ino)
        {
            let _ = self.remove(name);
        }
        result
    }

    /// Creates the new file `name` (never through a link, never an existing
    /// entry) with `mode`, open for writing.
    pub fn create_new(&self, name: &str, mode: u32) -> Result<File> {
        let name = self.name(name)?;
        let fd = nix::fcntl::openat(
            &self.fd,
            name,
            OFlag::O_WRONLY
                | OFlag::O_CREAT
                | OFlag::O_EXCL
                | OFlag::O_NOFOLLOW
                | OFlag::O_CLOEXEC
                | OFlag::O_NONBLOCK,
            Mode::from_bits_truncate(mode),
        )
        .map_err(|e| RootFsError::io(&self.display(name), e))?;
        // The umask applied to `mode` at creation; set it exactly.
        nix::sys::stat::fchmod(&fd, Mode::from_bits_truncate(mode))
            .map_err(|e| RootFsError::io(&self.display(name), e))?;
        Ok(File::from(fd))
    }

    /// Writes `bytes` to `name` atomically: a new file under a private name,
    /// then `renameat` over `name` (which replaces the entry, never follows it).
    pub fn write_replace(&self, name: &str, bytes: &[u8], mode: u32) -> Result<()> {
        use std::io::Write;
        let name = self.name(name)?;
        let partial = format!(".{name}.{}.partial", std::process::id());
        // A leftover from a crashed run of this very process id.
        let _ = self.remove_if(&partial, Kind::File, &[nix::unistd::geteuid().as_raw()]);
        let mut file = self.create_new(&partial, mode)?;
        let written = file
            .write_all(bytes)
            .map_err(|source| RootFsError::Io {
                path: self.display(&partial),
                source,
            })
            .and_then(|()| self.rename(&partial, name));
        if written.is_err() {
            let _ = self.remove(&partial);
        }
        written
    }

    /// Renames the entry `from` to `to` inside this directory.
    pub fn rename(&self, from: &str, to: &str) -> Result<()> {
        let (from, to) = (self.name(from)?, self.name(to)?);
        nix::fcntl::renameat(&self.fd, from, &self.fd, to)
            .map_err(|e| RootFsError::io(&self.display(to), e))
    }

    /// Removes the entry `name` (a link itself, never its target); `false` when absent.
    pub fn remove(&self, name: &str) -> Result<bool> {
        let name = self.name(name)?;
        match nix::unistd::unlinkat(&self.fd, name, nix::unistd::UnlinkatFlags::NoRemoveDir) {
            Ok(()) => Ok(true),
            Err(Errno::ENOENT) => Ok(false),
            Err(e) => Err(RootFsError::io(&self.display(name), e)),
        }
    }

    /// Removes `name` only if it is a `kind` owned by one of `owners`.
    pub fn remove_if(&self, name: &str, kind: Kind, owners: &[u32]) -> Result<bool> {
        match self.check(name, kind, owners)? {
            Some(_) => self.remove(name),
            None => Ok(false),
        }
    }

    /// Creates the directory `name` (fine if it exists) and opens it, checking
    /// it is a directory owned by one of `owners`.
    pub fn make_dir(&self, name: &str, mode: u32, owners: &[u32]) -> Result<Dir> {
        let name = self.name(name)?;
        let path = self.display(name);
        match nix::sys::stat::mkdirat(&self.fd, name, Mode::from_bits_truncate(mode)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(RootFsError::io(&path, e)),
        }
        // O_PATH: a link is opened as itself and refused by `check`.
        let fd = nix::fcntl::openat(
            &self.fd,
            name,
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| RootFsError::io(&path, e))?;
        let stat = nix::sys::stat::fstat(&fd).map_err(|e| RootFsError::io(&path, e))?;
        check(&path, &stat, Kind::Dir, owners)?;
        // The checked inode itself, opened for real (fchmod needs more than O_PATH).
        let fd = nix::fcntl::open(
            format!("/proc/self/fd/{}", fd.as_raw_fd()).as_str(),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| RootFsError::io(&path, e))?;
        Ok(Dir { fd, path, stat })
    }

    /// Sets this directory's mode (`mkdir` applies the umask).
    pub fn set_mode(&self, mode: u32) -> Result<()> {
        nix::sys::stat::fchmod(&self.fd, Mode::from_bits_truncate(mode))
            .map_err(|e| RootFsError::io(&self.path, e))
    }
}

/// Opens the inode behind an `O_PATH` descriptor for real, through
/// `/proc/self/fd`: the very inode checked, with no second path lookup.
fn reopen(fd: &OwnedFd, flags: OFlag) -> nix::Result<OwnedFd> {
    nix::fcntl::open(
        format!("/proc/self/fd/{}", fd.as_raw_fd()).as_str(),
        flags | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// Splits `/proc/<pid>/root/<rest>` into the pid and `/<rest>`.
pub fn split_proc_root(path: &Path) -> Option<(u32, String)> {
    let rest = path.to_str()?.strip_prefix("/proc/")?;
    let (pid, rest) = rest.split_once('/')?;
    let rest = rest.strip_prefix("root")?;
    (rest.is_empty() || rest.starts_with('/')).then_some(())?;
    Some((
        pid.parse().ok()?,
        format!("/{}", rest.trim_start_matches('/')),
    ))
}

/// The filesystem uid of process `pid` (owner of the files it creates), from
/// `Uid:` in /proc/<pid>/status (real, effective, saved, filesystem).
pub fn process_uid(pid: u32) -> std::io::Result<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(3)?.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no Uid: line for process {pid}")))
}

fn valid_name(name: &str) -> Option<&str> {
    (!name.is_empty() && name != "." && name != ".." && !name.contains('/') && !name.contains('\0'))
        .then_some(name)
}

fn check(path: &str, stat: &FileStat, kind: Kind, owners: &[u32]) -> Result<()> {
    if Kind::of(stat) == "symbolic link" {
        return Err(RootFsError::Symlink { path: path.into() });
    }
    if !kind.matches(stat) {
        return Err(RootFsError::WrongKind {
            path: path.into(),
            found: Kind::of(stat),
            expected: kind.name(),
        });
    }
    if !owners.is_empty() && !owners.contains(&stat.st_uid) {
        return Err(RootFsError::WrongOwner {
            path: path.into(),
            uid: stat.st_uid,
            expected: owners.to_vec(),
        });
    }
    Ok(())
}

fn read_bounded(path: &str, opened: Opened, limit: u64) -> Result<Vec<u8>> {
    let size = u64::try_from(opened.stat.st_size).unwrap_or(0);
    if size > limit {
        return Err(RootFsError::TooLarge {
            path: path.into(),
            size,
            limit,
        });
    }
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    opened
        .file
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|source| RootFsError::Io {
            path: path.into(),
            source,
        })?;
    let read = bytes.len() as u64;
    if read > limit {
        return Err(RootFsError::TooLarge {
            path: path.into(),
            size: read,
            limit,
        });
    }
    Ok(bytes)
}

/// Opens `rel` beneath `root` as if `root` were `/`, following no link.
fn resolve(
    root: &OwnedFd,
    walk_only: bool,
    rel: &str,
    flags: OFlag,
    mode: Mode,
) -> nix::Result<OwnedFd> {
    let mut flags = flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    // openat2 refuses O_PATH with any flag but these; O_PATH opens nothing anyway.
    if !flags.contains(OFlag::O_PATH) {
        flags |= OFlag::O_NONBLOCK;
    }
    if !walk_only {
        let how = OpenHow::new().flags(flags).mode(mode).resolve(
            ResolveFlag::RESOLVE_IN_ROOT
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_MAGICLINKS,
        );
        for _ in 0..3 {
            match nix::fcntl::openat2(root.as_fd(), rel, how) {
                // A concurrent rename anywhere on the system can make
                // RESOLVE_IN_ROOT ask for a retry.
                Err(Errno::EAGAIN) => continue,
                // Kernels before 5.6, or a seccomp filter that denies it.
                Err(Errno::ENOSYS | Errno::EPERM) => break,
                other => return other,
            }
        }
    }
    walk(root, rel, flags, mode)
}

/// openat2's guarantees without it: one component at a time, `O_NOFOLLOW`
/// on each, `..` refused.
fn walk(root: &OwnedFd, rel: &str, flags: OFlag, mode: Mode) -> nix::Result<OwnedFd> {
    let parts: Vec<&OsStr> = Path::new(rel)
        .components()
        .filter_map(|c| match c {
            std::path::Component::Normal(p) => Some(Ok(p)),
            std::path::Component::ParentDir => Some(Err(Errno::EXDEV)),
            _ => None,
        })
        .collect::<nix::Result<_>>()?;
    let dir_flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let Some((last, dirs)) = parts.split_last() else {
        return nix::fcntl::openat(root, ".", flags, mode);
    };
    let mut current: Option<OwnedFd> = None;
    for part in dirs {
        let at = current.as_ref().unwrap_or(root);
        let fd = nix::fcntl::openat(at, part.as_bytes(), dir_flags, Mode::empty())?;
        match SFlag::from_bits_truncate(nix::sys::stat::fstat(&fd)?.st_mode) & SFlag::S_IFMT {
            SFlag::S_IFDIR => current = Some(fd),
            SFlag::S_IFLNK => return Err(Errno::ELOOP),
            _ => return Err(Errno::ENOTDIR),
        }
    }
    nix::fcntl::openat(
        current.as_ref().unwrap_or(root),
        last.as_bytes(),
        flags,
        mode,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_root_paths_split_into_pid_and_inner_path() {
        assert_eq!(
            split_proc_root(Path::new("/proc/42/root/tmp/x.jfr")),
            Some((42, "/tmp/x.jfr".into()))
        );
        assert_eq!(
            split_proc_root(Path::new("/proc/42/root")),
            Some((42, "/".into()))
        );
        assert_eq!(split_proc_root(Path::new("/proc/42/rootx/a")), None);
        assert_eq!(split_proc_root(Path::new("/tmp/x.jfr")), None);
        assert_eq!(split_proc_root(Path::new("/proc/self/root/a")), None);
    }

    #[test]
    fn names_are_single_plain_components() {
        assert!(valid_name("a.jfr").is_some());
        for bad in ["", ".", "..", "a/b", "a\0b"] {
            assert!(valid_name(bad).is_none(), "{bad:?}");
        }
    }
}
