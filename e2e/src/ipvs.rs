//! The emulation of kube-proxy's IPVS mode, on top of the lab's real
//! kube-proxy (which runs in nftables mode: this kernel has no IPVS).
//!
//! What IPVS mode adds that FerroLB cares about is emulated: every node binds
//! every LoadBalancer IP to a `kube-ipvs0` device (a port-less bridge, as the
//! kernel has no dummy module; the node agent keeps the addresses in sync),
//! and `kube-system/kube-proxy` holds a `KubeProxyConfiguration` with
//! `mode: ipvs` and `ipvs.strictARP`. With strictARP on, the node
//! namespaces get `arp_ignore=1` and `arp_announce=2` (what kube-proxy sets
//! then); off, both stay 0 and every node answers ARP for every VIP.

use std::collections::BTreeSet;
use std::net::IpAddr;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use crate::command::{run, succeeds};
use crate::lan::Host;

/// The device holding every LoadBalancer IP in every node namespace.
pub const DEVICE: &str = "kube-ipvs0";

/// The `config.conf` of the emulated kube-proxy ConfigMap.
pub fn kube_proxy_config(strict_arp: bool) -> String {
    format!(
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\n\
         kind: KubeProxyConfiguration\n\
         mode: ipvs\n\
         ipvs:\n  strictARP: {strict_arp}\n\
         # The lab's kube-proxy really runs in nftables mode; IPVS is emulated.\n"
    )
}

/// Creates or updates `kube-system/kube-proxy`.
pub async fn write_config_map(client: &kube::Client, strict_arp: bool) -> Result<()> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-system");
    let cm = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "kube-proxy",
            "namespace": "kube-system",
            "labels": { "app": "kube-proxy", "ferrolb.io/lab": "ipvs-emulation" },
        },
        "data": { "config.conf": kube_proxy_config(strict_arp) },
    });
    // Right after start the API server may still be creating kube-system.
    let params = PatchParams::apply("ferrolb-lab").force();
    let mut attempts = 0;
    loop {
        match api.patch("kube-proxy", &params, &Patch::Apply(&cm)).await {
            Ok(_) => return Ok(()),
            Err(e) if attempts < 60 => {
                attempts += 1;
                tracing::debug!("writing kube-system/kube-proxy: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
            Err(e) => return Err(e).context("cannot write the ConfigMap kube-system/kube-proxy"),
        }
    }
}

/// The sysctl values strictARP on (or off) means.
pub fn arp_sysctls(strict_arp: bool) -> [(&'static str, &'static str); 2] {
    if strict_arp {
        [
            ("net.ipv4.conf.all.arp_ignore", "1"),
            ("net.ipv4.conf.all.arp_announce", "2"),
        ]
    } else {
        [
            ("net.ipv4.conf.all.arp_ignore", "0"),
            ("net.ipv4.conf.all.arp_announce", "0"),
        ]
    }
}

/// Sets the ARP sysctls of every node namespace.
pub fn set_strict_arp(nodes: &[Host], strict_arp: bool) -> Result<()> {
    for node in nodes {
        for (key, value) in arp_sysctls(strict_arp) {
            run(
                "ip",
                &[
                    "netns",
                    "exec",
                    &node.netns,
                    "sysctl",
                    "-q",
                    "-w",
                    &format!("{key}={value}"),
                ],
            )
            .with_context(|| format!("cannot set {key} in {}", node.netns))?;
        }
    }
    Ok(())
}

/// Switches strictARP on a running lab: sysctls and ConfigMap.
pub async fn switch(client: &kube::Client, nodes: &[Host], strict_arp: bool) -> Result<()> {
    set_strict_arp(nodes, strict_arp)?;
    write_config_map(client, strict_arp).await
}

/// Makes `kube-ipvs0` in `node` hold exactly `ips` (/32 and /128).
pub fn sync_addresses(node: &Host, ips: &BTreeSet<IpAddr>) -> Result<()> {
    let ns = node.netns.as_str();
    if !succeeds("ip", &["-n", ns, "link", "show", DEVICE]) {
        run("ip", &["-n", ns, "link", "add", DEVICE, "type", "bridge"])?;
        run("ip", &["-n", ns, "link", "set", DEVICE, "up"])?;
    }
    let out = run("ip", &["-n", ns, "-j", "addr", "show", "dev", DEVICE])?;
    let links: serde_json::Value =
        serde_json::from_str(&out).context("cannot parse `ip -j addr`")?;
    let present: BTreeSet<IpAddr> = links
        .get(0)
        .and_then(|l| l.get("addr_info"))
        .and_then(|a| a.as_array())
        .into_iter()
        .flatten()
        .filter(|a| a.get("scope").and_then(|s| s.as_str()) == Some("global"))
        .filter_map(|a| a.get("local")?.as_str()?.parse().ok())
        .collect();
    for ip in ips.difference(&present) {
        let cidr = match ip {
            IpAddr::V4(_) => format!("{ip}/32"),
            IpAddr::V6(_) => format!("{ip}/128"),
        };
        let mut args = vec!["-n", ns, "addr", "add", &cidr, "dev", DEVICE];
        if ip.is_ipv6() {
            args.push("nodad");
        }
        run("ip", &args)?;
    }
    for ip in present.difference(ips) {
        let cidr = match ip {
            IpAddr::V4(_) => format!("{ip}/32"),
            IpAddr::V6(_) => format!("{ip}/128"),
        };
        run("ip", &["-n", ns, "addr", "del", &cidr, "dev", DEVICE])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_says_ipvs_and_strict_arp() {
        let c = kube_proxy_config(false);
        assert!(c.contains("kind: KubeProxyConfiguration"));
        assert!(c.contains("mode: ipvs"));
        assert!(c.contains("strictARP: false"));
        assert_eq!(arp_sysctls(true)[0].1, "1");
        assert_eq!(arp_sysctls(true)[1].1, "2");
    }
}
