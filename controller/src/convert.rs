//! `ferrolb-controller convert`: MetalLB configuration in, equivalent FerroLB
//! resources out. Pure: YAML text in, YAML text and warnings out.
//!
//! Accepted input, as multi-document YAML:
//! - the ConfigMap of MetalLB before 0.13 (`data.config` with `address-pools`), or
//!   that `config` document on its own;
//! - MetalLB `IPAddressPool` and `L2Advertisement` objects (`metallb.io/v1beta1`),
//!   alone or in a `List` as `kubectl get -o yaml` prints them.
//!
//! BGP configuration has no FerroLB equivalent (it announces in layer 2) and is
//! reported, as is every field it does not know.

use serde::Deserialize;
use serde_json::{Map, Value, json};
use thiserror::Error;

/// The input cannot be read at all.
#[derive(Debug, Error)]
pub enum ConvertError {
    /// A document is not YAML.
    #[error("document {index} is not valid YAML: {source}")]
    Yaml {
        /// 1-based document number.
        index: usize,
        /// The parser's error.
        source: serde_yaml::Error,
    },
    /// The ConfigMap's `config` key is not valid YAML.
    #[error("the ConfigMap's data.config is not valid YAML: {0}")]
    Config(serde_yaml::Error),
    /// An output object cannot be rendered.
    #[error("cannot render the output: {0}")]
    Render(serde_yaml::Error),
}

/// The converted resources and what could not be converted.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Conversion {
    /// FerroLB resources, multi-document YAML.
    pub yaml: String,
    /// One line per thing not converted or changed on the way.
    pub warnings: Vec<String>,
}

const API_VERSION: &str = "ferrolb.io/v1beta1";

/// Converts MetalLB configuration to FerroLB resources.
pub fn convert(input: &str) -> Result<Conversion, ConvertError> {
    let mut out = Output::default();
    for (i, doc) in serde_yaml::Deserializer::from_str(input).enumerate() {
        let value = Value::deserialize(doc).map_err(|source| ConvertError::Yaml {
            index: i + 1,
            source,
        })?;
        let Value::Object(object) = value else {
            if !value.is_null() {
                out.warn(format!("document {} is not an object; skipped", i + 1));
            }
            continue;
        };
        out.document(&object)?;
    }
    if out.objects.is_empty() {
        out.warn("no MetalLB layer-2 configuration found in the input".to_owned());
    }
    let mut yaml = String::new();
    for object in &out.objects {
        yaml.push_str("---\n");
        yaml.push_str(&serde_yaml::to_string(object).map_err(ConvertError::Render)?);
    }
    Ok(Conversion {
        yaml,
        warnings: out.warnings,
    })
}

#[derive(Debug, Default)]
struct Output {
    objects: Vec<Value>,
    warnings: Vec<String>,
}

impl Output {
    fn warn(&mut self, message: String) {
        self.warnings.push(message);
    }

