//! Which nodes may announce which Service IPs, and which of them does.
//!
//! Given the cluster as plain data ([`Cluster`]) and the set of speakers alive
//! in the membership, [`plan`] decides for every election unit (a set of IPs
//! announced together, see [`crate::election`]) either an [`Owner`] (node and
//! interfaces) or a [`Refusal`] saying why nobody announces it. Every speaker
//! computes the same plan from the same inputs; each then announces the IPs
//! [`Plan::owned_by`] gives it.
//!
//! A node is a candidate for a Service when all of these hold (SPEC §4):
//! - an L2Advertisement matches the Service's pool (by name or pool labels)
//!   and the Service (service selectors), and selects the node (node selectors);
//! - the node is not labelled `node.kubernetes.io/exclude-from-external-load-balancers`
//!   (unless the speaker was told to ignore that label);
//! - the node's `NetworkUnavailable` condition is not True;
//! - the node's speaker is alive in the membership;
//! - the Service has a ready or serving endpoint, and with
//!   `externalTrafficPolicy: Local` one of them is on this node.
//!
//! Services sharing an IP form one unit; its candidates are the nodes that are
//! candidates for every Service in it, so a shared IP is never announced from a
//! node that would drop one of its Services' traffic.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::election::{ElectionKey, NodeName, election_units, owner};
use crate::selector::{Labels, any_matches};

/// The node label that keeps a node out of external load balancing.
pub const EXCLUDE_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";

/// A Service, by namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ServiceId {
    /// The Service's namespace.
    pub namespace: String,
    /// The Service's name.
    pub name: String,
}

impl ServiceId {
    /// A Service identifier.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ServiceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A Service's `externalTrafficPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TrafficPolicy {
    /// Any node forwards to any endpoint (the default).
    #[default]
    Cluster,
    /// Only nodes with a local endpoint receive traffic.
    Local,
}

/// A LoadBalancer Service as eligibility sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceView {
    /// Which Service.
    pub id: ServiceId,
    /// The IPs in `status.loadBalancer.ingress`.
    pub ips: Vec<IpAddr>,
    /// The pool the IPs came from (annotation `ferrolb.io/ip-allocated-from-pool`).
    pub pool: Option<String>,
    /// The Service's labels, for L2Advertisement service selectors.
    pub labels: Labels,
    /// `spec.externalTrafficPolicy`.
    pub traffic_policy: TrafficPolicy,
    /// Whether any endpoint of the Service is ready or serving.
    pub has_ready_endpoints: bool,
    /// Nodes hosting a ready or serving endpoint of the Service.
    pub endpoint_nodes: BTreeSet<String>,
}

/// A Node as eligibility sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeView {
    /// The node's labels.
    pub labels: Labels,
    /// Whether the `NetworkUnavailable` condition is True.
    pub network_unavailable: bool,
}

/// An L2Advertisement as eligibility sees it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AdvertisementView {
    /// The advertisement's name, for messages.
    pub name: String,
    /// `spec.ipAddressPools`.
    pub pools: Vec<String>,
    /// `spec.ipAddressPoolSelectors`.
    pub pool_selectors: Vec<LabelSelector>,
    /// `spec.nodeSelectors`.
    pub node_selectors: Vec<LabelSelector>,
    /// `spec.serviceSelectors`.
    pub service_selectors: Vec<LabelSelector>,
    /// `spec.interfaces`; empty means every eligible interface.
    pub interfaces: Vec<String>,
}

impl AdvertisementView {
    fn covers_pool(&self, pool: Option<&str>, pools: &BTreeMap<String, Labels>) -> bool {
        if self.pools.is_empty() && self.pool_selectors.is_empty() {
            return true;
        }
        let Some(pool) = pool else {
            // A Service whose pool is unknown is only covered by an
            // advertisement of every pool.
            return false;
        };
        if self.pools.iter().any(|p| p == pool) {
            return true;
        }
        let no_labels = Labels::new();
        let labels = pools.get(pool).unwrap_or(&no_labels);
        // Unlike the other lists, an empty pool-selector list selects no
        // extra pool: `ipAddressPools` alone already restricts.
        !self.pool_selectors.is_empty() && any_matches(&self.pool_selectors, labels)
    }

