//! The deployment artefacts, checked without a cluster or a Docker engine:
//! every kustomize overlay renders (`kubectl kustomize`) and passes
//! `kubernetes-validate --strict` at a pinned Kubernetes version; every setting
//! the manifests and `docker-compose.yml` give a Javelin binary is one it
//! accepts (from its own `--help`); the manifests keep the promises the docs
//! make (the agent's exact privileges, memory limits that match ClickHouse's
//! settings, topic retention ≥ the replay horizon, scaling ≤ partitions,
//! selectors that select something); the Dockerfile pins async-profiler for
//! both architectures; the Grafana dashboard only charts metrics the binaries
//! export.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_norway::Value;
use support::Options;

/// The Kubernetes version the manifests are validated against.
const KUBERNETES_VERSION: &str = "1.32.0";
const OVERLAYS: [&str; 2] = ["dev", "production"];
/// Kinds kubernetes-validate has no schema for (CRDs): checked here instead.
const CUSTOM_KINDS: [&str; 4] = ["Kafka", "KafkaNodePool", "KafkaTopic", "ScaledObject"];
/// What attach needs (docs/security.md); the agent gets exactly these.
const AGENT_CAPABILITIES: [&str; 5] = [
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "KILL",
    "SYS_PTRACE",
];
/// Seven days: the replay horizon (ClickHouse's longest retention).
const REPLAY_HORIZON_MS: i64 = 7 * 24 * 3_600_000;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The rendered resources of an overlay.
fn render(overlay: &str) -> (String, Vec<Value>) {
    let dir = repo().join("deploy/kubernetes/overlays").join(overlay);
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(&dir)
        .output()
        .expect("kubectl runs (it is on the machine)");
    assert!(
        out.status.success(),
        "kubectl kustomize {overlay}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    (text.clone(), documents(&text))
}

fn documents(text: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(text)
        .map(|doc| {
            let mut value = Value::deserialize(doc).expect("valid YAML");
            value.apply_merge().expect("merge keys resolve");
            value
        })
        .filter(|v| !v.is_null())
        .collect()
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

fn kind(r: &Value) -> &str {
    s(&r["kind"])
}

fn name(r: &Value) -> &str {
    s(&r["metadata"]["name"])
}

fn find<'a>(resources: &'a [Value], k: &str, n: &str) -> &'a Value {
    resources
        .iter()
        .find(|r| kind(r) == k && name(r) == n)
        .unwrap_or_else(|| panic!("no {k} {n}"))
}

fn of_kind<'a>(resources: &'a [Value], k: &'a str) -> impl Iterator<Item = &'a Value> {
    resources.iter().filter(move |r| kind(r) == k)
}

/// Pod templates of the workloads: (workload name, template).
fn pod_templates(resources: &[Value]) -> Vec<(&str, &Value)> {
    resources
        .iter()
        .filter(|r| ["Deployment", "StatefulSet", "DaemonSet", "Job"].contains(&kind(r)))
        .map(|r| (name(r), &r["spec"]["template"]))
        .collect()
}

/// "2Gi", "512Mi", "4g" in bytes.
fn quantity(q: &str) -> u64 {
    let (digits, unit): (String, String) = q.chars().partition(char::is_ascii_digit);
    let n: u64 = digits.parse().unwrap_or_else(|_| panic!("quantity {q}"));
    n * match unit.as_str() {
        "Ki" | "k" => 1 << 10,
        "Mi" | "m" => 1 << 20,
        "Gi" | "g" => 1 << 30,
        "" => 1,
        other => panic!("unit {other} in {q}"),
    }
}

/// The value of `<tag>…</tag>` in a ClickHouse config file.
fn xml_setting(xml: &str, tag: &str) -> u64 {
    let open = format!("<{tag}>");
    let start = xml
        .find(&open)
        .unwrap_or_else(|| panic!("no {tag} in {xml}"))
        + open.len();
    let end = xml[start..].find('<').expect("closing tag") + start;
    xml[start..end].trim().parse().expect("a number")
}

/// Which Javelin command a container runs: from its image and first argument.
fn command_of(image: &str, args: &[String]) -> Option<(&'static str, Option<String>)> {
    if image.contains("javelin-agent") || image == "agent" {
        Some(("javelin-agent", None))
    } else if image.contains("javelin-consumer") || image == "consumer" {
        Some(("javelin-consumer", args.first().cloned()))
    } else if image.contains("javelin-query") || image == "query" {
        Some(("javelin-query", None))
    } else {
        None
    }
}

