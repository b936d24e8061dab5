//! Stable stack ids.
//!
//! A stack id is XXH3-64 over a version byte followed by each frame, root first,
//! as a little-endian `u32` length and the frame's UTF-8 bytes. The length prefix
//! is the separator: `["a.b", "c"]` and `["a", "b.c"]` can never hash alike by
//! construction. Changing anything here changes every id in storage, so bump
//! [`STACK_ID_VERSION`] instead of editing the scheme in place.

use xxhash_rust::xxh3::Xxh3;

/// Version of the hashing scheme, mixed into every id.
pub const STACK_ID_VERSION: u8 = 1;

/// The stable id of a stack given its frames, root first.
pub fn stack_id<S: AsRef<str>>(frames: &[S]) -> u64 {
    let mut hasher = Xxh3::new();
    hasher.update(&[STACK_ID_VERSION]);
    for frame in frames {
        let bytes = frame.as_ref().as_bytes();
        // Frames longer than 4 GiB cannot come out of a JFR string pool; saturate rather than wrap.
        let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        hasher.update(&len.to_le_bytes());
        hasher.update(bytes);
    }
    hasher.digest()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separators_distinguish_frame_boundaries() {
        assert_ne!(stack_id(&["a.b", "c"]), stack_id(&["a", "b.c"]));
        assert_ne!(stack_id(&["ab"]), stack_id(&["a", "b"]));
        assert_ne!(stack_id::<&str>(&[]), stack_id(&[""]));
    }

    #[test]
    fn order_matters_and_ids_are_stable() {
        let a = stack_id(&["java.lang.Thread.run", "Demo.cpuBurn"]);
        assert_ne!(a, stack_id(&["Demo.cpuBurn", "java.lang.Thread.run"]));
        // Pinned: every agent build must compute exactly this value for this stack.
        assert_eq!(
            a,
            stack_id(&[
                String::from("java.lang.Thread.run"),
                String::from("Demo.cpuBurn")
            ])
        );
        assert_eq!(a, 0x348d_c3d2_e047_e216);
    }
}
