//! The CRDs' CEL rules evaluated locally, as the API server evaluates them at admission.
//!
//! Every invalid object must be rejected by a failed rule (not a compile or evaluation
//! error) whose message says what is wrong; every valid object must pass. For pool
//! address entries the Rust parser must agree with CEL, so what the API server stores
//! the controller can always parse.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use ferrolb_crds::{IPAddressPool, L2Advertisement};
use kube::CustomResourceExt;
use kube_cel::{ErrorKind, Validator};
use serde_json::{Value, json};

fn schema_of(
    crd: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
) -> Value {
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("the CRD has a schema");
    serde_json::to_value(schema).expect("schema serialises")
}

fn pool(spec: Value) -> Value {
    json!({
        "apiVersion": "ferrolb.io/v1beta1",
        "kind": "IPAddressPool",
        "metadata": { "name": "test" },
        "spec": spec,
    })
}

fn pool_with(addresses: &[&str]) -> Value {
    pool(json!({ "addresses": addresses }))
}

fn l2a(spec: Value) -> Value {
    json!({
        "apiVersion": "ferrolb.io/v1beta1",
        "kind": "L2Advertisement",
        "metadata": { "name": "test" },
        "spec": spec,
    })
}

/// The messages of the rules the object fails; panics on anything but a clean failure.
fn failures(schema: &Value, object: &Value) -> Vec<String> {
    match Validator::new().validate(schema, object, None) {
        Ok(()) => Vec::new(),
        Err(errors) => errors
            .into_vec()
            .into_iter()
            .map(|e| {
                assert_eq!(
                    e.kind,
                    ErrorKind::ValidationFailure,
                    "rule {} did not evaluate cleanly on {object}: {}",
                    e.rule,
                    e.message
                );
                e.message
            })
            .collect(),
    }
}

#[test]
fn invalid_address_entries_are_rejected_with_their_message() {
    let schema = schema_of(IPAddressPool::crd());
    let table: &[(&str, &str, &str)] = &[
        ("bad CIDR prefix", "198.18.0.0/33", "is not a CIDR"),
        ("CIDR without prefix", "198.18.0.0/", "is not a CIDR"),
        ("IPv6 prefix too long", "2001:db8::/129", "is not a CIDR"),
        ("octet out of range", "198.18.0.256", "is not a CIDR"),
        ("leading zero octet", "198.018.0.1", "is not a CIDR"),
        ("three octets", "198.18.0", "is not a CIDR"),
        ("garbage", "not-an-ip", "is not a CIDR"),
        ("hostname", "lb.example.test", "is not a CIDR"),
        ("empty entry", "", "an address entry is empty"),
        ("range missing end", "198.18.0.1-", "is not a CIDR"),
        (
            "range of three",
            "198.18.0.1-198.18.0.2-198.18.0.3",
            "is not a CIDR",
        ),
        (
            "range with CIDR end",
            "198.18.0.1-198.18.0.0/24",
            "is not a CIDR",
        ),
        (
            "reversed IPv4 range",
            "198.18.0.20-198.18.0.10",
            "starts after it ends; write 198.18.0.10-198.18.0.20",
        ),
        (
            "reversed IPv4 range across octets",
            "198.18.1.0-198.18.0.255",
            "starts after it ends",
        ),
        (
            "reversed IPv4 range, first octet",
            "199.0.0.0-198.255.255.255",
            "starts after it ends",
        ),
        (
            "mixed-family range",
            "198.18.0.1-2001:db8::1",
            "mixes IPv4 and IPv6",
        ),
        (
            "mixed-family range, v6 first",
            "2001:db8::1-198.18.0.1",
            "mixes IPv4 and IPv6",
        ),
        ("IPv6 zone", "fe80::1%eth0", "has an IPv6 zone"),
        ("IPv6 zone in CIDR", "fe80::%eth0/64", "has an IPv6 zone"),
        (
            "spaces around dash",
            "198.18.0.1 - 198.18.0.9",
            "contains whitespace",
        ),
        ("trailing space", "198.18.0.1 ", "contains whitespace"),
        (
            "host bits set",
            "198.18.0.5/24",
            "\"198.18.0.5/24\" has host bits set",
        ),
        (
            "IPv6 host bits set",
            "2001:db8::1/64",
            "\"2001:db8::1/64\" has host bits set",
        ),
        (
            "all of IPv6",
            "::/0",
            "covers the entire IPv6 address space",
        ),
    ];
    for (name, entry, expected) in table {
        let messages = failures(&schema, &pool_with(&[entry]));
        assert!(
            messages.iter().any(|m| m.contains(expected)),
            "{name}: {entry:?} should be rejected with {expected:?}, got {messages:?}"
        );
        assert!(
            ferrolb_address::parse_entry(entry).is_err(),
            "{name}: the Rust parser accepts {entry:?} which CEL rejects"
        );
    }
}

