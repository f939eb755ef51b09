//! `ferrolb-controller cleanup`: what an uninstall leaves behind, removed.
//!
//! The chart runs it as a post-delete hook, once the release's workloads and
//! RBAC are gone. Speakers stopping cleanly delete the ServiceL2Status objects
//! naming their node, but on an uninstall Helm deletes their RBAC in the same
//! breath as their DaemonSet, so those deletes can be refused; statuses would
//! then go on naming nodes where nothing announces. This command waits for
//! the installation's speaker pods to be gone, then deletes:
//!
//! - every ServiceL2Status the installation's speakers wrote (told apart by
//!   their server-side-apply field manager, so another installation's stay);
//! - the installation's SpeakerStatus objects (by their instance label);
//! - the controller's Lease;
//! - the installation's pool finalizer on its pools: the CRDs and pools are
//!   kept on uninstall, and a pool must stay deletable without a controller.
//!
//! Each step is idempotent: a rerun (the Job's retry) finds less to do.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use ferrolb_crds::{
    INSTANCE_LABEL, IPAddressPool, ServiceL2Status, SpeakerStatus, speaker_field_manager,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt as _};
use serde_json::json;

use crate::reconcile::POOL_FINALIZER;

/// What to clean up, from the flags.
#[derive(Debug, Clone)]
pub struct Cleanup {
    /// The release namespace (speaker pods, the Lease).
    pub namespace: String,
    /// Label selector of the installation's speaker pods, to wait for.
    pub speaker_selector: String,
    /// `--instance` of the installation (`None`: the unnamed one).
    pub instance: Option<String>,
    /// `--load-balancer-class` of the installation: whose pools to unlock.
    pub class: Option<String>,
    /// The controller's Lease.
    pub lease_name: String,
    /// Longest wait for the speaker pods to be gone.
    pub wait: Duration,
}

/// What was removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Removed {
    /// ServiceL2Status objects deleted.
    pub service_statuses: usize,
    /// SpeakerStatus objects deleted.
    pub speaker_statuses: usize,
    /// Pools whose finalizer was removed.
    pub pools_unlocked: usize,
    /// Whether the Lease was deleted.
    pub lease: bool,
}

/// Whether `meta` was written by the field manager `manager`.
pub fn written_by(meta: &ObjectMeta, manager: &str) -> bool {
    meta.managed_fields
        .iter()
        .flatten()
        .any(|f| f.manager.as_deref() == Some(manager))
}

/// The label selector of an installation's SpeakerStatus objects.
pub fn speaker_status_selector(instance: Option<&str>) -> String {
    match instance {
        Some(i) => format!("{INSTANCE_LABEL}={i}"),
        None => format!("!{INSTANCE_LABEL}"),
    }
}

/// The finalizers of a pool without the installation's, if it had it.
pub fn without_pool_finalizer(finalizers: &[String]) -> Option<Vec<String>> {
    finalizers.iter().any(|f| f == POOL_FINALIZER).then(|| {
        finalizers
            .iter()
            .filter(|f| *f != POOL_FINALIZER)
            .cloned()
            .collect()
    })
}

