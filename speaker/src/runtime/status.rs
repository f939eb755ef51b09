//! Writes to the API: ServiceL2Status, this speaker's SpeakerStatus and
//! Events, from one task that never blocks the election.
//!
//! The election loop hands over what the API should say; this task writes
//! it with server-side apply and retries with backoff when the API server is
//! unreachable. Only the latest wish per object is kept, so an outage costs
//! one write per object afterwards, not a backlog. Nothing here can delay or
//! undo an announcement.

use std::collections::BTreeMap;
use std::time::Duration;

use ferrolb_crds::{ServiceL2StatusStatus, SpeakerStatusStatus};
use ferrolb_speaker::eligibility::ServiceId;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, ResourceExt as _};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use super::instance::Instance;
use super::metrics::SpeakerMetrics;

const API_VERSION: &str = "ferrolb.io/v1beta1";

/// What the API should say about one Service.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ServiceReport {
    /// The Service's UID, for the owner reference.
    pub uid: String,
    /// The status to apply.
    pub status: ServiceL2StatusStatus,
}

/// An Event on a Service (or, for strictARP, on the Node).
#[derive(Debug, Clone)]
pub(crate) struct ServiceEvent {
    /// The object the Event is about.
    pub regarding: ObjectReference,
    /// Normal or Warning.
    pub warning: bool,
    /// `Announced`, `AnnounceFailed`, ...
    pub reason: String,
    /// The sentence shown by `kubectl describe`.
    pub note: String,
}

/// A request to the writer.
#[derive(Debug)]
pub(crate) enum Write {
    /// Apply a ServiceL2Status.
    Service(ServiceId, ServiceReport),
    /// Apply this speaker's SpeakerStatus.
    Speaker(SpeakerStatusStatus),
    /// Publish an Event.
    Event(ServiceEvent),
    /// The speaker stops: write nothing more, delete the ServiceL2Status
    /// objects that still name this node as last written here, and say how
    /// many were deleted.
    Stop(oneshot::Sender<usize>),
}

/// The sending side, cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Writer {
    tx: mpsc::UnboundedSender<Write>,
}

impl Writer {
    /// Queues a write; never blocks.
    pub(crate) fn send(&self, write: Write) {
        let _ = self.tx.send(write);
    }

    /// On a clean shutdown, after the IPs were handed over: removes the
    /// statuses that would otherwise go on naming this node while nothing here
    /// announces (an uninstall, a speaker removed from a node). A status a
    /// successor has rewritten meanwhile is left alone. Waits at most `limit`;
    /// how many were deleted, if it finished.
    pub(crate) async fn stop(&self, limit: Duration) -> Option<usize> {
        let (tx, rx) = oneshot::channel();
        self.send(Write::Stop(tx));
        tokio::time::timeout(limit, rx).await.ok()?.ok()
    }
}

/// Starts the writer task for node `node` of installation `instance`.
pub(crate) fn spawn(
    client: Client,
    node: String,
    instance: Instance,
    metrics: SpeakerMetrics,
) -> Writer {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(run(client, node, instance, metrics, rx));
    Writer { tx }
}

