//! Services that name a MetalLB pool whose FerroLB name differs.
//!
//! FerroLB reads MetalLB's Service annotations as aliases (`metallb.universe.tf/…`,
//! `metallb.io/…`), so Services need no change, except one: a pool annotation
//! (`…/address-pool`) naming a pool that FerroLB knows under another name. FerroLB
//! would then refuse the Service's IP as coming from another pool than the one it
//! asks for. For each such annotation the conversion produces a [`Patch`] that
//! rewrites the value in place (same annotation key), and a shell script of
//! `kubectl annotate` commands that applies them.
//!
//! When a name is used in several MetalLB namespaces, the pool that holds the
//! Service's current IP decides which one the Service meant.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ferrolb_crds::annotations::{ADDRESS_POOL, spellings};
use k8s_openapi::api::core::v1::Service;

use super::source::{Origin, PoolSource};
use crate::service;

/// One annotation value to rewrite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Patch {
    /// The Service (namespace and name).
    pub service: Origin,
    /// The annotation key, as the Service spells it.
    pub annotation: String,
    /// The MetalLB pool name it holds.
    pub from: String,
    /// The FerroLB pool name it must hold.
    pub to: String,
}

/// The patches the Services need, given the FerroLB name of each converted pool;
/// Services whose pool annotation cannot be resolved are reported in `warnings`.
pub fn patches(
    services: &[Service],
    pools: &[PoolSource],
    names: &BTreeMap<Origin, String>,
    warnings: &mut Vec<String>,
) -> Vec<Patch> {
    let mut out = Vec::new();
    for svc in services {
        let key = Origin::new(
            svc.metadata.namespace.clone().unwrap_or_default(),
            svc.metadata.name.clone().unwrap_or_default(),
        );
        let Some(annotations) = svc.metadata.annotations.as_ref() else {
            continue;
        };
        let ips = service::current_ips(svc);
        for annotation in spellings(ADDRESS_POOL) {
            let Some(value) = annotations.get(&annotation) else {
                continue;
            };
            let value = value.trim();
            match resolve(value, &ips, pools, names) {
                Resolved::Same => {}
                Resolved::Renamed(to) => out.push(Patch {
                    service: key.clone(),
                    annotation,
                    from: value.to_owned(),
                    to,
                }),
                Resolved::Missing => warnings.push(format!(
                    "Service {key}: {annotation}={value} names a pool that is not converted (BGP-only, without addresses, or not in the input); FerroLB will not keep this Service's IP unless the annotation names a FerroLB pool holding it"
                )),
                Resolved::Ambiguous(candidates) => warnings.push(format!(
                    "Service {key}: {annotation}={value} may mean any of {}, and its current IP does not tell which; set the annotation to one of them before the cutover",
                    candidates.join(", ")
                )),
            }
        }
    }
    out
}

enum Resolved {
    Same,
    Renamed(String),
    Missing,
    Ambiguous(Vec<String>),
}

fn resolve(
    value: &str,
    ips: &[IpAddr],
    pools: &[PoolSource],
    names: &BTreeMap<Origin, String>,
) -> Resolved {
    let candidates: Vec<&PoolSource> = pools
        .iter()
        .filter(|p| p.origin.name == value && names.contains_key(&p.origin))
        .collect();
    let chosen: Vec<&PoolSource> = if candidates.len() > 1 {
        candidates
            .iter()
            .copied()
            .filter(|p| ips.iter().any(|ip| holds(p, *ip)))
            .collect()
    } else {
        candidates.clone()
    };
    match chosen.as_slice() {
        [] if candidates.is_empty() => Resolved::Missing,
        [one] => {
            let name = &names[&one.origin];
            if name == value {
                Resolved::Same
            } else {
                Resolved::Renamed(name.clone())
            }
        }
        _ => Resolved::Ambiguous(
            candidates
                .iter()
                .map(|p| names[&p.origin].clone())
                .collect(),
        ),
    }
}

fn holds(pool: &PoolSource, ip: IpAddr) -> bool {
    pool.addresses
        .iter()
        .filter_map(|a| ferrolb_address::parse_entry(a).ok())
        .any(|r| r.contains(ip))
}

/// `service` with `patches` applied.
pub fn apply(service: &Service, patches: &[Patch]) -> Service {
    let mut out = service.clone();
    let key = Origin::new(
        service.metadata.namespace.clone().unwrap_or_default(),
        service.metadata.name.clone().unwrap_or_default(),
    );
    if let Some(annotations) = out.metadata.annotations.as_mut() {
        for p in patches.iter().filter(|p| p.service == key) {
            annotations.insert(p.annotation.clone(), p.to.clone());
        }
    }
    out
}

