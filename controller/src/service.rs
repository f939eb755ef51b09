//! A Kubernetes Service as the allocator sees it: which Services are ours, and the
//! translation of a Service (annotations and their MetalLB aliases, families, ports,
//! traffic policy) into an [`allocator::ServiceRequest`](crate::allocator::ServiceRequest).
//!
//! Everything here is pure: Service in, request or error out.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ferrolb_address::Family;
use ferrolb_crds::annotations;
use k8s_openapi::api::core::v1::Service;
use thiserror::Error;

use crate::allocator::{
    FamilyPolicy, IpFamilies, Port, Protocol, ServiceKey, ServiceRequest, SharingKey, TrafficPolicy,
};

/// Whether the controller handles a Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handling {
    /// A `type: LoadBalancer` Service of our class: we assign its IPs.
    Ours,
    /// Not `type: LoadBalancer`: it holds no IP from us.
    NotLoadBalancer,
    /// A LoadBalancer of another `spec.loadBalancerClass`: another implementation's.
    OtherClass,
}

/// Decides whether the controller handles `service`. Without `--load-balancer-class`
/// only Services with no class are ours; with it, only Services of exactly that class.
pub fn handling(service: &Service, class: Option<&str>) -> Handling {
    let spec = service.spec.as_ref();
    if spec.and_then(|s| s.type_.as_deref()) != Some("LoadBalancer") {
        return Handling::NotLoadBalancer;
    }
    let theirs = spec.and_then(|s| s.load_balancer_class.as_deref());
    if theirs == class {
        Handling::Ours
    } else {
        Handling::OtherClass
    }
}

/// Why a Service's request cannot be read. The Service keeps what it holds and gets
/// an Event with this message.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RequestError {
    /// Two spellings of one annotation carry different values.
    #[error(
        "{service} sets {annotation} in several spellings with different values ({found}); keep only {annotation}"
    )]
    ConflictingSpellings {
        /// The Service.
        service: ServiceKey,
        /// Our spelling of the annotation.
        annotation: &'static str,
        /// Every spelling found, as `name="value"`.
        found: String,
    },
    /// Both `spec.loadBalancerIP` and the IPs annotation are set.
    #[error(
        "{service} sets both spec.loadBalancerIP ({field}) and {annotation} ({value}); remove one of them (spec.loadBalancerIP is deprecated)"
    )]
    TwoRequests {
        /// The Service.
        service: ServiceKey,
        /// `spec.loadBalancerIP`.
        field: String,
        /// The annotation spelling used.
        annotation: String,
        /// Its value.
        value: String,
    },
    /// A requested IP is not an IP address.
    #[error(
        "{service} requests {value:?} in {source_name}, which is not an IP address; write e.g. 198.18.0.10 or 198.18.0.10,2001:db8::10"
    )]
    BadIp {
        /// The Service.
        service: ServiceKey,
        /// Where it was written (`spec.loadBalancerIP` or the annotation spelling).
        source_name: String,
        /// The bad entry.
        value: String,
    },
    /// `spec.ipFamilies` or `spec.ipFamilyPolicy` has a value Kubernetes does not define.
    #[error("{service} has an unknown {field} value {value:?}")]
    BadSpec {
        /// The Service.
        service: ServiceKey,
        /// The field.
        field: &'static str,
        /// The value.
        value: String,
    },
}

/// A MetalLB spelling of an annotation the Service uses; reported with a Normal Event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AliasUse {
    /// The spelling found, e.g. `metallb.universe.tf/address-pool`.
    pub alias: String,
    /// Our spelling, e.g. `ferrolb.io/address-pool`.
    pub canonical: &'static str,
}

impl AliasUse {
    /// The Event message.
    pub fn message(&self) -> String {
        format!(
            "annotation {} is read as {}; MetalLB spellings are accepted as aliases, consider renaming it",
            self.alias, self.canonical
        )
    }
}

/// A Service read into an allocator request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Translation {
    /// What the allocator needs.
    pub request: ServiceRequest,
    /// MetalLB spellings the request was read from.
    pub aliases: Vec<AliasUse>,
}

