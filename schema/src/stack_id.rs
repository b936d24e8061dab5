//! Stable stack ids.
//!
//! A stack id is XXH3-64 over a version byte followed by each frame, root first:
//! a little-endian `u32` length and the frame's UTF-8 name, then its line
//! (`i32` LE) and frame type (`i32` LE). The length prefix is the separator:
//! `["a.b", "c"]` and `["a", "b.c"]` can never hash alike by construction.
//! Changing anything here changes every id in storage, so bump
//! [`STACK_ID_VERSION`] instead of editing the scheme in place.

use xxhash_rust::xxh3::Xxh3;

/// Version of the hashing scheme, mixed into every id.
pub const STACK_ID_VERSION: u8 = 2;

/// One frame as the stack id sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameKey<'a> {
    pub name: &'a str,
    /// Source line; 0 = unknown.
    pub line: i32,
    /// `wire::FrameType` as its number; 0 = unspecified.
    pub kind: i32,
}

impl<'a> FrameKey<'a> {
    /// A frame known only by name (synthetic frames, tests).
    pub fn name(name: &'a str) -> FrameKey<'a> {
        FrameKey {
            name,
            line: 0,
            kind: 0,
        }
    }
}

/// The stable id of a stack given its frames, root first.
pub fn stack_id<'a>(frames: impl IntoIterator<Item = FrameKey<'a>>) -> u64 {
    let mut hasher = Xxh3::new();
    hasher.update(&[STACK_ID_VERSION]);
    for frame in frames {
        let bytes = frame.name.as_bytes();
        // Frames longer than 4 GiB cannot come out of a JFR string pool; saturate rather than wrap.
        let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        hasher.update(&len.to_le_bytes());
        hasher.update(bytes);
        hasher.update(&frame.line.to_le_bytes());
        hasher.update(&frame.kind.to_le_bytes());
    }
    hasher.digest()
}

/// The id of a stack of names only (no line or type known).
pub fn stack_id_of_names<S: AsRef<str>>(names: &[S]) -> u64 {
    stack_id(names.iter().map(|n| FrameKey::name(n.as_ref())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separators_distinguish_frame_boundaries() {
        assert_ne!(
            stack_id_of_names(&["a.b", "c"]),
            stack_id_of_names(&["a", "b.c"])
        );
        assert_ne!(stack_id_of_names(&["ab"]), stack_id_of_names(&["a", "b"]));
        assert_ne!(stack_id_of_names::<&str>(&[]), stack_id_of_names(&[""]));
    }

    #[test]
    fn lines_and_types_are_part_of_the_identity() {
        let at = |line, kind| {
            stack_id([FrameKey {
                name: "Demo.cpuBurn",
                line,
                kind,
            }])
        };
        assert_ne!(at(12, 2), at(13, 2));
        assert_ne!(at(12, 2), at(12, 3));
        assert_eq!(at(0, 0), stack_id_of_names(&["Demo.cpuBurn"]));
    }

    #[test]
    fn order_matters_and_ids_are_stable() {
        let a = stack_id_of_names(&["java.lang.Thread.run", "Demo.cpuBurn"]);
        assert_ne!(
            a,
            stack_id_of_names(&["Demo.cpuBurn", "java.lang.Thread.run"])
        );
        assert_eq!(
            a,
            stack_id_of_names(&[
                String::from("java.lang.Thread.run"),
                String::from("Demo.cpuBurn")
            ])
        );
        // Pinned: every agent build must compute exactly this value for this stack.
        assert_eq!(a, 0x061e_ce01_eac1_e218);
    }
}
