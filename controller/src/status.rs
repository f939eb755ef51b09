//! What the controller writes, rendered as plain data: a Service's
//! `status.loadBalancer.ingress` and output annotation, and a pool's status.
//!
//! Pure: the runtime compares these with what the API server shows and writes only
//! the difference.

use std::net::IpAddr;

use ferrolb_address::Family;
use ferrolb_crds::{FamilyUsage, IPAddressPoolStatus, ReleasedIp, annotations, conditions};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use crate::allocator;

/// `ipMode` of every ingress entry we write: the IP is a virtual IP the nodes accept
/// traffic for (kube-proxy routes it), not a proxy in front of them.
pub const IP_MODE: &str = "VIP";

/// What a Service should show: its IPs (ingress order) and the pool they came from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceView {
    /// `status.loadBalancer.ingress[].ip`.
    pub ips: Vec<IpAddr>,
    /// The `ferrolb.io/ip-allocated-from-pool` annotation.
    pub pool: Option<String>,
}

impl ServiceView {
    /// The view of an allocation (or of nothing).
    pub fn of(allocation: Option<&allocator::Allocation>) -> Self {
        allocation.map_or_else(Self::default, |a| Self {
            ips: a.ips.clone(),
            pool: Some(a.pool.clone()),
        })
    }

    /// What the Service shows now, as read into its [`Input`](crate::service::Input).
    pub fn current(input: &crate::service::Input) -> Self {
        Self {
            ips: input.current_ips().to_vec(),
            pool: input.current_pool().map(str::to_owned),
        }
    }
}

/// Whether `status.loadBalancer.ingress` holds only entries we would write (an IP and
/// `ipMode: VIP`, no hostname, no ports). Anything else (hostnames, another `ipMode`,
/// ports) makes the ingress differ, so it gets rewritten.
pub fn exact_ingress(service: &Service) -> bool {
    service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .is_none_or(|ingress| {
            ingress.iter().all(|i| {
                i.hostname.is_none()
                    && i.ports.as_ref().is_none_or(Vec::is_empty)
                    && i.ip_mode.as_deref() == Some(IP_MODE)
                    && i.ip
                        .as_deref()
                        .is_some_and(|ip| ip.parse::<IpAddr>().is_ok())
            })
        })
}

/// The merge patch writing `status.loadBalancer.ingress`; an empty list removes it.
pub fn ingress_patch(ips: &[IpAddr]) -> Value {
    if ips.is_empty() {
        return json!({ "status": { "loadBalancer": { "ingress": null } } });
    }
    let ingress: Vec<Value> = ips
        .iter()
        .map(|ip| json!({ "ip": ip.to_string(), "ipMode": IP_MODE }))
        .collect();
    json!({ "status": { "loadBalancer": { "ingress": ingress } } })
}

/// Makes a merge patch conditional: the API server applies it only while the object's
/// resourceVersion is still `version` and answers 409 Conflict otherwise.
pub fn conditional(mut patch: Value, version: Option<&str>) -> Value {
    if let (Some(v), Some(object)) = (version, patch.as_object_mut()) {
        let metadata = object.entry("metadata").or_insert_with(|| json!({}));
        if let Some(m) = metadata.as_object_mut() {
            m.insert("resourceVersion".to_owned(), json!(v));
        }
    }
    patch
}

/// The merge patch writing (or, with `None`, removing) the output annotation.
pub fn annotation_patch(pool: Option<&str>) -> Value {
    json!({ "metadata": { "annotations": { annotations::IP_ALLOCATED_FROM_POOL: pool } } })
}

/// The state of a pool for its conditions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolState {
    /// Used for new allocations.
    Ready,
    /// Shares addresses with other pools: `(pool, first common range)`.
    Overlapping(Vec<(String, String)>),
    /// The current spec cannot be used (the last valid version, if any, stays in
    /// effect so Services keep their IPs).
    Invalid {
        /// CamelCase reason.
        reason: String,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// Deleted; kept (no new allocations) while these Services hold its IPs.
    Deleting {
        /// `namespace/name` of each holder.
        users: Vec<String>,
    },
}

/// Everything a pool status is computed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolReport {
    /// `metadata.generation` of the pool object.
    pub generation: Option<i64>,
    /// Usage per family the pool has addresses of (IPv4 first).
    pub usage: Vec<(Family, allocator::FamilyUsage)>,
    /// Conditions' source.
    pub state: PoolState,
    /// `(what, common range)` for each of the cluster's networks the pool overlaps.
    pub cluster_overlaps: Vec<(String, String)>,
    /// The quarantine, oldest first.
    pub quarantine: Vec<IpAddr>,
}

