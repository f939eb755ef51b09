//! One Pod on a lab node: its network, its ServiceAccount files, its
//! containers and the status the agent reports, until it is stopped.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Pod, Service, ServiceAccount};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use serde_json::json;
use tokio::sync::watch;

use super::NodeCtx;
use super::container::{Checks, Container, Launch, Readiness};
use super::spec::{self, ContainerView, PodFacts, Workload};
use crate::podnet::PodNet;

/// What the agent wants of a running pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wanted {
    /// Keep it running.
    Run,
    /// Stop it (the Pod is gone).
    Stop,
    /// Stop it, then delete the Pod object with grace 0, as the kubelet
    /// finalises a graceful deletion.
    StopAndDelete,
}

/// Token lifetime asked of the TokenRequest API; refreshed at 80 %.
const TOKEN_SECONDS: i64 = 3600;

/// The directory of a pod's files (logs, pids, ServiceAccount files).
pub fn pod_dir(state: &Path, namespace: &str, name: &str) -> PathBuf {
    state.join("pods").join(format!("{namespace}_{name}"))
}

/// Runs `pod` until `wanted` says otherwise. `number` is its pod number on
/// the node (`None` for hostNetwork pods).
pub async fn run(
    ctx: Arc<NodeCtx>,
    pod: Pod,
    number: Option<u8>,
    mut wanted: watch::Receiver<Wanted>,
) {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let net = number.map(|n| PodNet {
        node: ctx.host.clone(),
        cidr: ctx.cidr,
        number: n,
    });
    if *wanted.borrow() == Wanted::Run {
        tracing::info!("starting pod {namespace}/{name}");
        match start(&ctx, &pod, net.as_ref()).await {
            Ok(running) => {
                report_until_stopped(&ctx, &pod, running, &mut wanted).await;
            }
            Err(e) => {
                tracing::warn!(pod = %format!("{namespace}/{name}"), "cannot start: {e:#}");
                let _ = wanted.wait_for(|w| *w != Wanted::Run).await;
            }
        }
    }
    tracing::info!("stopping pod {namespace}/{name}");
    if let Some(net) = &net {
        net.destroy();
    }
    let _ = std::fs::remove_dir_all(pod_dir(&ctx.state, &namespace, &name));
    if *wanted.borrow() == Wanted::StopAndDelete {
        let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        if let Err(e) = api.delete(&name, &params).await {
            tracing::debug!("finalising the deletion of {namespace}/{name}: {e}");
        }
    }
}

struct Running {
    containers: Vec<Container>,
    facts: PodFacts,
    start_time: String,
    token: Option<tokio::task::JoinHandle<()>>,
}

async fn start(ctx: &Arc<NodeCtx>, pod: &Pod, net: Option<&PodNet>) -> Result<Running> {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let pod_spec = pod.spec.clone().context("a Pod without spec")?;
    let host_ips = vec![IpAddr::V4(ctx.host.ipv4), IpAddr::V6(ctx.host.ipv6)];
    let (netns, pod_ips) = match net {
        Some(net) => {
            net.create()?;
            let (v4, v6) = net.ips();
            (net.netns(), vec![IpAddr::V4(v4), IpAddr::V6(v6)])
        }
        None => (ctx.host.netns.clone(), host_ips.clone()),
    };
    let facts = PodFacts { host_ips, pod_ips };
    let dir = pod_dir(&ctx.state, &namespace, &name);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;

    let workloads: Vec<Workload> = pod_spec.containers.iter().map(spec::workload).collect();
    let needs_identity = workloads
        .iter()
        .any(|w| matches!(w, Workload::Ferrolb { .. }));
    let (service_account, token) = if needs_identity {
        let sa_dir = dir.join("serviceaccount");
        std::fs::create_dir_all(&sa_dir).context("cannot create the ServiceAccount directory")?;
        std::fs::copy(&ctx.ca, sa_dir.join("ca.crt")).context("cannot copy the cluster CA")?;
        write_atomically(&sa_dir.join("namespace"), &namespace)?;
        let expires = request_token(ctx, pod, &sa_dir).await?;
        let task = tokio::spawn(refresh_token(
            ctx.clone(),
            pod.clone(),
            sa_dir.clone(),
            expires,
        ));
        (Some(sa_dir), Some(task))
    } else {
        (None, None)
    };
    let kubernetes = Api::<Service>::namespaced(ctx.client.clone(), "default")
        .get("kubernetes")
        .await
        .ok()
        .and_then(|s| s.spec)
        .and_then(|s| s.cluster_ip);
    let grace = Duration::from_secs(
        pod_spec
            .termination_grace_period_seconds
            .and_then(|s| u64::try_from(s).ok())
            .unwrap_or(30)
            .min(10),
    );
    let probe_ip = facts
        .pod_ips
        .first()
        .copied()
        .unwrap_or(IpAddr::V4(ctx.host.ipv4));
    let mut containers = Vec::new();
    for (c, workload) in pod_spec.containers.iter().zip(workloads) {
        let mut env = spec::environment(pod, &facts, c);
        if let Some(ip) = &kubernetes {
            env.entry("KUBERNETES_SERVICE_HOST".into())
                .or_insert_with(|| ip.clone());
            env.entry("KUBERNETES_SERVICE_PORT".into())
                .or_insert_with(|| "443".into());
        }
        env.entry("HOSTNAME".into()).or_insert_with(|| name.clone());
        let (program, args, readiness, sa) = match workload {
            Workload::Ferrolb { binary, args } => {
                let program = super::ferrolb_binary_path(binary).await?;
                let readiness = match spec::readiness_probe(c) {
                    Some(p) => Readiness::Http(probe_ip, p),
                    None => Readiness::Running,
                };
                (program, args, readiness, service_account.clone())
            }
            Workload::HttpStandIn { ports } => {
                let mut args = vec!["pod-server".to_owned(), "--name".to_owned(), name.clone()];
                for p in &ports {
                    args.push("--port".into());
                    args.push(p.to_string());
                }
                let readiness = match spec::readiness_probe(c) {
                    Some(p) => Readiness::Http(probe_ip, p),
                    None => Readiness::Tcp(SocketAddr::new(
                        probe_ip,
                        ports.first().copied().unwrap_or(80),
                    )),
                };
                (ctx.lab_binary.clone(), args, readiness, None)
            }
        };
        let launch = Launch {
            program,
            args,
            env,
            netns: netns.clone(),
            service_account: sa,
            log: dir.join(format!("{}.log", c.name)),
            pid_file: dir.join(format!("{}.pid", c.name)),
        };
        let view = ContainerView {
            name: c.name.clone(),
            image: c.image.clone().unwrap_or_default(),
            running: false,
            started_at: None,
            ready: false,
            restart_count: 0,
            last_exit: None,
            finished: false,
        };
        let checks = Checks {
            readiness,
            liveness: spec::liveness_probe(c).map(|p| (probe_ip, p)),
        };
        containers.push(Container::start(
            view,
            launch,
            pod_spec.restart_policy.clone(),
            checks,
            grace,
        ));
    }
    Ok(Running {
        containers,
        facts,
        start_time: now(),
        token,
    })
}

