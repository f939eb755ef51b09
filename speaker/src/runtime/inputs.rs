//! Kubernetes objects turned into the plain data eligibility reads.
//!
//! Pure functions from the watch caches' contents to [`Cluster`]: which
//! Services are ours, their IPs and pool, which endpoints count as ready,
//! whether a node's network is unavailable.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash as _, Hasher as _};
use std::net::{IpAddr, SocketAddr};

use ferrolb_crds::annotations::{IP_ALLOCATED_FROM_POOL, spellings};
use ferrolb_crds::{
    IPAddressPool, InterfaceAddresses, L2Advertisement, ServiceL2Status, SpeakerStatus,
    SpeakerStatusStatus, SubnetCheck,
};
use ferrolb_speaker::election::NodeName;
use ferrolb_speaker::eligibility::{
    AdvertisementView, Claim, Cluster, NodeInterface, NodeView, PoolView, Preference, ServiceId,
    ServiceView, TrafficPolicy,
};
use ferrolb_speaker::interfaces::Usage;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The label that ties an EndpointSlice to its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Whether `service` is a LoadBalancer this speaker handles: no class, or
/// the class it was told to handle.
pub(crate) fn is_ours(service: &Service, class: Option<&str>) -> bool {
    let Some(spec) = &service.spec else {
        return false;
    };
    spec.type_.as_deref() == Some("LoadBalancer") && spec.load_balancer_class.as_deref() == class
}

/// Whether `pool` belongs to this speaker's installation: its
/// `spec.loadBalancerClass` is the class the speaker handles (both unset for
/// the installation without a class). Another installation's pools do not
/// exist for this one: an IP in them is in no pool.
pub(crate) fn is_our_pool(pool: &IPAddressPool, class: Option<&str>) -> bool {
    pool.spec.load_balancer_class.as_deref() == class
}

/// The IPs in a Service's `status.loadBalancer.ingress`.
pub(crate) fn service_ips(service: &Service) -> Vec<IpAddr> {
    service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|ingress| ingress.ip.as_deref())
        .filter_map(|ip| ip.parse().ok())
        .collect()
}

fn service_id(service: &Service) -> ServiceId {
    ServiceId::new(
        service.metadata.namespace.clone().unwrap_or_default(),
        service.metadata.name.clone().unwrap_or_default(),
    )
}

/// Ready or serving endpoints per Service: whether any, and on which nodes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Ready {
    any: bool,
    nodes: BTreeSet<String>,
}

/// Indexes EndpointSlices by Service. An endpoint counts when it is ready
/// (an absent condition means ready, as the API defines) or still serving
/// while terminating, so a rolling update does not withdraw the IP.
pub(crate) fn ready_endpoints<'a>(
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
) -> BTreeMap<ServiceId, Ready> {
    let mut out: BTreeMap<ServiceId, Ready> = BTreeMap::new();
    for slice in slices {
        let Some(service) = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
        else {
            continue;
        };
        let id = ServiceId::new(
            slice.metadata.namespace.clone().unwrap_or_default(),
            service.clone(),
        );
        let entry = out.entry(id).or_default();
        for endpoint in &slice.endpoints {
            let conditions = endpoint.conditions.as_ref();
            let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
            let serving = conditions.and_then(|c| c.serving).unwrap_or(false);
            if ready || serving {
                entry.any = true;
                if let Some(node) = &endpoint.node_name {
                    entry.nodes.insert(node.clone());
                }
            }
        }
    }
    out
}

fn pool_annotation(service: &Service) -> Option<String> {
    let annotations = service.metadata.annotations.as_ref()?;
    spellings(IP_ALLOCATED_FROM_POOL)
        .iter()
        .find_map(|key| annotations.get(key))
        .cloned()
}

/// The claims of the announcing nodes, by Service, from the ServiceL2Status
/// objects that name a node and its incarnation.
pub(crate) fn claims<'a>(
    statuses: impl IntoIterator<Item = &'a ServiceL2Status>,
) -> BTreeMap<ServiceId, Claim> {
    statuses
        .into_iter()
        .filter_map(|s| {
            let status = s.status.as_ref()?;
            let claim = Claim {
                node: NodeName::new(status.node.clone()?),
                incarnation: status.incarnation?,
            };
            let id = ServiceId::new(
                s.metadata.namespace.clone().unwrap_or_default(),
                s.metadata.name.clone()?,
            );
            Some((id, claim))
        })
        .collect()
}

