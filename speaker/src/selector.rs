//! Kubernetes label selectors, evaluated locally.
//!
//! The speaker matches L2Advertisement selectors against nodes, Services and
//! pools on every recomputation, so it cannot ask the API server. The
//! semantics are the API server's: every `matchLabels` entry and every
//! `matchExpressions` requirement must hold; an empty selector matches
//! everything. A list of selectors matches when any of them does, and an
//! empty list matches everything (the L2Advertisement convention).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

/// Labels of an object, as in `metadata.labels`.
pub type Labels = BTreeMap<String, String>;

/// Whether `selector` matches `labels`.
///
/// An unknown operator matches nothing: the CRD's validation rejects it, and
/// refusing is the safe reading of a selector we do not understand.
#[must_use]
pub fn matches(selector: &LabelSelector, labels: &Labels) -> bool {
    let labels_hold = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(key, value)| labels.get(key) == Some(value));
    labels_hold
        && selector
            .match_expressions
            .iter()
            .flatten()
            .all(|requirement| requirement_holds(requirement, labels))
}

/// Whether any of `selectors` matches `labels`; an empty list matches everything.
#[must_use]
pub fn any_matches<'a>(
    selectors: impl IntoIterator<Item = &'a LabelSelector>,
    labels: &Labels,
) -> bool {
    let mut empty = true;
    for selector in selectors {
        empty = false;
        if matches(selector, labels) {
            return true;
        }
    }
    empty
}

fn requirement_holds(requirement: &LabelSelectorRequirement, labels: &Labels) -> bool {
    let value = labels.get(&requirement.key);
    let listed = |v: &String| requirement.values.iter().flatten().any(|w| w == v);
    match requirement.operator.as_str() {
        "In" => value.is_some_and(listed),
        // As in Kubernetes: a missing key satisfies NotIn.
        "NotIn" => !value.is_some_and(listed),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelector {
        LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: key.to_owned(),
                operator: op.to_owned(),
                values: Some(values.iter().map(|v| (*v).to_owned()).collect()),
            }]),
        }
    }

    #[test]
    fn table() {
        let zone_a = labels(&[("zone", "a"), ("tier", "edge")]);
        let bare = labels(&[]);
        let by_labels = LabelSelector {
            match_labels: Some(labels(&[("zone", "a")])),
            match_expressions: None,
        };
        let cases: Vec<(&str, LabelSelector, &Labels, bool)> = vec![
            ("empty selector", LabelSelector::default(), &bare, true),
            ("matchLabels hit", by_labels.clone(), &zone_a, true),
            ("matchLabels miss", by_labels, &bare, false),
            ("In hit", expr("zone", "In", &["a", "b"]), &zone_a, true),
            ("In miss", expr("zone", "In", &["b"]), &zone_a, false),
            ("In absent", expr("zone", "In", &["a"]), &bare, false),
            ("NotIn hit", expr("zone", "NotIn", &["b"]), &zone_a, true),
            ("NotIn miss", expr("zone", "NotIn", &["a"]), &zone_a, false),
            ("NotIn absent", expr("zone", "NotIn", &["a"]), &bare, true),
            ("Exists", expr("tier", "Exists", &[]), &zone_a, true),
            ("Exists absent", expr("tier", "Exists", &[]), &bare, false),
            (
                "DoesNotExist",
                expr("tier", "DoesNotExist", &[]),
                &bare,
                true,
            ),
            (
                "DoesNotExist present",
                expr("tier", "DoesNotExist", &[]),
                &zone_a,
                false,
            ),
            (
                "unknown operator",
                expr("zone", "Gt", &["1"]),
                &zone_a,
                false,
            ),
        ];
        for (name, selector, labels, want) in cases {
            assert_eq!(matches(&selector, labels), want, "{name}");
        }
    }

    #[test]
    fn lists_are_ored_and_empty_matches_all() {
        let zone_a = labels(&[("zone", "a")]);
        assert!(any_matches(&[], &zone_a));
        let list = [expr("zone", "In", &["b"]), expr("zone", "In", &["a"])];
        assert!(any_matches(&list, &zone_a));
        assert!(!any_matches(&list[..1], &zone_a));
    }
}
