//! Creating the objects tests need: FerroLB's CRDs and pools, and Services.

use std::time::Duration;

use anyhow::{Context, Result};
use ferrolb_crds::IPAddressPool;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::harness::wait_for;

const FIELD_MANAGER: &str = "ferrolb-lab";

/// Installs (or updates) FerroLB's CRDs and waits until each is Established.
pub async fn install_crds(client: &Client) -> Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for crd in ferrolb_crds::all_crds() {
        let name = crd.metadata.name.clone().context("a CRD without a name")?;
        api.patch(&name, &params, &Patch::Apply(&crd))
            .await
            .with_context(|| format!("cannot apply CRD {name}"))?;
        wait_for(
            &format!("CRD {name} to be Established"),
            Duration::from_secs(30),
            || {
                let api = api.clone();
                let name = name.clone();
                async move {
                    let crd = api.get(&name).await?;
                    let established = crd
                        .status
                        .and_then(|s| s.conditions)
                        .unwrap_or_default()
                        .iter()
                        .any(|c| c.type_ == "Established" && c.status == "True");
                    Ok(established.then_some(()))
                }
            },
        )
        .await?;
    }
    Ok(())
}

/// Creates an IPAddressPool named `name` with `addresses` (CIDRs, ranges or
/// single IPs), auto-assigned.
pub async fn create_pool(client: &Client, name: &str, addresses: &[&str]) -> Result<IPAddressPool> {
    let pool: IPAddressPool = serde_json::from_value(json!({
        "apiVersion": "ferrolb.io/v1beta1",
        "kind": "IPAddressPool",
        "metadata": { "name": name },
        "spec": { "addresses": addresses, "autoAssign": true },
    }))
    .context("cannot build an IPAddressPool")?;
    Api::<IPAddressPool>::all(client.clone())
        .create(&PostParams::default(), &pool)
        .await
        .with_context(|| format!("cannot create IPAddressPool {name}"))
}

/// Creates a Service `name` in `namespace` of `type_` (`ClusterIP`,
/// `NodePort`, `LoadBalancer`) selecting `app: <name>`, port 80 to 8080,
/// dual stack when the cluster allows it.
pub async fn create_service(
    client: &Client,
    namespace: &str,
    name: &str,
    type_: &str,
) -> Result<Service> {
    let svc: Service = serde_json::from_value(json!({
        "metadata": { "name": name },
        "spec": {
            "type": type_,
            "ipFamilyPolicy": "PreferDualStack",
            "selector": { "app": name },
            "ports": [{ "name": "http", "port": 80, "targetPort": 8080 }],
        },
    }))
    .context("cannot build a Service")?;
    Api::<Service>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &svc)
        .await
        .with_context(|| format!("cannot create Service {namespace}/{name}"))
}

/// Waits until Service `namespace/name` has load-balancer ingress IPs and
/// returns them.
pub async fn wait_for_load_balancer_ips(
    client: &Client,
    namespace: &str,
    name: &str,
    timeout: Duration,
) -> Result<Vec<std::net::IpAddr>> {
    let api: Api<Service> = Api::namespaced(client.clone(), namespace);
    wait_for(
        &format!("Service {namespace}/{name} to get a load-balancer IP"),
        timeout,
        || {
            let api = api.clone();
            async move {
                let svc = api.get(name).await?;
                let ips = svc
                    .status
                    .and_then(|s| s.load_balancer)
                    .and_then(|lb| lb.ingress)
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|i| i.ip.as_deref().and_then(|ip| ip.parse().ok()))
                    .collect::<Vec<_>>();
                Ok((!ips.is_empty()).then_some(ips))
            }
        },
    )
    .await
}