    fn interface_selection(&self) -> Interfaces {
        if self.interfaces.is_empty() {
            Interfaces::All
        } else {
            Interfaces::Only(self.interfaces.iter().cloned().collect())
        }
    }
}

/// Everything eligibility reads from the API, as plain data.
#[derive(Debug, Clone, Default)]
pub struct Cluster {
    /// LoadBalancer Services with IPs in their status.
    pub services: Vec<ServiceView>,
    /// Nodes by name.
    pub nodes: BTreeMap<String, NodeView>,
    /// Pool labels by pool name, for `ipAddressPoolSelectors`.
    pub pools: BTreeMap<String, Labels>,
    /// Every L2Advertisement.
    pub advertisements: Vec<AdvertisementView>,
}

/// Choices made by flags rather than by API objects.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Policy {
    /// Announce from nodes labelled [`EXCLUDE_LABEL`] too.
    pub ignore_exclude_label: bool,
}

/// The interfaces an IP is announced on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interfaces {
    /// Every interface of the node eligible by default.
    All,
    /// Every interface eligible by default and these named ones (an
    /// advertisement without `interfaces` and one naming some both select
    /// the node): a named one is used even when its name is excluded by
    /// default.
    AllAnd(BTreeSet<String>),
    /// Only these interfaces (those the node has among them).
    Only(BTreeSet<String>),
}

impl Interfaces {
    /// The interfaces announced by either selection.
    #[must_use]
    pub fn union(self, other: Interfaces) -> Interfaces {
        match (self, other) {
            (Interfaces::All, Interfaces::All) => Interfaces::All,
            (Interfaces::Only(mut a), Interfaces::Only(b)) => {
                a.extend(b);
                Interfaces::Only(a)
            }
            (a, b) => {
                let mut names = a.into_names();
                names.extend(b.into_names());
                Interfaces::AllAnd(names)
            }
        }
    }

    fn into_names(self) -> BTreeSet<String> {
        match self {
            Interfaces::All => BTreeSet::new(),
            Interfaces::AllAnd(names) | Interfaces::Only(names) => names,
        }
    }
}

/// Why nobody announces a Service's IPs; the names are the `reason` written
/// to ServiceL2Status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reason {
    /// No L2Advertisement covers the Service's pool and the Service.
    NoAdvertisement,
    /// The Service has no ready or serving endpoint.
    NoReadyEndpoints,
    /// `externalTrafficPolicy: Local` and no eligible node hosts an endpoint.
    NoLocalEndpoints,
    /// Advertisements exist, but every node they select is excluded,
    /// unavailable or has no live speaker.
    NoEligibleNode,
    /// Services sharing an IP have no eligible node in common.
    NoCommonNode,
}

impl Reason {
    /// The reason as written to the API.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NoAdvertisement => "NoAdvertisement",
            Reason::NoReadyEndpoints => "NoReadyEndpoints",
            Reason::NoLocalEndpoints => "NoLocalEndpoints",
            Reason::NoEligibleNode => "NoEligibleNode",
            Reason::NoCommonNode => "NoCommonNode",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A reason and a sentence for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Machine-readable reason.
    pub reason: Reason,
    /// What is wrong and what to do about it.
    pub message: String,
}

/// The node that announces a unit, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// The elected node.
    pub node: NodeName,
    /// The interfaces it announces on.
    pub interfaces: Interfaces,
}

/// The candidates of one Service: nodes and the interfaces each would use.
pub type Candidates = BTreeMap<NodeName, Interfaces>;