/// Settings given to a Javelin binary that it does not accept.
fn unaccepted(
    what: &str,
    command: (&str, Option<String>),
    args: &[String],
    env: &BTreeSet<String>,
) -> Vec<String> {
    let (binary, sub) = command;
    let options = Options::of(binary, sub.as_deref());
    let mut bad = Vec::new();
    for flag in args.iter().filter(|a| a.starts_with("--")) {
        let flag = flag.split('=').next().unwrap_or_default();
        if !options.flags.contains(flag) {
            bad.push(format!("{what}: {binary} does not accept {flag}"));
        }
    }
    for key in env.iter().filter(|k| k.starts_with("JAVELIN_")) {
        if !options.env.contains(key) {
            bad.push(format!("{what}: {binary} {sub:?} does not read {key}"));
        }
    }
    bad
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|seq| seq.iter().map(|x| s(x).to_string()).collect())
        .unwrap_or_default()
}

/// Every environment variable a container gets, with the value where it is literal.
fn container_env(resources: &[Value], container: &Value) -> BTreeMap<String, Option<String>> {
    let mut env = BTreeMap::new();
    for from in container["envFrom"].as_sequence().into_iter().flatten() {
        let map = find(resources, "ConfigMap", s(&from["configMapRef"]["name"]));
        for (k, v) in map["data"].as_mapping().into_iter().flatten() {
            env.insert(s(k).to_string(), Some(s(v).to_string()));
        }
    }
    for e in container["env"].as_sequence().into_iter().flatten() {
        env.insert(
            s(&e["name"]).to_string(),
            e["value"].as_str().map(String::from),
        );
    }
    env
}

fn labels_match(selector: &Value, labels: &Value) -> bool {
    let wanted = selector["matchLabels"].as_mapping();
    let expressions = selector["matchExpressions"].as_sequence();
    let labels_ok = wanted
        .into_iter()
        .flatten()
        .all(|(k, v)| labels.get(s(k)).map(s) == Some(s(v)));
    let expressions_ok = expressions.into_iter().flatten().all(|e| {
        let value = labels.get(s(&e["key"])).map(s);
        match s(&e["operator"]) {
            "In" => value.is_some_and(|v| strings(&e["values"]).iter().any(|x| x == v)),
            other => panic!("operator {other} not handled by this test"),
        }
    });
    labels_ok && expressions_ok
}

#[test]
fn every_overlay_renders_and_passes_strict_schema_validation() {
    let validate = javelin_schema::testkit::dev_tool("kubernetes-validate");
    for overlay in OVERLAYS {
        let (text, resources) = render(overlay);
        assert!(
            resources.len() > 20,
            "{overlay}: {} resources",
            resources.len()
        );
        let file =
            std::env::temp_dir().join(format!("javelin-{overlay}-{}.yaml", std::process::id()));
        std::fs::write(&file, &text).expect("write render");
        let out = Command::new(&validate)
            .args(["--strict", "-k", KUBERNETES_VERSION])
            .arg(&file)
            .output()
            .expect("kubernetes-validate runs");
        let report = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        let _ = std::fs::remove_file(&file);
        assert!(out.status.success(), "{overlay}:\n{report}");
        // Everything but the CRDs was checked against a schema.
        let passed = report.matches(" passed for resource ").count();
        let custom = resources
            .iter()
            .filter(|r| CUSTOM_KINDS.contains(&kind(r)))
            .count();
        assert_eq!(passed + custom, resources.len(), "{overlay}:\n{report}");
        for line in report.lines().filter(|l| l.starts_with("WARN")) {
            assert!(
                CUSTOM_KINDS
                    .iter()
                    .any(|k| line.contains(&format!("for kind {k} "))),
                "{overlay}: {line}"
            );
        }
    }
}

