//! The thin asynchronous shell around the [`Reconciler`]: reflectors on Services,
//! IPAddressPools, Namespaces, L2Advertisements and SpeakerStatuses feed a
//! debounced pass; while this replica leads, the pass's
//! [`Plan`](crate::reconcile::Plan) is written to the API server, and pool and
//! advertisement statuses (with the speakers' strictARP verdicts gathered) are
//! brought up to date.
//!
//! Order on taking the lead: wait for every watch to sync, rebuild every assignment
//! from the Services' statuses ([`Reconciler::restore`]), and only then allocate.
//! A replica that loses the lead stops writing and, when it leads again, rebuilds from
//! scratch: what the other leader wrote meanwhile is the truth.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ferrolb_address::Family;
use ferrolb_crds::{
    IPAddressPool, IPAddressPoolStatus, L2Advertisement, L2AdvertisementStatus, SpeakerStatus,
};
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use tokio::sync::{Notify, watch};

use crate::events::Publisher;
use crate::metrics::Metrics;
use crate::reconcile::{Plan, Reconciler, ServiceWrite, Snapshot};
use crate::status;
use crate::strict_arp::Summary;

/// Changes arriving within this window are handled in one pass.
const DEBOUNCE: Duration = Duration::from_millis(5);
/// At most one status write per pool per this interval.
const POOL_STATUS_INTERVAL: Duration = Duration::from_secs(1);
/// Writes in flight at once.
const CONCURRENT_WRITES: usize = 16;
/// First and longest delay before retrying failed writes.
const RETRY_MIN: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// What the runtime needs, built once in `main`.
#[derive(Clone)]
pub struct Context {
    /// The API client.
    pub client: Client,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Event publisher.
    pub events: Publisher,
    /// `--load-balancer-class`.
    pub class: Option<String>,
    /// Set once the watches have synced (for `/readyz`).
    pub ready: Arc<AtomicBool>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("class", &self.class)
            .finish_non_exhaustive()
    }
}

/// The watch caches.
#[derive(Debug, Clone)]
struct Stores {
    services: Store<Service>,
    pools: Store<IPAddressPool>,
    namespaces: Store<Namespace>,
    advertisements: Store<L2Advertisement>,
    speakers: Store<SpeakerStatus>,
}

impl Stores {
    fn snapshot(&self) -> Snapshot {
        Snapshot {
            services: self.services.state(),
            pools: self.pools.state(),
            namespaces: self.namespaces.state(),
        }
    }
}

/// Runs until `leading` closes (the process is stopping).
pub async fn run(ctx: Context, mut leading: watch::Receiver<bool>) {
    let changed = Arc::new(Notify::new());
    let stores = Stores {
        services: watch_kind(Api::all(ctx.client.clone()), changed.clone()),
        pools: watch_kind(Api::all(ctx.client.clone()), changed.clone()),
        namespaces: watch_kind(Api::all(ctx.client.clone()), changed.clone()),
        advertisements: watch_kind(Api::all(ctx.client.clone()), changed.clone()),
        speakers: watch_kind(Api::all(ctx.client.clone()), changed.clone()),
    };
    let synced = async {
        stores.services.wait_until_ready().await?;
        stores.pools.wait_until_ready().await?;
        stores.namespaces.wait_until_ready().await?;
        stores.advertisements.wait_until_ready().await?;
        stores.speakers.wait_until_ready().await
    };
    if synced.await.is_err() {
        tracing::error!("a watch ended before it synced");
        return;
    }
    ctx.ready.store(true, Ordering::Relaxed);
    tracing::info!(
        services = stores.services.len(),
        pools = stores.pools.len(),
        "watches synced"
    );
    loop {
        while !*leading.borrow_and_update() {
            if leading.changed().await.is_err() {
                return;
            }
        }
        tracing::info!("leading: restoring assignments, then reconciling");
        lead(&ctx, &stores, &changed, &mut leading).await;
        tracing::info!("no longer leading: stopped writing");
    }
}

