//! The thin asynchronous shell around the [`Reconciler`]: while this replica leads,
//! reflectors on Services, IPAddressPools, Namespaces, L2Advertisements and
//! SpeakerStatuses feed a debounced pass, the pass's [`Plan`] is written to the API
//! server, and pool and advertisement statuses (with the speakers' strictARP
//! verdicts gathered) are brought up to date.
//!
//! Every term as leader starts from fresh, consistent state: the reflectors are
//! started when the term starts, their first list is a consistent read from etcd
//! (never the API server's possibly lagging watch cache), every assignment is rebuilt
//! from those Services' statuses ([`Reconciler::restore`]) and only then is anything
//! allocated. A standby keeps no caches, so it has none that could lag; a replica
//! that loses the lead stops its reflectors and forgets everything.
//!
//! Every write is fenced twice: the [`Fence`] is checked before each API call (a
//! leader paused past its Lease writes nothing when it resumes), and Service writes
//! carry the resourceVersion they were decided on, so a write decided on state
//! someone else changed meanwhile fails with a conflict and is decided again from
//! what the watch shows next.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ferrolb_address::Family;
use ferrolb_crds::{
    IPAddressPool, IPAddressPoolStatus, L2Advertisement, L2AdvertisementStatus, SpeakerStatus,
};
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Node, Service};
use k8s_openapi::api::networking::v1::ServiceCIDR;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::ListSemantic;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::allocator::ServiceKey;
use crate::events::Publisher;
use crate::gossip_key::{self, KeySecret};
use crate::leader::Fence;
use crate::metrics::Metrics;
use crate::reconcile::{FinalizerWrite, Plan, Reconciler, ServiceWrite, Snapshot};
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
    /// Set once the API server has answered (for `/readyz`).
    pub ready: Arc<AtomicBool>,
    /// The per-write leadership check.
    pub fence: Fence,
    /// The field manager of every write (per installation).
    pub field_manager: String,
    /// `--instance`: which speakers' SpeakerStatus objects are this installation's.
    pub instance: Option<String>,
    /// The gossip key Secret the leader keeps in existence, if any.
    pub gossip_secret: Option<KeySecret>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("class", &self.class)
            .finish_non_exhaustive()
    }
}

/// The watch caches of one term as leader.
#[derive(Debug)]
struct Stores {
    services: Store<Service>,
    pools: Store<IPAddressPool>,
    namespaces: Store<Namespace>,
    advertisements: Store<L2Advertisement>,
    speakers: Store<SpeakerStatus>,
    nodes: Store<Node>,
    /// `None` where the API server does not serve ServiceCIDRs (before 1.33).
    service_cidrs: Option<Store<ServiceCIDR>>,
    /// The reflector tasks, stopped when the term ends.
    tasks: Vec<JoinHandle<()>>,
}

impl Stores {
    /// Starts every reflector; their first lists are consistent reads.
    async fn start(ctx: &Context, changed: &Arc<Notify>) -> Self {
        let mut tasks = Vec::new();
        let client = &ctx.client;
        let all = watcher::Config::default();
        let speakers = match &ctx.instance {
            Some(i) => all
                .clone()
                .labels(&format!("{}={i}", ferrolb_crds::INSTANCE_LABEL)),
            None => all
                .clone()
                .labels(&format!("!{}", ferrolb_crds::INSTANCE_LABEL)),
        };
        Self {
            services: {
                let metrics = ctx.metrics.clone();
                watch_observed(
                    Api::all(client.clone()),
                    all.clone(),
                    changed,
                    &mut tasks,
                    move |event| service_arrived(&metrics, event),
                )
            },
            pools: watch_kind(Api::all(client.clone()), all.clone(), changed, &mut tasks),
            namespaces: watch_kind(Api::all(client.clone()), all.clone(), changed, &mut tasks),
            advertisements: watch_kind(Api::all(client.clone()), all.clone(), changed, &mut tasks),
            speakers: watch_kind(Api::all(client.clone()), speakers, changed, &mut tasks),
            nodes: watch_kind(Api::all(client.clone()), all.clone(), changed, &mut tasks),
            service_cidrs: if serves_service_cidrs(client).await {
                Some(watch_kind(
                    Api::all(client.clone()),
                    all,
                    changed,
                    &mut tasks,
                ))
            } else {
                tracing::warn!(
                    "the API server does not serve networking.k8s.io/v1 ServiceCIDRs: \
                     pools are not checked against the Service CIDRs"
                );
                None
            },
            tasks,
        }
    }

