//! Process plumbing every Javelin binary shares: logging, shutdown signals and
//! `key=value` flag parsing. Behind the `process` feature so the contracts stay
//! dependency-light for other users of this crate.

/// Logs to stderr (stdout is kept for machine-readable lines), filtered by `RUST_LOG`, default `info`.
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM (Kubernetes, `docker stop`).
pub async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Parses `key=value` (librdkafka pass-through properties).
pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("expected key=value, got {s:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command() -> clap::Command {
        clap::Command::new("t")
            .arg(
                clap::Arg::new("config")
                    .long("config")
                    .env("JAVELIN_CONFIG"),
            )
            .subcommand(
                clap::Command::new("run")
                    .arg(
                        clap::Arg::new("brokers")
                            .long("brokers")
                            .env("JAVELIN_KAFKA_BROKERS"),
                    )
                    .arg(
                        clap::Arg::new("group")
                            .long("group-id")
                            .env("JAVELIN_GROUP_ID"),
                    ),
            )
    }

    fn file(text: &str) -> String {
        let path = std::env::temp_dir().join(format!(
            "javelin-config-{}-{}.env",
            std::process::id(),
            text.len()
        ));
        std::fs::write(&path, text).expect("write");
        path.display().to_string()
    }

    fn argv(args: &[&str]) -> Vec<std::ffi::OsString> {
        args.iter().map(|a| a.into()).collect()
    }

    #[test]
    fn file_settings_fill_what_flags_and_environment_leave_open() {
        let path =
            file("# comment\nJAVELIN_KAFKA_BROKERS=kafka:9092\nJAVELIN_GROUP_ID = \"javelin\"\n");
        let out = with_config_file(
            &command(),
            argv(&["t", "--config", &path, "run", "--group-id", "mine"]),
            None,
            |_| false,
        )
        .expect("valid");
        assert_eq!(
            out,
            argv(&["t", "run", "--group-id", "mine", "--brokers=kafka:9092"])
        );
        let out = with_config_file(&command(), argv(&["t", "run"]), Some(path.clone()), |k| {
            k == "JAVELIN_KAFKA_BROKERS"
        })
        .expect("valid");
        assert_eq!(
            out,
            argv(&["t", "run", "--group-id=javelin"]),
            "the environment wins over the file"
        );
    }

    #[test]
    fn bad_files_are_clear_errors() {
        let unknown = file("JAVELIN_NOPE=1\n");
        let err = with_config_file(&command(), argv(&["t", "run"]), Some(unknown), |_| false)
            .expect_err("unknown key");
        assert!(
            err.to_string().contains(":1: unknown setting JAVELIN_NOPE"),
            "{err}"
        );
        let syntax = file("just words\n");
        let err = with_config_file(&command(), argv(&["t", "run"]), Some(syntax), |_| false)
            .expect_err("syntax");
        assert!(err.to_string().contains("expected KEY=VALUE"), "{err}");
        let missing = with_config_file(
            &command(),
            argv(&["t"]),
            Some("/nonexistent/javelin.env".into()),
            |_| false,
        );
        assert!(matches!(missing, Err(ConfigFileError::Read { .. })));
    }

    #[test]
    fn key_values_parse() {
        assert_eq!(
            parse_key_value("security.protocol=SSL"),
            Ok(("security.protocol".into(), "SSL".into()))
        );
        assert_eq!(parse_key_value("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert!(parse_key_value("novalue").is_err());
        assert!(parse_key_value("=x").is_err());
    }
}

/// Why a configuration file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("reading the configuration file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: expected KEY=VALUE, got {text:?}")]
    Syntax {
        path: String,
        line: usize,
        text: String,
    },
    #[error(
        "{path}:{line}: unknown setting {key} (settings are the documented JAVELIN_* variables of this command)"
    )]
    Unknown {
        path: String,
        line: usize,
        key: String,
    },
}

/// The command line with the settings of a configuration file added.
///
/// The file is named by `--config <path>` (or `JAVELIN_CONFIG`) and holds
/// `KEY=VALUE` lines with the same keys as the environment variables (`#`
/// starts a comment). Precedence: flags, then the environment, then the file,
/// then the defaults. Every key must be a setting of the (sub)command being run.
pub fn args_with_config_file(
    command: &clap::Command,
) -> Result<Vec<std::ffi::OsString>, ConfigFileError> {
    with_config_file(
        command,
        std::env::args_os().collect(),
        std::env::var("JAVELIN_CONFIG").ok(),
        |key| std::env::var_os(key).is_some(),
    )
}

/// [`args_with_config_file`] with the process's arguments and environment passed in.
pub fn with_config_file(
    command: &clap::Command,
    mut argv: Vec<std::ffi::OsString>,
    mut path: Option<String>,
    in_environment: impl Fn(&str) -> bool,
) -> Result<Vec<std::ffi::OsString>, ConfigFileError> {
    if let Some(i) = argv.iter().position(|a| a == "--config") {
        path = argv.get(i + 1).map(|p| p.to_string_lossy().into_owned());
        let end = (i + 2).min(argv.len());
        argv.drain(i..end);
    } else if let Some(i) = argv
        .iter()
        .position(|a| a.to_string_lossy().starts_with("--config="))
    {
        path = Some(argv[i].to_string_lossy()["--config=".len()..].to_string());
        argv.remove(i);
    }
    let Some(path) = path else { return Ok(argv) };
    let text = std::fs::read_to_string(&path).map_err(|source| ConfigFileError::Read {
        path: path.clone(),
        source,
    })?;
    // The subcommand being run, if any, owns the settings.
    let sub = argv
        .iter()
        .skip(1)
        .find_map(|a| command.find_subcommand(a.to_string_lossy().as_ref()));
    let target = sub.unwrap_or(command);
    let given: Vec<String> = argv
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let mut extra: Vec<std::ffi::OsString> = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(ConfigFileError::Syntax {
                path,
                line: n + 1,
                text: raw.to_string(),
            });
        };
        let (key, value) = (key.trim(), value.trim().trim_matches('"'));
        let Some(arg) = target
            .get_arguments()
            .find(|a| a.get_env().is_some_and(|e| e == key))
        else {
            return Err(ConfigFileError::Unknown {
                path,
                line: n + 1,
                key: key.to_string(),
            });
        };
        let Some(long) = arg.get_long() else { continue };
        let flag = format!("--{long}");
        let on_command_line = given
            .iter()
            .any(|g| *g == flag || g.starts_with(&format!("{flag}=")));
        if on_command_line || in_environment(key) {
            continue;
        }
        extra.push(format!("{flag}={value}").into());
    }
    argv.extend(extra);
    Ok(argv)
}