/// Starts a reflector for one kind; every change pokes `changed`. The watcher
/// retries on errors, forever, with the short delays of
/// [`ferrolb_telemetry::WatchBackoff`].
fn watch_kind<K>(api: Api<K>, changed: Arc<Notify>) -> Store<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let stream = reflector::reflector(
        writer,
        watcher(api, watcher::Config::default())
            .modify(|o: &mut K| o.managed_fields_mut().clear())
            .backoff(ferrolb_telemetry::watch_backoff()),
    );
    tokio::spawn(drive(stream, changed));
    store
}

async fn drive<S, K, E>(stream: S, changed: Arc<Notify>)
where
    S: Stream<Item = Result<watcher::Event<K>, E>>,
    E: std::fmt::Display,
{
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(_) => changed.notify_one(),
            Err(e) => tracing::warn!(error = %e, "watch error; retrying"),
        }
    }
}

/// One term as leader.
async fn lead(
    ctx: &Context,
    stores: &Stores,
    changed: &Notify,
    leading: &mut watch::Receiver<bool>,
) {
    let mut reconciler = Reconciler::new(ctx.class.clone());
    for outcome in reconciler.restore(&stores.snapshot()) {
        ctx.metrics.allocation(outcome.result, outcome.reason);
    }
    let mut pools = PoolWrites::default();
    let mut advertisements = AdvertisementWrites::default();
    let mut retry = RETRY_MIN;
    loop {
        let snapshot = stores.snapshot();
        let plan = reconciler.plan(&snapshot);
        if !*leading.borrow() {
            return;
        }
        let failed = execute(ctx, &mut reconciler, plan).await;
        let next_pool_write = pools.write(ctx, &reconciler, &snapshot.pools).await;
        let speakers = stores.speakers.state();
        let strict_arp = Summary::of(speakers.iter().map(AsRef::as_ref));
        advertisements.note_strict_arp(ctx, &strict_arp);
        let next_advertisement_write = advertisements
            .write(
                ctx,
                &snapshot.pools,
                &stores.advertisements.state(),
                &strict_arp,
            )
            .await;
        let next_pool_write = match (next_pool_write, next_advertisement_write) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let wait = if failed {
            let wait = retry;
            retry = (retry * 2).min(RETRY_MAX);
            Some(wait)
        } else {
            retry = RETRY_MIN;
            next_pool_write
        };
        tokio::select! {
            () = changed.notified() => tokio::time::sleep(DEBOUNCE).await,
            () = sleep_opt(wait) => {}
            r = leading.changed() => {
                if r.is_err() || !*leading.borrow() {
                    return;
                }
            }
        }
    }
}

