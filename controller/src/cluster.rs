//! The cluster's own networks, which no pool may hand out: the Service CIDRs
//! (`networking.k8s.io/v1` ServiceCIDR objects), every node's `spec.podCIDRs`, and
//! every node's InternalIP and ExternalIP.
//!
//! A LoadBalancer IP inside one of them breaks the cluster, not just the Service: a
//! VIP inside the pod range makes every node route pod traffic to kube-ipvs0, one
//! equal to a node's address steals that node's traffic. The allocator never hands
//! these addresses out; the pool's status and an Event say which ones overlap.
//!
//! Pure: objects in, labelled ranges out.

use std::collections::BTreeSet;
use std::sync::Arc;

use ferrolb_address::{IpRange, parse_entry};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::networking::v1::ServiceCIDR;
use kube::ResourceExt;

/// One reserved range and what it is, e.g. `podCIDR of node node2`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Reserved {
    /// What the range belongs to, for conditions and Events.
    pub label: String,
    /// The addresses.
    pub range: IpRange,
}

/// Every reserved range, sorted and without duplicates. Entries that do not parse
/// (an API server never stores them) are skipped.
pub fn reserved(nodes: &[Arc<Node>], cidrs: &[Arc<ServiceCIDR>]) -> Vec<Reserved> {
    let mut out = BTreeSet::new();
    let mut add = |label: String, entry: &str| {
        if let Ok(range) = parse_entry(entry) {
            out.insert(Reserved { label, range });
        }
    };
    for cidr in cidrs {
        for entry in cidr
            .spec
            .as_ref()
            .and_then(|s| s.cidrs.as_ref())
            .into_iter()
            .flatten()
        {
            add(format!("ServiceCIDR {}", cidr.name_any()), entry);
        }
    }
    for node in nodes {
        let name = node.name_any();
        let spec = node.spec.as_ref();
        let pod_cidrs = spec.and_then(|s| s.pod_cidrs.clone()).unwrap_or_default();
        let single = spec.and_then(|s| s.pod_cidr.clone());
        for entry in pod_cidrs.iter().chain(single.iter()) {
            add(format!("podCIDR of node {name}"), entry);
        }
        let addresses = node.status.as_ref().and_then(|s| s.addresses.as_ref());
        for a in addresses.into_iter().flatten() {
            if a.type_ == "InternalIP" || a.type_ == "ExternalIP" {
                add(format!("{} of node {name}", a.type_), &a.address);
            }
        }
    }
    out.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, pod: &[&str], addresses: &[(&str, &str)]) -> Arc<Node> {
        let addresses: Vec<_> = addresses
            .iter()
            .map(|(t, a)| json!({ "type": t, "address": a }))
            .collect();
        Arc::new(
            serde_json::from_value(json!({
                "metadata": { "name": name },
                "spec": { "podCIDR": pod.first(), "podCIDRs": pod },
                "status": { "addresses": addresses },
            }))
            .unwrap(),
        )
    }

    #[test]
    fn gathers_service_cidrs_pod_cidrs_and_node_addresses() {
        let cidr: Arc<ServiceCIDR> = Arc::new(
            serde_json::from_value(json!({
                "metadata": { "name": "kubernetes" },
                "spec": { "cidrs": ["198.19.0.0/16", "2001:db8:19::/112"] },
            }))
            .unwrap(),
        );
        let nodes = [node(
            "node1",
            &["198.18.64.0/24", "2001:db8:20::/64"],
            &[
                ("InternalIP", "198.18.0.2"),
                ("Hostname", "node1"),
                ("ExternalIP", "2001:db8::2"),
            ],
        )];
        let got: Vec<String> = reserved(&nodes, &[cidr])
            .iter()
            .map(|r| format!("{}: {}", r.label, r.range))
            .collect();
        assert_eq!(got.len(), 6, "{got:?}");
        assert!(
            got.contains(&"ServiceCIDR kubernetes: 198.19.0.0/16".to_owned()),
            "{got:?}"
        );
        assert!(
            got.contains(&"podCIDR of node node1: 198.18.64.0/24".to_owned()),
            "{got:?}"
        );
        assert!(
            got.contains(&"InternalIP of node node1: 198.18.0.2".to_owned()),
            "{got:?}"
        );
        assert!(
            got.contains(&"ExternalIP of node node1: 2001:db8::2".to_owned()),
            "{got:?}"
        );
        assert!(!got.iter().any(|g| g.contains("Hostname")));
    }

    #[test]
    fn the_single_pod_cidr_counts_once_and_bad_entries_are_skipped() {
        let nodes = [node(
            "n",
            &["198.18.64.0/24"],
            &[("InternalIP", "not-an-ip")],
        )];
        let got = reserved(&nodes, &[]);
        assert_eq!(got.len(), 1, "{got:?}");
    }
}