#[test]
fn manifests_only_give_the_binaries_settings_they_accept() {
    let mut bad = Vec::new();
    let mut checked = 0;
    for overlay in OVERLAYS {
        let (_, resources) = render(overlay);
        for (workload, template) in pod_templates(&resources) {
            let containers = template["spec"]["containers"]
                .as_sequence()
                .expect("containers");
            for c in containers {
                let args = strings(&c["args"]);
                let Some(command) = command_of(s(&c["image"]), &args) else {
                    continue;
                };
                checked += 1;
                let env: BTreeSet<String> = container_env(&resources, c).into_keys().collect();
                bad.extend(unaccepted(
                    &format!("{overlay}/{workload}"),
                    command,
                    &args,
                    &env,
                ));
            }
        }
    }
    assert_eq!(
        checked,
        2 * 4,
        "agent, consumer, query and migrate per overlay"
    );
    assert!(bad.is_empty(), "{bad:#?}");
}

#[test]
fn manifests_keep_the_promises_the_docs_make() {
    for overlay in OVERLAYS {
        let (_, r) = render(overlay);
        let at = |what: &str| format!("{overlay}: {what}");

        // The agent: host pids, exactly the capabilities attach needs, its node's name.
        let agent = find(&r, "DaemonSet", "javelin-agent");
        let pod = &agent["spec"]["template"]["spec"];
        assert_eq!(pod["hostPID"].as_bool(), Some(true), "{}", at("hostPID"));
        let c = &pod["containers"][0];
        let security = &c["securityContext"];
        assert_eq!(strings(&security["capabilities"]["drop"]), ["ALL"]);
        let mut added = strings(&security["capabilities"]["add"]);
        added.sort();
        assert_eq!(added, AGENT_CAPABILITIES, "{}", at("agent capabilities"));
        assert_eq!(security["privileged"].as_bool(), Some(false));
        assert_eq!(security["allowPrivilegeEscalation"].as_bool(), Some(false));
        let node = c["env"]
            .as_sequence()
            .into_iter()
            .flatten()
            .find(|e| s(&e["name"]) == "JAVELIN_NODE_NAME")
            .expect("JAVELIN_NODE_NAME");
        assert_eq!(
            s(&node["valueFrom"]["fieldRef"]["fieldPath"]),
            "spec.nodeName"
        );
        let role = find(&r, "ClusterRole", "javelin-agent");
        assert_eq!(
            serde_norway::to_string(&role["rules"]).expect("yaml"),
            "- apiGroups:\n  - ''\n  resources:\n  - pods\n  verbs:\n  - get\n",
            "{}",
            at("the agent may only get pods")
        );

        // Memory: every container is bounded; ClickHouse's own bound sits below its limit.
        for (workload, template) in pod_templates(&r) {
            for c in template["spec"]["containers"]
                .as_sequence()
                .into_iter()
                .flatten()
            {
                let limit = s(&c["resources"]["limits"]["memory"]);
                assert!(
                    !limit.is_empty(),
                    "{}",
                    at(&format!("{workload} has no memory limit"))
                );
                assert!(!s(&c["resources"]["requests"]["memory"]).is_empty());
            }
        }
        let clickhouse = find(&r, "StatefulSet", "javelin-clickhouse");
        let limit = quantity(s(
            &clickhouse["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"]
        ));
        let config = &find(&r, "ConfigMap", "javelin-clickhouse-config")["data"];
        let server = xml_setting(s(&config["memory.xml"]), "max_server_memory_usage");
        let per_query = xml_setting(s(&config["profiles.xml"]), "max_memory_usage");
        assert!(
            server < limit && server >= limit / 2,
            "{}",
            at(&format!(
                "max_server_memory_usage {server} vs limit {limit}"
            ))
        );
        assert!(
            per_query < server,
            "{}",
            at("one query fits in the server's memory")
        );

        // Topics: the ones the binaries use, kept at least as long as the replay horizon.
        let kafka = of_kind(&r, "Kafka").next().expect("a Kafka");
        let consumer = find(&r, "Deployment", "javelin-consumer");
        let consumer_env =
            container_env(&r, &consumer["spec"]["template"]["spec"]["containers"][0]);
        let literal = |k: &str| {
            consumer_env
                .get(k)
                .cloned()
                .flatten()
                .unwrap_or_else(|| panic!("consumer env {k}"))
        };
        let used: BTreeSet<String> = [
            "JAVELIN_PROFILES_TOPIC",
            "JAVELIN_STATUS_TOPIC",
            "JAVELIN_DLQ_TOPIC",
        ]
        .map(literal)
        .into();
        let mut partitions = BTreeMap::new();
        for topic in of_kind(&r, "KafkaTopic") {
            assert_eq!(
                s(&topic["metadata"]["labels"]["strimzi.io/cluster"]),
                name(kafka),
                "{}",
                at("topic belongs to the Kafka cluster")
            );
            let retention = topic["spec"]["config"]["retention.ms"]
                .as_i64()
                .expect("retention.ms");
            assert!(
                retention >= REPLAY_HORIZON_MS,
                "{}",
                at("retention ≥ replay horizon")
            );
            let topic_name = s(&topic["spec"]["topicName"]).to_string();
            partitions.insert(
                topic_name,
                topic["spec"]["partitions"].as_u64().expect("partitions"),
            );
        }
        assert_eq!(partitions.keys().cloned().collect::<BTreeSet<_>>(), used);

        // Scaling: one autoscaler for the consumers, never past the partitions.
        let profile_partitions = partitions[&literal("JAVELIN_PROFILES_TOPIC")];
        let hpas: Vec<&Value> = of_kind(&r, "HorizontalPodAutoscaler").collect();
        let scaled: Vec<&Value> = of_kind(&r, "ScaledObject").collect();
        assert_eq!(
            hpas.len() + scaled.len(),
            1,
            "{}",
            at("one consumer autoscaler")
        );
        for hpa in hpas {
            assert_eq!(
                s(&hpa["spec"]["scaleTargetRef"]["name"]),
                "javelin-consumer"
            );
            assert!(hpa["spec"]["maxReplicas"].as_u64().expect("max") <= profile_partitions);
        }
        for so in scaled {
            assert_eq!(s(&so["spec"]["scaleTargetRef"]["name"]), "javelin-consumer");
            assert!(so["spec"]["maxReplicaCount"].as_u64().expect("max") <= profile_partitions);
            let trigger = &so["spec"]["triggers"][0]["metadata"];
            assert_eq!(s(&trigger["consumerGroup"]), literal("JAVELIN_GROUP_ID"));
            assert_eq!(s(&trigger["topic"]), literal("JAVELIN_PROFILES_TOPIC"));
            assert_eq!(
                s(&trigger["bootstrapServers"]),
                literal("JAVELIN_KAFKA_BROKERS")
            );
        }
        // The brokers the binaries are given are the Strimzi bootstrap service.
        assert_eq!(
            literal("JAVELIN_KAFKA_BROKERS"),
            format!("{}-kafka-bootstrap:9092", name(kafka))
        );

        // Selectors select, Services reach named ports, NetworkPolicies open what is served.
        let pods: Vec<(&str, &Value)> = pod_templates(&r);
        for selecting in r
            .iter()
            .filter(|x| ["PodDisruptionBudget", "NetworkPolicy"].contains(&kind(x)))
        {
            let selector = if kind(selecting) == "PodDisruptionBudget" {
                &selecting["spec"]["selector"]
            } else {
                &selecting["spec"]["podSelector"]
            };
            assert!(
                pods.iter()
                    .any(|(_, t)| labels_match(selector, &t["metadata"]["labels"])),
                "{}",
                at(&format!(
                    "{} {} selects no pod",
                    kind(selecting),
                    name(selecting)
                ))
            );
        }
        let open_ports: BTreeSet<u64> = of_kind(&r, "NetworkPolicy")
            .flat_map(|p| p["spec"]["ingress"].as_sequence().into_iter().flatten())
            .flat_map(|rule| rule["ports"].as_sequence().into_iter().flatten())
            .filter_map(|p| p["port"].as_u64())
            .collect();
        for service in of_kind(&r, "Service") {
            let (_, template) = pods
                .iter()
                .find(|(_, t)| {
                    let labels = &t["metadata"]["labels"];
                    service["spec"]["selector"]
                        .as_mapping()
                        .into_iter()
                        .flatten()
                        .all(|(k, v)| labels.get(s(k)).map(s) == Some(s(v)))
                })
                .unwrap_or_else(|| {
                    panic!(
                        "{}",
                        at(&format!("service {} selects no pod", name(service)))
                    )
                });
            let ports = &template["spec"]["containers"][0]["ports"];
            for port in service["spec"]["ports"].as_sequence().into_iter().flatten() {
                let target = s(&port["targetPort"]);
                let container_port = ports
                    .as_sequence()
                    .into_iter()
                    .flatten()
                    .find(|p| s(&p["name"]) == target)
                    .unwrap_or_else(|| {
                        panic!("{}", at(&format!("{}: no port {target}", name(service))))
                    });
                let number = container_port["containerPort"].as_u64().expect("port");
                assert!(
                    open_ports.contains(&number),
                    "{}",
                    at(&format!(
                        "port {number} served but closed by the NetworkPolicies"
                    ))
                );
            }
        }

        // Secrets: generated in dev; named in production's instructions.
        let referenced: BTreeSet<(String, String)> = pods
            .iter()
            .flat_map(|(_, t)| t["spec"]["containers"].as_sequence().into_iter().flatten())
            .flat_map(|c| c["env"].as_sequence().into_iter().flatten())
            .filter_map(|e| {
                let key_ref = &e["valueFrom"]["secretKeyRef"];
                key_ref["name"]
                    .as_str()
                    .map(|n| (n.to_string(), s(&key_ref["key"]).to_string()))
            })
            .collect();
        assert!(referenced.len() >= 2);
        for (secret, key) in &referenced {
            if overlay == "dev" {
                let found = find(&r, "Secret", secret);
                assert!(found["data"].get(key.as_str()).is_some(), "{secret}.{key}");
            } else {
                let instructions = read("deploy/kubernetes/overlays/production/kustomization.yaml");
                assert!(
                    instructions.contains(&format!(
                        "create secret generic {secret} --from-literal={key}="
                    )),
                    "production must say how to create {secret}"
                );
            }
        }
    }
}

