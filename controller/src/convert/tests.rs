//! The conversion as a whole: tables of small inputs, and two realistic MetalLB dumps
//! (`testdata/`) whose output is parsed as FerroLB's types, checked against the CRDs'
//! CEL rules, and checked to keep every Service's IP and every advertisement's pools.

use std::collections::{BTreeMap, BTreeSet};

use ferrolb_crds::{IPAddressPool, L2Advertisement};
use k8s_openapi::api::core::v1::Service;
use kube::{CustomResourceExt, ResourceExt};
use serde_json::{Value, json};

use super::output::{CONVERTED_FROM, NAMESPACE_LABEL};
use super::*;
use crate::pool;

/// (kind, name, spec) of each output object.
fn summary(yaml: &str) -> Vec<(String, String, Value)> {
    documents(yaml)
        .unwrap()
        .into_iter()
        .map(|o| {
            (
                o["kind"].as_str().unwrap().to_owned(),
                o["metadata"]["name"].as_str().unwrap().to_owned(),
                o["spec"].clone(),
            )
        })
        .collect()
}

fn assert_warnings(name: &str, got: &[String], want: &[&str]) {
    assert_eq!(got.len(), want.len(), "{name}: {got:#?}");
    for (w, want) in got.iter().zip(want) {
        assert!(w.contains(want), "{name}: {w:?} lacks {want:?}");
    }
}

