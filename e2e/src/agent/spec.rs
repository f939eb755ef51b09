//! What the node agent runs for a Pod, derived from the Pod alone (pure):
//! which program stands in for each container, its environment with the
//! downward API resolved, its ports and readiness probe, and the Pod status
//! the agent reports.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Container, Pod};
use serde_json::{Value, json};

/// The FerroLB binaries the agent runs for real, by image name.
pub const FERROLB_BINARIES: [&str; 2] = ["ferrolb-controller", "ferrolb-speaker"];

/// What runs for a container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Workload {
    /// A FerroLB binary (`ferrolb-controller` or `ferrolb-speaker`), built
    /// locally, run with the container's arguments.
    Ferrolb {
        /// The binary's name.
        binary: &'static str,
        /// Its arguments: the container's command after the entry point,
        /// then its args.
        args: Vec<String>,
    },
    /// The HTTP stand-in: answers with the pod's name on these ports.
    HttpStandIn {
        /// TCP ports (80 when the container declares none).
        ports: Vec<u16>,
    },
}

/// The FerroLB binary an image names, if any: the last path component,
/// without tag or digest, is `ferrolb-controller` or `ferrolb-speaker`
/// (`ghcr.io/x/ferrolb-speaker:v1`, `ferrolb/ferrolb-controller@sha256:…`,
/// `ferrolb-speaker`).
pub fn ferrolb_binary(image: &str) -> Option<&'static str> {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    let name = last.split(':').next().unwrap_or(last);
    FERROLB_BINARIES.into_iter().find(|b| *b == name)
}

/// What runs for `container`.
pub fn workload(container: &Container) -> Workload {
    match container.image.as_deref().and_then(ferrolb_binary) {
        Some(binary) => {
            // A command replaces the image's entry point: keep what follows it.
            let mut args: Vec<String> = container
                .command
                .iter()
                .flatten()
                .skip(1)
                .cloned()
                .collect();
            args.extend(container.args.iter().flatten().cloned());
            Workload::Ferrolb { binary, args }
        }
        None => {
            let mut ports: Vec<u16> = container
                .ports
                .iter()
                .flatten()
                .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
                .filter_map(|p| u16::try_from(p.container_port).ok())
                .collect();
            ports.dedup();
            if ports.is_empty() {
                ports.push(80);
            }
            Workload::HttpStandIn { ports }
        }
    }
}

/// The facts about a running pod that the downward API exposes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodFacts {
    /// The node's IPs (IPv4 first).
    pub host_ips: Vec<IpAddr>,
    /// The pod's IPs (IPv4 first); the node's for hostNetwork pods.
    pub pod_ips: Vec<IpAddr>,
}

/// The value of a downward-API `fieldRef.fieldPath`, if the agent knows it.
pub fn field_value(pod: &Pod, facts: &PodFacts, path: &str) -> Option<String> {
    let join = |ips: &[IpAddr]| {
        ips.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    let first = |ips: &[IpAddr]| ips.first().map(ToString::to_string);
    match path {
        "metadata.name" => pod.metadata.name.clone(),
        "metadata.namespace" => pod.metadata.namespace.clone(),
        "metadata.uid" => pod.metadata.uid.clone(),
        "spec.nodeName" => pod.spec.as_ref().and_then(|s| s.node_name.clone()),
        "spec.serviceAccountName" => pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone()),
        "status.hostIP" => first(&facts.host_ips),
        "status.hostIPs" => Some(join(&facts.host_ips)),
        "status.podIP" => first(&facts.pod_ips),
        "status.podIPs" => Some(join(&facts.pod_ips)),
        _ => {
            let key = path
                .strip_prefix("metadata.labels['")
                .and_then(|k| k.strip_suffix("']"))?;
            pod.metadata.labels.as_ref()?.get(key).cloned()
        }
    }
}