#[test]
fn the_compose_file_matches_the_binaries_and_starts_in_order() {
    let text = read("docker-compose.yml");
    let compose = documents(&text).pop().expect("one document");
    let services = compose["services"].as_mapping().expect("services");
    let dockerfile = read("deploy/docker/Dockerfile");
    let mut bad = Vec::new();
    let mut javelin_services = 0;
    for (service_name, service) in services {
        let service_name = s(service_name);
        // Images are pinned; builds name a stage of the Dockerfile.
        if let Some(image) = service["image"].as_str() {
            let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or_default();
            assert!(
                !tag.is_empty() && tag != "latest",
                "{service_name}: pin {image}"
            );
        }
        let target = s(&service["build"]["target"]);
        if !target.is_empty() {
            assert!(
                dockerfile.contains(&format!(" AS {target}\n")),
                "{service_name}: no stage {target} in the Dockerfile"
            );
            assert_eq!(
                s(&service["build"]["dockerfile"]),
                "deploy/docker/Dockerfile"
            );
        }
        // Start ordering: real services, healthchecks where health is awaited.
        for (dependency, condition) in service["depends_on"].as_mapping().into_iter().flatten() {
            let dependency = s(dependency);
            let other = services
                .get(dependency)
                .unwrap_or_else(|| panic!("{service_name} depends on unknown {dependency}"));
            match s(&condition["condition"]) {
                "service_healthy" => assert!(
                    !other["healthcheck"].is_null(),
                    "{service_name} waits for {dependency}'s health, which has no healthcheck"
                ),
                "service_completed_successfully" => assert!(
                    ["migrate", "kafka-topics"].contains(&dependency),
                    "{dependency} is not a one-shot"
                ),
                "service_started" => {}
                other => panic!("{service_name}: condition {other}"),
            }
        }
        let args = strings(&service["command"]);
        let Some(command) = command_of(target, &args) else {
            continue;
        };
        javelin_services += 1;
        let env: BTreeSet<String> = service["environment"]
            .as_mapping()
            .into_iter()
            .flatten()
            .map(|(k, _)| s(k).to_string())
            .collect();
        assert!(!env.is_empty(), "{service_name} has no settings");
        bad.extend(unaccepted(service_name, command, &args, &env));
    }
    assert_eq!(javelin_services, 4, "agent, consumer, query, migrate");
    assert!(bad.is_empty(), "{bad:#?}");

    // The agent: in the demo's pid namespace with the same privileges as on Kubernetes.
    let agent = &services["agent"];
    assert_eq!(s(&agent["pid"]), "service:demo");
    let mut caps = strings(&agent["cap_add"]);
    caps.sort();
    assert_eq!(caps, AGENT_CAPABILITIES);
    assert_eq!(strings(&agent["cap_drop"]), ["ALL"]);
    // The topics the one-shot creates are the ones the binaries use (their defaults).
    let topics_script = strings(&services["kafka-topics"]["command"]).concat();
    for topic in ["javelin.profiles.v1", "javelin.status.v1", "javelin.dlq.v1"] {
        assert!(
            topics_script.contains(topic),
            "kafka-topics must create {topic}"
        );
    }
    // ClickHouse's memory setting sits below the service's memory limit.
    let limit = quantity(s(&services["clickhouse"]["mem_limit"]));
    let server = xml_setting(
        &read("deploy/docker/clickhouse/memory.xml"),
        "max_server_memory_usage",
    );
    assert!(server < limit && server >= limit / 2, "{server} vs {limit}");
    assert!(
        strings(&services["clickhouse"]["volumes"])
            .iter()
            .any(|v| v.starts_with("./deploy/docker/clickhouse/memory.xml:")),
        "the memory settings are mounted"
    );
}

