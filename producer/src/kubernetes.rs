//! Kubernetes identity of a process, read from its own view of the world (no API
//! calls): cgroup paths carry the pod UID and the container id; the service
//! account mount carries the namespace; the hostname is the pod name; the
//! environment may carry the downward API's values.
//!
//! Sources, first match wins:
//! - namespace: `POD_NAMESPACE` / `JAVELIN_NAMESPACE` in the process environment,
//!   then `<root>/var/run/secrets/kubernetes.io/serviceaccount/namespace`;
//! - pod: `POD_NAME` / `JAVELIN_POD`, then `HOSTNAME` (the kubelet sets it to the
//!   pod name), only when the process runs in Kubernetes;
//! - container: `CONTAINER_NAME` / `JAVELIN_CONTAINER` (the name is not in the
//!   cgroup; `kubernetes_api` fills it from the pod's metadata when it can);
//! - container id and pod UID: the cgroup path (cgroup v1 and v2, containerd,
//!   CRI-O and Docker layouts).

use std::path::Path;

/// What is known about a process's Kubernetes placement; empty strings are unknown.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PodIdentity {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub container_id: String,
    pub pod_uid: String,
}

impl PodIdentity {
    /// Reads the identity of the process whose /proc directory is `proc_dir`,
    /// given its environment.
    pub fn read(proc_dir: &Path, environ: &[String]) -> PodIdentity {
        let env = |keys: &[&str]| {
            keys.iter().find_map(|k| {
                environ
                    .iter()
                    .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('='))
                    .filter(|v| !v.is_empty())
                    .map(str::to_string)
            })
        };
        let in_kubernetes = env(&["KUBERNETES_SERVICE_HOST"]).is_some();
        let cgroup = std::fs::read_to_string(proc_dir.join("cgroup")).unwrap_or_default();
        let (pod_uid, container_id) = parse_cgroup(&cgroup);
        let namespace = env(&["POD_NAMESPACE", "JAVELIN_NAMESPACE"]).or_else(|| {
            // Through rootfs: inside the container's root, regular file, bounded.
            crate::rootfs::Root::open(proc_dir.join("root"))
                .and_then(|root| {
                    root.read_in_root(
                        "/var/run/secrets/kubernetes.io/serviceaccount/namespace",
                        4096,
                    )
                })
                .ok()
                .map(|s| String::from_utf8_lossy(&s).trim().to_string())
                .filter(|s| !s.is_empty())
        });
        let pod = env(&["POD_NAME", "JAVELIN_POD"])
            .or_else(|| in_kubernetes.then(|| env(&["HOSTNAME"])).flatten());
        PodIdentity {
            namespace: namespace.unwrap_or_default(),
            pod: pod.unwrap_or_default(),
            container: env(&["CONTAINER_NAME", "JAVELIN_CONTAINER"]).unwrap_or_default(),
            container_id: container_id.unwrap_or_default(),
            pod_uid: pod_uid.unwrap_or_default(),
        }
    }
}

/// (pod UID, container id) from a /proc/<pid>/cgroup file.
pub fn parse_cgroup(cgroup: &str) -> (Option<String>, Option<String>) {
    let mut pod_uid = None;
    let mut container_id = None;
    for line in cgroup.lines() {
        let path = line.splitn(3, ':').nth(2).unwrap_or("");
        for segment in path.split('/') {
            if pod_uid.is_none()
                && let Some(uid) = segment
                    .rfind("pod")
                    .map(|i| &segment[i + 3..])
                    .map(|s| s.trim_end_matches(".slice"))
                    .filter(|s| s.len() == 36 || s.len() == 32 + 4)
            {
                // systemd slices spell the UID with underscores.
                pod_uid = Some(uid.replace('_', "-"));
            }
            if container_id.is_none() {
                let id = segment.trim_end_matches(".scope");
                let id = id.rsplit(['-', ':']).next().unwrap_or(id);
                if id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
                    container_id = Some(id.to_string());
                }
            }
        }
    }
    (pod_uid, container_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f1c2a9b8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a";

    #[test]
    fn cgroup_v2_containerd_systemd() {
        let line = format!(
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1c9a2b3c_4d5e_6f70_8192_a3b4c5d6e7f8.slice/cri-containerd-{ID}.scope\n"
        );
        let (uid, id) = parse_cgroup(&line);
        assert_eq!(uid.as_deref(), Some("1c9a2b3c-4d5e-6f70-8192-a3b4c5d6e7f8"));
        assert_eq!(id.as_deref(), Some(ID));
    }

    #[test]
    fn cgroup_v1_cgroupfs_and_crio() {
        let v1 = format!(
            "12:memory:/kubepods/besteffort/pod1c9a2b3c-4d5e-6f70-8192-a3b4c5d6e7f8/{ID}\n"
        );
        assert_eq!(
            parse_cgroup(&v1),
            (
                Some("1c9a2b3c-4d5e-6f70-8192-a3b4c5d6e7f8".into()),
                Some(ID.into())
            )
        );
        let crio = format!(
            "0::/kubepods.slice/kubepods-pod1c9a2b3c_4d5e_6f70_8192_a3b4c5d6e7f8.slice/crio-{ID}.scope\n"
        );
        assert_eq!(parse_cgroup(&crio).1.as_deref(), Some(ID));
        let docker = format!("0::/system.slice/docker-{ID}.scope\n");
        assert_eq!(parse_cgroup(&docker), (None, Some(ID.into())));
    }

    #[test]
    fn plain_hosts_have_no_pod() {
        assert_eq!(
            parse_cgroup("0::/user.slice/user-1000.slice/session-2.scope\n"),
            (None, None)
        );
        assert_eq!(
            parse_cgroup("4:memory:/process_api/bd1d3a9714d7a1946e73a04df0e138b7\n"),
            (None, None)
        );
    }

    #[test]
    fn identity_from_a_process_view() {
        let dir = std::env::temp_dir().join(format!("javelin-k8s-{}", std::process::id()));
        let sa = dir.join("root/var/run/secrets/kubernetes.io/serviceaccount");
        std::fs::create_dir_all(&sa).expect("dirs");
        std::fs::write(sa.join("namespace"), "payments\n").expect("write");
        std::fs::write(
            dir.join("cgroup"),
            format!("0::/kubepods/pod1c9a2b3c-4d5e-6f70-8192-a3b4c5d6e7f8/{ID}\n"),
        )
        .expect("write");
        let env = vec![
            "KUBERNETES_SERVICE_HOST=10.0.0.1".to_string(),
            "HOSTNAME=checkout-7d9f-x2".to_string(),
        ];
        let id = PodIdentity::read(&dir, &env);
        assert_eq!(id.namespace, "payments");
        assert_eq!(id.pod, "checkout-7d9f-x2");
        assert_eq!(id.container_id, ID);
        // Outside Kubernetes the hostname is not a pod name.
        let id = PodIdentity::read(&dir, &["HOSTNAME=laptop".to_string()]);
        assert_eq!(id.pod, "");
        // The downward API wins.
        let env = vec![
            "POD_NAMESPACE=shop".to_string(),
            "POD_NAME=p".to_string(),
            "CONTAINER_NAME=app".to_string(),
        ];
        let id = PodIdentity::read(&dir, &env);
        assert_eq!(
            (
                id.namespace.as_str(),
                id.pod.as_str(),
                id.container.as_str()
            ),
            ("shop", "p", "app")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
