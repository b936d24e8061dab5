//! Whether a HotSpot JVM runs with `-XX:+DisableAttachMechanism`, read from
//! every place the JVM takes options from, in the JVM's own order.
//!
//! Order, checked with `java -XX:+PrintFlagsFinal -version` on JDK 17 (the last
//! occurrence wins): `JAVA_TOOL_OPTIONS`; then the command line as the `java`
//! launcher builds it — `JDK_JAVA_OPTIONS` prepended, `@argfiles` expanded in
//! place (also inside `JDK_JAVA_OPTIONS`), `-XX:VMOptionsFile=` expanded in
//! place, nothing after the main class, jar or module (those are the
//! application's arguments); then `_JAVA_OPTIONS`. `JDK_JAVA_OPTIONS` and
//! `@argfiles` are the `java` launcher's (JDK 9+), so they count only when the
//! process is `java`. `-XX:DisableAttachMechanism=true` is not accepted by
//! HotSpot ("Missing +/- setting"), so only `+`/`-` forms exist.
//!
//! A JVM found disabled is never signalled: SIGQUIT without an attach listener
//! to start prints a full thread dump into the application's stdout.

/// The flag's two spellings.
const ENABLED: &str = "-XX:+DisableAttachMechanism";
const DISABLED: &str = "-XX:-DisableAttachMechanism";
/// Launcher options whose value is the next argument (also used to find the main class).
pub(crate) const WITH_VALUE: &[&str] = &[
    "-cp",
    "-classpath",
    "--class-path",
    "-p",
    "--module-path",
    "--add-modules",
    "--add-opens",
    "--add-exports",
    "--add-reads",
    "--patch-module",
    "--limit-modules",
    "--upgrade-module-path",
    "--enable-native-access",
];

/// What the JVM was started with, as read from /proc.
#[derive(Debug)]
pub struct Sources<'a> {
    /// `/proc/<pid>/cmdline`.
    pub cmdline: &'a [String],
    /// `/proc/<pid>/environ`, `KEY=value` entries.
    pub environ: &'a [String],
    /// The process is the `java` launcher (its executable is named `java`).
    pub launcher: bool,
}

impl Sources<'_> {
    fn env(&self, key: &str) -> Option<&str> {
        self.environ
            .iter()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
    }

    /// Whether `-XX:+DisableAttachMechanism` is in effect. `read_file` reads
    /// an argfile or options file by the path the JVM was given (relative to
    /// its working directory); `None` when it cannot be read (then it counts
    /// as empty).
    pub fn attach_disabled(&self, read_file: impl Fn(&str) -> Option<String>) -> bool {
        let mut options: Vec<String> = Vec::new();
        if let Some(v) = self.env("JAVA_TOOL_OPTIONS") {
            options.extend(split_options(v));
        }
        let mut walk = Walk {
            read_file: &read_file,
            launcher: self.launcher,
            pending_value: false,
            done: false,
            options: &mut options,
        };
        if let Some(v) = self.env("JDK_JAVA_OPTIONS")
            && self.launcher
        {
            walk.args(split_options(v), true);
        }
        walk.args(self.cmdline.iter().skip(1).cloned().collect(), true);
        if let Some(v) = self.env("_JAVA_OPTIONS") {
            options.extend(split_options(v));
        }
        options
            .iter()
            .rev()
            .find_map(|o| match o.as_str() {
                ENABLED => Some(true),
                DISABLED => Some(false),
                _ => None,
            })
            .unwrap_or(false)
    }
}

/// The launcher's walk over its arguments, collecting JVM options until the
/// main class.
struct Walk<'a, F: Fn(&str) -> Option<String>> {
    read_file: &'a F,
    launcher: bool,
    /// The previous argument takes this one as its value.
    pending_value: bool,
    /// The main class, jar or module was reached.
    done: bool,
    options: &'a mut Vec<String>,
}

impl<F: Fn(&str) -> Option<String>> Walk<'_, F> {
    /// `files`: `@argfiles` are expanded (not inside an argfile: no nesting).
    fn args(&mut self, args: Vec<String>, files: bool) {
        for arg in args {
            if self.done {
                return;
            }
            if files && self.launcher && arg.starts_with('@') && !arg.starts_with("@@") {
                let tokens = (self.read_file)(&arg[1..])
                    .map(|text| split_argfile(&text))
                    .unwrap_or_default();
                self.args(tokens, false);
                continue;
            }
            if std::mem::take(&mut self.pending_value) {
                continue;
            }
            if let Some(file) = arg.strip_prefix("-XX:VMOptionsFile=") {
                if let Some(text) = (self.read_file)(file) {
                    self.options.extend(split_options(&text));
                }
                continue;
            }
            if arg == "-jar" || arg == "-m" || arg == "--module" {
                self.done = true;
            } else if WITH_VALUE.contains(&arg.as_str()) {
                self.pending_value = true;
            } else if arg.starts_with('-') {
                self.options.push(arg);
            } else {
                self.done = true;
            }
        }
    }
}

/// Splits an option string the way HotSpot splits `JAVA_TOOL_OPTIONS` (and the
/// launcher `JDK_JAVA_OPTIONS`): on whitespace, with `'…'` or `"…"` keeping
/// whitespace and the quotes removed.
pub fn split_options(text: &str) -> Vec<String> {
    split(text, false)
}

/// Splits an `@argfile`: like [`split_options`], plus `#` comments to the end
/// of the line and backslash escapes inside quotes.
pub fn split_argfile(text: &str) -> Vec<String> {
    split(text, true)
}