#[test]
fn conversion_table() {
    struct Case {
        name: &'static str,
        input: &'static str,
        objects: Vec<(&'static str, &'static str, Value)>,
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
                (
                    "IPAddressPool",
                    "default",
                    json!({ "addresses": ["198.18.0.10-198.18.0.20", "198.18.1.0/28"], "autoAssign": false, "avoidBuggyIPs": true }),
                ),
                (
                    "L2Advertisement",
                    "layer2",
                    json!({ "ipAddressPools": ["default"] }),
                ),
            ],
            warnings: &[
                "address pool \"bgp\"",
                "peers not converted",
                "no LoadBalancer Service",
            ],
        },
        Case {
            name: "bare config document",
            input: "address-pools:\n- name: lan\n  protocol: layer2\n  addresses: [2001:db8::/120]\n  foo: 1\n",
            objects: vec![
                (
                    "IPAddressPool",
                    "lan",
                    json!({ "addresses": ["2001:db8::/120"] }),
                ),
                (
                    "L2Advertisement",
                    "layer2",
                    json!({ "ipAddressPools": ["lan"] }),
                ),
            ],
            warnings: &["field foo is unknown", "no LoadBalancer Service"],
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
metadata: { name: router, namespace: metallb-system }
spec: { peerAddress: 10.0.0.1 }
"#,
            objects: vec![
                (
                    "IPAddressPool",
                    "prod",
                    json!({ "addresses": ["198.18.0.0/28"], "autoAssign": true,
                    "serviceAllocation": { "priority": 10, "namespaces": ["web"] } }),
                ),
                (
                    "L2Advertisement",
                    "l2",
                    json!({ "ipAddressPools": ["prod"], "interfaces": ["eth0"] }),
                ),
            ],
            warnings: &[
                "spec.unknownThing",
                "BGPPeer metallb-system/router",
                "no LoadBalancer Service",
            ],
        },
        Case {
            name: "bad address entry is dropped with a warning",
            input: "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: { name: p }\nspec:\n  addresses: [198.18.0.5/24, 198.18.0.7]\n",
            objects: vec![("IPAddressPool", "p", json!({ "addresses": ["198.18.0.7"] }))],
            warnings: &[
                "198.18.0.5/24",
                "IPAddressPool p is covered by no L2Advertisement",
                "no LoadBalancer Service",
            ],
        },
        Case {
            name: "negative priorities are raised keeping their order; 0 becomes unset",
            input: r#"
apiVersion: v1
kind: List
items:
- { apiVersion: metallb.io/v1beta1, kind: IPAddressPool, metadata: { name: first, namespace: m }, spec: { addresses: [198.18.0.1], serviceAllocation: { priority: -10 } } }
- { apiVersion: metallb.io/v1beta1, kind: IPAddressPool, metadata: { name: second, namespace: m }, spec: { addresses: [198.18.0.2], serviceAllocation: { priority: 5 } } }
- { apiVersion: metallb.io/v1beta1, kind: IPAddressPool, metadata: { name: last, namespace: m }, spec: { addresses: [198.18.0.3], serviceAllocation: { priority: 0, namespaces: [web] } } }
"#,
            objects: vec![
                (
                    "IPAddressPool",
                    "first",
                    json!({ "addresses": ["198.18.0.1"], "serviceAllocation": { "priority": 0 } }),
                ),
                (
                    "IPAddressPool",
                    "second",
                    json!({ "addresses": ["198.18.0.2"], "serviceAllocation": { "priority": 15 } }),
                ),
                (
                    "IPAddressPool",
                    "last",
                    json!({ "addresses": ["198.18.0.3"], "serviceAllocation": { "namespaces": ["web"] } }),
                ),
            ],
            warnings: &[
                "priority changed: first -10 -> 0, second 5 -> 15, last 0 -> unset (FerroLB refuses negative",
                "first is covered by no L2Advertisement",
                "second is covered by no L2Advertisement",
                "last is covered by no L2Advertisement",
                "no LoadBalancer Service",
            ],
        },
        Case {
            name: "one name in two namespaces: both qualified, references and selectors follow",
            input: r#"
apiVersion: v1
kind: List
items:
- { apiVersion: metallb.io/v1beta1, kind: IPAddressPool, metadata: { name: prod, namespace: a, labels: { tier: web } }, spec: { addresses: [198.18.0.0/28] } }
- { apiVersion: metallb.io/v1beta1, kind: IPAddressPool, metadata: { name: prod, namespace: b, labels: { tier: web } }, spec: { addresses: [198.18.1.0/28] } }
- { apiVersion: metallb.io/v1beta1, kind: L2Advertisement, metadata: { name: l2, namespace: a }, spec: { ipAddressPools: [prod] } }
- { apiVersion: metallb.io/v1beta1, kind: L2Advertisement, metadata: { name: l2, namespace: b }, spec: { ipAddressPoolSelectors: [{ matchLabels: { tier: web } }] } }
- { apiVersion: metallb.io/v1beta1, kind: L2Advertisement, metadata: { name: all, namespace: b } }
"#,
            objects: vec![
                (
                    "IPAddressPool",
                    "a-prod",
                    json!({ "addresses": ["198.18.0.0/28"] }),
                ),
                (
                    "IPAddressPool",
                    "b-prod",
                    json!({ "addresses": ["198.18.1.0/28"] }),
                ),
                (
                    "L2Advertisement",
                    "a-l2",
                    json!({ "ipAddressPools": ["a-prod"] }),
                ),
                (
                    "L2Advertisement",
                    "b-l2",
                    json!({ "ipAddressPoolSelectors": [{ "matchLabels": { "tier": "web", NAMESPACE_LABEL: "b" } }] }),
                ),
                (
                    "L2Advertisement",
                    "all",
                    json!({ "ipAddressPoolSelectors": [{ "matchLabels": { NAMESPACE_LABEL: "b" } }] }),
                ),
            ],
            warnings: &[
                "pools come from several namespaces (a, b)",
                "IPAddressPool a/prod becomes IPAddressPool a-prod (the name is used in several namespaces",
                "IPAddressPool b/prod becomes IPAddressPool b-prod",
                "L2Advertisement a/l2 becomes L2Advertisement a-l2",
                "L2Advertisement b/l2 becomes L2Advertisement b-l2",
                "no LoadBalancer Service",
            ],
        },
        Case {
            name: "an advertisement of unknown pools only is dropped",
            input: "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: { name: p, namespace: m }\nspec: { addresses: [198.18.0.1] }\n---\napiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata: { name: l, namespace: m }\nspec: { ipAddressPools: [gone] }\n",
            objects: vec![("IPAddressPool", "p", json!({ "addresses": ["198.18.0.1"] }))],
            warnings: &[
                "pool \"gone\" is not converted",
                "announces no converted pool",
                "IPAddressPool p is covered by no L2Advertisement",
                "no LoadBalancer Service",
            ],
        },
        Case {
            name: "nothing to convert",
            input: "apiVersion: v1\nkind: Secret\nmetadata: { name: x }\n",
            objects: vec![],
            warnings: &[
                "skipped as not MetalLB configuration: 1 Secret",
                "no MetalLB layer-2",
                "no LoadBalancer Service",
            ],
        },
    ];
    for case in cases {
        let got = convert(case.input).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let want: Vec<(String, String, Value)> = case
            .objects
            .into_iter()
            .map(|(k, n, s)| (k.to_owned(), n.to_owned(), s))
            .collect();
        assert_eq!(summary(&got.yaml), want, "{}", case.name);
        let mut all = got.warnings.clone();
        all.push(got.summary.clone());
        assert_warnings(case.name, &all, case.warnings);
    }
}

