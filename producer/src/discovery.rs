//! Finds HotSpot JVMs in /proc and resolves who they are.
//!
//! A process is a HotSpot JVM when its maps contain `libjvm.so` and not OpenJ9's
//! `libj9vm`. Processes younger than `min_age` are left alone: a JVM that is
//! still starting may not have its signal handlers installed yet.
//!
//! Service name: see [`JvmProcess::resolve_service`]; the pod label and the
//! container name come from [`crate::kubernetes`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::kubernetes::PodIdentity;

/// One discovered JVM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JvmProcess {
    pub pid: u32,
    pub nspid: u32,
    /// Process start, ms since the epoch.
    pub start_ms: i64,
    /// The process's identity across pid reuse, `<boot id>:<start ticks>`:
    /// exact, unlike `start_ms` (which moves with the wall clock's `btime`
    /// between two readers).
    pub start_id: String,
    pub service: String,
    /// `JAVELIN_SERVICE` from the process environment.
    pub explicit_service: Option<String>,
    /// Main class or jar name from the command line.
    pub main_name: Option<String>,
    /// The application's version (see [`JvmProcess::resolve_app_version`]).
    pub app_version: String,
    /// `JAVELIN_APP_VERSION` from the process environment.
    pub explicit_app_version: Option<String>,
    /// `service.version` from the process's `OTEL_RESOURCE_ATTRIBUTES`.
    pub otel_service_version: Option<String>,
    /// Started with `-XX:+DisableAttachMechanism` (from any option source, see
    /// [`crate::jvm_options`]): never attach, never signal.
    pub attach_disabled: bool,
    /// A profiler library someone else loaded into the JVM (path from its maps).
    pub foreign_profiler: Option<ForeignProfiler>,
    /// Kubernetes placement, where the process runs in a pod.
    pub pod: PodIdentity,
}

impl JvmProcess {
    /// Applies the service-name chain, first match wins: `JAVELIN_SERVICE` →
    /// the pod's `app.kubernetes.io/name` label (when looked up) → container name
    /// → main class or jar name → `java-<pid>`.
    pub fn resolve_service(&mut self, pod_label: Option<&str>) {
        let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_string());
        self.service = self
            .explicit_service
            .clone()
            .or_else(|| pod_label.and_then(non_empty))
            .or_else(|| non_empty(&self.pod.container))
            .or_else(|| self.main_name.clone())
            .unwrap_or_else(|| format!("java-{}", self.pid));
    }

    /// Applies the version chain, first match wins: `JAVELIN_APP_VERSION` →
    /// the pod's `app.kubernetes.io/version` label (when looked up) →
    /// `service.version` in `OTEL_RESOURCE_ATTRIBUTES` → none (empty).
    pub fn resolve_app_version(&mut self, pod_label: Option<&str>) {
        self.app_version = self
            .explicit_app_version
            .clone()
            .or_else(|| pod_label.and_then(app_version_value))
            .or_else(|| self.otel_service_version.clone())
            .unwrap_or_default();
    }
}

/// Longest application version kept (a label, not a payload).
const MAX_APP_VERSION: usize = 128;

/// A version from the environment: trimmed, non-empty, at most
/// [`MAX_APP_VERSION`] bytes (cut at a character boundary).
fn app_version_value(raw: &str) -> Option<String> {
    let v = raw.trim();
    if v.is_empty() {
        return None;
    }
    let mut end = v.len().min(MAX_APP_VERSION);
    while !v.is_char_boundary(end) {
        end -= 1;
    }
    Some(v[..end].to_string())
}

/// `service.version` from an `OTEL_RESOURCE_ATTRIBUTES` value
/// (`key=value,key=value`, values percent-encoded by the spec; a version
/// rarely needs it, and an undecodable one is taken as written).
fn otel_service_version(environ: &[String]) -> Option<String> {
    let attrs = environ
        .iter()
        .find_map(|kv| kv.strip_prefix("OTEL_RESOURCE_ATTRIBUTES="))?;
    attrs
        .split(',')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| k.trim() == "service.version")
        .and_then(|(_, v)| app_version_value(&percent_decoded(v.trim())))
}

/// `%XX` sequences decoded; anything malformed kept as is.
fn percent_decoded(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|_| s.to_string())
}

