//! What the allocator needs to know about a LoadBalancer Service, as plain data that the
//! Kubernetes adapter fills from the Service, its Namespace and its annotations.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use ferrolb_address::Family;

/// A Service's identity: its namespace and name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    /// The Service's namespace.
    pub namespace: String,
    /// The Service's name.
    pub name: String,
}

impl ServiceKey {
    /// The key of Service `name` in `namespace`.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

/// Prints as `namespace/name`, the way `kubectl` names objects.
impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The value of the `ferrolb.io/allow-shared-ip` annotation: Services carrying the same
/// non-empty key may share an IP.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SharingKey(String);

impl SharingKey {
    /// The key, or `None` for an empty or blank annotation, which allows no sharing.
    pub fn new(key: impl Into<String>) -> Option<Self> {
        let key = key.into();
        (!key.trim().is_empty()).then_some(Self(key))
    }

    /// The key as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SharingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// A transport protocol of a Service port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        })
    }
}

/// One `(protocol, port)` pair a Service exposes. Two Services sharing an IP must not
/// expose the same pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Port {
    /// The protocol.
    pub protocol: Protocol,
    /// The port number.
    pub port: u16,
}

impl Port {
    /// A TCP port.
    pub fn tcp(port: u16) -> Self {
        Self {
            protocol: Protocol::Tcp,
            port,
        }
    }

    /// A UDP port.
    pub fn udp(port: u16) -> Self {
        Self {
            protocol: Protocol::Udp,
            port,
        }
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.protocol, self.port)
    }
}

/// `spec.ipFamilyPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum FamilyPolicy {
    /// One IP, of the first listed family.
    #[default]
    SingleStack,
    /// One IP per listed family when the pool offers them, else at least one.
    PreferDualStack,
    /// One IP per listed family, or nothing.
    RequireDualStack,
}

/// `spec.ipFamilyPolicy` with `spec.ipFamilies`, in the Service's order.
///
/// An empty `families` list (which the API server never stores for a LoadBalancer
/// Service, but a hand-built request may carry) means "IPv4 then IPv6".
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct IpFamilies {
    /// The policy.
    pub policy: FamilyPolicy,
    /// The families, primary first.
    pub families: Vec<Family>,
}

impl IpFamilies {
    /// A single-stack Service of `family`.
    pub fn single(family: Family) -> Self {
        Self {
            policy: FamilyPolicy::SingleStack,
            families: vec![family],
        }
    }

    /// A dual-stack Service with `policy`, IPv4 first.
    pub fn dual(policy: FamilyPolicy) -> Self {
        Self {
            policy,
            families: vec![Family::V4, Family::V6],
        }
    }

    /// The families, primary first and without repeats, an empty list read as
    /// "IPv4 then IPv6".
    pub(crate) fn ordered(&self) -> Vec<Family> {
        let mut out: Vec<Family> = Vec::with_capacity(2);
        let listed: &[Family] = if self.families.is_empty() {
            &[Family::V4, Family::V6]
        } else {
            &self.families
        };
        for f in listed {
            if !out.contains(f) {
                out.push(*f);
            }
        }
        out
    }

    /// The families this Service may hold an IP of. A single-stack Service with an
    /// explicit family may hold only that one.
    pub(crate) fn allowed(&self) -> Vec<Family> {
        let mut ordered = self.ordered();
        if self.policy == FamilyPolicy::SingleStack && !self.families.is_empty() {
            ordered.truncate(1);
        }
        ordered
    }

    /// The most IPs the Service may hold.
    pub(crate) fn max_ips(&self) -> usize {
        match self.policy {
            FamilyPolicy::SingleStack => 1,
            _ => self.ordered().len(),
        }
    }
}

/// `spec.externalTrafficPolicy`, with what matters for sharing an IP.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum TrafficPolicy {
    /// Any node may forward the traffic.
    #[default]
    Cluster,
    /// Only nodes running a selected pod may receive the traffic. Services sharing an
    /// IP must then select the same pods, since one node announces the IP for all.
    Local {
        /// The Service's `spec.selector`, identifying its pods.
        selector: BTreeMap<String, String>,
    },
}

/// Everything the allocator needs to assign IPs to one Service.
///
/// The adapter resolves annotation spellings and precedence before building this:
/// the allocator sees one list of requested IPs and at most one requested pool.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceRequest {
    /// The Service's namespace and name.
    pub key: ServiceKey,
    /// The Service's labels, matched by pools' `serviceSelectors`.
    pub labels: BTreeMap<String, String>,
    /// The labels of the Service's Namespace, matched by pools' `namespaceSelectors`.
    pub namespace_labels: BTreeMap<String, String>,
    /// IPs asked for through `spec.loadBalancerIP` or the IPs annotation, at most one
    /// per family. When non-empty the Service gets exactly these or nothing.
    pub requested_ips: Vec<IpAddr>,
    /// The pool named by the address-pool annotation.
    pub requested_pool: Option<String>,
    /// The sharing key from the allow-shared-ip annotation.
    pub sharing_key: Option<SharingKey>,
    /// The `(protocol, port)` pairs the Service exposes.
    pub ports: Vec<Port>,
    /// `spec.ipFamilyPolicy` and `spec.ipFamilies`.
    pub ip_families: IpFamilies,
    /// `spec.externalTrafficPolicy` and, for `Local`, the pod selector.
    pub traffic_policy: TrafficPolicy,
    /// The IPs in `status.loadBalancer.ingress`, which the allocator keeps when it has
    /// no record of the Service yet and they are still valid.
    pub current_ips: Vec<IpAddr>,
    /// The pool named by the output annotation, used to attribute current IPs that
    /// lie in more than one pool.
    pub current_pool: Option<String>,
}

impl ServiceRequest {
    /// A request with defaults (single-stack IPv4, no ports, no sharing) for `key`.
    pub fn new(key: ServiceKey) -> Self {
        Self {
            key,
            ip_families: IpFamilies::single(Family::V4),
            ..Self::default()
        }
    }
}
