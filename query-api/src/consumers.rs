//! The consumers' own view for the ingestion-health page: lag and retry state,
//! read from each configured consumer's Prometheus endpoint
//! (`--consumer-metrics-url`). A consumer that does not answer is reported as
//! unreachable, not skipped.

use std::time::Duration;

use serde::Serialize;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ConsumerState {
    pub url: String,
    pub reachable: bool,
    /// Messages behind, summed over the partitions the consumer owns.
    pub lag: i64,
    /// True while the consumer is retrying a batch against a failing ClickHouse.
    pub retrying: bool,
    pub dead_letters: u64,
}

/// Scrapes every URL (concurrently, 2 s timeout each).
pub async fn scrape(client: &reqwest::Client, urls: &[String]) -> Vec<ConsumerState> {
    let fetches = urls.iter().map(|url| async move {
        let text = async {
            client
                .get(url)
                .timeout(Duration::from_secs(2))
                .send()
                .await?
                .error_for_status()?
                .text()
                .await
        }
        .await;
        match text {
            Ok(text) => parse(url, &text),
            Err(e) => {
                tracing::debug!(%url, error = %e, "consumer metrics unreachable");
                ConsumerState {
                    url: url.clone(),
                    reachable: false,
                    lag: 0,
                    retrying: false,
                    dead_letters: 0,
                }
            }
        }
    });
    futures::future::join_all(fetches).await
}

/// Reads the consumer's gauges from Prometheus text.
pub fn parse(url: &str, text: &str) -> ConsumerState {
    let mut state = ConsumerState {
        url: url.to_string(),
        reachable: true,
        lag: 0,
        retrying: false,
        dead_letters: 0,
    };
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (name, value) = match line.rsplit_once(' ') {
            Some((n, v)) => (n.split('{').next().unwrap_or(n), v),
            None => continue,
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        match name {
            "javelin_consumer_lag" => state.lag += value as i64,
            "javelin_consumer_retrying" => state.retrying |= value > 0.0,
            "javelin_consumer_dead_letters_total" => state.dead_letters += value as u64,
            _ => {}
        }
    }
    state
}

#[cfg(test)]
mod tests {
    #[test]
    fn gauges_are_read_from_prometheus_text() {
        let text = "# HELP x\njavelin_consumer_lag{partition=\"0\",topic=\"t\"} 5\njavelin_consumer_lag{partition=\"1\",topic=\"t\"} 7\njavelin_consumer_retrying 1\njavelin_consumer_dead_letters_total{class=\"invalid_message\"} 2\n";
        let s = super::parse("u", text);
        assert_eq!((s.lag, s.retrying, s.dead_letters), (12, true, 2));
    }
}