async fn sleep_opt(wait: Option<Duration>) {
    match wait {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// Writes a plan; true when a write failed and must be retried.
async fn execute(ctx: &Context, reconciler: &mut Reconciler, plan: Plan) -> bool {
    for outcome in &plan.outcomes {
        ctx.metrics.allocation(outcome.result, outcome.reason);
    }
    let results: Vec<(ServiceWrite, Option<Vec<String>>)> = futures::stream::iter(plan.writes)
        .map(|w| async move {
            let produced = write_service(ctx, &w).await;
            (w, produced)
        })
        .buffer_unordered(CONCURRENT_WRITES)
        .collect()
        .await;
    let mut failed = false;
    for (w, produced) in results {
        match produced {
            Some(versions) => reconciler.written(&w, versions),
            None => failed = true,
        }
    }
    futures::stream::iter(plan.notices)
        .for_each_concurrent(CONCURRENT_WRITES, |n| async move {
            if let Err(e) = ctx.events.publish(&n).await {
                tracing::warn!(error = %e, reason = n.reason, "cannot publish an Event");
                ctx.metrics.api_error("create_event");
            }
        })
        .await;
    failed
}

/// At most two calls: the status (first, so the IP shows as soon as possible) and
/// the annotation. Returns the resourceVersions the calls produced, or `None` when
/// one failed and the write must be retried. A Service that is gone needs nothing.
async fn write_service(ctx: &Context, w: &ServiceWrite) -> Option<Vec<String>> {
    let api: Api<Service> = Api::namespaced(ctx.client.clone(), &w.key.namespace);
    let params = PatchParams::default();
    let mut produced = Vec::new();
    if w.status {
        let patch = status::ingress_patch(&w.desired.ips);
        match api
            .patch_status(&w.key.name, &params, &Patch::Merge(&patch))
            .await
        {
            Ok(svc) => {
                ctx.metrics.api_write("patch_service_status");
                produced.extend(svc.resource_version());
            }
            Err(e) if not_found(&e) => return Some(produced),
            Err(e) => {
                tracing::warn!(service = %w.key, error = %e, "cannot write the Service status; will retry");
                ctx.metrics.api_error("patch_service_status");
                return None;
            }
        }
    }
    if w.annotation {
        let patch = status::annotation_patch(w.desired.pool.as_deref());
        match api.patch(&w.key.name, &params, &Patch::Merge(&patch)).await {
            Ok(svc) => {
                ctx.metrics.api_write("patch_service");
                produced.extend(svc.resource_version());
            }
            Err(e) if not_found(&e) => return Some(produced),
            Err(e) => {
                tracing::warn!(service = %w.key, error = %e, "cannot write the Service annotation; will retry");
                ctx.metrics.api_error("patch_service");
                return None;
            }
        }
    }
    tracing::debug!(service = %w.key, ips = ?w.desired.ips, pool = ?w.desired.pool, "Service written");
    Some(produced)
}

fn not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Status writes of one kind, batched: an object's status is written only when it
/// changed and at most once per [`POOL_STATUS_INTERVAL`].
#[derive(Debug)]
struct BatchedStatus<S> {
    last: HashMap<String, (Instant, S)>,
}

impl<S> Default for BatchedStatus<S> {
    fn default() -> Self {
        Self {
            last: HashMap::new(),
        }
    }
}

impl<S: PartialEq> BatchedStatus<S> {
    /// Writes `desired` as `name`'s status (the merge `patch` it renders to) unless
    /// the same status was just written and not yet seen by the watch, or the last
    /// write is too recent; `next` learns when a deferred or failed write is due.
    #[allow(clippy::too_many_arguments)]
    async fn write<K>(
        &mut self,
        ctx: &Context,
        api: &Api<K>,
        name: String,
        desired: S,
        patch: serde_json::Value,
        operation: &'static str,
        now: Instant,
        next: &mut Option<Duration>,
    ) where
        K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        if let Some((at, written)) = self.last.get(&name) {
            let since = now.duration_since(*at);
            // Written and not yet seen by the watch: nothing to do.
            if *written == desired && since < Duration::from_secs(10) {
                return;
            }
            if since < POOL_STATUS_INTERVAL {
                let due = POOL_STATUS_INTERVAL - since;
                *next = Some(next.map_or(due, |n| n.min(due)));
                return;
            }
        }
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                ctx.metrics.api_write(operation);
                self.last.insert(name, (now, desired));
            }
            Err(e) if not_found(&e) => {}
            Err(e) => {
                tracing::warn!(object = %name, error = %e, operation, "cannot write a status; will retry");
                ctx.metrics.api_error(operation);
                *next = Some(next.map_or(RETRY_MIN, |n| n.min(RETRY_MIN)));
            }
        }
    }

    /// Forgets objects no longer present.
    fn retain(&mut self, present: &[String]) {
        self.last.retain(|name, _| present.contains(name));
    }
}

/// Pool status writes, batched, and the pool metrics.
#[derive(Debug, Default)]
struct PoolWrites {
    status: BatchedStatus<IPAddressPoolStatus>,
    families: HashMap<String, Vec<Family>>,
}