/// A native profiler found in a JVM's memory maps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForeignProfiler {
    /// An async-profiler not loaded by this agent: two in one JVM overwrite each
    /// other's hooks, so the JVM is left alone (`external_conflict`).
    AsyncProfiler(String),
    /// Another vendor's native profiling agent (`unknown_profiler`).
    Other(String),
}

/// Native profiler libraries known to conflict with, or be surprised by, a second profiler.
const OTHER_PROFILERS: &[&str] = &[
    "libyjpagent",
    "libjprofilerti",
    "libjavaProfiler",
    "libddprof",
    "libasyncProfiler-pyroscope",
];

/// The first foreign profiler library mapped into the process: an async-profiler
/// mapped from anywhere but the agent's own path inside the target
/// ([`crate::recorder::async_profiler::TARGET_LIBRARY`]), or another vendor's agent.
fn foreign_profiler(maps: &str) -> Option<ForeignProfiler> {
    let path_of = |line: &str| line.split_whitespace().nth(5).unwrap_or(line).to_string();
    if let Some(line) = maps
        .lines()
        .find(|l| OTHER_PROFILERS.iter().any(|p| l.contains(p)))
    {
        return Some(ForeignProfiler::Other(path_of(line)));
    }
    maps.lines()
        .filter(|l| l.contains("libasyncProfiler"))
        .map(path_of)
        .find(|path| path != crate::recorder::async_profiler::TARGET_LIBRARY)
        .map(ForeignProfiler::AsyncProfiler)
}

/// Reads a /proc tree (the real one, or a fixture in tests).
#[derive(Debug, Clone)]
pub struct ProcFs {
    root: PathBuf,
    boot_time_ms: i64,
    clock_ticks: i64,
    /// `sys/kernel/random/boot_id` (empty when unreadable, e.g. a fixture).
    boot_id: String,
}

impl ProcFs {
    pub fn new(root: impl Into<PathBuf>) -> std::io::Result<ProcFs> {
        let root = root.into();
        let stat = std::fs::read_to_string(root.join("stat"))?;
        let btime = stat
            .lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse::<i64>().ok())
            .ok_or_else(|| std::io::Error::other("no btime in /proc/stat"))?;
        let clock_ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .map_or(100, i64::from);
        let boot_id = std::fs::read_to_string(root.join("sys/kernel/random/boot_id"))
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        Ok(ProcFs {
            root,
            boot_time_ms: btime * 1000,
            clock_ticks,
            boot_id,
        })
    }

    /// Every HotSpot JVM older than `min_age` (only among `only` when it is not
    /// empty), skipping processes that vanish or cannot be read mid-scan.
    ///
    /// `only` is applied before a process is inspected: reading a process's
    /// `maps` takes its mmap lock and costs time proportional to its mappings,
    /// so an agent told its pids leaves every other process alone.
    pub fn scan(&self, now_ms: i64, min_age: Duration, only: &[u32]) -> Vec<JvmProcess> {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return Vec::new();
        };
        let mut found: Vec<JvmProcess> = entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| only.is_empty() || only.contains(pid))
            .filter_map(|pid| self.inspect(pid))
            .filter(|jvm| now_ms - jvm.start_ms >= min_age.as_millis() as i64)
            .collect();
        found.sort_by_key(|j| j.pid);
        found
    }

    /// Start time (ms since the epoch) of any process, if it exists.
    pub fn start_ms(&self, pid: u32) -> Option<i64> {
        let stat = std::fs::read_to_string(self.root.join(pid.to_string()).join("stat")).ok()?;
        Some(self.boot_time_ms + parse_start_ticks(&stat)? * 1000 / self.clock_ticks)
    }

    /// The JVM with this pid, if it is one.
    pub fn inspect(&self, pid: u32) -> Option<JvmProcess> {
        let dir = self.root.join(pid.to_string());
        let maps = std::fs::read_to_string(dir.join("maps")).ok()?;
        if !is_hotspot(&maps) {
            return None;
        }
        let status = std::fs::read_to_string(dir.join("status")).ok()?;
        let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
        let start_ticks = parse_start_ticks(&stat)?;
        let start_ms = self.boot_time_ms + start_ticks * 1000 / self.clock_ticks;
        let cmdline = read_nul_separated(&dir.join("cmdline"));
        let environ = read_nul_separated(&dir.join("environ"));
        let pod = PodIdentity::read(&dir, &environ);
        let mut jvm = JvmProcess {
            pid,
            nspid: parse_nspid(&status).unwrap_or(pid),
            start_ms,
            start_id: format!("{}:{start_ticks}", self.boot_id),
            service: String::new(),
            explicit_service: environ
                .iter()
                .find_map(|kv| kv.strip_prefix("JAVELIN_SERVICE="))
                .filter(|s| !s.is_empty())
                .map(str::to_string),
            main_name: main_name(&cmdline),
            app_version: String::new(),
            explicit_app_version: environ
                .iter()
                .find_map(|kv| kv.strip_prefix("JAVELIN_APP_VERSION="))
                .and_then(app_version_value),
            otel_service_version: otel_service_version(&environ),
            attach_disabled: attach_disabled(&dir, &cmdline, &environ),
            foreign_profiler: foreign_profiler(&maps),
            pod,
        };
        jvm.resolve_service(None);
        jvm.resolve_app_version(None);
        Some(jvm)
    }
}