/// The view of a pool: its labels and the addresses that parse.
pub(crate) fn pool_view(pool: &IPAddressPool) -> PoolView {
    PoolView {
        labels: pool.metadata.labels.clone().unwrap_or_default(),
        addresses: pool
            .spec
            .addresses
            .iter()
            .filter_map(|entry| ferrolb_address::parse_entry(&entry.0).ok())
            .collect(),
    }
}

/// The view of one of our Services.
pub(crate) fn service_view(service: &Service, ready: &BTreeMap<ServiceId, Ready>) -> ServiceView {
    let id = service_id(service);
    let endpoints = ready.get(&id).cloned().unwrap_or_default();
    let local = service
        .spec
        .as_ref()
        .and_then(|s| s.external_traffic_policy.as_deref())
        == Some("Local");
    ServiceView {
        ips: service_ips(service),
        pool: pool_annotation(service),
        labels: service.metadata.labels.clone().unwrap_or_default(),
        traffic_policy: if local {
            TrafficPolicy::Local
        } else {
            TrafficPolicy::Cluster
        },
        has_ready_endpoints: endpoints.any,
        endpoint_nodes: endpoints.nodes,
        claim: None,
        id,
    }
}

/// The view of a Node.
pub(crate) fn node_view(node: &Node) -> NodeView {
    let network_unavailable = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "NetworkUnavailable" && c.status == "True");
    NodeView {
        labels: node.metadata.labels.clone().unwrap_or_default(),
        network_unavailable,
        internal_ip: internal_ip(node),
        interfaces: None,
    }
}

/// The interfaces a speaker's status publishes, or `None` when it
/// publishes none (an older speaker). Entries that do not parse are left
/// out: a speaker of this version never writes them.
pub(crate) fn published_interfaces(status: &SpeakerStatus) -> Option<Vec<NodeInterface>> {
    let published = status.status.as_ref()?.interface_addresses.as_ref()?;
    Some(
        published
            .iter()
            .map(|i| NodeInterface {
                name: i.name.clone(),
                addresses: i.addresses.iter().filter_map(|a| a.parse().ok()).collect(),
                usage: if i.named_only {
                    Usage::Named
                } else {
                    Usage::Default
                },
            })
            .collect(),
    )
}

/// What a SpeakerStatus publishes of the interfaces `published`.
pub(crate) fn interface_addresses(published: &[NodeInterface]) -> Vec<InterfaceAddresses> {
    published
        .iter()
        .map(|i| InterfaceAddresses {
            name: i.name.clone(),
            addresses: i.addresses.iter().map(ToString::to_string).collect(),
            named_only: i.usage == Usage::Named,
        })
        .collect()
}

/// The view of an L2Advertisement.
pub(crate) fn advertisement_view(ad: &L2Advertisement) -> AdvertisementView {
    let selectors = |list: &[ferrolb_crds::Selector]| list.iter().map(|s| s.0.clone()).collect();
    AdvertisementView {
        name: ad.metadata.name.clone().unwrap_or_default(),
        pools: ad
            .spec
            .ip_address_pools
            .iter()
            .map(|p| p.0.clone())
            .collect(),
        pool_selectors: selectors(&ad.spec.ip_address_pool_selectors),
        node_selectors: selectors(&ad.spec.node_selectors),
        service_selectors: selectors(&ad.spec.service_selectors),
        interfaces: ad.spec.interfaces.iter().map(|i| i.0.clone()).collect(),
        node_address_interface: ad.spec.node_address_interface,
        subnet_check_disabled: ad.spec.subnet_check == SubnetCheck::Disabled,
        preferred: ad
            .spec
            .preferred_nodes
            .iter()
            .map(|p| Preference {
                weight: p.weight,
                selector: p.selector.0.clone(),
            })
            .collect(),
    }
}