/// Renders a pool's status. Conditions keep their `lastTransitionTime` from
/// `previous` while their status is unchanged, so an unchanged pool renders to an
/// identical status and costs no write.
pub fn pool_status(
    report: &PoolReport,
    previous: Option<&IPAddressPoolStatus>,
    now: Timestamp,
) -> IPAddressPoolStatus {
    let mut status = IPAddressPoolStatus {
        observed_generation: report.generation,
        released: released_entries(&report.quarantine, previous, now),
        ..IPAddressPoolStatus::default()
    };
    let mut assigned = Vec::new();
    let mut available = Vec::new();
    for (family, usage) in &report.usage {
        let counts = FamilyUsage {
            total: usage.total.to_string(),
            assigned: usage.assigned.to_string(),
            available: usage.available.to_string(),
        };
        assigned.push(format!("{family} {}/{}", usage.assigned, usage.total));
        available.push(format!("{family} {}/{}", usage.available, usage.total));
        match family {
            Family::V4 => status.ipv4 = Some(counts),
            Family::V6 => status.ipv6 = Some(counts),
        }
    }
    if !report.usage.is_empty() {
        status.assigned_summary = Some(assigned.join(", "));
        status.available_summary = Some(available.join(", "));
    }
    let (ready, overlapping, invalid) = match &report.state {
        PoolState::Ready => (
            (
                "True",
                "Ready",
                "the pool serves new allocations".to_owned(),
            ),
            (
                "False",
                "NoOverlap",
                "no other pool shares an address".to_owned(),
            ),
            ("False", "Valid", "every address entry is valid".to_owned()),
        ),
        PoolState::Overlapping(with) => {
            let listed: Vec<String> = with
                .iter()
                .map(|(pool, range)| format!("IPAddressPool {pool:?} (both hold {range})"))
                .collect();
            let message = format!(
                "shares addresses with {}; remove the common addresses from one of the pools",
                listed.join(", ")
            );
            (
                (
                    "False",
                    "Overlapping",
                    "not used for new allocations until the overlap is removed; Services keep their IPs"
                        .to_owned(),
                ),
                ("True", "Overlapping", message),
                ("False", "Valid", "every address entry is valid".to_owned()),
            )
        }
        PoolState::Deleting { users } => (
            (
                "False",
                "Deleting",
                if users.is_empty() {
                    "deleted; no Service holds its IPs any more".to_owned()
                } else {
                    let keys: Vec<&String> = users.iter().collect();
                    let shown: Vec<&str> = keys.iter().take(10).map(|k| k.as_str()).collect();
                    format!(
                        "deleted, and kept while {} Service(s) hold its IPs ({}{}); no new allocations. Annotate the pool ferrolb.io/force-release=true to move them to other pools",
                        users.len(),
                        shown.join(", "),
                        if users.len() > 10 { ", ..." } else { "" }
                    )
                },
            ),
            (
                "False",
                "NoOverlap",
                "not checked while the pool is deleted".to_owned(),
            ),
            ("False", "Valid", "the pool is deleted".to_owned()),
        ),
        PoolState::Invalid { reason, message } => (
            (
                "False",
                "Invalid",
                "not used for new allocations until the spec is fixed".to_owned(),
            ),
            (
                "False",
                "NoOverlap",
                "not checked while the spec is invalid".to_owned(),
            ),
            ("True", reason.as_str(), message.clone()),
        ),
    };
    let cluster = if report.cluster_overlaps.is_empty() {
        (
            "False",
            "NoClusterOverlap",
            "no address is in the cluster's Service CIDRs, pod CIDRs or node addresses".to_owned(),
        )
    } else {
        let listed: Vec<String> = report
            .cluster_overlaps
            .iter()
            .map(|(what, range)| format!("{what} ({range})"))
            .collect();
        (
            "True",
            "ClusterOverlap",
            format!(
                "shares addresses with {}; those addresses are never allocated, the rest of the pool keeps working",
                listed.join(", ")
            ),
        )
    };
    for (type_, (value, reason, message)) in [
        (conditions::READY, ready),
        (conditions::OVERLAPPING, overlapping),
        (conditions::INVALID, invalid),
        (conditions::CLUSTER_OVERLAP, cluster),
    ] {
        let since = previous
            .and_then(|p| p.conditions.iter().find(|c| c.type_ == type_))
            .filter(|c| c.status == value)
            .map_or(Time(now), |c| c.last_transition_time.clone());
        status.conditions.push(Condition {
            type_: type_.to_owned(),
            status: value.to_owned(),
            reason: reason.to_owned(),
            message,
            observed_generation: report.generation,
            last_transition_time: since,
        });
    }
    status
}