async fn report_until_stopped(
    ctx: &NodeCtx,
    pod: &Pod,
    running: Running,
    wanted: &mut watch::Receiver<Wanted>,
) {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let mut last = None;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            changed = wanted.changed() => {
                if changed.is_err() || *wanted.borrow() != Wanted::Run { break; }
            }
        }
        let views: Vec<ContainerView> = running
            .containers
            .iter()
            .filter_map(|c| c.view.lock().ok().map(|v| v.clone()))
            .collect();
        if last.as_ref() == Some(&views) {
            continue;
        }
        let body = spec::pod_status(&views, &running.facts, &running.start_time, &now());
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&body))
            .await
        {
            Ok(_) => last = Some(views),
            Err(e) => tracing::debug!("status of {namespace}/{name}: {e}"),
        }
    }
    if let Some(t) = &running.token {
        t.abort();
    }
    for c in running.containers {
        c.stop().await;
    }
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

fn write_atomically(path: &Path, contents: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

/// Asks for a token of the pod's ServiceAccount bound to the pod, writes it,
/// and returns its lifetime.
async fn request_token(ctx: &NodeCtx, pod: &Pod, dir: &Path) -> Result<Duration> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let sa = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".to_owned());
    let request: TokenRequest = serde_json::from_value(json!({
        "spec": {
            "audiences": [],
            "expirationSeconds": TOKEN_SECONDS,
            "boundObjectRef": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": pod.metadata.name,
                "uid": pod.metadata.uid,
            },
        }
    }))
    .context("cannot build a TokenRequest")?;
    let status = Api::<ServiceAccount>::namespaced(ctx.client.clone(), &namespace)
        .create_token_request(&sa, &PostParams::default(), &request)
        .await
        .with_context(|| format!("TokenRequest for ServiceAccount {namespace}/{sa} failed"))?
        .status
        .context("TokenRequest returned no status")?;
    write_atomically(&dir.join("token"), &status.token)?;
    let lifetime = (status.expiration_timestamp.0 - k8s_openapi::jiff::Timestamp::now())
        .total(k8s_openapi::jiff::Unit::Second)
        .unwrap_or(600.0)
        .max(60.0);
    Ok(Duration::from_secs_f64(lifetime))
}

async fn refresh_token(ctx: Arc<NodeCtx>, pod: Pod, dir: PathBuf, mut lifetime: Duration) {
    loop {
        tokio::time::sleep(lifetime.mul_f64(0.8)).await;
        match request_token(&ctx, &pod, &dir).await {
            Ok(l) => lifetime = l,
            Err(e) => {
                tracing::warn!("cannot refresh a token: {e:#}");
                lifetime = Duration::from_secs(30);
            }
        }
    }
}
