//! The configuration reference lists every flag and environment variable the
//! binaries accept (read from their own `--help`), so the docs cannot drift.

mod support;

use std::path::Path;

use support::{COMMANDS, Options};

#[test]
fn configuration_reference_covers_every_option() {
    let doc_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md");
    let doc = std::fs::read_to_string(&doc_path).expect("docs/configuration.md");
    let mut missing = Vec::new();
    for (binary, sub) in COMMANDS {
        let options = Options::of(binary, sub);
        for word in options.flags.iter().chain(&options.env) {
            if !doc.contains(&format!("`{word}`")) {
                missing.push(format!("{binary} {}: {word}", sub.unwrap_or("")));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "not in docs/configuration.md: {missing:#?}"
    );
}