/// The nodes that may announce `service`, or why there are none.
pub fn candidates(
    service: &ServiceView,
    cluster: &Cluster,
    live: &BTreeSet<NodeName>,
    policy: Policy,
) -> Result<Candidates, Refusal> {
    let pool = service.pool.as_deref();
    let advertisements: Vec<&AdvertisementView> = cluster
        .advertisements
        .iter()
        .filter(|ad| ad.covers_pool(pool, &cluster.pools))
        .filter(|ad| any_matches(&ad.service_selectors, &service.labels))
        .collect();
    if advertisements.is_empty() {
        let pool = pool.unwrap_or("(unknown)");
        return Err(Refusal {
            reason: Reason::NoAdvertisement,
            message: format!(
                "no L2Advertisement covers pool {pool} and this Service; create one or widen its ipAddressPools/serviceSelectors"
            ),
        });
    }
    if !service.has_ready_endpoints {
        return Err(Refusal {
            reason: Reason::NoReadyEndpoints,
            message: "the Service has no ready or serving endpoint; the IP is announced again as soon as one is ready".to_owned(),
        });
    }

    let mut found = Candidates::new();
    let mut selected_live = 0usize;
    for (name, node) in &cluster.nodes {
        if !policy.ignore_exclude_label && node.labels.contains_key(EXCLUDE_LABEL) {
            continue;
        }
        if node.network_unavailable {
            continue;
        }
        let node_name = NodeName::new(name.as_str());
        if !live.contains(&node_name) {
            continue;
        }
        let selection = advertisements
            .iter()
            .filter(|ad| any_matches(&ad.node_selectors, &node.labels))
            .map(|ad| ad.interface_selection())
            .reduce(Interfaces::union);
        let Some(selection) = selection else {
            continue;
        };
        selected_live += 1;
        if service.traffic_policy == TrafficPolicy::Local && !service.endpoint_nodes.contains(name)
        {
            continue;
        }
        found.insert(node_name, selection);
    }
    if !found.is_empty() {
        return Ok(found);
    }
    if selected_live > 0 {
        return Err(Refusal {
            reason: Reason::NoLocalEndpoints,
            message: format!(
                "externalTrafficPolicy is Local and none of the {selected_live} eligible nodes hosts a ready endpoint"
            ),
        });
    }
    let names: Vec<&str> = advertisements.iter().map(|a| a.name.as_str()).collect();
    Err(Refusal {
        reason: Reason::NoEligibleNode,
        message: format!(
            "no node selected by L2Advertisement {} has a live speaker, is free of the {EXCLUDE_LABEL} label and has its network available",
            names.join(", ")
        ),
    })
}

/// The interfaces the L2Advertisements selecting `node` name explicitly
/// (`spec.interfaces`). The speaker may announce on them even when their
/// names match a default exclusion (see [`crate::interfaces`]). Empty when
/// the node is unknown or no advertisement selecting it names one.
#[must_use]
pub fn named_interfaces(cluster: &Cluster, node: &str) -> BTreeSet<String> {
    let Some(node) = cluster.nodes.get(node) else {
        return BTreeSet::new();
    };
    cluster
        .advertisements
        .iter()
        .filter(|ad| any_matches(&ad.node_selectors, &node.labels))
        .flat_map(|ad| ad.interfaces.iter().cloned())
        .collect()
}

/// The decision for one election unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    /// The IPs announced together.
    pub key: ElectionKey,
    /// The Services whose IPs form the unit, sorted.
    pub services: Vec<ServiceId>,
    /// Who announces it, or why nobody does.
    pub outcome: Result<Owner, Refusal>,
}

/// The decisions for every unit, identical on every speaker given the same inputs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// One entry per election unit, sorted by key.
    pub units: Vec<Unit>,
}

impl Plan {
    /// The IPs `node` announces, with their interfaces.
    #[must_use]
    pub fn owned_by(&self, node: &NodeName) -> BTreeMap<IpAddr, Interfaces> {
        let mut owned = BTreeMap::new();
        for unit in &self.units {
            if let Ok(o) = &unit.outcome
                && &o.node == node
            {
                for ip in unit.key.ips() {
                    owned.insert(*ip, o.interfaces.clone());
                }
            }
        }
        owned
    }

    /// The unit a Service belongs to.
    #[must_use]
    pub fn unit_of(&self, service: &ServiceId) -> Option<&Unit> {
        self.units.iter().find(|u| u.services.contains(service))
    }
}