async fn run(
    client: Client,
    node: String,
    instance: Instance,
    metrics: SpeakerMetrics,
    mut rx: mpsc::UnboundedReceiver<Write>,
) {
    // One field manager for every speaker of the installation, so a new
    // owner's apply replaces all fields the previous owner set (a stale
    // `reason` or `node` disappears); another installation's is another.
    let manager = instance.field_manager();
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: manager.clone(),
            instance: Some(instance.status_name(&node)),
        },
    );
    let mut services: BTreeMap<ServiceId, ServiceReport> = BTreeMap::new();
    // The statuses last written here that name this node, with the
    // resourceVersion the write produced.
    let mut naming_us: BTreeMap<ServiceId, String> = BTreeMap::new();
    let mut speaker: Option<SpeakerStatusStatus> = None;
    let mut backoff = Duration::from_millis(200);
    loop {
        // Wait for work, then take everything queued meanwhile.
        let first = if services.is_empty() && speaker.is_none() {
            match rx.recv().await {
                Some(w) => Some(w),
                None => return,
            }
        } else {
            None
        };
        let mut events = Vec::new();
        for write in first
            .into_iter()
            .chain(std::iter::from_fn(|| rx.try_recv().ok()))
        {
            match write {
                Write::Service(id, report) => {
                    services.insert(id, report);
                }
                Write::Speaker(status) => speaker = Some(status),
                Write::Event(event) => events.push(event),
                Write::Stop(done) => {
                    let deleted = delete_naming_us(&client, &naming_us, &metrics).await;
                    let _ = done.send(deleted);
                    return;
                }
            }
        }
        for event in events {
            publish(&recorder, event, &metrics).await;
        }
        let mut failed = false;
        if let Some(status) = speaker.take()
            && let Err(error) = apply_speaker(&client, &node, &instance, &status).await
        {
            tracing::warn!(%error, "cannot write SpeakerStatus; will retry");
            metrics.api_error("speakerstatuses");
            speaker = Some(status);
            failed = true;
        }
        let pending: Vec<ServiceId> = services.keys().cloned().collect();
        for id in pending {
            let Some(report) = services.get(&id) else {
                continue;
            };
            match apply_service(&client, &manager, &id, report).await {
                Ok(version) => {
                    match version {
                        Some(v) if report.status.node.as_deref() == Some(node.as_str()) => {
                            naming_us.insert(id.clone(), v);
                        }
                        _ => {
                            naming_us.remove(&id);
                        }
                    }
                    services.remove(&id);
                }
                Err(error) => {
                    tracing::warn!(%error, service = %id, "cannot write ServiceL2Status; will retry");
                    metrics.api_error("servicel2statuses");
                    failed = true;
                    // The Service may be gone; its status object goes with it.
                    if matches!(&error, kube::Error::Api(s) if s.code == 404 || s.code == 409) {
                        services.remove(&id);
                    }
                }
            }
        }
        if failed {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(30));
        } else {
            backoff = Duration::from_millis(200);
        }
    }
}

async fn publish(recorder: &Recorder, event: ServiceEvent, metrics: &SpeakerMetrics) {
    let ev = Event {
        type_: if event.warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: event.reason,
        note: Some(fit_note(event.note)),
        action: "Announce".to_owned(),
        secondary: None,
    };
    if let Err(error) = recorder.publish(&ev, &event.regarding).await {
        tracing::debug!(%error, "cannot publish an Event");
        metrics.api_error("events");
    }
}

/// The most bytes the API server accepts in an Event's note.
const MAX_NOTE: usize = 1024;

/// `note`, cut to what an Event holds (at a character boundary, ending in
/// an ellipsis), so that a long refusal is published rather than rejected.
fn fit_note(mut note: String) -> String {
    const ELLIPSIS: &str = "…";
    if note.len() <= MAX_NOTE {
        return note;
    }
    let mut end = MAX_NOTE - ELLIPSIS.len();
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    note.truncate(end);
    note.push_str(ELLIPSIS);
    note
}