/// The container's environment: plain values and downward-API fields
/// (other sources are not supported by the lab and are left out).
pub fn environment(pod: &Pod, facts: &PodFacts, container: &Container) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for var in container.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (Some(v), _) => Some(v.clone()),
            (None, Some(from)) => from
                .field_ref
                .as_ref()
                .and_then(|f| field_value(pod, facts, &f.field_path)),
            (None, None) => Some(String::new()),
        };
        if let Some(v) = value {
            env.insert(var.name.clone(), v);
        }
    }
    env
}

/// An HTTP readiness (or liveness) check, resolved to a port number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpProbe {
    /// The port.
    pub port: u16,
    /// The path.
    pub path: String,
    /// Seconds between checks.
    pub period: u64,
    /// Consecutive failures that make the container unready (readiness)
    /// or get it restarted (liveness).
    pub failure_threshold: u32,
    /// Seconds after the start before the first check.
    pub initial_delay: u64,
    /// `scheme: HTTPS`: over TLS, without verifying the certificate.
    pub https: bool,
}

/// The container's readiness probe, when it is an `httpGet` probe whose port
/// resolves (a number, or the name of one of its ports).
pub fn readiness_probe(container: &Container) -> Option<HttpProbe> {
    http_probe(container, container.readiness_probe.as_ref()?)
}

/// The container's liveness probe, when it is a resolvable `httpGet` probe.
pub fn liveness_probe(container: &Container) -> Option<HttpProbe> {
    http_probe(container, container.liveness_probe.as_ref()?)
}

fn http_probe(
    container: &Container,
    probe: &k8s_openapi::api::core::v1::Probe,
) -> Option<HttpProbe> {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let get = probe.http_get.as_ref()?;
    let port = match &get.port {
        IntOrString::Int(p) => u16::try_from(*p).ok()?,
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok())?,
    };
    Some(HttpProbe {
        port,
        path: get.path.clone().unwrap_or_else(|| "/".to_owned()),
        period: probe
            .period_seconds
            .and_then(|p| u64::try_from(p).ok())
            .unwrap_or(10)
            .max(1),
        failure_threshold: probe
            .failure_threshold
            .and_then(|p| u32::try_from(p).ok())
            .unwrap_or(3)
            .max(1),
        initial_delay: probe
            .initial_delay_seconds
            .and_then(|p| u64::try_from(p).ok())
            .unwrap_or(0),
        https: get.scheme.as_deref() == Some("HTTPS"),
    })
}

/// Whether a container that exited with `code` is started again.
pub fn restarts(policy: Option<&str>, code: i32) -> bool {
    match policy.unwrap_or("Always") {
        "Never" => false,
        "OnFailure" => code != 0,
        _ => true,
    }
}

/// A container's state as the agent tracks it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerView {
    /// The container's name.
    pub name: String,
    /// Its image (as declared).
    pub image: String,
    /// Whether its process runs now.
    pub running: bool,
    /// When the current (or last) process started, RFC 3339.
    pub started_at: Option<String>,
    /// Whether it passes readiness.
    pub ready: bool,
    /// How many times it was restarted.
    pub restart_count: i32,
    /// The last exit: code, reason, finish time.
    pub last_exit: Option<(i32, String, String)>,
    /// True once it exited for good (its restart policy says no).
    pub finished: bool,
}

