//! The speaker process: watches in, decisions through the pure core, packets
//! and status out.
//!
//! ```text
//! API watches ──► caches ──┐                           ┌──► data plane (set_owned, reannounce)
//!                          ├─► ownership::decide ──────┤
//! membership (view) ───────┘                           └──► status writer (API)
//! ```
//!
//! Any cache change triggers a recomputation after a few milliseconds (to
//! coalesce bursts); a membership change triggers one at once, since that is
//! the failover path. The caches keep their last contents while the API
//! server is unreachable, so the speaker keeps announcing what it owned.

pub(crate) mod announce;
pub(crate) mod cli;
pub(crate) mod inputs;
pub(crate) mod instance;
pub(crate) mod metrics;
pub(crate) mod report;
pub(crate) mod status;
pub(crate) mod strict_arp;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Debug;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use ferrolb_crds::{
    IPAddressPool, L2Advertisement, ServiceL2Status, SpeakerStatus, SpeakerStatusStatus,
};
use ferrolb_speaker::election::NodeName;
use ferrolb_speaker::eligibility::{self, Policy, ServiceId};
use ferrolb_speaker::membership::{GossipKey, Membership, MembershipConfig, View};
use ferrolb_speaker::ownership::{Ownership, Standing};
use ferrolb_speaker::strict_arp::{Level, Verdict};
use ferrolb_telemetry::MetricsEndpoint;
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{ConfigMap, Node, ObjectReference, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, Client, Resource, ResourceExt as _};
use serde::de::DeserializeOwned;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::Notify;

use self::announce::DataPlane;
use self::cli::Cli;
use self::metrics::{SpeakerMetrics, TakeoverClock};
use self::report::{Reporter, ServiceMeta};
use self::status::{ServiceEvent, ServiceReport, Write, Writer};

/// Coalesces bursts of API changes (a rollout touches many EndpointSlices).
const DEBOUNCE: Duration = Duration::from_millis(5);
/// How long a new speaker waits for peers before its first election, so it
/// does not briefly claim every IP while it is alone.
const JOIN_WINDOW: Duration = Duration::from_secs(2);
/// The same on a cluster where no speaker ever published its address (a
/// fresh install): peers starting together find each other within it.
const FRESH_JOIN_WINDOW: Duration = Duration::from_millis(500);
/// Time given to the leave message and the successors' takeover before this
/// speaker stops answering.
const LEAVE_LINGER: Duration = Duration::from_millis(250);
/// Time between telling peers this speaker leaves and releasing its IPs:
/// enough for the successors to take over, short enough to keep a single
/// MAC per IP.
const HANDOVER_GRACE: Duration = Duration::from_millis(20);

