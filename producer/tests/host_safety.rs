//! The agent runs as root inside every target's filesystem and signals JVMs:
//! it must never harm them or the node. Real JVMs where a JVM matters; fake
//! attach listeners only to inject faults (a peer that never answers, or
//! trickles).

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use javelin_agent::aggregate::Bounds;
use javelin_agent::attach::{AttachError, AttachTarget};
use javelin_agent::discovery::{JvmProcess, ProcFs};
use javelin_agent::metrics::AgentMetrics;
use javelin_agent::recorder::{
    AsyncProfilerRecorder, AsyncProfilerSettings, JfrRecorder, JfrSettings, Recorder,
    RecorderError, take_file,
};
use javelin_agent::rootfs::{Root, RootFsError};
use javelin_agent::session::{Marker, MarkerError};
use javelin_agent::spool::{Destination, Spool};
use javelin_agent::target::{self, TargetConfig, TargetEnd};
use javelin_schema::telemetry::{OtlpEndpoints, Telemetry};
use javelin_schema::testkit::unique_name;
use javelin_schema::wire::{TargetState, TargetStatus};
use prost::Message;
use tokio::sync::watch;

const SLEEPER: &str = r#"
public class Sleeper {
    public static void main(String[] args) throws Exception {
        System.out.println("sleeper ready");
        System.out.flush();
        Thread.sleep(600_000);
    }
}
"#;

/// `Sleeper` compiled once per test process.
fn classes() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = scratch("host-safety-classes");
        std::fs::write(dir.join("Sleeper.java"), SLEEPER).expect("write source");
        let ok = Command::new("javac")
            .arg("-d")
            .arg(&dir)
            .arg(dir.join("Sleeper.java"))
            .status()
            .expect("javac runs");
        assert!(ok.success(), "javac failed");
        dir
    })
}