/// Everything eligibility needs, from the caches' contents.
pub(crate) fn cluster<'a>(
    services: impl IntoIterator<Item = &'a Service>,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    nodes: impl IntoIterator<Item = &'a Node>,
    pools: impl IntoIterator<Item = &'a IPAddressPool>,
    advertisements: impl IntoIterator<Item = &'a L2Advertisement>,
    statuses: impl IntoIterator<Item = &'a ServiceL2Status>,
    class: Option<&str>,
) -> Cluster {
    let ready = ready_endpoints(slices);
    let mut claims = claims(statuses);
    Cluster {
        services: services
            .into_iter()
            .filter(|s| is_ours(s, class))
            .map(|s| {
                let mut view = service_view(s, &ready);
                view.claim = claims.remove(&view.id);
                view
            })
            .filter(|s| !s.ips.is_empty())
            .collect(),
        nodes: nodes
            .into_iter()
            .filter_map(|n| Some((n.metadata.name.clone()?, node_view(n))))
            .collect(),
        pools: pools
            .into_iter()
            .filter(|p| is_our_pool(p, class))
            .filter_map(|p| Some((p.metadata.name.clone()?, pool_view(p))))
            .collect(),
        advertisements: advertisements.into_iter().map(advertisement_view).collect(),
    }
}

/// Adds to the nodes of `cluster` the interfaces their speakers publish
/// (by `spec.nodeName`: with `--instance` a status is not named after its
/// node). Nodes whose speaker publishes none keep `None`.
pub(crate) fn add_published_interfaces<'a>(
    cluster: &mut Cluster,
    speakers: impl IntoIterator<Item = &'a SpeakerStatus>,
) {
    for speaker in speakers {
        let Some(node) = cluster.nodes.get_mut(&speaker.spec.node_name) else {
            continue;
        };
        if node.interfaces.is_none() {
            node.interfaces = published_interfaces(speaker);
        }
    }
}

/// What the speaker reads of a Node (its labels, whether its network is
/// unavailable, its InternalIP), hashed: equal when a change, such as a
/// heartbeat, does not matter to the election.
pub(crate) fn node_fingerprint(node: &Node) -> u64 {
    let view = node_view(node);
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    view.labels.hash(&mut hasher);
    view.network_unavailable.hash(&mut hasher);
    internal_ip(node).hash(&mut hasher);
    hasher.finish()
}

/// What the speaker reads of another speaker's status: the node, the
/// gossip address it is reached at (peer seeds), its readiness and the
/// interfaces it publishes (eligibility), hashed.
pub(crate) fn speaker_fingerprint(status: &SpeakerStatus) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    status.spec.node_name.hash(&mut hasher);
    let status = status.status.as_ref();
    status
        .and_then(|s| s.gossip_address.as_deref())
        .hash(&mut hasher);
    status.is_some_and(speaker_ready).hash(&mut hasher);
    status
        .and_then(|s| s.interface_addresses.as_ref())
        .map(|published| {
            published
                .iter()
                .map(|i| (&i.name, &i.addresses, i.named_only))
                .collect::<Vec<_>>()
        })
        .hash(&mut hasher);
    hasher.finish()
}

/// Whether a speaker's status says it is ready and reachable: a gossip
/// address and a Ready condition that is True.
pub(crate) fn speaker_ready(status: &SpeakerStatusStatus) -> bool {
    status.gossip_address.is_some()
        && status
            .conditions
            .iter()
            .any(|c| c.type_ == ferrolb_crds::conditions::READY && c.status == "True")
}

/// The gossip addresses published by the speakers of other nodes. A status
/// names its node in `spec.nodeName`: with `--instance` the object's name is
/// not the node's.
pub(crate) fn published_peers<'a>(
    statuses: impl IntoIterator<Item = &'a SpeakerStatus>,
    me: &str,
) -> Vec<SocketAddr> {
    statuses
        .into_iter()
        .filter(|s| s.spec.node_name != me)
        .filter_map(|s| s.status.as_ref()?.gossip_address.as_deref()?.parse().ok())
        .collect()
}

/// How many speakers of other nodes in `nodes` published a gossip address
/// and say they are ready (a speaker that shut down cleanly says it is not).
pub(crate) fn ready_peers<'a>(
    statuses: impl IntoIterator<Item = &'a SpeakerStatus>,
    me: &str,
    nodes: &BTreeSet<String>,
) -> usize {
    statuses
        .into_iter()
        .filter(|s| s.spec.node_name != me && nodes.contains(&s.spec.node_name))
        .filter(|s| s.status.as_ref().is_some_and(speaker_ready))
        .count()
}

