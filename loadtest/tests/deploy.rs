//! The deployment artefacts, checked without a cluster or a Docker engine:
//! every kustomize overlay renders (`kubectl kustomize`) and passes
//! `kubernetes-validate --strict` at a pinned Kubernetes version; every setting
//! the manifests and `docker-compose.yml` give a Javelin binary is one it
//! accepts (from its own `--help`); the manifests keep the promises the docs
//! make (the agent's exact privileges, memory limits that match ClickHouse's
//! settings, topic retention ≥ the replay horizon, scaling ≤ partitions,
//! selectors that select something); the clustered overlay's ClickHouse is one
//! cluster (Keeper quorum, macros, remote_servers, network paths) under the
//! name the binaries are given; the Dockerfile pins async-profiler for both
//! architectures; the Grafana dashboard only charts metrics the binaries
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
const OVERLAYS: [&str; 3] = ["dev", "production", "production-cluster"];
/// The overlays whose ClickHouse is a cluster (components/clickhouse-cluster).
const CLUSTERED: [&str; 1] = ["production-cluster"];
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

/// The ClickHouse server StatefulSets (one, or one per shard).
fn clickhouse_servers(resources: &[Value]) -> Vec<&Value> {
    of_kind(resources, "StatefulSet")
        .filter(|r| image_of(r).starts_with("clickhouse/clickhouse-server:"))
        .collect()
}

fn image_of(workload: &Value) -> &str {
    s(&workload["spec"]["template"]["spec"]["containers"][0]["image"])
}

/// The ConfigMap text a container mounts (with `subPath`) at `path`.
fn mounted_file(
    resources: &[Value],
    template: &Value,
    container: &Value,
    path: &str,
) -> Option<String> {
    let mount = container["volumeMounts"]
        .as_sequence()?
        .iter()
        .find(|m| s(&m["mountPath"]) == path)?;
    let volume = template["spec"]["volumes"]
        .as_sequence()?
        .iter()
        .find(|v| s(&v["name"]) == s(&mount["name"]))?;
    let map = find(resources, "ConfigMap", s(&volume["configMap"]["name"]));
    map["data"][s(&mount["subPath"])].as_str().map(String::from)
}

/// An environment variable of one pod of a StatefulSet, as the kubelet sets
/// it: literals with `$(VAR)` references expanded, the pod's name from the
/// downward API; None for anything else (secrets, other fields).
fn pod_env(container: &Value, var: &str, pod: &str) -> Option<String> {
    let entries = container["env"].as_sequence()?;
    let entry = entries.iter().find(|e| s(&e["name"]) == var)?;
    if s(&entry["valueFrom"]["fieldRef"]["fieldPath"]) == "metadata.name" {
        return Some(pod.to_string());
    }
    let mut value = entry["value"].as_str()?.to_string();
    while let Some(at) = value.find("$(") {
        let end = value[at..].find(')')? + at;
        let resolved = pod_env(container, &value[at + 2..end], pod)?;
        value.replace_range(at..=end, &resolved);
    }
    Some(value)
}

/// The top-level elements of an XML fragment, as (tag, attributes, content);
/// comments skipped. Enough for ClickHouse's config files (an element never
/// nests one of its own name).
fn xml_elements(xml: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(at) = rest.find('<') {
        rest = &rest[at..];
        if let Some(comment) = rest.strip_prefix("<!--") {
            rest = &comment[comment.find("-->").expect("comment closes") + 3..];
            continue;
        }
        let close = rest.find('>').expect("tag closes");
        let head = &rest[1..close];
        rest = &rest[close + 1..];
        let self_closing = head.ends_with('/');
        let head = head.trim_end_matches('/').trim();
        let (tag, attributes) = head.split_once(char::is_whitespace).unwrap_or((head, ""));
        if self_closing {
            out.push((tag.to_string(), attributes.to_string(), String::new()));
            continue;
        }
        let end_tag = format!("</{tag}>");
        let end = rest
            .find(&end_tag)
            .unwrap_or_else(|| panic!("no {end_tag}"));
        out.push((
            tag.to_string(),
            attributes.to_string(),
            rest[..end].to_string(),
        ));
        rest = &rest[end + end_tag.len()..];
    }
    out
}

