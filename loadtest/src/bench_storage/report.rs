//! What a run measured, its ratios, and the markdown it prints: bytes per row
//! per table and per column, and Javelin against the Coroot-shaped anchor, per
//! engine.

use std::fmt::Write as _;

use serde::Serialize;

use super::seed::{Seeded, Shape};

/// Whose layout a table is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Javelin,
    /// The Coroot-shaped anchor.
    Coroot,
}

impl Family {
    fn label(self) -> &'static str {
        match self {
            Family::Javelin => "Javelin",
            Family::Coroot => "Coroot-shaped",
        }
    }
}

/// The measured tables, in report order.
pub const TABLES: [(Family, &str); 6] = [
    (Family::Javelin, "samples"),
    (Family::Javelin, "stacks"),
    (Family::Javelin, "stored_parts"),
    (Family::Javelin, "ingest_ledger"),
    (Family::Coroot, "profiling_samples"),
    (Family::Coroot, "profiling_stacks"),
];

const JAVELIN_SAMPLES: &str = "samples";
const COROOT_SAMPLES: &str = "profiling_samples";

/// One table's active parts (`system.parts`).
#[derive(Debug, Clone, Serialize)]
pub struct TableSize {
    pub family: Family,
    pub table: String,
    pub rows: u64,
    pub parts: u64,
    pub bytes_on_disk: u64,
    pub data_compressed_bytes: u64,
    pub data_uncompressed_bytes: u64,
    pub marks_bytes: u64,
    /// Formats of the active parts (`Wide`, `Compact`); empty where the server
    /// has only one format (18.16).
    pub part_types: Vec<String>,
}

/// One column of one table's active parts (`system.parts_columns`).
#[derive(Debug, Clone, Serialize)]
pub struct ColumnSize {
    pub table: String,
    pub column: String,
    pub column_type: String,
    pub compressed: u64,
    pub uncompressed: u64,
    /// Compressed data and marks.
    pub on_disk: u64,
    pub marks: u64,
    /// The streams the server lists under the column (current releases
    /// only: e.g. a Map's `size0`, `keys`, `values`, `values.size`).
    pub substreams: Vec<Substream>,
}

/// One stream of a column (`system.parts_columns.subcolumns.*`).
#[derive(Debug, Clone, Serialize)]
pub struct Substream {
    pub name: String,
    pub compressed: u64,
    pub uncompressed: u64,
    pub on_disk: u64,
}

/// Javelin against the anchor on one engine.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Ratios {
    pub javelin_samples_bytes_per_row: f64,
    pub coroot_samples_bytes_per_row: f64,
    /// Javelin `samples` / Coroot-shaped `profiling_samples`, bytes per row.
    pub samples: f64,
    /// Bytes of Javelin's four tables per `samples` row.
    pub javelin_all_bytes_per_sample_row: f64,
    /// Bytes of the two Coroot-shaped tables per `profiling_samples` row.
    pub coroot_all_bytes_per_sample_row: f64,
    /// The two above divided.
    pub all_tables: f64,
}

/// One engine's measurements, or why there are none.
#[derive(Debug, Clone, Serialize)]
pub struct EngineResult {
    /// `18.16` or `26.9`.
    pub engine: String,
    pub server_version: String,
    /// What differs from the plain plan on this engine (settings, types).
    pub notes: Vec<String>,
    /// From the consumer's start until every row was stored.
    pub store_secs: f64,
    pub tables: Vec<TableSize>,
    pub columns: Vec<ColumnSize>,
    pub ratios: Option<Ratios>,
    pub error: Option<String>,
}

impl EngineResult {
    pub fn failed(engine: &str, error: String) -> EngineResult {
        EngineResult {
            engine: engine.to_string(),
            server_version: String::new(),
            notes: Vec::new(),
            store_secs: 0.0,
            tables: Vec::new(),
            columns: Vec::new(),
            ratios: None,
            error: Some(error),
        }
    }
}

/// The JSON report.
#[derive(Debug, Serialize)]
pub struct Report {
    pub run: String,
    pub started_at_ms: i64,
    pub shape: Shape,
    pub seeded: Seeded,
    /// Where the anchor's DDL comes from.
    pub anchor_source: String,
    /// How each pod-window's samples entered the anchor.
    pub anchor_order: super::anchor::FillOrder,
    pub notes: Vec<String>,
    pub engines: Vec<EngineResult>,
    pub wall_secs: f64,
}

fn per_row(bytes: u64, rows: u64) -> f64 {
    if rows == 0 {
        0.0
    } else {
        bytes as f64 / rows as f64
    }
}

