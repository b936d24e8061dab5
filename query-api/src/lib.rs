//! The Javelin query API and UI.
//!
//! # Layout
//! - [`store`]: scoped, parameterised ClickHouse reads.
//! - [`flamegraph`]: stacks → call tree → names + levels with a node bound.
//! - [`api`]: the axum routes, validation and JSON errors; serves the UI at `/`.

pub mod api;
pub mod flamegraph;
pub mod store;