/// One Service, read once per decision into everything the reconciler needs.
#[derive(Debug, Clone)]
pub struct Input {
    /// Whether it is ours.
    pub handling: Handling,
    /// Its request, or why the request cannot be read (only for Services of ours).
    pub request: Result<Translation, RequestError>,
    /// The request without the request annotations: always readable, so the IPs of a
    /// Service whose annotations are wrong are still protected.
    pub base: ServiceRequest,
    /// Whether `status.loadBalancer.ingress` holds only entries we would write
    /// (an IP and `ipMode: VIP`, nothing else).
    pub exact_ingress: bool,
}

impl Input {
    /// Reads `service` for a controller of `class`.
    pub fn read(
        service: &Service,
        class: Option<&str>,
        namespace_labels: &BTreeMap<String, String>,
    ) -> Self {
        let handling = handling(service, class);
        let base = base_request(service, namespace_labels);
        let request = translate_from(base.clone(), service);
        let exact_ingress = crate::status::exact_ingress(service);
        Self {
            handling,
            request,
            base,
            exact_ingress,
        }
    }

    /// The Service's key.
    pub fn key(&self) -> &ServiceKey {
        &self.base.key
    }

    /// The IPs its status shows.
    pub fn current_ips(&self) -> &[IpAddr] {
        &self.base.current_ips
    }

    /// The pool its output annotation names.
    pub fn current_pool(&self) -> Option<&str> {
        self.base.current_pool.as_deref()
    }

    /// The request to restore its current IPs with: the full request when it reads,
    /// else the base one.
    pub fn restoring(&self) -> &ServiceRequest {
        self.request.as_ref().map_or(&self.base, |t| &t.request)
    }
}

/// The Service's key.
pub fn key_of(service: &Service) -> ServiceKey {
    ServiceKey::new(
        service.metadata.namespace.clone().unwrap_or_default(),
        service.metadata.name.clone().unwrap_or_default(),
    )
}

