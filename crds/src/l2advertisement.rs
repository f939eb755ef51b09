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

    /// Interfaces to announce on, by name (`eth0`, `bond0.200`) or by name pattern,
    /// where `*` matches any run of characters and `?` one character (`enp*`,
    /// `eth0.*`). Empty (and `nodeAddressInterface` false) means every eligible
    /// interface: physical, VLAN and bond interfaces that are up and do ARP, excluding
    /// virtual and CNI interfaces (veth*, cni*, docker*, kube-ipvs*, ...) and bond or
    /// bridge members. An interface named here is used even when its name is excluded
    /// by default, as long as it is up, has an Ethernet address, does ARP and is not a
    /// bridge or bond member. A node with none of the interfaces named here is not
    /// eligible for the advertisement's IPs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub interfaces: Vec<InterfaceName>,

    /// Also announce on the interface that holds the node's InternalIP, whatever its
    /// name ("announce where the node's address is"). With `interfaces` empty, only
    /// on that interface.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub node_address_interface: bool,

    /// Whether a node is eligible for an IP only when one of its selected interfaces
    /// is on a subnet containing the IP. `Required` (the default): a node on another
    /// subnet never wins an IP it could not answer for. `Disabled`: for VIP ranges
    /// deliberately outside every node subnet; then the LAN's routers and clients must
    /// reach the VIPs on the selected interfaces' segment (on-link routes or proxy
    /// ARP), which FerroLB cannot check.
    #[serde(default, skip_serializing_if = "SubnetCheck::is_required")]
    pub subnet_check: SubnetCheck,

    /// Nodes to prefer, with weights. A node's preference is the sum of the weights of
    /// the entries whose selector matches its labels; among the eligible nodes only
    /// those with the highest preference are candidates, so an eligible preferred node
    /// always wins (and takes the IPs back when it returns), and the usual
    /// rendezvous election picks among nodes of equal preference. Empty: no preference.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub preferred_nodes: Vec<NodePreference>,
}

/// Whether eligibility requires a node to be on the IP's subnet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SubnetCheck {
    /// Eligible only with a selected interface on a subnet containing the IP.
    #[default]
    Required,
    /// Any node with a selected interface is eligible, whatever its subnets.
    Disabled,
}

impl SubnetCheck {
    /// Whether this is the default, [`SubnetCheck::Required`].
    #[must_use]
    pub fn is_required(&self) -> bool {
        *self == Self::Required
    }
}

/// A weighted preference for the nodes a label selector matches.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodePreference {
    /// The weight added to a matching node's preference, 1 to 100.
    #[schemars(range(min = 1, max = 100))]
    pub weight: u32,
    /// The nodes this preference is for.
    pub selector: Selector,
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
