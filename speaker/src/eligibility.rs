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
//!   `externalTrafficPolicy: Local` one of them is on this node;
//! - the node can answer for the IPs ([`crate::reachability`]): it has one
//!   of the interfaces the advertisement selects and, unless the
//!   advertisement disables the subnet check, one of them is on a subnet
//!   containing each IP, as its speaker's SpeakerStatus publishes.
//!
//! # Preferred nodes
//!
//! An advertisement's `preferredNodes` give a node a preference: the sum of
//! the weights of the entries matching its labels (the highest such sum
//! among the advertisements that make it a candidate). Only the candidates
//! with the highest preference go on to the election below, so an eligible
//! preferred node always wins, and the fallback among equals is the usual
//! one, identical on every speaker.
//!
//! Only addresses of our pools are ever announced: an IP that is not inside
//! the pool the Service's allocation annotation names (or, without the
//! annotation, inside any pool) is refused with [`Reason::NotInPool`], so an
//! address written by another controller, left by a migration or mistyped
//! (the LAN gateway, a node's own address) is never claimed.
//!
//! # Who among the candidates
//!
//! Ownership is sticky: a unit stays with the node that announces it as long
//! as that node remains a candidate. The announcing node is known to every
//! speaker through the unit's ServiceL2Status ([`Claim`]): the node and its
//! membership *incarnation* when it took over. A claim counts only while the
//! same incarnation of that node is alive; a speaker that restarted or was
//! declared down by its peers comes back as a new incarnation, so its old
//! claims are stale and it is ranked behind every other candidate for those
//! units. That is what stops ownership from ping-ponging back to a node that
//! stalled for a moment: the successor keeps the IP. Units without a valid
//! claim go to the rendezvous winner among the candidates ([`owner`]).
//!
//! Services sharing an IP form one unit; its candidates are the nodes that are
//! candidates for every Service in it, so a shared IP is never announced from a
//! node that would drop one of its Services' traffic.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use ferrolb_address::IpRange;

use crate::election::{ElectionKey, NodeName, election_units, owner};
pub use crate::interfaces::{InterfaceSelection, NodeInterface};
use crate::reachability::{Unreachable, node_address_interface, reach};
use crate::selector::{Labels, any_matches, matches};

/// A speaker's incarnation in the membership: it changes when the speaker
/// restarts or rejoins after its peers declared it down.
pub type Incarnation = u64;

/// The speakers alive in the membership, each with its current incarnation.
pub type Live = BTreeMap<NodeName, Incarnation>;

/// A node's claim to announce a Service's IPs, as its ServiceL2Status says.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Claim {
    /// The announcing node.
    pub node: NodeName,
    /// Its incarnation when it took over.
    pub incarnation: Incarnation,
}

impl Claim {
    /// Whether this claim was made by the incarnation of its node alive now.
    #[must_use]
    pub fn is_current(&self, live: &Live) -> bool {
        live.get(&self.node) == Some(&self.incarnation)
    }

    /// Whether an earlier incarnation of a node alive now made this claim.
    #[must_use]
    pub fn is_stale(&self, live: &Live) -> bool {
        live.get(&self.node)
            .is_some_and(|now| *now != self.incarnation)
    }
}

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
    /// Who announces the Service's IPs now, from its ServiceL2Status.
    pub claim: Option<Claim>,
}

/// A Node as eligibility sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeView {
    /// The node's labels.
    pub labels: Labels,
    /// Whether the `NetworkUnavailable` condition is True.
    pub network_unavailable: bool,
    /// The node's InternalIP, for `nodeAddressInterface`.
    pub internal_ip: Option<IpAddr>,
    /// The interfaces its speaker publishes (SpeakerStatus
    /// `interfaceAddresses`); `None` when it publishes none (see
    /// [`crate::reachability`]).
    pub interfaces: Option<Vec<NodeInterface>>,
}

impl NodeView {
    /// The published interface holding the node's InternalIP.
    fn address_interface(&self) -> Option<&str> {
        node_address_interface(self.interfaces.as_deref(), self.internal_ip)
    }
}

/// A weighted node preference of an advertisement (`spec.preferredNodes`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Preference {
    /// Added to the preference of the nodes `selector` matches.
    pub weight: u32,
    /// The nodes preferred.
    pub selector: LabelSelector,
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
    /// `spec.interfaces` (names or patterns); empty means every eligible
    /// interface, unless `node_address_interface`.
    pub interfaces: Vec<String>,
    /// `spec.nodeAddressInterface`: also the interface holding the node's
    /// InternalIP.
    pub node_address_interface: bool,
    /// `spec.subnetCheck` is `Disabled`: any subnet will do.
    pub subnet_check_disabled: bool,
    /// `spec.preferredNodes`.
    pub preferred: Vec<Preference>,
}