/// The ratios, when both samples tables have rows.
pub fn ratios(tables: &[TableSize]) -> Option<Ratios> {
    let find = |family: Family, name: &str| {
        tables
            .iter()
            .find(|t| t.family == family && t.table == name)
    };
    let javelin = find(Family::Javelin, JAVELIN_SAMPLES)?;
    let coroot = find(Family::Coroot, COROOT_SAMPLES)?;
    if javelin.rows == 0 || coroot.rows == 0 || coroot.bytes_on_disk == 0 {
        return None;
    }
    let total = |family: Family| -> u64 {
        tables
            .iter()
            .filter(|t| t.family == family)
            .map(|t| t.bytes_on_disk)
            .sum()
    };
    let (js, cs) = (
        per_row(javelin.bytes_on_disk, javelin.rows),
        per_row(coroot.bytes_on_disk, coroot.rows),
    );
    let (ja, ca) = (
        per_row(total(Family::Javelin), javelin.rows),
        per_row(total(Family::Coroot), coroot.rows),
    );
    Some(Ratios {
        javelin_samples_bytes_per_row: js,
        coroot_samples_bytes_per_row: cs,
        samples: js / cs,
        javelin_all_bytes_per_sample_row: ja,
        coroot_all_bytes_per_sample_row: ca,
        all_tables: ja / ca,
    })
}

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Bytes in MiB, or KiB below one MiB.
fn mib(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{:.2} MiB", bytes as f64 / (1024.0 * 1024.0))
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}

/// The report as markdown: a summary line per engine, then each engine's
/// tables and the per-column sizes of the two samples tables.
pub fn markdown(report: &Report) -> String {
    let mut out = String::new();
    let (shape, seeded) = (&report.shape, &report.seeded);
    let _ = writeln!(
        out,
        "## bench-storage: {} sample rows\n",
        thousands(seeded.sample_rows)
    );
    let _ = writeln!(
        out,
        "1 service × {} windows of {} s × {} pods; {} stacks (mean depth {:.1} frames); {} CPU samples \
         per pod and window drawn over Zipf({}) weights (value = count × 10 ms); seed {}; {} messages. \
         Sizes after `OPTIMIZE TABLE … FINAL` of every table. Anchor: {}, each pod-window's \
         samples entered in {:?} order.\n",
        shape.windows,
        shape.window_secs,
        shape.pods,
        thousands(u64::from(shape.stacks)),
        seeded.mean_depth,
        thousands(u64::from(shape.samples_per_window)),
        shape.zipf_exponent,
        shape.seed,
        thousands(seeded.messages),
        report.anchor_source,
        report.anchor_order
    );
    out.push_str(
        "| engine | Javelin `samples` B/row | Coroot-shaped `profiling_samples` B/row | ratio \
         | Javelin, 4 tables, B/sample row | Coroot-shaped, 2 tables, B/sample row | ratio |\n",
    );
    out.push_str("|---|---|---|---|---|---|---|\n");
    for e in &report.engines {
        match &e.ratios {
            Some(r) => {
                let _ = writeln!(
                    out,
                    "| {} | {:.2} | {:.2} | **{:.2}×** | {:.2} | {:.2} | **{:.2}×** |",
                    e.engine,
                    r.javelin_samples_bytes_per_row,
                    r.coroot_samples_bytes_per_row,
                    r.samples,
                    r.javelin_all_bytes_per_sample_row,
                    r.coroot_all_bytes_per_sample_row,
                    r.all_tables
                );
            }
            None => {
                let _ = writeln!(out, "| {} | failed | | | | | |", e.engine);
            }
        }
    }
    out.push_str("\nIssue 18's target: ratio ≤ 0.50× on both engines.\n");
    for note in &report.notes {
        let _ = writeln!(out, "- {note}");
    }
    for e in &report.engines {
        engine_section(&mut out, e);
    }
    let _ = writeln!(out, "\nWall time: {:.0} s.", report.wall_secs);
    out
}