/// A POSIX shell script that applies `patches` with `kubectl annotate`, and lists the
/// commands that undo them.
pub fn script(patches: &[Patch]) -> String {
    let command = |p: &Patch, value: &str| {
        format!(
            "kubectl annotate --overwrite service --namespace {} {} {}",
            quote(&p.service.namespace),
            quote(&p.service.name),
            quote(&format!("{}={value}", p.annotation)),
        )
    };
    let mut out = String::from(
        "#!/bin/sh\n\
         # Generated by `ferrolb-controller convert`: points Services' pool annotations at\n\
         # the FerroLB names of their pools. Run it after MetalLB's controller is stopped and\n\
         # before the FerroLB pools are applied (docs/migration.md).\n\
         set -eu\n",
    );
    for p in patches {
        out.push_str(&command(p, &p.to));
        out.push('\n');
    }
    out.push_str("\n# To roll back (MetalLB's names):\n");
    for p in patches {
        out.push_str("# ");
        out.push_str(&command(p, &p.from));
        out.push('\n');
    }
    out
}

/// `s` quoted for a POSIX shell.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pool(namespace: &str, name: &str, addresses: &[&str]) -> PoolSource {
        PoolSource {
            origin: Origin::new(namespace, name),
            addresses: addresses.iter().map(|a| (*a).to_owned()).collect(),
            ..PoolSource::default()
        }
    }

    fn svc(name: &str, annotations: serde_json::Value, ip: &str) -> Service {
        serde_json::from_value(json!({
            "metadata": { "namespace": "web", "name": name, "annotations": annotations },
            "spec": { "type": "LoadBalancer" },
            "status": { "loadBalancer": { "ingress": [{ "ip": ip }] } },
        }))
        .unwrap()
    }

    #[test]
    fn pool_annotations_follow_renamed_pools() {
        let pools = [
            pool("a", "prod", &["198.18.0.0/28"]),
            pool("b", "prod", &["198.18.1.0/28"]),
            pool("a", "lab", &["198.18.2.0/28"]),
            pool("a", "Legacy Pool", &["198.18.3.0/28"]),
        ];
        let names: BTreeMap<Origin, String> = [
            (Origin::new("a", "prod"), "a-prod"),
            (Origin::new("b", "prod"), "b-prod"),
            (Origin::new("a", "lab"), "lab"),
            (Origin::new("a", "Legacy Pool"), "legacy-pool"),
        ]
        .into_iter()
        .map(|(o, n)| (o, n.to_owned()))
        .collect();
        let services = [
            svc(
                "in-b",
                json!({ "metallb.universe.tf/address-pool": "prod" }),
                "198.18.1.4",
            ),
            svc(
                "both-spellings",
                json!({ "metallb.io/address-pool": "prod", "metallb.universe.tf/address-pool": "prod" }),
                "198.18.0.4",
            ),
            svc(
                "unchanged",
                json!({ "metallb.io/address-pool": "lab" }),
                "198.18.2.1",
            ),
            svc(
                "free-text",
                json!({ "metallb.universe.tf/address-pool": "Legacy Pool" }),
                "198.18.3.1",
            ),
            svc("pending", json!({ "metallb.io/address-pool": "prod" }), ""),
            svc(
                "bgp",
                json!({ "metallb.io/address-pool": "bgp-only" }),
                "198.18.9.1",
            ),
        ];
        let mut warnings = Vec::new();
        let got = patches(&services, &pools, &names, &mut warnings);
        let got: Vec<(String, &str, &str, &str)> = got
            .iter()
            .map(|p| {
                (
                    p.service.to_string(),
                    p.annotation.as_str(),
                    p.from.as_str(),
                    p.to.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (
                    "web/in-b".to_owned(),
                    "metallb.universe.tf/address-pool",
                    "prod",
                    "b-prod"
                ),
                (
                    "web/both-spellings".to_owned(),
                    "metallb.io/address-pool",
                    "prod",
                    "a-prod"
                ),
                (
                    "web/both-spellings".to_owned(),
                    "metallb.universe.tf/address-pool",
                    "prod",
                    "a-prod"
                ),
                (
                    "web/free-text".to_owned(),
                    "metallb.universe.tf/address-pool",
                    "Legacy Pool",
                    "legacy-pool"
                ),
            ]
        );
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains("web/pending") && warnings[0].contains("a-prod, b-prod"));
        assert!(warnings[1].contains("web/bgp") && warnings[1].contains("not converted"));
    }

    #[test]
    fn the_script_quotes_and_undoes() {
        let p = Patch {
            service: Origin::new("web", "front"),
            annotation: "metallb.universe.tf/address-pool".into(),
            from: "Legacy Pool".into(),
            to: "legacy-pool".into(),
        };
        let s = script(&[p]);
        assert!(s.starts_with("#!/bin/sh\n"));
        assert!(s.contains("\nkubectl annotate --overwrite service --namespace 'web' 'front' 'metallb.universe.tf/address-pool=legacy-pool'\n"));
        assert!(s.contains("\n# kubectl annotate --overwrite service --namespace 'web' 'front' 'metallb.universe.tf/address-pool=Legacy Pool'\n"));
        assert_eq!(quote("it's"), r"'it'\''s'");
    }
}
