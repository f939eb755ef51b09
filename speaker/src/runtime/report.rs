//! What this speaker tells the API about the plan: which ServiceL2Status
//! objects to write and which Events to publish. Pure: it compares the new
//! plan with what it reported last and returns only the differences, so the
//! API sees writes on ownership changes and nothing in steady state.

use std::collections::{BTreeMap, BTreeSet};

use ferrolb_crds::ServiceL2StatusStatus;
use ferrolb_speaker::election::{ElectionKey, NodeName, owner};
use ferrolb_speaker::eligibility::{InterfaceSelection, Plan, ServiceId};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// What the election loop knows about a Service beyond the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServiceMeta {
    /// UID, for the owner reference.
    pub uid: String,
    /// The Service's IPs, as in its status.
    pub ips: Vec<String>,
}

/// An Event to publish on a Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Notice {
    /// The Service.
    pub service: ServiceId,
    /// Warning rather than Normal.
    pub warning: bool,
    /// `Announced` or `AnnounceFailed`.
    pub reason: &'static str,
    /// The sentence.
    pub note: String,
}

/// The writes one recomputation asks for.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Writes {
    /// ServiceL2Status to apply, with the Service's UID.
    pub statuses: Vec<(ServiceId, String, ServiceL2StatusStatus)>,
    /// Events to publish.
    pub notices: Vec<Notice>,
}

/// Remembers what was reported, to write only changes.
#[derive(Debug)]
pub(crate) struct Reporter {
    me: NodeName,
    /// The last status reported per Service, `since` left out.
    reported: BTreeMap<ServiceId, ServiceL2StatusStatus>,
    /// When this node took over each unit it owns.
    since: BTreeMap<ElectionKey, Time>,
}

impl Reporter {
    /// A reporter for node `me`.
    pub(crate) fn new(me: NodeName) -> Self {
        Self {
            me,
            reported: BTreeMap::new(),
            since: BTreeMap::new(),
        }
    }

    /// Forgets what was reported, so that the next [`Reporter::update`]
    /// writes every status afresh (after this speaker stood down, others
    /// may have written them meanwhile).
    pub(crate) fn forget(&mut self) {
        self.reported.clear();
        self.since.clear();
    }

    /// The writes for `plan`. The owner of a unit reports its Services; a
    /// unit nobody owns is reported by the live speaker rendezvous hashing
    /// picks among all (`live`), so exactly one speaker explains it.
    /// `in_use` spells out a selection as the interfaces this node really
    /// announces on: a named interface the node lacks or cannot use is not
    /// reported.
    pub(crate) fn update(
        &mut self,
        plan: &Plan,
        live: &BTreeSet<NodeName>,
        meta: &BTreeMap<ServiceId, ServiceMeta>,
        in_use: impl Fn(&InterfaceSelection) -> Vec<String>,
        now: Time,
        incarnation: u64,
    ) -> Writes {
        let mut writes = Writes::default();
        let live: Vec<NodeName> = live.iter().cloned().collect();
        let mut still_mine = BTreeSet::new();
        let mut owned_keys = BTreeSet::new();
        for unit in &plan.units {
            let reporter = match &unit.outcome {
                Ok(o) => Some(&o.node),
                Err(_) => owner(&unit.key, &live),
            };
            if reporter != Some(&self.me) {
                continue;
            }
            if unit.outcome.is_ok() {
                owned_keys.insert(unit.key.clone());
            }
            let since = self
                .since
                .entry(unit.key.clone())
                .or_insert_with(|| now.clone())
                .clone();
            for service in &unit.services {
                let Some(meta) = meta.get(service) else {
                    continue;
                };
                still_mine.insert(service.clone());
                let status = match &unit.outcome {
                    Ok(o) => ServiceL2StatusStatus {
                        node: Some(o.node.to_string()),
                        interfaces: in_use(&o.interfaces),
                        ips: meta.ips.clone(),
                        since: None,
                        incarnation: Some(incarnation),
                        reason: None,
                        message: None,
                    },
                    Err(refusal) => ServiceL2StatusStatus {
                        ips: meta.ips.clone(),
                        reason: Some(refusal.reason.to_string()),
                        message: Some(refusal.message.clone()),
                        ..ServiceL2StatusStatus::default()
                    },
                };
                if self.reported.get(service) == Some(&status) {
                    continue;
                }
                let previous = self.reported.insert(service.clone(), status.clone());
                match &unit.outcome {
                    Ok(o) => {
                        let was_mine = previous.as_ref().and_then(|p| p.node.as_deref())
                            == Some(self.me.as_str());
                        if !was_mine {
                            writes.notices.push(Notice {
                                service: service.clone(),
                                warning: false,
                                reason: "Announced",
                                note: format!(
                                    "announced by node {} on {}",
                                    o.node,
                                    describe(&status.interfaces, &o.interfaces)
                                ),
                            });
                        }
                    }
                    Err(refusal) => {
                        let same_reason = previous.as_ref().and_then(|p| p.reason.as_ref())
                            == status.reason.as_ref();
                        if !same_reason {
                            writes.notices.push(Notice {
                                service: service.clone(),
                                warning: true,
                                reason: "AnnounceFailed",
                                note: format!("{}: {}", refusal.reason, refusal.message),
                            });
                        }
                    }
                }
                let mut with_since = status;
                if with_since.node.is_some() {
                    with_since.since = Some(since.clone());
                }
                writes
                    .statuses
                    .push((service.clone(), meta.uid.clone(), with_since));
            }
        }
        // Forget what another speaker now reports, so that reporting it again
        // later writes afresh.
        self.reported.retain(|s, _| still_mine.contains(s));
        self.since.retain(|k, _| owned_keys.contains(k));
        writes
    }
}