/// The one kind of bad entry CEL cannot afford to reject: the API server prices an IPv6
/// ordering rule far over its budget. The parser rejects it, so the controller marks
/// the pool Invalid with the entry and the fix.
#[test]
fn reversed_ipv6_ranges_are_left_to_the_controller() {
    let schema = schema_of(IPAddressPool::crd());
    for entry in ["2001:db8::20-2001:db8::10", "2001:db9::-2001:db8:ffff::"] {
        assert_eq!(
            failures(&schema, &pool_with(&[entry])),
            Vec::<String>::new()
        );
        let err = ferrolb_address::parse_entry(entry).unwrap_err();
        assert!(err.to_string().contains("starts after it ends"), "{err}");
    }
}

#[test]
fn valid_address_entries_are_accepted() {
    let schema = schema_of(IPAddressPool::crd());
    let entries = [
        "198.18.0.0/28",
        "198.18.0.7",
        "198.18.0.7/32",
        "198.18.0.10-198.18.0.20",
        "198.18.0.10-198.18.0.10",
        "198.18.0.255-198.18.1.0",
        "0.0.0.0/0",
        "2001:db8::/64",
        "2001:db8::/48",
        "2001:db8::7",
        "2001:db8::10-2001:db8::20",
        "2001:db8:0:ffff::-2001:db8:1::",
        "2001:db8::ffff:ffff-2001:db8::1:0:0",
    ];
    for entry in entries {
        let messages = failures(&schema, &pool_with(&[entry]));
        assert!(messages.is_empty(), "{entry:?} was rejected: {messages:?}");
        assert!(ferrolb_address::parse_entry(entry).is_ok(), "{entry:?}");
    }
    let all = failures(&schema, &pool_with(&entries));
    assert!(all.is_empty(), "{all:?}");
}

#[test]
fn invalid_pool_fields_are_rejected_with_their_message() {
    let schema = schema_of(IPAddressPool::crd());
    let table: &[(&str, Value, &str)] = &[
        (
            "no addresses",
            json!({ "addresses": [] }),
            "lists no addresses",
        ),
        (
            "negative priority",
            json!({ "addresses": ["198.18.0.1"], "serviceAllocation": { "priority": -1 } }),
            "priority must not be negative",
        ),
        (
            "bad namespace name",
            json!({ "addresses": ["198.18.0.1"], "serviceAllocation": { "namespaces": ["Team_A"] } }),
            "is not a namespace name",
        ),
        (
            "In without values",
            json!({ "addresses": ["198.18.0.1"], "serviceAllocation": {
                "serviceSelectors": [{ "matchExpressions": [{ "key": "tier", "operator": "In" }] }] } }),
            "In and NotIn need at least one value",
        ),
        (
            "Exists with values",
            json!({ "addresses": ["198.18.0.1"], "serviceAllocation": {
                "namespaceSelectors": [{ "matchExpressions": [{ "key": "tier", "operator": "Exists", "values": ["x"] }] }] } }),
            "Exists and DoesNotExist take none",
        ),
        (
            "unknown operator",
            json!({ "addresses": ["198.18.0.1"], "serviceAllocation": {
                "serviceSelectors": [{ "matchExpressions": [{ "key": "tier", "operator": "Equals", "values": ["x"] }] }] } }),
            "no other operator exists",
        ),
    ];
    for (name, spec, expected) in table {
        let messages = failures(&schema, &pool(spec.clone()));
        assert!(
            messages.iter().any(|m| m.contains(expected)),
            "{name}: expected {expected:?}, got {messages:?}"
        );
    }
    let good = pool(json!({
        "addresses": ["198.18.0.0/28", "2001:db8::/120"],
        "autoAssign": false,
        "avoidBuggyIPs": true,
        "serviceAllocation": {
            "priority": 0,
            "namespaces": ["team-a", "default"],
            "serviceSelectors": [{ "matchExpressions": [
                { "key": "tier", "operator": "In", "values": ["web"] },
                { "key": "canary", "operator": "DoesNotExist" }
            ] }],
            "namespaceSelectors": [{ "matchLabels": { "env": "prod" } }]
        }
    }));
    assert_eq!(failures(&schema, &good), Vec::<String>::new());
}

