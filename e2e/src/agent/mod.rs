//! The lab node agent: our stand-in for the kubelet, one process per node
//! (`lab agent --node N`, started by `cargo lab up`).
//!
//! It keeps its Node Ready (a heartbeat on the Ready condition) with its pod
//! CIDRs set, watches the Pods bound to its node and runs each one: a
//! network namespace wired to the node, then per container either the
//! locally built FerroLB binary (for FerroLB's images) or an HTTP stand-in
//! that answers with the pod's name (for any other image: the image itself is
//! never pulled or run). It reports the Pods Running and Ready with their
//! IPs, stops them when they are deleted and finalises the deletion. It also
//! keeps the emulated `kube-ipvs0` device in sync with the LoadBalancer IPs
//! of every Service (see [`crate::ipvs`]).

pub mod container;
pub mod pod;
pub mod probe_tls;
pub mod server;
pub mod spec;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{WatchStreamExt as _, reflector, watcher};
use serde_json::json;
use tokio::sync::watch;

use crate::lan::Host;
use crate::podnet::{self, POD_NUMBERS, PodCidr};
use crate::process::Daemon;
use crate::{ipvs, nodes};
use pod::Wanted;

/// Everything the agent of one node shares between its pods.
pub struct NodeCtx {
    /// An admin client.
    pub client: kube::Client,
    /// The node.
    pub host: Host,
    /// Its pod CIDRs.
    pub cidr: PodCidr,
    /// The lab's state directory.
    pub state: PathBuf,
    /// The `lab` binary (for the HTTP stand-in).
    pub lab_binary: PathBuf,
    /// The cluster CA certificate.
    pub ca: PathBuf,
}

/// The daemon that runs the agent of node `index`.
pub fn daemon(state: &Path, lab_binary: &Path, index: u8) -> Daemon {
    Daemon {
        name: format!("agent-node{index}"),
        program: lab_binary.to_owned(),
        args: vec![
            "agent".into(),
            "--node".into(),
            index.to_string(),
            "--state".into(),
            state.display().to_string(),
        ],
        netns: None,
    }
}

/// Where the locally built FerroLB binary `name` is: the workspace's
/// `target/debug` (or `$CARGO_TARGET_DIR/debug`), built with cargo if missing.
pub async fn ferrolb_binary_path(name: &str) -> Result<PathBuf> {
    let path = target_dir().join("debug").join(name);
    if !path.exists() {
        let name = name.to_owned();
        tokio::task::spawn_blocking(move || build_ferrolb(&[name.as_str()]))
            .await
            .context("the build task failed")??;
    }
    Ok(path)
}

/// The workspace's target directory.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .unwrap_or(Path::new("."))
                .join("target")
        })
}

/// Builds FerroLB binaries (`ferrolb-controller`, `ferrolb-speaker`) with cargo.
pub fn build_ferrolb(names: &[&str]) -> Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    cmd.arg("build").current_dir(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap_or(Path::new(".")),
    );
    for n in names {
        cmd.args(["-p", n, "--bin", n]);
    }
    let status = cmd.status().context("cannot run cargo build")?;
    anyhow::ensure!(status.success(), "cargo build of {names:?} failed");
    Ok(())
}

/// Runs the agent of node `index` until killed.
pub async fn run(index: u8, state: PathBuf) -> Result<()> {
    let host = Host::node(index);
    let cidr = PodCidr { node: index };
    let kubeconfig = state.join("admin.kubeconfig");
    let client = nodes::client(&kubeconfig).await?;
    let lab_binary = std::env::current_exe().context("cannot find the agent's own binary")?;
    let ctx = Arc::new(NodeCtx {
        client: client.clone(),
        host: host.clone(),
        cidr,
        ca: state.join("pki").join("ca.crt"),
        state,
        lab_binary,
    });
    set_pod_cidrs(&client, &host, cidr).await?;
    // Pods of a previous agent: their processes and namespaces are gone now,
    // and the pods come back below (keeping their IPs).
    podnet::destroy_pod_netns(Some(&host.name))?;
    stop_host_network_leftovers(&ctx.state, &host);
    tokio::spawn(heartbeat(client.clone(), host.name.clone()));
    tokio::spawn(sync_kube_ipvs0(client.clone(), host.clone()));
    run_pods(ctx).await
}