/// Largest /proc/<pid>/cmdline or environ read (the kernel allows several MB).
const MAX_PROC_LIST_BYTES: u64 = 1 << 20;
/// Largest argfile or options file read.
const MAX_OPTIONS_FILE_BYTES: u64 = 1 << 20;

/// Whether the JVM in `/proc/<pid>` (`dir`) runs with attach disabled, from
/// its command line, environment and option files. Files are read through the
/// process's root ([`crate::rootfs::Root::read_in_root`]: nothing outside it,
/// regular files only, bounded), relative ones from its working directory.
fn attach_disabled(dir: &Path, cmdline: &[String], environ: &[String]) -> bool {
    let is_java = |p: &str| p.rsplit('/').next() == Some("java");
    let launcher = std::fs::read_link(dir.join("exe"))
        .ok()
        .and_then(|p| p.to_str().map(is_java))
        .unwrap_or(false)
        || cmdline.first().is_some_and(|a| is_java(a));
    let root = crate::rootfs::Root::open(dir.join("root")).ok();
    // The working directory as the process sees it (inside its root).
    let cwd = std::fs::read_link(dir.join("cwd")).ok();
    let read_file = |path: &str| -> Option<String> {
        let root = root.as_ref()?;
        let inside = if path.starts_with('/') {
            PathBuf::from(path)
        } else {
            cwd.as_ref()?.join(path)
        };
        // Links inside the JVM's root are fine (the launcher followed them too).
        match root.read_in_root(inside.to_str()?, MAX_OPTIONS_FILE_BYTES) {
            Ok(bytes) => Some(String::from_utf8_lossy(&bytes).into_owned()),
            Err(e) => {
                tracing::debug!(path, error = %e, "could not read a JVM options file");
                None
            }
        }
    };
    crate::jvm_options::Sources {
        cmdline,
        environ,
        launcher,
    }
    .attach_disabled(read_file)
}

fn read_nul_separated(path: &Path) -> Vec<String> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_PROC_LIST_BYTES).read_to_end(&mut bytes))
        .map(|_| {
            bytes
                .split(|&b| b == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// HotSpot maps libjvm.so; OpenJ9 maps libj9vm*.so (and speaks another attach protocol).
fn is_hotspot(maps: &str) -> bool {
    maps.contains("/libjvm.so") && !maps.contains("libj9vm")
}

/// The innermost pid of `NStgid:` (the pid inside the target's namespace).
pub(crate) fn parse_nspid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("NStgid:"))
        .and_then(|ids| ids.split_whitespace().last()?.parse().ok())
}

/// Field 22 of /proc/<pid>/stat (start time in clock ticks after boot). The
/// command name (field 2) may contain spaces and parentheses, so count from the last ')'.
fn parse_start_ticks(stat: &str) -> Option<i64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    after_comm.split_whitespace().nth(19)?.parse().ok()
}

