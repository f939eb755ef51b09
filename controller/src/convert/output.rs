//! FerroLB objects for MetalLB's pools and layer-2 advertisements.
//!
//! What is kept from the MetalLB objects:
//! - every label (`ipAddressPoolSelectors` select pools by them);
//! - annotations, except those of the tools that created the MetalLB object
//!   (`kubectl.kubernetes.io/`, `meta.helm.sh/`, `argocd.argoproj.io/`, Flux's
//!   `*.toolkit.fluxcd.io/`, `kapp.k14s.io/`) and MetalLB's own: carried over they
//!   would make those tools treat the new object as one they manage, or mean nothing;
//! - the MetalLB object it came from, in the annotation `ferrolb.io/converted-from`.
//!
//! MetalLB pools are namespaced and an advertisement only sees pools of its own
//! namespace. When pools come from more than one namespace, each converted pool is
//! labelled `ferrolb.io/metallb-namespace=<namespace>` and every converted
//! advertisement's pool selectors (or, if it had none, a new one) require that label,
//! so each advertisement still covers exactly the pools it covered in MetalLB.

use std::collections::{BTreeMap, BTreeSet};

use ferrolb_crds::{IPAddressPool, L2Advertisement};
use kube::ResourceExt;
use serde_json::{Map, Value, json};

use super::ConvertError;
use super::names;
use super::priority::{self, Remap};
use super::source::{AdvertisementSource, Dump, Labels, Origin, PoolSource};

const API_VERSION: &str = "ferrolb.io/v1beta1";

/// Label naming the MetalLB namespace of a converted pool, when pools come from
/// several namespaces.
pub const NAMESPACE_LABEL: &str = "ferrolb.io/metallb-namespace";

/// Annotation naming the MetalLB object a FerroLB object was converted from.
pub const CONVERTED_FROM: &str = "ferrolb.io/converted-from";

/// Annotation prefixes that are not carried over (see the module documentation).
const DROPPED_ANNOTATIONS: [&str; 8] = [
    "kubectl.kubernetes.io/",
    "meta.helm.sh/",
    "argocd.argoproj.io/",
    "kustomize.toolkit.fluxcd.io/",
    "helm.toolkit.fluxcd.io/",
    "kapp.k14s.io/",
    "metallb.io/",
    "metallb.universe.tf/",
];

/// The FerroLB objects.
#[derive(Debug, Default)]
pub struct Resources {
    /// Pools, as they are printed.
    pub pools: Vec<Value>,
    /// The same pools as FerroLB's type (the printed YAML parses into them).
    pub typed_pools: Vec<IPAddressPool>,
    /// Advertisements, as they are printed.
    pub advertisements: Vec<Value>,
    /// The FerroLB name of each MetalLB pool.
    pub pool_names: BTreeMap<Origin, String>,
}