    /// Waits until every reflector has listed; false when one ended first.
    async fn synced(&self) -> bool {
        let synced = async {
            self.services.wait_until_ready().await?;
            self.pools.wait_until_ready().await?;
            self.namespaces.wait_until_ready().await?;
            self.advertisements.wait_until_ready().await?;
            self.speakers.wait_until_ready().await?;
            self.nodes.wait_until_ready().await?;
            match &self.service_cidrs {
                Some(s) => s.wait_until_ready().await,
                None => Ok(()),
            }
        };
        synced.await.is_ok()
    }

    /// What the reconciler decides on: pools of other installations
    /// (`spec.loadBalancerClass` other than ours) are left out, as if absent.
    fn snapshot(&self, class: Option<&str>) -> Snapshot {
        let pools = self
            .pools
            .state()
            .into_iter()
            .filter(|p| p.spec.load_balancer_class.as_deref() == class)
            .collect();
        Snapshot {
            services: self.services.state(),
            pools,
            namespaces: self.namespaces.state(),
            nodes: self.nodes.state(),
            service_cidrs: self
                .service_cidrs
                .as_ref()
                .map(Store::state)
                .unwrap_or_default(),
        }
    }
}

impl Drop for Stores {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Runs until `leading` closes (the process is stopping).
pub async fn run(ctx: Context, mut leading: watch::Receiver<bool>) {
    let changed = Arc::new(Notify::new());
    answered(&ctx).await;
    ctx.ready.store(true, Ordering::Relaxed);
    loop {
        while !*leading.borrow_and_update() {
            if leading.changed().await.is_err() {
                return;
            }
        }
        let acquired = Instant::now();
        tracing::info!(
            "leading: listing everything afresh, restoring assignments, then reconciling"
        );
        // The gossip key needs no cache: it is kept from the start of the term.
        let key_keeper = ctx
            .gossip_secret
            .clone()
            .map(|target| AbortOnDrop(tokio::spawn(gossip_key::keep(ctx.clone(), target))));
        let stores = Stores::start(&ctx, &changed).await;
        tokio::select! {
            synced = stores.synced() => {
                if !synced {
                    tracing::error!("a watch ended before it synced");
                    return;
                }
                tracing::info!(
                    services = stores.services.len(),
                    pools = stores.pools.len(),
                    "watches synced"
                );
                lead(&ctx, &stores, &changed, &mut leading, acquired).await;
            }
            r = wait_until_not_leading(&mut leading) => {
                if r.is_err() {
                    return;
                }
            }
        }
        drop(stores);
        // Whatever the last pass set, the pool gauges are no longer this replica's.
        ctx.metrics.term_ended();
        drop(key_keeper);
        tracing::info!("no longer leading: stopped writing and dropped every cache");
    }
}

/// A task stopped when its handle is dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn wait_until_not_leading(leading: &mut watch::Receiver<bool>) -> Result<(), ()> {
    loop {
        if !*leading.borrow_and_update() {
            return Ok(());
        }
        leading.changed().await.map_err(|_| ())?;
    }
}

/// Whether the API server serves ServiceCIDRs; errors other than "not found" count as
/// yes (the watch then retries until it lists).
async fn serves_service_cidrs(client: &Client) -> bool {
    let api: Api<ServiceCIDR> = Api::all(client.clone());
    !matches!(api.list_metadata(&ListParams::default().limit(1)).await, Err(e) if not_found(&e))
}

/// Waits until the API server answers a read: until then the replica is not ready.
async fn answered(ctx: &Context) {
    let api: Api<IPAddressPool> = Api::all(ctx.client.clone());
    let mut retry = RETRY_MIN;
    loop {
        match api.list_metadata(&ListParams::default().limit(1)).await {
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(error = %e, "the API server does not answer; retrying");
                ctx.metrics.api_error("list");
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(RETRY_MAX);
            }
        }
    }
}