/// Main class or jar name from a java command line: `-jar app.jar` → `app`,
/// `-m mod/com.x.Main` → `Main`, `com.x.Main` → `Main`.
fn main_name(cmdline: &[String]) -> Option<String> {
    let mut args = cmdline.iter().skip(1);
    while let Some(arg) = args.next() {
        if arg == "-jar" {
            let jar = args.next()?;
            let file = jar.rsplit('/').next()?;
            return Some(file.strip_suffix(".jar").unwrap_or(file).to_string());
        }
        if arg == "-m" || arg == "--module" {
            let module = args.next()?;
            return module.rsplit(['/', '.']).next().map(str::to_string);
        }
        if crate::jvm_options::WITH_VALUE.contains(&arg.as_str()) {
            args.next();
            continue;
        }
        if arg.starts_with('-') {
            continue;
        }
        return arg.rsplit('.').next().map(str::to_string);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split(' ').map(str::to_string).collect()
    }

    #[test]
    fn main_names_from_command_lines() {
        assert_eq!(
            main_name(&args(
                "java -Xmx1g -jar /app/orders-service.jar --port 8080"
            )),
            Some("orders-service".into())
        );
        assert_eq!(
            main_name(&args("java -cp a.jar:b.jar com.acme.Billing arg")),
            Some("Billing".into())
        );
        assert_eq!(
            main_name(&args("java -m com.acme/com.acme.Main")),
            Some("Main".into())
        );
        assert_eq!(
            main_name(&args("java -XX:+UseG1GC JavelinDemo")),
            Some("JavelinDemo".into())
        );
        assert_eq!(main_name(&args("java -version")), None);
    }

    /// Pid 42, nothing known about it.
    fn jvm_42() -> JvmProcess {
        JvmProcess {
            pid: 42,
            nspid: 1,
            start_ms: 0,
            start_id: "boot:0".into(),
            service: String::new(),
            explicit_service: None,
            main_name: None,
            app_version: String::new(),
            explicit_app_version: None,
            otel_service_version: None,
            attach_disabled: false,
            foreign_profiler: None,
            pod: PodIdentity::default(),
        }
    }

    #[test]
    fn the_service_chain_takes_the_first_known_name() {
        let mut jvm = JvmProcess {
            main_name: Some("Billing".into()),
            ..jvm_42()
        };
        jvm.resolve_service(None);
        assert_eq!(jvm.service, "Billing");
        jvm.pod.container = "billing-app".into();
        jvm.resolve_service(None);
        assert_eq!(jvm.service, "billing-app");
        jvm.resolve_service(Some("billing"));
        assert_eq!(jvm.service, "billing");
        jvm.explicit_service = Some("payments-billing".into());
        jvm.resolve_service(Some("billing"));
        assert_eq!(jvm.service, "payments-billing");
        jvm.explicit_service = None;
        jvm.main_name = None;
        jvm.pod.container.clear();
        jvm.resolve_service(Some(""));
        assert_eq!(jvm.service, "java-42");
    }

    #[test]
    fn the_version_chain_takes_the_first_known_version() {
        let env = |vars: &[&str]| vars.iter().map(|v| v.to_string()).collect::<Vec<_>>();
        assert_eq!(
            otel_service_version(&env(&[
                "PATH=/bin",
                "OTEL_RESOURCE_ATTRIBUTES=deployment.environment=prod, service.version = 2.4.1%2Bbuild7 ,x=y"
            ])),
            Some("2.4.1+build7".into())
        );
        assert_eq!(
            otel_service_version(&env(&["OTEL_RESOURCE_ATTRIBUTES=service.name=a"])),
            None
        );
        assert_eq!(
            otel_service_version(&env(&["OTEL_RESOURCE_ATTRIBUTES=service.version=%ZZ"])),
            Some("%ZZ".into())
        );
        assert_eq!(app_version_value("  "), None);
        assert_eq!(
            app_version_value(&"é".repeat(100)).map(|v| v.len()),
            Some(128)
        );

        let mut jvm = JvmProcess {
            otel_service_version: Some("1.0-otel".into()),
            ..jvm_42()
        };
        jvm.resolve_app_version(None);
        assert_eq!(jvm.app_version, "1.0-otel");
        jvm.resolve_app_version(Some("1.1-label"));
        assert_eq!(jvm.app_version, "1.1-label");
        jvm.explicit_app_version = Some("1.2-env".into());
        jvm.resolve_app_version(Some("1.1-label"));
        assert_eq!(jvm.app_version, "1.2-env");
        jvm.explicit_app_version = None;
        jvm.otel_service_version = None;
        jvm.resolve_app_version(Some(""));
        assert_eq!(jvm.app_version, "", "none: empty, not invented");
    }

    #[test]
    fn nspid_is_the_innermost_namespace_pid() {
        assert_eq!(parse_nspid("Name:\tjava\nNStgid:\t4242\t7\n"), Some(7));
        assert_eq!(parse_nspid("NStgid:\t4242\n"), Some(4242));
        assert_eq!(parse_nspid("Name:\tjava\n"), None);
    }

    #[test]
    fn start_ticks_survive_odd_command_names() {
        let stat = "4242 (java (main) x) S 1 4242 4242 0 -1 4194560 1 0 0 0 5 6 0 0 20 0 30 0 98765 1000 200";
        assert_eq!(parse_start_ticks(stat), Some(98765));
    }

    #[test]
    fn foreign_profilers_are_recognised() {
        let maps = "7f00-7f10 r-xp 00000000 08:01 42 /opt/other/libasyncProfiler.so\n";
        assert_eq!(
            foreign_profiler(maps),
            Some(ForeignProfiler::AsyncProfiler(
                "/opt/other/libasyncProfiler.so".into()
            ))
        );
        let maps = "7f00-7f10 r-xp 00000000 08:01 42 /yjp/libyjpagent.so\n";
        assert!(matches!(
            foreign_profiler(maps),
            Some(ForeignProfiler::Other(_))
        ));
        assert_eq!(
            foreign_profiler("7f00 r-xp /usr/lib/jvm/lib/server/libjvm.so\n"),
            None
        );
    }

    #[test]
    fn openj9_is_not_hotspot() {
        assert!(is_hotspot(
            "7f00 r-xp /usr/lib/jvm/17/lib/server/libjvm.so\n"
        ));
        assert!(!is_hotspot(
            "7f00 r-xp /opt/openj9/lib/default/libj9vm29.so\n/x/lib/server/libjvm.so"
        ));
        assert!(!is_hotspot("7f00 r-xp /usr/bin/python3\n"));
    }

    /// A /proc with two JVMs: 41 (readable) and 42, whose `maps` is a FIFO
    /// that blocks whoever reads it (so reading it hangs the scan).
    fn fake_proc(dir: &std::path::Path) {
        use std::fs::{create_dir_all, write};
        write(dir.join("stat"), "cpu 1 2 3\nbtime 1700000000\n").expect("stat");
        for pid in ["41", "42"] {
            let p = dir.join(pid);
            create_dir_all(&p).expect("pid dir");
            write(p.join("status"), format!("Name:\tjava\nNSpid:\t{pid}\n")).expect("status");
            let fields = ["S"].into_iter().chain(["0"; 18]).chain(["100"]);
            write(
                p.join("stat"),
                format!("{pid} (java) {}", fields.collect::<Vec<_>>().join(" ")),
            )
            .expect("stat");
            write(p.join("cmdline"), "java\0com.example.Main\0").expect("cmdline");
            write(p.join("environ"), "").expect("environ");
        }
        write(dir.join("41/maps"), "7f00 r-xp /jdk/lib/server/libjvm.so\n").expect("maps");
        nix::unistd::mkfifo(&dir.join("42/maps"), nix::sys::stat::Mode::S_IRWXU).expect("fifo");
    }

    #[test]
    fn a_scan_for_given_pids_reads_no_other_process() {
        let dir = std::env::temp_dir().join(format!(
            "javelin-fake-proc-{}-{}",
            std::process::id(),
            line!()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        fake_proc(&dir);
        let proc = ProcFs::new(&dir).expect("fake procfs");
        let (tx, rx) = std::sync::mpsc::channel();
        // A scan that opened 42/maps would block on the FIFO: run it aside.
        std::thread::spawn(move || {
            let _ = tx.send(proc.scan(i64::MAX, Duration::ZERO, &[41]));
        });
        let found = rx.recv_timeout(Duration::from_secs(10));
        let _ = std::fs::remove_dir_all(&dir);
        let found = found.expect("the scan for pid 41 read pid 42's maps (it blocked)");
        assert_eq!(found.iter().map(|j| j.pid).collect::<Vec<_>>(), [41]);
        assert_eq!(found[0].main_name.as_deref(), Some("Main"));
    }

    #[test]
    fn finds_this_test_process_is_not_a_jvm() {
        let proc = ProcFs::new("/proc").expect("procfs");
        assert_eq!(proc.inspect(std::process::id()), None);
    }
}
