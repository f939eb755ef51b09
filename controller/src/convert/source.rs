//! Reading a MetalLB dump: multi-document YAML, `List`s as `kubectl get -A -o yaml`
//! prints them, MetalLB's custom resources, its ConfigMap of before 0.13, Services and
//! Namespaces. Everything else is counted and skipped.
//!
//! The result is MetalLB's configuration as MetalLB sees it, each object keyed by its
//! namespace and name ([`Origin`]); nothing here knows FerroLB's names.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use k8s_openapi::api::core::v1::{Namespace, Service};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::ConvertError;
use super::legacy;

/// Where a MetalLB object lived: its namespace (empty for a bare `config` document)
/// and its name.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Origin {
    /// The namespace.
    pub namespace: String,
    /// The name.
    pub name: String,
}

impl Origin {
    /// An origin.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            f.write_str(&self.name)
        } else {
            write!(f, "{}/{}", self.namespace, self.name)
        }
    }
}

/// Labels or annotations.
pub type Labels = BTreeMap<String, String>;

/// A MetalLB address pool: an `IPAddressPool` or an `address-pools` entry of the
/// ConfigMap, with the fields FerroLB has an equivalent for.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PoolSource {
    /// Namespace and name.
    pub origin: Origin,
    /// What it was, for provenance (e.g. `IPAddressPool metallb-system/prod`).
    pub described: String,
    /// Its labels (`ipAddressPoolSelectors` select on them).
    pub labels: Labels,
    /// Its annotations.
    pub annotations: Labels,
    /// Address entries as FerroLB writes them (already checked).
    pub addresses: Vec<String>,
    /// `autoAssign`.
    pub auto_assign: Option<bool>,
    /// `avoidBuggyIPs`.
    pub avoid_buggy_ips: Option<bool>,
    /// `serviceAllocation` without `priority`, if set.
    pub allocation: Option<Map<String, Value>>,
    /// `serviceAllocation.priority` as MetalLB wrote it (0 means unset there).
    pub priority: Option<i64>,
}

/// A MetalLB `L2Advertisement` (or the one implied by a ConfigMap's layer-2 pools).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AdvertisementSource {
    /// Namespace and name.
    pub origin: Origin,
    /// What it was, for provenance.
    pub described: String,
    /// Its labels.
    pub labels: Labels,
    /// Its annotations.
    pub annotations: Labels,
    /// `ipAddressPools`: names of pools in the same namespace.
    pub pools: Vec<String>,
    /// `ipAddressPoolSelectors`, as written.
    pub pool_selectors: Vec<Value>,
    /// `nodeSelectors`, as written.
    pub node_selectors: Vec<Value>,
    /// `interfaces`, as written.
    pub interfaces: Vec<Value>,
}

/// Everything read from the input.
#[derive(Debug, Default)]
pub struct Dump {
    /// Address pools, in input order.
    pub pools: Vec<PoolSource>,
    /// Layer-2 advertisements, in input order.
    pub advertisements: Vec<AdvertisementSource>,
    /// LoadBalancer Services.
    pub services: Vec<Service>,
    /// Namespaces (their labels decide `namespaceSelectors`).
    pub namespaces: Vec<Namespace>,
    /// What could not be converted or was changed on the way.
    pub warnings: Vec<String>,
    /// ConfigMap-era configurations, converted only where no custom resources exist.
    legacy: Vec<(Origin, legacy::Config)>,
    /// Kinds skipped as not MetalLB configuration, with counts.
    skipped: BTreeMap<String, usize>,
}

/// MetalLB kinds that configure BGP, which FerroLB does not speak.
const BGP_KINDS: [&str; 4] = ["BGPPeer", "BGPAdvertisement", "BFDProfile", "Community"];

/// MetalLB's API group.
const METALLB_GROUP: &str = "metallb.io/";

impl Dump {
    /// Reads every document of `input`.
    pub fn read(input: &str) -> Result<Self, ConvertError> {
        let mut dump = Self::default();
        for (i, doc) in serde_yaml::Deserializer::from_str(input).enumerate() {
            let value = Value::deserialize(doc).map_err(|source| ConvertError::Yaml {
                index: i + 1,
                source,
            })?;
            match value {
                Value::Null => {}
                Value::Object(object) => dump.object(&object)?,
                _ => dump
                    .warnings
                    .push(format!("document {} is not an object; skipped", i + 1)),
            }
        }
        dump.finish();
        Ok(dump)
    }