/// The elements named `tag` among the top-level ones: (attributes, content).
fn xml_all(xml: &str, tag: &str) -> Vec<(String, String)> {
    xml_elements(xml)
        .into_iter()
        .filter(|(t, _, _)| t == tag)
        .map(|(_, a, c)| (a, c))
        .collect()
}

/// The content of the element at `path` (each step the first of its name).
fn xml_at(xml: &str, path: &[&str]) -> Option<String> {
    let mut content = xml.to_string();
    for tag in path {
        content = xml_all(&content, tag).into_iter().next()?.1;
    }
    Some(content.trim().to_string())
}

/// The attributes of the element at `path`.
fn xml_attributes_at(xml: &str, path: &[&str]) -> Option<String> {
    let (last, parents) = path.split_last()?;
    let parent = xml_at(xml, parents)?;
    xml_all(&parent, last).into_iter().next().map(|(a, _)| a)
}

/// `name="value"` among an element's attributes.
fn xml_attribute(attributes: &str, attribute: &str) -> Option<String> {
    let key = format!("{attribute}=\"");
    let start = attributes.find(&key)? + key.len();
    let end = attributes[start..].find('"')? + start;
    Some(attributes[start..end].to_string())
}

/// Whether the NetworkPolicies let a pod with labels `from` reach `port` on
/// a pod with labels `to`, both in the namespace (default deny otherwise).
fn admits(resources: &[Value], from: &Value, to: &Value, port: u64) -> bool {
    of_kind(resources, "NetworkPolicy")
        .filter(|p| labels_match(&p["spec"]["podSelector"], to))
        .flat_map(|p| p["spec"]["ingress"].as_sequence().into_iter().flatten())
        .any(|rule| {
            let peers = rule["from"].as_sequence().map(Vec::as_slice).unwrap_or(&[]);
            let peer_ok = peers.is_empty()
                || peers.iter().any(|peer| {
                    peer["namespaceSelector"].is_null()
                        && peer["ipBlock"].is_null()
                        && labels_match(&peer["podSelector"], from)
                });
            let ports = rule["ports"]
                .as_sequence()
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            let port_ok =
                ports.is_empty() || ports.iter().any(|p| p["port"].as_u64() == Some(port));
            peer_ok && port_ok
        })
}

/// In order, duplicates kept (a host listed twice is an error, not a match).
fn sorted<T: Ord>(items: impl IntoIterator<Item = T>) -> Vec<T> {
    let mut items: Vec<T> = items.into_iter().collect();
    items.sort();
    items
}

/// A container's port number by name.
fn port_named(container: &Value, port: &str) -> u64 {
    container["ports"]
        .as_sequence()
        .into_iter()
        .flatten()
        .find(|p| s(&p["name"]) == port)
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("{}: no port {port}", s(&container["name"])))
}

/// The pods a StatefulSet creates, by their names under its headless Service
/// (`<name>-<ordinal>.<serviceName>`).
fn stateful_pods(set: &Value) -> Vec<(String, String)> {
    let replicas = set["spec"]["replicas"].as_u64().expect("replicas");
    let service = s(&set["spec"]["serviceName"]);
    (0..replicas)
        .map(|i| {
            let pod = format!("{}-{i}", name(set));
            let host = format!("{pod}.{service}");
            (pod, host)
        })
        .collect()
}

/// A StatefulSet's governing Service: headless, publishing pods before they
/// are ready (peers must find each other to become ready), selecting its pods.
fn assert_headless_service(resources: &[Value], set: &Value, at: &dyn Fn(&str) -> String) {
    let service = find(resources, "Service", s(&set["spec"]["serviceName"]));
    assert_eq!(
        s(&service["spec"]["clusterIP"]),
        "None",
        "{}",
        at(&format!("{} is headless", name(service)))
    );
    assert_eq!(
        service["spec"]["publishNotReadyAddresses"].as_bool(),
        Some(true),
        "{}",
        at(&format!("{} publishes not-ready pods", name(service)))
    );
    let labels = &set["spec"]["template"]["metadata"]["labels"];
    assert!(
        service["spec"]["selector"]
            .as_mapping()
            .into_iter()
            .flatten()
            .all(|(k, v)| labels.get(s(k)).map(s) == Some(s(v))),
        "{}",
        at(&format!("{} selects {}", name(service), name(set)))
    );
}