fn describe(in_use: &[String], selected: &InterfaceSelection) -> String {
    match (in_use.is_empty(), selected) {
        (false, _) => in_use.join(", "),
        (true, InterfaceSelection::All | InterfaceSelection::AllAnd(_)) => {
            "no interface yet".to_owned()
        }
        (true, InterfaceSelection::Only(names)) => format!(
            "no interface yet: the node has none of the interfaces its L2Advertisements name ({}) up and usable; its speaker's log says why",
            names.iter().cloned().collect::<Vec<_>>().join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use ferrolb_speaker::eligibility::{Owner, Reason, Refusal, Unit};
    use k8s_openapi::jiff::Timestamp;

    use super::*;

    fn ip() -> IpAddr {
        "198.18.0.200".parse().unwrap()
    }

    fn plan(outcome: Result<Owner, Refusal>) -> Plan {
        Plan {
            units: vec![Unit {
                key: ElectionKey::new([ip()]),
                services: vec![ServiceId::new("default", "web")],
                outcome,
            }],
        }
    }

    fn owned_by(node: &str) -> Result<Owner, Refusal> {
        Ok(Owner {
            node: NodeName::from(node),
            interfaces: InterfaceSelection::All,
        })
    }

    fn meta() -> BTreeMap<ServiceId, ServiceMeta> {
        [(
            ServiceId::new("default", "web"),
            ServiceMeta {
                uid: "u1".to_owned(),
                ips: vec!["198.18.0.200".to_owned()],
            },
        )]
        .into()
    }

    fn live() -> BTreeSet<NodeName> {
        ["node-1", "node-2"]
            .iter()
            .map(|n| NodeName::from(*n))
            .collect()
    }

    fn now() -> Time {
        Time(Timestamp::UNIX_EPOCH)
    }

    fn no_interfaces(_: &InterfaceSelection) -> Vec<String> {
        Vec::new()
    }

    #[test]
    fn only_interfaces_in_use_are_reported() {
        let mut r = Reporter::new(NodeName::from("node-1"));
        // eth0 and veth0 are announced on; br0 is down.
        let in_use = |selected: &InterfaceSelection| -> Vec<String> {
            ["eth0", "veth0"]
                .into_iter()
                .filter(|name| match selected {
                    InterfaceSelection::All => *name == "eth0",
                    InterfaceSelection::AllAnd(names) => *name == "eth0" || names.contains(*name),
                    InterfaceSelection::Only(names) => names.contains(*name),
                })
                .map(str::to_owned)
                .collect()
        };
        let only = |names: &[&str]| {
            plan(Ok(Owner {
                node: NodeName::from("node-1"),
                interfaces: InterfaceSelection::Only(
                    names.iter().map(|n| (*n).to_owned()).collect(),
                ),
            }))
        };
        let w = r.update(&only(&["br0", "veth0"]), &live(), &meta(), in_use, now(), 1);
        assert_eq!(w.statuses[0].2.interfaces, ["veth0"]);
        assert_eq!(w.notices[0].note, "announced by node node-1 on veth0");

        let mut r = Reporter::new(NodeName::from("node-1"));
        let w = r.update(&only(&["br0"]), &live(), &meta(), in_use, now(), 1);
        assert!(w.statuses[0].2.interfaces.is_empty());
        assert_eq!(
            w.notices[0].note,
            "announced by node node-1 on no interface yet: the node has none of the interfaces its L2Advertisements name (br0) up and usable; its speaker's log says why"
        );
    }

    #[test]
    fn owner_writes_once_and_announces() {
        let mut r = Reporter::new(NodeName::from("node-1"));
        let eth0 = ["eth0".to_owned()];
        let w = r.update(
            &plan(owned_by("node-1")),
            &live(),
            &meta(),
            |_: &InterfaceSelection| eth0.to_vec(),
            now(),
            1,
        );
        assert_eq!(w.statuses.len(), 1);
        let status = &w.statuses[0].2;
        assert_eq!(status.node.as_deref(), Some("node-1"));
        assert_eq!(status.interfaces, ["eth0"]);
        assert!(status.since.is_some());
        assert_eq!(w.notices[0].reason, "Announced");
        let again = r.update(
            &plan(owned_by("node-1")),
            &live(),
            &meta(),
            |_: &InterfaceSelection| eth0.to_vec(),
            now(),
            1,
        );
        assert_eq!(again, Writes::default(), "steady state writes nothing");
    }

    #[test]
    fn a_new_incarnation_rewrites_the_status() {
        let mut r = Reporter::new(NodeName::from("node-1"));
        let w = r.update(
            &plan(owned_by("node-1")),
            &live(),
            &meta(),
            no_interfaces,
            now(),
            1,
        );
        assert_eq!(w.statuses[0].2.incarnation, Some(1));
        let w = r.update(
            &plan(owned_by("node-1")),
            &live(),
            &meta(),
            no_interfaces,
            now(),
            2,
        );
        assert_eq!(
            w.statuses.len(),
            1,
            "the claim of the old incarnation is stale"
        );
        assert_eq!(w.statuses[0].2.incarnation, Some(2));
        assert!(w.notices.is_empty(), "the node did not change");
        r.forget();
        let w = r.update(
            &plan(owned_by("node-1")),
            &live(),
            &meta(),
            no_interfaces,
            now(),
            2,
        );
        assert_eq!(w.statuses.len(), 1, "written afresh after standing down");
    }

    #[test]
    fn non_owner_writes_nothing_and_rewrites_after_regaining() {
        let mut r = Reporter::new(NodeName::from("node-1"));
        let w = r.update(
            &plan(owned_by("node-2")),
            &live(),
            &meta(),
            no_interfaces,
            now(),
            1,
        );
        assert_eq!(w, Writes::default());
        r.update(
            &plan(owned_by("node-1")),
            &live(),
            &meta(),
            no_interfaces,
            now(),
            1,
        );
        r.update(
            &plan(owned_by("node-2")),
            &live(),
            &meta(),
            no_interfaces,
            now(),
            1,
        );
        let w = r.update(
            &plan(owned_by("node-1")),
            &live(),
            &meta(),
            no_interfaces,
            now(),
            1,
        );
        assert_eq!(w.statuses.len(), 1, "a regained Service is written again");
    }

    #[test]
    fn exactly_one_speaker_explains_a_refusal() {
        let refused = || {
            plan(Err(Refusal {
                reason: Reason::NoReadyEndpoints,
                message: "none ready".to_owned(),
            }))
        };
        let mut writers = 0;
        for node in ["node-1", "node-2"] {
            let mut r = Reporter::new(NodeName::from(node));
            let w = r.update(&refused(), &live(), &meta(), no_interfaces, now(), 1);
            if !w.statuses.is_empty() {
                writers += 1;
                let status = &w.statuses[0].2;
                assert_eq!(status.reason.as_deref(), Some("NoReadyEndpoints"));
                assert_eq!(status.node, None);
                assert_eq!(w.notices[0].reason, "AnnounceFailed");
                assert!(w.notices[0].warning);
            }
        }
        assert_eq!(writers, 1);
    }
}