/// Stops the containers a previous agent of this node left running in the
/// node's own namespace (hostNetwork pods), found by their pid files.
fn stop_host_network_leftovers(state: &Path, host: &Host) {
    let pid_files = std::fs::read_dir(state.join("pods"))
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|pod| {
            std::fs::read_dir(pod.path())
                .into_iter()
                .flatten()
                .flatten()
        })
        .map(|f| f.path())
        .filter(|p| p.extension().is_some_and(|e| e == "pid"));
    for file in pid_files {
        let Some(pid) = std::fs::read_to_string(&file)
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
        else {
            continue;
        };
        let in_node = crate::command::run("ip", &["netns", "identify", &pid.to_string()])
            .is_ok_and(|ns| ns.trim() == host.netns);
        if in_node {
            tracing::info!(
                "stopping pid {pid} left by a previous agent ({})",
                file.display()
            );
            crate::process::stop(pid);
        }
    }
}

async fn set_pod_cidrs(client: &kube::Client, host: &Host, cidr: PodCidr) -> Result<()> {
    let api: Api<Node> = Api::all(client.clone());
    let node = api
        .get(&host.name)
        .await
        .with_context(|| format!("cannot read Node {}", host.name))?;
    if node.spec.and_then(|s| s.pod_cidr).is_none() {
        let [v4, v6] = cidr.cidrs();
        let patch = json!({ "spec": { "podCIDR": v4, "podCIDRs": [v4, v6] } });
        api.patch(&host.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .with_context(|| format!("cannot set the pod CIDRs of Node {}", host.name))?;
    }
    Ok(())
}

/// Renews the Ready condition every ten seconds.
async fn heartbeat(client: kube::Client, node: String) {
    let api: Api<Node> = Api::all(client);
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    loop {
        tick.tick().await;
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        let patch = json!({ "status": { "conditions": [{
            "type": "Ready",
            "status": "True",
            "reason": "LabNodeReady",
            "message": "lab node agent is running",
            "lastHeartbeatTime": now,
        }] } });
        if let Err(e) = api
            .patch_status(&node, &PatchParams::default(), &Patch::Strategic(&patch))
            .await
        {
            tracing::warn!("heartbeat of Node {node}: {e}");
        }
    }
}

/// Keeps `kube-ipvs0` holding exactly the LoadBalancer IPs of every Service,
/// following Services with a watch.
async fn sync_kube_ipvs0(client: kube::Client, host: Host) {
    let api: Api<Service> = Api::all(client);
    let (store, writer) = reflector::store();
    let mut events = reflector(writer, watcher(api, watcher::Config::default()))
        .default_backoff()
        .boxed();
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    let mut listed = false;
    let mut last: Option<BTreeSet<std::net::IpAddr>> = None;
    loop {
        let forced = tokio::select! {
            event = events.next() => match event {
                Some(Ok(watcher::Event::InitDone)) => { listed = true; false }
                Some(Err(e)) => { tracing::warn!("service watch: {e}"); false }
                Some(Ok(_)) => false,
                None => return,
            },
            // Also repair what something else changed on the device.
            _ = tick.tick() => true,
        };
        if !listed {
            continue;
        }
        let ips: BTreeSet<std::net::IpAddr> = store
            .state()
            .iter()
            .filter_map(|s| s.status.as_ref()?.load_balancer.as_ref()?.ingress.as_ref())
            .flatten()
            .filter_map(|i| i.ip.as_deref()?.parse().ok())
            .collect();
        if !forced && last.as_ref() == Some(&ips) {
            continue;
        }
        match ipvs::sync_addresses(&host, &ips) {
            Ok(()) => last = Some(ips),
            Err(e) => tracing::warn!("kube-ipvs0 on {}: {e:#}", host.name),
        }
    }
}

impl std::fmt::Debug for NodeCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeCtx")
            .field("host", &self.host)
            .field("cidr", &self.cidr)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

struct RunningPod {
    wanted: watch::Sender<Wanted>,
    task: tokio::task::JoinHandle<()>,
    number: Option<u8>,
}

async fn run_pods(ctx: Arc<NodeCtx>) -> Result<()> {
    let api: Api<Pod> = Api::all(ctx.client.clone());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={}", ctx.host.name));
    let (store, writer) = reflector::store();
    let mut events = reflector(writer, watcher(api, config))
        .default_backoff()
        .boxed();
    let mut running: HashMap<String, RunningPod> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    // The store holds every pod of the node once the first list is done.
    let mut listed = false;
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(watcher::Event::InitDone)) => listed = true,
                Some(Err(e)) => tracing::warn!("pod watch: {e}"),
                Some(Ok(_)) => {}
                None => anyhow::bail!("the pod watch ended"),
            },
            _ = tick.tick() => {}
        }
        if listed {
            reconcile(&ctx, &store.state(), &mut running);
        }
    }
}