/// The IPs in the Service's `status.loadBalancer.ingress` (hostnames and unparsable
/// entries are skipped: we never write them).
pub fn current_ips(service: &Service) -> Vec<IpAddr> {
    service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map(|ingress| {
            ingress
                .iter()
                .filter_map(|i| i.ip.as_deref())
                .filter_map(|ip| ip.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The pool named by the output annotation, if any.
pub fn current_pool(service: &Service) -> Option<String> {
    service
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(annotations::IP_ALLOCATED_FROM_POOL))
        .cloned()
}

/// Reads everything but the request annotations: identity, labels, families, ports,
/// traffic policy and current IPs. Never fails, so a Service whose annotations are
/// wrong can still be restored (its IPs must not be handed to anyone else).
pub fn base_request(
    service: &Service,
    namespace_labels: &BTreeMap<String, String>,
) -> ServiceRequest {
    let mut request = ServiceRequest::new(key_of(service));
    request.labels = service.metadata.labels.clone().unwrap_or_default();
    request.namespace_labels = namespace_labels.clone();
    request.current_ips = current_ips(service);
    request.current_pool = current_pool(service);
    let Some(spec) = service.spec.as_ref() else {
        return request;
    };
    request.ip_families = IpFamilies {
        policy: match spec.ip_family_policy.as_deref() {
            Some("PreferDualStack") => FamilyPolicy::PreferDualStack,
            Some("RequireDualStack") => FamilyPolicy::RequireDualStack,
            _ => FamilyPolicy::SingleStack,
        },
        families: spec
            .ip_families
            .iter()
            .flatten()
            .filter_map(|f| parse_family(f))
            .collect(),
    };
    request.ports = spec
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            let protocol = match p.protocol.as_deref() {
                None | Some("TCP") => Protocol::Tcp,
                Some("UDP") => Protocol::Udp,
                Some("SCTP") => Protocol::Sctp,
                Some(_) => return None,
            };
            let port = u16::try_from(p.port).ok()?;
            Some(Port { protocol, port })
        })
        .collect();
    request.traffic_policy = match spec.external_traffic_policy.as_deref() {
        Some("Local") => TrafficPolicy::Local {
            selector: spec.selector.clone().unwrap_or_default(),
        },
        _ => TrafficPolicy::Cluster,
    };
    request
}

fn parse_family(value: &str) -> Option<Family> {
    match value {
        "IPv4" => Some(Family::V4),
        "IPv6" => Some(Family::V6),
        _ => None,
    }
}

/// Translates a Service of ours into an allocator request, resolving annotation
/// spellings: our spelling or MetalLB's (`metallb.io/`, `metallb.universe.tf/`) may be
/// used; different values under two spellings, or `spec.loadBalancerIP` together
/// with the IPs annotation, are errors.
pub fn translate(
    service: &Service,
    namespace_labels: &BTreeMap<String, String>,
) -> Result<Translation, RequestError> {
    translate_from(base_request(service, namespace_labels), service)
}

/// [`translate`] from an already read [`base_request`].
fn translate_from(
    mut request: ServiceRequest,
    service: &Service,
) -> Result<Translation, RequestError> {
    let key = request.key.clone();
    let spec = service.spec.as_ref();
    if let Some(spec) = spec {
        for f in spec.ip_families.iter().flatten() {
            if parse_family(f).is_none() {
                return Err(RequestError::BadSpec {
                    service: key,
                    field: "spec.ipFamilies",
                    value: f.clone(),
                });
            }
        }
        if let Some(p) = spec.ip_family_policy.as_deref()
            && !matches!(p, "SingleStack" | "PreferDualStack" | "RequireDualStack")
        {
            return Err(RequestError::BadSpec {
                service: key,
                field: "spec.ipFamilyPolicy",
                value: p.to_owned(),
            });
        }
    }
    let empty = BTreeMap::new();
    let annotations = service.metadata.annotations.as_ref().unwrap_or(&empty);
    let mut aliases = Vec::new();

    let ips = read_annotation(
        &key,
        annotations,
        annotations::LOAD_BALANCER_IPS,
        &mut aliases,
    )?;
    let field_ip = spec
        .and_then(|s| s.load_balancer_ip.as_deref())
        .filter(|ip| !ip.trim().is_empty());
    let (source_name, raw) = match (field_ip, ips) {
        (Some(field), Some((annotation, value))) => {
            return Err(RequestError::TwoRequests {
                service: key,
                field: field.to_owned(),
                annotation,
                value,
            });
        }
        (Some(field), None) => ("spec.loadBalancerIP".to_owned(), field.to_owned()),
        (None, Some((annotation, value))) => (annotation, value),
        (None, None) => (String::new(), String::new()),
    };
    for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let ip: IpAddr = part.parse().map_err(|_| RequestError::BadIp {
            service: key.clone(),
            source_name: source_name.clone(),
            value: part.to_owned(),
        })?;
        request.requested_ips.push(ip);
    }

    request.requested_pool =
        read_annotation(&key, annotations, annotations::ADDRESS_POOL, &mut aliases)?
            .map(|(_, v)| v.trim().to_owned())
            .filter(|v| !v.is_empty());
    request.sharing_key = read_annotation(
        &key,
        annotations,
        annotations::ALLOW_SHARED_IP,
        &mut aliases,
    )?
    .and_then(|(_, v)| SharingKey::new(v));
    Ok(Translation { request, aliases })
}