/// Required anti-affinity on the node, over a selection that includes the
/// StatefulSet's own pods: no two of them share a node.
fn assert_spread_over_nodes(set: &Value, at: &dyn Fn(&str) -> String) {
    let labels = &set["spec"]["template"]["metadata"]["labels"];
    let terms = &set["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"];
    assert!(
        terms.as_sequence().into_iter().flatten().any(|t| {
            s(&t["topologyKey"]) == "kubernetes.io/hostname"
                && labels_match(&t["labelSelector"], labels)
        }),
        "{}",
        at(&format!("{}'s pods never share a node", name(set)))
    );
}

/// The PodDisruptionBudget over a StatefulSet's pods: its maxUnavailable.
fn max_unavailable(resources: &[Value], set: &Value, at: &dyn Fn(&str) -> String) -> u64 {
    let labels = &set["spec"]["template"]["metadata"]["labels"];
    let budgets: Vec<&Value> = of_kind(resources, "PodDisruptionBudget")
        .filter(|b| labels_match(&b["spec"]["selector"], labels))
        .collect();
    assert_eq!(
        budgets.len(),
        1,
        "{}",
        at(&format!("one PodDisruptionBudget over {}", name(set)))
    );
    budgets[0]["spec"]["maxUnavailable"]
        .as_u64()
        .unwrap_or_else(|| panic!("{}", at(&format!("{}: maxUnavailable", name(budgets[0])))))
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
        OVERLAYS.len() * 4,
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
        // Every ClickHouse node, with the files its own pod mounts.
        let servers = clickhouse_servers(&r);
        assert!(!servers.is_empty(), "{}", at("a ClickHouse"));
        for clickhouse in servers {
            let template = &clickhouse["spec"]["template"];
            let c = &template["spec"]["containers"][0];
            let limit = quantity(s(&c["resources"]["limits"]["memory"]));
            let mounted = |path: &str| {
                mounted_file(&r, template, c, path).unwrap_or_else(|| {
                    panic!("{}", at(&format!("{} mounts {path}", name(clickhouse))))
                })
            };
            let server = xml_setting(
                &mounted("/etc/clickhouse-server/config.d/memory.xml"),
                "max_server_memory_usage",
            );
            let per_query = xml_setting(
                &mounted("/etc/clickhouse-server/users.d/profiles.xml"),
                "max_memory_usage",
            );
            assert!(
                server < limit && server >= limit / 2,
                "{}",
                at(&format!(
                    "{}: max_server_memory_usage {server} vs limit {limit}",
                    name(clickhouse)
                ))
            );
            assert!(
                per_query < server,
                "{}",
                at("one query fits in the server's memory")
            );
        }

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

        // Secrets: generated in dev; named in the other overlays' instructions.
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
                let instructions = read(&format!(
                    "deploy/kubernetes/overlays/{overlay}/kustomization.yaml"
                ));
                assert!(
                    instructions.contains(&format!(
                        "create secret generic {secret} --from-literal={key}="
                    )),
                    "{overlay} must say how to create {secret}"
                );
            }
        }
    }
}

/// The Javelin workloads that talk to ClickHouse (migrate, consumer, query):
/// (workload, pod template, container).
fn clickhouse_clients(resources: &[Value]) -> Vec<(&str, &Value, &Value)> {
    let mut clients = Vec::new();
    for (workload, template) in pod_templates(resources) {
        for c in template["spec"]["containers"]
            .as_sequence()
            .into_iter()
            .flatten()
        {
            let args = strings(&c["args"]);
            if matches!(
                command_of(s(&c["image"]), &args),
                Some(("javelin-consumer" | "javelin-query", _))
            ) {
                clients.push((workload, template, c));
            }
        }
    }
    clients
}