/// A fresh directory of this test's own, outside /tmp (JVMs in a mount
/// namespace of their own get a private /tmp).
fn scratch(prefix: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(unique_name(prefix));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// A JVM running `Sleeper`, its stdout in a file; killed when dropped.
struct Jvm {
    child: Child,
    stdout: PathBuf,
}

impl Jvm {
    fn start(args: &[&str], env: &[(&str, &str)], cwd: &Path) -> Jvm {
        Jvm::spawn(Command::new("java"), args, env, cwd)
    }

    /// Like a container's JVM: a mount namespace of its own with a private
    /// /tmp, reached by the agent only through /proc/<pid>/root.
    fn start_with_private_tmp(cwd: &Path) -> Jvm {
        let mut command = Command::new("unshare");
        command.args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            "mount -t tmpfs -o mode=1777 tmpfs /tmp && exec java \"$@\"",
            "java",
        ]);
        Jvm::spawn(command, &[], &[], cwd)
    }

    fn spawn(mut command: Command, args: &[&str], env: &[(&str, &str)], cwd: &Path) -> Jvm {
        let stdout = cwd.join(unique_name("stdout"));
        command
            .args(args)
            .arg("-cp")
            .arg(classes())
            .arg("Sleeper")
            .current_dir(cwd)
            .env_remove("JAVA_TOOL_OPTIONS")
            .env_remove("JDK_JAVA_OPTIONS")
            .env_remove("_JAVA_OPTIONS")
            .stdout(std::fs::File::create(&stdout).expect("stdout file"))
            .stderr(Stdio::null());
        for (k, v) in env {
            command.env(k, v);
        }
        let jvm = Jvm {
            child: command.spawn().expect("java starts"),
            stdout,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !jvm.output().contains("sleeper ready") {
            assert!(
                Instant::now() < deadline,
                "the JVM did not start: {args:?} {env:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        jvm
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }
}

impl Drop for Jvm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the agent's target task on `jvm` until it ends (a disabled JVM ends it
/// at once), returning how it ended and the states it published.
async fn run_target(jvm: JvmProcess) -> (TargetEnd, Vec<i32>) {
    let name = unique_name("javelin_host_safety");
    let config = TargetConfig {
        cluster: "test".into(),
        node: "test-node".into(),
        window: Duration::from_secs(2),
        recording_name: name.clone(),
        attach_timeout: Duration::from_secs(10),
        jfr: JfrSettings::default(),
        bounds: Bounds::default(),
        installation: name,
        pods: None,
        async_profiler: None,
        artifacts: None,
        collect_slots: std::sync::Arc::new(tokio::sync::Semaphore::new(1)),
    };
    let spool = Spool::new(1 << 20);
    let telemetry =
        Telemetry::new("javelin-agent-test", OtlpEndpoints::default()).expect("telemetry");
    let metrics = AgentMetrics::new(&telemetry, &spool);
    let (_stop, shutdown) = watch::channel(false);
    let end = tokio::time::timeout(
        Duration::from_secs(30),
        target::run(jvm, config, spool.clone(), metrics, shutdown),
    )
    .await
    .expect("the target task ends on its own");
    let states = spool
        .drain()
        .into_iter()
        .filter(|m| m.destination == Destination::Status)
        .map(|m| {
            TargetStatus::decode(m.payload.as_slice())
                .expect("the agent's own status decodes")
                .state
        })
        .collect();
    (end, states)
}

/// What a JVM is started with: a name, its options, its environment, and
/// whether attach ends up disabled.
type Case = (
    &'static str,
    Vec<&'static str>,
    Vec<(&'static str, &'static str)>,
    bool,
);

#[tokio::test(flavor = "multi_thread")]
async fn disable_attach_mechanism_is_seen_in_every_option_source() {
    let dir = scratch("host-safety-disabled");
    std::fs::write(
        dir.join("plus.args"),
        "# options\n-XX:+DisableAttachMechanism\n",
    )
    .expect("argfile");
    let plus = "-XX:+DisableAttachMechanism";
    let minus = "-XX:-DisableAttachMechanism";
    let cases: Vec<Case> = vec![
        ("command line", vec![plus], vec![], true),
        (
            "JAVA_TOOL_OPTIONS",
            vec![],
            vec![("JAVA_TOOL_OPTIONS", plus)],
            true,
        ),
        (
            "JDK_JAVA_OPTIONS",
            vec![],
            vec![("JDK_JAVA_OPTIONS", plus)],
            true,
        ),
        ("_JAVA_OPTIONS", vec![], vec![("_JAVA_OPTIONS", plus)], true),
        (
            "@argfile (relative to the cwd)",
            vec!["@plus.args"],
            vec![],
            true,
        ),
        ("argfile after a -", vec![minus, "@plus.args"], vec![], true),
        // The last occurrence in HotSpot's order wins: these JVMs can be attached.
        (
            "JAVA_TOOL_OPTIONS overridden by the command line",
            vec![minus],
            vec![("JAVA_TOOL_OPTIONS", plus)],
            false,
        ),
        (
            "command line overridden by _JAVA_OPTIONS",
            vec![plus],
            vec![("_JAVA_OPTIONS", minus)],
            false,
        ),
    ];
    let procfs = ProcFs::new("/proc").expect("/proc");
    for (what, args, env, disabled) in cases {
        let jvm = Jvm::start(&args, &env, &dir);
        let found = procfs.inspect(jvm.pid()).expect("a HotSpot JVM");
        assert_eq!(found.attach_disabled, disabled, "{what}");
        if disabled {
            // The agent's target task publishes `disabled` and leaves the JVM alone.
            let (end, states) = run_target(found).await;
            assert_eq!(end, TargetEnd::Disabled, "{what}");
            assert_eq!(states, [TargetState::Disabled as i32], "{what}");
        } else {
            // The JVM agrees: attach works (and a fresh listener prints nothing).
            let target = AttachTarget::for_pid(jvm.pid(), Duration::from_secs(10)).expect("target");
            let reply = target.jcmd("VM.version").expect("attach works");
            assert!(reply.text.contains("JDK"), "{what}: {reply:?}");
        }
        assert!(
            !jvm.output().contains("Full thread dump"),
            "{what}: a thread dump in the application's stdout"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A root-owned file outside the "target": what a planted link points at.
fn victim(dir: &Path) -> (PathBuf, &'static str) {
    let path = dir.join("victim");
    let text = "host secret\n";
    std::fs::write(&path, text).expect("victim");
    (path, text)
}

#[test]
fn links_fifos_and_foreign_files_in_a_target_root_are_refused() {
    let outside = scratch("host-safety-outside");
    let (victim, text) = victim(&outside);
    for walk in [false, true] {
        let root_dir = scratch("host-safety-root");
        std::fs::create_dir_all(root_dir.join("tmp")).expect("tmp");
        let root = if walk {
            Root::open_without_openat2(&root_dir)
        } else {
            Root::open(&root_dir)
        }
        .expect("root");
        let mode = if walk { "walk" } else { "openat2" };

        // A link at the file's path, absolute: refused, the victim untouched.
        std::os::unix::fs::symlink(&victim, root_dir.join("tmp/dump.jfr")).expect("symlink");
        let err = root
            .take("/tmp/dump.jfr", &[0], 1 << 20)
            .expect_err("link refused");
        assert!(matches!(err, RootFsError::Symlink { .. }), "{mode}: {err}");
        assert!(err.to_string().contains("refused"), "{err}");
        assert_eq!(std::fs::read_to_string(&victim).expect("victim"), text);

        // A link as a directory on the way (`/tmp` → the outside): refused.
        std::os::unix::fs::symlink(&outside, root_dir.join("linked")).expect("symlink");
        let err = root
            .read("/linked/victim", None, 1 << 20)
            .expect_err("refused");
        assert!(matches!(err, RootFsError::Symlink { .. }), "{mode}: {err}");

        // `..` cannot leave the root.
        let escaped = root.read("/../../../../../../etc/hostname", None, 1 << 20);
        assert!(
            escaped.is_err(),
            "{mode}: read outside the root: {escaped:?}"
        );

        // A FIFO nobody writes to: refused at once, never opened for reading.
        nix::unistd::mkfifo(
            &root_dir.join("tmp/fifo.jfr"),
            nix::sys::stat::Mode::S_IRWXU,
        )
        .expect("mkfifo");
        let start = Instant::now();
        let err = root
            .take("/tmp/fifo.jfr", &[0], 1 << 20)
            .expect_err("FIFO refused");
        assert!(start.elapsed() < Duration::from_secs(1), "{mode}: blocked");
        assert!(
            matches!(err, RootFsError::WrongKind { found: "FIFO", .. }),
            "{mode}: {err}"
        );

        // Another user's file: refused and left in place.
        let foreign = root_dir.join("tmp/foreign.jfr");
        std::fs::write(&foreign, "x").expect("file");
        nix::unistd::chown(&foreign, Some(nix::unistd::Uid::from_raw(54321)), None).expect("chown");
        let err = root
            .take("/tmp/foreign.jfr", &[0], 1 << 20)
            .expect_err("foreign owner");
        assert!(
            matches!(err, RootFsError::WrongOwner { uid: 54321, .. }),
            "{mode}: {err}"
        );
        assert!(foreign.exists(), "{mode}: a refused file was removed");

        // A good file is read and removed; an oversized one removed unread.
        std::fs::write(root_dir.join("tmp/good.jfr"), "data").expect("file");
        assert_eq!(
            root.take("/tmp/good.jfr", &[0], 1 << 20).expect("read"),
            b"data"
        );
        assert!(!root_dir.join("tmp/good.jfr").exists());
        std::fs::write(root_dir.join("tmp/big.jfr"), "0123456789").expect("file");
        let err = root.take("/tmp/big.jfr", &[0], 4).expect_err("too large");
        assert!(
            matches!(
                err,
                RootFsError::TooLarge {
                    size: 10,
                    limit: 4,
                    ..
                }
            ),
            "{err}"
        );
        assert!(!root_dir.join("tmp/big.jfr").exists());

        // Reading config the container links to itself: links stay inside the root.
        if !walk {
            std::fs::write(root_dir.join("tmp/real.args"), "inside").expect("file");
            std::os::unix::fs::symlink("/tmp/real.args", root_dir.join("abs.args")).expect("ln");
            assert_eq!(
                root.read_in_root("/abs.args", 1 << 20).expect("read"),
                b"inside"
            );
            // An absolute link to the victim's path means that path inside the root.
            std::os::unix::fs::symlink(&victim, root_dir.join("escape.args")).expect("ln");
            let err = root
                .read_in_root("/escape.args", 1 << 20)
                .expect_err("not inside");
            assert!(err.is_not_found(), "{err}");
            let err = root
                .read_in_root("/tmp/fifo.jfr", 1 << 20)
                .expect_err("FIFO");
            assert!(matches!(err, RootFsError::WrongKind { .. }), "{err}");
        }

        // Writing replaces a planted link instead of writing through it.
        let tmp = root.open_dir("/tmp", &[0]).expect("tmp");
        std::os::unix::fs::symlink(&victim, root_dir.join("tmp/marker")).expect("symlink");
        tmp.write_replace("marker", b"ours", 0o644)
            .expect("replaced");
        assert_eq!(std::fs::read_to_string(&victim).expect("victim"), text);
        let meta = std::fs::symlink_metadata(root_dir.join("tmp/marker")).expect("marker");
        assert!(meta.file_type().is_file());
        assert_eq!(meta.permissions().mode() & 0o777, 0o644);
        let _ = std::fs::remove_dir_all(&root_dir);
    }
    let _ = std::fs::remove_dir_all(&outside);
}

#[test]
fn session_markers_are_never_followed_through_links() {
    // This process as the "target": its root is /, its /tmp the real one.
    let pid = std::process::id();
    let nspid = 3_000_000_000 + (std::process::id() % 1_000_000) + rand_suffix();
    let path = PathBuf::from(format!("/tmp/.javelin-{nspid}.session"));
    let outside = scratch("host-safety-marker");
    let (victim, text) = victim(&outside);
    std::os::unix::fs::symlink(&victim, &path).expect("symlink");
    let err = Marker::read(pid, nspid).expect_err("a link is refused");
    assert!(
        matches!(err, MarkerError::Target(RootFsError::Symlink { .. })),
        "{err}"
    );
    let me = Marker {
        installation: "test".into(),
        recorder: "jfr".into(),
        recording: "r".into(),
        agent_pid: pid,
        agent_start_ms: 1,
        jvm: None,
    };
    me.write(pid, nspid).expect("write replaces the link");
    assert_eq!(std::fs::read_to_string(&victim).expect("victim"), text);
    assert_eq!(Marker::read(pid, nspid).expect("read"), Some(me));
    assert!(Marker::remove(pid, nspid).expect("remove"));
    assert_eq!(Marker::read(pid, nspid).expect("absent"), None);
    let _ = std::fs::remove_dir_all(&outside);
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() % 1000)
        .unwrap_or(0)
}

#[test]
fn dumps_in_a_real_jvms_root_are_read_without_following_links() {
    let dir = scratch("host-safety-dump");
    let jvm = Jvm::start(&[], &[], &dir);
    let outside = scratch("host-safety-dump-outside");
    let (victim, text) = victim(&outside);
    let name = unique_name("javelin-dump");
    let link = PathBuf::from(format!("/tmp/{name}.jfr"));
    std::os::unix::fs::symlink(&victim, &link).expect("symlink");
    let in_target = PathBuf::from(format!("/proc/{}/root/tmp/{name}.jfr", jvm.pid()));
    let err = take_file(&in_target, 1 << 20).expect_err("refused");
    assert!(matches!(err, RecorderError::Read { .. }), "{err}");
    assert!(err.to_string().contains("symbolic link"), "{err}");
    assert_eq!(std::fs::read_to_string(&victim).expect("victim"), text);
    std::fs::remove_file(&link).expect("remove link");

    let fifo = format!("/tmp/{name}.fifo");
    nix::unistd::mkfifo(fifo.as_str(), nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
    let start = Instant::now();
    let err = take_file(
        &PathBuf::from(format!("/proc/{}/root{fifo}", jvm.pid())),
        1 << 20,
    )
    .expect_err("FIFO refused");
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "blocked on a FIFO"
    );
    assert!(err.to_string().contains("FIFO"), "{err}");
    std::fs::remove_file(&fifo).expect("remove fifo");
    let _ = std::fs::remove_dir_all(&outside);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A fake attach listener at this process's `/tmp/.java_pid<nspid>`: accepts,
/// then writes `reply` one byte per `every` (never, when `every` is `None`).
fn fake_listener(nspid: u32, reply: &'static [u8], every: Option<Duration>) -> PathBuf {
    let path = PathBuf::from(format!("/tmp/.java_pid{nspid}"));
    let _ = std::fs::remove_file(&path);
    let listener = std::os::unix::net::UnixListener::bind(&path).expect("bind");
    std::thread::spawn(move || {
        let Ok((mut stream, _)) = listener.accept() else {
            return;
        };
        let Some(every) = every else {
            std::thread::sleep(Duration::from_secs(60));
            return;
        };
        for byte in reply.iter().cycle() {
            std::thread::sleep(every);
            if stream.write_all(&[*byte]).is_err() {
                return;
            }
        }
    });
    path
}

#[test]
fn attach_has_one_deadline_for_connect_and_the_whole_reply() {
    let timeout = Duration::from_secs(2);
    for every in [None, Some(Duration::from_millis(200))] {
        let nspid = 3_500_000_000 + (std::process::id() % 1_000_000) + rand_suffix();
        let socket = fake_listener(nspid, b"0\nstill talking ", every);
        // This process plays the JVM: its socket, its pid as the peer.
        let target = AttachTarget {
            pid: std::process::id(),
            nspid,
            timeout,
        };
        let start = Instant::now();
        // On a thread, so a missing deadline fails this test instead of hanging it.
        let (done, result) = std::sync::mpsc::channel();
        std::thread::spawn(move || done.send(target.jcmd("VM.version")));
        let err = result
            .recv_timeout(timeout + Duration::from_secs(5))
            .unwrap_or_else(|_| {
                panic!(
                    "{every:?}: attach still running after {:?}",
                    start.elapsed()
                )
            })
            .expect_err("no complete reply");
        let took = start.elapsed();
        assert!(
            matches!(err, AttachError::Timeout { .. }),
            "{every:?}: {err}"
        );
        assert!(
            took >= timeout && took < timeout + Duration::from_secs(1),
            "{every:?}: took {took:?} for a {timeout:?} deadline"
        );
        let _ = std::fs::remove_file(&socket);
    }
}

#[test]
fn a_stale_attach_socket_is_removed_and_attach_proceeds() {
    let dir = scratch("host-safety-stale");
    let jvm = Jvm::start(&[], &[], &dir);
    let target = AttachTarget::for_pid(jvm.pid(), Duration::from_secs(10)).expect("target");
    // A socket nobody listens on, where the JVM's listener will be.
    let socket = PathBuf::from(format!(
        "/proc/{}/root/tmp/.java_pid{}",
        jvm.pid(),
        target.nspid
    ));
    drop(std::os::unix::net::UnixListener::bind(&socket).expect("bind"));
    assert!(
        std::fs::symlink_metadata(&socket)
            .expect("stale socket")
            .uid()
            == 0
    );
    let before = javelin_agent::attach::stale_sockets_recovered();
    let reply = target.jcmd("VM.version").expect("attach after recovery");
    assert!(reply.text.contains("JDK"), "{reply:?}");
    assert!(javelin_agent::attach::stale_sockets_recovered() > before);
    // Attached through the trigger, so the JVM printed no thread dump.
    assert!(
        !jvm.output().contains("Full thread dump"),
        "{}",
        jvm.output()
    );
    // And again, on the live socket.
    target.jcmd("VM.version").expect("second attach");
    let _ = std::fs::remove_dir_all(&dir);
}

fn async_profiler_library() -> PathBuf {
    std::env::var_os("JAVELIN_TEST_ASYNC_PROFILER")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../shared/third_party/async-profiler-4.5/lib/libasyncProfiler.so")
        })
}

#[test]
fn the_async_profiler_library_is_installed_only_where_no_link_leads() {
    let library = async_profiler_library();
    assert!(
        library.is_file(),
        "no async-profiler at {} (set JAVELIN_TEST_ASYNC_PROFILER)",
        library.display()
    );
    let dir = scratch("host-safety-library");
    let jvm = Jvm::start_with_private_tmp(&dir);
    let target_tmp = PathBuf::from(format!("/proc/{}/root/tmp", jvm.pid()));
    let recorder = || {
        AsyncProfilerRecorder::new(
            AttachTarget::for_pid(jvm.pid(), Duration::from_secs(10)).expect("target"),
            AsyncProfilerSettings {
                library: library.clone(),
                cpu_interval: Duration::from_millis(10),
                alloc_bytes: 512 * 1024,
                lock_threshold: Duration::from_millis(10),
                session_timeout: Duration::from_secs(60),
                max_dump_bytes: 64 << 20,
            },
        )
    };
    let outside = scratch("host-safety-library-outside");
    let (victim, text) = victim(&outside);

    // The container's /tmp/javelin is a link to a directory of the node.
    let javelin = target_tmp.join("javelin");
    std::os::unix::fs::symlink(&outside, &javelin).expect("symlink");
    let err = recorder()
        .start(None)
        .expect_err("a linked directory is refused");
    assert!(err.to_string().contains("symbolic link"), "{err}");
    let written: Vec<_> = std::fs::read_dir(&outside)
        .expect("outside")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(
        written,
        [std::ffi::OsString::from("victim")],
        "written outside the target"
    );
    std::fs::remove_file(&javelin).expect("remove link");

    // The library's own path is a link to a root-owned file of the node.
    std::fs::create_dir(&javelin).expect("mkdir");
    let lib_path = javelin.join("libasyncProfiler.so");
    std::os::unix::fs::symlink(&victim, &lib_path).expect("symlink");
    let err = recorder()
        .start(None)
        .expect_err("a linked library is refused");
    assert!(err.to_string().contains("symbolic link"), "{err}");
    assert_eq!(std::fs::read_to_string(&victim).expect("victim"), text);
    std::fs::remove_file(&lib_path).expect("remove link");

    // Nothing planted: installed root-owned and read-only for others, and it runs.
    let mut ok = recorder();
    ok.start(None).expect("async-profiler starts");
    let meta = std::fs::symlink_metadata(&lib_path).expect("library");
    assert!(meta.file_type().is_file());
    assert_eq!((meta.uid(), meta.permissions().mode() & 0o7777), (0, 0o755));
    let dir_meta = std::fs::symlink_metadata(&javelin).expect("dir");
    assert_eq!(dir_meta.permissions().mode() & 0o7777, 0o1777);
    ok.stop().expect("stops");
    assert!(
        !jvm.output().contains("Full thread dump"),
        "{}",
        jvm.output()
    );
    let _ = std::fs::remove_dir_all(&outside);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_jvm_of_another_user_is_profiled_and_only_its_own_files_are_read() {
    let dir = scratch("host-safety-nobody");
    let mut command = Command::new("setpriv");
    command.args(["--reuid=65534", "--regid=65534", "--clear-groups", "java"]);
    let jvm = Jvm::spawn(command, &[], &[], &dir);
    assert_eq!(
        javelin_agent::rootfs::process_uid(jvm.pid()).expect("uid"),
        65534
    );
    let name = unique_name("javelin_nobody");
    let target = AttachTarget::for_pid(jvm.pid(), Duration::from_secs(10)).expect("target");

    // Root's socket where the JVM's goes (host /tmp keeps them when a root JVM
    // at a recycled pid was killed). While something listens on it: refused,
    // nothing sent, the socket kept.
    let socket = PathBuf::from(format!(
        "/proc/{}/root/tmp/.java_pid{}",
        jvm.pid(),
        target.nspid
    ));
    let _ = std::fs::remove_file(&socket);
    let listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
    let err = target
        .jcmd("VM.version")
        .expect_err("a live socket of another user is not the JVM's");
    assert!(
        matches!(
            err,
            AttachError::WrongPeer { .. } | AttachError::Files { .. }
        ),
        "{err}"
    );
    // If the agent connected to learn it is alive, it sent nothing.
    listener.set_nonblocking(true).expect("nonblocking");
    if let Ok((mut probe, _)) = listener.accept() {
        let mut sent = Vec::new();
        probe.read_to_end(&mut sent).expect("read");
        assert!(sent.is_empty(), "sent to a foreign socket: {sent:?}");
    }
    // Dead (nobody listens): removed, and the JVM's own listener starts.
    drop(listener);
    assert_eq!(std::fs::symlink_metadata(&socket).expect("kept").uid(), 0);
    let before = javelin_agent::attach::stale_sockets_recovered();
    let reply = target
        .jcmd("VM.version")
        .expect("attach after another user's stale socket");
    assert!(reply.text.contains("JDK"), "{reply:?}");
    assert!(javelin_agent::attach::stale_sockets_recovered() > before);
    assert_eq!(
        std::fs::symlink_metadata(&socket).expect("live").uid(),
        65534
    );

    let mut recorder = JfrRecorder::new(target, name.clone(), JfrSettings::default());
    recorder.start(None).expect("JFR starts");
    // The dump is the JVM user's file: read and removed.
    let collected = recorder.collect().expect("the JVM's own dump is read");
    assert!(collected.bytes.starts_with(b"FLR\0"), "not a JFR file");
    recorder.stop().expect("JFR stops");
    assert!(
        !jvm.output().contains("Full thread dump"),
        "{}",
        jvm.output()
    );

    // A file of another user (root) where a dump of this JVM is expected: refused, kept.
    let planted = PathBuf::from(format!("/tmp/{name}-planted.jfr"));
    std::fs::write(&planted, "FLR\0 not the JVM's").expect("plant");
    let err = take_file(
        &PathBuf::from(format!("/proc/{}/root{}", jvm.pid(), planted.display())),
        1 << 20,
    )
    .expect_err("another user's file is refused");
    assert!(err.to_string().contains("owned by uid 0"), "{err}");
    assert!(planted.exists(), "a refused file was removed");
    std::fs::remove_file(&planted).expect("cleanup");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_link_at_the_attach_trigger_path_is_neither_followed_nor_removed() {
    let dir = scratch("host-safety-trigger");
    let jvm = Jvm::start(&[], &[], &dir);
    let outside = scratch("host-safety-trigger-outside");
    let (victim, text) = victim(&outside);
    let target = AttachTarget::for_pid(jvm.pid(), Duration::from_secs(10)).expect("target");
    // The JVM's cwd holds a link where the trigger goes: the trigger goes to /tmp instead.
    let link = dir.join(format!(".attach_pid{}", target.nspid));
    std::os::unix::fs::symlink(&victim, &link).expect("symlink");
    let reply = target
        .jcmd("VM.version")
        .expect("attach through the /tmp trigger");
    assert!(reply.text.contains("JDK"), "{reply:?}");
    assert_eq!(std::fs::read_to_string(&victim).expect("victim"), text);
    assert!(std::fs::symlink_metadata(&link).expect("link").is_symlink());
    assert!(
        !jvm.output().contains("Full thread dump"),
        "{}",
        jvm.output()
    );
    let _ = std::fs::remove_dir_all(&outside);
    let _ = std::fs::remove_dir_all(&dir);
}
