//! The Javelin node agent.
//!
//! # Pipeline (one task per JVM)
//! [`discovery`] finds HotSpot JVMs in /proc → [`attach`] speaks the HotSpot
//! attach protocol → [`recorder`] runs a built-in JFR recording and collects the
//! new chunks every window → [`jfr_parse`] decodes them behind guards →
//! [`aggregate`] folds samples by stack under explicit bounds → [`publish`] sends
//! the window parts to Kafka. [`target`] runs that loop for one JVM; [`agent`]
//! supervises the targets.

pub mod agent;
pub mod aggregate;
pub mod artifacts;
pub mod attach;
pub mod config;
pub mod discovery;
pub mod jdk_version;
pub mod jfr_parse;
pub mod jvm_options;
pub mod kubernetes;
pub mod kubernetes_api;
pub mod metrics;
pub mod polled_producer;
pub mod publish;
pub mod recorder;
pub mod rootfs;
pub mod session;
pub mod spool;
pub mod target;

/// This agent's version, carried in every message.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");
