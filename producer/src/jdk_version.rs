//! The Java feature version of a target JVM, from its `VM.version` diagnostic
//! command: recorders choose what the JVM can do by it (JDK 25's CPU-time
//! sampler, for one).

use crate::attach::{AttachError, AttachTarget};

/// The feature version (`17`, `25`; `8` for `1.8`) in a `VM.version` reply's
/// `JDK <version>` line (JDK 8 prints `JDK 8.0_x`, JDK 9+ `JDK 17.0.15`).
/// The VM's own `version` line is not used: JDK 8's HotSpot calls itself 25.x.
pub fn parse_vm_version(text: &str) -> Option<u32> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix("JDK "))
        .and_then(feature)
}

/// `25.0.3+9-LTS` → 25, `1.8.0_402` → 8, `8.0_402` → 8.
fn feature(version: &str) -> Option<u32> {
    let digits = |s: &str| -> Option<u32> {
        let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        s[..end].parse().ok()
    };
    let version = version.trim();
    match digits(version)? {
        1 => version.strip_prefix("1.").and_then(digits),
        n => Some(n),
    }
}

/// Asks the JVM for its version. `Ok(None)` when it answers something that
/// does not name one (the caller then assumes the oldest supported JDK);
/// attach failures are errors.
pub fn feature_version(target: &AttachTarget) -> Result<Option<u32>, AttachError> {
    match target.jcmd("VM.version") {
        Ok(reply) => Ok(parse_vm_version(&reply.text)),
        Err(AttachError::Failed { .. } | AttachError::Malformed(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_of_real_replies() {
        // jcmd <pid> VM.version on the JDKs installed here, and JDK 8's form.
        let jdk25 = "OpenJDK 64-Bit Server VM version 25.0.3+9-LTS\nJDK 25.0.3\n";
        let jdk17 = "OpenJDK 64-Bit Server VM version 17.0.15+6-Debian-1deb12u1\nJDK 17.0.15\n";
        let jdk8 = "OpenJDK 64-Bit Server VM version 25.402-b06\nJDK 8.0_402\n";
        assert_eq!(parse_vm_version(jdk25), Some(25));
        assert_eq!(parse_vm_version(jdk17), Some(17));
        assert_eq!(parse_vm_version(jdk8), Some(8));
        assert_eq!(parse_vm_version("JDK 1.8.0_401\n"), Some(8));
        // No JDK line: unknown, never JDK 8's HotSpot "version 25.402".
        assert_eq!(
            parse_vm_version("OpenJDK 64-Bit Server VM version 25.402-b06\n"),
            None
        );
        assert_eq!(parse_vm_version(""), None);
        assert_eq!(parse_vm_version("JDK unknown\n"), None);
    }
}
