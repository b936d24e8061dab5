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
