//! An `L2Advertisement`'s status: whether the pools it names exist, whether its
//! pool selectors select any pool and its node selectors (`nodeSelectors`,
//! `preferredNodes`) any node, and which nodes answer ARP for every IP
//! (strictARP, gathered from the speakers). Pure: objects in, status out. (Which
//! nodes and Services it selects is the speakers' business.)

use std::collections::BTreeMap;

use ferrolb_crds::{L2AdvertisementSpec, L2AdvertisementStatus, Selector, conditions};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use crate::pool;
use crate::strict_arp::Summary;

/// Whether this installation writes the advertisement's status: when it names or
/// selects at least one of `ours` (this installation's pools, by name and labels).
/// An advertisement for every pool (neither names nor selectors) is written by the
/// installation without an instance name only, so two installations side by side
/// never write one status in turn.
pub fn concerns(
    spec: &L2AdvertisementSpec,
    ours: &BTreeMap<String, BTreeMap<String, String>>,
    named_instance: bool,
) -> bool {
    if spec.ip_address_pools.is_empty() && spec.ip_address_pool_selectors.is_empty() {
        return !named_instance;
    }
    spec.ip_address_pools
        .iter()
        .any(|p| ours.contains_key(p.as_str()))
        || spec.ip_address_pool_selectors.iter().any(|s| {
            pool::selector("spec.ipAddressPoolSelectors", s)
                .is_ok_and(|sel| ours.values().any(|labels| sel.matches(labels)))
        })
}

/// Renders the status of an advertisement given every pool's name and labels
/// and every node's labels. Conditions keep their `lastTransitionTime` while
/// their status is unchanged.
pub fn status(
    spec: &L2AdvertisementSpec,
    generation: Option<i64>,
    pools: &BTreeMap<String, BTreeMap<String, String>>,
    nodes: &[&BTreeMap<String, String>],
    strict_arp: &Summary,
    previous: Option<&L2AdvertisementStatus>,
    now: Timestamp,
) -> L2AdvertisementStatus {
    let unknown: Vec<&str> = spec
        .ip_address_pools
        .iter()
        .map(|p| p.as_str())
        .filter(|p| !pools.contains_key(*p))
        .collect();
    let unknown_condition = if unknown.is_empty() {
        ("False", "PoolsExist", "every named pool exists".to_owned())
    } else {
        (
            "True",
            conditions::UNKNOWN_POOLS,
            format!(
                "no IPAddressPool named {}; create it or fix spec.ipAddressPools",
                quoted(&unknown)
            ),
        )
    };
    let mut empty = Vec::new();
    for (i, s) in spec.ip_address_pool_selectors.iter().enumerate() {
        let matches = pool::selector("spec.ipAddressPoolSelectors", s)
            .is_ok_and(|sel| pools.values().any(|labels| sel.matches(labels)));
        if !matches {
            empty.push(format!(
                "spec.ipAddressPoolSelectors[{i}] matches no IPAddressPool"
            ));
        }
    }
    let matches_a_node = |field: &'static str, s: &Selector| {
        pool::selector(field, s).is_ok_and(|sel| nodes.iter().any(|labels| sel.matches(labels)))
    };
    for (i, s) in spec.node_selectors.iter().enumerate() {
        if !matches_a_node("spec.nodeSelectors", s) {
            empty.push(format!("spec.nodeSelectors[{i}] matches no Node"));
        }
    }
    for (i, p) in spec.preferred_nodes.iter().enumerate() {
        if !matches_a_node("spec.preferredNodes", &p.selector) {
            empty.push(format!("spec.preferredNodes[{i}].selector matches no Node"));
        }
    }
    let nothing_condition = if empty.is_empty() {
        (
            "False",
            "Matches",
            "every pool selector matches a pool and every node selector a node".to_owned(),
        )
    } else {
        (
            "True",
            conditions::MATCHES_NOTHING,
            format!("{}; check the labels", empty.join(", ")),
        )
    };
    let mut out = L2AdvertisementStatus {
        conditions: Vec::new(),
        observed_generation: generation,
    };
    for (type_, (value, reason, message)) in [
        (conditions::UNKNOWN_POOLS, unknown_condition),
        (conditions::MATCHES_NOTHING, nothing_condition),
        (conditions::STRICT_ARP, strict_arp.condition()),
    ] {
        let since = previous
            .and_then(|p| p.conditions.iter().find(|c| c.type_ == type_))
            .filter(|c| c.status == value)
            .map_or(Time(now), |c| c.last_transition_time.clone());
        out.conditions.push(Condition {
            type_: type_.to_owned(),
            status: value.to_owned(),
            reason: reason.to_owned(),
            message,
            observed_generation: generation,
            last_transition_time: since,
        });
    }
    out
}

