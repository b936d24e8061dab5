//! What the UI shows: the query API started against a database, and the
//! totals its flamegraph and top table answer. Reconciliations read through
//! it as well as through the table, so a loss or a double count on the path
//! users take fails them.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::{Context, bail};

/// A running `javelin-query`; stopped on drop.
#[derive(Debug)]
pub struct QueryView {
    child: Child,
    base: String,
    http: reqwest::Client,
}

/// The totals of one (service, type, range), as the UI shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViewTotals {
    /// The flamegraph's root value.
    pub flamegraph: i64,
    /// The top table's total.
    pub top: i64,
}

impl QueryView {
    /// Starts `binary` (javelin-query) on a free port against `database`.
    /// `extra`: more flags, e.g. `--clickhouse-cluster NAME`.
    pub fn start(
        binary: &Path,
        clickhouse_url: &str,
        database: &str,
        extra: &[String],
    ) -> anyhow::Result<QueryView> {
        let mut child = Command::new(binary)
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
            .args(["--clickhouse-url", clickhouse_url, "--database", database])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let stdout = child.stdout.take().context("query API stdout")?;
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .context("reading the query API's listening line")?;
        // "javelin-query listening on http://127.0.0.1:PORT/"
        let Some(url) = line
            .trim()
            .rsplit(' ')
            .next()
            .filter(|u| u.starts_with("http"))
        else {
            let _ = child.kill();
            bail!("the query API did not say where it listens: {line:?}");
        };
        Ok(QueryView {
            base: url.trim_end_matches('/').to_string(),
            child,
            http: reqwest::Client::new(),
        })
    }

    /// Where it listens (`http://127.0.0.1:PORT`).
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Flamegraph and top totals of `service`/`profile_type` for windows
    /// starting in [from_ms, to_ms).
    pub async fn totals(
        &self,
        service: &str,
        profile_type: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> anyhow::Result<ViewTotals> {
        let query = [
            ("service", service.to_string()),
            ("type", profile_type.to_string()),
            ("from", from_ms.to_string()),
            ("to", to_ms.to_string()),
        ];
        let flamegraph = self.get("flamegraph", &query).await?;
        let top = self.get("top", &query).await?;
        let total = |v: &serde_json::Value, what: &str| {
            v["total"]
                .as_i64()
                .with_context(|| format!("{what} without a total: {v}"))
        };
        Ok(ViewTotals {
            flamegraph: total(&flamegraph, "flamegraph")?,
            top: total(&top, "top table")?,
        })
    }

    /// The flamegraph and top totals of every service and profile type the
    /// API lists for [from_ms, to_ms), summed. Requests are not a snapshot:
    /// compare them with the table only while nothing is being written.
    pub async fn grand_total(&self, from_ms: i64, to_ms: i64) -> anyhow::Result<ViewTotals> {
        let range = [("from", from_ms.to_string()), ("to", to_ms.to_string())];
        let services = self.get("services", &range).await?;
        let mut sum = ViewTotals {
            flamegraph: 0,
            top: 0,
        };
        for service in services["services"].as_array().into_iter().flatten() {
            let service = service.as_str().context("a service name")?;
            let mut query = range.to_vec();
            query.push(("service", service.to_string()));
            let types = self.get("profile-types", &query).await?;
            for kind in types["types"].as_array().into_iter().flatten() {
                let kind = kind["name"].as_str().context("a profile type name")?;
                let totals = self.totals(service, kind, from_ms, to_ms).await?;
                sum.flamegraph += totals.flamegraph;
                sum.top += totals.top;
            }
        }
        Ok(sum)
    }

    /// [`Self::grand_total`], read until both totals equal `want` or
    /// `patience` runs out: a window part's copy is named to readers a moment
    /// after its samples land, so what the UI shows may trail the table
    /// briefly, never exceed it. Returns the last totals read.
    pub async fn grand_total_reaching(
        &self,
        from_ms: i64,
        to_ms: i64,
        want: i64,
        patience: std::time::Duration,
    ) -> anyhow::Result<ViewTotals> {
        let deadline = std::time::Instant::now() + patience;
        loop {
            let shown = self.grand_total(from_ms, to_ms).await?;
            if (shown.flamegraph, shown.top) == (want, want)
                || std::time::Instant::now() >= deadline
            {
                return Ok(shown);
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }

    /// [`Self::totals`], read until both equal `want` or `patience` runs out
    /// (see [`Self::grand_total_reaching`]). Returns the last totals read.
    pub async fn totals_reaching(
        &self,
        service: &str,
        profile_type: &str,
        (from_ms, to_ms): (i64, i64),
        want: i64,
        patience: std::time::Duration,
    ) -> anyhow::Result<ViewTotals> {
        let deadline = std::time::Instant::now() + patience;
        loop {
            let shown = self.totals(service, profile_type, from_ms, to_ms).await?;
            if (shown.flamegraph, shown.top) == (want, want)
                || std::time::Instant::now() >= deadline
            {
                return Ok(shown);
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }

    async fn get(&self, path: &str, query: &[(&str, String)]) -> anyhow::Result<serde_json::Value> {
        let response = self
            .http
            .get(format!("{}/api/v1/{path}", self.base))
            .query(query)
            .send()
            .await
            .with_context(|| format!("GET /api/v1/{path}"))?;
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        if !status.is_success() {
            bail!("GET /api/v1/{path}: {status}: {body}");
        }
        Ok(body)
    }
}

impl Drop for QueryView {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
