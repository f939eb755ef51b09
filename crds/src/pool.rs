use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::names::{NamespaceName, PoolAddress};
use crate::selector::Selector;

/// A set of IP addresses FerroLB may assign to LoadBalancer Services.
///
/// Pools are cluster-scoped. A Service gets its external IPs from the pool it names
/// (annotation `ferrolb.io/address-pool`), else from the pools whose
/// `serviceAllocation` matches it (lowest priority first), else from any pool with
/// `autoAssign` enabled. Two pools must not share addresses: the controller marks both
/// `Overlapping` and allocates from neither until one is fixed.
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "ferrolb.io",
    version = "v1beta1",
    kind = "IPAddressPool",
    plural = "ipaddresspools",
    shortname = "ipp",
    category = "ferrolb",
    status = "IPAddressPoolStatus",
    derive = "PartialEq",
    printcolumn = r#"{"name":"Addresses","type":"string","jsonPath":".spec.addresses","description":"The pool's address entries."}"#,
    printcolumn = r#"{"name":"Auto","type":"boolean","jsonPath":".spec.autoAssign","description":"Whether Services that ask for no pool get addresses from this one."}"#,
    printcolumn = r#"{"name":"Class","type":"string","jsonPath":".spec.loadBalancerClass","description":"The loadBalancerClass of the installation that uses the pool; empty: the installation without a class.","priority":1}"#,
    printcolumn = r#"{"name":"Assigned","type":"string","jsonPath":".status.assignedSummary","description":"Addresses in use, per family."}"#,
    printcolumn = r#"{"name":"Available","type":"string","jsonPath":".status.availableSummary","description":"Addresses still free, per family."}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    doc = "A set of IP addresses FerroLB may assign to LoadBalancer Services."
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = crate::validation::pool_spec_rules()))]
pub struct IPAddressPoolSpec {
    /// The addresses of the pool. Each entry is a CIDR (`198.18.0.0/28`,
    /// `2001:db8::/120`), an inclusive range of one family (`198.18.0.10-198.18.0.20`)
    /// or a single IP (`198.18.0.7`). IPv4 and IPv6 entries may be mixed: a dual-stack
    /// Service then gets one address of each family from the same pool. Network and
    /// broadcast addresses of a CIDR are assignable unless `avoidBuggyIPs` is set.
    #[schemars(length(max = 256))]
    pub addresses: Vec<PoolAddress>,

    /// Whether Services that name no pool and request no IP may get addresses from this
    /// pool. When false, only Services that name this pool (annotation
    /// `ferrolb.io/address-pool`) or request one of its IPs are served. Defaults to true.
    #[serde(default = "default_true")]
    pub auto_assign: bool,

    /// Skip IPv4 addresses ending in `.0` or `.255`, which some old network equipment
    /// drops as broadcast addresses. Defaults to false.
    #[serde(default, rename = "avoidBuggyIPs")]
    pub avoid_buggy_ips: bool,

    /// Restricts the pool to some Services and orders it among other pools. A pool with
    /// `serviceAllocation` only serves Services it matches (or that name it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_allocation: Option<ServiceAllocation>,

    /// Only a FerroLB installation whose `--load-balancer-class` equals this uses the
    /// pool; unset: the installation without a class. Written like a Service's
    /// `spec.loadBalancerClass`, e.g. `ferrolb.io/internal`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = crate::validation::MAX_CLASS_LEN),
        extend("x-kubernetes-validations" = crate::validation::load_balancer_class_rules())
    )]
    pub load_balancer_class: Option<String>,
}

fn default_true() -> bool {
    true
}

/// Which Services a pool serves, and in which order pools are tried.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = crate::validation::service_allocation_rules()))]
pub struct ServiceAllocation {
    /// Order among pools that match a Service: lower numbers are tried first; pools
    /// without a priority come after every pool with one; ties are broken by pool name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,

    /// Namespaces whose Services the pool serves. Empty means any namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128))]
    pub namespaces: Vec<NamespaceName>,

    /// Label selectors on the Service's namespace; the pool serves Services in
    /// namespaces matching any of them. Empty means any namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub namespace_selectors: Vec<Selector>,

    /// Label selectors on the Service; the pool serves Services matching any of them.
    /// Empty means any Service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub service_selectors: Vec<Selector>,
}

/// Address usage of one family. Counts are decimal strings because an IPv6 pool can
/// hold far more addresses than a 64-bit integer counts (a /48 holds 2^80).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FamilyUsage {
    /// Addresses in the pool.
    pub total: String,
    /// Addresses assigned to Services (a shared address counts once).
    pub assigned: String,
    /// Addresses free for new Services.
    pub available: String,
}

/// The observed state of a pool, written by the controller.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IPAddressPoolStatus {
    /// IPv4 usage; absent when the pool has no IPv4 entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<FamilyUsage>,
    /// IPv6 usage; absent when the pool has no IPv6 entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<FamilyUsage>,
    /// Assigned addresses per family, for `kubectl get` (e.g. `IPv4 3/16, IPv6 1/256`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assigned_summary: Option<String>,
    /// Free addresses per family, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_summary: Option<String>,
    /// `Ready` (the pool serves allocations; `False` with reason `Deleting` while a
    /// deleted pool waits for its Services to let go), `Overlapping` (shares addresses
    /// with the pool named in the message), `Invalid` (an entry could not be used; the
    /// message names it) and `ClusterOverlap` (addresses inside the cluster's Service
    /// CIDRs, pod CIDRs or node addresses, which are never allocated).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The quarantine: addresses released lately, oldest first (at most 128). They go
    /// to new Services only after every never-used address, so stale ARP caches, DNS
    /// records and firewall rules pointing at their former Service have time to
    /// expire. Kept here so a restart or a new leader keeps the order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128))]
    pub released: Vec<ReleasedIp>,
    /// The pool generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// An address in the quarantine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReleasedIp {
    /// The address.
    #[schemars(length(max = 45))]
    pub ip: String,
    /// When its last Service let it go.
    pub released_at: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
}