fn quoted(names: &[&str]) -> String {
    let q: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
    q.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(v: serde_json::Value) -> L2AdvertisementSpec {
        serde_json::from_value(v).unwrap()
    }

    /// The status of an advertisement with spec `v`, no generation, no
    /// strictARP reports, over [`pools`] and [`nodes`].
    fn plain_status(v: serde_json::Value) -> L2AdvertisementStatus {
        status(
            &spec(v),
            None,
            &pools(),
            &nodes(),
            &Summary::default(),
            None,
            Timestamp::UNIX_EPOCH,
        )
    }

    fn pools() -> BTreeMap<String, BTreeMap<String, String>> {
        BTreeMap::from([
            (
                "lan".to_owned(),
                BTreeMap::from([("zone".to_owned(), "a".to_owned())]),
            ),
            ("dmz".to_owned(), BTreeMap::new()),
        ])
    }

    fn nodes() -> Vec<&'static BTreeMap<String, String>> {
        static RACK_A: std::sync::LazyLock<BTreeMap<String, String>> =
            std::sync::LazyLock::new(|| BTreeMap::from([("rack".to_owned(), "a".to_owned())]));
        vec![&RACK_A]
    }

    fn conds(s: &L2AdvertisementStatus) -> Vec<(&str, &str)> {
        s.conditions
            .iter()
            .map(|c| (c.type_.as_str(), c.status.as_str()))
            .collect()
    }

    #[test]
    fn status_table() {
        let cases = [
            (
                "all pools",
                json!({}),
                [
                    ("UnknownPools", "False"),
                    ("MatchesNothing", "False"),
                    ("StrictARP", "Unknown"),
                ],
            ),
            (
                "named pools exist",
                json!({ "ipAddressPools": ["lan", "dmz"] }),
                [
                    ("UnknownPools", "False"),
                    ("MatchesNothing", "False"),
                    ("StrictARP", "Unknown"),
                ],
            ),
            (
                "a named pool is missing",
                json!({ "ipAddressPools": ["lan", "gone"] }),
                [
                    ("UnknownPools", "True"),
                    ("MatchesNothing", "False"),
                    ("StrictARP", "Unknown"),
                ],
            ),
            (
                "selector matches",
                json!({ "ipAddressPoolSelectors": [{ "matchLabels": { "zone": "a" } }] }),
                [
                    ("UnknownPools", "False"),
                    ("MatchesNothing", "False"),
                    ("StrictARP", "Unknown"),
                ],
            ),
            (
                "selector matches nothing",
                json!({ "ipAddressPoolSelectors": [{ "matchLabels": { "zone": "b" } }] }),
                [
                    ("UnknownPools", "False"),
                    ("MatchesNothing", "True"),
                    ("StrictARP", "Unknown"),
                ],
            ),
            (
                "node selectors match",
                json!({ "nodeSelectors": [{ "matchLabels": { "rack": "a" } }],
                        "preferredNodes": [{ "weight": 10, "selector": { "matchLabels": { "rack": "a" } } }] }),
                [
                    ("UnknownPools", "False"),
                    ("MatchesNothing", "False"),
                    ("StrictARP", "Unknown"),
                ],
            ),
            (
                "a preferred-node selector matches no node",
                json!({ "preferredNodes": [{ "weight": 10, "selector": { "matchLabels": { "rack": "b" } } }] }),
                [
                    ("UnknownPools", "False"),
                    ("MatchesNothing", "True"),
                    ("StrictARP", "Unknown"),
                ],
            ),
        ];
        for (name, s, want) in cases {
            let got = status(
                &spec(s),
                Some(2),
                &pools(),
                &nodes(),
                &Summary::default(),
                None,
                Timestamp::UNIX_EPOCH,
            );
            assert_eq!(conds(&got), want, "{name}");
            assert_eq!(got.observed_generation, Some(2), "{name}");
        }
        let got = plain_status(json!({ "ipAddressPools": ["gone"] }));
        assert!(got.conditions[0].message.contains("\"gone\""));
        let got = plain_status(json!({
            "ipAddressPoolSelectors": [{ "matchLabels": { "zone": "b" } }],
            "nodeSelectors": [{ "matchLabels": { "rack": "a" } }, { "matchLabels": { "rack": "c" } }],
            "preferredNodes": [{ "weight": 10, "selector": { "matchLabels": { "rack": "b" } } }],
        }));
        assert_eq!(
            got.conditions[1].message,
            "spec.ipAddressPoolSelectors[0] matches no IPAddressPool, spec.nodeSelectors[1] matches no Node, spec.preferredNodes[0].selector matches no Node; check the labels"
        );
    }

    #[test]
    fn carries_the_nodes_at_risk() {
        let summary = Summary {
            reporting: 3,
            at_risk: BTreeMap::from([("node2".to_owned(), "set arp_ignore=1".to_owned())]),
        };
        let got = status(
            &spec(json!({})),
            None,
            &pools(),
            &nodes(),
            &summary,
            None,
            Timestamp::UNIX_EPOCH,
        );
        let c = got
            .conditions
            .iter()
            .find(|c| c.type_ == "StrictARP")
            .unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "NodesAtRisk")
        );
        assert!(c.message.contains("1 of 3 nodes") && c.message.contains("\"node2\""));
    }

    #[test]
    fn unchanged_status_renders_identically() {
        let s = spec(json!({ "ipAddressPools": ["lan"] }));
        let none = Summary::default();
        let first = status(
            &s,
            Some(1),
            &pools(),
            &nodes(),
            &none,
            None,
            Timestamp::UNIX_EPOCH,
        );
        let later = Timestamp::from_second(500).unwrap();
        assert_eq!(
            status(&s, Some(1), &pools(), &nodes(), &none, Some(&first), later),
            first
        );
    }
}