    fn document(&mut self, object: &Map<String, Value>) -> Result<(), ConvertError> {
        let kind = object.get("kind").and_then(Value::as_str).unwrap_or("");
        let name = object
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        match kind {
            "ConfigMap" => {
                let Some(config) = object
                    .get("data")
                    .and_then(|d| d.get("config"))
                    .and_then(Value::as_str)
                else {
                    self.warn(format!(
                        "ConfigMap {name:?} has no data.config key; skipped"
                    ));
                    return Ok(());
                };
                let config: Value = serde_yaml::from_str(config).map_err(ConvertError::Config)?;
                match config {
                    Value::Object(c) => self.legacy_config(&c),
                    _ => self.warn(format!(
                        "ConfigMap {name:?} data.config is not a mapping; skipped"
                    )),
                }
            }
            "" if object.contains_key("address-pools") || object.contains_key("peers") => {
                self.legacy_config(object);
            }
            // What `kubectl get -o yaml` prints for several objects.
            "List" => {
                for item in object
                    .get("items")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    match item.as_object() {
                        Some(o) => self.document(o)?,
                        None => self.warn("a List item is not an object; skipped".to_owned()),
                    }
                }
            }
            "IPAddressPool" => self.pool(&name, object),
            "L2Advertisement" => self.advertisement(&name, object),
            "BGPPeer" | "BGPAdvertisement" | "BFDProfile" | "Community" => self.warn(format!(
                "{kind} {name:?} not converted: FerroLB announces in layer 2 only (no BGP)"
            )),
            other => self.warn(format!(
                "{} {name:?} is not MetalLB configuration; skipped",
                if other.is_empty() {
                    "an object without kind"
                } else {
                    other
                }
            )),
        }
        Ok(())
    }

    /// MetalLB's ConfigMap-era `config`: `address-pools`, `peers`, `bgp-communities`.
    fn legacy_config(&mut self, config: &Map<String, Value>) {
        let mut layer2 = Vec::new();
        for (key, value) in config {
            match key.as_str() {
                "address-pools" => {
                    for pool in value.as_array().into_iter().flatten() {
                        if let Some(name) = self.legacy_pool(pool) {
                            layer2.push(name);
                        }
                    }
                }
                "peers" | "bgp-communities" | "bfd-profiles" => self.warn(format!(
                    "config.{key} not converted: FerroLB announces in layer 2 only (no BGP)"
                )),
                other => self.warn(format!("config.{other} is unknown; not converted")),
            }
        }
        if !layer2.is_empty() {
            self.objects.push(json!({
                "apiVersion": API_VERSION,
                "kind": "L2Advertisement",
                "metadata": { "name": "layer2" },
                "spec": { "ipAddressPools": layer2 },
            }));
        }
    }

    /// One entry of `address-pools`; returns its name when converted.
    fn legacy_pool(&mut self, pool: &Value) -> Option<String> {
        let Some(pool) = pool.as_object() else {
            self.warn("an address-pools entry is not a mapping; skipped".to_owned());
            return None;
        };
        let name = pool.get("name").and_then(Value::as_str).unwrap_or("");
        if name.is_empty() {
            self.warn("an address-pools entry has no name; skipped".to_owned());
            return None;
        }
        let protocol = pool.get("protocol").and_then(Value::as_str).unwrap_or("");
        if protocol != "layer2" {
            self.warn(format!(
                "address pool {name:?} uses protocol {protocol:?}, not layer2; not converted (FerroLB announces in layer 2 only)"
            ));
            return None;
        }
        let mut spec = Map::new();
        for (key, value) in pool {
            match key.as_str() {
                "name" | "protocol" => {}
                "addresses" => {
                    spec.insert("addresses".into(), self.addresses(name, value));
                }
                "auto-assign" => {
                    spec.insert("autoAssign".into(), value.clone());
                }
                "avoid-buggy-ips" => {
                    spec.insert("avoidBuggyIPs".into(), value.clone());
                }
                "bgp-advertisements" => self.warn(format!(
                    "address pool {name:?}: bgp-advertisements not converted (no BGP)"
                )),
                other => self.warn(format!(
                    "address pool {name:?}: field {other} is unknown; not converted"
                )),
            }
        }
        self.push_pool(name, spec);
        Some(name.to_owned())
    }

    /// A `metallb.io` IPAddressPool.
    fn pool(&mut self, name: &str, object: &Map<String, Value>) {
        let mut spec = Map::new();
        let empty = Map::new();
        let source = object
            .get("spec")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        for (key, value) in source {
            match key.as_str() {
                "addresses" => {
                    spec.insert(key.clone(), self.addresses(name, value));
                }
                "autoAssign" | "avoidBuggyIPs" | "serviceAllocation" => {
                    spec.insert(key.clone(), value.clone());
                }
                other => self.warn(format!(
                    "IPAddressPool {name:?}: spec.{other} is unknown; not converted"
                )),
            }
        }
        self.push_pool(name, spec);
    }

    fn push_pool(&mut self, name: &str, spec: Map<String, Value>) {
        self.objects.push(json!({
            "apiVersion": API_VERSION,
            "kind": "IPAddressPool",
            "metadata": { "name": name },
            "spec": spec,
        }));
    }

    /// A `metallb.io` L2Advertisement.
    fn advertisement(&mut self, name: &str, object: &Map<String, Value>) {
        let mut spec = Map::new();
        let empty = Map::new();
        let source = object
            .get("spec")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        for (key, value) in source {
            match key.as_str() {
                "ipAddressPools" | "ipAddressPoolSelectors" | "nodeSelectors" | "interfaces" => {
                    spec.insert(key.clone(), value.clone());
                }
                other => self.warn(format!(
                    "L2Advertisement {name:?}: spec.{other} is unknown; not converted"
                )),
            }
        }
        self.objects.push(json!({
            "apiVersion": API_VERSION,
            "kind": "L2Advertisement",
            "metadata": { "name": name },
            "spec": spec,
        }));
    }

    /// Address entries, written the way FerroLB accepts them: MetalLB tolerates spaces
    /// around the `-` of a range, FerroLB does not. Entries FerroLB cannot parse are
    /// dropped with a warning.
    fn addresses(&mut self, pool: &str, value: &Value) -> Value {
        let mut out = Vec::new();
        for entry in value.as_array().into_iter().flatten() {
            let Some(raw) = entry.as_str() else {
                self.warn(format!(
                    "pool {pool:?}: address {entry} is not a string; dropped"
                ));
                continue;
            };
            let compact: String = raw.chars().filter(|c| !c.is_whitespace()).collect();
            match ferrolb_address::parse_entry(&compact) {
                Ok(_) => out.push(Value::String(compact)),
                Err(e) => self.warn(format!("pool {pool:?}: {e}; entry dropped")),
            }
        }
        Value::Array(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrolb_crds::{IPAddressPool, L2Advertisement};

    fn docs(yaml: &str) -> Vec<Value> {
        serde_yaml::Deserializer::from_str(yaml)
            .map(|d| Value::deserialize(d).unwrap())
            .filter(|v| !v.is_null())
            .collect()
    }

    #[test]
    fn conversion_table() {
        struct Case {
            name: &'static str,
            input: &'static str,
            objects: Vec<Value>,
            warnings: &'static [&'static str],
        }
        let cases = [
            Case {
                name: "ConfigMap with a layer2 pool and a bgp pool",
                input: r#"
apiVersion: v1
kind: ConfigMap
metadata: { name: config, namespace: metallb-system }
data:
  config: |
    peers:
    - peer-address: 10.0.0.1
    address-pools:
    - name: default
      protocol: layer2
      addresses: [198.18.0.10 - 198.18.0.20, 198.18.1.0/28]
      auto-assign: false
      avoid-buggy-ips: true
    - name: bgp
      protocol: bgp
      addresses: [198.18.2.0/24]
"#,
                objects: vec![
                    json!({ "apiVersion": API_VERSION, "kind": "IPAddressPool", "metadata": { "name": "default" },
                            "spec": { "addresses": ["198.18.0.10-198.18.0.20", "198.18.1.0/28"], "autoAssign": false, "avoidBuggyIPs": true } }),
                    json!({ "apiVersion": API_VERSION, "kind": "L2Advertisement", "metadata": { "name": "layer2" },
                            "spec": { "ipAddressPools": ["default"] } }),
                ],
                warnings: &["address pool \"bgp\"", "config.peers"],
            },
            Case {
                name: "bare config document",
                input: "address-pools:\n- name: lan\n  protocol: layer2\n  addresses: [2001:db8::/120]\n  foo: 1\n",
                objects: vec![
                    json!({ "apiVersion": API_VERSION, "kind": "IPAddressPool", "metadata": { "name": "lan" },
                            "spec": { "addresses": ["2001:db8::/120"] } }),
                    json!({ "apiVersion": API_VERSION, "kind": "L2Advertisement", "metadata": { "name": "layer2" },
                            "spec": { "ipAddressPools": ["lan"] } }),
                ],
                warnings: &["field foo is unknown"],
            },
            Case {
                name: "MetalLB CRs, multi-document, BGP warned",
                input: r#"
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: { name: prod, namespace: metallb-system }
spec:
  addresses: [198.18.0.0/28]
  autoAssign: true
  serviceAllocation: { priority: 10, namespaces: [web] }
  unknownThing: 1
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: { name: l2, namespace: metallb-system }
spec:
  ipAddressPools: [prod]
  interfaces: [eth0]
---
apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata: { name: router }
spec: { peerAddress: 10.0.0.1 }
"#,
                objects: vec![
                    json!({ "apiVersion": API_VERSION, "kind": "IPAddressPool", "metadata": { "name": "prod" },
                            "spec": { "addresses": ["198.18.0.0/28"], "autoAssign": true,
                                      "serviceAllocation": { "priority": 10, "namespaces": ["web"] } } }),
                    json!({ "apiVersion": API_VERSION, "kind": "L2Advertisement", "metadata": { "name": "l2" },
                            "spec": { "ipAddressPools": ["prod"], "interfaces": ["eth0"] } }),
                ],
                warnings: &["spec.unknownThing", "BGPPeer \"router\""],
            },
            Case {
                name: "a List as kubectl prints it",
                input: "apiVersion: v1\nkind: List\nitems:\n- apiVersion: metallb.io/v1beta1\n  kind: IPAddressPool\n  metadata: { name: a, namespace: metallb-system }\n  spec: { addresses: [198.18.0.1] }\n",
                objects: vec![
                    json!({ "apiVersion": API_VERSION, "kind": "IPAddressPool", "metadata": { "name": "a" },
                                      "spec": { "addresses": ["198.18.0.1"] } }),
                ],
                warnings: &[],
            },
            Case {
                name: "bad address entry is dropped with a warning",
                input: "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: { name: p }\nspec:\n  addresses: [198.18.0.5/24, 198.18.0.7]\n",
                objects: vec![
                    json!({ "apiVersion": API_VERSION, "kind": "IPAddressPool", "metadata": { "name": "p" },
                                      "spec": { "addresses": ["198.18.0.7"] } }),
                ],
                warnings: &["198.18.0.5/24"],
            },
            Case {
                name: "nothing to convert",
                input: "apiVersion: v1\nkind: Secret\nmetadata: { name: x }\n",
                objects: vec![],
                warnings: &["Secret \"x\" is not MetalLB", "no MetalLB layer-2"],
            },
        ];
        for case in cases {
            let got = convert(case.input).unwrap_or_else(|e| panic!("{}: {e}", case.name));
            assert_eq!(docs(&got.yaml), case.objects, "{}", case.name);
            assert_eq!(
                got.warnings.len(),
                case.warnings.len(),
                "{}: {:?}",
                case.name,
                got.warnings
            );
            for (w, want) in got.warnings.iter().zip(case.warnings) {
                assert!(w.contains(want), "{}: {w:?} lacks {want:?}", case.name);
            }
        }
    }

    #[test]
    fn output_parses_as_ferrolb_types() {
        let got = convert(
            "address-pools:\n- name: lan\n  protocol: layer2\n  addresses: [198.18.0.0/28]\n",
        )
        .unwrap();
        let objects = docs(&got.yaml);
        let pool: IPAddressPool = serde_json::from_value(objects[0].clone()).unwrap();
        assert_eq!(pool.spec.addresses[0].as_str(), "198.18.0.0/28");
        assert!(pool.spec.auto_assign);
        let l2: L2Advertisement = serde_json::from_value(objects[1].clone()).unwrap();
        assert_eq!(l2.spec.ip_address_pools[0].as_str(), "lan");
    }

    #[test]
    fn invalid_yaml_is_an_error() {
        assert!(matches!(
            convert("a: [unclosed"),
            Err(ConvertError::Yaml { index: 1, .. })
        ));
    }
}
