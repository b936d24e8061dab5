//! Configuration files: `--config` settings reach the binaries (proved by a
//! migration into the database the file names), and a bad file stops the
//! binary with a message naming the file and line.

mod support;

use support::bin;

use std::process::Command;

use javelin_schema::testkit::{clickhouse_client, clickhouse_url, unique_name};

#[tokio::test]
async fn settings_from_a_config_file_are_applied_and_bad_files_are_refused() {
    let database = unique_name("javelin_config");
    let dir = std::env::temp_dir().join(&database);
    std::fs::create_dir_all(&dir).expect("dir");
    let good = dir.join("consumer.env");
    std::fs::write(
        &good,
        format!("# where the consumer writes\nJAVELIN_CLICKHOUSE_URL={}\nJAVELIN_CLICKHOUSE_DATABASE={database}\n", clickhouse_url()),
    )
    .expect("write");
    let out = Command::new(bin("javelin-consumer"))
        .args(["migrate", "--config"])
        .arg(&good)
        .env_remove("JAVELIN_CLICKHOUSE_URL")
        .env_remove("JAVELIN_CLICKHOUSE_DATABASE")
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("database {database}")));
    let exists: u8 = clickhouse_client()
        .query("SELECT count() > 0 FROM system.databases WHERE name = ?")
        .bind(&database)
        .fetch_one()
        .await
        .expect("query");
    assert_eq!(exists, 1, "the file's database was created");

    let bad = dir.join("bad.env");
    std::fs::write(
        &bad,
        "JAVELIN_CLICKHOUSE_URL=http://x\nJAVELIN_MAX_NODES_LIMIT=5\n",
    )
    .expect("write");
    let out = Command::new(bin("javelin-consumer"))
        .args(["migrate", "--config"])
        .arg(&bad)
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.env:2: unknown setting JAVELIN_MAX_NODES_LIMIT"),
        "{stderr}"
    );

    clickhouse_client()
        .query(&format!("DROP DATABASE {database}"))
        .execute()
        .await
        .expect("cleanup");
    let _ = std::fs::remove_dir_all(&dir);
}
