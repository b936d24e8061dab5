//! The Javelin query API and UI.
//!
//! # Layout
//! - [`params`]: query parameters → validated selections and limits.
//! - [`store`]: scoped, parameterised ClickHouse reads.
//! - [`flamegraph`]: stacks → call tree → names + levels (and diffs) with a node bound.
//! - [`top`]: the top table (self / total per function).
//! - [`timeline`]: totals over time and their breakdown by a label's values.
//! - [`sandwich`]: a function's callers (inverted) and callees.
//! - [`ranked_diff`]: the diff as a table, ranked by the change of share.
//! - [`export`]: pprof and collapsed-stack exports.
//! - [`consumers`]: the consumers' lag and retry state for the health page.
//! - [`api`]: the axum routes, JSON errors and request ids ([`error`]), auth
//!   ([`auth`]), the OpenAPI document ([`openapi`]); serves the UI at `/`.

pub mod api;
pub mod auth;
pub mod consumers;
pub mod error;
pub mod export;
pub mod flamegraph;
pub mod metrics;
pub mod openapi;
pub mod params;
pub mod ranked_diff;
pub mod sandwich;
pub mod store;
pub mod timeline;
pub mod top;