    fn object(&mut self, object: &Map<String, Value>) -> Result<(), ConvertError> {
        let kind = str_at(object, "kind");
        let api_version = str_at(object, "apiVersion");
        let origin = origin_of(object);
        let metallb = api_version.starts_with(METALLB_GROUP);
        match kind {
            "List" => {
                for item in object
                    .get("items")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    match item.as_object() {
                        Some(o) => self.object(o)?,
                        None => self
                            .warnings
                            .push("a List item is not an object; skipped".to_owned()),
                    }
                }
            }
            "IPAddressPool" if metallb => self.pool(origin, object),
            "L2Advertisement" if metallb => self.advertisement(origin, object),
            k if metallb && BGP_KINDS.contains(&k) => self.warnings.push(format!(
                "{k} {origin} not converted: FerroLB announces in layer 2 only (no BGP)"
            )),
            "Service" if api_version == "v1" => self.service(object),
            "Namespace" if api_version == "v1" => {
                if let Ok(ns) = serde_json::from_value(Value::Object(object.clone())) {
                    self.namespaces.push(ns);
                }
            }
            "ConfigMap" if api_version == "v1" => self.config_map(origin, object)?,
            "" if object.contains_key("address-pools") || object.contains_key("peers") => {
                self.legacy_config(Origin::new("", "config"), object);
            }
            other => self.skip(if other.is_empty() {
                "object without kind"
            } else {
                other
            }),
        }
        Ok(())
    }

    fn skip(&mut self, kind: &str) {
        *self.skipped.entry(kind.to_owned()).or_default() += 1;
    }

    /// A ConfigMap is MetalLB's when its `config` key holds MetalLB configuration. One
    /// whose `config` is not YAML is skipped like any other ConfigMap, unless its name
    /// or namespace says it is MetalLB's: then it is an error.
    fn config_map(
        &mut self,
        origin: Origin,
        object: &Map<String, Value>,
    ) -> Result<(), ConvertError> {
        let Some(text) = object
            .get("data")
            .and_then(|d| d.get("config"))
            .and_then(Value::as_str)
        else {
            self.skip("ConfigMap");
            return Ok(());
        };
        let looks_like_metallb =
            origin.namespace.contains("metallb") || origin.name.contains("metallb");
        match serde_yaml::from_str::<Value>(text) {
            Ok(Value::Object(config)) if legacy::is_config(&config) => {
                self.legacy_config(origin, &config);
            }
            Err(source) if looks_like_metallb => {
                return Err(ConvertError::Config {
                    config_map: origin.to_string(),
                    source,
                });
            }
            _ => self.skip("ConfigMap"),
        }
        Ok(())
    }

    fn legacy_config(&mut self, origin: Origin, config: &Map<String, Value>) {
        let parsed = legacy::Config::read(&origin, config, &mut self.warnings);
        self.legacy.push((origin, parsed));
    }

    fn pool(&mut self, origin: Origin, object: &Map<String, Value>) {
        let described = format!("IPAddressPool {origin}");
        let mut pool = PoolSource {
            labels: labels_at(object, "labels"),
            annotations: labels_at(object, "annotations"),
            ..PoolSource::default()
        };
        let empty = Map::new();
        let spec = object
            .get("spec")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        for (key, value) in spec {
            match key.as_str() {
                "addresses" => pool.addresses = addresses(&described, value, &mut self.warnings),
                "autoAssign" => pool.auto_assign = value.as_bool(),
                "avoidBuggyIPs" => pool.avoid_buggy_ips = value.as_bool(),
                "serviceAllocation" => {
                    let (allocation, priority) =
                        service_allocation(&described, value, &mut self.warnings);
                    pool.allocation = allocation;
                    pool.priority = priority;
                }
                other => self.warnings.push(format!(
                    "{described}: spec.{other} has no FerroLB equivalent; not converted"
                )),
            }
        }
        pool.origin = origin;
        pool.described = described;
        self.push_pool(pool);
    }

    pub(super) fn push_pool(&mut self, pool: PoolSource) {
        if self.pools.iter().any(|p| p.origin == pool.origin) {
            self.warnings.push(format!(
                "{} appears twice in the input; the first one is converted",
                pool.described
            ));
            return;
        }
        self.pools.push(pool);
    }

    fn advertisement(&mut self, origin: Origin, object: &Map<String, Value>) {
        let described = format!("L2Advertisement {origin}");
        let mut l2a = AdvertisementSource {
            labels: labels_at(object, "labels"),
            annotations: labels_at(object, "annotations"),
            ..AdvertisementSource::default()
        };
        let empty = Map::new();
        let spec = object
            .get("spec")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        for (key, value) in spec {
            let list = value.as_array().cloned().unwrap_or_default();
            match key.as_str() {
                "ipAddressPools" => {
                    l2a.pools = list
                        .iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect();
                }
                "ipAddressPoolSelectors" => l2a.pool_selectors = list,
                "nodeSelectors" => l2a.node_selectors = list,
                "interfaces" => l2a.interfaces = list,
                other => self.warnings.push(format!(
                    "{described}: spec.{other} has no FerroLB equivalent; not converted"
                )),
            }
        }
        l2a.origin = origin;
        l2a.described = described;
        self.push_advertisement(l2a);
    }

    pub(super) fn push_advertisement(&mut self, l2a: AdvertisementSource) {
        if self.advertisements.iter().any(|a| a.origin == l2a.origin) {
            self.warnings.push(format!(
                "{} appears twice in the input; the first one is converted",
                l2a.described
            ));
            return;
        }
        self.advertisements.push(l2a);
    }

    fn service(&mut self, object: &Map<String, Value>) {
        let is_lb = object
            .get("spec")
            .and_then(|s| s.get("type"))
            .and_then(Value::as_str)
            == Some("LoadBalancer");
        if !is_lb {
            return;
        }
        match serde_json::from_value::<Service>(Value::Object(object.clone())) {
            Ok(service) => self.services.push(service),
            Err(e) => self.warnings.push(format!(
                "Service {} cannot be read ({e}); not checked",
                origin_of(object)
            )),
        }
    }

    /// ConfigMap-era configurations count only where no custom resources exist:
    /// MetalLB 0.13 and later ignore the ConfigMap (its own migration leaves it
    /// behind), so converting both would double every pool.
    fn finish(&mut self) {
        let modern: BTreeSet<String> = self
            .pools
            .iter()
            .map(|p| p.origin.namespace.clone())
            .chain(
                self.advertisements
                    .iter()
                    .map(|a| a.origin.namespace.clone()),
            )
            .collect();
        for (origin, config) in std::mem::take(&mut self.legacy) {
            if modern.contains(&origin.namespace) {
                self.warnings.push(format!(
                    "ConfigMap {origin} not converted: namespace {} also holds MetalLB custom resources, which MetalLB 0.13 and later use instead of the ConfigMap",
                    origin.namespace
                ));
                continue;
            }
            let (pools, l2a) = config.into_sources(&origin);
            for pool in pools {
                self.push_pool(pool);
            }
            if let Some(l2a) = l2a {
                self.push_advertisement(l2a);
            }
        }
        if !self.skipped.is_empty() {
            let listed: Vec<String> = self
                .skipped
                .iter()
                .map(|(kind, n)| format!("{n} {kind}"))
                .collect();
            self.warnings.push(format!(
                "skipped as not MetalLB configuration: {}",
                listed.join(", ")
            ));
        }
    }
}