/// Runs the speaker until SIGTERM or SIGINT.
pub(crate) async fn run(cli: Cli) -> anyhow::Result<()> {
    let client = Client::try_default()
        .await
        .context("cannot configure the Kubernetes client")?;
    // Bound before anything else starts: a port in use or an address not on
    // this node ends the process with the reason, and the kubelet restarts it.
    let endpoint =
        MetricsEndpoint::bind(&cli.metrics.endpoint(cli.metrics_port)?, client.clone()).await?;
    let metrics::Registered {
        registry,
        speaker: metrics,
        membership: membership_metrics,
        announcer: announcer_metrics,
    } = metrics::registered();
    let data_plane =
        DataPlane::start(cli.announce_max_pps, cli.refresh(), announcer_metrics).await?;
    let ready = Arc::new(AtomicBool::new(false));
    tokio::spawn(endpoint.serve(ferrolb_telemetry::Health {
        registry: Arc::new(registry),
        ready: Arc::clone(&ready),
        not_ready: "caches syncing or membership joining",
    }));

    let instance = cli.instance();
    let changed = Arc::new(Notify::new());
    let caches = Caches {
        services: cache(
            Api::all(client.clone()),
            &changed,
            watcher::Config::default(),
            &metrics,
            "services",
            None,
        ),
        slices: cache(
            Api::all(client.clone()),
            &changed,
            watcher::Config::default(),
            &metrics,
            "endpointslices",
            None,
        ),
        nodes: cache(
            Api::all(client.clone()),
            &changed,
            watcher::Config::default(),
            &metrics,
            "nodes",
            Some(inputs::node_fingerprint),
        ),
        pools: cache(
            Api::all(client.clone()),
            &changed,
            watcher::Config::default(),
            &metrics,
            "ipaddresspools",
            None,
        ),
        advertisements: cache(
            Api::all(client.clone()),
            &changed,
            watcher::Config::default(),
            &metrics,
            "l2advertisements",
            None,
        ),
        speakers: cache(
            Api::all(client.clone()),
            &changed,
            // Only this installation's speakers are peers.
            watcher::Config::default().labels(&instance.selector()),
            &metrics,
            "speakerstatuses",
            Some(inputs::speaker_fingerprint),
        ),
        statuses: cache(
            Api::all(client.clone()),
            &changed,
            watcher::Config::default(),
            &metrics,
            "servicel2statuses",
            None,
        ),
    };
    caches.wait_until_ready().await?;
    tracing::info!("caches synced");

    let secrets: Api<Secret> = Api::namespaced(client.clone(), &cli.namespace);
    let key = loop {
        match read_key(&secrets, &cli.gossip_secret).await {
            Ok(key) => break key,
            Err(error) => {
                metrics.api_error("secrets");
                tracing::warn!(%error, "waiting for the gossip key");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    };
    let host_ip = match cli.host_ip {
        Some(ip) => ip,
        None => caches.node_ip(&cli.node_name).with_context(|| {
            format!(
                "--host-ip not set and Node {} has no InternalIP",
                cli.node_name
            )
        })?,
    };
    // Bound to the node's address only: gossip is between nodes, and a pod
    // or another interface's network has no business reaching it.
    let advertise = SocketAddr::new(host_ip, cli.gossip_port);
    let mut config = MembershipConfig::lan(cli.node_name.as_str(), advertise, advertise);
    config.probe_period = cli.gossip_probe_period;
    config.probe_rtt = (cli.gossip_probe_period * 2 / 5).max(Duration::from_millis(1));
    config.suspect_timeout = cli.gossip_suspect_timeout;
    config.key_phase = cli.gossip_key_phase;
    let membership = Membership::start(config, key, membership_metrics).await?;
    let mut view = membership.view();
    data_plane.set_heartbeat(membership.heartbeat());
    let mut seeds = caches.seeds(&cli.node_name, cli.gossip_port);
    membership.seed(seeds.iter().copied().collect());
    tracing::info!(%advertise, seeds = seeds.len(), "membership started");

    // Before the first election, give the peers a moment to answer, so a
    // starting speaker does not claim IPs it would lose a few milliseconds
    // later: until every speaker that published a gossip address is seen
    // (at most JOIN_WINDOW), or FRESH_JOIN_WINDOW when none ever did.
    let expected = caches.known_speakers(&cli.node_name);
    let window = if expected == 0 {
        FRESH_JOIN_WINDOW
    } else {
        JOIN_WINDOW
    };
    let join = tokio::time::timeout(window, async {
        while expected == 0 || view.borrow_and_update().live.len() <= expected {
            if view.changed().await.is_err() {
                break;
            }
        }
    });
    if join.await.is_err() {
        tracing::info!(
            expected,
            seen = view.borrow().live.len() - 1,
            "join window over; electing with the peers seen"
        );
    }

    let mut election = Election {
        ownership: Ownership::new(
            NodeName::new(cli.node_name.as_str()),
            Policy {
                ignore_exclude_label: cli.ignore_exclude_label,
            },
        ),
        class: cli.load_balancer_class.clone(),
        standing: Standing::Normal,
        reporter: Reporter::new(NodeName::new(cli.node_name.as_str())),
        writer: status::spawn(
            client.clone(),
            cli.node_name.clone(),
            instance.clone(),
            metrics.clone(),
        ),
        metrics: metrics.clone(),
        gossip_address: advertise.to_string(),
        last_speaker_status: None,
        started: Time(Timestamp::now()),
        isolated_since: Time(Timestamp::now()),
        strict_arp: None,
        named_interfaces: None,
        takeover: TakeoverClock::default(),
    };
    election.takeover.view(&view.borrow().live, Instant::now());
    let kube_proxy = cli.kube_proxy_config().map(|(ns, name)| {
        (
            Api::<ConfigMap>::namespaced(client.clone(), ns),
            name.to_owned(),
        )
    });
    if kube_proxy.is_none() {
        tracing::warn!(flag = %cli.kube_proxy_config, "--kube-proxy-config is not namespace/name; strictARP is not checked");
    }
    ready.store(true, Ordering::Relaxed);

    let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    // API reads that are not watches run in their own task: a hung request
    // (API server unreachable) must never stall the election loop.
    let (interfaces_tx, interfaces_rx) = tokio::sync::watch::channel(data_plane.interfaces());
    let (polled_tx, mut polled) = tokio::sync::mpsc::channel(4);
    let reads = PeriodicReads {
        period: cli.gossip_key_reload,
        secrets,
        secret: cli.gossip_secret.clone(),
        kube_proxy,
        enforce_strict_arp: cli.enforce_strict_arp,
    };
    tokio::spawn(poll(reads, interfaces_rx, polled_tx, metrics.clone()));
    // Interfaces coming and going change what the statuses report.
    let interfaces_changed = data_plane.interfaces_changed();
    // Whether anything the election reads may have changed since the last
    // recomputation (the periodic checks mostly find nothing new).
    let mut stale = true;
    loop {
        if stale {
            let view_now = view.borrow_and_update().clone();
            election.recompute(&caches, &view_now, &data_plane);
            interfaces_tx.send_if_modified(|current| {
                let now = data_plane.interfaces();
                let changed = *current != now;
                *current = now;
                changed
            });
            let new_seeds = caches.seeds(&cli.node_name, cli.gossip_port);
            if new_seeds != seeds {
                seeds = new_seeds;
                membership.seed(seeds.iter().copied().collect());
            }
        }
        stale = true;
        tokio::select! {
            () = changed.notified() => tokio::time::sleep(DEBOUNCE).await,
            () = interfaces_changed.notified() => tokio::time::sleep(DEBOUNCE).await,
            result = view.changed() => {
                if result.is_err() {
                    anyhow::bail!("the membership stopped");
                }
                election.takeover.view(&view.borrow().live, Instant::now());
            }
            Some(polled) = polled.recv() => match polled {
                Polled::Key(key) => {
                    membership.key(key);
                    stale = false;
                }
                Polled::StrictArp(verdict) => {
                    let node = caches.node_ref(&cli.node_name);
                    stale = election.set_strict_arp(verdict, node);
                }
            },
            _ = sigterm.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }

    tracing::info!("leaving: telling peers, then releasing the IPs");
    ready.store(false, Ordering::Relaxed);
    // The leave reaches the peers within a millisecond or two and they take
    // over at once; stop answering shortly after, so the LAN sees one MAC
    // per IP, but keep the membership up a little longer so the leave is
    // not mistaken for a crash.
    let leaving = membership.leave(LEAVE_LINGER);
    let mut leaving = std::pin::pin!(leaving);
    tokio::select! {
        () = &mut leaving => {}
        () = tokio::time::sleep(HANDOVER_GRACE) => {}
    }
    data_plane.set_owned(&BTreeMap::new());
    // Peers starting meanwhile must not count this speaker as a ready one
    // they cannot hear (they would hold back, see `ownership`).
    let speakers: Api<SpeakerStatus> = Api::all(client.clone());
    let own_status = instance.status_name(&cli.node_name);
    let stopping = status::not_ready(&speakers, &own_status);
    if tokio::time::timeout(Duration::from_secs(1), stopping)
        .await
        .is_err()
    {
        tracing::debug!("SpeakerStatus not marked stopped: the API server did not answer");
    }
    // Nothing here announces any more: statuses that still name this node
    // (no successor rewrote them) would tell users otherwise.
    match election.writer.stop(Duration::from_secs(2)).await {
        Some(n) => tracing::info!(
            removed = n,
            "removed the ServiceL2Status objects naming this node"
        ),
        None => {
            tracing::debug!("ServiceL2Status objects not removed: the API server did not answer")
        }
    }
    leaving.await;
    data_plane.shutdown().await;
    Ok(())
}

/// What the periodic reads read, and how often.
struct PeriodicReads {
    period: Duration,
    /// The speaker's namespace's Secrets, and the gossip Secret's name.
    secrets: Api<Secret>,
    secret: String,
    /// kube-proxy's ConfigMap, for the strictARP check.
    kube_proxy: Option<(Api<ConfigMap>, String)>,
    enforce_strict_arp: bool,
}

/// A result of the periodic reads.
enum Polled {
    /// The gossip key, possibly rotated.
    Key(GossipKey),
    /// The strictARP check.
    StrictArp(Verdict),
}

/// Re-reads the gossip Secret and runs the strictARP check every `period`,
/// each read bounded by a timeout.
async fn poll(
    reads: PeriodicReads,
    interfaces: tokio::sync::watch::Receiver<Vec<String>>,
    tx: tokio::sync::mpsc::Sender<Polled>,
    metrics: SpeakerMetrics,
) {
    let PeriodicReads {
        period,
        secrets,
        secret,
        kube_proxy,
        enforce_strict_arp,
    } = reads;
    let mut tick = tokio::time::interval(period);
    loop {
        tick.tick().await;
        match tokio::time::timeout(period, read_key(&secrets, &secret)).await {
            Ok(Ok(key)) => {
                if tx.send(Polled::Key(key)).await.is_err() {
                    return;
                }
            }
            Ok(Err(error)) => {
                metrics.api_error("secrets");
                tracing::debug!(%error, "gossip key not re-read");
            }
            Err(_) => {
                metrics.api_error("secrets");
                tracing::debug!("gossip key not re-read: the API server did not answer");
            }
        }
        if enforce_strict_arp {
            let current = interfaces.borrow().clone();
            strict_arp::enforce(&current).await;
        }
        if let Some((config_maps, name)) = &kube_proxy {
            let current = interfaces.borrow().clone();
            let check = strict_arp::check(config_maps, name, &current);
            if let Ok(verdict) = tokio::time::timeout(period, check).await
                && tx.send(Polled::StrictArp(verdict)).await.is_err()
            {
                return;
            }
        }
    }
}

async fn read_key(secrets: &Api<Secret>, name: &str) -> anyhow::Result<GossipKey> {
    let secret = secrets
        .get(name)
        .await
        .with_context(|| format!("cannot read Secret {name}"))?;
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get("key"))
        .with_context(|| format!("Secret {name} has no `key`"))?;
    Ok(GossipKey::new(&bytes.0)?)
}

/// Starts a watch feeding a cache. Errors are counted and retried with
/// backoff; the cache keeps its contents meanwhile. Every change wakes the
/// election loop, or, with a `fingerprint` (what the speaker reads of an
/// object of a kind that changes often in ways it ignores: a Node's
/// heartbeats, another speaker's peer counts), only a change of the
/// fingerprint does; the loop otherwise recomputes every Service's owner on
/// each heartbeat of each node.
fn cache<K>(
    api: Api<K>,
    changed: &Arc<Notify>,
    config: watcher::Config,
    metrics: &SpeakerMetrics,
    resource: &'static str,
    fingerprint: Option<fn(&K) -> u64>,
) -> Store<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = watcher(api, config)
        .backoff(ferrolb_telemetry::watch_backoff())
        .reflect(writer);
    let changed = Arc::clone(changed);
    let metrics = metrics.clone();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        let mut seen = Fingerprints::default();
        while let Some(event) = stream.next().await {
            match event {
                Ok(event) => {
                    if fingerprint.is_none_or(|f| seen.changed(&event, f)) {
                        changed.notify_one();
                    }
                }
                Err(error) => {
                    metrics.api_error(resource);
                    tracing::warn!(%error, resource, "watch failed; announcing from the last known state");
                }
            }
        }
    });
    reader
}

