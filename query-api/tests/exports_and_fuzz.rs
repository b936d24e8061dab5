//! The pprof export decoded by an independent decoder (protobufjs reading
//! `proto/pprof/profile.proto`, not our code), and a schemathesis pass over the
//! OpenAPI document that must find no server error. Both tools come from
//! `dev/tools` (a per-user cache outside the repo).

mod common;

use std::process::Command;

use common::{drop_database, repo, seeded_database, start_api};
use javelin_schema::testkit::dev_tool as tool;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread")]
async fn the_pprof_export_decodes_with_an_independent_decoder_and_totals_match() {
    let node_modules = tool("node");
    let (database, _, from, to) = seeded_database("query_pprof").await;
    let (_api, base) = start_api(&database, &[]);
    let url = format!("{base}/api/v1/export/pprof?service=svc&type=cpu&from={from}&to={to}");
    let response = reqwest::get(&url).await.expect("export");
    assert_eq!(response.status().as_u16(), 200);
    let bytes = response.bytes().await.expect("body");
    assert_eq!(&bytes[..2], &[0x1f, 0x8b], "gzipped");
    let file = std::env::temp_dir().join(format!("{database}.pb.gz"));
    std::fs::write(&file, &bytes).expect("write");
    let out = Command::new("node")
        .arg(repo().join("query-api/tests/pprof_decode.cjs"))
        .arg(repo().join("query-api/proto/pprof/profile.proto"))
        .arg(&file)
        .env("NODE_PATH", &node_modules)
        .output()
        .expect("node runs");
    let _ = std::fs::remove_file(&file);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Value = serde_json::from_slice(&out.stdout).expect("json summary");
    assert_eq!(summary["sampleType"], "cpu");
    assert_eq!(summary["unit"], "nanoseconds");
    assert_eq!(summary["firstString"], "");
    assert_eq!(summary["total"], 230, "{summary}");
    assert_eq!(
        summary["samples"], 4,
        "one sample per distinct stack: {summary}"
    );
    assert_eq!(summary["byRoot"]["main"], 230);
    assert_eq!(summary["byLeaf"]["leaf"], 110);
    assert_eq!(summary["byLeaf"]["rec"], 30);
    assert_eq!(summary["byLeaf"]["c"], 40);
    drop_database(&database).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_schemathesis_pass_over_the_openapi_document_finds_no_server_error() {
    let st = tool("schemathesis");
    let (database, _, _, _) = seeded_database("query_fuzz").await;
    let (_api, base) = start_api(&database, &[]);
    // Schemathesis keeps its state (`.schemathesis/`: crash replays, cache;
    // `.hypothesis/`: examples) in its working directory: a temporary one, so
    // a run leaves the repository as it found it.
    let state = std::env::temp_dir().join(format!("{database}-schemathesis"));
    std::fs::create_dir_all(&state).expect("schemathesis state dir");
    let out = Command::new(&st)
        .args(["run", &format!("{base}/api/v1/openapi.json")])
        .args(["--checks", "not_a_server_error"])
        .args(["--max-examples", "30", "--workers", "2"])
        .args(["--phases", "examples,coverage,fuzzing"])
        .env("SCHEMATHESIS_HOOKS", "")
        .current_dir(&state)
        .output()
        .expect("schemathesis runs");
    let _ = std::fs::remove_dir_all(&state);
    let report = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "schemathesis found failures:\n{report}"
    );
    assert!(
        report.contains("Tested: 14"),
        "every operation was exercised:\n{report}"
    );
    drop_database(&database).await;
}