/// The quarantine as the status records it: an address keeps the release time
/// `previous` recorded for it; a newly quarantined one gets `now`.
fn released_entries(
    quarantine: &[IpAddr],
    previous: Option<&IPAddressPoolStatus>,
    now: Timestamp,
) -> Vec<ReleasedIp> {
    let known: std::collections::HashMap<&str, &Time> = previous
        .map(|p| {
            p.released
                .iter()
                .map(|r| (r.ip.as_str(), &r.released_at))
                .collect()
        })
        .unwrap_or_default();
    quarantine
        .iter()
        .map(|ip| {
            let ip = ip.to_string();
            let released_at = known.get(ip.as_str()).map_or(Time(now), |t| (*t).clone());
            ReleasedIp { ip, released_at }
        })
        .collect()
}

/// The merge patch writing a pool's whole status.
pub fn pool_status_patch(status: &IPAddressPoolStatus) -> Value {
    json!({ "status": status })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn usage(total: u128, assigned: u128) -> allocator::FamilyUsage {
        allocator::FamilyUsage {
            total,
            assigned,
            available: total - assigned,
        }
    }

    #[test]
    fn ingress_patch_writes_vip_mode_and_clears_with_null() {
        assert_eq!(
            ingress_patch(&[ip("198.18.0.5"), ip("2001:db8::5")]),
            json!({ "status": { "loadBalancer": { "ingress": [
                { "ip": "198.18.0.5", "ipMode": "VIP" },
                { "ip": "2001:db8::5", "ipMode": "VIP" },
            ] } } })
        );
        assert_eq!(
            ingress_patch(&[]),
            json!({ "status": { "loadBalancer": { "ingress": null } } })
        );
        assert_eq!(
            annotation_patch(None),
            json!({ "metadata": { "annotations": { "ferrolb.io/ip-allocated-from-pool": null } } })
        );
    }

    #[test]
    fn conditional_patches_carry_the_version_they_were_decided_on() {
        assert_eq!(
            conditional(annotation_patch(Some("p")), Some("42")),
            json!({ "metadata": { "resourceVersion": "42",
                                  "annotations": { "ferrolb.io/ip-allocated-from-pool": "p" } } })
        );
        assert_eq!(
            conditional(ingress_patch(&[]), Some("7")),
            json!({ "metadata": { "resourceVersion": "7" },
                    "status": { "loadBalancer": { "ingress": null } } })
        );
        assert_eq!(conditional(json!({ "a": 1 }), None), json!({ "a": 1 }));
    }

    #[test]
    fn current_view_flags_entries_we_would_not_write() {
        let svc: Service = serde_json::from_value(json!({
            "metadata": { "name": "a", "annotations": { "ferrolb.io/ip-allocated-from-pool": "p" } },
            "status": { "loadBalancer": { "ingress": [{ "ip": "198.18.0.5", "ipMode": "VIP" }] } },
        }))
        .unwrap();
        let input = crate::service::Input::read(&svc, None, &Default::default());
        let (view, exact) = (ServiceView::current(&input), input.exact_ingress);
        assert!(exact);
        assert_eq!(
            view,
            ServiceView {
                ips: vec![ip("198.18.0.5")],
                pool: Some("p".into())
            }
        );
        let old: Service = serde_json::from_value(json!({
            "metadata": { "name": "a" },
            "status": { "loadBalancer": { "ingress": [{ "ip": "198.18.0.5" }] } },
        }))
        .unwrap();
        assert!(!exact_ingress(&old), "missing ipMode is rewritten");
    }

    #[test]
    fn pool_status_counts_exactly_and_summarises() {
        let report = PoolReport {
            generation: Some(3),
            usage: vec![
                (Family::V4, usage(16, 3)),
                (Family::V6, usage(1u128 << 64, 0)),
            ],
            state: PoolState::Ready,
            cluster_overlaps: vec![],
            quarantine: vec![],
        };
        let s = pool_status(&report, None, Timestamp::UNIX_EPOCH);
        assert_eq!(s.ipv4.as_ref().unwrap().available, "13");
        assert_eq!(s.ipv6.as_ref().unwrap().total, "18446744073709551616");
        assert_eq!(
            s.assigned_summary.as_deref(),
            Some("IPv4 3/16, IPv6 0/18446744073709551616")
        );
        assert_eq!(
            s.available_summary.as_deref(),
            Some("IPv4 13/16, IPv6 18446744073709551616/18446744073709551616")
        );
        let types: Vec<(&str, &str)> = s
            .conditions
            .iter()
            .map(|c| (c.type_.as_str(), c.status.as_str()))
            .collect();
        assert_eq!(
            types,
            [
                ("Ready", "True"),
                ("Overlapping", "False"),
                ("Invalid", "False"),
                ("ClusterOverlap", "False")
            ]
        );
        assert!(
            s.conditions
                .iter()
                .all(|c| c.observed_generation == Some(3))
        );
        assert_eq!(s.observed_generation, Some(3));
    }

    #[test]
    fn unchanged_pool_renders_identically() {
        let report = PoolReport {
            generation: Some(1),
            usage: vec![(Family::V4, usage(4, 1))],
            state: PoolState::Ready,
            cluster_overlaps: vec![],
            quarantine: vec![],
        };
        let first = pool_status(&report, None, Timestamp::UNIX_EPOCH);
        let later = Timestamp::from_second(1_000).unwrap();
        assert_eq!(pool_status(&report, Some(&first), later), first);
        let overlapping = PoolReport {
            state: PoolState::Overlapping(vec![("b".into(), "198.18.0.4/30".into())]),
            ..report
        };
        let changed = pool_status(&overlapping, Some(&first), later);
        let ready = &changed.conditions[0];
        assert_eq!(
            (ready.status.as_str(), &ready.last_transition_time),
            ("False", &Time(later))
        );
        assert!(changed.conditions[1].message.contains("\"b\""));
        let invalid_kept = &changed.conditions[2];
        assert_eq!(
            invalid_kept.last_transition_time,
            Time(Timestamp::UNIX_EPOCH)
        );
    }

    #[test]
    fn quarantine_keeps_release_times_and_cluster_overlaps_are_named() {
        let report = PoolReport {
            generation: Some(1),
            usage: vec![(Family::V4, usage(16, 1))],
            state: PoolState::Ready,
            cluster_overlaps: vec![("podCIDR of node node1".into(), "198.18.64.0/24".into())],
            quarantine: vec![ip("198.18.0.3")],
        };
        let first = pool_status(&report, None, Timestamp::UNIX_EPOCH);
        assert_eq!(first.released.len(), 1);
        let later = Timestamp::from_second(500).unwrap();
        let more = PoolReport {
            quarantine: vec![ip("198.18.0.3"), ip("198.18.0.9")],
            ..report
        };
        let second = pool_status(&more, Some(&first), later);
        assert_eq!(
            second.released[0].released_at,
            Time(Timestamp::UNIX_EPOCH),
            "an address keeps its release time"
        );
        assert_eq!(second.released[1].released_at, Time(later));
        let overlap = second
            .conditions
            .iter()
            .find(|c| c.type_ == "ClusterOverlap")
            .unwrap();
        assert_eq!(overlap.status, "True");
        assert!(
            overlap
                .message
                .contains("podCIDR of node node1 (198.18.64.0/24)")
        );
    }

    #[test]
    fn invalid_pool_says_why() {
        let report = PoolReport {
            generation: Some(2),
            usage: vec![],
            state: PoolState::Invalid {
                reason: "InvalidAddresses".into(),
                message: "bad entry \"198.18.0.5/24\"".into(),
            },
            cluster_overlaps: vec![],
            quarantine: vec![],
        };
        let s = pool_status(&report, None, Timestamp::UNIX_EPOCH);
        assert!(s.ipv4.is_none() && s.assigned_summary.is_none());
        let invalid = s.conditions.iter().find(|c| c.type_ == "Invalid").unwrap();
        assert_eq!(invalid.status, "True");
        assert_eq!(invalid.reason, "InvalidAddresses");
        assert!(invalid.message.contains("198.18.0.5/24"));
    }
}
