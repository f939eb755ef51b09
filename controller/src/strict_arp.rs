//! The cluster-wide strictARP summary: which nodes the speakers report as
//! answering ARP for every LoadBalancer IP (kube-proxy in IPVS mode without
//! strictARP). Each speaker checks its own node and says so in its
//! `SpeakerStatus`; the controller gathers those verdicts so a user looking
//! at any `L2Advertisement` sees the nodes at risk in one place. Pure:
//! statuses in, summary and condition out.

use std::collections::BTreeMap;

use ferrolb_crds::{SpeakerStatus, conditions};
use kube::ResourceExt;

/// Nodes named in a condition message before "and N more".
const LISTED: usize = 8;

/// What the speakers report about strictARP.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Speakers whose `StrictARP` condition is True or False.
    pub reporting: usize,
    /// Nodes whose speaker reports `StrictARP` False, with the speaker's message.
    pub at_risk: BTreeMap<String, String>,
}

impl Summary {
    /// Gathers the `StrictARP` conditions of every `SpeakerStatus`.
    pub fn of<'a>(statuses: impl IntoIterator<Item = &'a SpeakerStatus>) -> Self {
        let mut summary = Self::default();
        for status in statuses {
            let condition = status.status.as_ref().and_then(|s| {
                s.conditions
                    .iter()
                    .find(|c| c.type_ == conditions::STRICT_ARP)
            });
            let Some(condition) = condition else {
                continue;
            };
            let node = if status.spec.node_name.is_empty() {
                status.name_any()
            } else {
                status.spec.node_name.clone()
            };
            match condition.status.as_str() {
                "True" => summary.reporting += 1,
                "False" => {
                    summary.reporting += 1;
                    summary.at_risk.insert(node, condition.message.clone());
                }
                _ => {}
            }
        }
        summary
    }

    /// The `StrictARP` condition of an `L2Advertisement`: `(status, reason,
    /// message)`. Every advertisement gets the same one: a node without
    /// strictARP answers for every IP bound to its `kube-ipvs0`, whichever
    /// nodes an advertisement selects.
    pub fn condition(&self) -> (&'static str, &'static str, String) {
        if self.reporting == 0 {
            return (
                "Unknown",
                "NoSpeakerReports",
                "no speaker has reported its node's ARP settings yet".to_owned(),
            );
        }
        if self.at_risk.is_empty() {
            return (
                "True",
                "AllNodesSafe",
                format!(
                    "the {} reporting speakers' nodes answer ARP only for the IPs \
                     they own (strictARP or no IPVS)",
                    self.reporting
                ),
            );
        }
        let mut names: Vec<String> = self
            .at_risk
            .keys()
            .take(LISTED)
            .map(|n| format!("{n:?}"))
            .collect();
        if self.at_risk.len() > LISTED {
            names.push(format!("and {} more", self.at_risk.len() - LISTED));
        }
        (
            "False",
            "NodesAtRisk",
            format!(
                "{} of {} nodes answer ARP for every LoadBalancer IP (kube-proxy in \
                 IPVS mode without strictARP), so clients may reach a node that does \
                 not own the IP: {}. Set ipvs.strictARP: true in kube-proxy's \
                 configuration or install with speaker.strictARP.enforce=true; the \
                 nodes' SpeakerStatus says exactly what to change",
                self.at_risk.len(),
                self.reporting,
                names.join(", ")
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn speaker(node: &str, strict_arp: Option<&str>) -> SpeakerStatus {
        let conditions: Vec<serde_json::Value> = strict_arp
            .map(|s| {
                json!({
                    "type": "StrictARP", "status": s, "reason": "Checked",
                    "message": format!("{node}: set arp_ignore=1"),
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                })
            })
            .into_iter()
            .chain([json!({
                "type": "Ready", "status": "True", "reason": "Ready", "message": "",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            })])
            .collect();
        serde_json::from_value(json!({
            "apiVersion": "ferrolb.io/v1beta1", "kind": "SpeakerStatus",
            "metadata": { "name": node },
            "spec": { "nodeName": node },
            "status": { "conditions": conditions },
        }))
        .unwrap()
    }

    #[test]
    fn summary_table() {
        type Case = (
            &'static str,
            Vec<SpeakerStatus>,
            &'static str,
            &'static str,
            &'static [&'static str],
        );
        let cases: [Case; 5] = [
            ("no speakers", vec![], "Unknown", "NoSpeakerReports", &[]),
            (
                "no speaker has checked yet",
                vec![speaker("a", None), speaker("b", Some("Unknown"))],
                "Unknown",
                "NoSpeakerReports",
                &[],
            ),
            (
                "all safe",
                vec![speaker("a", Some("True")), speaker("b", Some("True"))],
                "True",
                "AllNodesSafe",
                &["2 reporting"],
            ),
            (
                "one node at risk",
                vec![
                    speaker("a", Some("True")),
                    speaker("b", Some("False")),
                    speaker("c", None),
                ],
                "False",
                "NodesAtRisk",
                &[
                    "1 of 2 nodes",
                    "\"b\"",
                    "ipvs.strictARP: true",
                    "enforce=true",
                ],
            ),
            (
                "the list is capped",
                (0..10)
                    .map(|i| speaker(&format!("n{i}"), Some("False")))
                    .collect(),
                "False",
                "NodesAtRisk",
                &["10 of 10", "\"n0\"", "\"n7\"", "and 2 more"],
            ),
        ];
        for (name, speakers, status, reason, words) in cases {
            let summary = Summary::of(&speakers);
            let (got_status, got_reason, message) = summary.condition();
            assert_eq!((got_status, got_reason), (status, reason), "{name}");
            for w in words {
                assert!(message.contains(w), "{name}: {message:?} lacks {w:?}");
            }
        }
    }

    #[test]
    fn keeps_the_speakers_messages_by_node() {
        let summary = Summary::of(&[speaker("b", Some("False")), speaker("a", Some("False"))]);
        let nodes: Vec<&str> = summary.at_risk.keys().map(String::as_str).collect();
        assert_eq!(nodes, ["a", "b"]);
        assert_eq!(summary.at_risk["a"], "a: set arp_ignore=1");
    }
}