/// Builds the FerroLB objects of `dump`; what changes on the way goes to `warnings`.
pub fn build(dump: &Dump, warnings: &mut Vec<String>) -> Result<Resources, ConvertError> {
    let pool_names = names::assign(dump.pools.iter().map(|p| &p.origin));
    let l2a_names = names::assign(dump.advertisements.iter().map(|a| &a.origin));
    let namespaces: BTreeSet<&str> = dump
        .pools
        .iter()
        .map(|p| p.origin.namespace.as_str())
        .collect();
    let scoped = namespaces.len() > 1;
    if scoped {
        let listed: Vec<&str> = namespaces.iter().copied().collect();
        warnings.push(format!(
            "pools come from several namespaces ({}); each converted pool is labelled {NAMESPACE_LABEL}=<namespace> and every advertisement selects only pools of its own namespace, as in MetalLB",
            listed.join(", ")
        ));
    }
    let priorities = priorities(&dump.pools, &pool_names, warnings);
    let mut out = Resources::default();
    for (pool, priority) in dump.pools.iter().zip(priorities) {
        let name = &pool_names[&pool.origin];
        report_rename(
            "IPAddressPool",
            &pool.described,
            &pool.origin,
            name,
            warnings,
        );
        if pool.addresses.is_empty() {
            warnings.push(format!(
                "{} has no usable address; not converted",
                pool.described
            ));
            continue;
        }
        let value = pool_object(pool, name, priority, scoped);
        let typed: IPAddressPool =
            serde_json::from_value(value.clone()).map_err(|source| ConvertError::Output {
                object: format!("IPAddressPool {name}"),
                source,
            })?;
        out.pools.push(value);
        out.typed_pools.push(typed);
    }
    let converted: BTreeSet<&Origin> = dump
        .pools
        .iter()
        .filter(|p| !p.addresses.is_empty())
        .map(|p| &p.origin)
        .collect();
    for l2a in &dump.advertisements {
        let name = &l2a_names[&l2a.origin];
        report_rename(
            "L2Advertisement",
            &l2a.described,
            &l2a.origin,
            name,
            warnings,
        );
        let known = |pool: &str| {
            let origin = Origin::new(l2a.origin.namespace.clone(), pool);
            converted
                .contains(&origin)
                .then(|| pool_names[&origin].clone())
        };
        if let Some(value) = advertisement_object(l2a, name, scoped, known, warnings) {
            out.advertisements.push(value);
        }
    }
    for pool in &out.typed_pools {
        if !out.advertisements.iter().any(|a| covers(a, pool)) {
            warnings.push(format!(
                "IPAddressPool {} is covered by no L2Advertisement: FerroLB will assign its addresses but no node will announce them (MetalLB announced it by BGP, if at all)",
                pool.name_any()
            ));
        }
    }
    out.pool_names = pool_names
        .into_iter()
        .filter(|(o, _)| converted.contains(o))
        .collect();
    Ok(out)
}

/// Whether the converted advertisement `l2a` covers `pool`, by FerroLB's rules.
fn covers(l2a: &Value, pool: &IPAddressPool) -> bool {
    let Ok(l2a) = serde_json::from_value::<L2Advertisement>(l2a.clone()) else {
        return false;
    };
    let spec = &l2a.spec;
    (spec.ip_address_pools.is_empty() && spec.ip_address_pool_selectors.is_empty())
        || spec
            .ip_address_pools
            .iter()
            .any(|n| n.as_str() == pool.name_any())
        || spec.ip_address_pool_selectors.iter().any(|s| {
            crate::pool::selector("ipAddressPoolSelectors", s)
                .is_ok_and(|s| s.matches(pool.labels()))
        })
}

fn report_rename(
    kind: &str,
    described: &str,
    origin: &Origin,
    name: &str,
    warnings: &mut Vec<String>,
) {
    if origin.name == name {
        return;
    }
    let why = if names::sanitize(&origin.name) != origin.name {
        "FerroLB names are DNS subdomains"
    } else {
        "the name is used in several namespaces, and FerroLB's objects are cluster-scoped"
    };
    warnings.push(format!("{described} becomes {kind} {name} ({why})"));
}

/// The FerroLB priority of each pool, in order, with a warning when any changed.
fn priorities(
    pools: &[PoolSource],
    names: &BTreeMap<Origin, String>,
    warnings: &mut Vec<String>,
) -> Vec<Option<i32>> {
    let raw: Vec<Option<i64>> = pools.iter().map(|p| p.priority).collect();
    let (mapped, how) = priority::remap(&raw);
    let changes: Vec<String> = pools
        .iter()
        .zip(raw.iter().zip(&mapped))
        .filter_map(|(p, (from, to))| {
            let from = (*from)?;
            (Some(from) != to.map(i64::from)).then(|| {
                let to = to.map_or_else(|| "unset".to_owned(), |t| t.to_string());
                format!("{} {from} -> {to}", names[&p.origin])
            })
        })
        .collect();
    if changes.is_empty() {
        return mapped;
    }
    let why = match how {
        Remap::None => "MetalLB reads priority 0 as unset, tried after every prioritised pool",
        Remap::Shifted { .. } => {
            "FerroLB refuses negative priorities; every priority was raised by the same amount, keeping the order (and 0 means unset in MetalLB)"
        }
        Remap::Ranked => {
            "FerroLB refuses negative priorities and these span more than 32 bits; they were replaced by their rank, keeping the order"
        }
    };
    warnings.push(format!(
        "serviceAllocation.priority changed: {} ({why})",
        changes.join(", ")
    ));
    mapped
}

