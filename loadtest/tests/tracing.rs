//! A window's trace runs from the agent to ClickHouse: the agent's delivery
//! span travels as the `traceparent` Kafka header, and the consumer's span for
//! the same message (arrival → stored, or dead-lettered) is its child. Both
//! processes export to a real OTLP/HTTP endpoint (this test's receiver), and
//! the spans are decoded from the protobuf the exporters sent.

mod support;

use javelin_schema::rows::SAMPLES_ONCE;
use support::bin;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use javelin_agent::publish::{Publisher, PublisherConfig};
use javelin_agent::spool::{Destination, Spool, Spooled};
use javelin_schema::migrations::{MigrateOptions, migrate};
use javelin_schema::telemetry::{OtlpEndpoints, Telemetry};
use javelin_schema::testkit::{
    Reaped, RunTopics, TopicLog, clickhouse_client, clickhouse_url, create_topics, kafka_brokers,
    unique_name, wait_for,
};
use javelin_schema::wire::{ProfileType, ProfileWindow, Stack, TargetIdentity};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message;
use tokio::sync::Notify;

/// One exported span, as the receiver decoded it.
#[derive(Debug, Clone)]
struct ReceivedSpan {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    /// Status code: 1 = ok, 2 = error.
    status: i32,
    attributes: HashMap<String, String>,
}

/// An OTLP/HTTP traces endpoint that keeps what it is sent.
#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
}

impl Receiver {
    /// Serves `POST /v1/traces` on a free loopback port; returns its URL.
    async fn start(&self) -> String {
        let spans = self.spans.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: axum::body::Bytes| {
                let spans = spans.clone();
                async move {
                    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
                        return axum::http::StatusCode::BAD_REQUEST;
                    };
                    let mut all = spans.lock().unwrap_or_else(|e| e.into_inner());
                    all.extend(decode(request));
                    axum::http::StatusCode::OK
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}/v1/traces")
    }

    fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(value: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        other => format!("{other:?}"),
    }
}

fn decode(request: ExportTraceServiceRequest) -> Vec<ReceivedSpan> {
    let mut out = Vec::new();
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|a| a.key == "service.name")
            .map(|a| text(a.value.as_ref()))
            .unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                out.push(ReceivedSpan {
                    service: service.clone(),
                    name: span.name,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    status: span.status.map_or(0, |s| s.code),
                    attributes: span
                        .attributes
                        .iter()
                        .map(|a| (a.key.clone(), text(a.value.as_ref())))
                        .collect(),
                });
            }
        }
    }
    out
}