fn engine_section(out: &mut String, e: &EngineResult) {
    if let Some(error) = &e.error {
        let _ = writeln!(
            out,
            "\n### ClickHouse {}: FAILED\n\n```\n{error}\n```",
            e.engine
        );
        return;
    }
    let _ = writeln!(
        out,
        "\n### ClickHouse {} (server {}), stored by the consumer in {:.1} s\n",
        e.engine, e.server_version, e.store_secs
    );
    for note in &e.notes {
        let _ = writeln!(out, "- {note}");
    }
    if !e.notes.is_empty() {
        out.push('\n');
    }
    let sample_rows = |family: Family| {
        let name = match family {
            Family::Javelin => JAVELIN_SAMPLES,
            Family::Coroot => COROOT_SAMPLES,
        };
        e.tables
            .iter()
            .find(|t| t.family == family && t.table == name)
            .map_or(0, |t| t.rows)
    };
    out.push_str("| table | rows | parts | bytes on disk | bytes / row | bytes / sample row |\n");
    out.push_str("|---|---|---|---|---|---|\n");
    for family in [Family::Javelin, Family::Coroot] {
        let tables: Vec<&TableSize> = e.tables.iter().filter(|t| t.family == family).collect();
        for t in &tables {
            let _ = writeln!(
                out,
                "| {} `{}` | {} | {}{} | {} | {:.2} | {:.2} |",
                family.label(),
                t.table,
                thousands(t.rows),
                t.parts,
                if t.part_types.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", t.part_types.join(", "))
                },
                mib(t.bytes_on_disk),
                per_row(t.bytes_on_disk, t.rows),
                per_row(t.bytes_on_disk, sample_rows(family))
            );
        }
        let total: u64 = tables.iter().map(|t| t.bytes_on_disk).sum();
        let _ = writeln!(
            out,
            "| **{}, {} tables** | | | **{}** | | **{:.2}** |",
            family.label(),
            tables.len(),
            mib(total),
            per_row(total, sample_rows(family))
        );
    }
    for (family, table) in [
        (Family::Javelin, JAVELIN_SAMPLES),
        (Family::Coroot, COROOT_SAMPLES),
    ] {
        column_table(out, e, family, table);
    }
}

