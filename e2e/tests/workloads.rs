//! End-to-end tests of the lab's workloads and Service data path: the node
//! agents run Pods (an HTTP stand-in, or FerroLB's real binaries for
//! FerroLB's images), kube-proxy carries NodePort traffic to them, and the
//! emulated IPVS mode reproduces the strictARP failure.
//!
//! They skip without root or built tools unless `FERROLB_E2E` is set (as
//! `cargo lab test` does).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use ferrolb_e2e::harness::{self, StrictArp, TestNamespace, wait_for};
use ferrolb_e2e::lan::{self, Host};
use ferrolb_e2e::{ipvs, objects, process};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::config::AuthInfo;
use kube::{Client, ResourceExt};
use serde_json::json;

fn object<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T> {
    serde_json::from_value(value).context("cannot build an object")
}

fn ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

#[tokio::test]
async fn deployment_runs_ready_pods_with_endpoint_slices_and_a_node_port_spreads_requests()
-> Result<()> {
    let Some(lab) = harness::lab().await? else {
        return Ok(());
    };
    let client = lab.client().await?;
    let ns = TestNamespace::create(lab, &client, "web").await?;
    // What `kubectl create deployment web --image=nginx --replicas=3` makes,
    // with the port the Service below targets.
    let deployment: Deployment = object(json!({
        "metadata": { "name": "web", "labels": { "app": "web" } },
        "spec": {
            "replicas": 3,
            "selector": { "matchLabels": { "app": "web" } },
            "template": {
                "metadata": { "labels": { "app": "web" } },
                "spec": { "containers": [{
                    "name": "nginx", "image": "nginx",
                    "ports": [{ "containerPort": 8080 }],
                }] },
            },
        },
    }))?;
    Api::<Deployment>::namespaced(client.clone(), ns.name())
        .create(&PostParams::default(), &deployment)
        .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns.name());
    let running = wait_for(
        "three Ready pods of the Deployment",
        Duration::from_secs(60),
        || {
            let pods = pods.clone();
            async move {
                let list = pods.list(&ListParams::default().labels("app=web")).await?;
                let ready: Vec<Pod> = list.items.into_iter().filter(ready).collect();
                Ok((ready.len() == 3).then_some(ready))
            }
        },
    )
    .await?;
    let names: BTreeSet<String> = running.iter().map(ResourceExt::name_any).collect();
    let nodes: BTreeSet<String> = running
        .iter()
        .filter_map(|p| p.spec.as_ref()?.node_name.clone())
        .collect();
    ensure!(nodes.len() >= 2, "the scheduler put every pod on {nodes:?}");
    for pod in &running {
        let ips = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ips.clone())
            .unwrap_or_default();
        ensure!(
            ips.len() == 2,
            "pod {} should have an IPv4 and an IPv6 address: {ips:?}",
            pod.name_any()
        );
    }

    let svc = objects::create_service(&client, ns.name(), "web", "NodePort").await?;
    let node_port = svc
        .spec
        .and_then(|s| s.ports)
        .and_then(|p| p.first().and_then(|p| p.node_port))
        .context("the NodePort Service has no node port")?;
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), ns.name());
    wait_for(
        "EndpointSlices listing the three ready pods",
        Duration::from_secs(30),
        || {
            let slices = slices.clone();
            async move {
                let list = slices
                    .list(&ListParams::default().labels("kubernetes.io/service-name=web"))
                    .await?;
                let ready = list
                    .items
                    .iter()
                    .filter(|s| s.address_type == "IPv4")
                    .flat_map(|s| s.endpoints.iter())
                    .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
                    .count();
                Ok((ready == 3).then_some(()))
            }
        },
    )
    .await?;

    let client_host = Host::client();
    let url = format!("http://{}:{node_port}/", Host::node(1).ipv4);
    // kube-proxy may take a moment to program the new Service.
    let first = wait_for("the NodePort to answer", Duration::from_secs(30), || {
        let url = url.clone();
        let client_host = client_host.clone();
        async move { harness::curl(&client_host, &url) }
    })
    .await?;
    let (_, seen) =
        harness::curl_with_client(&client_host, &url)?.context("the NodePort stopped answering")?;
    ensure!(
        seen != client_host.ipv4.to_string(),
        "with externalTrafficPolicy Cluster the client's address should be masqueraded"
    );
    let mut answered = BTreeSet::from([first]);
    for _ in 0..30 {
        if let Some(body) = harness::curl(&client_host, &url)? {
            answered.insert(body);
        }
    }
    ensure!(
        answered.is_subset(&names),
        "answers {answered:?} are not all from the Deployment's pods {names:?}"
    );
    ensure!(
        answered.len() >= 2,
        "every request reached the same pod: {answered:?}"
    );
    let v6 = format!("http://[{}]:{node_port}/", Host::node(2).ipv6);
    let body = harness::curl(&client_host, &v6)?.context("the IPv6 NodePort did not answer")?;
    ensure!(
        names.contains(&body),
        "IPv6 answer {body} is not a pod of the Deployment"
    );

    // Deleting a pod: the agent stops it and finalises the deletion (no
    // pod stays Terminating), and the ReplicaSet's replacement runs.
    let victim = running[0].name_any();
    pods.delete(&victim, &Default::default()).await?;
    wait_for(
        &format!("pod {victim} to be gone and a replacement Ready"),
        Duration::from_secs(60),
        || {
            let pods = pods.clone();
            let victim = victim.clone();
            async move {
                let list = pods.list(&ListParams::default().labels("app=web")).await?;
                let gone = list.items.iter().all(|p| p.name_any() != victim);
                let ready = list.items.iter().filter(|p| ready(p)).count();
                Ok((gone && ready == 3).then_some(()))
            }
        },
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn kube_ipvs0_vip_answers_arp_from_every_node_without_strict_arp_and_none_with_it()
-> Result<()> {
    let Some(lab) = harness::lab().await? else {
        return Ok(());
    };
    let client = lab.client().await?;
    let ns = TestNamespace::create(lab, &client, "ipvs").await?;
    let vip = Ipv4Addr::new(198, 18, 0, 177);
    // A class nobody implements: no FerroLB controller or speaker takes it;
    // the IP is written into its status as a load balancer would.
    let svc: Service = object(json!({
        "metadata": { "name": "vip" },
        "spec": {
            "type": "LoadBalancer",
            "loadBalancerClass": "lab.example/unimplemented",
            "selector": { "app": "none" },
            "ports": [{ "port": 80 }],
        },
    }))?;
    let services: Api<Service> = Api::namespaced(client.clone(), ns.name());
    services.create(&PostParams::default(), &svc).await?;
    let status = json!({ "status": { "loadBalancer": { "ingress": [{ "ip": vip.to_string(), "ipMode": "VIP" }] } } });
    services
        .patch_status("vip", &PatchParams::default(), &Patch::Merge(&status))
        .await?;
    let nodes = lab.nodes();
    wait_for(
        "every node's kube-ipvs0 to hold the VIP",
        Duration::from_secs(20),
        || {
            let nodes = nodes.clone();
            async move {
                let all = nodes.iter().all(|n| {
                    harness::exec_in(n, "ip", &["-br", "addr", "show", "dev", ipvs::DEVICE])
                        .is_ok_and(|o| {
                            String::from_utf8_lossy(&o.stdout).contains(&format!("{vip}/32"))
                        })
                });
                Ok(all.then_some(()))
            }
        },
    )
    .await?;
    let macs: BTreeSet<String> = nodes.iter().map(lan::mac_of).collect::<Result<_>>()?;
    let client_host = Host::client();

    let off = StrictArp::set(lab, false).await?;
    // Every node answers each request; which reply arping reports first
    // varies, so collect over a few rounds.
    let mut answered: BTreeSet<String> = BTreeSet::new();
    for _ in 0..4 {
        answered.extend(harness::arping(&client_host, vip, 3)?);
        if answered == macs {
            break;
        }
    }
    ensure!(
        answered == macs,
        "without strictARP every node should answer for {vip}: got {answered:?}, nodes {macs:?}"
    );
    drop(off);

    let _on = StrictArp::set(lab, true).await?;
    let answered = harness::arping(&client_host, vip, 3)?;
    ensure!(
        answered.is_empty(),
        "with strictARP no node should answer for {vip}: got {answered:?}"
    );

    services.delete("vip", &Default::default()).await?;
    wait_for(
        "the VIP to leave kube-ipvs0",
        Duration::from_secs(20),
        || {
            let nodes = nodes.clone();
            async move {
                let none = nodes.iter().all(|n| {
                    harness::exec_in(n, "ip", &["-br", "addr", "show", "dev", ipvs::DEVICE])
                        .is_ok_and(|o| {
                            !String::from_utf8_lossy(&o.stdout).contains(&format!("{vip}/32"))
                        })
                });
                Ok(none.then_some(()))
            }
        },
    )
    .await
}

#[tokio::test]
async fn ferrolb_image_runs_the_real_binary_with_its_service_account_and_restarts() -> Result<()> {
    let Some(lab) = harness::lab().await? else {
        return Ok(());
    };
    let client = lab.client().await?;
    let ns = TestNamespace::create(lab, &client, "own").await?;
    let pp = PostParams::default();
    Api::<ServiceAccount>::namespaced(client.clone(), ns.name())
        .create(&pp, &object(json!({ "metadata": { "name": "ctl" } }))?)
        .await?;
    Api::<Role>::namespaced(client.clone(), ns.name())
        .create(
            &pp,
            &object(json!({
                "metadata": { "name": "leases" },
                "rules": [{ "apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "list"] }],
            }))?,
        )
        .await?;
    Api::<RoleBinding>::namespaced(client.clone(), ns.name())
        .create(
            &pp,
            &object(json!({
                "metadata": { "name": "leases" },
                "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "leases" },
                "subjects": [{ "kind": "ServiceAccount", "name": "ctl", "namespace": ns.name() }],
            }))?,
        )
        .await?;
    // A class no Service uses: this controller allocates nothing.
    let pod: Pod = object(json!({
        "metadata": { "name": "ctl" },
        "spec": {
            "serviceAccountName": "ctl",
            "containers": [{
                "name": "controller",
                "image": "registry.example/ferrolb/ferrolb-controller:dev",
                "args": ["--load-balancer-class=lab.example/unused", "--metrics-bind-address=0.0.0.0:7472"],
                "env": [
                    { "name": "FERROLB_NAMESPACE", "valueFrom": { "fieldRef": { "fieldPath": "metadata.namespace" } } },
                    { "name": "FERROLB_POD_NAME", "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } } },
                ],
            }],
        },
    }))?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns.name());
    pods.create(&pp, &pod).await?;
    let pid = wait_for(
        "the controller process",
        Duration::from_secs(60),
        || async { Ok(harness::container_pid(lab, ns.name(), "ctl", "controller")) },
    )
    .await?;
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))?;
    ensure!(
        exe.ends_with("debug/ferrolb-controller"),
        "the pod runs {} instead of the locally built controller",
        exe.display()
    );
    let environ = std::fs::read(format!("/proc/{pid}/environ"))?;
    let environ = String::from_utf8_lossy(&environ);
    ensure!(
        environ.contains(&format!("FERROLB_NAMESPACE={}", ns.name())),
        "downward API not resolved"
    );
    ensure!(
        environ.contains("KUBERNETES_SERVICE_HOST=198.19.0.1"),
        "no in-cluster API address"
    );

    // The token the process sees at the in-cluster path is its
    // ServiceAccount's: allowed what the Role allows, denied the rest.
    let sa_dir = format!("/proc/{pid}/root/var/run/secrets/kubernetes.io/serviceaccount");
    let token = std::fs::read_to_string(format!("{sa_dir}/token"))?;
    ensure!(std::fs::read_to_string(format!("{sa_dir}/namespace"))? == ns.name());
    let mut config = ferrolb_e2e::nodes::config(&lab.kubeconfig()).await?;
    config.auth_info = object::<AuthInfo>(json!({ "token": token.trim() }))?;
    let as_pod = Client::try_from(config)?;
    Api::<Lease>::namespaced(as_pod.clone(), ns.name())
        .list(&ListParams::default())
        .await
        .context("the pod's ServiceAccount may list Leases")?;
    match Api::<Pod>::namespaced(as_pod, ns.name())
        .list(&ListParams::default())
        .await
    {
        Err(kube::Error::Api(s)) if s.code == 403 => {}
        other => bail!("listing Pods should be forbidden to the pod's ServiceAccount: {other:?}"),
    }
    // The binary itself talks to the API server with that identity.
    let user = format!("system:serviceaccount:{}:ctl", ns.name());
    wait_for(
        "the controller's log to show its identity",
        Duration::from_secs(30),
        || {
            let log = lab
                .state
                .join("pods")
                .join(format!("{}_ctl", ns.name()))
                .join("controller.log");
            let user = user.clone();
            async move {
                Ok(std::fs::read_to_string(&log)
                    .ok()
                    .filter(|l| l.contains(&user))
                    .map(drop))
            }
        },
    )
    .await?;

    process::kill_now(pid);
    let ns_name = ns.name().to_owned();
    let restarted = wait_for("the controller to restart", Duration::from_secs(30), || {
        let pods = pods.clone();
        let ns_name = ns_name.clone();
        async move {
            let pod = pods.get("ctl").await?;
            let count = pod
                .status
                .and_then(|s| s.container_statuses)
                .and_then(|cs| cs.first().map(|c| c.restart_count))
                .unwrap_or(0);
            let new_pid =
                harness::container_pid(lab, &ns_name, "ctl", "controller").filter(|p| *p != pid);
            Ok((count >= 1).then_some(new_pid).flatten())
        }
    })
    .await?;
    ensure!(restarted != pid);
    Ok(())
}

#[tokio::test]
async fn external_traffic_policy_local_serves_only_from_nodes_with_an_endpoint() -> Result<()> {
    let Some(lab) = harness::lab().await? else {
        return Ok(());
    };
    let client = lab.client().await?;
    let ns = TestNamespace::create(lab, &client, "local").await?;
    let pod: Pod = object(json!({
        "metadata": { "name": "only", "labels": { "app": "local" } },
        "spec": {
            "nodeName": "node2",
            "containers": [{ "name": "web", "image": "nginx", "ports": [{ "containerPort": 8080 }] }],
        },
    }))?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns.name());
    pods.create(&PostParams::default(), &pod).await?;
    wait_for("the pod to be Ready", Duration::from_secs(60), || {
        let pods = pods.clone();
        async move { Ok(ready(&pods.get("only").await?).then_some(())) }
    })
    .await?;
    let svc = objects::create_service(&client, ns.name(), "local", "NodePort").await?;
    let port = svc
        .spec
        .and_then(|s| s.ports)
        .and_then(|p| p.first().and_then(|p| p.node_port))
        .context("no node port")?;
    let services: Api<Service> = Api::namespaced(client.clone(), ns.name());
    let local = json!({ "spec": { "externalTrafficPolicy": "Local" } });
    services
        .patch("local", &PatchParams::default(), &Patch::Merge(&local))
        .await?;
    let client_host = Host::client();
    let with_endpoint = format!("http://{}:{port}/", Host::node(2).ipv4);
    let (_, seen) = wait_for(
        "node2 (with the endpoint) to answer",
        Duration::from_secs(30),
        || {
            let url = with_endpoint.clone();
            let client_host = client_host.clone();
            async move { harness::curl_with_client(&client_host, &url) }
        },
    )
    .await?;
    ensure!(
        seen == client_host.ipv4.to_string(),
        "with externalTrafficPolicy Local the pod should see the client's address, saw {seen}"
    );
    // Give kube-proxy time to drop the Cluster-policy rules on the others.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for node in [Host::node(1), Host::node(3)] {
        let url = format!("http://{}:{port}/", node.ipv4);
        let answer = harness::curl(&client_host, &url)?;
        ensure!(
            answer.is_none(),
            "{} has no endpoint but answered {answer:?}",
            node.name
        );
    }
    Ok(())
}