impl PoolWrites {
    /// Writes what is due; returns when the next deferred write is due.
    async fn write(
        &mut self,
        ctx: &Context,
        reconciler: &Reconciler,
        objects: &[Arc<IPAddressPool>],
    ) -> Option<Duration> {
        let api: Api<IPAddressPool> = Api::all(ctx.client.clone());
        let now = Instant::now();
        let mut next: Option<Duration> = None;
        let mut present = Vec::new();
        for (object, (name, report)) in objects.iter().zip(reconciler.pool_reports(objects)) {
            self.metrics(ctx, &name, &report);
            present.push(name.clone());
            let previous = object.status.as_ref();
            let desired = status::pool_status(&report, previous, Timestamp::now());
            if previous == Some(&desired) {
                continue;
            }
            let patch = status::pool_status_patch(&desired);
            self.status
                .write(
                    ctx,
                    &api,
                    name,
                    desired,
                    patch,
                    "patch_pool_status",
                    now,
                    &mut next,
                )
                .await;
        }
        self.status.retain(&present);
        let gone: Vec<String> = self
            .families
            .keys()
            .filter(|n| !present.contains(n))
            .cloned()
            .collect();
        for name in gone {
            for f in self.families.remove(&name).unwrap_or_default() {
                ctx.metrics.remove_pool(&name, f);
            }
        }
        next
    }

    fn metrics(&mut self, ctx: &Context, name: &str, report: &status::PoolReport) {
        let now: Vec<Family> = report.usage.iter().map(|(f, _)| *f).collect();
        for f in self.families.get(name).into_iter().flatten() {
            if !now.contains(f) {
                ctx.metrics.remove_pool(name, *f);
            }
        }
        for (f, usage) in &report.usage {
            ctx.metrics.set_pool(name, *f, *usage);
        }
        self.families.insert(name.to_owned(), now);
    }
}

/// L2Advertisement status writes, batched like pool statuses.
#[derive(Debug, Default)]
struct AdvertisementWrites {
    status: BatchedStatus<L2AdvertisementStatus>,
    /// The nodes at risk last logged.
    at_risk: Option<Vec<String>>,
}

impl AdvertisementWrites {
    /// Sets the gauges, and logs when the set of nodes at risk changes.
    fn note_strict_arp(&mut self, ctx: &Context, summary: &Summary) {
        ctx.metrics
            .set_strict_arp_at_risk(summary.at_risk.len(), summary.reporting);
        let nodes: Vec<String> = summary.at_risk.keys().cloned().collect();
        if self.at_risk.as_ref() == Some(&nodes) {
            return;
        }
        if nodes.is_empty() {
            tracing::info!(
                reporting = summary.reporting,
                "no node answers ARP for IPs it does not own (strictARP)"
            );
        } else {
            tracing::warn!(
                nodes = ?nodes,
                reporting = summary.reporting,
                "nodes answer ARP for every LoadBalancer IP (kube-proxy IPVS mode without \
                 strictARP); see their SpeakerStatus"
            );
        }
        self.at_risk = Some(nodes);
    }

    /// Writes what is due; returns when the next deferred write is due.
    async fn write(
        &mut self,
        ctx: &Context,
        pools: &[Arc<IPAddressPool>],
        objects: &[Arc<L2Advertisement>],
        strict_arp: &Summary,
    ) -> Option<Duration> {
        let api: Api<L2Advertisement> = Api::all(ctx.client.clone());
        let labels: std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>> =
            pools
                .iter()
                .map(|p| (p.name_any(), p.labels().clone()))
                .collect();
        let now = Instant::now();
        let mut next: Option<Duration> = None;
        let mut present = Vec::new();
        for object in objects {
            let name = object.name_any();
            present.push(name.clone());
            let previous = object.status.as_ref();
            let desired = crate::advertisement::status(
                &object.spec,
                object.metadata.generation,
                &labels,
                strict_arp,
                previous,
                Timestamp::now(),
            );
            if previous == Some(&desired) {
                continue;
            }
            let patch = serde_json::json!({ "status": desired });
            self.status
                .write(
                    ctx,
                    &api,
                    name,
                    desired,
                    patch,
                    "patch_l2advertisement_status",
                    now,
                    &mut next,
                )
                .await;
        }
        self.status.retain(&present);
        next
    }
}
