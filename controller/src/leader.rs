//! Leader election between controller replicas with a Lease (kube-lease-manager):
//! only the holder writes. Losing the lease, or not seeing it held for longer than
//! its duration, stops writes at once; API errors are retried with backoff and never
//! end the process. A standby claims a released Lease within a second.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client};
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::metrics::Metrics;

/// Where the Lease lives and who we are.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// The Lease's namespace.
    pub namespace: String,
    /// The Lease's name.
    pub name: String,
    /// This replica's identity.
    pub identity: String,
    /// Seconds the Lease holds without renewal.
    pub duration: u64,
}

/// A running election: watch [`Election::leading`]; [`Election::resign`] on shutdown.
#[derive(Debug)]
pub struct Election {
    leading: watch::Receiver<bool>,
    /// Kept so that an always-leading watch never closes.
    _fixed: Option<watch::Sender<bool>>,
    stop: Arc<Notify>,
    task: Option<JoinHandle<()>>,
}

impl Election {
    /// Always leading: for `--leader-elect=false` (a single replica).
    pub fn always() -> Self {
        let (tx, leading) = watch::channel(true);
        Self {
            leading,
            _fixed: Some(tx),
            stop: Arc::new(Notify::new()),
            task: None,
        }
    }

    /// Starts campaigning for the Lease.
    pub fn start(client: Client, config: LeaseConfig, metrics: Arc<Metrics>) -> Self {
        let (tx, leading) = watch::channel(false);
        let stop = Arc::new(Notify::new());
        let task = tokio::spawn(campaign(client, config, metrics, tx, stop.clone()));
        Self {
            leading,
            _fixed: None,
            stop,
            task: Some(task),
        }
    }

    /// Whether this replica leads, as a watch.
    pub fn leading(&self) -> watch::Receiver<bool> {
        self.leading.clone()
    }

    /// Releases the Lease (so the other replica takes over without waiting for it to
    /// expire) and stops campaigning.
    pub async fn resign(mut self) {
        self.stop.notify_one();
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(3), task).await;
        }
    }
}

async fn campaign(
    client: Client,
    config: LeaseConfig,
    metrics: Arc<Metrics>,
    tx: watch::Sender<bool>,
    stop: Arc<Notify>,
) {
    let mut backoff = Duration::from_millis(500);
    loop {
        let built = LeaseManagerBuilder::new(client.clone(), &config.name)
            .with_namespace(&config.namespace)
            .with_identity(&config.identity)
            .with_duration(config.duration)
            .with_grace((config.duration / 3).max(1))
            .build()
            .await;
        let manager = match built {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, lease = %config.name, "cannot set up the Lease; retrying");
                metrics.api_error("lease");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = stop.notified() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        backoff = Duration::from_millis(500);
        let (mut state, handle) = manager.watch().await;
        loop {
            let leading = *state.borrow_and_update();
            if *tx.borrow() != leading {
                tracing::info!(identity = %config.identity, leading, "leadership changed");
                metrics.set_leader(leading);
                let _ = tx.send(leading);
            }
            tokio::select! {
                // A standby checks the Lease once a second: the manager itself only
                // looks again when the holder's term would expire, which would keep a
                // gracefully released Lease unclaimed for up to its whole duration.
                () = released(&client, &config), if !leading => {
                    tracing::info!("the Lease was released; claiming it");
                    break;
                }
                // The manager keeps believing it leads while its renewals fail; the
                // Lease may meanwhile expire and go to the other replica. Stop writing
                // as soon as the Lease names someone else, or cannot be read for
                // longer than its duration.
                () = lost(&client, &config), if leading => {
                    tracing::warn!("the Lease is no longer confirmed as ours; stopping writes");
                    metrics.set_leader(false);
                    let _ = tx.send(false);
                    break;
                }
                changed = state.changed() => {
                    if changed.is_err() {
                        // The manager's task ended (an API error it gave up on): stop
                        // writing until a new manager holds the Lease again.
                        tracing::warn!("lost track of the Lease; campaigning again");
                        metrics.api_error("lease");
                        metrics.set_leader(false);
                        let _ = tx.send(false);
                        tokio::time::sleep(backoff).await;
                        break;
                    }
                }
                () = stop.notified() => {
                    metrics.set_leader(false);
                    let _ = tx.send(false);
                    // Dropping the receiver makes the manager release the Lease.
                    drop(state);
                    let _ = handle.await;
                    return;
                }
            }
        }
        // Dropping the receiver ends the manager's task (releasing the Lease if held).
        drop(state);
        let _ = handle.await;
    }
}

/// Resolves once the Lease is held by another replica, or has not been seen held by
/// us for longer than its duration.
async fn lost(client: &Client, config: &LeaseConfig) {
    let api: Api<Lease> = Api::namespaced(client.clone(), &config.namespace);
    let mut confirmed = tokio::time::Instant::now();
    let limit = Duration::from_secs(config.duration);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        // Read errors and a missing Lease only age the last confirmation.
        if let Ok(Some(lease)) = api.get_opt(&config.name).await {
            let holder = lease.spec.and_then(|s| s.holder_identity);
            if holder.as_deref() == Some(config.identity.as_str()) {
                confirmed = tokio::time::Instant::now();
            } else if holder.is_some_and(|h| !h.is_empty()) {
                return;
            }
        }
        if confirmed.elapsed() > limit {
            return;
        }
    }
}

/// Resolves once the Lease has no holder (released by a leader that stopped).
async fn released(client: &Client, config: &LeaseConfig) {
    let api: Api<Lease> = Api::namespaced(client.clone(), &config.namespace);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if let Ok(Some(lease)) = api.get_opt(&config.name).await
            && lease
                .spec
                .and_then(|s| s.holder_identity)
                .is_none_or(|h| h.is_empty())
        {
            return;
        }
    }
}