/// The last fingerprint of every object of one kind, by name.
#[derive(Debug, Default)]
struct Fingerprints(HashMap<String, u64>);

impl Fingerprints {
    /// Records `event`; whether it changes what the speaker reads. Deletions
    /// and the (re)list markers always count.
    fn changed<K: Resource>(
        &mut self,
        event: &watcher::Event<K>,
        fingerprint: fn(&K) -> u64,
    ) -> bool {
        match event {
            watcher::Event::Apply(object) | watcher::Event::InitApply(object) => {
                let print = fingerprint(object);
                self.0.insert(object.name_any(), print) != Some(print)
            }
            watcher::Event::Delete(object) => {
                self.0.remove(&object.name_any());
                true
            }
            watcher::Event::Init | watcher::Event::InitDone => true,
        }
    }
}

struct Caches {
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    nodes: Store<Node>,
    pools: Store<IPAddressPool>,
    advertisements: Store<L2Advertisement>,
    speakers: Store<SpeakerStatus>,
    statuses: Store<ServiceL2Status>,
}

impl Caches {
    async fn wait_until_ready(&self) -> anyhow::Result<()> {
        let stopped = |_| anyhow::anyhow!("a watch stopped before syncing");
        self.services.wait_until_ready().await.map_err(stopped)?;
        self.slices.wait_until_ready().await.map_err(stopped)?;
        self.nodes.wait_until_ready().await.map_err(stopped)?;
        self.pools.wait_until_ready().await.map_err(stopped)?;
        self.advertisements
            .wait_until_ready()
            .await
            .map_err(stopped)?;
        self.speakers.wait_until_ready().await.map_err(stopped)?;
        self.statuses.wait_until_ready().await.map_err(stopped)?;
        Ok(())
    }

