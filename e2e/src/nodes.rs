//! Node objects for the lab's node namespaces: what a kubelet would register,
//! with InternalIP addresses on the LAN and a Ready condition.

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::json;

use crate::lan::Host;

const FIELD_MANAGER: &str = "ferrolb-lab";

/// A client for the lab's API server from a kubeconfig file.
pub async fn client(kubeconfig: &std::path::Path) -> Result<Client> {
    Client::try_from(config(kubeconfig).await?).context("cannot build a Kubernetes client")
}

/// The client configuration of a kubeconfig file.
pub async fn config(kubeconfig: &std::path::Path) -> Result<Config> {
    let kc = Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("cannot read {}", kubeconfig.display()))?;
    Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .with_context(|| format!("cannot use {}", kubeconfig.display()))
}

/// Creates (or updates) the Node object of each node host and marks it Ready.
pub async fn register(client: &Client, nodes: &[&Host]) -> Result<()> {
    let api: Api<Node> = Api::all(client.clone());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for host in nodes {
        let node = json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": host.name,
                "labels": {
                    "kubernetes.io/hostname": host.name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": std::env::consts::ARCH,
                    "ferrolb.io/lab-netns": host.netns,
                },
            },
        });
        api.patch(&host.name, &params, &Patch::Apply(&node))
            .await
            .with_context(|| format!("cannot create Node {}", host.name))?;
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        let status = json!({
            "apiVersion": "v1",
            "kind": "Node",
            "status": {
                "addresses": [
                    { "type": "InternalIP", "address": host.ipv4.to_string() },
                    { "type": "InternalIP", "address": host.ipv6.to_string() },
                    { "type": "Hostname", "address": host.name },
                ],
                // Room for pods, so the scheduler binds them to lab nodes.
                "capacity": { "cpu": "8", "memory": "16Gi", "pods": "110" },
                "allocatable": { "cpu": "8", "memory": "16Gi", "pods": "110" },
                "conditions": [{
                    "type": "Ready",
                    "status": "True",
                    "reason": "LabNodeReady",
                    "message": "lab node namespace is up",
                    "lastHeartbeatTime": now,
                    "lastTransitionTime": now,
                }],
                "nodeInfo": {
                    "architecture": std::env::consts::ARCH,
                    "operatingSystem": "linux",
                    "bootID": "", "containerRuntimeVersion": "", "kernelVersion": "",
                    "kubeProxyVersion": "", "kubeletVersion": "", "machineID": "",
                    "osImage": "ferrolb lab", "systemUUID": "",
                },
            },
        });
        // A merge patch: server-side apply rejects the two InternalIP
        // entries (addresses are keyed by type in the apply schema).
        api.patch_status(&host.name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .with_context(|| format!("cannot set the status of Node {}", host.name))?;
        // Admission taints a new Node not-ready; the node lifecycle
        // controller (off in the lab) would lift it once the node is Ready.
        let untaint = json!({ "spec": { "taints": null } });
        api.patch(&host.name, &PatchParams::default(), &Patch::Merge(&untaint))
            .await
            .with_context(|| format!("cannot lift the not-ready taint of Node {}", host.name))?;
    }
    Ok(())
}