/// The Pod status the agent reports (a merge patch body).
pub fn pod_status(
    containers: &[ContainerView],
    facts: &PodFacts,
    start_time: &str,
    now: &str,
) -> Value {
    let all_ready = !containers.is_empty() && containers.iter().all(|c| c.ready);
    let all_finished = containers.iter().all(|c| c.finished);
    let phase = if !all_finished {
        "Running"
    } else if containers
        .iter()
        .all(|c| c.last_exit.as_ref().is_some_and(|e| e.0 == 0))
    {
        "Succeeded"
    } else {
        "Failed"
    };
    let cond = |type_: &str, ok: bool| {
        json!({
            "type": type_,
            "status": if ok { "True" } else { "False" },
            "lastTransitionTime": now,
        })
    };
    let statuses: Vec<Value> = containers
        .iter()
        .map(|c| {
            let state = match (&c.started_at, c.running, &c.last_exit) {
                (Some(at), true, _) => json!({ "running": { "startedAt": at } }),
                (_, false, Some((code, reason, at))) if c.finished => json!({
                    "terminated": { "exitCode": code, "reason": reason, "finishedAt": at }
                }),
                _ => json!({ "waiting": { "reason": if c.restart_count > 0 { "CrashLoopBackOff" } else { "ContainerCreating" } } }),
            };
            let last = c.last_exit.as_ref().map(|(code, reason, at)| {
                json!({ "terminated": { "exitCode": code, "reason": reason, "finishedAt": at } })
            });
            json!({
                "name": c.name,
                "image": c.image,
                "imageID": format!("lab://{}", c.image),
                "containerID": format!("lab://{}", c.name),
                "ready": c.ready,
                "started": c.running,
                "restartCount": c.restart_count,
                "state": state,
                "lastState": last.unwrap_or_else(|| json!({})),
            })
        })
        .collect();
    let ips = |v: &[IpAddr]| {
        v.iter()
            .map(|ip| json!({ "ip": ip.to_string() }))
            .collect::<Vec<_>>()
    };
    json!({
        "status": {
            "phase": phase,
            "hostIP": facts.host_ips.first().map(ToString::to_string),
            "hostIPs": ips(&facts.host_ips),
            "podIP": facts.pod_ips.first().map(ToString::to_string),
            "podIPs": ips(&facts.pod_ips),
            "startTime": start_time,
            "conditions": [
                cond("PodReadyToStartContainers", true),
                cond("Initialized", true),
                cond("ContainersReady", all_ready),
                cond("Ready", all_ready),
                cond("PodScheduled", true),
            ],
            "containerStatuses": statuses,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(value: Value) -> Pod {
        serde_json::from_value(value).expect("a valid pod")
    }

    #[test]
    fn ferrolb_images_are_recognised_with_any_registry_or_tag() {
        assert_eq!(
            ferrolb_binary("ferrolb/ferrolb-controller:0.1.0"),
            Some("ferrolb-controller")
        );
        assert_eq!(
            ferrolb_binary("ghcr.io/a/b/ferrolb-speaker@sha256:ab"),
            Some("ferrolb-speaker")
        );
        assert_eq!(ferrolb_binary("ferrolb-speaker"), Some("ferrolb-speaker"));
        assert_eq!(
            ferrolb_binary("localhost:5000/ferrolb-speaker:v1"),
            Some("ferrolb-speaker")
        );
        assert_eq!(ferrolb_binary("nginx"), None);
        assert_eq!(ferrolb_binary("ferrolb/ferrolb-speaker-debug"), None);
    }

    #[test]
    fn stand_in_listens_on_declared_tcp_ports_or_80() {
        let p = pod(json!({ "spec": { "containers": [
            { "name": "a", "image": "nginx" },
            { "name": "b", "image": "x", "ports": [
                { "containerPort": 8080 }, { "containerPort": 53, "protocol": "UDP" }
            ] },
        ] } }));
        let cs = p.spec.expect("spec").containers;
        assert_eq!(workload(&cs[0]), Workload::HttpStandIn { ports: vec![80] });
        assert_eq!(
            workload(&cs[1]),
            Workload::HttpStandIn { ports: vec![8080] }
        );
    }

    #[test]
    fn ferrolb_containers_keep_command_tail_and_args() {
        let p = pod(json!({ "spec": { "containers": [{
            "name": "c", "image": "ferrolb/ferrolb-controller:1",
            "command": ["/ferrolb-controller", "--a"], "args": ["--b"],
        }] } }));
        let c = &p.spec.expect("spec").containers[0];
        assert_eq!(
            workload(c),
            Workload::Ferrolb {
                binary: "ferrolb-controller",
                args: vec!["--a".into(), "--b".into()]
            }
        );
    }

    #[test]
    fn downward_api_fields_resolve() {
        let p = pod(json!({
            "metadata": { "name": "s-1", "namespace": "ferrolb-system", "labels": { "app": "x" } },
            "spec": { "nodeName": "node2", "containers": [{
                "name": "c", "image": "ferrolb-speaker",
                "env": [
                    { "name": "PLAIN", "value": "v" },
                    { "name": "NODE", "valueFrom": { "fieldRef": { "fieldPath": "spec.nodeName" } } },
                    { "name": "HOST", "valueFrom": { "fieldRef": { "fieldPath": "status.hostIP" } } },
                    { "name": "POD", "valueFrom": { "fieldRef": { "fieldPath": "status.podIP" } } },
                    { "name": "NS", "valueFrom": { "fieldRef": { "fieldPath": "metadata.namespace" } } },
                    { "name": "APP", "valueFrom": { "fieldRef": { "fieldPath": "metadata.labels['app']" } } },
                ],
            }] },
        }));
        let facts = PodFacts {
            host_ips: vec!["198.18.0.12".parse().expect("ip")],
            pod_ips: vec!["198.18.66.5".parse().expect("ip")],
        };
        let c = p.spec.clone().expect("spec").containers.remove(0);
        let env = environment(&p, &facts, &c);
        assert_eq!(env["PLAIN"], "v");
        assert_eq!(env["NODE"], "node2");
        assert_eq!(env["HOST"], "198.18.0.12");
        assert_eq!(env["POD"], "198.18.66.5");
        assert_eq!(env["NS"], "ferrolb-system");
        assert_eq!(env["APP"], "x");
    }

    #[test]
    fn named_probe_ports_resolve() {
        let p = pod(json!({ "spec": { "containers": [{
            "name": "c", "image": "x",
            "ports": [{ "name": "metrics", "containerPort": 7472 }],
            "readinessProbe": { "httpGet": { "path": "/readyz", "port": "metrics" }, "periodSeconds": 5 },
            "livenessProbe": { "httpGet": { "path": "/healthz", "port": 7473, "scheme": "HTTPS" } },
        }] } }));
        let c = &p.spec.expect("spec").containers[0];
        assert_eq!(
            readiness_probe(c),
            Some(HttpProbe {
                port: 7472,
                path: "/readyz".into(),
                period: 5,
                failure_threshold: 3,
                initial_delay: 0,
                https: false,
            })
        );
        assert_eq!(
            liveness_probe(c),
            Some(HttpProbe {
                port: 7473,
                path: "/healthz".into(),
                period: 10,
                failure_threshold: 3,
                initial_delay: 0,
                https: true,
            })
        );
    }

    #[test]
    fn restart_policy() {
        assert!(restarts(None, 0));
        assert!(restarts(Some("OnFailure"), 1));
        assert!(!restarts(Some("OnFailure"), 0));
        assert!(!restarts(Some("Never"), 1));
    }

    #[test]
    fn ready_only_when_every_container_is() {
        let c = ContainerView {
            name: "a".into(),
            image: "nginx".into(),
            running: true,
            started_at: Some("t".into()),
            ready: true,
            restart_count: 2,
            last_exit: None,
            finished: false,
        };
        let mut d = c.clone();
        d.ready = false;
        let facts = PodFacts::default();
        let ready = pod_status(std::slice::from_ref(&c), &facts, "t", "t");
        assert_eq!(ready["status"]["phase"], "Running");
        assert_eq!(ready["status"]["conditions"][3]["status"], "True");
        assert_eq!(ready["status"]["containerStatuses"][0]["restartCount"], 2);
        let not = pod_status(&[c, d], &facts, "t", "t");
        assert_eq!(not["status"]["conditions"][3]["status"], "False");
    }
}