    fn node_ref(&self, node: &str) -> Option<ObjectReference> {
        self.nodes
            .state()
            .iter()
            .find(|n| n.name_any() == node)
            .map(|n| n.object_ref(&()))
    }

    fn node_ip(&self, node: &str) -> Option<IpAddr> {
        self.nodes
            .state()
            .iter()
            .find(|n| n.name_any() == node)
            .and_then(|n| inputs::internal_ip(n))
    }

    /// Where to look for peers: their published gossip addresses and every
    /// other node's InternalIP at the gossip port. The statuses are this
    /// installation's only (the watch selects them), and the node a status
    /// belongs to is its `spec.nodeName`: with `--instance` its name is not
    /// the node's.
    fn seeds(&self, me: &str, port: u16) -> BTreeSet<SocketAddr> {
        let speakers = self.speakers.state();
        let published = inputs::published_peers(speakers.iter().map(|s| &**s), me);
        let nodes = self
            .nodes
            .state()
            .iter()
            .filter(|n| n.name_any() != me)
            .filter_map(|n| inputs::internal_ip(n))
            .map(|ip| SocketAddr::new(ip, port))
            .collect::<Vec<_>>();
        published.into_iter().chain(nodes).collect()
    }

    /// Other speakers that published a gossip address, say they are ready
    /// (a speaker that shut down cleanly says it is not) and whose node
    /// exists.
    fn known_speakers(&self, me: &str) -> usize {
        let nodes: BTreeSet<String> = self.nodes.state().iter().map(|n| n.name_any()).collect();
        let speakers = self.speakers.state();
        inputs::ready_peers(speakers.iter().map(|s| &**s), me, &nodes)
    }
}