/// Runs the cleanup.
pub async fn run(client: Client, cleanup: &Cleanup) -> Result<Removed> {
    wait_for_speakers(&client, cleanup).await?;
    let mut removed = Removed::default();

    let manager = speaker_field_manager(cleanup.instance.as_deref());
    let statuses: Api<ServiceL2Status> = Api::all(client.clone());
    for status in statuses
        .list(&ListParams::default())
        .await
        .context("cannot list ServiceL2Status objects")?
    {
        if !written_by(&status.metadata, &manager) {
            continue;
        }
        let namespace = status.namespace().unwrap_or_default();
        let api: Api<ServiceL2Status> = Api::namespaced(client.clone(), &namespace);
        if deleted(
            api.delete(&status.name_any(), &DeleteParams::default())
                .await,
        )
        .with_context(|| {
            format!(
                "cannot delete ServiceL2Status {namespace}/{}",
                status.name_any()
            )
        })? {
            removed.service_statuses += 1;
        }
    }

    let speakers: Api<SpeakerStatus> = Api::all(client.clone());
    let selector = speaker_status_selector(cleanup.instance.as_deref());
    for speaker in speakers
        .list(&ListParams::default().labels(&selector))
        .await
        .context("cannot list SpeakerStatus objects")?
    {
        if deleted(
            speakers
                .delete(&speaker.name_any(), &DeleteParams::default())
                .await,
        )
        .with_context(|| format!("cannot delete SpeakerStatus {}", speaker.name_any()))?
        {
            removed.speaker_statuses += 1;
        }
    }

    let pools: Api<IPAddressPool> = Api::all(client.clone());
    for pool in pools
        .list(&ListParams::default())
        .await
        .context("cannot list IPAddressPools")?
    {
        if pool.spec.load_balancer_class.as_deref() != cleanup.class.as_deref() {
            continue;
        }
        let Some(finalizers) = without_pool_finalizer(pool.finalizers()) else {
            continue;
        };
        // Conditional on the version read, so a finalizer someone adds
        // meanwhile is not dropped (a conflict fails the Job, which retries).
        let patch = json!({
            "metadata": {
                "resourceVersion": pool.resource_version(),
                "finalizers": finalizers,
            }
        });
        pools
            .patch(
                &pool.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .with_context(|| format!("cannot remove the finalizer of pool {}", pool.name_any()))?;
        removed.pools_unlocked += 1;
    }

    let leases: Api<Lease> = Api::namespaced(client, &cleanup.namespace);
    removed.lease = deleted(
        leases
            .delete(&cleanup.lease_name, &DeleteParams::default())
            .await,
    )
    .with_context(|| format!("cannot delete Lease {}", cleanup.lease_name))?;
    Ok(removed)
}

/// `Ok(true)` when deleted now, `Ok(false)` when it was already gone.
fn deleted<T>(result: Result<T, kube::Error>) -> Result<bool, kube::Error> {
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Waits until no pod matches the speaker selector, at most `cleanup.wait`:
/// a speaker still stopping could write a status after it was deleted.
async fn wait_for_speakers(client: &Client, cleanup: &Cleanup) -> Result<()> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &cleanup.namespace);
    let params = ListParams::default().labels(&cleanup.speaker_selector);
    let deadline = Instant::now() + cleanup.wait;
    loop {
        let left = pods
            .list_metadata(&params)
            .await
            .context("cannot list the speaker pods")?
            .items
            .len();
        if left == 0 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            tracing::warn!(
                pods = left,
                "speaker pods still present after {:?}; cleaning up anyway",
                cleanup.wait
            );
            return Ok(());
        }
        tracing::info!(pods = left, "waiting for the speaker pods to stop");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;

    use super::*;

    fn managed(managers: &[&str]) -> ObjectMeta {
        ObjectMeta {
            managed_fields: Some(
                managers
                    .iter()
                    .map(|m| ManagedFieldsEntry {
                        manager: Some((*m).to_owned()),
                        ..ManagedFieldsEntry::default()
                    })
                    .collect(),
            ),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn statuses_are_told_apart_by_the_installation_that_wrote_them() {
        let ours = speaker_field_manager(None);
        let theirs = speaker_field_manager(Some("ferrolb-b"));
        assert!(written_by(&managed(&["kubectl", &ours]), &ours));
        assert!(!written_by(&managed(&[&theirs]), &ours));
        assert!(written_by(&managed(&[&theirs]), &theirs));
        assert!(!written_by(&ObjectMeta::default(), &ours));
    }

    #[test]
    fn speaker_statuses_are_selected_by_instance_label() {
        assert_eq!(speaker_status_selector(None), "!ferrolb.io/instance");
        assert_eq!(speaker_status_selector(Some("b")), "ferrolb.io/instance=b");
    }

    #[test]
    fn only_our_finalizer_is_removed() {
        let f = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            without_pool_finalizer(&f(&["example.com/keep", POOL_FINALIZER])),
            Some(f(&["example.com/keep"]))
        );
        assert_eq!(without_pool_finalizer(&f(&["example.com/keep"])), None);
    }
}
