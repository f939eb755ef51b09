//! End-to-end tests that prove the lab is real: a real API server with real
//! allocators and RBAC, and a LAN the client can reach every node on.
//!
//! They skip without root or built tools unless `FERROLB_E2E` is set (as
//! `cargo lab test` does).

use std::net::IpAddr;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use ferrolb_crds::IPAddressPool;
use ferrolb_e2e::harness::{self, CutLink, NodeProcess, TestNamespace};
use ferrolb_e2e::lan::{self, Host};
use ferrolb_e2e::{objects, tools};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Pod, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::Client;
use kube::api::{Api, ListParams, PostParams};
use kube::config::AuthInfo;
use serde_json::json;

#[tokio::test]
async fn apiserver_reports_its_real_version() -> Result<()> {
    let Some(lab) = harness::lab().await? else {
        return Ok(());
    };
    let info = lab.client().await?.apiserver_version().await?;
    assert_eq!(info.git_version, tools::kubernetes_version()?);
    Ok(())
}

fn object<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T> {
    serde_json::from_value(value).context("cannot build an object")
}

#[tokio::test]
async fn service_account_token_is_denied_without_rbac_and_allowed_with_a_role() -> Result<()> {
    let Some(lab) = harness::lab().await? else {
        return Ok(());
    };
    let admin = lab.client().await?;
    let ns = TestNamespace::create(lab, &admin, "rbac").await?;
    let pp = PostParams::default();

    let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), ns.name());
    sas.create(&pp, &object(json!({ "metadata": { "name": "reader" } }))?)
        .await?;
    let request: TokenRequest =
        object(json!({ "spec": { "audiences": [], "expirationSeconds": 600 } }))?;
    let token = sas
        .create_token_request("reader", &pp, &request)
        .await
        .context("TokenRequest failed")?
        .status
        .context("TokenRequest returned no status")?
        .token;

    let mut config = ferrolb_e2e::nodes::config(&lab.kubeconfig()).await?;
    config.auth_info = object::<AuthInfo>(json!({ "token": token }))?;
    let as_reader = Client::try_from(config)?;
    let pods: Api<Pod> = Api::namespaced(as_reader, ns.name());

    match pods.list(&ListParams::default()).await {
        Err(kube::Error::Api(status)) => ensure!(
            status.code == 403,
            "expected 403 Forbidden without RBAC, got {status:?}"
        ),
        other => anyhow::bail!("expected 403 Forbidden without RBAC, got {other:?}"),
    }

    Api::<Role>::namespaced(admin.clone(), ns.name())
        .create(
            &pp,
            &object(json!({
                "metadata": { "name": "pod-reader" },
                "rules": [{ "apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"] }],
            }))?,
        )
        .await?;
    Api::<RoleBinding>::namespaced(admin.clone(), ns.name())
        .create(
            &pp,
            &object(json!({
                "metadata": { "name": "reader-reads-pods" },
                "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader" },
                "subjects": [{ "kind": "ServiceAccount", "name": "reader", "namespace": ns.name() }],
            }))?,
        )
        .await?;
    harness::wait_for(
        "the reader ServiceAccount to be allowed to list pods",
        Duration::from_secs(20),
        || async { Ok(pods.list(&ListParams::default()).await.ok()) },
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn service_gets_a_cluster_ip_and_node_port_from_the_apiserver() -> Result<()> {
    let Some(lab) = harness::lab().await? else {
        return Ok(());
    };
    let admin = lab.client().await?;
    let ns = TestNamespace::create(lab, &admin, "svc").await?;
    let svc: Service = Api::namespaced(admin, ns.name())
        .create(
            &PostParams::default(),
            &object(json!({
                "metadata": { "name": "web" },
                "spec": {
                    "type": "NodePort",
                    "ipFamilyPolicy": "RequireDualStack",
                    "selector": { "app": "web" },
                    "ports": [{ "port": 80, "targetPort": 8080 }],
                },
            }))?,
        )
        .await?;
    let spec = svc.spec.context("Service has no spec")?;
    let ips: Vec<IpAddr> = spec
        .cluster_ips
        .unwrap_or_default()
        .iter()
        .map(|ip| ip.parse())
        .collect::<Result<_, _>>()?;
    assert_eq!(
        ips.len(),
        2,
        "a dual-stack Service gets two ClusterIPs: {ips:?}"
    );
    assert!(
        ips.iter().any(|ip| ip.to_string().starts_with("198.19.")),
        "IPv4 ClusterIP from 198.19.0.0/16: {ips:?}"
    );
    assert!(
        ips.iter()
            .any(|ip| ip.to_string().starts_with("2001:db8:19::")),
        "IPv6 ClusterIP from 2001:db8:19::/112: {ips:?}"
    );
    let node_port = spec
        .ports
        .unwrap_or_default()
        .first()
        .and_then(|p| p.node_port)
        .context("no NodePort allocated")?;
    assert!((30000..=32767).contains(&node_port), "NodePort {node_port}");
    Ok(())
}

#[tokio::test]
async fn client_reaches_every_node_over_ipv4_and_ipv6() -> Result<()> {
    let Some(lab) = harness::lab().await? else {
        return Ok(());
    };
    let client = Host::client();
    for node in lab.nodes() {
        for ip in [IpAddr::V4(node.ipv4), IpAddr::V6(node.ipv6)] {
            ensure!(
                harness::ping(&client, ip)?,
                "client cannot ping {} at {ip}",
                node.name
            );
        }
    }
    Ok(())
}

#[tokio::test]
async fn arping_names_the_node_that_answers_and_a_cut_link_silences_it() -> Result<()> {
    let Some(lab) = harness::lab().await? else {
        return Ok(());
    };
    let client = Host::client();
    let node = lab.nodes().pop().context("the lab has no nodes")?;
    let mac = lan::mac_of(&node)?;
    assert_eq!(harness::arping(&client, node.ipv4, 1)?, vec![mac]);
    {
        let _cut = CutLink::cut(&node)?;
        assert!(harness::arping(&client, node.ipv4, 1)?.is_empty());
    }
    ensure!(
        harness::ping(&client, IpAddr::V4(node.ipv4))?,
        "link restored"
    );
    Ok(())
}

#[tokio::test]
async fn a_process_runs_in_a_node_namespace_until_killed() -> Result<()> {
    let Some(lab) = harness::lab().await? else {
        return Ok(());
    };
    let node = Host::node(1);
    let mut process = NodeProcess::start(lab, &node, "sleep", &["300"])?;
    let pid = process.pid();
    let in_node = |pid: i32| -> Result<bool> {
        let out = ferrolb_e2e::command::run("ip", &["netns", "pids", &node.netns])?;
        Ok(out.lines().any(|l| l.trim() == pid.to_string()))
    };
    // `ip netns exec` enters the namespace, then execs the program.
    harness::wait_for(
        &format!("pid {pid} to run in {}", node.netns),
        Duration::from_secs(10),
        || {
            let found = in_node(pid);
            async move { found.map(|f| f.then_some(())) }
        },
    )
    .await?;
    assert!(process.running());
    process.kill();
    ensure!(!in_node(pid)?, "pid {pid} survived the kill");
    Ok(())
}

#[tokio::test]
async fn ferrolb_crds_install_and_a_pool_is_stored() -> Result<()> {
    let Some(lab) = harness::lab().await? else {
        return Ok(());
    };
    let admin = lab.client().await?;
    objects::install_crds(&admin).await?;
    let name = format!("e2e-pool-{}", std::process::id());
    let pool = objects::create_pool(&admin, &name, &["198.18.0.252-198.18.0.254"]).await?;
    let api: Api<IPAddressPool> = Api::all(admin.clone());
    let stored = api.get(&name).await;
    api.delete(&name, &Default::default()).await?;
    assert_eq!(stored?.spec, pool.spec);
    let ns = TestNamespace::create(lab, &admin, "lb").await?;
    let svc = objects::create_service(&admin, ns.name(), "web", "LoadBalancer").await?;
    let spec = svc.spec.context("Service has no spec")?;
    assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
    Ok(())
}

/// The CRDs' CEL rules as the real API server applies them: each bad pool is refused at
/// admission with the message that says what is wrong (the same table runs locally in
/// the crds crate).
#[tokio::test]
async fn the_api_server_rejects_bad_pools_with_their_message() -> Result<()> {
    let Some(lab) = harness::lab().await? else {
        return Ok(());
    };
    let admin = lab.client().await?;
    objects::install_crds(&admin).await?;
    let api: Api<IPAddressPool> = Api::all(admin.clone());
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let table: &[(serde_json::Value, &str)] = &[
        (json!(["198.18.0.0/33"]), "is not a CIDR"),
        (json!(["not-an-ip"]), "is not a CIDR"),
        (
            json!(["198.18.0.20-198.18.0.10"]),
            "starts after it ends; write 198.18.0.10-198.18.0.20",
        ),
        (json!(["198.18.0.1-2001:db8::1"]), "mixes IPv4 and IPv6"),
        (json!(["fe80::1%eth0"]), "has an IPv6 zone"),
        (json!(["198.18.0.1 - 198.18.0.9"]), "contains whitespace"),
        (json!(["198.18.0.5/24"]), "has host bits set"),
        (json!(["::/0"]), "covers the entire IPv6 address space"),
        (json!([""]), "an address entry is empty"),
        (json!([]), "lists no addresses"),
    ];
    for (addresses, expected) in table {
        let pool: IPAddressPool = object(json!({
            "apiVersion": "ferrolb.io/v1beta1",
            "kind": "IPAddressPool",
            "metadata": { "name": "e2e-invalid" },
            "spec": { "addresses": addresses },
        }))?;
        let err = api
            .create(&dry_run, &pool)
            .await
            .err()
            .with_context(|| format!("{addresses} was accepted"))?;
        ensure!(
            err.to_string().contains(expected),
            "{addresses}: expected {expected:?} in {err}"
        );
    }
    let good: IPAddressPool = object(json!({
        "apiVersion": "ferrolb.io/v1beta1",
        "kind": "IPAddressPool",
        "metadata": { "name": "e2e-valid" },
        "spec": {
            "addresses": ["198.18.0.0/28", "198.18.0.30-198.18.0.40", "2001:db8::/64", "2001:db8:1::7"],
            "serviceAllocation": { "priority": 1, "namespaces": ["default"],
                "serviceSelectors": [{ "matchExpressions": [{ "key": "tier", "operator": "In", "values": ["web"] }] }] }
        },
    }))?;
    api.create(&dry_run, &good)
        .await
        .context("a valid pool was refused")?;
    Ok(())
}