/// A Node's first InternalIP.
pub(crate) fn internal_ip(node: &Node) -> Option<IpAddr> {
    node.status
        .as_ref()?
        .addresses
        .as_ref()?
        .iter()
        .filter(|a| a.type_ == "InternalIP")
        .find_map(|a| a.address.parse().ok())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn from<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn services_ips_pool_and_class() {
        let svc: Service = from(json!({
            "metadata": {"namespace": "default", "name": "web",
                "annotations": {"metallb.io/ip-allocated-from-pool": "lan"}},
            "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local"},
            "status": {"loadBalancer": {"ingress": [{"ip": "198.18.0.200"}, {"hostname": "x"}]}}
        }));
        assert!(is_ours(&svc, None));
        assert!(!is_ours(&svc, Some("ferrolb.io/l2")));
        let view = service_view(&svc, &BTreeMap::new());
        assert_eq!(view.ips, ["198.18.0.200".parse::<IpAddr>().unwrap()]);
        assert_eq!(view.pool.as_deref(), Some("lan"));
        assert_eq!(view.traffic_policy, TrafficPolicy::Local);
        assert!(!view.has_ready_endpoints);
        let cluster_ip: Service =
            from(json!({"metadata": {"name": "x"}, "spec": {"type": "ClusterIP"}}));
        assert!(!is_ours(&cluster_ip, None));
    }

    #[test]
    fn another_installations_pools_services_and_statuses_are_ignored() {
        let pool = |name: &str, class: Option<&str>| -> IPAddressPool {
            from(json!({
                "apiVersion": "ferrolb.io/v1beta1", "kind": "IPAddressPool",
                "metadata": {"name": name},
                "spec": {"addresses": ["198.18.0.200/30"], "loadBalancerClass": class},
            }))
        };
        let service = |name: &str, class: Option<&str>, ip: &str| -> Service {
            from(json!({
                "metadata": {"namespace": "default", "name": name},
                "spec": {"type": "LoadBalancer", "loadBalancerClass": class},
                "status": {"loadBalancer": {"ingress": [{"ip": ip}]}}
            }))
        };
        let status = |name: &str, node: &str| -> ServiceL2Status {
            from(json!({
                "apiVersion": "ferrolb.io/v1beta1", "kind": "ServiceL2Status",
                "metadata": {"namespace": "default", "name": name},
                "spec": {"serviceName": name},
                "status": {"node": node, "incarnation": 1}
            }))
        };
        let pools = [
            pool("unclassed", None),
            pool("a", Some("ferrolb.io/a")),
            pool("b", Some("ferrolb.io/b")),
        ];
        let services = [
            service("web-a", Some("ferrolb.io/a"), "198.18.0.201"),
            service("web-b", Some("ferrolb.io/b"), "198.18.0.202"),
        ];
        let statuses = [status("web-a", "node1"), status("web-b", "node2")];
        let of = |class: Option<&str>| cluster(&services, [], [], &pools, [], &statuses, class);

        let a = of(Some("ferrolb.io/a"));
        assert_eq!(a.pools.keys().collect::<Vec<_>>(), ["a"]);
        assert_eq!(a.services.len(), 1);
        assert_eq!(a.services[0].id, ServiceId::new("default", "web-a"));
        assert_eq!(
            a.services[0].claim.as_ref().map(|c| c.node.as_str()),
            Some("node1")
        );
        let b = of(Some("ferrolb.io/b"));
        assert_eq!(b.pools.keys().collect::<Vec<_>>(), ["b"]);
        assert_eq!(b.services[0].id, ServiceId::new("default", "web-b"));
        let unclassed = of(None);
        assert_eq!(unclassed.pools.keys().collect::<Vec<_>>(), ["unclassed"]);
        assert!(unclassed.services.is_empty());
    }

    #[test]
    fn peers_are_read_from_the_node_a_status_names_not_its_name() {
        let speaker = |name: &str, node: &str, address: &str, ready: &str| -> SpeakerStatus {
            from(json!({
                "apiVersion": "ferrolb.io/v1beta1", "kind": "SpeakerStatus",
                "metadata": {"name": name, "labels": {"ferrolb.io/instance": "ferrolb-a"}},
                "spec": {"nodeName": node},
                "status": {"gossipAddress": address, "conditions": [{
                    "type": "Ready", "status": ready, "reason": "Running", "message": "",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }]}
            }))
        };
        let statuses = [
            speaker("ferrolb-a-node1", "node1", "198.18.0.11:7946", "True"),
            speaker("ferrolb-a-node2", "node2", "198.18.0.12:7946", "True"),
            speaker("ferrolb-a-node3", "node3", "198.18.0.13:7946", "False"),
            speaker("ferrolb-a-gone", "gone", "198.18.0.14:7946", "True"),
        ];
        assert_eq!(
            published_peers(&statuses, "node1"),
            ["198.18.0.12:7946", "198.18.0.13:7946", "198.18.0.14:7946"]
                .map(|a| a.parse::<SocketAddr>().unwrap())
        );
        let nodes: BTreeSet<String> = ["node1", "node2", "node3"].map(String::from).into();
        // node2 only: node1 is this one, node3 stopped, `gone` has no Node.
        assert_eq!(ready_peers(&statuses, "node1", &nodes), 1);
        assert_eq!(ready_peers(&statuses, "ferrolb-a-node2", &nodes), 2);
    }

    #[test]
    fn published_interfaces_reach_the_nodes_their_statuses_name() {
        let node: Node = from(json!({"metadata": {"name": "node1"},
            "status": {"addresses": [{"type": "InternalIP", "address": "198.18.0.11"}]}}));
        let other: Node = from(json!({"metadata": {"name": "node2"}}));
        let speaker: SpeakerStatus = from(json!({
            "apiVersion": "ferrolb.io/v1beta1", "kind": "SpeakerStatus",
            "metadata": {"name": "ferrolb-a-node1"},
            "spec": {"nodeName": "node1"},
            "status": {"interfaceAddresses": [
                {"name": "bond0.200", "addresses": ["198.18.0.11/24", "not an address"]},
                {"name": "veth1", "namedOnly": true},
            ]}
        }));
        let older: SpeakerStatus = from(json!({
            "apiVersion": "ferrolb.io/v1beta1", "kind": "SpeakerStatus",
            "metadata": {"name": "node2"}, "spec": {"nodeName": "node2"},
            "status": {"interfaces": ["eth0"]}
        }));
        let mut c = cluster([], [], [&node, &other], [], [], [], None);
        add_published_interfaces(&mut c, [&speaker, &older]);
        let node1 = &c.nodes["node1"];
        assert_eq!(node1.internal_ip, Some("198.18.0.11".parse().unwrap()));
        let published = node1.interfaces.as_ref().unwrap();
        assert_eq!(published.len(), 2);
        assert_eq!(published[0].name, "bond0.200");
        assert_eq!(
            published[0].addresses.len(),
            1,
            "what does not parse is left out"
        );
        assert_eq!(published[1].usage, Usage::Named);
        assert_eq!(
            c.nodes["node2"].interfaces, None,
            "an older speaker publishes none"
        );
        // What a speaker writes reads back the same.
        let written = interface_addresses(published);
        assert_eq!(written[0].addresses, ["198.18.0.11/24"]);
        assert!(written[1].named_only);
    }

    #[test]
    fn endpoint_readiness() {
        let slice: EndpointSlice = from(json!({
            "metadata": {"namespace": "default", "name": "web-abc",
                "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": ["10.0.0.1"], "nodeName": "node-1", "conditions": {"ready": false}},
                {"addresses": ["10.0.0.2"], "nodeName": "node-2", "conditions": {}},
                {"addresses": ["10.0.0.3"], "nodeName": "node-3",
                    "conditions": {"ready": false, "serving": true, "terminating": true}}
            ]
        }));
        let ready = ready_endpoints([&slice]);
        let web = &ready[&ServiceId::new("default", "web")];
        assert!(web.any);
        assert_eq!(
            web.nodes.iter().map(String::as_str).collect::<Vec<_>>(),
            ["node-2", "node-3"]
        );
    }

    #[test]
    fn node_conditions_and_address() {
        let node: Node = from(json!({
            "metadata": {"name": "node-1"},
            "status": {
                "conditions": [{"type": "NetworkUnavailable", "status": "True"}],
                "addresses": [{"type": "Hostname", "address": "node-1"},
                              {"type": "InternalIP", "address": "198.18.0.11"}]
            }
        }));
        assert!(node_view(&node).network_unavailable);
        assert_eq!(internal_ip(&node), Some("198.18.0.11".parse().unwrap()));
    }
}
