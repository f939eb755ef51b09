use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::names::{InterfaceName, PoolName};
use crate::selector::Selector;

/// Announces the addresses of some pools on the local network in layer-2 mode:
/// one node per IP answers ARP (IPv4) and neighbor solicitations (IPv6) for it.
///
/// Without any L2Advertisement, FerroLB assigns IPs but no node announces them.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "ferrolb.io",
    version = "v1beta1",
    kind = "L2Advertisement",
    plural = "l2advertisements",
    shortname = "l2a",
    category = "ferrolb",
    status = "L2AdvertisementStatus",
    derive = "PartialEq",
    derive = "Default",
    printcolumn = r#"{"name":"Pools","type":"string","jsonPath":".spec.ipAddressPools","description":"Pools announced (empty: all)."}"#,
    printcolumn = r#"{"name":"Interfaces","type":"string","jsonPath":".spec.interfaces","description":"Interfaces announced on (empty: all eligible)."}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    doc = "Announces the addresses of some pools on the local network in layer-2 mode."
)]
#[serde(rename_all = "camelCase")]
pub struct L2AdvertisementSpec {
    /// Pools whose addresses are announced, by name. When both this and
    /// `ipAddressPoolSelectors` are empty, every pool is announced.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128))]
    pub ip_address_pools: Vec<PoolName>,

    /// Label selectors on pools whose addresses are announced, in addition to
    /// `ipAddressPools`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub ip_address_pool_selectors: Vec<Selector>,

    /// Label selectors on nodes allowed to announce. Empty means every node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub node_selectors: Vec<Selector>,

    /// Label selectors on Services to announce. Empty means every Service of the pools.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub service_selectors: Vec<Selector>,

    /// Interfaces to announce on, e.g. `eth0`. Empty means every eligible interface:
    /// physical, VLAN and bond interfaces that are up and do ARP, excluding virtual and
    /// CNI interfaces (veth*, cni*, docker*, kube-ipvs*, ...). An interface named here
    /// is used even when its name is excluded by default, as long as it is up, has an
    /// Ethernet address, does ARP and is not a bridge or bond member; the speaker logs
    /// a warning for a named interface it cannot use.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub interfaces: Vec<InterfaceName>,
}

/// The observed state of an L2Advertisement, written by the controller.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct L2AdvertisementStatus {
    /// `UnknownPools` (a named pool does not exist) and `MatchesNothing` (a selector
    /// matches no pool or node).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
