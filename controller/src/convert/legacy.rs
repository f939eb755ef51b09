//! MetalLB's configuration before 0.13: the `config` key of its ConfigMap, with
//! `address-pools` (each `protocol: layer2` or `bgp`), `peers`, `bgp-communities` and
//! `bfd-profiles`. Layer-2 pools become pools and one advertisement of all of them.

use serde_json::{Map, Value};

use super::source::{AdvertisementSource, Origin, PoolSource, addresses};

/// The keys that make a mapping MetalLB configuration.
const KEYS: [&str; 4] = ["address-pools", "peers", "bgp-communities", "bfd-profiles"];

/// Whether `config` is MetalLB's.
pub(super) fn is_config(config: &Map<String, Value>) -> bool {
    KEYS.iter().any(|k| config.contains_key(*k))
}

/// The layer-2 pools of one configuration.
#[derive(Debug, Default)]
pub(super) struct Config {
    pools: Vec<PoolSource>,
}

impl Config {
    /// Reads `config` (from the ConfigMap at `origin`); what has no FerroLB equivalent
    /// is reported in `warnings`.
    pub(super) fn read(
        origin: &Origin,
        config: &Map<String, Value>,
        warnings: &mut Vec<String>,
    ) -> Self {
        let mut out = Self::default();
        for (key, value) in config {
            match key.as_str() {
                "address-pools" => {
                    for pool in value.as_array().into_iter().flatten() {
                        if let Some(p) = read_pool(origin, pool, warnings) {
                            out.pools.push(p);
                        }
                    }
                }
                "peers" | "bgp-communities" | "bfd-profiles" => warnings.push(format!(
                    "ConfigMap {origin}: {key} not converted: FerroLB announces in layer 2 only (no BGP)"
                )),
                other => warnings.push(format!(
                    "ConfigMap {origin}: {other} is unknown; not converted"
                )),
            }
        }
        out
    }

    /// The pools, and the advertisement of all of them that layer-2 mode implied
    /// (named `layer2`, in the ConfigMap's namespace).
    pub(super) fn into_sources(
        self,
        origin: &Origin,
    ) -> (Vec<PoolSource>, Option<AdvertisementSource>) {
        if self.pools.is_empty() {
            return (self.pools, None);
        }
        let l2a = AdvertisementSource {
            origin: Origin::new(origin.namespace.clone(), "layer2"),
            described: format!("ConfigMap {origin} (its layer2 pools)"),
            pools: self.pools.iter().map(|p| p.origin.name.clone()).collect(),
            ..AdvertisementSource::default()
        };
        (self.pools, Some(l2a))
    }
}

/// One entry of `address-pools`, when it is a layer-2 pool.
fn read_pool(origin: &Origin, pool: &Value, warnings: &mut Vec<String>) -> Option<PoolSource> {
    let Some(pool) = pool.as_object() else {
        warnings.push(format!(
            "ConfigMap {origin}: an address-pools entry is not a mapping; skipped"
        ));
        return None;
    };
    let name = pool.get("name").and_then(Value::as_str).unwrap_or("");
    if name.is_empty() {
        warnings.push(format!(
            "ConfigMap {origin}: an address-pools entry has no name; skipped"
        ));
        return None;
    }
    let described = format!("ConfigMap {origin}, address pool {name:?}");
    let protocol = pool.get("protocol").and_then(Value::as_str).unwrap_or("");
    if protocol != "layer2" {
        warnings.push(format!(
            "{described} uses protocol {protocol:?}, not layer2; not converted (FerroLB announces in layer 2 only)"
        ));
        return None;
    }
    let mut out = PoolSource::default();
    for (key, value) in pool {
        match key.as_str() {
            "name" | "protocol" => {}
            "addresses" => out.addresses = addresses(&described, value, warnings),
            "auto-assign" => out.auto_assign = value.as_bool(),
            "avoid-buggy-ips" => out.avoid_buggy_ips = value.as_bool(),
            "bgp-advertisements" => warnings.push(format!(
                "{described}: bgp-advertisements not converted (no BGP)"
            )),
            other => warnings.push(format!(
                "{described}: field {other} is unknown; not converted"
            )),
        }
    }
    out.origin = Origin::new(origin.namespace.clone(), name);
    out.described = described;
    Some(out)
}