fn str_at<'a>(object: &'a Map<String, Value>, key: &str) -> &'a str {
    object.get(key).and_then(Value::as_str).unwrap_or("")
}

fn origin_of(object: &Map<String, Value>) -> Origin {
    let meta = object.get("metadata");
    let field = |k: &str| {
        meta.and_then(|m| m.get(k))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    Origin::new(field("namespace"), field("name"))
}

fn labels_at(object: &Map<String, Value>, key: &str) -> Labels {
    object
        .get("metadata")
        .and_then(|m| m.get(key))
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// `serviceAllocation` without its priority, and the priority.
fn service_allocation(
    described: &str,
    value: &Value,
    warnings: &mut Vec<String>,
) -> (Option<Map<String, Value>>, Option<i64>) {
    let Some(source) = value.as_object() else {
        warnings.push(format!(
            "{described}: spec.serviceAllocation is not a mapping; not converted"
        ));
        return (None, None);
    };
    let mut out = Map::new();
    let mut priority = None;
    for (key, value) in source {
        match key.as_str() {
            "priority" => match value.as_i64() {
                Some(p) => priority = Some(p),
                None => warnings.push(format!(
                    "{described}: serviceAllocation.priority {value} is not an integer; not converted"
                )),
            },
            "namespaces" | "namespaceSelectors" | "serviceSelectors" => {
                out.insert(key.clone(), value.clone());
            }
            other => warnings.push(format!(
                "{described}: serviceAllocation.{other} has no FerroLB equivalent; not converted"
            )),
        }
    }
    (Some(out), priority)
}

/// Address entries written the way FerroLB accepts them: MetalLB tolerates spaces
/// around the `-` of a range, FerroLB does not. Entries FerroLB cannot parse are
/// dropped with a warning.
pub(super) fn addresses(described: &str, value: &Value, warnings: &mut Vec<String>) -> Vec<String> {
    let mut out = Vec::new();
    for entry in value.as_array().into_iter().flatten() {
        let Some(raw) = entry.as_str() else {
            warnings.push(format!(
                "{described}: address {entry} is not a string; dropped"
            ));
            continue;
        };
        let compact: String = raw.chars().filter(|c| !c.is_whitespace()).collect();
        match ferrolb_address::parse_entry(&compact) {
            Ok(_) => out.push(compact),
            Err(e) => warnings.push(format!("{described}: {e}; entry dropped")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_and_documents_are_read_alike() {
        let pool = "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: { name: a, namespace: metallb-system, labels: { tier: web } }\nspec: { addresses: [198.18.0.1 - 198.18.0.3] }\n";
        let list = format!(
            "apiVersion: v1\nkind: List\nitems:\n- {}",
            pool.replace('\n', "\n  ")
        );
        for input in [pool.to_owned(), list, format!("---\n{pool}---\n")] {
            let dump = Dump::read(&input).unwrap();
            assert_eq!(dump.pools.len(), 1, "{input}");
            let p = &dump.pools[0];
            assert_eq!(p.origin, Origin::new("metallb-system", "a"));
            assert_eq!(p.addresses, ["198.18.0.1-198.18.0.3"]);
            assert_eq!(p.labels["tier"], "web");
            assert!(dump.warnings.is_empty(), "{:?}", dump.warnings);
        }
    }

    #[test]
    fn unrelated_objects_are_summarised_not_listed() {
        let input = "apiVersion: v1\nkind: List\nitems:\n\
            - { apiVersion: v1, kind: ConfigMap, metadata: { name: a, namespace: x }, data: { config: 'listen = 8080' } }\n\
            - { apiVersion: v1, kind: ConfigMap, metadata: { name: b, namespace: x }, data: { other: y } }\n\
            - { apiVersion: v1, kind: Secret, metadata: { name: s, namespace: x } }\n\
            - { apiVersion: v1, kind: Service, metadata: { name: c, namespace: x }, spec: { type: ClusterIP } }\n";
        let dump = Dump::read(input).unwrap();
        assert!(dump.services.is_empty());
        assert_eq!(
            dump.warnings,
            ["skipped as not MetalLB configuration: 2 ConfigMap, 1 Secret"]
        );
    }

    #[test]
    fn a_broken_metallb_config_map_is_an_error() {
        let input = "apiVersion: v1\nkind: ConfigMap\nmetadata: { name: config, namespace: metallb-system }\ndata:\n  config: 'address-pools: [unclosed'\n";
        let err = Dump::read(input).unwrap_err().to_string();
        assert!(
            err.contains("ConfigMap metallb-system/config") && err.contains("not valid YAML"),
            "{err}"
        );
    }

    #[test]
    fn a_config_map_next_to_custom_resources_is_stale() {
        let input = "apiVersion: v1\nkind: ConfigMap\nmetadata: { name: config, namespace: metallb-system }\ndata:\n  config: |\n    address-pools:\n    - { name: old, protocol: layer2, addresses: [198.18.1.0/28] }\n---\napiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: { name: new, namespace: metallb-system }\nspec: { addresses: [198.18.0.0/28] }\n";
        let dump = Dump::read(input).unwrap();
        let names: Vec<&str> = dump.pools.iter().map(|p| p.origin.name.as_str()).collect();
        assert_eq!(names, ["new"]);
        assert!(dump.warnings[0].contains("MetalLB 0.13 and later use instead"));
    }
}