/// An IPAddressPool as eligibility sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PoolView {
    /// The pool's labels, for `ipAddressPoolSelectors`.
    pub labels: Labels,
    /// The pool's addresses (entries that do not parse are left out: the
    /// controller reports them in the pool's status).
    pub addresses: Vec<IpRange>,
}

impl PoolView {
    /// Whether `ip` is one of the pool's addresses.
    #[must_use]
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.addresses.iter().any(|range| range.contains(ip))
    }
}

impl AdvertisementView {
    fn covers_pool(&self, pool: Option<&str>, pools: &BTreeMap<String, PoolView>) -> bool {
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
        let labels = pools.get(pool).map_or(&no_labels, |p| &p.labels);
        // Unlike the other lists, an empty pool-selector list selects no
        // extra pool: `ipAddressPools` alone already restricts.
        !self.pool_selectors.is_empty() && any_matches(&self.pool_selectors, labels)
    }

    /// The interfaces this advertisement selects on `node`: by name or
    /// pattern, and the one holding its InternalIP when asked for (known
    /// once its speaker published its interfaces).
    fn interface_selection(&self, node: &NodeView) -> InterfaceSelection {
        let mut names: BTreeSet<String> = self.interfaces.iter().cloned().collect();
        if self.node_address_interface {
            names.extend(node.address_interface().map(str::to_owned));
        } else if names.is_empty() {
            return InterfaceSelection::All;
        }
        InterfaceSelection::Only(names)
    }

    /// The preference this advertisement gives a node with `labels`.
    fn preference(&self, labels: &Labels) -> u32 {
        self.preferred
            .iter()
            .filter(|p| matches(&p.selector, labels))
            .map(|p| p.weight)
            .fold(0, u32::saturating_add)
    }
}

/// Everything eligibility reads from the API, as plain data.
#[derive(Debug, Clone, Default)]
pub struct Cluster {
    /// LoadBalancer Services with IPs in their status.
    pub services: Vec<ServiceView>,
    /// Nodes by name.
    pub nodes: BTreeMap<String, NodeView>,
    /// Pools by name: their labels (for `ipAddressPoolSelectors`) and addresses.
    pub pools: BTreeMap<String, PoolView>,
    /// Every L2Advertisement.
    pub advertisements: Vec<AdvertisementView>,
}

/// Choices made by flags rather than by API objects.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Policy {
    /// Announce from nodes labelled [`EXCLUDE_LABEL`] too.
    pub ignore_exclude_label: bool,
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
    /// An IP is not inside the Service's pool (or any pool): FerroLB did
    /// not allocate it and never claims it on the LAN.
    NotInPool,
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
            Reason::NotInPool => "NotInPool",
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
    pub interfaces: InterfaceSelection,
}

/// A node that may announce a Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The interfaces it would announce on.
    pub interfaces: InterfaceSelection,
    /// Its preference (`preferredNodes`); higher wins.
    pub preference: u32,
}

/// The candidates of one Service, by node.
pub type Candidates = BTreeMap<NodeName, Candidate>;

/// How many nodes a refusal's message names before it counts the rest.
const NAMED_IN_MESSAGE: usize = 5;

