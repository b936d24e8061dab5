//! Exports of a selection: pprof (gzipped `perftools.profiles.Profile`, which
//! `go tool pprof` and other standard tooling open) and collapsed stacks
//! (`root;child;leaf value` per line, the flamegraph.pl input).

use std::collections::HashMap;
use std::io::Write;

use prost::Message;

use crate::store::StackValue;

/// The pprof messages, generated from `proto/pprof/profile.proto`.
pub mod pprof {
    include!(concat!(env!("OUT_DIR"), "/perftools.profiles.rs"));
}

/// What the exported values mean.
#[derive(Debug, Clone, Copy)]
pub struct ValueMeaning<'a> {
    /// The profile type, e.g. `cpu`.
    pub kind: &'a str,
    /// The value's unit, e.g. `nanoseconds`.
    pub unit: &'a str,
    /// Selection bounds, for `time_nanos` / `duration_nanos`.
    pub from_ms: i64,
    pub to_ms: i64,
}

/// Interns strings into a pprof string table (index 0 is "").
struct Strings {
    table: Vec<String>,
    index: HashMap<String, i64>,
}

impl Strings {
    fn new() -> Strings {
        Strings {
            table: vec![String::new()],
            index: HashMap::from([(String::new(), 0)]),
        }
    }

    fn get(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.table.len() as i64;
        self.table.push(s.to_string());
        self.index.insert(s.to_string(), i);
        i
    }
}

/// The selection as a pprof profile (not yet gzipped): one function and one
/// location per distinct frame name, one sample per stack, leaf first.
pub fn pprof_profile(stacks: &[StackValue], meaning: ValueMeaning<'_>) -> pprof::Profile {
    let mut strings = Strings::new();
    let sample_type = pprof::ValueType {
        r#type: strings.get(meaning.kind),
        unit: strings.get(meaning.unit),
    };
    let mut location_of: HashMap<&str, u64> = HashMap::new();
    let mut functions = Vec::new();
    let mut locations = Vec::new();
    let mut samples = Vec::with_capacity(stacks.len());
    for stack in stacks.iter().filter(|s| s.value != 0) {
        let mut ids = Vec::with_capacity(stack.frames.len());
        for frame in stack.frames.iter().rev() {
            let id = *location_of.entry(frame.as_str()).or_insert_with(|| {
                let id = functions.len() as u64 + 1;
                let name = strings.get(frame);
                functions.push(pprof::Function {
                    id,
                    name,
                    system_name: name,
                    ..Default::default()
                });
                locations.push(pprof::Location {
                    id,
                    line: vec![pprof::Line {
                        function_id: id,
                        line: 0,
                    }],
                    ..Default::default()
                });
                id
            });
            ids.push(id);
        }
        samples.push(pprof::Sample {
            location_id: ids,
            value: vec![stack.value],
            label: vec![],
        });
    }
    pprof::Profile {
        sample_type: vec![sample_type],
        sample: samples,
        location: locations,
        function: functions,
        time_nanos: meaning.from_ms.saturating_mul(1_000_000),
        duration_nanos: (meaning.to_ms - meaning.from_ms).saturating_mul(1_000_000),
        period_type: Some(sample_type),
        string_table: strings.table,
        ..Default::default()
    }
}

/// The gzipped encoding of [`pprof_profile`].
pub fn pprof_gzip(stacks: &[StackValue], meaning: ValueMeaning<'_>) -> std::io::Result<Vec<u8>> {
    let bytes = pprof_profile(stacks, meaning).encode_to_vec();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&bytes)?;
    gz.finish()
}

/// Collapsed stacks: `frame;frame;frame value`, root first, heaviest first.
/// `;` inside a frame name is replaced by `:` so the line stays parseable.
pub fn collapsed(stacks: &[StackValue]) -> String {
    let mut lines: Vec<(&StackValue, String)> = stacks
        .iter()
        .filter(|s| s.value != 0)
        .map(|s| {
            let path: Vec<String> = s.frames.iter().map(|f| f.replace(';', ":")).collect();
            (s, path.join(";"))
        })
        .collect();
    lines.sort_by(|a, b| b.0.value.cmp(&a.0.value).then(a.1.cmp(&b.1)));
    let mut out = String::new();
    for (s, path) in lines {
        out.push_str(&path);
        out.push(' ');
        out.push_str(&s.value.to_string());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stack(frames: &[&str], value: i64) -> StackValue {
        StackValue::of(frames, value)
    }

    #[test]
    fn pprof_samples_are_leaf_first_with_shared_locations() {
        let stacks = [stack(&["main", "a"], 3), stack(&["main", "b"], 5)];
        let meaning = ValueMeaning {
            kind: "cpu",
            unit: "nanoseconds",
            from_ms: 1,
            to_ms: 2,
        };
        let p = pprof_profile(&stacks, meaning);
        assert_eq!(p.string_table[0], "");
        assert_eq!(p.function.len(), 3, "main, a, b");
        let name = |loc: u64| {
            let f = &p.function[(loc - 1) as usize];
            p.string_table[f.name as usize].clone()
        };
        assert_eq!(name(p.sample[0].location_id[0]), "a");
        assert_eq!(name(p.sample[0].location_id[1]), "main");
        assert_eq!(p.sample.iter().map(|s| s.value[0]).sum::<i64>(), 8);
    }

    #[test]
    fn collapsed_lines_are_heaviest_first_and_escape_separators() {
        let text = collapsed(&[stack(&["main", "a;b"], 3), stack(&["main", "c"], 5)]);
        assert_eq!(text, "main;c 5\nmain;a:b 3\n");
    }
}