/// Starts a reflector for one kind; every change pokes `changed`. Lists are
/// consistent reads ([`ListSemantic::MostRecent`]), so the cache never starts, nor
/// restarts after a watch expired, older than what etcd held at that moment. The
/// watcher retries on errors, forever, with the short delays of
/// [`ferrolb_telemetry::WatchBackoff`].
fn watch_kind<K>(
    api: Api<K>,
    config: watcher::Config,
    changed: &Arc<Notify>,
    tasks: &mut Vec<JoinHandle<()>>,
) -> Store<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    watch_observed(api, config, changed, tasks, |_| {})
}

/// [`watch_kind`], calling `observe` with every event as it is delivered.
fn watch_observed<K, O>(
    api: Api<K>,
    config: watcher::Config,
    changed: &Arc<Notify>,
    tasks: &mut Vec<JoinHandle<()>>,
    observe: O,
) -> Store<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
    O: FnMut(&watcher::Event<K>) + Send + 'static,
{
    let (store, writer) = reflector::store();
    let events = watcher(api, config.list_semantic(ListSemantic::MostRecent))
        .modify(|o: &mut K| o.managed_fields_mut().clear())
        .backoff(ferrolb_telemetry::watch_backoff());
    let events = match injected_watch_lag() {
        Some(lag) => lagging(events, lag, tasks).boxed(),
        None => events.boxed(),
    };
    let stream = reflector::reflector(writer, events);
    tasks.push(tokio::spawn(drive(stream, changed.clone(), observe)));
    store
}

/// Delivers every item of `stream` `lag` after it arrived, in order, without
/// slowing the stream itself down (a latency, not a throughput limit).
fn lagging<S>(
    stream: S,
    lag: Duration,
    tasks: &mut Vec<JoinHandle<()>>,
) -> impl Stream<Item = S::Item> + Send + 'static
where
    S: Stream + Send + 'static,
    S::Item: Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tasks.push(tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            if tx.send((tokio::time::Instant::now(), item)).is_err() {
                return;
            }
        }
    }));
    futures::stream::unfold(rx, move |mut rx| async move {
        let (arrived, item) = rx.recv().await?;
        tokio::time::sleep_until(arrived + lag).await;
        Some((item, rx))
    })
}

/// A fault the lab injects: `FERROLB_FAULT_WATCH_LAG_MS` delivers every watch event
/// that long after it arrived, so the caches trail the API server the way a slow
/// or congested watch does. Unset in production; the chart never sets it.
fn injected_watch_lag() -> Option<Duration> {
    std::env::var("FERROLB_FAULT_WATCH_LAG_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|ms| *ms > 0)
        .map(Duration::from_millis)
}

async fn drive<S, K, E, O>(stream: S, changed: Arc<Notify>, mut observe: O)
where
    S: Stream<Item = Result<watcher::Event<K>, E>>,
    E: std::fmt::Display,
    O: FnMut(&watcher::Event<K>),
{
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(event) => {
                observe(&event);
                changed.notify_one();
            }
            Err(e) => tracing::warn!(error = %e, "watch error; retrying"),
        }
    }
}

/// Notes when the watch delivered each change of a Service, for the Service→IP
/// latency. Services of the initial list (and of a relist) are left out: they were
/// waiting before this replica could see them, which the takeover time covers.
fn service_arrived(metrics: &Metrics, event: &watcher::Event<Service>) {
    let now = Instant::now();
    match event {
        watcher::Event::Apply(svc) => {
            let key = ServiceKey::new(svc.namespace().unwrap_or_default(), svc.name_any());
            let load_balancer =
                svc.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer");
            match svc.resource_version() {
                Some(version) => metrics.service_seen(key, version, load_balancer, now),
                None => metrics.service_gone(&key),
            }
        }
        watcher::Event::Delete(svc) => {
            metrics.service_gone(&ServiceKey::new(
                svc.namespace().unwrap_or_default(),
                svc.name_any(),
            ));
        }
        watcher::Event::Init | watcher::Event::InitApply(_) | watcher::Event::InitDone => {}
    }
}

/// Tells the Service latency which pending changes this pass saw and wrote nothing
/// for.
fn note_planned(ctx: &Context, snapshot: &Snapshot, plan: &Plan) {
    if !ctx.metrics.services_pending() {
        return;
    }
    let versions: HashMap<ServiceKey, String> = snapshot
        .services
        .iter()
        .filter_map(|s| Some((crate::service::key_of(s), s.resource_version()?)))
        .collect();
    let writing: HashSet<&ServiceKey> = plan.writes.iter().map(|w| &w.key).collect();
    ctx.metrics.services_planned(
        |key| versions.get(key).cloned(),
        |key| writing.contains(key),
    );
}