fn metadata(
    name: &str,
    labels: &Labels,
    annotations: &Labels,
    described: &str,
    extra_label: Option<(&str, &str)>,
) -> Value {
    let mut labels: Map<String, Value> = labels
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    if let Some((k, v)) = extra_label {
        labels.insert(k.to_owned(), Value::String(v.to_owned()));
    }
    let mut annotations: Map<String, Value> = annotations
        .iter()
        .filter(|(k, _)| !DROPPED_ANNOTATIONS.iter().any(|p| k.starts_with(p)))
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    annotations.insert(
        CONVERTED_FROM.to_owned(),
        Value::String(described.to_owned()),
    );
    let mut meta = Map::new();
    meta.insert("name".into(), Value::String(name.to_owned()));
    if !labels.is_empty() {
        meta.insert("labels".into(), Value::Object(labels));
    }
    meta.insert("annotations".into(), Value::Object(annotations));
    Value::Object(meta)
}

fn pool_object(pool: &PoolSource, name: &str, priority: Option<i32>, scoped: bool) -> Value {
    let mut spec = Map::new();
    spec.insert("addresses".into(), json!(pool.addresses));
    if let Some(a) = pool.auto_assign {
        spec.insert("autoAssign".into(), Value::Bool(a));
    }
    if let Some(a) = pool.avoid_buggy_ips {
        spec.insert("avoidBuggyIPs".into(), Value::Bool(a));
    }
    if let Some(allocation) = &pool.allocation {
        let mut allocation = allocation.clone();
        if let Some(p) = priority {
            allocation.insert("priority".into(), json!(p));
        }
        spec.insert("serviceAllocation".into(), Value::Object(allocation));
    }
    let scope = scoped.then_some((NAMESPACE_LABEL, pool.origin.namespace.as_str()));
    json!({
        "apiVersion": API_VERSION,
        "kind": "IPAddressPool",
        "metadata": metadata(name, &pool.labels, &pool.annotations, &pool.described, scope),
        "spec": spec,
    })
}

/// The advertisement, or `None` when it would announce nothing (every pool it
/// names is unknown and it has no selector).
fn advertisement_object(
    l2a: &AdvertisementSource,
    name: &str,
    scoped: bool,
    known: impl Fn(&str) -> Option<String>,
    warnings: &mut Vec<String>,
) -> Option<Value> {
    let mut pools = Vec::new();
    for pool in &l2a.pools {
        match known(pool) {
            Some(n) => pools.push(n),
            None => warnings.push(format!(
                "{}: pool {pool:?} is not converted in namespace {:?} (not in the input, BGP-only or without addresses); reference dropped",
                l2a.described, l2a.origin.namespace
            )),
        }
    }
    if pools.is_empty() && !l2a.pools.is_empty() && l2a.pool_selectors.is_empty() {
        warnings.push(format!(
            "{} announces no converted pool; not converted",
            l2a.described
        ));
        return None;
    }
    let mut selectors = l2a.pool_selectors.clone();
    if scoped {
        if selectors.is_empty() && l2a.pools.is_empty() {
            // "Every pool" meant every pool of its namespace.
            selectors.push(json!({}));
        }
        for selector in &mut selectors {
            if let Value::Object(s) = selector {
                let labels = s
                    .entry("matchLabels")
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(labels) = labels {
                    labels.insert(
                        NAMESPACE_LABEL.into(),
                        Value::String(l2a.origin.namespace.clone()),
                    );
                }
            }
        }
    }
    let mut spec = Map::new();
    if !pools.is_empty() {
        spec.insert("ipAddressPools".into(), json!(pools));
    }
    for (key, list) in [
        ("ipAddressPoolSelectors", &selectors),
        ("nodeSelectors", &l2a.node_selectors),
        ("interfaces", &l2a.interfaces),
    ] {
        if !list.is_empty() {
            spec.insert(key.into(), Value::Array(list.clone()));
        }
    }
    Some(json!({
        "apiVersion": API_VERSION,
        "kind": "L2Advertisement",
        "metadata": metadata(name, &l2a.labels, &l2a.annotations, &l2a.described, None),
        "spec": spec,
    }))
}
