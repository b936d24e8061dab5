//! Optional raw JFR artifacts on the node: each window's new JFR chunks kept as a
//! file, for support cases and replays through other tools. Off by default; when
//! on, bounded by age and total bytes (oldest files go first).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Where and how much to keep.
#[derive(Debug, Clone)]
pub struct ArtifactPolicy {
    pub dir: PathBuf,
    pub max_bytes: u64,
    pub max_age: Duration,
}

impl ArtifactPolicy {
    /// Writes one window's JFR and prunes the directory back under the bounds.
    /// Errors are returned for the caller to report; they never affect profiling.
    pub fn keep(&self, name: &str, chunks: &[&[u8]]) -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(&self.dir)?;
        let path = self.dir.join(sanitize(name));
        let tmp = path.with_extension("partial");
        {
            use std::io::Write;
            let mut file = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
            for chunk in chunks {
                file.write_all(chunk)?;
            }
            file.flush()?;
        }
        let size = std::fs::metadata(&tmp)?.len();
        if size > self.max_bytes {
            let _ = std::fs::remove_file(&tmp);
            return Err(std::io::Error::other(format!(
                "{size} bytes is more than the whole bound of {}",
                self.max_bytes
            )));
        }
        // Make room first, so the kept files never exceed the bound, not even for a moment.
        self.prune_for(SystemTime::now(), size)?;
        std::fs::rename(&tmp, &path)?;
        Ok(path)
    }

    /// Deletes files older than `max_age`, then the oldest until the total fits `max_bytes`.
    pub fn prune(&self, now: SystemTime) -> std::io::Result<()> {
        self.prune_for(now, 0)
    }

    /// Like [`ArtifactPolicy::prune`], leaving room for `incoming` more bytes.
    fn prune_for(&self, now: SystemTime, incoming: u64) -> std::io::Result<()> {
        let mut files: Vec<(SystemTime, u64, PathBuf)> = Vec::new();
        for entry in std::fs::read_dir(&self.dir)?.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() || entry.path().extension().is_none_or(|e| e != "jfr") {
                continue;
            }
            let modified = meta.modified().unwrap_or(now);
            files.push((modified, meta.len(), entry.path()));
        }
        files.sort();
        let mut total: u64 = files.iter().map(|f| f.1).sum::<u64>() + incoming;
        for (modified, size, path) in files {
            let too_old = now
                .duration_since(modified)
                .is_ok_and(|age| age > self.max_age);
            if too_old || total > self.max_bytes {
                std::fs::remove_file(&path)?;
                total -= size;
            }
        }
        Ok(())
    }
}

/// File names come from service names: keep them to a safe alphabet.
fn sanitize(name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{}.jfr", clean.trim_start_matches('.'))
}

/// The directory's total size, for tests and status.
pub fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(tag: &str, max_bytes: u64, max_age: Duration) -> ArtifactPolicy {
        let dir =
            std::env::temp_dir().join(format!("javelin-artifacts-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        ArtifactPolicy {
            dir,
            max_bytes,
            max_age,
        }
    }

    #[test]
    fn keeps_files_under_the_byte_bound_oldest_first() {
        let p = policy("bytes", 2500, Duration::from_secs(3600));
        for i in 0..5 {
            p.keep(&format!("svc-1-{i}"), &[&[0u8; 600], &[1u8; 400]])
                .expect("keep");
            // Distinct modification times so "oldest" is well defined.
            let f = std::fs::File::options()
                .append(true)
                .open(p.dir.join(format!("svc-1-{i}.jfr")))
                .expect("open");
            f.set_modified(SystemTime::now() - Duration::from_secs(100 - i))
                .expect("mtime");
        }
        p.prune(SystemTime::now()).expect("prune");
        assert!(dir_bytes(&p.dir) <= 2500);
        let mut left: Vec<String> = std::fs::read_dir(&p.dir)
            .expect("dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["svc-1-3.jfr", "svc-1-4.jfr"]);
        let _ = std::fs::remove_dir_all(&p.dir);
    }

    #[test]
    fn old_files_expire_and_names_are_safe() {
        let p = policy("age", 1 << 20, Duration::from_secs(60));
        let path = p.keep("../evil/svc", &[b"x"]).expect("keep");
        assert_eq!(
            path.parent(),
            Some(p.dir.as_path()),
            "stays inside the directory"
        );
        assert!(path.exists());
        p.prune(SystemTime::now() + Duration::from_secs(120))
            .expect("prune");
        assert!(!path.exists(), "expired");
        let _ = std::fs::remove_dir_all(&p.dir);
    }
}