struct Election {
    ownership: Ownership,
    class: Option<String>,
    /// Whether this speaker stood down at the last recomputation, and why.
    standing: Standing,
    reporter: Reporter,
    writer: Writer,
    metrics: SpeakerMetrics,
    gossip_address: String,
    last_speaker_status: Option<SpeakerStatusStatus>,
    started: Time,
    /// When the `Isolated` condition last changed.
    isolated_since: Time,
    /// The last strictARP verdict and when its status last changed.
    strict_arp: Option<(Verdict, Time)>,
    /// The interfaces named for this node, as last given to the data plane.
    named_interfaces: Option<BTreeSet<String>>,
    /// Times takeovers after a peer left.
    takeover: TakeoverClock,
}

impl Election {
    /// Records the strictARP check's verdict: metric, log line and Warning
    /// Event when it changes; the SpeakerStatus condition follows on the
    /// next recompute. Whether it changed (and the statuses must be
    /// recomputed).
    fn set_strict_arp(&mut self, verdict: Verdict, node: Option<ObjectReference>) -> bool {
        if self.strict_arp.as_ref().map(|(v, _)| v) == Some(&verdict) {
            return false;
        }
        let labels = metrics::NodeLabels {
            node: self.ownership.me().to_string(),
        };
        match verdict.metric_value() {
            Some(v) => {
                self.metrics.strict_arp_ok.get_or_create(&labels).set(v);
            }
            None => {
                self.metrics.strict_arp_ok.remove(&labels);
            }
        }
        if verdict.level == Level::Ok {
            tracing::info!(reason = verdict.reason, message = %verdict.message, "strictARP check passed");
        } else {
            tracing::warn!(reason = verdict.reason, message = %verdict.message, "strictARP check failed: several nodes may answer ARP for Service IPs");
            if let Some(node) = node {
                self.writer.send(Write::Event(ServiceEvent {
                    regarding: node,
                    warning: true,
                    reason: "StrictARP".to_owned(),
                    note: verdict.message.clone(),
                }));
            }
        }
        // The condition's transition time moves only when its status does.
        let since = match &self.strict_arp {
            Some((previous, since))
                if previous.condition_status() == verdict.condition_status() =>
            {
                since.clone()
            }
            _ => Time(Timestamp::now()),
        };
        self.strict_arp = Some((verdict, since));
        true
    }