#[test]
fn clickhouse_is_the_single_node_or_the_cluster_the_binaries_are_told() {
    for overlay in OVERLAYS {
        let (_, r) = render(overlay);
        let at = |what: &str| format!("{overlay}: {what}");
        let servers = clickhouse_servers(&r);

        // Every Javelin workload names the same cluster (or none) and reaches
        // ClickHouse through a Service over every node, on its HTTP port.
        let clients = clickhouse_clients(&r);
        assert_eq!(clients.len(), 3, "{}", at("migrate, consumer and query"));
        let mut clusters = BTreeSet::new();
        for (workload, template, c) in &clients {
            let env = container_env(&r, c);
            let literal = |k: &str| env.get(k).cloned().flatten();
            clusters.insert(literal("JAVELIN_CLICKHOUSE_CLUSTER").unwrap_or_default());
            let url = literal("JAVELIN_CLICKHOUSE_URL").unwrap_or_else(|| {
                panic!("{}", at(&format!("{workload}: JAVELIN_CLICKHOUSE_URL")))
            });
            let authority = url
                .strip_prefix("http://")
                .unwrap_or_else(|| panic!("{}", at(&format!("{workload}: {url}"))))
                .trim_end_matches('/');
            let (host, port) = authority.split_once(':').expect("host:port");
            let port: u64 = port.parse().expect("port");
            let service = find(&r, "Service", host);
            let service_port = service["spec"]["ports"]
                .as_sequence()
                .into_iter()
                .flatten()
                .find(|p| p["port"].as_u64() == Some(port))
                .unwrap_or_else(|| panic!("{}", at(&format!("{host} has no port {port}"))));
            for server in &servers {
                let template_labels = &server["spec"]["template"]["metadata"]["labels"];
                assert!(
                    service["spec"]["selector"]
                        .as_mapping()
                        .into_iter()
                        .flatten()
                        .all(|(k, v)| template_labels.get(s(k)).map(s) == Some(s(v))),
                    "{}",
                    at(&format!("{host} selects {}'s pods", name(server)))
                );
                let container = &server["spec"]["template"]["spec"]["containers"][0];
                let http = port_named(container, s(&service_port["targetPort"]));
                assert_eq!(
                    http,
                    port_named(container, "http"),
                    "{}",
                    at("to the HTTP port")
                );
                assert!(
                    admits(&r, &template["metadata"]["labels"], template_labels, http),
                    "{}",
                    at(&format!("{workload} may reach {} on {http}", name(server)))
                );
            }
        }
        assert_eq!(
            clusters.len(),
            1,
            "{}",
            at(&format!("one cluster name: {clusters:?}"))
        );
        let cluster = clusters.pop_first().unwrap_or_default();
        let keepers: Vec<&Value> = of_kind(&r, "StatefulSet")
            .filter(|k| image_of(k).starts_with("clickhouse/clickhouse-keeper:"))
            .collect();
        if !CLUSTERED.contains(&overlay) {
            assert_eq!(cluster, "", "{}", at("single node: no cluster"));
            assert_eq!(servers.len(), 1, "{}", at("one ClickHouse"));
            assert_eq!(servers[0]["spec"]["replicas"].as_u64(), Some(1));
            assert!(keepers.is_empty(), "{}", at("no Keeper without a cluster"));
            continue;
        }
        assert!(
            !cluster.is_empty(),
            "{}",
            at("JAVELIN_CLICKHOUSE_CLUSTER is set")
        );

        // Keeper: an odd quorum of at least three, one voter per node, Raft
        // peers = its pods, server ids = ordinal + 1, memory under its limit.
        assert_eq!(keepers.len(), 1, "{}", at("one Keeper ensemble"));
        let keeper = keepers[0];
        let voters = keeper["spec"]["replicas"].as_u64().expect("replicas");
        assert!(
            voters >= 3 && voters % 2 == 1,
            "{}",
            at(&format!("{voters} Keepers"))
        );
        assert_eq!(
            s(&keeper["spec"]["podManagementPolicy"]),
            "Parallel",
            "{}",
            at("Keepers start together (readiness needs a quorum)")
        );
        let tag = |image: &str| image.rsplit_once(':').map(|(_, t)| t.to_string());
        assert_eq!(
            tag(image_of(keeper)),
            tag(image_of(servers[0])),
            "{}",
            at("Keeper on the servers' release line")
        );
        assert_headless_service(&r, keeper, &at);
        assert_spread_over_nodes(keeper, &at);
        assert!(
            max_unavailable(&r, keeper, &at) <= (voters - 1) / 2,
            "{}",
            at("a drain never costs the quorum")
        );
        let keeper_template = &keeper["spec"]["template"];
        let keeper_container = &keeper_template["spec"]["containers"][0];
        let keeper_config = mounted_file(
            &r,
            keeper_template,
            keeper_container,
            "/etc/clickhouse-keeper/keeper_config.xml",
        )
        .expect("the Keeper config is mounted");
        let keeper_server =
            xml_at(&keeper_config, &["clickhouse", "keeper_server"]).expect("keeper_server");
        let client_port: u64 = xml_at(&keeper_server, &["tcp_port"])
            .and_then(|p| p.parse().ok())
            .expect("tcp_port");
        assert_eq!(client_port, port_named(keeper_container, "client"));
        let raft_port = port_named(keeper_container, "raft");
        let peers: Vec<(u64, String, u64)> = sorted(
            xml_all(
                &xml_at(&keeper_server, &["raft_configuration"]).expect("raft_configuration"),
                "server",
            )
            .into_iter()
            .map(|(_, server)| {
                let field = |f: &str| xml_at(&server, &[f]).unwrap_or_else(|| panic!("server {f}"));
                (
                    field("id").parse().expect("id"),
                    field("hostname"),
                    field("port").parse().expect("port"),
                )
            }),
        );
        let keeper_pods = stateful_pods(keeper);
        let expected: Vec<(u64, String, u64)> = keeper_pods
            .iter()
            .zip(1..)
            .map(|((_, host), id)| (id, host.clone(), raft_port))
            .collect();
        assert_eq!(peers, expected, "{}", at("Raft peers are the Keeper pods"));
        let id_from = xml_attributes_at(&keeper_server, &["server_id"])
            .and_then(|a| xml_attribute(&a, "from_env"))
            .expect("server_id from_env");
        assert!(
            strings(&keeper_container["args"])
                .concat()
                .contains(&format!("export {id_from}=$(( ${{HOSTNAME##*-}} + 1 ))")),
            "{}",
            at("each Keeper's id is its ordinal + 1")
        );
        let keeper_limit = quantity(s(&keeper_container["resources"]["limits"]["memory"]));
        let soft = xml_setting(&keeper_server, "max_memory_usage_soft_limit");
        assert!(
            soft < keeper_limit && soft >= keeper_limit / 2,
            "{}",
            at(&format!("Keeper soft limit {soft} vs limit {keeper_limit}"))
        );
        let keeper_labels = &keeper_template["metadata"]["labels"];
        assert!(
            admits(&r, keeper_labels, keeper_labels, raft_port),
            "{}",
            at("Keepers reach each other's Raft port")
        );

        // The servers: every shard replicated, one cluster.xml, remote_servers
        // naming exactly the pods the StatefulSets create, one shard per
        // StatefulSet, macros that tell each pod its shard and a unique replica.
        let config_of = |server: &Value| {
            let template = &server["spec"]["template"];
            mounted_file(
                &r,
                template,
                &template["spec"]["containers"][0],
                "/etc/clickhouse-server/config.d/cluster.xml",
            )
            .unwrap_or_else(|| panic!("{}", at(&format!("{} mounts cluster.xml", name(server)))))
        };
        let config = config_of(servers[0]);
        let root = xml_at(&config, &["clickhouse"]).expect("<clickhouse>");
        let remote_servers = xml_at(&root, &["remote_servers"]).expect("remote_servers");
        let defined: Vec<String> = xml_elements(&remote_servers)
            .into_iter()
            .map(|(t, _, _)| t)
            .collect();
        assert_eq!(
            defined,
            std::slice::from_ref(&cluster),
            "{}",
            at("remote_servers defines the binaries' cluster")
        );
        let shards: Vec<Vec<(String, u64)>> = xml_all(
            &xml_at(&remote_servers, &[&cluster]).unwrap_or_default(),
            "shard",
        )
        .into_iter()
        .map(|(_, shard)| {
            assert_eq!(
                xml_at(&shard, &["internal_replication"]).as_deref(),
                Some("true"),
                "{}",
                at("internal_replication")
            );
            sorted(xml_all(&shard, "replica").into_iter().map(|(_, replica)| {
                (
                    xml_at(&replica, &["host"]).expect("host"),
                    xml_at(&replica, &["port"])
                        .and_then(|p| p.parse().ok())
                        .expect("port"),
                )
            }))
        })
        .collect();
        assert_eq!(
            shards.len(),
            servers.len(),
            "{}",
            at("one shard per StatefulSet")
        );
        let macro_env = |m: &str| {
            xml_attributes_at(&root, &["macros", m])
                .and_then(|a| xml_attribute(&a, "from_env"))
                .unwrap_or_else(|| panic!("{}", at(&format!("the {m} macro comes from the pod"))))
        };
        let (shard_env, replica_env) = (macro_env("shard"), macro_env("replica"));
        if let Some(named) = xml_at(&root, &["macros", "cluster"]) {
            assert_eq!(named, cluster, "{}", at("the cluster macro"));
        }
        let interserver_env = xml_attributes_at(&root, &["interserver_http_host"])
            .and_then(|a| xml_attribute(&a, "from_env"))
            .expect("interserver_http_host from_env");
        let mut replicas = BTreeSet::new();
        let mut covered = BTreeSet::new();
        for server in &servers {
            assert_eq!(
                config_of(server),
                config,
                "{}",
                at("one cluster.xml for every node")
            );
            let pods = stateful_pods(server);
            assert!(
                pods.len() >= 2,
                "{}",
                at(&format!("{} is replicated", name(server)))
            );
            assert_headless_service(&r, server, &at);
            assert_spread_over_nodes(server, &at);
            assert!(
                max_unavailable(&r, server, &at) < pods.len() as u64,
                "{}",
                at(&format!("a drain leaves a replica of {}", name(server)))
            );
            let container = &server["spec"]["template"]["spec"]["containers"][0];
            let native = port_named(container, "native");
            let hosts = sorted(pods.iter().map(|(_, h)| (h.clone(), native)));
            let index = shards
                .iter()
                .position(|shard| *shard == hosts)
                .unwrap_or_else(|| {
                    panic!(
                        "{}",
                        at(&format!(
                            "remote_servers has {}'s pods {hosts:?} as one shard: {shards:?}",
                            name(server)
                        ))
                    )
                });
            assert!(covered.insert(index), "{}", at("one StatefulSet per shard"));
            for (pod, host) in &pods {
                assert_eq!(
                    pod_env(container, &shard_env, pod),
                    Some((index + 1).to_string()),
                    "{}",
                    at(&format!("{pod}: shard macro = its place in remote_servers"))
                );
                let replica = pod_env(container, &replica_env, pod)
                    .unwrap_or_else(|| panic!("{}", at(&format!("{pod}: replica macro"))));
                assert!(
                    replicas.insert(replica.clone()),
                    "{}",
                    at(&format!("replica {replica} is unique"))
                );
                assert_eq!(
                    pod_env(container, &interserver_env, pod).as_deref(),
                    Some(host.as_str()),
                    "{}",
                    at(&format!(
                        "{pod}: interserver_http_host is its remote_servers name"
                    ))
                );
            }
            // Nodes reach each other (native, interserver) and the Keepers.
            let labels = &server["spec"]["template"]["metadata"]["labels"];
            assert!(
                admits(&r, labels, keeper_labels, client_port),
                "{}",
                at("ClickHouse reaches Keeper")
            );
            for other in &servers {
                let other_labels = &other["spec"]["template"]["metadata"]["labels"];
                for port in [native, port_named(container, "interserver")] {
                    assert!(
                        admits(&r, labels, other_labels, port),
                        "{}",
                        at(&format!(
                            "{} reaches {} on {port}",
                            name(server),
                            name(other)
                        ))
                    );
                }
            }
        }
        let ensemble = sorted(
            xml_all(&xml_at(&root, &["zookeeper"]).expect("zookeeper"), "node")
                .into_iter()
                .map(|(_, node)| {
                    (
                        xml_at(&node, &["host"]).expect("host"),
                        xml_at(&node, &["port"])
                            .and_then(|p| p.parse().ok())
                            .expect("port"),
                    )
                }),
        );
        let expected = sorted(keeper_pods.iter().map(|(_, h)| (h.clone(), client_port)));
        assert_eq!(
            ensemble,
            expected,
            "{}",
            at("the servers' Keeper client config names every Keeper")
        );
        assert!(
            xml_at(&root, &["distributed_ddl", "path"]).is_some_and(|p| !p.is_empty()),
            "{}",
            at("distributed_ddl for ON CLUSTER")
        );

        // Everything lands in the namespace (kubectl apply -k without -n).
        for resource in &r {
            if !["Namespace", "ClusterRole", "ClusterRoleBinding"].contains(&kind(resource)) {
                assert_eq!(
                    s(&resource["metadata"]["namespace"]),
                    "javelin",
                    "{}",
                    at(&format!("{} {} namespace", kind(resource), name(resource)))
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