async fn apply_service(
    client: &Client,
    manager: &str,
    id: &ServiceId,
    report: &ServiceReport,
) -> Result<Option<String>, kube::Error> {
    let api: Api<ferrolb_crds::ServiceL2Status> = Api::namespaced(client.clone(), &id.namespace);
    let params = PatchParams::apply(manager).force();
    let object = json!({
        "apiVersion": API_VERSION,
        "kind": "ServiceL2Status",
        "metadata": {
            "name": id.name,
            "namespace": id.namespace,
            // Owned by the Service: garbage-collected with it.
            "ownerReferences": [{
                "apiVersion": "v1",
                "kind": "Service",
                "name": id.name,
                "uid": report.uid,
            }],
        },
        "spec": {"serviceName": id.name},
    });
    let status = json!({
        "apiVersion": API_VERSION,
        "kind": "ServiceL2Status",
        "metadata": {"name": id.name, "namespace": id.namespace},
        "status": report.status,
    });
    // The object and its status are two writes. A speaker stopping cleanly
    // may delete the object between them (its own last status was still
    // there: applying an unchanged object does not change its
    // resourceVersion); the status write then finds nothing, and the object
    // is created again. A second 404 means the Service is gone.
    let mut attempts = 0;
    loop {
        attempts += 1;
        api.patch(&id.name, &params, &Patch::Apply(&object)).await?;
        match api
            .patch_status(&id.name, &params, &Patch::Apply(&status))
            .await
        {
            Ok(written) => return Ok(written.metadata.resource_version),
            Err(kube::Error::Api(s)) if s.code == 404 && attempts == 1 => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Deletes each status in `naming_us` unless it changed since this speaker
/// wrote it (a successor's status has another resourceVersion: the API
/// refuses the delete with 409). Returns how many were deleted.
async fn delete_naming_us(
    client: &Client,
    naming_us: &BTreeMap<ServiceId, String>,
    metrics: &SpeakerMetrics,
) -> usize {
    let mut deleted = 0;
    for (id, version) in naming_us {
        let api: Api<ferrolb_crds::ServiceL2Status> =
            Api::namespaced(client.clone(), &id.namespace);
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: Some(version.clone()),
                uid: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(&id.name, &params).await {
            Ok(_) => deleted += 1,
            // Rewritten by a successor, or gone with its Service.
            Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => {}
            Err(error) => {
                tracing::debug!(%error, service = %id, "cannot remove the ServiceL2Status naming this node");
                metrics.api_error("servicel2statuses");
            }
        }
    }
    deleted
}

/// Marks this speaker's SpeakerStatus (`name`) as not ready, on a clean
/// shutdown: a speaker starting meanwhile must not wait for a peer that is
/// gone.
pub(crate) async fn not_ready(api: &Api<ferrolb_crds::SpeakerStatus>, name: &str) {
    let now = k8s_openapi::jiff::Timestamp::now();
    let patch = json!({
        "status": {
            "announcing": 0,
            "conditions": [{
                "type": ferrolb_crds::conditions::READY,
                "status": "False",
                "reason": "Stopped",
                "message": "the speaker shut down cleanly and handed its IPs over",
                "lastTransitionTime": now.to_string(),
            }],
        },
    });
    if let Err(error) = api
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        tracing::debug!(%error, "cannot mark the SpeakerStatus stopped");
    }
}

async fn apply_speaker(
    client: &Client,
    node: &str,
    instance: &Instance,
    status: &SpeakerStatusStatus,
) -> Result<(), kube::Error> {
    let api: Api<ferrolb_crds::SpeakerStatus> = Api::all(client.clone());
    let params = PatchParams::apply(&instance.field_manager()).force();
    let name = instance.status_name(node);
    let object = speaker_object(&name, node, instance);
    let current = api.patch(&name, &params, &Patch::Apply(&object)).await?;
    tracing::trace!(name = %current.name_any(), "SpeakerStatus applied");
    let status = json!({
        "apiVersion": API_VERSION,
        "kind": "SpeakerStatus",
        "metadata": {"name": name},
        "status": status,
    });
    api.patch_status(&name, &params, &Patch::Apply(&status))
        .await?;
    Ok(())
}

/// The SpeakerStatus `name` of this installation's speaker on `node`,
/// without its status: what the speaker applies first.
fn speaker_object(name: &str, node: &str, instance: &Instance) -> serde_json::Value {
    let mut metadata = json!({"name": name});
    let labels = instance.labels();
    if !labels.is_empty() {
        metadata["labels"] = json!(labels);
    }
    json!({
        "apiVersion": API_VERSION,
        "kind": "SpeakerStatus",
        "metadata": metadata,
        "spec": {"nodeName": node},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_notes_are_cut_to_what_an_event_holds() {
        assert_eq!(fit_note("short".to_owned()), "short");
        let exact = "x".repeat(MAX_NOTE);
        assert_eq!(fit_note(exact.clone()), exact);
        let long = "é".repeat(MAX_NOTE);
        let cut = fit_note(long);
        assert!(cut.len() <= MAX_NOTE, "{}", cut.len());
        assert!(cut.ends_with('…'));
        assert!(cut.starts_with("éé"));
    }

    #[test]
    fn a_named_installations_speaker_status_is_named_and_labelled_per_instance() {
        let unnamed = speaker_object("node1", "node1", &Instance::default());
        assert_eq!(
            unnamed,
            json!({
                "apiVersion": "ferrolb.io/v1beta1", "kind": "SpeakerStatus",
                "metadata": {"name": "node1"},
                "spec": {"nodeName": "node1"},
            })
        );
        let a = Instance::new("ferrolb-a").unwrap();
        let named = speaker_object(&a.status_name("node1"), "node1", &a);
        assert_eq!(
            named,
            json!({
                "apiVersion": "ferrolb.io/v1beta1", "kind": "SpeakerStatus",
                "metadata": {"name": "ferrolb-a-node1", "labels": {"ferrolb.io/instance": "ferrolb-a"}},
                "spec": {"nodeName": "node1"},
            })
        );
    }
}