/// The nodes that may announce `service`, or why there are none.
pub fn candidates(
    service: &ServiceView,
    cluster: &Cluster,
    live: &Live,
    policy: Policy,
) -> Result<Candidates, Refusal> {
    let pool = service_pool(service, cluster)?;
    let mut advertisements: Vec<&AdvertisementView> = cluster
        .advertisements
        .iter()
        .filter(|ad| ad.covers_pool(pool, &cluster.pools))
        .filter(|ad| any_matches(&ad.service_selectors, &service.labels))
        .collect();
    // By name, not in the caches' order, which may differ between
    // speakers: the refusal messages must be the same everywhere.
    advertisements.sort_by(|a, b| a.name.cmp(&b.name));
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
    // Nodes selected but unable to answer for the IPs, and why.
    let mut unreachable: Vec<(&str, Unreachable)> = Vec::new();
    for (name, node) in &cluster.nodes {
        if !policy.ignore_exclude_label && node.labels.contains_key(EXCLUDE_LABEL) {
            continue;
        }
        if node.network_unavailable {
            continue;
        }
        let node_name = NodeName::new(name.as_str());
        if !live.contains_key(&node_name) {
            continue;
        }
        // Why the first advertisement selecting the node (by name) cannot
        // use it, in case none can.
        let mut why = None;
        let mut candidate: Option<Candidate> = None;
        for ad in advertisements
            .iter()
            .filter(|ad| any_matches(&ad.node_selectors, &node.labels))
        {
            let selection = ad.interface_selection(node);
            match reach(
                node.interfaces.as_deref(),
                &selection,
                &service.ips,
                !ad.subnet_check_disabled,
            ) {
                Ok(interfaces) => {
                    let preference = ad.preference(&node.labels);
                    candidate = Some(match candidate {
                        None => Candidate {
                            interfaces,
                            preference,
                        },
                        Some(c) => Candidate {
                            interfaces: c.interfaces.union(interfaces),
                            preference: c.preference.max(preference),
                        },
                    });
                }
                Err(unreachable) => why = why.or(Some(unreachable)),
            }
        }
        let Some(candidate) = candidate else {
            if let Some(why) = why {
                unreachable.push((name.as_str(), why));
            }
            continue;
        };
        selected_live += 1;
        if service.traffic_policy == TrafficPolicy::Local && !service.endpoint_nodes.contains(name)
        {
            continue;
        }
        found.insert(node_name, candidate);
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
    if !unreachable.is_empty() {
        return Err(unreachable_refusal(&names, &unreachable));
    }
    Err(Refusal {
        reason: Reason::NoEligibleNode,
        message: format!(
            "no node selected by L2Advertisement {} has a live speaker, is free of the {EXCLUDE_LABEL} label and has its network available",
            names.join(", ")
        ),
    })
}

/// The refusal when every selected node is unable to answer for the IPs,
/// naming the first few and why.
fn unreachable_refusal(advertisements: &[&str], unreachable: &[(&str, Unreachable)]) -> Refusal {
    let mut reasons: Vec<String> = unreachable
        .iter()
        .take(NAMED_IN_MESSAGE)
        .map(|(node, why)| format!("{node} {why}"))
        .collect();
    if unreachable.len() > NAMED_IN_MESSAGE {
        reasons.push(format!(
            "{} more nodes likewise",
            unreachable.len() - NAMED_IN_MESSAGE
        ));
    }
    let off_subnet = unreachable
        .iter()
        .any(|(_, why)| matches!(why, Unreachable::OffSubnet { .. }));
    let hint = if off_subnet {
        "; put the IPs in a pool on the nodes' subnets, or set subnetCheck: Disabled on the L2Advertisement if they are deliberately outside every node subnet and routed to the segment"
    } else {
        "; name interfaces the nodes have (patterns such as eth0.* work), or select other nodes"
    };
    Refusal {
        reason: Reason::NoEligibleNode,
        message: format!(
            "no node selected by L2Advertisement {} can answer for these IPs: {}{hint}",
            advertisements.join(", "),
            reasons.join("; "),
        ),
    }
}

/// The pool a Service's IPs belong to: the one its allocation annotation
/// names, or without the annotation the pool that holds every IP. Refused
/// when an IP lies outside it: the address is not ours to announce.
fn service_pool<'a>(
    service: &'a ServiceView,
    cluster: &'a Cluster,
) -> Result<Option<&'a str>, Refusal> {
    let inside = |pool: &PoolView| service.ips.iter().all(|ip| pool.contains(*ip));
    let outside = |what: String| {
        let ips: Vec<String> = service.ips.iter().map(ToString::to_string).collect();
        Refusal {
            reason: Reason::NotInPool,
            message: format!(
                "{} {} not inside {what}; FerroLB announces only addresses of its IPAddressPools, so it will not claim an address another controller or a typo put in the Service's status",
                ips.join(", "),
                if ips.len() == 1 { "is" } else { "are" },
            ),
        }
    };
    match service.pool.as_deref() {
        Some(name) => match cluster.pools.get(name) {
            Some(pool) if inside(pool) => Ok(Some(name)),
            Some(_) => Err(outside(format!(
                "IPAddressPool {name}, which the Service's allocation annotation names"
            ))),
            None => Err(outside(format!(
                "IPAddressPool {name} (it does not exist), which the Service's allocation annotation names"
            ))),
        },
        None => cluster
            .pools
            .iter()
            .find(|(_, pool)| inside(pool))
            .map(|(name, _)| Some(name.as_str()))
            .ok_or_else(|| outside("any IPAddressPool".to_owned())),
    }
}