fn column_table(out: &mut String, e: &EngineResult, family: Family, table: &str) {
    let Some(size) = e
        .tables
        .iter()
        .find(|t| t.family == family && t.table == table)
    else {
        return;
    };
    let columns: Vec<&ColumnSize> = e.columns.iter().filter(|c| c.table == table).collect();
    let _ = writeln!(
        out,
        "\n{} `{table}` per column (on disk = compressed data + marks; bytes / row = on disk / {} rows):\n",
        family.label(),
        thousands(size.rows)
    );
    out.push_str("| column | type | compressed | uncompressed | on disk | bytes / row |\n");
    out.push_str("|---|---|---|---|---|---|\n");
    for c in &columns {
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} | {} | {:.3} |",
            c.column,
            c.column_type,
            mib(c.compressed),
            mib(c.uncompressed),
            mib(c.on_disk),
            per_row(c.on_disk, size.rows)
        );
    }
    let on_disk: u64 = columns.iter().map(|c| c.on_disk).sum();
    let listed: Vec<String> = columns
        .iter()
        .filter(|c| !c.substreams.is_empty())
        .map(|c| {
            let streams: Vec<String> = c
                .substreams
                .iter()
                .map(|s| format!("`{}` {}", s.name, mib(s.on_disk)))
                .collect();
            format!("`{}`: {}", c.column, streams.join(", "))
        })
        .collect();
    let _ = writeln!(
        out,
        "| **all columns** | | {} | {} | {} | {:.3} |",
        mib(columns.iter().map(|c| c.compressed).sum()),
        mib(columns.iter().map(|c| c.uncompressed).sum()),
        mib(on_disk),
        per_row(on_disk, size.rows)
    );
    let _ = writeln!(
        out,
        "\nColumns on disk: {} of the table's {} bytes on disk ({:.1} %; the rest is the primary index, \
         checksums, partition and min-max files{}).",
        thousands(on_disk),
        thousands(size.bytes_on_disk),
        if size.bytes_on_disk == 0 {
            0.0
        } else {
            100.0 * on_disk as f64 / size.bytes_on_disk as f64
        },
        if on_disk > size.bytes_on_disk {
            "; more than 100 %: some files are counted under more than one column"
        } else {
            ""
        }
    );
    if !listed.is_empty() {
        let _ = writeln!(
            out,
            "\nStreams the server lists inside columns (on disk): {}.",
            listed.join("; ")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(family: Family, name: &str, rows: u64, bytes: u64) -> TableSize {
        TableSize {
            family,
            table: name.to_string(),
            rows,
            parts: 1,
            bytes_on_disk: bytes,
            data_compressed_bytes: bytes,
            data_uncompressed_bytes: bytes * 4,
            marks_bytes: 0,
            part_types: vec!["Wide".into()],
        }
    }

    fn fixture() -> Vec<TableSize> {
        vec![
            table(Family::Javelin, "samples", 1000, 3000),
            table(Family::Javelin, "stacks", 10, 500),
            table(Family::Javelin, "stored_parts", 5, 100),
            table(Family::Javelin, "ingest_ledger", 5, 400),
            table(Family::Coroot, "profiling_samples", 1000, 2000),
            table(Family::Coroot, "profiling_stacks", 10, 500),
        ]
    }

    #[test]
    fn ratios_divide_bytes_per_row_and_totals_per_sample_row() {
        let r = ratios(&fixture()).expect("ratios");
        assert_eq!(r.javelin_samples_bytes_per_row, 3.0);
        assert_eq!(r.coroot_samples_bytes_per_row, 2.0);
        assert_eq!(r.samples, 1.5);
        assert_eq!(r.javelin_all_bytes_per_sample_row, 4.0);
        assert_eq!(r.coroot_all_bytes_per_sample_row, 2.5);
        assert_eq!(r.all_tables, 1.6);
    }

    #[test]
    fn no_ratios_without_rows_on_both_sides() {
        let mut tables = fixture();
        tables.retain(|t| t.table != "profiling_samples");
        assert_eq!(ratios(&tables), None);
        let mut tables = fixture();
        tables[0].rows = 0;
        assert_eq!(ratios(&tables), None);
    }

    #[test]
    fn markdown_shows_ratios_tables_columns_and_failures() {
        let tables = fixture();
        let ok = EngineResult {
            engine: "26.9".into(),
            server_version: "26.9.1".into(),
            notes: vec!["min_bytes_for_wide_part = 0".into()],
            store_secs: 12.0,
            ratios: ratios(&tables),
            tables,
            columns: vec![
                ColumnSize {
                    table: "samples".into(),
                    column: "stack_id".into(),
                    column_type: "UInt64".into(),
                    compressed: 2000,
                    uncompressed: 8000,
                    on_disk: 2100,
                    marks: 100,
                    substreams: vec![],
                },
                ColumnSize {
                    table: "profiling_samples".into(),
                    column: "StackHash".into(),
                    column_type: "UInt64".into(),
                    compressed: 1500,
                    uncompressed: 8000,
                    on_disk: 1600,
                    marks: 100,
                    substreams: vec![Substream {
                        name: "size0".into(),
                        compressed: 10,
                        uncompressed: 40,
                        on_disk: 2048,
                    }],
                },
            ],
            error: None,
        };
        let report = Report {
            run: "r".into(),
            started_at_ms: 0,
            shape: Shape {
                pods: 2,
                windows: 3,
                window_secs: 60,
                stacks: 10,
                samples_per_window: 12_000,
                zipf_exponent: 1.1,
                seed: 42,
            },
            seeded: Seeded {
                sample_rows: 1000,
                messages: 6,
                payload_bytes: 0,
                mean_depth: 60.0,
                first_window_ms: 0,
                publish_secs: 1.0,
            },
            anchor_source: "coroot".into(),
            anchor_order: super::super::anchor::FillOrder::Profile,
            notes: vec![],
            engines: vec![ok, EngineResult::failed("18.16", "boom".into())],
            wall_secs: 3.0,
        };
        let md = markdown(&report);
        assert!(
            md.contains("| 26.9 | 3.00 | 2.00 | **1.50×** | 4.00 | 2.50 | **1.60×** |"),
            "{md}"
        );
        assert!(md.contains("| 18.16 | failed |"), "{md}");
        assert!(
            md.contains("| Javelin `samples` | 1,000 | 1 (Wide) | 2.9 KiB | 3.00 | 3.00 |"),
            "{md}"
        );
        assert!(
            md.contains("| **Javelin, 4 tables** | | | **3.9 KiB** | | **4.00** |"),
            "{md}"
        );
        assert!(md.contains("| `stack_id` | UInt64 |"), "{md}");
        assert!(md.contains("| `StackHash` | UInt64 |"), "{md}");
        assert!(
            md.contains("Columns on disk: 2,100 of the table's 3,000 bytes on disk (70.0 %"),
            "{md}"
        );
        assert!(md.contains("ClickHouse 18.16: FAILED"), "{md}");
        assert!(
            md.contains(
                "Streams the server lists inside columns (on disk): `StackHash`: `size0` 2.0 KiB."
            ),
            "{md}"
        );
        assert!(md.contains("- min_bytes_for_wide_part = 0"), "{md}");
    }

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(4_500_000), "4,500,000");
    }
}