#[test]
fn the_agent_image_bundles_a_verified_async_profiler_for_both_architectures() {
    let dockerfile = read("deploy/docker/Dockerfile");
    for arch in ["AMD64", "ARM64"] {
        let line = dockerfile
            .lines()
            .find(|l| l.starts_with(&format!("ARG ASYNC_PROFILER_SHA256_{arch}=")))
            .unwrap_or_else(|| panic!("no checksum for {arch}"));
        let sum = line.rsplit('=').next().unwrap_or_default();
        assert!(
            sum.len() == 64 && sum.chars().all(|c| c.is_ascii_hexdigit()),
            "{arch}: {sum}"
        );
    }
    assert!(
        dockerfile.contains("sha256sum -c -"),
        "the download is verified"
    );
    // The library lands where the async-profiler component points the agent.
    let component = read("deploy/kubernetes/components/async-profiler/kustomization.yaml");
    let path = component
        .lines()
        .find_map(|l| l.trim().strip_prefix("value: /"))
        .map(|p| format!("/{p}"))
        .expect("the component's library path");
    assert!(
        dockerfile
            .lines()
            .any(|l| l.starts_with("COPY --from=async-profiler") && l.ends_with(&path)),
        "the agent stage installs {path}"
    );
    assert!(
        Options::of("javelin-agent", None)
            .env
            .contains("JAVELIN_ASYNC_PROFILER_LIB")
    );
}