    /// Records whether this speaker stands down: log line, metric and, when
    /// it becomes isolated, a Warning Event on its Node.
    fn set_standing(&mut self, standing: Standing, node: Option<ObjectReference>) {
        if standing == self.standing {
            return;
        }
        let isolated = matches!(standing, Standing::Isolated { .. });
        self.metrics.isolated.set(i64::from(isolated));
        match standing {
            Standing::Isolated { known } => {
                let note = isolated_message(known);
                tracing::warn!(known, "{note}");
                if let Some(node) = node {
                    self.writer.send(Write::Event(ServiceEvent {
                        regarding: node,
                        warning: true,
                        reason: "Isolated".to_owned(),
                        note,
                    }));
                }
            }
            Standing::Stalled => {
                tracing::warn!(
                    "stalled long enough to have been declared down: not answering until the membership confirms"
                );
            }
            Standing::Normal => {
                tracing::info!("hearing peers again: announcing what the election gives this node")
            }
        }
        self.isolated_since = match (isolated, matches!(self.standing, Standing::Isolated { .. })) {
            (true, false) | (false, true) => Time(Timestamp::now()),
            _ => self.isolated_since.clone(),
        };
        self.standing = standing;
    }

    /// The `Isolated` condition of the SpeakerStatus.
    fn isolated_condition(&self) -> Condition {
        let (status, reason, message) = match self.standing {
            Standing::Isolated { known } => ("True", "NoPeers", isolated_message(known)),
            _ => (
                "False",
                "PeersHeard",
                "the speaker hears its peers, or no other ready speaker exists".to_owned(),
            ),
        };
        Condition {
            type_: ISOLATED.to_owned(),
            status: status.to_owned(),
            reason: reason.to_owned(),
            message,
            last_transition_time: self.isolated_since.clone(),
            observed_generation: None,
        }
    }