#[test]
fn labels_and_meaningful_annotations_are_kept() {
    let got = convert(
        r#"
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata:
  name: p
  namespace: metallb-system
  labels: { tier: web, app.kubernetes.io/instance: lb-config }
  annotations:
    team.example/owner: netops
    kubectl.kubernetes.io/last-applied-configuration: '{"kind":"IPAddressPool"}'
    meta.helm.sh/release-name: lb-config
spec: { addresses: [198.18.0.1] }
"#,
    )
    .unwrap();
    let pool = &documents(&got.yaml).unwrap()[0];
    assert_eq!(
        pool["metadata"]["labels"],
        json!({ "tier": "web", "app.kubernetes.io/instance": "lb-config" })
    );
    assert_eq!(
        pool["metadata"]["annotations"],
        json!({ "team.example/owner": "netops", CONVERTED_FROM: "IPAddressPool metallb-system/p" })
    );
}

#[test]
fn invalid_yaml_is_an_error() {
    assert!(matches!(
        convert("a: [unclosed"),
        Err(ConvertError::Yaml { index: 1, .. })
    ));
}

/// The messages of the CRD's CEL rules that `object` fails.
fn cel_failures(schema: &Value, object: &Value) -> Vec<String> {
    match kube_cel::Validator::new().validate(schema, object, None) {
        Ok(()) => Vec::new(),
        Err(errors) => errors
            .into_vec()
            .into_iter()
            .map(|e| e.to_string())
            .collect(),
    }
}

fn schema_of<K: CustomResourceExt>() -> Value {
    let crd = K::crd();
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("the CRD has a schema");
    serde_json::to_value(schema).unwrap()
}

/// A MetalLB pool's labels and address entries.
type PoolMeaning = (BTreeMap<String, String>, Vec<String>);

/// What a MetalLB dump means, computed from the input with MetalLB's rules, to
/// compare with what FerroLB makes of the output.
struct Metallb {
    /// (namespace, name) -> labels and address ranges of each pool.
    pools: BTreeMap<(String, String), PoolMeaning>,
    /// (namespace, name) of each L2Advertisement -> the pools it covers, by (namespace, name).
    coverage: BTreeMap<(String, String), BTreeSet<(String, String)>>,
}

fn key(o: &Value) -> (String, String) {
    (
        o["metadata"]["namespace"].as_str().unwrap_or("").to_owned(),
        o["metadata"]["name"].as_str().unwrap().to_owned(),
    )
}