/// The Prometheus names of the instruments the binaries create, from their
/// source (`javelin.x.y` → `javelin_x_y`, counters `_total`, histograms with
/// unit `s` → `_seconds` plus `_bucket`/`_sum`/`_count`; the same rules the
/// query API test and the live scrapes in the end-to-end test confirm).
fn exported_metrics() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for dir in ["producer/src", "consumer/src", "query-api/src"] {
        for entry in std::fs::read_dir(repo().join(dir)).expect("source dir") {
            let path = entry.expect("entry").path();
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let source = std::fs::read_to_string(&path).expect("source");
            for (at, _) in source.match_indices("(\"javelin.") {
                let before = &source[..at];
                let builder = before
                    .rsplit(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .next()
                    .unwrap_or_default();
                let rest = &source[at + 2..];
                let name = rest[..rest.find('"').expect("end quote")].replace('.', "_");
                let following: String = rest.lines().take(4).collect();
                let base = if following.contains("with_unit(\"s\")") {
                    format!("{name}_seconds")
                } else {
                    name
                };
                if builder.ends_with("_counter") {
                    names.insert(format!("{base}_total"));
                } else if builder.ends_with("_histogram") {
                    for suffix in ["_bucket", "_sum", "_count"] {
                        names.insert(format!("{base}{suffix}"));
                    }
                } else if builder.ends_with("_gauge") {
                    names.insert(base);
                }
            }
        }
    }
    names
}

#[test]
fn the_grafana_dashboard_charts_only_exported_metrics_and_all_of_them() {
    let exported = exported_metrics();
    assert!(exported.len() > 20, "{exported:?}");
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/javelin-pipeline.json")).expect("JSON");
    let mut used = BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("expr");
            for (at, _) in expr.match_indices("javelin_") {
                let name: String = expr[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                assert!(
                    exported.contains(&name),
                    "the dashboard charts unknown {name}"
                );
                used.insert(name);
            }
        }
    }
    // Every instrument is on the dashboard (a histogram through its buckets).
    let missing: Vec<&String> = exported
        .iter()
        .filter(|n| !n.ends_with("_sum") && !n.ends_with("_count"))
        .filter(|n| !used.contains(*n))
        .collect();
    assert!(missing.is_empty(), "not on the dashboard: {missing:?}");
}
