//! Agent configuration: flags, each with an environment variable and a documented default.

use std::time::Duration;

use clap::Parser;
use javelin_schema::telemetry::OtlpArgs;

use std::sync::Arc;

use crate::aggregate::Bounds;
use crate::artifacts::ArtifactPolicy;
use crate::kubernetes_api::{LookupError, PodLookup};
use crate::publish::{self, BrokerLimit, PublisherConfig};
use crate::recorder::{AsyncProfilerSettings, JfrSettings};
use crate::target::TargetConfig;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "javelin-agent",
    version,
    about = "Javelin node agent: profiles HotSpot JVMs and publishes to Kafka"
)]
pub struct AgentArgs {
    /// File of KEY=VALUE settings (the JAVELIN_* variables below); flags and the environment win over it.
    #[arg(long, env = "JAVELIN_CONFIG")]
    pub config: Option<std::path::PathBuf>,
    /// Kafka bootstrap servers.
    #[arg(long, env = "JAVELIN_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// Topic for profile windows (key = service).
    #[arg(long, env = "JAVELIN_PROFILES_TOPIC", default_value = javelin_schema::topics::PROFILES)]
    pub profiles_topic: String,
    /// Topic for target status (key = target id).
    #[arg(long, env = "JAVELIN_STATUS_TOPIC", default_value = javelin_schema::topics::STATUS)]
    pub status_topic: String,
    /// Extra librdkafka producer property, `key=value` (TLS, SASL, tuning); repeatable.
    #[arg(long = "kafka-property", env = "JAVELIN_KAFKA_PROPERTIES", value_delimiter = ',', value_parser = javelin_schema::process::parse_key_value)]
    pub kafka_properties: Vec<(String, String)>,
    /// Cluster name carried in every target identity.
    #[arg(long, env = "JAVELIN_CLUSTER", default_value = "default")]
    pub cluster: String,
    /// Node name (in Kubernetes: the downward API's spec.nodeName). Defaults to the host name.
    #[arg(long, env = "JAVELIN_NODE_NAME")]
    pub node: Option<String>,
    /// Profile window length in seconds.
    #[arg(long, env = "JAVELIN_WINDOW_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub window_secs: u64,
    /// Only profile these pids (repeatable); default: every HotSpot JVM.
    #[arg(long = "pid", env = "JAVELIN_PIDS", value_delimiter = ',')]
    pub pids: Vec<u32>,
    /// Leave JVMs younger than this many seconds alone.
    #[arg(long, env = "JAVELIN_MIN_JVM_AGE_SECS", default_value_t = 10)]
    pub min_jvm_age_secs: u64,
    /// How often /proc is scanned for new JVMs, in seconds.
    #[arg(long, env = "JAVELIN_DISCOVERY_INTERVAL_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub discovery_interval_secs: u64,
    /// Most JVMs profiled at once; further JVMs wait for a free slot.
    #[arg(long, env = "JAVELIN_MAX_TARGETS", default_value_t = 64)]
    pub max_targets: usize,
    /// Name of this agent installation, written into session markers: agents of
    /// one installation recover each other's orphaned sessions, others are left alone.
    #[arg(long, env = "JAVELIN_INSTALLATION", default_value = "javelin")]
    pub installation: String,
    /// Name of the JFR recording the agent owns inside each JVM.
    #[arg(long, env = "JAVELIN_RECORDING_NAME", default_value = "javelin")]
    pub recording_name: String,
    /// Timeout for one attach operation, in seconds (the first JFR.start can take seconds).
    #[arg(long, env = "JAVELIN_ATTACH_TIMEOUT_SECS", default_value_t = 30)]
    pub attach_timeout_secs: u64,
    /// jdk.ExecutionSample period, in milliseconds.
    #[arg(long, env = "JAVELIN_CPU_PERIOD_MS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub cpu_period_ms: u64,
    /// Most JFR events decoded per target and window; the rest are counted as dropped.
    #[arg(long, env = "JAVELIN_MAX_EVENTS_PER_WINDOW", default_value_t = Bounds::default().max_events_per_window)]
    pub max_events_per_window: u64,
    /// Most distinct stacks per target, type and window; the rest fold into `[truncated]`.
    #[arg(long, env = "JAVELIN_MAX_STACKS_PER_WINDOW", default_value_t = Bounds::default().max_stacks_per_window, value_parser = clap::value_parser!(u64).range(2..))]
    pub max_stacks_per_window: u64,
    /// Most frames per stack; deeper stacks keep their leaf end.
    #[arg(long, env = "JAVELIN_MAX_FRAMES_PER_STACK", default_value_t = Bounds::default().max_frames_per_stack, value_parser = clap::value_parser!(u32).range(2..))]
    pub max_frames_per_stack: u32,
    /// Largest Kafka message, in bytes; bigger windows split into parts. Lowered at
    /// start to fit the profiles topic's `max.message.bytes` (or the broker's
    /// `message.max.bytes`) when the broker reports a smaller limit.
    #[arg(long, env = "JAVELIN_MAX_MESSAGE_BYTES", default_value_t = Bounds::default().max_message_bytes, value_parser = clap::value_parser!(u64).range(4096..))]
    pub max_message_bytes: u64,
    /// Most bytes of messages waiting for Kafka (memory); when full the oldest are dropped and counted.
    #[arg(long, env = "JAVELIN_MAX_SPOOL_BYTES", default_value_t = 64 << 20, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_spool_bytes: usize,
    /// Most messages being delivered to Kafka at once.
    #[arg(long, env = "JAVELIN_MAX_IN_FLIGHT", default_value_t = 64, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_in_flight: usize,
    /// Address of the metrics and health endpoint (`/metrics`, `/healthz`, `/readyz`).
    #[arg(long, env = "JAVELIN_METRICS_LISTEN", default_value = "0.0.0.0:9464")]
    pub metrics_listen: String,
    #[command(flatten)]
    pub otlp: OtlpArgs,
    /// Look pods up in the Kubernetes API (labels, container names): `auto` when the agent runs in a cluster, or `off`.
    #[arg(long, env = "JAVELIN_KUBERNETES_API", default_value = "auto", value_parser = ["auto", "off"])]
    pub kubernetes_api: String,
    /// `libasyncProfiler.so` on the node: profile with async-profiler instead of the built-in JFR.
    #[arg(long, env = "JAVELIN_ASYNC_PROFILER_LIB")]
    pub async_profiler_lib: Option<std::path::PathBuf>,
    /// async-profiler: sample an allocation every this many bytes.
    #[arg(long, env = "JAVELIN_ALLOC_INTERVAL_BYTES", default_value_t = 512 * 1024, value_parser = clap::value_parser!(u64).range(1..))]
    pub alloc_interval_bytes: u64,
    /// Record monitor and park contention longer than this many milliseconds (both recorders).
    #[arg(long, env = "JAVELIN_LOCK_THRESHOLD_MS", default_value_t = 10)]
    pub lock_threshold_ms: u64,
    /// Keep each window's raw JFR in this directory (off when unset).
    #[arg(long, env = "JAVELIN_KEEP_JFR_DIR")]
    pub keep_jfr_dir: Option<std::path::PathBuf>,
    /// Most bytes of raw JFR kept; the oldest files are deleted first.
    #[arg(long, env = "JAVELIN_KEEP_JFR_MAX_BYTES", default_value_t = 1 << 30)]
    pub keep_jfr_max_bytes: u64,
    /// Raw JFR files older than this many seconds are deleted.
    #[arg(long, env = "JAVELIN_KEEP_JFR_MAX_AGE_SECS", default_value_t = 86_400)]
    pub keep_jfr_max_age_secs: u64,
    /// Most window dumps read and parsed at once across all targets (each holds
    /// up to --max-dump-bytes plus its parse in memory); other targets wait.
    #[arg(long, env = "JAVELIN_MAX_CONCURRENT_COLLECTS", default_value_t = 2, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_concurrent_collects: usize,
    /// Largest JFR dump read per target and window, in bytes (a larger one is a
    /// failed collect, counted); with the collect slots it sizes the agent's memory.
    #[arg(long, env = "JAVELIN_MAX_DUMP_BYTES", default_value_t = 128 << 20)]
    pub max_dump_bytes: u64,
}