/// One term as leader.
async fn lead(
    ctx: &Context,
    stores: &Stores,
    changed: &Notify,
    leading: &mut watch::Receiver<bool>,
    acquired: Instant,
) {
    let mut reconciler = Reconciler::new(ctx.class.clone());
    let mut takeover = Some(acquired);
    for outcome in reconciler.restore(&stores.snapshot(ctx.class.as_deref())) {
        ctx.metrics.allocation(outcome.result(), outcome.reason());
    }
    let mut pools = PoolWrites::default();
    let mut advertisements = AdvertisementWrites::default();
    let mut retry = RETRY_MIN;
    loop {
        let snapshot = stores.snapshot(ctx.class.as_deref());
        let plan = reconciler.plan(&snapshot);
        note_planned(ctx, &snapshot, &plan);
        if !*leading.borrow() {
            return;
        }
        let failed = execute(ctx, &mut reconciler, plan).await;
        if !failed && let Some(acquired) = takeover.take() {
            ctx.metrics.leader_takeover(acquired.elapsed());
        }
        let next_pool_write = pools.write(ctx, &reconciler, &snapshot.pools).await;
        let speakers = stores.speakers.state();
        let strict_arp = Summary::of(speakers.iter().map(AsRef::as_ref));
        advertisements.note_strict_arp(ctx, &strict_arp);
        let next_advertisement_write = advertisements
            .write(
                ctx,
                &stores.pools.state(),
                &snapshot.pools,
                &stores.advertisements.state(),
                &snapshot.nodes,
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

/// Writes a plan; true when a write failed, conflicted or was fenced and the pass
/// must run again.
async fn execute(ctx: &Context, reconciler: &mut Reconciler, plan: Plan) -> bool {
    for outcome in &plan.outcomes {
        ctx.metrics.allocation(outcome.result(), outcome.reason());
    }
    // Finalizers first: a pool that just got its first holder is protected before
    // the holder's IP is written.
    let mut failed = false;
    for f in &plan.finalizers {
        failed |= !write_finalizers(ctx, f).await;
    }
    let results: Vec<(ServiceWrite, Written)> = futures::stream::iter(plan.writes)
        .map(|w| async move {
            let written = write_service(ctx, &w).await;
            (w, written)
        })
        .buffer_unordered(CONCURRENT_WRITES)
        .collect()
        .await;
    for (w, written) in results {
        match written {
            Written::Done(versions) => reconciler.written(&w, versions),
            Written::Conflict | Written::Fenced | Written::Failed => failed = true,
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

/// What became of one Service write.
#[derive(Debug)]
enum Written {
    /// Every call succeeded (or the Service is gone): the resourceVersions produced.
    Done(Vec<String>),
    /// The Service changed since the decision (HTTP 409): decided again from what the
    /// watch shows next.
    Conflict,
    /// Not leading any more, or the Lease is not confirmed: nothing was sent.
    Fenced,
    /// Any other error: retried with backoff.
    Failed,
}

/// At most two calls: the status (first, so the IP shows as soon as possible) and
/// the annotation. Each call is conditional on the resourceVersion the decision was
/// made on (the annotation call on the one the status call produced), and each is
/// preceded by a check of the [`Fence`]. A Service that is gone needs nothing.
async fn write_service(ctx: &Context, w: &ServiceWrite) -> Written {
    let api: Api<Service> = Api::namespaced(ctx.client.clone(), &w.key.namespace);
    let params = PatchParams {
        field_manager: Some(ctx.field_manager.clone()),
        ..PatchParams::default()
    };
    let mut produced = Vec::new();
    let mut version = w.resource_version.clone();
    // When the status call with IPs returned: the end of the Service's wait.
    let mut ips_written = None;
    let calls = [
        (w.status, "patch_service_status"),
        (w.annotation, "patch_service"),
    ];
    for (needed, operation) in calls {
        if !needed {
            continue;
        }
        if !ctx.fence.allows() {
            ctx.metrics.fenced_write();
            return Written::Fenced;
        }
        let result = if operation == "patch_service_status" {
            let patch =
                status::conditional(status::ingress_patch(&w.desired.ips), version.as_deref());
            api.patch_status(&w.key.name, &params, &Patch::Merge(&patch))
                .await
        } else {
            let patch = status::conditional(
                status::annotation_patch(w.desired.pool.as_deref()),
                version.as_deref(),
            );
            api.patch(&w.key.name, &params, &Patch::Merge(&patch)).await
        };
        match result {
            Ok(svc) => {
                ctx.metrics.api_write(operation);
                if operation == "patch_service_status" && !w.desired.ips.is_empty() {
                    ips_written = Some(Instant::now());
                }
                version = svc.resource_version();
                produced.extend(version.clone());
            }
            Err(e) if not_found(&e) => return Written::Done(produced),
            Err(e) if conflict(&e) => {
                tracing::info!(service = %w.key, operation, "the Service changed since the decision; deciding again");
                ctx.metrics.api_error(operation);
                ctx.metrics.write_conflict();
                return Written::Conflict;
            }
            Err(e) => {
                tracing::warn!(service = %w.key, operation, error = %e, "cannot write the Service; will retry");
                ctx.metrics.api_error(operation);
                return Written::Failed;
            }
        }
    }
    tracing::debug!(service = %w.key, ips = ?w.desired.ips, pool = ?w.desired.pool, "Service written");
    if let (Some(at), Some(decided)) = (ips_written, &w.resource_version) {
        ctx.metrics
            .service_ips_written(&w.key, decided, &produced, at);
    }
    Written::Done(produced)
}

/// Writes a pool's finalizers, conditional on the resourceVersion decided on; true
/// when done (or the pool is gone).
async fn write_finalizers(ctx: &Context, f: &FinalizerWrite) -> bool {
    if !ctx.fence.allows() {
        ctx.metrics.fenced_write();
        return false;
    }
    let api: Api<IPAddressPool> = Api::all(ctx.client.clone());
    let params = PatchParams {
        field_manager: Some(ctx.field_manager.clone()),
        ..PatchParams::default()
    };
    let patch = status::conditional(
        serde_json::json!({ "metadata": { "finalizers": f.finalizers } }),
        f.resource_version.as_deref(),
    );
    match api.patch(&f.pool, &params, &Patch::Merge(&patch)).await {
        Ok(_) => {
            ctx.metrics.api_write("patch_pool");
            tracing::info!(pool = %f.pool, finalizers = ?f.finalizers, "pool finalizers written");
            true
        }
        Err(e) if not_found(&e) => true,
        Err(e) => {
            tracing::warn!(pool = %f.pool, error = %e, "cannot write the pool's finalizers; will retry");
            ctx.metrics.api_error("patch_pool");
            false
        }
    }
}

fn conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
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
        if !ctx.fence.allows() {
            ctx.metrics.fenced_write();
            *next = Some(next.map_or(RETRY_MIN, |n| n.min(RETRY_MIN)));
            return;
        }
        let params = PatchParams {
            field_manager: Some(ctx.field_manager.clone()),
            ..PatchParams::default()
        };
        match api
            .patch_status(&name, &params, &Patch::Merge(&patch))
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
        ours: &[Arc<IPAddressPool>],
        objects: &[Arc<L2Advertisement>],
        nodes: &[Arc<Node>],
        strict_arp: &Summary,
    ) -> Option<Duration> {
        type Labels =
            std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>;
        let api: Api<L2Advertisement> = Api::all(ctx.client.clone());
        let by_name = |pools: &[Arc<IPAddressPool>]| -> Labels {
            pools
                .iter()
                .map(|p| (p.name_any(), p.labels().clone()))
                .collect()
        };
        let labels = by_name(pools);
        let our_labels = by_name(ours);
        let node_labels: Vec<&std::collections::BTreeMap<String, String>> =
            nodes.iter().map(|n| n.labels()).collect();
        let now = Instant::now();
        let mut next: Option<Duration> = None;
        let mut present = Vec::new();
        for object in objects {
            if !crate::advertisement::concerns(&object.spec, &our_labels, ctx.instance.is_some()) {
                continue;
            }
            let name = object.name_any();
            present.push(name.clone());
            let previous = object.status.as_ref();
            let desired = crate::advertisement::status(
                &object.spec,
                object.metadata.generation,
                &labels,
                &node_labels,
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
