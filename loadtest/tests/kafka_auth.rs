//! librdkafka properties pass through to the agent's producer: SASL/SCRAM
//! against a real broker (tansu with authentication) succeeds with the right
//! credentials and fails with wrong ones.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use javelin_agent::publish::{Publisher, PublisherConfig};
use javelin_agent::spool::Destination;
use javelin_schema::testkit::{Reaped, free_port, tansu_bin, unique_name, wait_for};

fn broker(dir: &Path, url: &str, auth: bool) -> Reaped {
    let mut cmd = Command::new(tansu_bin());
    cmd.args([
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
    ])
    // Relative sqlite path: users and topics survive the restart with authentication on.
    .args(["--storage-engine", "sqlite://auth.db"])
    .current_dir(dir)
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    if auth {
        cmd.arg("--authentication");
    }
    Reaped(cmd.spawn().expect("tansu starts"))
}

async fn wait_listening(port: u16) {
    wait_for("the broker to listen", Duration::from_secs(30), || {
        let up = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
        async move { up.then_some(()) }
    })
    .await;
}

fn tansu(args: &[&str]) {
    let status = Command::new(tansu_bin())
        .args(args)
        .stdout(Stdio::null())
        .status()
        .expect("tansu runs");
    assert!(status.success(), "tansu {args:?} failed");
}

fn publisher(brokers: &str, topic: &str, password: &str) -> Publisher {
    let props = [
        ("security.protocol", "SASL_PLAINTEXT"),
        ("sasl.mechanism", "SCRAM-SHA-256"),
        ("sasl.username", "javelin"),
        ("sasl.password", password),
    ];
    Publisher::new(PublisherConfig {
        brokers: brokers.to_string(),
        profiles_topic: topic.to_string(),
        status_topic: topic.to_string(),
        send_timeout: Duration::from_secs(5),
        properties: props
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    })
    .expect("producer")
}

#[tokio::test(flavor = "multi_thread")]
async fn sasl_scram_properties_reach_librdkafka() {
    let port = free_port();
    let url = format!("tcp://127.0.0.1:{port}");
    let brokers = format!("127.0.0.1:{port}");
    let dir = std::env::temp_dir().join(unique_name("kafka_auth"));
    std::fs::create_dir_all(&dir).expect("dir");
    let topic = "javelin.auth.test";
    {
        // Users can only be created while authentication is off.
        let _open = broker(&dir, &url, false);
        wait_listening(port).await;
        tansu(&[
            "user",
            "create",
            "--broker",
            &url,
            "--mechanism",
            "scram256",
            "javelin",
            "s3cret",
        ]);
        tansu(&[
            "topic",
            "create",
            topic,
            "--broker",
            &url,
            "--partitions",
            "1",
        ]);
    }
    let _secured = broker(&dir, &url, true);
    wait_listening(port).await;

    let good = publisher(&brokers, topic, "s3cret");
    good.send_to(Destination::Profiles, "svc", b"authenticated", None)
        .await
        .expect("delivered with SCRAM credentials");

    let bad = publisher(&brokers, topic, "wrong");
    let refused = bad
        .send_to(Destination::Profiles, "svc", b"refused", None)
        .await;
    assert!(refused.is_err(), "a wrong password must not deliver");
    let _ = std::fs::remove_dir_all(&dir);
}
