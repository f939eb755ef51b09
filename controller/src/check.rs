//! `ferrolb-controller check`: whether an installation works, read through the API
//! with read-only permissions (the chart's `helm test` runs it; so can anyone with a
//! kubeconfig).
//!
//! The verdict is a pure function of what was read ([`assess`] over [`Observed`]), so
//! every finding is unit-tested without an API server; [`observe`] only reads.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use ferrolb_crds::{INSTANCE_LABEL, SpeakerStatus};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, ListParams};
use thiserror::Error;

/// The API version of FerroLB's kinds.
pub const API_VERSION: &str = "ferrolb.io/v1beta1";

/// The resources FerroLB's CRDs serve, by plural name.
pub const RESOURCES: [&str; 4] = [
    "ipaddresspools",
    "l2advertisements",
    "servicel2statuses",
    "speakerstatuses",
];

/// Which installation to check: the names the chart gives its objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The release namespace (controller, speakers, Lease).
    pub namespace: String,
    /// The controller's Deployment.
    pub controller: String,
    /// The speakers' DaemonSet.
    pub speaker: String,
    /// The controller's leader-election Lease.
    pub lease: String,
    /// The installation's `--instance` name, if it has one: its SpeakerStatus objects
    /// carry it as a label.
    pub instance: Option<String>,
}

/// A Deployment's or DaemonSet's replicas and pods, as read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Workload {
    /// Replicas wanted (`spec.replicas`, or `status.desiredNumberScheduled`).
    pub desired: i32,
    /// Replicas ready, as the workload's status counts them.
    pub ready: i32,
    /// Its live pods (not being deleted).
    pub pods: Vec<PodView>,
}

/// One pod of a workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodView {
    /// The pod's name.
    pub name: String,
    /// The node it runs on, once scheduled.
    pub node: Option<String>,
    /// Whether its Ready condition is True.
    pub ready: bool,
}

/// The controller's Lease, as read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseView {
    /// `spec.holderIdentity`: the leading replica's pod name.
    pub holder: Option<String>,
    /// How long ago it was last renewed, when it has a renew time.
    pub renewed_ago: Option<Duration>,
    /// `spec.leaseDurationSeconds`.
    pub duration: Option<Duration>,
}

/// One speaker's SpeakerStatus, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpeakerView {
    /// The node it reports on.
    pub node: String,
    /// Its Ready condition: `None` when it has none yet.
    pub ready: Option<bool>,
    /// The Ready condition's message.
    pub message: String,
    /// Speakers it sees alive, itself included.
    pub peer_count: u32,
}

/// Everything the check reads of one installation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// The resources the API server serves under [`API_VERSION`]; `None` when it
    /// serves no such group version at all.
    pub served: Option<Vec<String>>,
    /// The controller's Deployment; `None` when missing.
    pub controller: Option<Workload>,
    /// The Lease; `None` when missing.
    pub lease: Option<LeaseView>,
    /// The speakers' DaemonSet; `None` when missing.
    pub speaker: Option<Workload>,
    /// The installation's SpeakerStatus objects.
    pub speaker_statuses: Vec<SpeakerView>,
}

/// What a finding is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Area {
    /// FerroLB's CRDs.
    Crds,
    /// The controller's replicas.
    Controller,
    /// Leader election.
    Leader,
    /// The speakers.
    Speakers,
}

