//! The local stack's ClickHouse 18.16 compresses parts with ZSTD, as
//! docs/clickhouse-schema.md asks of 18.x servers: 18.16 has no column codecs,
//! and with its default LZ4 `samples` is 0.66× the Coroot-shaped table instead
//! of 0.46× (docs/benchmarks.md). The benchmarks and the suite run on that
//! server; this keeps its configuration what the docs say.

use javelin_schema::migrations::{MigrateOptions, ServerFeatures, migrate};
use javelin_schema::testkit::{clickhouse_client, unique_name};

/// The method byte of a compressed block, after its 16-byte checksum.
const METHOD_LZ4: u8 = 0x82;
const METHOD_ZSTD: u8 = 0x90;

#[tokio::test]
async fn the_local_server_writes_samples_parts_in_zstd() {
    let server = clickhouse_client();
    // With codecs the columns name their own compression and this setting
    // does not decide it: the check is about servers without them.
    let features = ServerFeatures::detect(&server).await.expect("version");
    assert!(
        !features.codecs,
        "the stack's server is expected to be 18.16 (no column codecs): {features:?}"
    );
    let db = unique_name("storage_zstd");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    migrate(&server, &db, MigrateOptions::default())
        .await
        .expect("migrate");
    server
        .query(&format!(
            "INSERT INTO {db}.samples (service, profile_type, window_start, target_id, window_id, \
             stack_id, value, count, insert_id) \
             SELECT 'svc', 'cpu', toDateTime({now}), 1, 7, number % 97, number * 10, 1, 1 \
             FROM numbers(100000)"
        ))
        .execute()
        .await
        .expect("insert");
    // The server runs on this host (the stack): its parts are files here.
    let path: String = server
        .query(&format!(
            "SELECT path FROM system.parts WHERE database = '{db}' AND table = 'samples' AND active"
        ))
        .fetch_one()
        .await
        .expect("the part's path");
    let file = std::path::Path::new(&path).join("value.bin");
    let bytes = std::fs::read(&file);
    server
        .query(&format!("DROP DATABASE {db}"))
        .execute()
        .await
        .expect("drop");
    let bytes = bytes.unwrap_or_else(|e| {
        panic!(
            "{} cannot be read ({e}): this test needs the stack's server on this host",
            file.display()
        )
    });
    let method = *bytes.get(16).expect("a compressed block header");
    assert_eq!(
        method,
        METHOD_ZSTD,
        "{}: compressed with method {method:#04x} ({}), not ZSTD: dev/stack's config.xml must \
         name zstd (a stack started before it did keeps its old config: dev/stack down, then up)",
        file.display(),
        if method == METHOD_LZ4 {
            "LZ4"
        } else {
            "unknown"
        }
    );
}