fn metallb_semantics(objects: &[Value]) -> Metallb {
    let mut pools = BTreeMap::new();
    for o in objects.iter().filter(|o| o["kind"] == "IPAddressPool") {
        let labels = serde_json::from_value(o["metadata"]["labels"].clone()).unwrap_or_default();
        let addresses = serde_json::from_value(o["spec"]["addresses"].clone()).unwrap();
        pools.insert(key(o), (labels, addresses));
    }
    let mut coverage = BTreeMap::new();
    for o in objects.iter().filter(|o| o["kind"] == "L2Advertisement") {
        let (ns, _) = key(o);
        let names: Vec<String> =
            serde_json::from_value(o["spec"]["ipAddressPools"].clone()).unwrap_or_default();
        let selectors: Vec<ferrolb_crds::Selector> =
            serde_json::from_value(o["spec"]["ipAddressPoolSelectors"].clone()).unwrap_or_default();
        let covered = pools
            .iter()
            .filter(|((pns, pname), (labels, _))| {
                *pns == ns
                    && ((names.is_empty() && selectors.is_empty())
                        || names.contains(pname)
                        || selectors
                            .iter()
                            .any(|s| pool::selector("test", s).unwrap().matches(labels)))
            })
            .map(|(k, _)| k.clone())
            .collect();
        coverage.insert(key(o), covered);
    }
    Metallb { pools, coverage }
}

/// The dump, the items of every `List` in it, flattened.
fn flatten(input: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for doc in documents(input).unwrap() {
        if doc["kind"] == "List" {
            out.extend(doc["items"].as_array().unwrap().iter().cloned());
        } else {
            out.push(doc);
        }
    }
    out
}

/// How the converter describes a MetalLB object in `ferrolb.io/converted-from`.
struct Described {
    pool: fn(&str, &str) -> String,
    advertisement: fn(&str, &str) -> String,
}

const CUSTOM_RESOURCES: Described = Described {
    pool: |ns, name| format!("IPAddressPool {ns}/{name}"),
    advertisement: |ns, name| format!("L2Advertisement {ns}/{name}"),
};

const CONFIG_MAP: Described = Described {
    pool: |ns, name| format!("ConfigMap {ns}/config, address pool {name:?}"),
    advertisement: |ns, _| format!("ConfigMap {ns}/config (its layer2 pools)"),
};

/// Checks a fixture's conversion end to end; returns it for further checks.
fn check_fixture(input: &str, source: &Metallb, described: &Described) -> Conversion {
    let got = convert(input).unwrap();
    let objects = documents(&got.yaml).unwrap();
    let (pool_schema, l2a_schema) = (schema_of::<IPAddressPool>(), schema_of::<L2Advertisement>());
    let mut pools: Vec<IPAddressPool> = Vec::new();
    let mut l2as: Vec<L2Advertisement> = Vec::new();
    for o in &objects {
        let schema = if o["kind"] == "IPAddressPool" {
            &pool_schema
        } else {
            &l2a_schema
        };
        assert_eq!(cel_failures(schema, o), Vec::<String>::new(), "{o}");
        match o["kind"].as_str() {
            Some("IPAddressPool") => {
                let p: IPAddressPool = serde_json::from_value(o.clone()).unwrap();
                pool::translate(&p).unwrap_or_else(|e| panic!("{}: {e}", p.name_any()));
                pools.push(p);
            }
            Some("L2Advertisement") => l2as.push(serde_json::from_value(o.clone()).unwrap()),
            other => panic!("unexpected kind {other:?}"),
        }
    }
    // Every MetalLB pool maps to one FerroLB pool with the same addresses.
    let converted_from =
        |annotations: &BTreeMap<String, String>| annotations[CONVERTED_FROM].clone();
    let by_origin: BTreeMap<String, &IPAddressPool> = pools
        .iter()
        .map(|p| (converted_from(p.annotations()), p))
        .collect();
    for ((ns, name), (labels, addresses)) in &source.pools {
        let p = by_origin[&(described.pool)(ns, name)];
        let want: Vec<String> = addresses.iter().map(|a| a.replace(' ', "")).collect();
        let got: Vec<&str> = p.spec.addresses.iter().map(|a| a.as_str()).collect();
        assert_eq!(got, want, "{ns}/{name}");
        for (k, v) in labels {
            assert_eq!(p.labels().get(k), Some(v), "{ns}/{name} lost label {k}");
        }
    }
    // Every advertisement covers, with FerroLB's rules, exactly the pools it covered.
    let name_of: BTreeMap<(String, String), String> = source
        .pools
        .keys()
        .map(|(ns, n)| {
            (
                (ns.clone(), n.clone()),
                by_origin[&(described.pool)(ns, n)].name_any(),
            )
        })
        .collect();
    assert_eq!(l2as.len(), source.coverage.len());
    for ((ns, name), covered) in &source.coverage {
        let from = (described.advertisement)(ns, name);
        let l2a = l2as
            .iter()
            .find(|a| converted_from(a.annotations()) == from)
            .unwrap_or_else(|| panic!("{from} is not converted"));
        let want: BTreeSet<String> = covered.iter().map(|k| name_of[k].clone()).collect();
        let spec = &l2a.spec;
        let got: BTreeSet<String> = pools
            .iter()
            .filter(|p| {
                (spec.ip_address_pools.is_empty() && spec.ip_address_pool_selectors.is_empty())
                    || spec
                        .ip_address_pools
                        .iter()
                        .any(|n| n.as_str() == p.name_any())
                    || spec
                        .ip_address_pool_selectors
                        .iter()
                        .any(|s| pool::selector("test", s).unwrap().matches(p.labels()))
            })
            .map(ResourceExt::name_any)
            .collect();
        assert_eq!(got, want, "{from} -> {}", l2a.name_any());
    }
    got
}