fn reconcile(ctx: &Arc<NodeCtx>, pods: &[Arc<Pod>], running: &mut HashMap<String, RunningPod>) {
    running.retain(|_, r| !r.task.is_finished());
    let mut seen = BTreeSet::new();
    for pod in pods {
        let Some(uid) = pod.metadata.uid.clone() else {
            continue;
        };
        seen.insert(uid.clone());
        let terminating = pod.metadata.deletion_timestamp.is_some();
        if let Some(r) = running.get(&uid) {
            if terminating {
                r.wanted.send_if_modified(|w| {
                    let changed = *w == Wanted::Run;
                    *w = Wanted::StopAndDelete;
                    changed
                });
            }
            continue;
        }
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if !terminating && matches!(phase, Some("Succeeded" | "Failed")) {
            continue;
        }
        let host_network = pod
            .spec
            .as_ref()
            .and_then(|s| s.host_network)
            .unwrap_or(false);
        let number = if host_network {
            None
        } else {
            match pod_number(ctx.cidr, pod, running) {
                Some(n) => Some(n),
                None => {
                    tracing::warn!("node {} has no free pod IP", ctx.host.name);
                    continue;
                }
            }
        };
        let initial = if terminating {
            Wanted::StopAndDelete
        } else {
            Wanted::Run
        };
        let (wanted, rx) = watch::channel(initial);
        let task = tokio::spawn(pod::run(ctx.clone(), (**pod).clone(), number, rx));
        running.insert(
            uid,
            RunningPod {
                wanted,
                task,
                number,
            },
        );
    }
    for (uid, r) in running.iter() {
        if !seen.contains(uid) {
            r.wanted.send_if_modified(|w| {
                let changed = *w == Wanted::Run;
                if changed {
                    *w = Wanted::Stop;
                }
                changed
            });
        }
    }
}

/// The pod's number: the one of the IP it already has (an agent restart
/// keeps pod IPs), else the lowest free one.
fn pod_number(cidr: PodCidr, pod: &Pod, running: &HashMap<String, RunningPod>) -> Option<u8> {
    let used: BTreeSet<u8> = running.values().filter_map(|r| r.number).collect();
    let current = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.as_deref())
        .and_then(|ip| ip.parse().ok())
        .and_then(|ip| cidr.pod_number(ip))
        .filter(|n| !used.contains(n));
    current.or_else(|| POD_NUMBERS.into_iter().find(|n| !used.contains(n)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod_with_ip(ip: Option<&str>) -> Pod {
        serde_json::from_value(json!({ "status": { "podIP": ip } })).expect("a valid pod")
    }

    fn running(numbers: &[u8]) -> HashMap<String, RunningPod> {
        numbers
            .iter()
            .map(|n| {
                let (wanted, _) = watch::channel(Wanted::Run);
                let task = tokio::spawn(async {});
                (
                    n.to_string(),
                    RunningPod {
                        wanted,
                        task,
                        number: Some(*n),
                    },
                )
            })
            .collect()
    }

    #[tokio::test]
    async fn pods_keep_their_ip_or_get_the_lowest_free_number() {
        let cidr = PodCidr { node: 2 };
        let taken = running(&[2, 3]);
        assert_eq!(pod_number(cidr, &pod_with_ip(None), &taken), Some(4));
        assert_eq!(
            pod_number(cidr, &pod_with_ip(Some("198.18.66.9")), &taken),
            Some(9)
        );
        // An address of another node, or a taken one, is not kept.
        assert_eq!(
            pod_number(cidr, &pod_with_ip(Some("198.18.65.9")), &taken),
            Some(4)
        );
        assert_eq!(
            pod_number(cidr, &pod_with_ip(Some("198.18.66.3")), &taken),
            Some(4)
        );
        let full = running(&POD_NUMBERS.collect::<Vec<_>>());
        assert_eq!(pod_number(cidr, &pod_with_ip(None), &full), None);
    }
}