/// The interfaces the L2Advertisements selecting `node` name explicitly
/// (`spec.interfaces`, names or patterns, and the interface holding the
/// node's InternalIP for `nodeAddressInterface`). The speaker may announce
/// on them even when their names match a default exclusion (see
/// [`crate::interfaces`]). Empty when the node is unknown or no
/// advertisement selecting it names one.
#[must_use]
pub fn named_interfaces(cluster: &Cluster, node: &str) -> BTreeSet<String> {
    let Some(node) = cluster.nodes.get(node) else {
        return BTreeSet::new();
    };
    let mut names: BTreeSet<String> = cluster
        .advertisements
        .iter()
        .filter(|ad| any_matches(&ad.node_selectors, &node.labels))
        .flat_map(|ad| ad.interfaces.iter().cloned())
        .collect();
    let address_interface = cluster
        .advertisements
        .iter()
        .any(|ad| ad.node_address_interface && any_matches(&ad.node_selectors, &node.labels));
    if address_interface {
        names.extend(node.address_interface().map(str::to_owned));
    }
    names
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
    pub fn owned_by(&self, node: &NodeName) -> BTreeMap<IpAddr, InterfaceSelection> {
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

/// Decides the owner of every unit. `live` holds the nodes whose speakers
/// are alive in the membership, this node's included, with their
/// incarnations; `own_claims` are units this node announces now, which
/// count as its claims until its ServiceL2Status write shows up in the
/// caches (see the module documentation).
#[must_use]
pub fn plan(cluster: &Cluster, live: &Live, policy: Policy) -> Plan {
    plan_with_own_claims(cluster, live, policy, None)
}

/// [`plan`], with this node's own current claims added: `own` is the node,
/// its incarnation and the IPs it announces now.
#[must_use]
pub fn plan_with_own_claims(
    cluster: &Cluster,
    live: &Live,
    policy: Policy,
    own: Option<(&Claim, &BTreeSet<IpAddr>)>,
) -> Plan {
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
        let claims = Claims {
            published: members.iter().filter_map(|s| s.claim.clone()).collect(),
            own: own
                .filter(|(_, ips)| key.ips().iter().any(|ip| ips.contains(ip)))
                .map(|(claim, _)| claim.clone()),
        };
        let outcome = unit_outcome(&key, &members, cluster, live, policy, &claims);
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
    live: &Live,
    policy: Policy,
    claims: &Claims,
) -> Result<Owner, Refusal> {
    let mut common: Option<Candidates> = None;
    for service in members {
        let mine = candidates(service, cluster, live, policy)?;
        common = Some(match common {
            None => mine,
            Some(previous) => previous
                .into_iter()
                .filter_map(|(node, a)| {
                    mine.get(&node).map(|b| {
                        let merged = Candidate {
                            interfaces: a.interfaces.union(b.interfaces.clone()),
                            preference: a.preference.max(b.preference),
                        };
                        (node, merged)
                    })
                })
                .collect(),
        });
    }
    let common = most_preferred(common.unwrap_or_default());
    let names = ranked_candidates(&common, live, claims);
    match owner(key, &names) {
        Some(node) => {
            let interfaces = common
                .get(node)
                .map_or(InterfaceSelection::All, |c| c.interfaces.clone());
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

/// The candidates with the highest preference: an eligible preferred node
/// always wins over the others.
fn most_preferred(candidates: Candidates) -> Candidates {
    let top = candidates.values().map(|c| c.preference).max();
    candidates
        .into_iter()
        .filter(|(_, c)| Some(c.preference) == top)
        .collect()
}

/// The claims on one unit.
#[derive(Debug, Default)]
struct Claims {
    /// From its Services' ServiceL2Status: what every speaker sees.
    published: BTreeSet<Claim>,
    /// This speaker's, when it announces the unit now: it counts only while
    /// no published claim holds, to bridge the time until its own status
    /// write is seen (others cannot see it, so it must never outrank what
    /// they see).
    own: Option<Claim>,
}

/// The candidates the owner is chosen from: the current published
/// claimants among them if any (ownership is sticky), else this speaker
/// if it announces the unit now, else every candidate but those whose
/// earlier incarnation claimed the unit (a node that restarted or was
/// declared down does not take back what a successor now announces), else
/// every candidate.
fn ranked_candidates(common: &Candidates, live: &Live, claims: &Claims) -> Vec<NodeName> {
    let current: Vec<NodeName> = claims
        .published
        .iter()
        .filter(|c| c.is_current(live) && common.contains_key(&c.node))
        .map(|c| c.node.clone())
        .collect();
    if !current.is_empty() {
        return current;
    }
    if let Some(own) = &claims.own
        && own.is_current(live)
        && common.contains_key(&own.node)
    {
        return vec![own.node.clone()];
    }
    let stale: BTreeSet<&NodeName> = claims
        .published
        .iter()
        .filter(|c| c.is_stale(live))
        .map(|c| &c.node)
        .collect();
    let fresh: Vec<NodeName> = common
        .keys()
        .filter(|n| !stale.contains(n))
        .cloned()
        .collect();
    if fresh.is_empty() {
        common.keys().cloned().collect()
    } else {
        fresh
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
            claim: None,
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
            pools: [(
                "lan".to_owned(),
                PoolView {
                    labels: labels(&[("site", "a")]),
                    addresses: vec![ferrolb_address::parse_entry("198.18.0.0/24").unwrap()],
                },
            )]
            .into(),
            advertisements: vec![AdvertisementView {
                name: "lan".to_owned(),
                ..AdvertisementView::default()
            }],
        }
    }

    fn all_live() -> Live {
        ["node-1", "node-2", "node-3"]
            .iter()
            .map(|n| (NodeName::from(*n), 1))
            .collect()
    }

    fn names(c: &Candidates) -> Vec<&str> {
        c.keys().map(NodeName::as_str).collect()
    }

    /// One table row: a change to the default cluster and the expected result.
    struct Case {
        name: &'static str,
        change: fn(&mut Cluster, &mut Live, &mut Policy),
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
                name: "no pool annotation: the pool holding the IP, named by the advertisement",
                change: |c, _, _| {
                    c.services[0].pool = None;
                    c.advertisements[0].pools = vec!["lan".to_owned()];
                },
                want: Ok(vec!["node-1", "node-2", "node-3"]),
            },
            Case {
                name: "no pool annotation: the pool holding the IP, not advertised",
                change: |c, _, _| {
                    c.services[0].pool = None;
                    c.advertisements[0].pools = vec!["other".to_owned()];
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
        let only = |names: &[&str]| {
            InterfaceSelection::Only(names.iter().map(|n| (*n).to_owned()).collect())
        };
        assert_eq!(got[&NodeName::from("node-1")].interfaces, only(&["eth0"]));
        assert_eq!(
            got[&NodeName::from("node-2")].interfaces,
            only(&["eth0", "eth1"])
        );
        c.advertisements.push(AdvertisementView {
            name: "everywhere".to_owned(),
            ..AdvertisementView::default()
        });
        let got = candidates(&c.services[0], &c, &all_live(), Policy::default()).unwrap();
        // Every default interface, and eth0 even were it excluded by default.
        let all_and = |names: &[&str]| {
            InterfaceSelection::AllAnd(names.iter().map(|n| (*n).to_owned()).collect())
        };
        assert_eq!(
            got[&NodeName::from("node-1")].interfaces,
            all_and(&["eth0"])
        );
        assert_eq!(
            got[&NodeName::from("node-2")].interfaces,
            all_and(&["eth0", "eth1"])
        );
    }

    #[test]
    fn union_of_selections() {
        let set = |names: &[&str]| -> BTreeSet<String> {
            names.iter().map(|n| (*n).to_owned()).collect()
        };
        use InterfaceSelection::{All, AllAnd, Only};
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
    fn only_addresses_of_our_pools_are_announced() {
        let refused = |c: &Cluster| {
            let plan = plan(c, &all_live(), Policy::default());
            plan.units[0].outcome.as_ref().err().map(|r| r.reason)
        };
        let mut c = cluster();
        assert_eq!(refused(&c), None);
        // Another controller wrote the LAN gateway into the status.
        c.services[0].ips = vec![IpAddr::V4(Ipv4Addr::new(198, 19, 0, 1))];
        assert_eq!(refused(&c), Some(Reason::NotInPool));
        // Without an allocation annotation: some pool must hold the IP.
        c.services[0].pool = None;
        assert_eq!(refused(&c), Some(Reason::NotInPool));
        c.services[0].ips = vec![ip(200)];
        assert_eq!(refused(&c), None);
        // The annotation names a pool that does not exist.
        c.services[0].pool = Some("gone".to_owned());
        assert_eq!(refused(&c), Some(Reason::NotInPool));
        // One IP of a dual-stack Service outside the pool refuses both.
        let mut c = cluster();
        c.services[0].ips = vec![ip(200), "2001:db8::1".parse().unwrap()];
        assert_eq!(refused(&c), Some(Reason::NotInPool));
    }

    fn claim(node: &str, incarnation: u64) -> Option<Claim> {
        Some(Claim {
            node: NodeName::from(node),
            incarnation,
        })
    }

    /// A node of [`cluster`] other than `node`.
    fn another_node(node: &str) -> &'static str {
        ["node-1", "node-2", "node-3"]
            .into_iter()
            .find(|n| *n != node)
            .unwrap()
    }

    fn owner_of(c: &Cluster, live: &Live) -> String {
        let plan = plan(c, live, Policy::default());
        plan.units[0].outcome.as_ref().unwrap().node.to_string()
    }

    #[test]
    fn ownership_stays_with_the_current_claimant() {
        let mut c = cluster();
        let live = all_live();
        let winner = owner_of(&c, &live);
        let other = another_node(&winner);
        // A current claim by another candidate keeps the IP there.
        c.services[0].claim = claim(other, 1);
        assert_eq!(owner_of(&c, &live), other);
        // A claim by a node that is gone counts for nothing.
        let mut without = live.clone();
        without.remove(&NodeName::from(other));
        assert_eq!(owner_of(&c, &without), owner_of(&cluster(), &without));
        // A claimant that is no candidate any more (not selected) loses it.
        c.advertisements[0].node_selectors = vec![select(&[("l2", "yes")])];
        for node in ["node-1", "node-2", "node-3"]
            .into_iter()
            .filter(|n| *n != other)
        {
            c.nodes.get_mut(node).unwrap().labels = labels(&[("l2", "yes")]);
        }
        assert_ne!(owner_of(&c, &live), other);
    }

    #[test]
    fn an_earlier_incarnation_claim_ranks_its_node_last() {
        let mut c = cluster();
        let live = all_live();
        let winner = owner_of(&c, &live);
        // The winner's previous incarnation claimed the unit: it restarted
        // or was declared down, and a successor took over meanwhile.
        c.services[0].claim = claim(&winner, 0);
        let successor = owner_of(&c, &live);
        assert_ne!(successor, winner);
        let mut without = live.clone();
        without.remove(&NodeName::from(winner.as_str()));
        assert_eq!(successor, owner_of(&cluster(), &without), "the runner-up");
        // The only candidate takes it whatever its claims.
        c.services[0].traffic_policy = TrafficPolicy::Local;
        c.services[0].endpoint_nodes = [winner.clone()].into();
        assert_eq!(owner_of(&c, &live), winner);
    }

    #[test]
    fn own_claims_count_until_the_status_lands() {
        let c = cluster();
        let live = all_live();
        let winner = owner_of(&c, &live);
        let other = another_node(&winner);
        let mine = Claim {
            node: NodeName::from(other),
            incarnation: 1,
        };
        let ips: BTreeSet<IpAddr> = [ip(200)].into();
        let plan = plan_with_own_claims(&c, &live, Policy::default(), Some((&mine, &ips)));
        assert_eq!(plan.units[0].outcome.as_ref().unwrap().node.as_str(), other);
        // Two current claims (ours, and another node's in the API): the
        // rendezvous order decides between them, the same on every speaker.
        let mut c = c;
        c.services[0].claim = claim(&winner, 1);
        let plan = plan_with_own_claims(&c, &live, Policy::default(), Some((&mine, &ips)));
        assert_eq!(
            plan.units[0].outcome.as_ref().unwrap().node.as_str(),
            winner
        );
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
        for node in all_live().into_keys() {
            per_node.insert(node.clone(), plan.owned_by(&node).len());
        }
        assert_eq!(per_node.values().sum::<usize>(), 30, "each IP exactly once");
        assert!(
            per_node.values().all(|n| *n >= 3),
            "owners spread: {per_node:?}"
        );
    }

    fn published(pairs: &[(&str, &[&str])]) -> Option<Vec<NodeInterface>> {
        Some(
            pairs
                .iter()
                .map(|(name, addresses)| NodeInterface {
                    name: (*name).to_owned(),
                    addresses: addresses.iter().map(|a| a.parse().unwrap()).collect(),
                    usage: crate::interfaces::Usage::Default,
                })
                .collect(),
        )
    }

    /// node-1 on the Service's subnet, node-2 on another one, node-3's
    /// speaker publishes nothing (an older version).
    fn two_subnets() -> Cluster {
        let mut c = cluster();
        let n1 = c.nodes.get_mut("node-1").unwrap();
        n1.interfaces = published(&[("eth0", &["198.18.0.11/24"]), ("eth1", &["198.18.7.11/24"])]);
        n1.internal_ip = Some("198.18.7.11".parse().unwrap());
        c.nodes.get_mut("node-2").unwrap().interfaces =
            published(&[("eth0", &["198.18.1.12/24"]), ("eth9", &[])]);
        c
    }

    fn candidates_of(c: &Cluster) -> Result<Vec<String>, Refusal> {
        candidates(&c.services[0], c, &all_live(), Policy::default())
            .map(|found| names(&found).into_iter().map(str::to_owned).collect())
    }

    #[test]
    fn eligibility_knows_the_network() {
        let mut c = two_subnets();
        assert_eq!(
            candidates_of(&c).unwrap(),
            ["node-1", "node-3"],
            "node-2 is on another subnet; node-3 published nothing"
        );
        let found = candidates(&c.services[0], &c, &all_live(), Policy::default()).unwrap();
        assert_eq!(
            found[&NodeName::from("node-1")].interfaces,
            InterfaceSelection::Only(["eth0".to_owned()].into()),
            "the owner announces on the interface on the IP's subnet only"
        );
        assert_eq!(
            found[&NodeName::from("node-3")].interfaces,
            InterfaceSelection::All
        );

        c.advertisements[0].subnet_check_disabled = true;
        assert_eq!(candidates_of(&c).unwrap(), ["node-1", "node-2", "node-3"]);

        // A named interface only node-2 has; node-1 is known to lack it.
        c.advertisements[0].interfaces = vec!["eth9".to_owned()];
        assert_eq!(candidates_of(&c).unwrap(), ["node-2", "node-3"]);

        // Nobody able to: the refusal names the nodes and why.
        c.nodes.get_mut("node-3").unwrap().interfaces = published(&[]);
        c.advertisements[0].interfaces = vec!["eth7".to_owned()];
        let refusal = candidates_of(&c).unwrap_err();
        assert_eq!(refusal.reason, Reason::NoEligibleNode);
        assert_eq!(
            refusal.message,
            "no node selected by L2Advertisement lan can answer for these IPs: node-1 has none of the interfaces eth7; node-2 has none of the interfaces eth7; node-3 has none of the interfaces eth7; name interfaces the nodes have (patterns such as eth0.* work), or select other nodes"
        );

        let mut c = two_subnets();
        c.services[0].ips = vec!["198.18.5.200".parse().unwrap()];
        c.pools.get_mut("lan").unwrap().addresses =
            vec![ferrolb_address::parse_entry("198.18.5.0/24").unwrap()];
        c.nodes.get_mut("node-3").unwrap().interfaces = published(&[("eth0", &[])]);
        let refusal = candidates_of(&c).unwrap_err();
        assert_eq!(refusal.reason, Reason::NoEligibleNode);
        assert!(
            refusal.message.contains(
                "node-2 has no selected interface on a subnet containing 198.18.5.200 (it has eth0 198.18.1.12/24, eth9 without addresses)"
            ) && refusal.message.contains("subnetCheck: Disabled"),
            "{}",
            refusal.message
        );
    }

    #[test]
    fn the_interface_holding_the_node_address() {
        let mut c = two_subnets();
        c.services[0].ips = vec!["198.18.7.200".parse().unwrap()];
        c.pools.get_mut("lan").unwrap().addresses =
            vec![ferrolb_address::parse_entry("198.18.7.0/24").unwrap()];
        c.advertisements[0].node_address_interface = true;
        let found = candidates(&c.services[0], &c, &all_live(), Policy::default()).unwrap();
        assert_eq!(names(&found), ["node-1", "node-3"]);
        assert_eq!(
            found[&NodeName::from("node-1")].interfaces,
            InterfaceSelection::Only(["eth1".to_owned()].into())
        );
        assert_eq!(
            named_interfaces(&c, "node-1"),
            BTreeSet::from(["eth1".to_owned()]),
            "the data plane opens it even were it excluded by name"
        );
        // node-2's InternalIP is on none of its published interfaces.
        c.advertisements[0].subnet_check_disabled = true;
        let refusal_or = candidates(&c.services[0], &c, &all_live(), Policy::default()).unwrap();
        assert!(!refusal_or.contains_key(&NodeName::from("node-2")));
    }

    fn prefer(weight: u32, pairs: &[(&str, &str)]) -> Preference {
        Preference {
            weight,
            selector: select(pairs),
        }
    }

    #[test]
    fn an_eligible_preferred_node_always_wins() {
        let mut c = cluster();
        c.services = (1..=20)
            .map(|i| service(&format!("s{i}"), &[ip(i)]))
            .collect();
        c.nodes.get_mut("node-2").unwrap().labels = labels(&[("rack", "a"), ("ssd", "yes")]);
        c.nodes.get_mut("node-3").unwrap().labels = labels(&[("rack", "a")]);
        c.advertisements[0].preferred =
            vec![prefer(10, &[("rack", "a")]), prefer(5, &[("ssd", "yes")])];
        let live = all_live();
        let plan = plan(&c, &live, Policy::default());
        assert_eq!(
            plan.owned_by(&NodeName::from("node-2")).len(),
            20,
            "10 + 5 beats 10"
        );
        // Without node-2: node-3 (10) beats node-1 (0) everywhere.
        let mut without = live.clone();
        without.remove(&NodeName::from("node-2"));
        let fallback = super::plan(&c, &without, Policy::default());
        assert_eq!(fallback.owned_by(&NodeName::from("node-3")).len(), 20);
        // Equal preferences: the plain election among them.
        c.advertisements[0].preferred = vec![prefer(10, &[("rack", "a")])];
        let tied = super::plan(&c, &live, Policy::default());
        let mut plain = c.clone();
        plain.nodes.remove("node-1");
        let expected = super::plan(&plain, &live, Policy::default());
        for (a, b) in tied.units.iter().zip(&expected.units) {
            assert_eq!(
                a.outcome.as_ref().unwrap().node,
                b.outcome.as_ref().unwrap().node
            );
        }
        // A preferred node that cannot answer for the IP does not win.
        c.advertisements[0].preferred = vec![prefer(10, &[("ssd", "yes")])];
        c.nodes.get_mut("node-2").unwrap().interfaces = published(&[("eth0", &["198.18.9.2/24"])]);
        let plan = super::plan(&c, &live, Policy::default());
        assert!(plan.owned_by(&NodeName::from("node-2")).is_empty());
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        const NODES: [&str; 4] = ["node-1", "node-2", "node-3", "node-4"];

        /// A node: its rack label and, if its speaker publishes them, its
        /// interfaces, each on one of four /24s (or none).
        fn node() -> impl Strategy<Value = NodeView> {
            let iface = (
                prop_oneof![Just("eth0"), Just("eth1"), Just("bond0.100")],
                prop::option::of(0u8..4),
            )
                .prop_map(|(name, net)| NodeInterface {
                    name: name.to_owned(),
                    addresses: net
                        .map(|n| format!("198.18.{n}.{}/24", 10 + n).parse().unwrap())
                        .into_iter()
                        .collect(),
                    usage: crate::interfaces::Usage::Default,
                });
            (
                prop_oneof![Just("a"), Just("b"), Just("c")],
                prop::option::weighted(0.8, prop::collection::vec(iface, 0..3)),
            )
                .prop_map(|(rack, interfaces)| NodeView {
                    labels: labels(&[("rack", rack)]),
                    interfaces,
                    ..NodeView::default()
                })
        }

        fn advertisement() -> impl Strategy<Value = AdvertisementView> {
            (
                prop_oneof![
                    Just(vec![]),
                    Just(vec!["eth*".to_owned()]),
                    Just(vec!["bond0.100".to_owned()]),
                ],
                prop::bool::weighted(0.2),
                prop::collection::vec((1u32..=100, prop_oneof![Just("a"), Just("b")]), 0..3),
            )
                .prop_map(|(interfaces, disabled, preferred)| AdvertisementView {
                    name: "ad".to_owned(),
                    interfaces,
                    subnet_check_disabled: disabled,
                    preferred: preferred
                        .into_iter()
                        .map(|(weight, rack)| prefer(weight, &[("rack", rack)]))
                        .collect(),
                    ..AdvertisementView::default()
                })
        }

        fn arbitrary_cluster() -> impl Strategy<Value = Cluster> {
            (
                prop::collection::vec(node(), NODES.len()),
                prop::collection::vec(advertisement(), 1..3).prop_map(|mut ads| {
                    for (i, ad) in ads.iter_mut().enumerate() {
                        ad.name = format!("ad-{i}");
                    }
                    ads
                }),
                prop::collection::vec((0u8..4, 100u8..200), 1..12),
            )
                .prop_map(|(nodes, advertisements, ips)| {
                    let mut c = cluster();
                    c.nodes = NODES.iter().map(|n| (*n).to_owned()).zip(nodes).collect();
                    c.advertisements = advertisements;
                    c.pools.get_mut("lan").unwrap().addresses =
                        vec![ferrolb_address::parse_entry("198.18.0.0/22").unwrap()];
                    c.services = ips
                        .iter()
                        .enumerate()
                        .map(|(i, (net, host))| {
                            let ip = IpAddr::V4(Ipv4Addr::new(198, 18, *net, *host));
                            service(&format!("s{i}"), &[ip])
                        })
                        .collect();
                    c
                })
        }

        fn live() -> Live {
            NODES.iter().map(|n| (NodeName::from(*n), 1)).collect()
        }

        proptest! {
            /// Every speaker computes the plan from the same shared data,
            /// in whatever order its caches list the objects.
            #[test]
            fn all_speakers_agree(c in arbitrary_cluster()) {
                let mut reordered = c.clone();
                reordered.advertisements.reverse();
                reordered.services.reverse();
                prop_assert_eq!(plan(&c, &live(), Policy::default()), plan(&reordered, &live(), Policy::default()));
            }

            /// With every advertisement checking subnets, an owner that
            /// published its interfaces has, for every IP it wins, an
            /// interface it announces on whose subnet contains the IP.
            #[test]
            fn a_node_never_wins_an_ip_it_cannot_answer_for(c in arbitrary_cluster()) {
                let mut c = c;
                for ad in &mut c.advertisements {
                    ad.subnet_check_disabled = false;
                }
                for unit in plan(&c, &live(), Policy::default()).units {
                    let Ok(owner) = &unit.outcome else { continue };
                    let node = &c.nodes[owner.node.as_str()];
                    let Some(published) = &node.interfaces else { continue };
                    for ip in unit.key.ips() {
                        prop_assert!(
                            published.iter().any(|i| owner.interfaces.includes(&i.name, i.usage) && i.on_subnet(*ip)),
                            "{} won {ip} with {:?}", owner.node, published
                        );
                    }
                }
            }

            /// The owner has the highest preference among the candidates,
            /// and losing a node that does not own a unit never moves it.
            #[test]
            fn preferred_nodes_win_and_the_fallback_is_deterministic(c in arbitrary_cluster(), gone in 0usize..4) {
                let all = live();
                let plan_all = plan(&c, &all, Policy::default());
                for service in &c.services {
                    let Some(unit) = plan_all.unit_of(&service.id) else { continue };
                    let Ok(owner) = &unit.outcome else { continue };
                    if unit.services.len() > 1 {
                        continue;
                    }
                    let found = candidates(service, &c, &all, Policy::default()).unwrap();
                    let top = found.values().map(|f| f.preference).max().unwrap();
                    prop_assert_eq!(found[&owner.node].preference, top);
                }
                let mut fewer = all.clone();
                let gone = NodeName::from(NODES[gone]);
                fewer.remove(&gone);
                let plan_fewer = plan(&c, &fewer, Policy::default());
                for (before, after) in plan_all.units.iter().zip(&plan_fewer.units) {
                    if let (Ok(before), Ok(after)) = (&before.outcome, &after.outcome)
                        && before.node != gone
                    {
                        prop_assert_eq!(&before.node, &after.node);
                    }
                }
            }
        }
    }
}