impl fmt::Display for Area {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad`, so that a width in the format string lines findings up.
        f.pad(match self {
            Self::Crds => "crds",
            Self::Controller => "controller",
            Self::Leader => "leader",
            Self::Speakers => "speakers",
        })
    }
}

/// One line of the verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// What it is about.
    pub area: Area,
    /// Whether that part works.
    pub ok: bool,
    /// What was found and, for a problem, what to look at.
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mark = if self.ok { "ok  " } else { "FAIL" };
        write!(f, "{mark} {:<10} {}", self.area, self.message)
    }
}

fn ok(area: Area, message: String) -> Finding {
    Finding {
        area,
        ok: true,
        message,
    }
}

fn problem(area: Area, message: String) -> Finding {
    Finding {
        area,
        ok: false,
        message,
    }
}

/// The verdict on an installation: one finding per area that works, one per problem.
pub fn assess(target: &Target, observed: &Observed) -> Vec<Finding> {
    let mut findings = crds(observed);
    findings.extend(controller(target, observed));
    findings.extend(leader(target, observed));
    findings.extend(speakers(target, observed));
    findings
}

fn crds(observed: &Observed) -> Vec<Finding> {
    let Some(served) = &observed.served else {
        return vec![problem(
            Area::Crds,
            format!(
                "the API server serves no {API_VERSION}: install FerroLB's CRDs (chart value crds.enabled=true)"
            ),
        )];
    };
    let missing: Vec<&str> = RESOURCES
        .into_iter()
        .filter(|r| !served.iter().any(|s| s == r))
        .collect();
    if missing.is_empty() {
        vec![ok(Area::Crds, format!("{} served", RESOURCES.join(", ")))]
    } else {
        vec![problem(
            Area::Crds,
            format!(
                "{API_VERSION} does not serve {}: the CRDs are older than this FerroLB; install its CRDs",
                missing.join(", ")
            ),
        )]
    }
}

fn controller(target: &Target, observed: &Observed) -> Vec<Finding> {
    let deployment = format!("deployment {}/{}", target.namespace, target.controller);
    let Some(workload) = &observed.controller else {
        return vec![problem(Area::Controller, format!("{deployment} not found"))];
    };
    if workload.desired > 0 && workload.ready >= workload.desired {
        vec![ok(
            Area::Controller,
            format!("{} of {} replicas ready", workload.ready, workload.desired),
        )]
    } else {
        vec![problem(
            Area::Controller,
            format!(
                "{} of {} replicas ready: see kubectl -n {} describe deployment {}",
                workload.ready, workload.desired, target.namespace, target.controller
            ),
        )]
    }
}

fn leader(target: &Target, observed: &Observed) -> Vec<Finding> {
    let name = format!("Lease {}/{}", target.namespace, target.lease);
    let Some(lease) = &observed.lease else {
        return vec![problem(
            Area::Leader,
            format!(
                "no {name}: no controller replica has run for leader; see the controller's logs"
            ),
        )];
    };
    let Some(holder) = lease.holder.as_deref().filter(|h| !h.is_empty()) else {
        return vec![problem(
            Area::Leader,
            format!("{name} is held by no one: no controller replica writes"),
        )];
    };
    let renewed = match (lease.renewed_ago, lease.duration) {
        (Some(ago), Some(duration)) if ago <= duration => ago,
        (Some(ago), Some(duration)) => {
            return vec![problem(
                Area::Leader,
                format!(
                    "{name} held by {holder} was last renewed {:.1}s ago, longer than its {}s duration: the leader is gone or stuck",
                    ago.as_secs_f64(),
                    duration.as_secs()
                ),
            )];
        }
        _ => {
            return vec![problem(
                Area::Leader,
                format!("{name} held by {holder} has no renew time or duration"),
            )];
        }
    };
    let pods = observed
        .controller
        .as_ref()
        .map(|w| w.pods.as_slice())
        .unwrap_or_default();
    match pods.iter().find(|p| p.name == holder) {
        None => vec![problem(
            Area::Leader,
            format!(
                "{name} is held by {holder}, not a pod of deployment {}: another installation uses this Lease; give each its own loadBalancerClass",
                target.controller
            ),
        )],
        Some(pod) if !pod.ready => vec![problem(
            Area::Leader,
            format!("{holder} holds {name} but is not Ready: see its logs"),
        )],
        Some(_) => vec![ok(
            Area::Leader,
            format!(
                "{holder} leads ({name} renewed {:.1}s ago)",
                renewed.as_secs_f64()
            ),
        )],
    }
}

fn speakers(target: &Target, observed: &Observed) -> Vec<Finding> {
    let daemonset = format!("daemonset {}/{}", target.namespace, target.speaker);
    let Some(workload) = &observed.speaker else {
        return vec![problem(Area::Speakers, format!("{daemonset} not found"))];
    };
    if workload.desired == 0 {
        return vec![problem(
            Area::Speakers,
            format!(
                "{daemonset} runs on no node, so no IP is announced: check the chart values speaker.nodeSelector and speaker.tolerations"
            ),
        )];
    }
    let mut findings = Vec::new();
    if workload.ready < workload.desired {
        findings.push(problem(
            Area::Speakers,
            format!(
                "{} of {} speakers ready: see kubectl -n {} describe daemonset {}",
                workload.ready, workload.desired, target.namespace, target.speaker
            ),
        ));
    }
    let by_node: BTreeMap<&str, &SpeakerView> = observed
        .speaker_statuses
        .iter()
        .map(|s| (s.node.as_str(), s))
        .collect();
    let nodes: Vec<&str> = workload
        .pods
        .iter()
        .filter_map(|p| p.node.as_deref())
        .collect();
    let expected = u32::try_from(nodes.len()).unwrap_or(u32::MAX);
    for node in &nodes {
        match by_node.get(node) {
            None => findings.push(problem(
                Area::Speakers,
                format!("node {node}: no SpeakerStatus: its speaker has not reached the API server; see its logs"),
            )),
            Some(status) if status.ready != Some(true) => findings.push(problem(
                Area::Speakers,
                format!("node {node}: SpeakerStatus not Ready: {}", status.message),
            )),
            Some(status) if status.peer_count < expected => findings.push(problem(
                Area::Speakers,
                format!(
                    "node {node}: the speaker sees {} of {expected} speakers: gossip between the nodes is blocked (the speaker.gossipPort, UDP and TCP) or the speakers hold different keys",
                    status.peer_count
                ),
            )),
            Some(_) => {}
        }
    }
    if findings.is_empty() {
        findings.push(ok(
            Area::Speakers,
            format!(
                "{expected} of {} speakers ready, each sees all {expected}",
                workload.desired
            ),
        ));
    }
    findings
}

/// A read the check could not make.
#[derive(Debug, Error)]
#[error("cannot read {what}: {source}")]
pub struct Error {
    what: String,
    #[source]
    source: kube::Error,
}

fn read(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let what = what.into();
    move |source| Error { what, source }
}

/// Reads what [`assess`] judges.
pub async fn observe(client: &kube::Client, target: &Target) -> Result<Observed, Error> {
    let ns = &target.namespace;
    let served = match client.list_api_group_resources(API_VERSION).await {
        Ok(list) => Some(
            list.resources
                .into_iter()
                .map(|r| r.name)
                .filter(|n| !n.contains('/'))
                .collect(),
        ),
        Err(kube::Error::Api(e)) if e.code == 404 => None,
        Err(e) => return Err(read(format!("the discovery of {API_VERSION}"))(e)),
    };
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let controller = match Api::<Deployment>::namespaced(client.clone(), ns)
        .get_opt(&target.controller)
        .await
        .map_err(read(format!("deployment {ns}/{}", target.controller)))?
    {
        Some(d) => {
            let spec = d.spec.unwrap_or_default();
            let status = d.status.unwrap_or_default();
            Some(Workload {
                desired: spec.replicas.unwrap_or(1),
                ready: status.ready_replicas.unwrap_or(0),
                pods: pods_of(&pods, &spec.selector).await?,
            })
        }
        None => None,
    };
    let lease = Api::<Lease>::namespaced(client.clone(), ns)
        .get_opt(&target.lease)
        .await
        .map_err(read(format!("Lease {ns}/{}", target.lease)))?
        .map(|l| {
            let spec = l.spec.unwrap_or_default();
            let now = k8s_openapi::jiff::Timestamp::now();
            LeaseView {
                holder: spec.holder_identity,
                renewed_ago: spec
                    .renew_time
                    .and_then(|t| Duration::try_from(now.duration_since(t.0)).ok()),
                duration: spec
                    .lease_duration_seconds
                    .and_then(|s| u64::try_from(s).ok())
                    .map(Duration::from_secs),
            }
        });
    let speaker = match Api::<DaemonSet>::namespaced(client.clone(), ns)
        .get_opt(&target.speaker)
        .await
        .map_err(read(format!("daemonset {ns}/{}", target.speaker)))?
    {
        Some(d) => {
            let spec = d.spec.unwrap_or_default();
            let status = d.status.unwrap_or_default();
            Some(Workload {
                desired: status.desired_number_scheduled,
                ready: status.number_ready,
                pods: pods_of(&pods, &spec.selector).await?,
            })
        }
        None => None,
    };
    let selector = match &target.instance {
        Some(instance) => format!("{INSTANCE_LABEL}={instance}"),
        None => format!("!{INSTANCE_LABEL}"),
    };
    let speaker_statuses = Api::<SpeakerStatus>::all(client.clone())
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(read("speakerstatuses"))?
        .items
        .into_iter()
        .map(|s| {
            let status = s.status.unwrap_or_default();
            let ready = status.conditions.iter().find(|c| c.type_ == "Ready");
            SpeakerView {
                node: s.spec.node_name,
                ready: ready.map(|c| c.status == "True"),
                message: ready.map(|c| c.message.clone()).unwrap_or_default(),
                peer_count: status.peer_count,
            }
        })
        .collect();
    Ok(Observed {
        served,
        controller,
        lease,
        speaker,
        speaker_statuses,
    })
}

/// The live pods a workload's `matchLabels` selects.
async fn pods_of(pods: &Api<Pod>, selector: &LabelSelector) -> Result<Vec<PodView>, Error> {
    let labels: Vec<String> = selector
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let list = pods
        .list(&ListParams::default().labels(&labels.join(",")))
        .await
        .map_err(read("pods"))?;
    Ok(list
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| PodView {
            ready: p
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")),
            node: p.spec.and_then(|s| s.node_name),
            name: p.metadata.name.unwrap_or_default(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target {
            namespace: "ferrolb-system".into(),
            controller: "ferrolb-controller".into(),
            speaker: "ferrolb-speaker".into(),
            lease: "ferrolb-controller".into(),
            instance: None,
        }
    }

    fn pod(name: &str, node: &str, ready: bool) -> PodView {
        PodView {
            name: name.into(),
            node: Some(node.into()),
            ready,
        }
    }

    fn status(node: &str, ready: bool, peers: u32) -> SpeakerView {
        SpeakerView {
            node: node.into(),
            ready: Some(ready),
            message: if ready {
                ""
            } else {
                "no interface to announce on"
            }
            .into(),
            peer_count: peers,
        }
    }

    /// A healthy installation on two nodes.
    fn healthy() -> Observed {
        Observed {
            served: Some(RESOURCES.iter().map(|r| (*r).to_owned()).collect()),
            controller: Some(Workload {
                desired: 2,
                ready: 2,
                pods: vec![pod("c-1", "n1", true), pod("c-2", "n2", true)],
            }),
            lease: Some(LeaseView {
                holder: Some("c-2".into()),
                renewed_ago: Some(Duration::from_secs(2)),
                duration: Some(Duration::from_secs(15)),
            }),
            speaker: Some(Workload {
                desired: 2,
                ready: 2,
                pods: vec![pod("s-a", "n1", true), pod("s-b", "n2", true)],
            }),
            speaker_statuses: vec![status("n1", true, 2), status("n2", true, 2)],
        }
    }

    fn problems(observed: &Observed) -> Vec<String> {
        assess(&target(), observed)
            .into_iter()
            .filter(|f| !f.ok)
            .map(|f| format!("{}: {}", f.area, f.message))
            .collect()
    }

    #[test]
    fn a_healthy_installation_passes_every_area() {
        let findings = assess(&target(), &healthy());
        assert!(findings.iter().all(|f| f.ok), "{findings:?}");
        let areas: Vec<Area> = findings.iter().map(|f| f.area).collect();
        assert_eq!(
            areas,
            [Area::Crds, Area::Controller, Area::Leader, Area::Speakers]
        );
        assert_eq!(
            findings[2].to_string(),
            "ok   leader     c-2 leads (Lease ferrolb-system/ferrolb-controller renewed 2.0s ago)"
        );
    }

    #[test]
    fn missing_crds_are_named() {
        let mut o = healthy();
        o.served = None;
        assert!(problems(&o)[0].contains("serves no ferrolb.io/v1beta1"));
        o.served = Some(vec!["ipaddresspools".into(), "l2advertisements".into()]);
        assert_eq!(
            problems(&o),
            [
                "crds: ferrolb.io/v1beta1 does not serve servicel2statuses, speakerstatuses: the CRDs are older than this FerroLB; install its CRDs"
            ]
        );
    }

    #[test]
    fn unready_controller_replicas_fail() {
        let mut o = healthy();
        if let Some(c) = o.controller.as_mut() {
            c.ready = 1;
        }
        assert_eq!(
            problems(&o),
            [
                "controller: 1 of 2 replicas ready: see kubectl -n ferrolb-system describe deployment ferrolb-controller"
            ]
        );
        o.controller = None;
        let p = problems(&o);
        assert!(p[0].ends_with("not found"), "{p:?}");
        // Without the Deployment the holder cannot be one of its pods.
        assert!(p[1].starts_with("leader:"), "{p:?}");
    }

    #[test]
    fn the_lease_must_be_held_fresh_by_a_ready_controller_pod() {
        type Change = fn(&mut Observed);
        let cases: [(Change, &str); 5] = [
            (|o| o.lease = None, "no Lease"),
            (
                |o| {
                    if let Some(l) = o.lease.as_mut() {
                        l.holder = Some(String::new());
                    }
                },
                "held by no one",
            ),
            (
                |o| {
                    if let Some(l) = o.lease.as_mut() {
                        l.renewed_ago = Some(Duration::from_secs(40));
                    }
                },
                "last renewed 40.0s ago, longer than its 15s duration",
            ),
            (
                |o| {
                    if let Some(l) = o.lease.as_mut() {
                        l.holder = Some("other-controller-7".into());
                    }
                },
                "not a pod of deployment ferrolb-controller",
            ),
            (
                |o| {
                    if let Some(c) = o.controller.as_mut() {
                        c.pods[1].ready = false;
                    }
                },
                "c-2 holds Lease ferrolb-system/ferrolb-controller but is not Ready",
            ),
        ];
        for (change, expected) in cases {
            let mut o = healthy();
            change(&mut o);
            let p = problems(&o);
            assert!(
                p.iter()
                    .any(|m| m.starts_with("leader:") && m.contains(expected)),
                "{expected:?} not in {p:?}"
            );
        }
    }

    #[test]
    fn speakers_on_no_node_fail_with_what_to_check() {
        let mut o = healthy();
        o.speaker = Some(Workload::default());
        assert_eq!(
            problems(&o),
            [
                "speakers: daemonset ferrolb-system/ferrolb-speaker runs on no node, so no IP is announced: check the chart values speaker.nodeSelector and speaker.tolerations"
            ]
        );
    }

    #[test]
    fn every_speaker_node_needs_a_ready_status_that_sees_all_peers() {
        let mut o = healthy();
        o.speaker_statuses = vec![status("n1", false, 2), status("n3", true, 2)];
        assert_eq!(
            problems(&o),
            [
                "speakers: node n1: SpeakerStatus not Ready: no interface to announce on",
                "speakers: node n2: no SpeakerStatus: its speaker has not reached the API server; see its logs"
            ]
        );
        let mut o = healthy();
        o.speaker_statuses[1].peer_count = 1;
        if let Some(s) = o.speaker.as_mut() {
            s.ready = 1;
        }
        let p = problems(&o);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].starts_with("speakers: 1 of 2 speakers ready"), "{p:?}");
        assert!(
            p[1].starts_with("speakers: node n2: the speaker sees 1 of 2"),
            "{p:?}"
        );
    }
}
