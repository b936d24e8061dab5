//! Sizes as the server reports them, after `OPTIMIZE TABLE … FINAL` (the
//! state a table's merges reach): per table from `system.parts`, per column
//! from `system.parts_columns`, active parts only. Both exist with these
//! columns on 18.16 and on current releases; `part_type` and the streams
//! inside a column (`subcolumns.*`) only on the latter.

use std::collections::HashMap;

use anyhow::Context;
use clickhouse::Client;

use super::report::{ColumnSize, Family, Substream, TableSize};

/// Merges every part of each partition into one.
pub async fn optimize(server: &Client, db: &str, table: &str) -> anyhow::Result<()> {
    server
        .query(&format!("OPTIMIZE TABLE {db}.{table} FINAL"))
        .execute()
        .await
        .with_context(|| format!("OPTIMIZE TABLE `{db}.{table}` FINAL"))
}

/// Current releases write parts under `min_bytes_for_wide_part` (10 MiB) in
/// the Compact format, one file for all columns, and `system.parts_columns`
/// reports 0 bytes for each column of such a part: the table is switched to
/// Wide parts for every size, before its OPTIMIZE rewrites it.
pub async fn make_wide(server: &Client, db: &str, table: &str) -> anyhow::Result<()> {
    server
        .query(&format!(
            "ALTER TABLE {db}.{table} MODIFY SETTING min_bytes_for_wide_part = 0"
        ))
        .execute()
        .await
        .with_context(|| format!("switching `{db}.{table}` to Wide parts"))
}

/// The table's active parts.
pub async fn table_size(
    server: &Client,
    db: &str,
    family: Family,
    table: &str,
    has_part_type: bool,
) -> anyhow::Result<TableSize> {
    let (parts, rows, bytes_on_disk, compressed, uncompressed, marks): (
        u64,
        u64,
        u64,
        u64,
        u64,
        u64,
    ) = server
        .query(
            "SELECT count(), sum(rows), sum(bytes_on_disk), sum(data_compressed_bytes), \
                 sum(data_uncompressed_bytes), sum(marks_bytes) \
                 FROM system.parts WHERE database = ? AND table = ? AND active",
        )
        .bind(db)
        .bind(table)
        .fetch_one()
        .await
        .with_context(|| format!("the parts of `{db}.{table}`"))?;
    let part_types: Vec<String> = if has_part_type {
        server
            .query(
                "SELECT DISTINCT part_type FROM system.parts \
                 WHERE database = ? AND table = ? AND active ORDER BY part_type",
            )
            .bind(db)
            .bind(table)
            .fetch_all()
            .await
            .with_context(|| format!("the part types of `{db}.{table}`"))?
    } else {
        Vec::new()
    };
    Ok(TableSize {
        family,
        table: table.to_string(),
        rows,
        parts,
        bytes_on_disk,
        data_compressed_bytes: compressed,
        data_uncompressed_bytes: uncompressed,
        marks_bytes: marks,
        part_types,
    })
}

/// The table's columns, largest on disk first; with the streams the server
/// lists inside each column where it has `subcolumns.*` (current releases).
pub async fn column_sizes(
    server: &Client,
    db: &str,
    table: &str,
    has_substreams: bool,
) -> anyhow::Result<Vec<ColumnSize>> {
    let mut substreams = if has_substreams {
        column_substreams(server, db, table).await?
    } else {
        HashMap::new()
    };
    let rows: Vec<(String, String, u64, u64, u64, u64)> = server
        .query(
            "SELECT column, any(type), sum(column_data_compressed_bytes), \
             sum(column_data_uncompressed_bytes), sum(column_bytes_on_disk), sum(column_marks_bytes) \
             FROM system.parts_columns WHERE database = ? AND table = ? AND active \
             GROUP BY column ORDER BY sum(column_bytes_on_disk) DESC, column",
        )
        .bind(db)
        .bind(table)
        .fetch_all()
        .await
        .with_context(|| format!("the columns of `{db}.{table}`"))?;
    Ok(rows
        .into_iter()
        .map(
            |(column, column_type, compressed, uncompressed, on_disk, marks)| ColumnSize {
                table: table.to_string(),
                substreams: substreams.remove(&column).unwrap_or_default(),
                column,
                column_type,
                compressed,
                uncompressed,
                on_disk,
                marks,
            },
        )
        .collect())
}

/// The streams listed inside each column (`subcolumns.*`), by column.
async fn column_substreams(
    server: &Client,
    db: &str,
    table: &str,
) -> anyhow::Result<HashMap<String, Vec<Substream>>> {
    let rows: Vec<(String, String, u64, u64, u64)> = server
        .query(
            "SELECT column, name, sum(compressed), sum(uncompressed), sum(on_disk) \
             FROM system.parts_columns \
             ARRAY JOIN `subcolumns.names` AS name, `subcolumns.data_compressed_bytes` AS compressed, \
             `subcolumns.data_uncompressed_bytes` AS uncompressed, `subcolumns.bytes_on_disk` AS on_disk \
             WHERE database = ? AND table = ? AND active GROUP BY column, name ORDER BY column, name",
        )
        .bind(db)
        .bind(table)
        .fetch_all()
        .await
        .with_context(|| format!("the column streams of `{db}.{table}`"))?;
    let mut by_column: HashMap<String, Vec<Substream>> = HashMap::new();
    for (column, name, compressed, uncompressed, on_disk) in rows {
        by_column.entry(column).or_default().push(Substream {
            name,
            compressed,
            uncompressed,
            on_disk,
        });
    }
    Ok(by_column)
}
