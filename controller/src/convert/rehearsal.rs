//! The cutover rehearsed: the controller's own reconciler restores the Services of
//! the dump against the converted pools, exactly as it does when it starts, and
//! plans once. Every Service whose IP it would not keep is reported with the reason
//! the controller would give in its Event, so a migration that would move an IP is
//! known before anything is applied.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use ferrolb_crds::IPAddressPool;
use k8s_openapi::api::core::v1::{Namespace, Service};

use crate::allocator::ServiceKey;
use crate::reconcile::{Reconciler, Snapshot, reasons};
use crate::service::{self, Handling};

/// What the controller would do with the Services at cutover.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rehearsal {
    /// LoadBalancer Services of FerroLB's (no `loadBalancerClass`) holding an IP.
    pub with_ips: usize,
    /// Those that keep every IP.
    pub kept: usize,
    /// One line per Service that loses an IP, is refused, or is not FerroLB's.
    pub findings: Vec<String>,
}

/// Rehearses the controller's start on `pools` and `services`.
pub fn rehearse(
    pools: &[IPAddressPool],
    services: &[Service],
    namespaces: &[Namespace],
) -> Rehearsal {
    let snapshot = Snapshot {
        services: services.iter().cloned().map(Arc::new).collect(),
        pools: pools.iter().cloned().map(Arc::new).collect(),
        namespaces: namespaces.iter().cloned().map(Arc::new).collect(),
        ..Snapshot::default()
    };
    let mut reconciler = Reconciler::new(None);
    reconciler.restore(&snapshot);
    let plan = reconciler.plan(&snapshot);
    // Per Service: (is a warning, "Reason: message") of every Event it would get.
    let mut events: BTreeMap<ServiceKey, Vec<(bool, String)>> = BTreeMap::new();
    for notice in plan
        .notices
        .iter()
        .filter(|n| n.reason != reasons::ALIAS_ANNOTATION)
    {
        let key = ServiceKey::new(
            notice.reference.namespace.clone().unwrap_or_default(),
            notice.reference.name.clone().unwrap_or_default(),
        );
        events.entry(key).or_default().push((
            notice.warning,
            format!("{}: {}", notice.reason, notice.note),
        ));
    }
    let mut out = Rehearsal::default();
    for svc in services {
        let key = service::key_of(svc);
        let current = service::current_ips(svc);
        if service::handling(svc, None) == Handling::OtherClass {
            out.findings.push(format!(
                "Service {key} has spec.loadBalancerClass {:?}: FerroLB handles it only when installed with that --load-balancer-class",
                svc.spec.as_ref().and_then(|s| s.load_balancer_class.clone()).unwrap_or_default()
            ));
            continue;
        }
        if current.is_empty() {
            out.findings.push(format!(
                "Service {key} has no IP yet; FerroLB will assign one"
            ));
            continue;
        }
        out.with_ips += 1;
        let held: Vec<IpAddr> = reconciler
            .allocator()
            .allocation(&key)
            .map(|a| a.ips.clone())
            .unwrap_or_default();
        let lost: Vec<String> = current
            .iter()
            .filter(|ip| !held.contains(ip))
            .map(ToString::to_string)
            .collect();
        let events = events.remove(&key).unwrap_or_default();
        let join = |warnings_only: bool| {
            events
                .iter()
                .filter(|(warning, _)| *warning || !warnings_only)
                .map(|(_, text)| text.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        };
        if lost.is_empty() {
            out.kept += 1;
            let why = join(true);
            if !why.is_empty() {
                out.findings
                    .push(format!("Service {key} keeps its IP, but: {why}"));
            }
        } else {
            out.findings.push(format!(
                "FerroLB would not keep {} of Service {key}: {}",
                lost.join(", "),
                join(false)
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pool(name: &str, addresses: &[&str]) -> IPAddressPool {
        serde_json::from_value(json!({
            "apiVersion": "ferrolb.io/v1beta1", "kind": "IPAddressPool",
            "metadata": { "name": name }, "spec": { "addresses": addresses },
        }))
        .unwrap()
    }

    fn svc(name: &str, annotations: serde_json::Value, ip: Option<&str>) -> Service {
        let ingress = ip.map_or_else(|| json!([]), |ip| json!([{ "ip": ip }]));
        serde_json::from_value(json!({
            "metadata": { "namespace": "web", "name": name, "annotations": annotations,
                          "creationTimestamp": "2024-01-01T00:00:00Z" },
            "spec": { "type": "LoadBalancer", "ports": [{ "port": 80, "protocol": "TCP" }] },
            "status": { "loadBalancer": { "ingress": ingress } },
        }))
        .unwrap()
    }

    #[test]
    fn the_rehearsal_reports_what_the_controller_would_do() {
        let pools = [pool("a", &["198.18.0.0/28"]), pool("b", &["198.18.1.0/28"])];
        let services = [
            svc("kept", json!({}), Some("198.18.0.5")),
            svc(
                "aliased",
                json!({ "metallb.universe.tf/address-pool": "b" }),
                Some("198.18.1.5"),
            ),
            svc(
                "other-pool",
                json!({ "metallb.io/address-pool": "a" }),
                Some("198.18.1.6"),
            ),
            svc("outside", json!({}), Some("198.18.9.9")),
            svc("pending", json!({}), None),
        ];
        let got = rehearse(&pools, &services, &[]);
        assert_eq!(got.with_ips, 4);
        assert_eq!(got.kept, 2, "{:#?}", got.findings);
        assert_eq!(got.findings.len(), 3, "{:#?}", got.findings);
        assert!(
            got.findings[0]
                .starts_with("FerroLB would not keep 198.18.1.6 of Service web/other-pool")
                && got.findings[0].contains("IPAllocated: assigned 198.18.0.0"),
            "{}",
            got.findings[0]
        );
        assert!(
            got.findings[1].starts_with("FerroLB would not keep 198.18.9.9 of Service web/outside")
                && got.findings[1].contains("ForeignIP"),
            "{}",
            got.findings[1]
        );
        assert_eq!(
            got.findings[2],
            "Service web/pending has no IP yet; FerroLB will assign one"
        );
    }
}