#[tokio::test]
async fn host_network_ferrolb_pod_runs_in_its_node_namespace_with_node_fields() -> Result<()> {
    let Some(lab) = harness::lab().await? else {
        return Ok(());
    };
    let client = lab.client().await?;
    let ns = TestNamespace::create(lab, &client, "hostnet").await?;
    let node = Host::node(2);
    // The controller keeps running without permissions: enough to see where
    // and how it runs. A port no chart or test uses on the node.
    let pod: Pod = object(json!({
        "metadata": { "name": "hostnet" },
        "spec": {
            "nodeName": node.name,
            "hostNetwork": true,
            "containers": [{
                "name": "c",
                "image": "ferrolb-controller",
                "args": ["--load-balancer-class=lab.example/unused", "--metrics-bind-address=0.0.0.0:17472"],
                "env": [
                    { "name": "NODE", "valueFrom": { "fieldRef": { "fieldPath": "spec.nodeName" } } },
                    { "name": "HOST_IP", "valueFrom": { "fieldRef": { "fieldPath": "status.hostIP" } } },
                    { "name": "POD_IP", "valueFrom": { "fieldRef": { "fieldPath": "status.podIP" } } },
                ],
            }],
        },
    }))?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns.name());
    pods.create(&PostParams::default(), &pod).await?;
    let pid = wait_for(
        "the hostNetwork process",
        Duration::from_secs(60),
        || async { Ok(harness::container_pid(lab, ns.name(), "hostnet", "c")) },
    )
    .await?;
    let netns = ferrolb_e2e::command::run("ip", &["netns", "identify", &pid.to_string()])?;
    ensure!(
        netns.trim() == node.netns,
        "a hostNetwork pod should run in {}, runs in {netns:?}",
        node.netns
    );
    let environ =
        String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/environ"))?).into_owned();
    for expected in [
        format!("NODE={}", node.name),
        format!("HOST_IP={}", node.ipv4),
        format!("POD_IP={}", node.ipv4),
    ] {
        ensure!(
            environ.split('\0').any(|v| v == expected),
            "{expected} missing from the environment"
        );
    }
    let status = wait_for(
        "the pod's status to show the node's IP",
        Duration::from_secs(20),
        || {
            let pods = pods.clone();
            async move {
                Ok(pods
                    .get("hostnet")
                    .await?
                    .status
                    .filter(|s| s.pod_ip.is_some()))
            }
        },
    )
    .await?;
    ensure!(
        status.pod_ip == Some(node.ipv4.to_string()),
        "podIP {:?}",
        status.pod_ip
    );
    Ok(())
}