impl AgentArgs {
    pub fn node_name(&self) -> String {
        self.node.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map_or_else(|_| "unknown".into(), |h| h.trim().into())
        })
    }

    pub fn publisher(&self) -> PublisherConfig {
        PublisherConfig {
            brokers: self.brokers.clone(),
            profiles_topic: self.profiles_topic.clone(),
            status_topic: self.status_topic.clone(),
            send_timeout: Duration::from_secs(30),
            properties: self.kafka_properties.clone(),
        }
    }

    /// Fits the message bound under what the broker accepts (`None`: the broker
    /// could not say; the configured bound stays): lowers `max_message_bytes`
    /// and sizes librdkafka's `message.max.bytes` (an explicit
    /// `--kafka-property message.max.bytes=…` still wins). Returns the bound
    /// as configured before, when it was lowered.
    pub fn fit_to_broker(&mut self, broker: Option<&BrokerLimit>) -> Option<u64> {
        let configured = self.max_message_bytes;
        self.max_message_bytes = publish::fit_message_bytes(configured, broker);
        if let Some(max) = publish::client_message_max_bytes(self.max_message_bytes, broker) {
            self.kafka_properties
                .insert(0, ("message.max.bytes".into(), max.to_string()));
        }
        (self.max_message_bytes < configured).then_some(configured)
    }

    /// The pod lookup, when enabled and running in a cluster.
    pub fn pod_lookup(&self) -> Result<Option<Arc<PodLookup>>, LookupError> {
        if self.kubernetes_api == "off" {
            return Ok(None);
        }
        Ok(PodLookup::in_cluster(Duration::from_secs(300), 4096)?.map(Arc::new))
    }

    pub fn target(&self, pods: Option<Arc<PodLookup>>) -> TargetConfig {
        TargetConfig {
            pods,
            cluster: self.cluster.clone(),
            node: self.node_name(),
            window: Duration::from_secs(self.window_secs),
            recording_name: self.recording_name.clone(),
            installation: self.installation.clone(),
            async_profiler: self
                .async_profiler_lib
                .clone()
                .map(|library| AsyncProfilerSettings {
                    library,
                    cpu_interval: Duration::from_millis(self.cpu_period_ms),
                    alloc_bytes: self.alloc_interval_bytes,
                    lock_threshold: Duration::from_millis(self.lock_threshold_ms),
                    // Three windows: long enough to survive a slow window, short enough to end an orphaned session.
                    session_timeout: Duration::from_secs(self.window_secs * 3),
                    max_dump_bytes: self.max_dump_bytes,
                }),
            artifacts: self.keep_jfr_dir.clone().map(|dir| ArtifactPolicy {
                dir,
                max_bytes: self.keep_jfr_max_bytes,
                max_age: Duration::from_secs(self.keep_jfr_max_age_secs),
            }),
            collect_slots: Arc::new(tokio::sync::Semaphore::new(self.max_concurrent_collects)),
            attach_timeout: Duration::from_secs(self.attach_timeout_secs),
            jfr: JfrSettings {
                cpu_period: Duration::from_millis(self.cpu_period_ms),
                max_dump_bytes: self.max_dump_bytes,
                max_age: Duration::from_secs((self.window_secs * 3).max(60)),
                lock_threshold: Duration::from_millis(self.lock_threshold_ms),
                park_threshold: Duration::from_millis(self.lock_threshold_ms),
                ..JfrSettings::default()
            },
            bounds: Bounds {
                max_events_per_window: self.max_events_per_window,
                max_stacks_per_window: self.max_stacks_per_window,
                max_frames_per_stack: self.max_frames_per_stack,
                max_message_bytes: self.max_message_bytes,
            },
        }
    }
}