/// Decides the owner of every unit. `live` is the set of nodes whose speakers
/// are alive in the membership, this node's included.
#[must_use]
pub fn plan(cluster: &Cluster, live: &BTreeSet<NodeName>, policy: Policy) -> Plan {
    let services: Vec<&ServiceView> = cluster
        .services
        .iter()
        .filter(|s| !s.ips.is_empty())
        .collect();
    let keys = election_units(services.iter().map(|s| s.ips.iter().copied()));
    let mut units = Vec::with_capacity(keys.len());
    for key in keys {
        let members: Vec<&ServiceView> = services
            .iter()
            .copied()
            .filter(|s| s.ips.iter().any(|ip| key.contains(ip)))
            .collect();
        let mut ids: Vec<ServiceId> = members.iter().map(|s| s.id.clone()).collect();
        ids.sort();
        let outcome = unit_outcome(&key, &members, cluster, live, policy);
        units.push(Unit {
            key,
            services: ids,
            outcome,
        });
    }
    Plan { units }
}

fn unit_outcome(
    key: &ElectionKey,
    members: &[&ServiceView],
    cluster: &Cluster,
    live: &BTreeSet<NodeName>,
    policy: Policy,
) -> Result<Owner, Refusal> {
    let mut common: Option<Candidates> = None;
    for service in members {
        let mine = candidates(service, cluster, live, policy)?;
        common = Some(match common {
            None => mine,
            Some(previous) => previous
                .into_iter()
                .filter_map(|(node, a)| mine.get(&node).map(|b| (node, a.union(b.clone()))))
                .collect(),
        });
    }
    let common = common.unwrap_or_default();
    let names: Vec<NodeName> = common.keys().cloned().collect();
    match owner(key, &names) {
        Some(node) => {
            let interfaces = common.get(node).cloned().unwrap_or(Interfaces::All);
            Ok(Owner {
                node: node.clone(),
                interfaces,
            })
        }
        None => Err(Refusal {
            reason: Reason::NoCommonNode,
            message: "the Services sharing these IPs have no eligible node in common".to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(198, 18, 0, last))
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn select(pairs: &[(&str, &str)]) -> LabelSelector {
        LabelSelector {
            match_labels: Some(labels(pairs)),
            match_expressions: None,
        }
    }

    fn service(name: &str, ips: &[IpAddr]) -> ServiceView {
        ServiceView {
            id: ServiceId::new("default", name),
            ips: ips.to_vec(),
            pool: Some("lan".to_owned()),
            labels: Labels::new(),
            traffic_policy: TrafficPolicy::Cluster,
            has_ready_endpoints: true,
            endpoint_nodes: ["node-1".to_owned()].into(),
        }
    }

    fn cluster() -> Cluster {
        let nodes = ["node-1", "node-2", "node-3"]
            .iter()
            .map(|n| ((*n).to_owned(), NodeView::default()))
            .collect();
        Cluster {
            services: vec![service("web", &[ip(200)])],
            nodes,
            pools: [("lan".to_owned(), labels(&[("site", "a")]))].into(),
            advertisements: vec![AdvertisementView {
                name: "lan".to_owned(),
                ..AdvertisementView::default()
            }],
        }
    }

    fn all_live() -> BTreeSet<NodeName> {
        ["node-1", "node-2", "node-3"]
            .iter()
            .map(|n| NodeName::from(*n))
            .collect()
    }

    fn names(c: &Candidates) -> Vec<&str> {
        c.keys().map(NodeName::as_str).collect()
    }

    /// One table row: a change to the default cluster and the expected result.
    struct Case {
        name: &'static str,
        change: fn(&mut Cluster, &mut BTreeSet<NodeName>, &mut Policy),
        want: Result<Vec<&'static str>, Reason>,
    }

    #[test]
    fn table() {
        let cases = [
            Case {
                name: "defaults: every live node",
                change: |_, _, _| {},
                want: Ok(vec!["node-1", "node-2", "node-3"]),
            },
            Case {
                name: "no advertisement",
                change: |c, _, _| c.advertisements.clear(),
                want: Err(Reason::NoAdvertisement),
            },
            Case {
                name: "advertisement of another pool",
                change: |c, _, _| c.advertisements[0].pools = vec!["other".to_owned()],
                want: Err(Reason::NoAdvertisement),
            },
            Case {
                name: "advertisement naming the pool",
                change: |c, _, _| c.advertisements[0].pools = vec!["lan".to_owned()],
                want: Ok(vec!["node-1", "node-2", "node-3"]),
            },
            Case {
                name: "pool selector matching the pool's labels",
                change: |c, _, _| {
                    c.advertisements[0].pool_selectors = vec![select(&[("site", "a")])]
                },
                want: Ok(vec!["node-1", "node-2", "node-3"]),
            },
            Case {
                name: "pool selector missing",
                change: |c, _, _| {
                    c.advertisements[0].pool_selectors = vec![select(&[("site", "b")])]
                },
                want: Err(Reason::NoAdvertisement),
            },
            Case {
                name: "unknown pool and a restricted advertisement",
                change: |c, _, _| {
                    c.services[0].pool = None;
                    c.advertisements[0].pools = vec!["lan".to_owned()];
                },
                want: Err(Reason::NoAdvertisement),
            },
            Case {
                name: "unknown pool and an advertisement of all pools",
                change: |c, _, _| c.services[0].pool = None,
                want: Ok(vec!["node-1", "node-2", "node-3"]),
            },
            Case {
                name: "service selector missing",
                change: |c, _, _| {
                    c.advertisements[0].service_selectors = vec![select(&[("app", "web")])]
                },
                want: Err(Reason::NoAdvertisement),
            },
            Case {
                name: "service selector matching",
                change: |c, _, _| {
                    c.advertisements[0].service_selectors = vec![select(&[("app", "web")])];
                    c.services[0].labels = labels(&[("app", "web")]);
                },
                want: Ok(vec!["node-1", "node-2", "node-3"]),
            },
            Case {
                name: "node selector",
                change: |c, _, _| {
                    c.advertisements[0].node_selectors = vec![LabelSelector {
                        match_labels: None,
                        match_expressions: Some(vec![LabelSelectorRequirement {
                            key: "edge".to_owned(),
                            operator: "Exists".to_owned(),
                            values: None,
                        }]),
                    }];
                    if let Some(n) = c.nodes.get_mut("node-2") {
                        n.labels = labels(&[("edge", "")]);
                    }
                },
                want: Ok(vec!["node-2"]),
            },
            Case {
                name: "node selector matching nothing",
                change: |c, _, _| {
                    c.advertisements[0].node_selectors = vec![select(&[("edge", "x")])]
                },
                want: Err(Reason::NoEligibleNode),
            },
            Case {
                name: "exclude label",
                change: |c, _, _| {
                    if let Some(n) = c.nodes.get_mut("node-1") {
                        n.labels = labels(&[(EXCLUDE_LABEL, "")]);
                    }
                },
                want: Ok(vec!["node-2", "node-3"]),
            },
            Case {
                name: "exclude label ignored by flag",
                change: |c, _, p| {
                    p.ignore_exclude_label = true;
                    if let Some(n) = c.nodes.get_mut("node-1") {
                        n.labels = labels(&[(EXCLUDE_LABEL, "true")]);
                    }
                },
                want: Ok(vec!["node-1", "node-2", "node-3"]),
            },
            Case {
                name: "network unavailable",
                change: |c, _, _| {
                    if let Some(n) = c.nodes.get_mut("node-3") {
                        n.network_unavailable = true;
                    }
                },
                want: Ok(vec!["node-1", "node-2"]),
            },
            Case {
                name: "speaker not alive",
                change: |_, live, _| {
                    live.remove(&NodeName::from("node-2"));
                },
                want: Ok(vec!["node-1", "node-3"]),
            },
            Case {
                name: "no live speaker at all",
                change: |_, live, _| live.clear(),
                want: Err(Reason::NoEligibleNode),
            },
            Case {
                name: "live speaker on a node that is gone",
                change: |c, _, _| {
                    c.nodes.remove("node-3");
                },
                want: Ok(vec!["node-1", "node-2"]),
            },
            Case {
                name: "no ready endpoints",
                change: |c, _, _| {
                    c.services[0].has_ready_endpoints = false;
                    c.services[0].endpoint_nodes.clear();
                },
                want: Err(Reason::NoReadyEndpoints),
            },
            Case {
                name: "Local: only nodes with an endpoint",
                change: |c, _, _| c.services[0].traffic_policy = TrafficPolicy::Local,
                want: Ok(vec!["node-1"]),
            },
            Case {
                name: "Local: the endpoint's node is down",
                change: |c, live, _| {
                    c.services[0].traffic_policy = TrafficPolicy::Local;
                    live.remove(&NodeName::from("node-1"));
                },
                want: Err(Reason::NoLocalEndpoints),
            },
        ];
        for case in cases {
            let mut c = cluster();
            let mut live = all_live();
            let mut policy = Policy::default();
            (case.change)(&mut c, &mut live, &mut policy);
            let got = candidates(&c.services[0], &c, &live, policy);
            match (&got, &case.want) {
                (Ok(got), Ok(want)) => assert_eq!(&names(got), want, "{}", case.name),
                (Err(got), Err(want)) => assert_eq!(got.reason, *want, "{}", case.name),
                _ => panic!("{}: got {got:?}, want {:?}", case.name, case.want),
            }
        }
    }

    #[test]
    fn interfaces_union_across_advertisements() {
        let mut c = cluster();
        c.advertisements[0].interfaces = vec!["eth0".to_owned()];
        c.advertisements.push(AdvertisementView {
            name: "second".to_owned(),
            interfaces: vec!["eth1".to_owned()],
            node_selectors: vec![select(&[("second", "yes")])],
            ..AdvertisementView::default()
        });
        if let Some(n) = c.nodes.get_mut("node-2") {
            n.labels = labels(&[("second", "yes")]);
        }
        let got = candidates(&c.services[0], &c, &all_live(), Policy::default()).unwrap();
        let only =
            |names: &[&str]| Interfaces::Only(names.iter().map(|n| (*n).to_owned()).collect());
        assert_eq!(got[&NodeName::from("node-1")], only(&["eth0"]));
        assert_eq!(got[&NodeName::from("node-2")], only(&["eth0", "eth1"]));
        c.advertisements.push(AdvertisementView {
            name: "everywhere".to_owned(),
            ..AdvertisementView::default()
        });
        let got = candidates(&c.services[0], &c, &all_live(), Policy::default()).unwrap();
        // Every default interface, and eth0 even were it excluded by default.
        let all_and =
            |names: &[&str]| Interfaces::AllAnd(names.iter().map(|n| (*n).to_owned()).collect());
        assert_eq!(got[&NodeName::from("node-1")], all_and(&["eth0"]));
        assert_eq!(got[&NodeName::from("node-2")], all_and(&["eth0", "eth1"]));
    }

    #[test]
    fn union_of_selections() {
        let set = |names: &[&str]| -> BTreeSet<String> {
            names.iter().map(|n| (*n).to_owned()).collect()
        };
        use Interfaces::{All, AllAnd, Only};
        let cases = [
            (All, All, All),
            (Only(set(&["a"])), Only(set(&["b"])), Only(set(&["a", "b"]))),
            (All, Only(set(&["veth0"])), AllAnd(set(&["veth0"]))),
            (Only(set(&["veth0"])), All, AllAnd(set(&["veth0"]))),
            (AllAnd(set(&["a"])), All, AllAnd(set(&["a"]))),
            (
                AllAnd(set(&["a"])),
                Only(set(&["b"])),
                AllAnd(set(&["a", "b"])),
            ),
            (
                AllAnd(set(&["a"])),
                AllAnd(set(&["b"])),
                AllAnd(set(&["a", "b"])),
            ),
        ];
        for (a, b, want) in cases {
            let what = format!("{a:?} ∪ {b:?}");
            assert_eq!(a.union(b), want, "{what}");
        }
    }

    #[test]
    fn named_interfaces_come_from_the_advertisements_selecting_the_node() {
        let mut c = cluster();
        let set = |names: &[&str]| -> BTreeSet<String> {
            names.iter().map(|n| (*n).to_owned()).collect()
        };
        assert_eq!(named_interfaces(&c, "node-1"), set(&[]), "all eligible");
        c.advertisements[0].interfaces = vec!["eth0".to_owned()];
        c.advertisements.push(AdvertisementView {
            name: "pods".to_owned(),
            pools: vec!["other".to_owned()],
            interfaces: vec!["veth0".to_owned(), "docker0".to_owned()],
            node_selectors: vec![select(&[("bridge", "yes")])],
            ..AdvertisementView::default()
        });
        if let Some(n) = c.nodes.get_mut("node-2") {
            n.labels = labels(&[("bridge", "yes")]);
        }
        assert_eq!(named_interfaces(&c, "node-1"), set(&["eth0"]));
        assert_eq!(
            named_interfaces(&c, "node-2"),
            set(&["docker0", "eth0", "veth0"])
        );
        assert_eq!(named_interfaces(&c, "unknown"), set(&[]));
    }

    #[test]
    fn shared_ip_unit_uses_common_candidates() {
        let mut c = cluster();
        let mut other = service("api", &[ip(200), ip(201)]);
        other.traffic_policy = TrafficPolicy::Local;
        other.endpoint_nodes = ["node-3".to_owned()].into();
        c.services.push(other);
        let plan = plan(&c, &all_live(), Policy::default());
        assert_eq!(plan.units.len(), 1, "the shared IP merges both Services");
        let unit = &plan.units[0];
        assert_eq!(unit.key.ips(), &[ip(200), ip(201)]);
        assert_eq!(unit.services.len(), 2);
        let owner = unit.outcome.as_ref().unwrap();
        assert_eq!(
            owner.node.as_str(),
            "node-3",
            "the only node eligible for both"
        );
        let owned = plan.owned_by(&NodeName::from("node-3"));
        assert_eq!(
            owned.keys().copied().collect::<Vec<_>>(),
            [ip(200), ip(201)]
        );
        assert!(plan.owned_by(&NodeName::from("node-1")).is_empty());
    }

    #[test]
    fn shared_ip_without_common_node_is_refused() {
        let mut c = cluster();
        c.services[0].traffic_policy = TrafficPolicy::Local;
        let mut other = service("api", &[ip(200)]);
        other.traffic_policy = TrafficPolicy::Local;
        other.endpoint_nodes = ["node-3".to_owned()].into();
        c.services.push(other);
        let plan = plan(&c, &all_live(), Policy::default());
        let refusal = plan.units[0].outcome.as_ref().unwrap_err();
        assert_eq!(refusal.reason, Reason::NoCommonNode);
    }

    #[test]
    fn a_refused_service_refuses_its_unit() {
        let mut c = cluster();
        c.services[0].has_ready_endpoints = false;
        let plan = plan(&c, &all_live(), Policy::default());
        let unit = plan.unit_of(&ServiceId::new("default", "web")).unwrap();
        assert_eq!(
            unit.outcome.as_ref().unwrap_err().reason,
            Reason::NoReadyEndpoints
        );
        assert!(plan.owned_by(&NodeName::from("node-1")).is_empty());
    }

    #[test]
    fn every_node_computes_the_same_single_owner_and_owners_spread() {
        let mut c = cluster();
        c.services = (1..=30)
            .map(|i| service(&format!("s{i}"), &[ip(i)]))
            .collect();
        let plan = plan(&c, &all_live(), Policy::default());
        let mut per_node = BTreeMap::new();
        for node in all_live() {
            per_node.insert(node.clone(), plan.owned_by(&node).len());
        }
        assert_eq!(per_node.values().sum::<usize>(), 30, "each IP exactly once");
        assert!(
            per_node.values().all(|n| *n >= 3),
            "owners spread: {per_node:?}"
        );
    }
}