/// Every LoadBalancer Service's current IP is inside a converted pool.
fn assert_ips_inside_pools(input: &str, yaml: &str) {
    let pools: Vec<crate::allocator::Pool> = documents(yaml)
        .unwrap()
        .into_iter()
        .filter(|o| o["kind"] == "IPAddressPool")
        .map(|o| pool::translate(&serde_json::from_value(o).unwrap()).unwrap())
        .collect();
    let mut checked = 0;
    for o in flatten(input)
        .into_iter()
        .filter(|o| o["kind"] == "Service")
    {
        let svc: Service = serde_json::from_value(o).unwrap();
        for ip in crate::service::current_ips(&svc) {
            checked += 1;
            assert!(
                pools.iter().any(|p| p.offers(ip)),
                "{}: {ip} is in no converted pool",
                svc.name_any()
            );
        }
    }
    assert!(checked > 0, "the fixture has Services with IPs");
}

const CRD_DUMP: &str = include_str!("testdata/metallb-crds.yaml");
const CONFIGMAP_DUMP: &str = include_str!("testdata/metallb-configmap.yaml");

#[test]
fn a_crd_era_dump_converts_and_keeps_every_ip() {
    let source = metallb_semantics(&flatten(CRD_DUMP));
    let got = check_fixture(CRD_DUMP, &source, &CUSTOM_RESOURCES);
    assert_ips_inside_pools(CRD_DUMP, &got.yaml);
    assert_eq!(
        got.summary,
        "8 of 8 LoadBalancer Services holding an IP keep it under FerroLB once the annotation script has run (2 annotation(s) to rewrite)",
        "{:#?}",
        got.warnings
    );
    let script = got.script.expect("Services name renamed pools");
    let commands: Vec<&str> = script
        .lines()
        .filter(|l| l.starts_with("kubectl "))
        .collect();
    assert_eq!(
        commands,
        [
            "kubectl annotate --overwrite service --namespace 'shop' 'checkout' 'metallb.universe.tf/address-pool=metallb-system-production'",
            "kubectl annotate --overwrite service --namespace 'partner' 'api' 'metallb.io/address-pool=partner-lb-production'",
        ]
    );
    assert_warnings(
        "crd dump",
        &got.warnings,
        &[
            "BGPAdvertisement metallb-system/uplink not converted",
            "BGPPeer metallb-system/tor not converted",
            "skipped as not MetalLB configuration: 1 ConfigMap, 1 Deployment",
            "pools come from several namespaces (metallb-system, partner-lb)",
            "serviceAllocation.priority changed: metallb-system-production -20 -> 0, internal 10 -> 30, partner-lb-production 5 -> 25",
            "IPAddressPool metallb-system/production becomes IPAddressPool metallb-system-production",
            "IPAddressPool partner-lb/production becomes IPAddressPool partner-lb-production",
            "IPAddressPool uplink-bgp is covered by no L2Advertisement",
            "Service dev/tool has spec.loadBalancerClass",
            "Service web/pending has no IP yet",
        ],
    );
}

