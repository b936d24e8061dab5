//! Optional pod lookup in the Kubernetes API, with the agent's own service
//! account (in-cluster token and CA): the pod's `app.kubernetes.io/name` label
//! (a step of the service-name chain) and the names of its containers by
//! container id. Results are cached per pod for `ttl`, at most `capacity` pods;
//! a failed lookup is logged and profiling goes on without it.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::Mutex;

const SERVICE_ACCOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The standard label naming the application (the service-name chain's second step).
pub const APP_NAME_LABEL: &str = "app.kubernetes.io/name";
/// The standard label giving the application's version (the version chain's second step).
pub const APP_VERSION_LABEL: &str = "app.kubernetes.io/version";

#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("reading the service account ({path}): {source}")]
    Credentials {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("building the API client: {0}")]
    Client(String),
    #[error("GET {url}: {message}")]
    Request { url: String, message: String },
}

/// What the agent uses from a pod object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodMeta {
    pub labels: BTreeMap<String, String>,
    /// Container runtime id (without the `containerd://` scheme) → container name.
    pub containers: HashMap<String, String>,
}

impl PodMeta {
    /// Reads labels and container statuses from a pod JSON object.
    pub fn from_json(pod: &Value) -> PodMeta {
        let labels = pod["metadata"]["labels"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        let mut containers = HashMap::new();
        for key in [
            "containerStatuses",
            "initContainerStatuses",
            "ephemeralContainerStatuses",
        ] {
            for status in pod["status"][key].as_array().into_iter().flatten() {
                let (Some(name), Some(id)) =
                    (status["name"].as_str(), status["containerID"].as_str())
                else {
                    continue;
                };
                let id = id.rsplit("://").next().unwrap_or(id);
                containers.insert(id.to_string(), name.to_string());
            }
        }
        PodMeta { labels, containers }
    }

    pub fn app_name(&self) -> Option<&str> {
        self.labels
            .get(APP_NAME_LABEL)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }

    pub fn app_version(&self) -> Option<&str> {
        self.labels
            .get(APP_VERSION_LABEL)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }

    pub fn container_name(&self, container_id: &str) -> Option<&str> {
        self.containers.get(container_id).map(String::as_str)
    }
}

/// A client for the pods API with a small cache.
#[derive(Debug)]
pub struct PodLookup {
    client: reqwest::Client,
    base: String,
    token: String,
    ttl: Duration,
    capacity: usize,
    cache: Mutex<HashMap<(String, String), (Instant, PodMeta)>>,
}

impl PodLookup {
    /// The in-cluster client, or `None` outside Kubernetes (no `KUBERNETES_SERVICE_HOST`).
    pub fn in_cluster(ttl: Duration, capacity: usize) -> Result<Option<PodLookup>, LookupError> {
        let (Ok(host), Ok(port)) = (
            std::env::var("KUBERNETES_SERVICE_HOST"),
            std::env::var("KUBERNETES_SERVICE_PORT"),
        ) else {
            return Ok(None);
        };
        let read = |file: &str| {
            let path = format!("{SERVICE_ACCOUNT}/{file}");
            std::fs::read(&path).map_err(|source| LookupError::Credentials { path, source })
        };
        let token = String::from_utf8_lossy(&read("token")?).trim().to_string();
        let ca = reqwest::Certificate::from_pem(&read("ca.crt")?)
            .map_err(|e| LookupError::Client(e.to_string()))?;
        let client = reqwest::Client::builder()
            .add_root_certificate(ca)
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| LookupError::Client(e.to_string()))?;
        // IPv6 service hosts need brackets in a URL.
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        Ok(Some(PodLookup {
            client,
            base: format!("https://{host}:{port}"),
            token,
            ttl,
            capacity,
            cache: Mutex::new(HashMap::new()),
        }))
    }

    /// The pod's metadata, from the cache when fresh.
    pub async fn pod(&self, namespace: &str, pod: &str) -> Result<PodMeta, LookupError> {
        let key = (namespace.to_string(), pod.to_string());
        if let Some((at, meta)) = self.cache.lock().await.get(&key)
            && at.elapsed() < self.ttl
        {
            return Ok(meta.clone());
        }
        let url = format!("{}/api/v1/namespaces/{namespace}/pods/{pod}", self.base);
        let request_error = |message: String| LookupError::Request {
            url: url.clone(),
            message,
        };
        let response = self
            .client
            .get(&url)
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| request_error(e.to_string()))?;
        if !response.status().is_success() {
            return Err(request_error(format!("HTTP {}", response.status())));
        }
        let json: Value = response
            .json()
            .await
            .map_err(|e| request_error(e.to_string()))?;
        let meta = PodMeta::from_json(&json);
        let mut cache = self.cache.lock().await;
        if cache.len() >= self.capacity {
            cache.retain(|_, (at, _)| at.elapsed() < self.ttl);
            if cache.len() >= self.capacity {
                cache.clear();
            }
        }
        cache.insert(key, (Instant::now(), meta.clone()));
        Ok(meta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_container_names_come_from_the_pod_object() {
        let pod: Value = serde_json::json!({
            "metadata": {"name": "checkout-7d9f-x2", "labels": {"app.kubernetes.io/name": "checkout", "app.kubernetes.io/version": "3.1.0", "tier": "web"}},
            "status": {
                "containerStatuses": [
                    {"name": "app", "containerID": "containerd://3f1c2a9b8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a"},
                    {"name": "istio-proxy", "containerID": "containerd://aaaa"}
                ],
                "initContainerStatuses": [{"name": "init", "containerID": "cri-o://bbbb"}]
            }
        });
        let meta = PodMeta::from_json(&pod);
        assert_eq!(meta.app_name(), Some("checkout"));
        assert_eq!(meta.app_version(), Some("3.1.0"));
        assert_eq!(
            meta.container_name("3f1c2a9b8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a"),
            Some("app")
        );
        assert_eq!(meta.container_name("bbbb"), Some("init"));
        assert_eq!(meta.container_name("cccc"), None);
    }

    #[test]
    fn a_pod_without_labels_or_statuses_is_empty_not_an_error() {
        let meta = PodMeta::from_json(&serde_json::json!({"metadata": {"name": "x"}}));
        assert_eq!(meta, PodMeta::default());
        assert_eq!(meta.app_name(), None);
    }

    #[test]
    fn outside_kubernetes_there_is_no_lookup() {
        if std::env::var_os("KUBERNETES_SERVICE_HOST").is_none() {
            assert!(
                PodLookup::in_cluster(Duration::from_secs(1), 1)
                    .expect("no error")
                    .is_none()
            );
        }
    }
}