/// A one-stack CPU window of `service`, an hour ago (inside retention).
fn window(service: &str, value: i64) -> Vec<u8> {
    let now = javelin_consumer::now_ms() / 10_000 * 10_000 - 3_600_000;
    ProfileWindow {
        target: Some(TargetIdentity {
            service: service.into(),
            pod: "pod-0".into(),
            ..Default::default()
        }),
        profile_type: ProfileType::Cpu as i32,
        window_start_ms: now - 10_000,
        window_end_ms: now,
        part_count: 1,
        strings: vec![String::new(), "Main.main".into()],
        stacks: vec![Stack {
            frames: vec![1],
            value,
            count: 1,
            stack_id: 7,
            ..Default::default()
        }],
        ..Default::default()
    }
    .to_bytes()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_windows_trace_runs_from_the_agent_to_clickhouse() {
    let receiver = Receiver::default();
    let endpoint = receiver.start().await;
    // This test process plays the agent: its spool and publisher, its spans.
    let agent_telemetry = Telemetry::new(
        "javelin-agent",
        OtlpEndpoints {
            metrics: None,
            traces: Some(&endpoint),
        },
    )
    .expect("telemetry");

    let run = unique_name("tracing");
    let topics = RunTopics::new(&run);
    create_topics(&[&topics.profiles, &topics.status, &topics.dlq], 1).await;
    migrate(&clickhouse_client(), &run, MigrateOptions::default())
        .await
        .expect("migrated");
    let published = TopicLog::follow(&topics.profiles);
    let publisher = Arc::new(
        Publisher::new(PublisherConfig {
            brokers: kafka_brokers(),
            profiles_topic: topics.profiles.clone(),
            status_topic: topics.status.clone(),
            send_timeout: Duration::from_secs(30),
            properties: vec![],
        })
        .expect("producer"),
    );
    let spool = Spool::new(1 << 20);
    // Three windows of three services, and one message that is not a window.
    let payloads = [
        ("svc-a", window("svc-a", 10)),
        ("svc-b", window("svc-b", 20)),
        ("svc-c", window("svc-c", 30)),
        ("svc-bad", b"not a profile window".to_vec()),
    ];
    for (key, payload) in &payloads {
        spool.push(Spooled {
            destination: Destination::Profiles,
            key: (*key).into(),
            payload: payload.clone(),
            target_id: 1,
        });
    }
    let stop = Arc::new(Notify::new());
    let sender = {
        let (spool, stop) = (spool.clone(), stop.clone());
        tokio::spawn(async move { spool.run_sender(publisher, 8, stop).await })
    };
    let messages = wait_for(
        "the four messages on the topic",
        Duration::from_secs(60),
        || {
            let messages = published.messages();
            async move { (messages.len() == 4).then_some(messages) }
        },
    )
    .await;
    stop.notify_one();
    sender.await.expect("sender stops");
    agent_telemetry.flush_traces();

    let _consumer = Reaped(
        Command::new(bin("javelin-consumer"))
            .args(topics.consumer_args(&clickhouse_url(), &run, &kafka_brokers(), &run))
            .args(["--otlp-traces-endpoint", &endpoint])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("consumer starts"),
    );
    let db = clickhouse_client().with_database(&run);
    wait_for("the three windows stored", Duration::from_secs(60), || {
        let db = db.clone();
        async move {
            let total: i64 = db
                .query(&format!("SELECT sum(value) FROM {SAMPLES_ONCE}"))
                .fetch_one()
                .await
                .ok()?;
            (total == 60).then_some(())
        }
    })
    .await;
    // What the UI shows for the run: the same 60.
    let view = javelin_loadtest::query_view::QueryView::start(
        &support::bin("javelin-query"),
        &clickhouse_url(),
        &run,
        &[],
    )
    .expect("query API");
    let now = javelin_loadtest::now_ms();
    assert_eq!(
        view.grand_total_reaching(
            now - 6 * 86_400_000,
            now + 3_600_000,
            60,
            Duration::from_secs(10)
        )
        .await
        .expect("query API totals"),
        javelin_loadtest::query_view::ViewTotals {
            flamegraph: 60,
            top: 60
        }
    );
    // The consumer exports its spans in batches (every 5 s by default).
    let spans = wait_for("the consumer's four spans", Duration::from_secs(60), || {
        let spans = receiver.spans();
        let consumer = spans
            .iter()
            .filter(|s| s.service == "javelin-consumer")
            .count();
        async move { (consumer == 4).then_some(spans) }
    })
    .await;

    // The dead-lettered message keeps its trace context in the DLQ, so a
    // re-ingestion from there continues the same trace.
    let dead = TopicLog::follow(&topics.dlq);
    let dead = wait_for(
        "the invalid message in the DLQ",
        Duration::from_secs(60),
        || {
            let messages = dead.messages();
            async move { (messages.len() == 1).then(|| messages[0].clone()) }
        },
    )
    .await;
    let original = messages
        .iter()
        .find(|m| m.key.as_deref() == Some(&b"svc-bad"[..]))
        .expect("the invalid message");
    assert_eq!(dead.header("traceparent"), original.header("traceparent"));
    assert!(dead.header("traceparent").is_some());

    // Every message carries the context of its agent span…
    let agent: HashMap<&str, &ReceivedSpan> = spans
        .iter()
        .filter(|s| s.service == "javelin-agent")
        .map(|s| (s.span_id.as_str(), s))
        .collect();
    assert_eq!(agent.len(), 4, "one delivery span per message: {spans:#?}");
    for message in &messages {
        let header = message.header("traceparent").expect("a traceparent header");
        let parts: Vec<&str> = header.split('-').collect();
        assert_eq!(parts.len(), 4, "{header}");
        let span = agent.get(parts[2]).expect("the header names an agent span");
        assert_eq!(span.trace_id, parts[1]);
        assert_eq!(span.name, "javelin.agent.deliver");
        assert_eq!(span.status, 1, "delivered: status ok");
        let key = String::from_utf8_lossy(message.key.as_deref().unwrap_or_default());
        assert_eq!(span.attributes["javelin.key"], key);
    }
    // …and the consumer's span for that message is its child, with the outcome.
    let mut outcomes: Vec<(String, String)> = Vec::new();
    for span in spans.iter().filter(|s| s.service == "javelin-consumer") {
        let parent = agent
            .get(span.parent_span_id.as_str())
            .unwrap_or_else(|| panic!("consumer span without its agent parent: {span:#?}"));
        assert_eq!(span.trace_id, parent.trace_id, "one trace per window");
        assert_eq!(span.name, "javelin.consumer.store");
        let outcome = span.attributes["javelin.outcome"].clone();
        assert_eq!(span.status, if outcome == "stored" { 1 } else { 2 });
        outcomes.push((parent.attributes["javelin.key"].clone(), outcome));
    }
    outcomes.sort();
    assert_eq!(
        outcomes,
        [
            ("svc-a".to_string(), "stored".to_string()),
            ("svc-b".to_string(), "stored".to_string()),
            ("svc-bad".to_string(), "dead_lettered_invalid".to_string()),
            ("svc-c".to_string(), "stored".to_string()),
        ]
    );
}