fn split(text: &str, argfile: bool) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut in_token = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_token {
                    out.push(std::mem::take(&mut current));
                    in_token = false;
                }
            }
            '#' if argfile && !in_token => {
                for c in chars.by_ref() {
                    if c == '\n' || c == '\r' {
                        break;
                    }
                }
            }
            '"' | '\'' => {
                in_token = true;
                while let Some(q) = chars.next() {
                    if q == c {
                        break;
                    }
                    if argfile && q == '\\' {
                        match chars.next() {
                            Some('n') => current.push('\n'),
                            Some('t') => current.push('\t'),
                            Some('r') => current.push('\r'),
                            Some(other) => current.push(other),
                            None => {}
                        }
                        continue;
                    }
                    current.push(q);
                }
            }
            c => {
                in_token = true;
                current.push(c);
            }
        }
    }
    if in_token {
        out.push(current);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn disabled(cmdline: &[&str], environ: &[&str], files: &[(&str, &str)]) -> bool {
        let (cmdline, environ) = (strings(cmdline), strings(environ));
        Sources {
            cmdline: &cmdline,
            environ: &environ,
            launcher: true,
        }
        .attach_disabled(|path| {
            files
                .iter()
                .find(|(p, _)| *p == path)
                .map(|(_, t)| t.to_string())
        })
    }

    #[test]
    fn every_source_counts() {
        assert!(disabled(&["java", ENABLED, "Main"], &[], &[]));
        assert!(disabled(
            &["java", "Main"],
            &["JAVA_TOOL_OPTIONS=-Xmx1g -XX:+DisableAttachMechanism"],
            &[]
        ));
        assert!(disabled(
            &["java", "Main"],
            &["JDK_JAVA_OPTIONS=-XX:+DisableAttachMechanism"],
            &[]
        ));
        assert!(disabled(
            &["java", "Main"],
            &["_JAVA_OPTIONS=-XX:+DisableAttachMechanism"],
            &[]
        ));
        assert!(disabled(
            &["java", "@opts", "Main"],
            &[],
            &[("opts", "# c\n-XX:+DisableAttachMechanism\n")]
        ));
        assert!(disabled(
            &["java", "Main"],
            &["JDK_JAVA_OPTIONS=@opts"],
            &[("opts", ENABLED)]
        ));
        assert!(disabled(
            &["java", "-XX:VMOptionsFile=f", "Main"],
            &[],
            &[("f", ENABLED)]
        ));
        assert!(!disabled(&["java", "-Xmx1g", "Main"], &["PATH=/bin"], &[]));
    }

    #[test]
    fn the_last_occurrence_wins_in_the_jvms_order() {
        // Same verdicts as `java -XX:+PrintFlagsFinal -version` on JDK 17.
        assert!(!disabled(
            &["java", DISABLED, "Main"],
            &["JAVA_TOOL_OPTIONS=-XX:+DisableAttachMechanism"],
            &[]
        ));
        assert!(!disabled(
            &["java", ENABLED, "Main"],
            &["_JAVA_OPTIONS=-XX:-DisableAttachMechanism"],
            &[]
        ));
        assert!(!disabled(
            &["java", DISABLED, "Main"],
            &["JDK_JAVA_OPTIONS=-XX:+DisableAttachMechanism"],
            &[]
        ));
        assert!(disabled(
            &["java", DISABLED, "@plus", "Main"],
            &[],
            &[("plus", ENABLED)]
        ));
        assert!(!disabled(&["java", ENABLED, DISABLED, "Main"], &[], &[]));
        assert!(disabled(
            &["java", "Main"],
            &[
                "JAVA_TOOL_OPTIONS=-XX:-DisableAttachMechanism",
                "_JAVA_OPTIONS=-XX:+DisableAttachMechanism"
            ],
            &[]
        ));
    }

    #[test]
    fn application_arguments_and_values_are_not_jvm_options() {
        assert!(!disabled(&["java", "Main", ENABLED], &[], &[]));
        assert!(!disabled(&["java", "-jar", "app.jar", ENABLED], &[], &[]));
        assert!(!disabled(
            &["java", "-cp", "@notafile", "Main"],
            &[],
            &[("notafile", ENABLED)]
        ));
        assert!(!disabled(
            &["java", "Main", "@opts"],
            &[],
            &[("opts", ENABLED)]
        ));
        // The main class may come from an argfile; what follows is the application's.
        assert!(!disabled(
            &["java", "@opts", ENABLED],
            &[],
            &[("opts", "Main")]
        ));
        // Only the java launcher reads JDK_JAVA_OPTIONS and argfiles.
        let cmdline = strings(&["myapp", "@opts"]);
        let environ = strings(&["JDK_JAVA_OPTIONS=-XX:+DisableAttachMechanism"]);
        let sources = Sources {
            cmdline: &cmdline,
            environ: &environ,
            launcher: false,
        };
        assert!(!sources.attach_disabled(|_| Some(ENABLED.to_string())));
    }

    #[test]
    fn quotes_comments_and_escapes() {
        assert_eq!(
            split_options(" -a  \"-b c\" '-d'\t-e"),
            ["-a", "-b c", "-d", "-e"]
        );
        assert_eq!(
            split_argfile("# comment -XX:+X\n-cp \"a b\" # trailing\n'-Dx=\\t'"),
            ["-cp", "a b", "-Dx=\t"]
        );
    }
}