    fn recompute(&mut self, caches: &Caches, view: &View, data_plane: &DataPlane) {
        // Views the loop took in without waking on them (it was coalescing API
        // changes meanwhile) count from here.
        self.takeover.view(&view.live, Instant::now());
        let services = caches.services.state();
        let slices = caches.slices.state();
        let nodes = caches.nodes.state();
        let pools = caches.pools.state();
        let ads = caches.advertisements.state();
        let statuses = caches.statuses.state();
        let speakers = caches.speakers.state();
        let mut cluster = inputs::cluster(
            services.iter().map(|s| &**s),
            slices.iter().map(|s| &**s),
            nodes.iter().map(|n| &**n),
            pools.iter().map(|p| &**p),
            ads.iter().map(|a| &**a),
            statuses.iter().map(|s| &**s),
            self.class.as_deref(),
        );
        inputs::add_published_interfaces(&mut cluster, speakers.iter().map(|s| &**s));
        // Before the IPs: a named interface is opened before its first
        // announcement is due.
        let named = eligibility::named_interfaces(&cluster, self.ownership.me().as_str());
        if self.named_interfaces.as_ref() != Some(&named) {
            tracing::info!(interfaces = ?named, "interfaces named by the L2Advertisements selecting this node");
            data_plane.set_named_interfaces(named.clone());
            self.named_interfaces = Some(named);
        }
        let known = caches.known_speakers(self.ownership.me().as_str());
        let decision = self.ownership.decide(&cluster, view, known);
        if decision.rejoined {
            self.metrics.stand_downs.inc();
            tracing::warn!(
                "the other speakers had declared this one down: stood down; announcing only what the election gives this new incarnation"
            );
        }
        let node = caches.node_ref(self.ownership.me().as_str());
        self.set_standing(decision.standing, node);
        if !decision.gained.is_empty() || !decision.lost.is_empty() {
            tracing::info!(
                gained = decision.gained.len(),
                lost = decision.lost.len(),
                announcing = decision.owned.len(),
                "ownership changed"
            );
            for ip in &decision.lost {
                let unit = decision.plan.units.iter().find(|u| u.key.contains(ip));
                match unit.map(|u| &u.outcome) {
                    Some(Ok(o)) if &o.node != self.ownership.me() => {
                        tracing::info!(%ip, owner = %o.node, "released to another node")
                    }
                    Some(Ok(_)) => {
                        tracing::info!(%ip, standing = ?decision.standing, "released while standing down")
                    }
                    Some(Err(refusal)) => {
                        tracing::info!(%ip, reason = %refusal.reason, message = %refusal.message, "released: nobody may announce it")
                    }
                    None => tracing::info!(%ip, "released: no Service has it any more"),
                }
            }
            data_plane.set_owned(&decision.owned);
            self.metrics.ownership_changes.inc_by(
                u64::try_from(decision.gained.len() + decision.lost.len()).unwrap_or(u64::MAX),
            );
        }
        if let Some(took) = self
            .takeover
            .elected(!decision.gained.is_empty(), Instant::now())
        {
            self.metrics.takeover.observe(took.as_secs_f64());
        }
        if !decision.reannounce.is_empty() {
            tracing::info!(
                ips = decision.reannounce.len(),
                "a peer rejoined or appeared: announcing the IPs this node keeps again"
            );
            data_plane.reannounce(&decision.reannounce);
        }
        let live: BTreeSet<NodeName> = view.live.keys().cloned().collect();

        let mut meta = BTreeMap::new();
        let mut refs = BTreeMap::new();
        for service in services.iter() {
            let view_ips = inputs::service_ips(service);
            if view_ips.is_empty() || !inputs::is_ours(service, self.class.as_deref()) {
                continue;
            }
            let id = ServiceId::new(service.namespace().unwrap_or_default(), service.name_any());
            meta.insert(
                id.clone(),
                ServiceMeta {
                    uid: service.uid().unwrap_or_default(),
                    ips: view_ips.iter().map(ToString::to_string).collect(),
                },
            );
            refs.insert(id, service.object_ref(&()));
        }
        let interfaces = data_plane.interfaces();
        let writes = if decision.reports() {
            self.reporter.update(
                &decision.plan,
                &live,
                &meta,
                |selected| data_plane.interfaces_for(selected),
                Time(Timestamp::now()),
                view.incarnation,
            )
        } else {
            // Standing down: what the plan says of this node is not what it
            // does, and other speakers' statuses are theirs to write.
            self.reporter.forget();
            report::Writes::default()
        };
        for (id, uid, status) in writes.statuses {
            self.writer
                .send(Write::Service(id, ServiceReport { uid, status }));
        }
        for notice in writes.notices {
            if let Some(reference) = refs.get(&notice.service) {
                self.writer.send(Write::Event(ServiceEvent {
                    regarding: reference.clone(),
                    warning: notice.warning,
                    reason: notice.reason.to_owned(),
                    note: notice.note,
                }));
            }
        }

        let status = SpeakerStatusStatus {
            peers: live.iter().map(ToString::to_string).collect(),
            peer_count: u32::try_from(live.len()).unwrap_or(u32::MAX),
            gossip_address: Some(self.gossip_address.clone()),
            interfaces,
            interface_addresses: Some(inputs::interface_addresses(
                &data_plane.published_interfaces(),
            )),
            announcing: u32::try_from(decision.owned.len()).unwrap_or(u32::MAX),
            version: Some(env!("CARGO_PKG_VERSION").to_owned()),
            conditions: vec![Condition {
                type_: ferrolb_crds::conditions::READY.to_owned(),
                status: "True".to_owned(),
                reason: "Running".to_owned(),
                message: "caches synced and membership joined".to_owned(),
                last_transition_time: self.started.clone(),
                observed_generation: None,
            }]
            .into_iter()
            .chain(self.strict_arp.as_ref().map(|(v, since)| Condition {
                type_: ferrolb_crds::conditions::STRICT_ARP.to_owned(),
                status: v.condition_status().to_owned(),
                reason: v.reason.to_owned(),
                message: v.message.clone(),
                last_transition_time: since.clone(),
                observed_generation: None,
            }))
            .chain(std::iter::once(self.isolated_condition()))
            .collect(),
        };
        if self.last_speaker_status.as_ref() != Some(&status) {
            self.writer.send(Write::Speaker(status.clone()));
            self.last_speaker_status = Some(status);
        }
    }
}

