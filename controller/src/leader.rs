//! Leader election between controller replicas with a Lease (kube-lease-manager):
//! only the holder writes. Losing the lease, or not seeing it held for longer than
//! its duration, stops writes at once; API errors are retried with backoff and never
//! end the process. A standby claims a released Lease within a second.
//!
//! Leadership is also checked before every single write, not only per pass: the
//! [`Fence`] knows until when the Lease last read as ours stays ours (its
//! `renewTime` plus its duration, the same arithmetic the other replica uses to
//! decide it may take over), and refuses writes past that instant less a margin. A
//! leader paused (SIGSTOP, a long garbage-collection-like stall, a frozen VM) past
//! its Lease therefore writes nothing when it resumes, even before the election task
//! notices the loss. What remains is a pause between the check and the request
//! leaving the process; Service writes are also conditional on the resourceVersion
//! they were decided on, which turns most of those into conflicts.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

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

/// Margin kept before the Lease's expiry: no write starts later than this before
/// the instant the other replica may take over (less for very short Leases).
const FENCE_MARGIN: Duration = Duration::from_secs(2);

/// Until when the Lease is known to be ours, and the margin kept before that.
type Term = Option<(SystemTime, Duration)>;

/// Whether a write may start now; see the module documentation. Cheap to clone and
/// check.
#[derive(Debug, Clone)]
pub struct Fence {
    /// `None`: always open (a single replica without election). Otherwise the
    /// current term, if the Lease is ours.
    until: Option<Arc<Mutex<Term>>>,
}

impl Fence {
    /// A fence that never closes, for `--leader-elect=false`.
    pub fn open() -> Self {
        Self { until: None }
    }

    /// A fence closed until the Lease is confirmed as ours.
    pub fn closed() -> Self {
        Self {
            until: Some(Arc::new(Mutex::new(None))),
        }
    }

    /// Whether a write may start now.
    pub fn allows(&self) -> bool {
        self.allows_at(SystemTime::now())
    }

    /// Whether a write may start at `now`.
    pub fn allows_at(&self, now: SystemTime) -> bool {
        let Some(until) = &self.until else {
            return true;
        };
        let until = until.lock().map(|u| *u).unwrap_or(None);
        until.is_some_and(|(u, margin)| now + margin < u)
    }

    /// The Lease was read as ours, renewed at `renewed` for `duration`.
    pub fn confirm(&self, renewed: SystemTime, duration: Duration) {
        if let Some(until) = &self.until
            && let Ok(mut u) = until.lock()
        {
            *u = Some((renewed + duration, (duration / 6).min(FENCE_MARGIN)));
        }
    }

    /// The Lease is not (or no longer known to be) ours.
    pub fn close(&self) {
        if let Some(until) = &self.until
            && let Ok(mut u) = until.lock()
        {
            *u = None;
        }
    }
}

/// A running election: watch [`Election::leading`]; [`Election::resign`] on shutdown.
#[derive(Debug)]
pub struct Election {
    leading: watch::Receiver<bool>,
    fence: Fence,
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
            fence: Fence::open(),
            _fixed: Some(tx),
            stop: Arc::new(Notify::new()),
            task: None,
        }
    }

    /// Starts campaigning for the Lease.
    pub fn start(client: Client, config: LeaseConfig, metrics: Arc<Metrics>) -> Self {
        let (tx, leading) = watch::channel(false);
        let stop = Arc::new(Notify::new());
        let fence = Fence::closed();
        let task = tokio::spawn(campaign(
            client,
            config,
            metrics,
            tx,
            fence.clone(),
            stop.clone(),
        ));
        Self {
            leading,
            fence,
            _fixed: None,
            stop,
            task: Some(task),
        }
    }

    /// Whether this replica leads, as a watch.
    pub fn leading(&self) -> watch::Receiver<bool> {
        self.leading.clone()
    }

    /// The per-write check of leadership.
    pub fn fence(&self) -> Fence {
        self.fence.clone()
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
    fence: Fence,
    stop: Arc<Notify>,
) {
    let mut backoff = Duration::from_millis(500);
    loop {
        let built = LeaseManagerBuilder::new(client.clone(), &config.name)
            .with_namespace(&config.namespace)
            .with_identity(&config.identity)
            .with_duration(config.duration)
            // Renew at half-life: the fence then always sees a fresh renewal well
            // before its margin.
            .with_grace((config.duration / 2).max(1))
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
                () = lost(&client, &config, &fence), if leading => {
                    tracing::warn!("the Lease is no longer confirmed as ours; stopping writes");
                    fence.close();
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
                        fence.close();
                        metrics.set_leader(false);
                        let _ = tx.send(false);
                        tokio::time::sleep(backoff).await;
                        break;
                    }
                }
                () = stop.notified() => {
                    fence.close();
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
/// us for longer than its duration. Every read that shows the Lease as ours moves the
/// [`Fence`] to the Lease's `renewTime` plus its duration.
async fn lost(client: &Client, config: &LeaseConfig, fence: &Fence) {
    let api: Api<Lease> = Api::namespaced(client.clone(), &config.namespace);
    let mut confirmed = tokio::time::Instant::now();
    let limit = Duration::from_secs(config.duration);
    loop {
        // Read errors and a missing Lease only age the last confirmation.
        if let Ok(Some(lease)) = api.get_opt(&config.name).await {
            let spec = lease.spec.unwrap_or_default();
            if spec.holder_identity.as_deref() == Some(config.identity.as_str()) {
                confirmed = tokio::time::Instant::now();
                let duration = spec
                    .lease_duration_seconds
                    .and_then(|d| u64::try_from(d).ok())
                    .map_or(limit, Duration::from_secs);
                if let Some(renewed) = spec.renew_time {
                    fence.confirm(SystemTime::from(renewed.0), duration);
                }
            } else if spec.holder_identity.is_some_and(|h| !h.is_empty()) {
                fence.close();
                return;
            }
        }
        if confirmed.elapsed() > limit {
            fence.close();
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fence_opens_only_within_the_confirmed_lease() {
        let fence = Fence::closed();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        assert!(!fence.allows_at(t0), "closed until confirmed");
        fence.confirm(t0, Duration::from_secs(15));
        assert!(fence.allows_at(t0 + Duration::from_millis(12_900)));
        assert!(
            !fence.allows_at(t0 + Duration::from_secs(13)),
            "no write starts within the margin before expiry"
        );
        assert!(
            !fence.allows_at(t0 + Duration::from_secs(60)),
            "after a pause"
        );
        fence.close();
        assert!(!fence.allows_at(t0));
        assert!(Fence::open().allows_at(t0 + Duration::from_secs(1 << 30)));
    }
}