#[test]
fn a_configmap_era_dump_converts_and_keeps_every_ip() {
    // MetalLB's ConfigMap pools as the custom resources MetalLB 0.13 would make of them.
    let mut objects = Vec::new();
    let mut layer2 = Vec::new();
    for o in flatten(CONFIGMAP_DUMP)
        .into_iter()
        .filter(|o| o["kind"] == "ConfigMap")
    {
        let ns = o["metadata"]["namespace"].clone();
        let config: Value = serde_yaml::from_str(o["data"]["config"].as_str().unwrap()).unwrap();
        for p in config["address-pools"].as_array().unwrap() {
            if p["protocol"] == "layer2" {
                layer2.push(p["name"].clone());
                objects.push(json!({ "kind": "IPAddressPool", "metadata": { "namespace": ns, "name": p["name"] }, "spec": { "addresses": p["addresses"] } }));
            }
        }
        objects.push(json!({ "kind": "L2Advertisement", "metadata": { "namespace": ns, "name": "layer2" }, "spec": { "ipAddressPools": layer2 } }));
    }
    let source = metallb_semantics(&objects);
    let got = check_fixture(CONFIGMAP_DUMP, &source, &CONFIG_MAP);
    assert_ips_inside_pools(CONFIGMAP_DUMP, &got.yaml);
    assert_eq!(
        got.summary,
        "3 of 3 LoadBalancer Services holding an IP keep it under FerroLB once the annotation script has run (1 annotation(s) to rewrite)",
        "{:#?}",
        got.warnings
    );
    let script = got.script.expect("a Service names a renamed pool");
    assert!(
        script.contains("'metallb.universe.tf/address-pool=office-lan'"),
        "{script}"
    );
    assert_warnings(
        "configmap dump",
        &got.warnings,
        &[
            "address pool \"uplink\" uses protocol \"bgp\"",
            "peers not converted",
            "ConfigMap metallb-system/config, address pool \"Office LAN\" becomes IPAddressPool office-lan (FerroLB names are DNS subdomains)",
        ],
    );
}

#[test]
fn without_the_script_the_rehearsal_shows_the_ip_at_risk() {
    // The same dump with the annotation pointing at a pool FerroLB has under another
    // name, and the script not run: the rehearsal names the Service.
    let (pools, services) = {
        let got = convert(CRD_DUMP).unwrap();
        let pools: Vec<IPAddressPool> = documents(&got.yaml)
            .unwrap()
            .into_iter()
            .filter(|o| o["kind"] == "IPAddressPool")
            .map(|o| serde_json::from_value(o).unwrap())
            .collect();
        let services: Vec<Service> = flatten(CRD_DUMP)
            .into_iter()
            .filter(|o| o["kind"] == "Service")
            .map(|o| serde_json::from_value(o).unwrap())
            .collect();
        (pools, services)
    };
    let r = rehearsal::rehearse(&pools, &services, &[]);
    let at_risk: Vec<&String> = r
        .findings
        .iter()
        .filter(|f| f.starts_with("FerroLB would not keep"))
        .collect();
    assert_eq!(at_risk.len(), 2, "{:#?}", r.findings);
    assert!(
        at_risk[0].contains("Service shop/checkout"),
        "{}",
        at_risk[0]
    );
    assert!(at_risk[1].contains("Service partner/api"), "{}", at_risk[1]);
}
