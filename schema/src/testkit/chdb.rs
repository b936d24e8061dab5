//! A current ClickHouse (26.9, PyPI's chdb-core: ClickHouse's engine
//! in-process) behind `dev/chdb-server`, the shim that serves ClickHouse's
//! HTTP interface over it, so the same client code runs against it as against
//! a server. See that script for what the shim does not support.

use std::io::{Error, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{dev_tool, repo_root, try_free_port};

/// How long the shim may take to open its engine and answer `/ping`.
const START_DEADLINE: Duration = Duration::from_secs(60);

/// Ports tried before giving up (see [`ChdbServer::start`]).
const START_ATTEMPTS: usize = 3;

/// A chdb-backed ClickHouse of its own, in `<temp>/<name>`; killed and
/// removed on drop (kept with `JAVELIN_KEEP_SCENARIO_DIRS`).
#[derive(Debug)]
pub struct ChdbServer {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    pub dir: PathBuf,
    child: Option<Child>,
}

impl ChdbServer {
    /// Starts the shim (installing chdb-core once per machine with
    /// `dev/tools chdb`) and returns once it answers `/ping`.
    pub fn start(name: &str) -> Result<ChdbServer, Error> {
        let python = dev_tool("chdb");
        let script = repo_root().join("dev/chdb-server");
        let dir = std::env::temp_dir().join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::new(e.kind(), format!("creating {}: {e}", dir.display())))?;
        let mut server = ChdbServer {
            url: String::new(),
            dir,
            child: None,
        };
        // Another process may bind the port between our check and the shim's
        // bind; the shim then exits at once, and another port is tried.
        let mut last = None;
        for _ in 0..START_ATTEMPTS {
            let port = try_free_port()?;
            match server.spawn(&python, &script, port) {
                Ok(()) => return Ok(server),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::other("chdb-server never started")))
    }

    /// A client of this server, no database selected.
    pub fn client(&self) -> clickhouse::Client {
        clickhouse::Client::default()
            .with_url(&self.url)
            .with_validation(false)
    }

    fn spawn(&mut self, python: &str, script: &Path, port: u16) -> Result<(), Error> {
        // A file, not a pipe: nobody reads a pipe while the tests run, and a
        // full one would stall the shim.
        let log_path = self.dir.join("chdb-server.log");
        let log = std::fs::File::create(&log_path)
            .map_err(|e| Error::new(e.kind(), format!("creating {}: {e}", log_path.display())))?;
        let mut child = Command::new(python)
            .arg(script)
            .arg("--path")
            .arg(self.dir.join("data"))
            .args(["--port", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| {
                Error::new(
                    e.kind(),
                    format!("starting {python} {}: {e}", script.display()),
                )
            })?;
        let read_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait()? {
                return Err(Error::other(format!(
                    "chdb-server on port {port} exited ({status}): {}",
                    read_log().trim()
                )));
            }
            if ping(port) {
                break;
            }
            if started.elapsed() > START_DEADLINE {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "chdb-server on port {port} did not answer /ping within {START_DEADLINE:?}; its log ({}): {}",
                        log_path.display(),
                        read_log().trim()
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.url = format!("http://127.0.0.1:{port}");
        self.child = Some(child);
        Ok(())
    }
}

/// Whether the shim answers `GET /ping` with `Ok.`.
fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut response = String::new();
    stream
        .write_all(b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .and_then(|()| stream.read_to_string(&mut response))
        .is_ok()
        && response.starts_with("HTTP/1.1 200")
        && response.ends_with("Ok.\n")
}

impl Drop for ChdbServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::env::var_os("JAVELIN_KEEP_SCENARIO_DIRS").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