/// The value of one input annotation under any accepted spelling, with the spelling
/// it was read from. Alias spellings are recorded in `aliases`.
fn read_annotation(
    service: &ServiceKey,
    annotations: &BTreeMap<String, String>,
    canonical: &'static str,
    aliases: &mut Vec<AliasUse>,
) -> Result<Option<(String, String)>, RequestError> {
    let found: Vec<(String, &String)> = annotations::spellings(canonical)
        .into_iter()
        .filter_map(|name| annotations.get(&name).map(|v| (name, v)))
        .collect();
    let Some((first_name, first_value)) = found.first() else {
        return Ok(None);
    };
    if found.iter().any(|(_, v)| v.trim() != first_value.trim()) {
        let listed: Vec<String> = found.iter().map(|(n, v)| format!("{n}={v:?}")).collect();
        return Err(RequestError::ConflictingSpellings {
            service: service.clone(),
            annotation: canonical,
            found: listed.join(", "),
        });
    }
    for (name, _) in &found {
        if name != canonical {
            aliases.push(AliasUse {
                alias: name.clone(),
                canonical,
            });
        }
    }
    Ok(Some((first_name.clone(), (*first_value).clone())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(value: serde_json::Value) -> Service {
        let mut base = json!({
            "metadata": { "namespace": "web", "name": "front" },
            "spec": {
                "type": "LoadBalancer",
                "ipFamilies": ["IPv4"],
                "ipFamilyPolicy": "SingleStack",
                "ports": [{ "port": 80, "protocol": "TCP" }],
            },
        });
        merge(&mut base, value);
        serde_json::from_value(base).unwrap()
    }

    fn merge(into: &mut serde_json::Value, from: serde_json::Value) {
        match (into, from) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (slot, v) => *slot = v,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn handling_follows_type_and_class() {
        let cases = [
            (
                "plain LoadBalancer, no flag",
                json!({}),
                None,
                Handling::Ours,
            ),
            (
                "ClusterIP",
                json!({ "spec": { "type": "ClusterIP" } }),
                None,
                Handling::NotLoadBalancer,
            ),
            (
                "other class without flag",
                json!({ "spec": { "loadBalancerClass": "other.io/lb" } }),
                None,
                Handling::OtherClass,
            ),
            (
                "our class with flag",
                json!({ "spec": { "loadBalancerClass": "ferrolb.io/lb" } }),
                Some("ferrolb.io/lb"),
                Handling::Ours,
            ),
            (
                "no class with flag",
                json!({}),
                Some("ferrolb.io/lb"),
                Handling::OtherClass,
            ),
        ];
        for (name, patch, class, want) in cases {
            assert_eq!(handling(&service(patch), class), want, "{name}");
        }
    }

    type Check = fn(&Result<Translation, RequestError>) -> bool;

    #[test]
    fn translation_table() {
        let cases: Vec<(&str, serde_json::Value, Check)> = vec![
            ("no annotations: defaults", json!({}), |r| {
                let r = &r.as_ref().unwrap().request;
                r.requested_ips.is_empty()
                    && r.requested_pool.is_none()
                    && r.sharing_key.is_none()
                    && r.ports == vec![Port::tcp(80)]
                    && r.ip_families == IpFamilies::single(Family::V4)
                    && r.traffic_policy == TrafficPolicy::Cluster
            }),
            (
                "spec.loadBalancerIP is a request",
                json!({ "spec": { "loadBalancerIP": "198.18.0.5" } }),
                |r| r.as_ref().unwrap().request.requested_ips == vec![ip("198.18.0.5")],
            ),
            (
                "IPs annotation, two families, spaces trimmed",
                json!({ "metadata": { "annotations": { "ferrolb.io/loadBalancerIPs": "198.18.0.5, 2001:db8::5" } } }),
                |r| {
                    r.as_ref().unwrap().request.requested_ips
                        == vec![ip("198.18.0.5"), ip("2001:db8::5")]
                },
            ),
            (
                "MetalLB alias of the IPs annotation is read and reported",
                json!({ "metadata": { "annotations": { "metallb.io/loadBalancerIPs": "198.18.0.6" } } }),
                |r| {
                    let t = r.as_ref().unwrap();
                    t.request.requested_ips == vec![ip("198.18.0.6")]
                        && t.aliases
                            == vec![AliasUse {
                                alias: "metallb.io/loadBalancerIPs".into(),
                                canonical: annotations::LOAD_BALANCER_IPS,
                            }]
                },
            ),
            (
                "legacy MetalLB pool annotation",
                json!({ "metadata": { "annotations": { "metallb.universe.tf/address-pool": "prod" } } }),
                |r| {
                    let t = r.as_ref().unwrap();
                    t.request.requested_pool.as_deref() == Some("prod") && t.aliases.len() == 1
                },
            ),
            (
                "same value in two spellings is fine",
                json!({ "metadata": { "annotations": { "ferrolb.io/address-pool": "prod", "metallb.io/address-pool": "prod" } } }),
                |r| r.as_ref().unwrap().request.requested_pool.as_deref() == Some("prod"),
            ),
            (
                "conflicting spellings are an error",
                json!({ "metadata": { "annotations": { "ferrolb.io/address-pool": "prod", "metallb.io/address-pool": "dev" } } }),
                |r| matches!(r, Err(RequestError::ConflictingSpellings { annotation, .. }) if *annotation == annotations::ADDRESS_POOL),
            ),
            (
                "loadBalancerIP and the annotation together are an error",
                json!({ "spec": { "loadBalancerIP": "198.18.0.5" }, "metadata": { "annotations": { "ferrolb.io/loadBalancerIPs": "198.18.0.5" } } }),
                |r| matches!(r, Err(RequestError::TwoRequests { .. })),
            ),
            (
                "a bad IP is an error naming it",
                json!({ "metadata": { "annotations": { "ferrolb.io/loadBalancerIPs": "198.18.0.300" } } }),
                |r| matches!(r, Err(e @ RequestError::BadIp { .. }) if e.to_string().contains("198.18.0.300")),
            ),
            (
                "sharing key",
                json!({ "metadata": { "annotations": { "ferrolb.io/allow-shared-ip": "dns" } } }),
                |r| r.as_ref().unwrap().request.sharing_key == SharingKey::new("dns"),
            ),
            (
                "blank sharing key allows no sharing",
                json!({ "metadata": { "annotations": { "ferrolb.io/allow-shared-ip": " " } } }),
                |r| r.as_ref().unwrap().request.sharing_key.is_none(),
            ),
            (
                "dual stack policy and family order",
                json!({ "spec": { "ipFamilies": ["IPv6", "IPv4"], "ipFamilyPolicy": "RequireDualStack" } }),
                |r| {
                    r.as_ref().unwrap().request.ip_families
                        == IpFamilies {
                            policy: FamilyPolicy::RequireDualStack,
                            families: vec![Family::V6, Family::V4],
                        }
                },
            ),
            (
                "unknown family is an error",
                json!({ "spec": { "ipFamilies": ["IPv5"] } }),
                |r| matches!(r, Err(RequestError::BadSpec { .. })),
            ),
            (
                "ports with protocols",
                json!({ "spec": { "ports": [{ "port": 53, "protocol": "UDP" }, { "port": 53 }, { "port": 9, "protocol": "SCTP" }] } }),
                |r| {
                    r.as_ref().unwrap().request.ports
                        == vec![
                            Port::udp(53),
                            Port::tcp(53),
                            Port {
                                protocol: Protocol::Sctp,
                                port: 9,
                            },
                        ]
                },
            ),
            (
                "externalTrafficPolicy Local carries the selector",
                json!({ "spec": { "externalTrafficPolicy": "Local", "selector": { "app": "web" } } }),
                |r| {
                    r.as_ref().unwrap().request.traffic_policy
                        == TrafficPolicy::Local {
                            selector: BTreeMap::from([("app".into(), "web".into())]),
                        }
                },
            ),
            (
                "current IPs and pool come from status and the output annotation",
                json!({
                    "metadata": { "annotations": { "ferrolb.io/ip-allocated-from-pool": "prod" } },
                    "status": { "loadBalancer": { "ingress": [{ "ip": "198.18.0.9" }, { "hostname": "lb.example" }] } },
                }),
                |r| {
                    let r = &r.as_ref().unwrap().request;
                    r.current_ips == vec![ip("198.18.0.9")]
                        && r.current_pool.as_deref() == Some("prod")
                },
            ),
            (
                "labels are copied",
                json!({ "metadata": { "labels": { "tier": "front" } } }),
                |r| {
                    r.as_ref()
                        .unwrap()
                        .request
                        .labels
                        .get("tier")
                        .map(String::as_str)
                        == Some("front")
                },
            ),
        ];
        for (name, patch, check) in cases {
            let got = translate(&service(patch), &BTreeMap::new());
            assert!(check(&got), "{name}: got {got:?}");
        }
    }

    #[test]
    fn base_request_survives_bad_annotations() {
        let svc = service(json!({
            "metadata": { "annotations": { "ferrolb.io/address-pool": "a", "metallb.io/address-pool": "b" } },
            "status": { "loadBalancer": { "ingress": [{ "ip": "198.18.0.9" }] } },
        }));
        assert!(translate(&svc, &BTreeMap::new()).is_err());
        assert_eq!(
            base_request(&svc, &BTreeMap::new()).current_ips,
            vec![ip("198.18.0.9")]
        );
    }
}
