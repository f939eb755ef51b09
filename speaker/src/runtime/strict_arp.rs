//! Reads what the strictARP check needs: kube-proxy's ConfigMap (one `get`)
//! and the node's ARP sysctls from procfs. The decision itself is the pure
//! [`ferrolb_speaker::strictarp::evaluate`].

use std::collections::BTreeMap;

use ferrolb_speaker::strictarp::{
    ArpSysctls, KubeProxyConfig, NodeSysctls, Verdict, evaluate, parse_kube_proxy_config,
};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;

/// Runs the check for the interfaces announced on.
pub(crate) async fn check(
    config_maps: &Api<ConfigMap>,
    name: &str,
    interfaces: &[String],
) -> Verdict {
    let kube_proxy = match config_maps.get_opt(name).await {
        Ok(Some(cm)) => parse_kube_proxy_config(&cm.data.unwrap_or_default()),
        Ok(None) => KubeProxyConfig::Absent,
        Err(error) => KubeProxyConfig::Unreadable(format!("cannot read ConfigMap {name}: {error}")),
    };
    let sysctls = NodeSysctls {
        all: read_sysctls("all"),
        interfaces: interfaces
            .iter()
            .map(|i| (i.clone(), read_sysctls(i)))
            .collect::<BTreeMap<_, _>>(),
    };
    evaluate(&kube_proxy, &sysctls)
}

fn read_sysctls(interface: &str) -> Option<ArpSysctls> {
    let read = |knob: &str| -> Option<u8> {
        std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{interface}/{knob}"))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    Some(ArpSysctls {
        ignore: read("arp_ignore")?,
        announce: read("arp_announce")?,
    })
}
