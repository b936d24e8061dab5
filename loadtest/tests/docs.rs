//! The configuration reference lists every flag and environment variable the
//! binaries accept (read from their own `--help`), so the docs cannot drift.

use std::path::{Path, PathBuf};
use std::process::Command;

fn bin(name: &str) -> PathBuf {
    let me = PathBuf::from(env!("CARGO_BIN_EXE_javelin-loadtest"));
    let path = me.parent().expect("target dir").join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first",
        path.display()
    );
    path
}

#[test]
fn configuration_reference_covers_every_option() {
    let doc_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md");
    let doc = std::fs::read_to_string(&doc_path).expect("docs/configuration.md");
    let mut missing = Vec::new();
    for (binary, sub) in [
        ("javelin-agent", None),
        ("javelin-consumer", Some("run")),
        ("javelin-consumer", Some("migrate")),
        ("javelin-consumer", Some("replay")),
        ("javelin-query", None),
    ] {
        let mut cmd = Command::new(bin(binary));
        cmd.args(sub).arg("--help");
        let help = String::from_utf8(cmd.output().expect("--help runs").stdout).expect("utf-8");
        let mut seen = 0;
        for word in help.split(|c: char| c.is_whitespace() || c == '[' || c == ']' || c == '=') {
            let is_flag = word.starts_with("--")
                && word.len() > 2
                && !["--help", "--version"].contains(&word);
            let is_env = word.starts_with("JAVELIN_");
            if is_flag || is_env {
                seen += 1;
                if !doc.contains(&format!("`{word}`")) {
                    missing.push(format!("{binary} {}: {word}", sub.unwrap_or("")));
                }
            }
        }
        assert!(seen > 4, "{binary}: parsed only {seen} options from --help");
    }
    assert!(
        missing.is_empty(),
        "not in docs/configuration.md: {missing:#?}"
    );
}