#[test]
fn pool_classes_are_accepted_as_kubernetes_accepts_a_service_class() {
    let schema = schema_of(IPAddressPool::crd());
    let with_class =
        |class: &str| pool(json!({ "addresses": ["198.18.0.1"], "loadBalancerClass": class }));
    // Four 63-character DNS labels: 255 characters, cut to the length under test.
    let long_prefix = [
        "a".repeat(63),
        "b".repeat(63),
        "c".repeat(63),
        "d".repeat(63),
    ]
    .join(".");
    let valid = [
        "ferrolb.io/internal".to_owned(),
        "ferrolb.io/a".to_owned(),
        "internal".to_owned(),
        "Lab_Class.v2".to_owned(),
        "lb.example-corp.test/Team_A.v1".to_owned(),
        format!("{}/{}", &long_prefix[..253], "n".repeat(63)),
    ];
    for class in &valid {
        let messages = failures(&schema, &with_class(class));
        assert!(messages.is_empty(), "{class:?} was rejected: {messages:?}");
    }
    let table: &[(&str, String, &str)] = &[
        ("empty", String::new(), "is not a qualified name"),
        (
            "capital prefix",
            "FerroLB.io/a".into(),
            "is not a qualified name",
        ),
        ("empty prefix", "/a".into(), "is not a qualified name"),
        (
            "empty name",
            "ferrolb.io/".into(),
            "is not a qualified name",
        ),
        (
            "two slashes",
            "ferrolb.io/a/b".into(),
            "is not a qualified name",
        ),
        ("space", "ferrolb.io/a b".into(), "is not a qualified name"),
        (
            "name ends with dash",
            "ferrolb.io/a-".into(),
            "is not a qualified name",
        ),
        (
            "name starts with dot",
            ".a".into(),
            "is not a qualified name",
        ),
        (
            "name too long",
            format!("ferrolb.io/{}", "n".repeat(64)),
            "at most 63 characters",
        ),
        (
            "prefix too long",
            format!("{}/a", &long_prefix[..254]),
            "at most 253 characters",
        ),
    ];
    for (name, class, expected) in table {
        let messages = failures(&schema, &with_class(class));
        assert!(
            messages.iter().any(|m| m.contains(expected)),
            "{name}: {class:?} should be rejected with {expected:?}, got {messages:?}"
        );
    }
}

#[test]
fn invalid_advertisements_are_rejected_with_their_message() {
    let schema = schema_of(L2Advertisement::crd());
    let table: &[(&str, Value, &str)] = &[
        (
            "interface with slash",
            json!({ "interfaces": ["eth0/1"] }),
            "is not an interface name",
        ),
        (
            "interface with space",
            json!({ "interfaces": ["eth 0"] }),
            "is not an interface name",
        ),
        (
            "empty interface",
            json!({ "interfaces": [""] }),
            "is not an interface name",
        ),
        (
            "pool name with capitals",
            json!({ "ipAddressPools": ["Prod"] }),
            "is not a valid pool name",
        ),
        (
            "node selector NotIn without values",
            json!({ "nodeSelectors": [{ "matchExpressions": [{ "key": "zone", "operator": "NotIn", "values": [] }] }] }),
            "In and NotIn need at least one value",
        ),
    ];
    for (name, spec, expected) in table {
        let messages = failures(&schema, &l2a(spec.clone()));
        assert!(
            messages.iter().any(|m| m.contains(expected)),
            "{name}: expected {expected:?}, got {messages:?}"
        );
    }
    let good = l2a(json!({
        "ipAddressPools": ["production", "lab.v6"],
        "interfaces": ["eth0", "bond0.100"],
        "nodeSelectors": [{ "matchLabels": { "kubernetes.io/os": "linux" } }]
    }));
    assert_eq!(failures(&schema, &good), Vec::<String>::new());
    assert_eq!(failures(&schema, &l2a(json!({}))), Vec::<String>::new());
}
