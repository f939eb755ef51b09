//! An `IPAddressPool` object translated into the allocator's [`Pool`]. Pure: a pool
//! that cannot be used becomes a [`PoolSpecError`], reported as its `Invalid`
//! condition.

use ferrolb_crds::{IPAddressPool, Selector};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;
use kube::ResourceExt;
use thiserror::Error;

use crate::allocator::{LabelOperator, LabelRequirement, LabelSelector, Pool, ServiceAllocation};

/// Why a pool object cannot be used for allocations.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PoolSpecError {
    /// An address entry does not parse (the message names each bad entry).
    #[error("{0}")]
    Addresses(String),
    /// A selector uses an operator Kubernetes does not define.
    #[error(
        "{field}: operator {operator:?} of key {key:?} is unknown; use In, NotIn, Exists or DoesNotExist"
    )]
    Operator {
        /// Which selector list.
        field: &'static str,
        /// The label key.
        key: String,
        /// The operator written.
        operator: String,
    },
}

impl PoolSpecError {
    /// A short CamelCase reason for the `Invalid` condition.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Addresses(_) => "InvalidAddresses",
            Self::Operator { .. } => "InvalidSelector",
        }
    }
}

/// Translates a pool object into the allocator's pool.
pub fn translate(object: &IPAddressPool) -> Result<Pool, PoolSpecError> {
    let spec = &object.spec;
    let mut pool = Pool::parse(object.name_any(), spec.addresses.iter().map(|a| a.as_str()))
        .map_err(|e| PoolSpecError::Addresses(e.to_string()))?;
    pool.auto_assign = spec.auto_assign;
    pool.avoid_buggy_ips = spec.avoid_buggy_ips;
    if let Some(a) = &spec.service_allocation {
        pool.allocation = Some(ServiceAllocation {
            priority: a.priority,
            namespaces: a.namespaces.iter().map(|n| n.0.clone()).collect(),
            namespace_selectors: selectors(
                "spec.serviceAllocation.namespaceSelectors",
                &a.namespace_selectors,
            )?,
            service_selectors: selectors(
                "spec.serviceAllocation.serviceSelectors",
                &a.service_selectors,
            )?,
        });
    }
    Ok(pool)
}

fn selectors(field: &'static str, list: &[Selector]) -> Result<Vec<LabelSelector>, PoolSpecError> {
    list.iter().map(|s| selector(field, s)).collect()
}

/// A Kubernetes label selector as the allocator's plain selector.
pub fn selector(field: &'static str, selector: &Selector) -> Result<LabelSelector, PoolSpecError> {
    let s = &selector.0;
    Ok(LabelSelector {
        match_labels: s.match_labels.clone().unwrap_or_default(),
        match_expressions: s
            .match_expressions
            .iter()
            .flatten()
            .map(|r| requirement(field, r))
            .collect::<Result<_, _>>()?,
    })
}

fn requirement(
    field: &'static str,
    r: &LabelSelectorRequirement,
) -> Result<LabelRequirement, PoolSpecError> {
    let values = r.values.clone().unwrap_or_default();
    let operator = match r.operator.as_str() {
        "In" => LabelOperator::In(values),
        "NotIn" => LabelOperator::NotIn(values),
        "Exists" => LabelOperator::Exists,
        "DoesNotExist" => LabelOperator::DoesNotExist,
        other => {
            return Err(PoolSpecError::Operator {
                field,
                key: r.key.clone(),
                operator: other.to_owned(),
            });
        }
    };
    Ok(LabelRequirement {
        key: r.key.clone(),
        operator,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrolb_address::Family;
    use serde_json::json;

    fn pool(spec: serde_json::Value) -> IPAddressPool {
        serde_json::from_value(json!({
            "apiVersion": "ferrolb.io/v1beta1",
            "kind": "IPAddressPool",
            "metadata": { "name": "prod" },
            "spec": spec,
        }))
        .unwrap()
    }

    #[test]
    fn translation_table() {
        type Check = fn(&Result<Pool, PoolSpecError>) -> bool;
        let cases: Vec<(&str, serde_json::Value, Check)> = vec![
            (
                "defaults: autoAssign on, buggy IPs kept",
                json!({ "addresses": ["198.18.0.0/28"] }),
                |r| {
                    let p = r.as_ref().unwrap();
                    p.name == "prod"
                        && p.auto_assign
                        && !p.avoid_buggy_ips
                        && p.size(Family::V4) == 16
                        && p.allocation.is_none()
                },
            ),
            (
                "mixed families, exact /64 size",
                json!({ "addresses": ["198.18.0.10-198.18.0.20", "2001:db8::/64"] }),
                |r| {
                    let p = r.as_ref().unwrap();
                    p.size(Family::V4) == 11 && p.size(Family::V6) == 1u128 << 64
                },
            ),
            (
                "autoAssign off and avoidBuggyIPs on",
                json!({ "addresses": ["198.18.0.0/24"], "autoAssign": false, "avoidBuggyIPs": true }),
                |r| {
                    let p = r.as_ref().unwrap();
                    !p.auto_assign && p.avoid_buggy_ips && p.size(Family::V4) == 254
                },
            ),
            (
                "serviceAllocation with selectors",
                json!({ "addresses": ["198.18.0.7"], "serviceAllocation": {
                    "priority": 5, "namespaces": ["web"],
                    "namespaceSelectors": [{ "matchLabels": { "team": "a" } }],
                    "serviceSelectors": [{ "matchExpressions": [{ "key": "tier", "operator": "In", "values": ["front"] }] }],
                } }),
                |r| {
                    let a = r.as_ref().unwrap().allocation.clone().unwrap();
                    a.priority == Some(5)
                        && a.namespaces == vec!["web".to_owned()]
                        && a.namespace_selectors
                            == vec![LabelSelector::with_labels([("team", "a")])]
                        && a.service_selectors[0].match_expressions
                            == vec![LabelRequirement {
                                key: "tier".into(),
                                operator: LabelOperator::In(vec!["front".into()]),
                            }]
                },
            ),
            (
                "bad address entry is Invalid and named",
                json!({ "addresses": ["198.18.0.0/28", "198.18.0.5/24"] }),
                |r| matches!(r, Err(e @ PoolSpecError::Addresses(_)) if e.to_string().contains("198.18.0.5/24") && e.reason() == "InvalidAddresses"),
            ),
            (
                "unknown operator is Invalid",
                json!({ "addresses": ["198.18.0.7"], "serviceAllocation": {
                    "serviceSelectors": [{ "matchExpressions": [{ "key": "tier", "operator": "Near" }] }],
                } }),
                |r| matches!(r, Err(PoolSpecError::Operator { operator, .. }) if operator == "Near"),
            ),
        ];
        for (name, spec, check) in cases {
            let got = translate(&pool(spec));
            assert!(check(&got), "{name}: got {got:?}");
        }
    }
}
