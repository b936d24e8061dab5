//! Reads from ClickHouse. Every query is scoped by service, profile type and
//! time range; user input is bound as values (`?`), never spliced into SQL.

use clickhouse::{Client, Row};
use serde::Deserialize;

/// A validated query scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub service: String,
    pub profile_type: String,
    /// Window starts in [from_s, to_s), seconds since the epoch.
    pub from_s: u32,
    pub to_s: u32,
}

#[derive(Debug, Row, Deserialize)]
pub struct StackValue {
    pub stack_id: u64,
    pub value: i64,
    pub frames: Vec<String>,
}

#[derive(Debug, Row, Deserialize)]
struct ServiceName {
    service: String,
}

#[derive(Debug, Clone)]
pub struct Store {
    client: Client,
}

impl Store {
    pub fn new(client: Client) -> Store {
        Store { client }
    }

    /// Services with samples in [from_s, to_s).
    pub async fn services(
        &self,
        from_s: u32,
        to_s: u32,
    ) -> Result<Vec<String>, clickhouse::error::Error> {
        let rows = self
            .client
            .query("SELECT DISTINCT service FROM samples WHERE window_start >= toDateTime(?) AND window_start < toDateTime(?) ORDER BY service")
            .bind(from_s)
            .bind(to_s)
            .fetch_all::<ServiceName>()
            .await?;
        Ok(rows.into_iter().map(|r| r.service).collect())
    }

    /// Summed value per stack in the scope, with the stack's frames. `FINAL`
    /// collapses re-delivered copies of a window that merges have not reached yet.
    pub async fn stacks(&self, scope: &Scope) -> Result<Vec<StackValue>, clickhouse::error::Error> {
        self.client
            .query(
                "SELECT stack_id, value, frames FROM (
                    SELECT stack_id, sum(value) AS value FROM samples FINAL
                    WHERE service = ? AND profile_type = ? AND window_start >= toDateTime(?) AND window_start < toDateTime(?)
                    GROUP BY stack_id
                ) ANY LEFT JOIN (
                    SELECT stack_id, any(frames) AS frames FROM stacks
                    WHERE service = ? AND stack_id IN (
                        SELECT stack_id FROM samples
                        WHERE service = ? AND profile_type = ? AND window_start >= toDateTime(?) AND window_start < toDateTime(?)
                    )
                    GROUP BY stack_id
                ) USING stack_id",
            )
            .bind(&scope.service)
            .bind(&scope.profile_type)
            .bind(scope.from_s)
            .bind(scope.to_s)
            .bind(&scope.service)
            .bind(&scope.service)
            .bind(&scope.profile_type)
            .bind(scope.from_s)
            .bind(scope.to_s)
            .fetch_all::<StackValue>()
            .await
    }
}
