//! Kubernetes label selectors as plain data, so pool policies can be evaluated without
//! any API types.

use std::collections::BTreeMap;

/// A label selector with Kubernetes semantics: every `match_labels` pair and every
/// expression must hold. An empty selector matches every object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    /// Labels that must be present with exactly these values.
    pub match_labels: BTreeMap<String, String>,
    /// Further requirements, all of which must hold.
    pub match_expressions: Vec<LabelRequirement>,
}

/// One `matchExpressions` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelRequirement {
    /// The label key the requirement is about.
    pub key: String,
    /// What the label's value must satisfy.
    pub operator: LabelOperator,
}

/// The operator of a `matchExpressions` entry, carrying its values where it has any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelOperator {
    /// The label is present and its value is one of these.
    In(Vec<String>),
    /// The label is absent, or present with a value not among these.
    NotIn(Vec<String>),
    /// The label is present, whatever its value.
    Exists,
    /// The label is absent.
    DoesNotExist,
}

impl LabelSelector {
    /// A selector requiring exactly these labels.
    pub fn with_labels<K, V, I>(labels: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        Self {
            match_labels: labels
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            match_expressions: Vec::new(),
        }
    }

    /// Whether an object carrying `labels` is selected.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| r.matches(labels))
    }
}

impl LabelRequirement {
    /// Whether `labels` satisfy this requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match &self.operator {
            LabelOperator::In(values) => value.is_some_and(|v| values.contains(v)),
            // Kubernetes semantics: NotIn also matches objects without the label.
            LabelOperator::NotIn(values) => value.is_none_or(|v| !values.contains(v)),
            LabelOperator::Exists => value.is_some(),
            LabelOperator::DoesNotExist => value.is_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn req(key: &str, operator: LabelOperator) -> LabelSelector {
        LabelSelector {
            match_labels: BTreeMap::new(),
            match_expressions: vec![LabelRequirement {
                key: key.to_owned(),
                operator,
            }],
        }
    }

    #[test]
    fn empty_selector_matches_everything() {
        assert!(LabelSelector::default().matches(&labels(&[])));
        assert!(LabelSelector::default().matches(&labels(&[("a", "b")])));
    }

    #[test]
    fn match_labels_need_every_pair() {
        let s = LabelSelector::with_labels([("team", "web"), ("tier", "front")]);
        assert!(s.matches(&labels(&[("team", "web"), ("tier", "front"), ("x", "y")])));
        assert!(!s.matches(&labels(&[("team", "web")])));
        assert!(!s.matches(&labels(&[("team", "db"), ("tier", "front")])));
    }

    #[test]
    fn operators_follow_kubernetes() {
        let vals = vec!["a".to_owned(), "b".to_owned()];
        let with_a = labels(&[("k", "a")]);
        let with_c = labels(&[("k", "c")]);
        let without = labels(&[]);
        let in_ = req("k", LabelOperator::In(vals.clone()));
        assert!(in_.matches(&with_a) && !in_.matches(&with_c) && !in_.matches(&without));
        let not_in = req("k", LabelOperator::NotIn(vals));
        assert!(!not_in.matches(&with_a) && not_in.matches(&with_c) && not_in.matches(&without));
        let exists = req("k", LabelOperator::Exists);
        assert!(exists.matches(&with_c) && !exists.matches(&without));
        let absent = req("k", LabelOperator::DoesNotExist);
        assert!(!absent.matches(&with_c) && absent.matches(&without));
    }
}