/// The SpeakerStatus condition saying the speaker hears no peer.
const ISOLATED: &str = "Isolated";

fn isolated_message(known: usize) -> String {
    format!(
        "this speaker hears no other speaker although {known} other ready speaker(s) exist: it keeps only the IPs it already announced and no other node claimed, and claims none of theirs; check that UDP to the gossip port is allowed between nodes and that every speaker reads the same gossip key"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_fingerprint_changes_wake_the_loop() {
        use k8s_openapi::api::core::v1::Node;
        let node = |labels: serde_json::Value, heartbeat: &str| -> Node {
            serde_json::from_value(serde_json::json!({
                "metadata": { "name": "node1", "labels": labels },
                "status": { "conditions": [{
                    "type": "Ready", "status": "True", "lastHeartbeatTime": heartbeat,
                }] },
            }))
            .unwrap()
        };
        let print = inputs::node_fingerprint;
        let mut seen = Fingerprints::default();
        let apply = |n: Node| watcher::Event::Apply(n);
        let a = node(serde_json::json!({"zone": "a"}), "2026-01-01T00:00:00Z");
        assert!(seen.changed(&watcher::Event::InitApply(a.clone()), print));
        // A heartbeat changes nothing the speaker reads.
        let beat = node(serde_json::json!({"zone": "a"}), "2026-01-01T00:00:10Z");
        assert!(!seen.changed(&apply(beat), print));
        // A label does.
        let relabelled = node(serde_json::json!({"zone": "b"}), "2026-01-01T00:00:20Z");
        assert!(seen.changed(&apply(relabelled.clone()), print));
        assert!(!seen.changed(&apply(relabelled.clone()), print));
        assert!(seen.changed(&watcher::Event::Delete(relabelled.clone()), print));
        assert!(seen.changed(&apply(relabelled), print));
        assert!(seen.changed(&watcher::Event::<Node>::InitDone, print));
    }
}
