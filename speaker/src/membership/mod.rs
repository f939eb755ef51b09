//! Which speakers are alive: SWIM failure detection over encrypted UDP.
//!
//! The protocol is [foca]'s; this module drives it with a tokio UDP socket, a
//! timer queue and the [`seal`] layer, and publishes one thing: the set of
//! node names whose speakers are alive ([`Membership::live`]). The election
//! needs nothing else, so the rest of the speaker never sees SWIM.
//!
//! Peers are found through seeds ([`Membership::seed`]): the gossip addresses
//! other speakers publish in their SpeakerStatus and the nodes' InternalIPs.
//! A seed is only an address; the peer's identity is learnt from its answer.
//! Liveness costs no API write at all.
//!
//! Timings ([`MembershipConfig`]) are tuned for a LAN: a member is probed
//! every 100 ms, a probe unanswered within 40 ms goes indirect, and a suspect
//! that does not refute within 100 ms is declared down, so a dead speaker is
//! detected in about 250 ms on average and under half a second at worst
//! (measured in the lab: docs/benchmarks.md). A shorter suspicion would risk
//! declaring a CPU-starved speaker down; a longer one delays every failover.
//!
//! # Being declared down by mistake
//!
//! With a 100 ms suspicion, a speaker that stalls (SIGSTOP, swapping, CPU
//! starvation) is declared down by its peers, who take its IPs over. Each
//! speaker's identity carries an *incarnation*; when a speaker learns that
//! the cluster declared it down, it comes back as a new incarnation with a
//! fresh view of the members (so that it cannot in turn declare healthy
//! peers down from its stale view), and the [`View`] it publishes says so.
//! The election treats the IPs claimed by its earlier incarnation as no
//! longer its own: the successors keep them. A speaker also notices its own
//! stalls (its event loop did not run for longer than peers wait before
//! suspecting it) and reports itself [`View::stalled`] until the membership
//! has had time to tell it whether it was declared down, so that it does not
//! answer for IPs a successor may already announce.
//!
//! # Floods
//!
//! The gossip socket is bound to the node's address. Datagrams from
//! addresses that are not a known node's are dropped before any
//! cryptography, and authentication runs on a receive task of its own that
//! hands opened messages to the protocol through a bounded queue: a flood on
//! the gossip port from a pod or a LAN host cannot delay the protocol's
//! timers or its answers to peers.

mod seal;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::num::{NonZeroU8, NonZeroUsize};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use foca::{
    AccumulatingRuntime, Config, Foca, Identity, NoCustomBroadcast, OwnedNotification,
    PostcardCodec, Timer,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

pub use seal::{GossipKey, KEY_LEN, KeyPhases, OVERHEAD, SealError};

use crate::election::NodeName;
use crate::eligibility::{Incarnation, Live};
use crate::heartbeat::Heartbeat;

/// What the membership tells the rest of the speaker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    /// Speakers alive, this one included, with their incarnations.
    pub live: Live,
    /// This speaker's incarnation; it changes when the speaker rejoins
    /// after the cluster declared it down.
    pub incarnation: Incarnation,
    /// This speaker's event loop stalled for longer than its peers wait
    /// before suspecting it: they may have declared it down, and it does
    /// not know yet. Cleared once the membership has had time to tell it.
    pub stalled: bool,
    /// No datagram from any peer for a while although peers are known: its
    /// inbound gossip is lost (a filter, a one-way link fault). Its view of
    /// the others is then worthless: it declares nobody down meanwhile (so
    /// its deafness does not spread as false news), and the election treats
    /// it as hearing nobody.
    pub deaf: bool,
}

impl View {
    /// Whether any other speaker is alive.
    #[must_use]
    pub fn has_peers(&self) -> bool {
        self.live.len() > 1
    }
}

/// Depth of the queue between the receive task and the protocol: a burst
/// of genuine gossip fits easily; beyond it datagrams are dropped (counted)
/// rather than delaying timers.
const RECEIVE_QUEUE: usize = 256;

/// Largest datagram SWIM produces, before sealing; below a 1500-byte MTU
/// once the seal's overhead and IP/UDP headers are added.
const MAX_PAYLOAD: usize = 1400;

/// A speaker in the membership: its node, its gossip address, and a
/// generation that makes a restarted speaker a new identity that wins over
/// the old one at the same address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpeakerId {
    /// The node the speaker runs on; empty for a seed not heard from yet.
    pub node: String,
    /// Where its gossip socket listens.
    pub addr: SocketAddr,
    /// Start time in milliseconds since the epoch, bumped on auto-rejoin.
    pub generation: u64,
}

impl SpeakerId {
    fn seed(addr: SocketAddr) -> Self {
        Self {
            node: String::new(),
            addr,
            generation: 0,
        }
    }
}

impl Identity for SpeakerId {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        // Declared down by mistake (a pause, a lost burst): come back at once
        // under a newer identity rather than stay out of the election.
        Some(Self {
            generation: self.generation.saturating_add(1),
            ..self.clone()
        })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.generation > adversary.generation
    }
}

/// Membership settings.
#[derive(Debug, Clone)]
pub struct MembershipConfig {
    /// This node's name.
    pub node: String,
    /// Address to bind the gossip socket to.
    pub bind: SocketAddr,
    /// Address other speakers reach this one at (host IP and gossip port).
    pub advertise: SocketAddr,
    /// How often a random member is probed.
    pub probe_period: Duration,
    /// How long to wait for a direct ack before asking others to probe.
    pub probe_rtt: Duration,
    /// How long a suspect has to refute before it is declared down.
    pub suspect_timeout: Duration,
    /// How long, after a new gossip key is first seen, this speaker keeps
    /// sending with the old one (every peer must have loaded the new key
    /// before anyone sends with it), and how long the old key is then still
    /// accepted.
    pub key_phase: Duration,
}

impl MembershipConfig {
    /// LAN defaults for `node` reachable at `advertise`.
    pub fn lan(node: impl Into<String>, bind: SocketAddr, advertise: SocketAddr) -> Self {
        Self {
            node: node.into(),
            bind,
            advertise,
            probe_period: Duration::from_millis(100),
            probe_rtt: Duration::from_millis(40),
            suspect_timeout: Duration::from_millis(100),
            key_phase: Duration::from_secs(20),
        }
    }

    /// A gap in the event loop longer than this means peers may have
    /// suspected this speaker and declared it down.
    fn stall_threshold(&self) -> Duration {
        self.suspect_timeout + self.probe_rtt
    }

    /// Silence from every peer longer than this makes the speaker
    /// [`View::deaf`]: peers probe it and gossip to it several times per
    /// probe period.
    fn deaf_after(&self) -> Duration {
        // Shorter than the quickest way to declare a peer down after losing
        // inbound (a probe sent then, a probe period without ack, the
        // suspicion timeout), so a speaker that loses inbound notices it is
        // deaf before it declares anyone down.
        self.probe_period + self.probe_rtt
    }

    /// How long after a stall this speaker stays [`View::stalled`]: enough
    /// for a peer that declared it down to answer its first messages with
    /// the news.
    fn stall_grace(&self) -> Duration {
        self.probe_period * 2 + self.probe_rtt
    }

    fn foca(&self) -> Result<Config, Error> {
        if self.probe_rtt.is_zero() || self.probe_rtt >= self.probe_period {
            return Err(Error::Timings {
                probe_period: self.probe_period,
                probe_rtt: self.probe_rtt,
            });
        }
        let nz = |n: usize| NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN);
        Ok(Config {
            probe_period: self.probe_period,
            probe_rtt: self.probe_rtt,
            num_indirect_probes: nz(3),
            max_transmissions: NonZeroU8::new(8).unwrap_or(NonZeroU8::MIN),
            suspect_to_down_after: self.suspect_timeout.max(Duration::from_millis(1)),
            // Long enough that a member declared down hears it (and rejoins
            // as a new incarnation) rather than being silently re-accepted.
            remove_down_after: Some(Duration::from_secs(60)),
            max_packet_size: nz(MAX_PAYLOAD),
            notify_down_members: true,
            periodic_announce: Some(foca::PeriodicParams {
                frequency: Duration::from_secs(10),
                num_members: nz(1),
            }),
            // Never: a member announcing to a node it holds down gets *itself*
            // told it is down by that node if the node holds it down too (both
            // sides of a healed partition), and a healthy member then rejoins
            // for nothing (seen in the lab with a flapping link). A node that
            // hears nobody announces to every seed instead, and down members
            // are forgotten after `remove_down_after`, after which seeds are
            // announced to again (see `Driver::announce_to_seeds`).
            periodic_announce_to_down_members: None,
            periodic_gossip: Some(foca::PeriodicParams {
                frequency: Duration::from_millis(50),
                num_members: nz(3),
            }),
        })
    }
}

/// What can stop the membership from starting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The gossip port is taken or not permitted.
    #[error("cannot bind the gossip socket on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// Inconsistent probe timings.
    #[error("probe RTT {probe_rtt:?} must be non-zero and below the probe period {probe_period:?}")]
    Timings {
        /// The probe period.
        probe_period: Duration,
        /// The probe RTT.
        probe_rtt: Duration,
    },
}

/// Membership metrics.
#[derive(Debug, Clone, Default)]
pub struct MembershipMetrics {
    /// Live speakers, this one included.
    pub members: Gauge,
    /// Datagrams dropped because they failed authentication.
    pub unauthenticated: Counter,
    /// Datagrams SWIM could not use (malformed, stale).
    pub rejected: Counter,
    /// Datagrams dropped unopened: from an address that is no known node.
    pub unknown_source: Counter,
    /// Authenticated datagrams dropped because the protocol was behind.
    pub overloaded: Counter,
    /// Times this speaker learnt the cluster had declared it down and
    /// rejoined as a new incarnation.
    pub rejoins: Counter,
    /// Stalls of this speaker long enough for peers to suspect it.
    pub stalls: Counter,
}

impl MembershipMetrics {
    /// Registers the metrics in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "ferrolb_speaker_membership_size",
            "Speakers alive in the membership, this one included",
            metrics.members.clone(),
        );
        registry.register(
            "ferrolb_speaker_gossip_unauthenticated",
            "Gossip datagrams dropped because they failed authentication",
            metrics.unauthenticated.clone(),
        );
        registry.register(
            "ferrolb_speaker_gossip_rejected",
            "Authenticated gossip datagrams the membership protocol rejected",
            metrics.rejected.clone(),
        );
        registry.register(
            "ferrolb_speaker_gossip_unknown_source",
            "Gossip datagrams dropped unopened because they came from an address that is no node's",
            metrics.unknown_source.clone(),
        );
        registry.register(
            "ferrolb_speaker_gossip_overloaded",
            "Authenticated gossip datagrams dropped because the membership protocol was behind",
            metrics.overloaded.clone(),
        );
        registry.register(
            "ferrolb_speaker_membership_rejoins",
            "Times this speaker learnt its peers had declared it down and rejoined",
            metrics.rejoins.clone(),
        );
        registry.register(
            "ferrolb_speaker_stalls",
            "Stalls of this speaker long enough for its peers to suspect it",
            metrics.stalls.clone(),
        );
        metrics
    }
}

enum Command {
    Seed(Vec<SocketAddr>),
    Key(GossipKey),
    Leave(oneshot::Sender<()>),
}

/// A running membership.
#[derive(Debug)]
pub struct Membership {
    commands: mpsc::UnboundedSender<Command>,
    view: watch::Receiver<View>,
    heartbeat: Arc<Heartbeat>,
    task: tokio::task::JoinHandle<()>,
    receiver: tokio::task::JoinHandle<()>,
}

/// Addresses gossip is accepted from: the seeds' IPs.
type Allowed = Arc<RwLock<BTreeSet<IpAddr>>>;

impl Membership {
    /// Binds the gossip socket and starts the protocol.
    pub async fn start(
        config: MembershipConfig,
        key: GossipKey,
        metrics: MembershipMetrics,
    ) -> Result<Self, Error> {
        let socket = UdpSocket::bind(config.bind)
            .await
            .map_err(|source| Error::Bind {
                addr: config.bind,
                source,
            })?;
        let foca_config = config.foca()?;
        let generation = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(1);
        let me = SpeakerId {
            node: config.node.clone(),
            addr: config.advertise,
            generation,
        };
        let (commands, rx) = mpsc::unbounded_channel();
        let initial = View {
            live: [(NodeName::new(config.node.as_str()), generation)].into(),
            incarnation: generation,
            stalled: false,
            deaf: false,
        };
        let (view_tx, view) = watch::channel(initial);
        metrics.members.set(1);
        let socket = Arc::new(socket);
        let keyring = Arc::new(RwLock::new(KeyPhases::new(key, config.key_phase)));
        let allowed: Allowed = Arc::default();
        let (opened_tx, opened) = mpsc::channel(RECEIVE_QUEUE);
        let receiver = tokio::spawn(receive(
            Arc::clone(&socket),
            Arc::clone(&keyring),
            Arc::clone(&allowed),
            opened_tx,
            metrics.clone(),
        ));
        let heartbeat = Arc::new(Heartbeat::new(
            config.stall_threshold(),
            std::time::Instant::now(),
        ));
        let rng: StdRng = rand::make_rng();
        let driver = Driver {
            heartbeat: Arc::clone(&heartbeat),
            foca: Foca::new(me, foca_config.clone(), rng, PostcardCodec),
            foca_config,
            socket,
            keyring,
            allowed,
            runtime: AccumulatingRuntime::new(),
            timers: BTreeMap::new(),
            timer_seq: 0,
            seeds: BTreeSet::new(),
            node: config.node.clone(),
            view: view_tx,
            stalled_until: None,
            stall_threshold: config.stall_threshold(),
            stall_grace: config.stall_grace(),
            last_heard: Instant::now(),
            hearing_again_until: None,
            deaf_after: config.deaf_after(),
            suspect_timeout: config.suspect_timeout,
            metrics,
        };
        let task = tokio::spawn(driver.run(rx, opened));
        Ok(Self {
            commands,
            view,
            heartbeat,
            task,
            receiver,
        })
    }

    /// The membership as this speaker sees it; changes as soon as the
    /// protocol declares a member up or down, this speaker rejoins, or a
    /// stall is noticed.
    pub fn view(&self) -> watch::Receiver<View> {
        self.view.clone()
    }

    /// The heartbeat of the membership's event loop, for the data plane to
    /// answer only while it beats (see [`Heartbeat`]).
    pub fn heartbeat(&self) -> Arc<Heartbeat> {
        Arc::clone(&self.heartbeat)
    }

    /// Addresses to try joining through; may be called again as they
    /// change. Gossip is accepted from these addresses' IPs only.
    pub fn seed(&self, addrs: Vec<SocketAddr>) {
        let _ = self.commands.send(Command::Seed(addrs));
    }

    /// The key in the Secret, read again. A new key is accepted at once,
    /// used for sending after [`MembershipConfig::key_phase`], and the old
    /// one is accepted for another `key_phase` after that.
    pub fn key(&self, key: GossipKey) {
        let _ = self.commands.send(Command::Key(key));
    }

    /// Tells the other speakers this one is leaving, waits `linger` for the
    /// news to spread (and for their takeover), then stops.
    pub async fn leave(self, linger: Duration) {
        let (done, wait) = oneshot::channel();
        if self.commands.send(Command::Leave(done)).is_ok() {
            let _ = wait.await;
            tokio::time::sleep(linger).await;
        }
        self.task.abort();
        self.receiver.abort();
    }
}

/// Reads the gossip socket: drops datagrams from unknown addresses before
/// any cryptography, opens the rest and queues them for the protocol.
async fn receive(
    socket: Arc<UdpSocket>,
    keyring: Arc<RwLock<KeyPhases>>,
    allowed: Allowed,
    opened: mpsc::Sender<Vec<u8>>,
    metrics: MembershipMetrics,
) {
    let mut buf = vec![0u8; MAX_PAYLOAD + seal::OVERHEAD + 64];
    loop {
        let Ok((len, from)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        let known = allowed
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&from.ip());
        if !known {
            metrics.unknown_source.inc();
            continue;
        }
        let payload = keyring
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .open(&buf[..len], std::time::Instant::now());
        match payload {
            Ok(payload) => match opened.try_send(payload) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    metrics.overloaded.inc();
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return,
            },
            Err(_) => {
                metrics.unauthenticated.inc();
            }
        }
    }
}

struct Driver {
    heartbeat: Arc<Heartbeat>,
    foca: Foca<SpeakerId, PostcardCodec, StdRng, NoCustomBroadcast>,
    foca_config: Config,
    socket: Arc<UdpSocket>,
    keyring: Arc<RwLock<KeyPhases>>,
    allowed: Allowed,
    runtime: AccumulatingRuntime<SpeakerId>,
    timers: BTreeMap<(Instant, u64), Timer<SpeakerId>>,
    timer_seq: u64,
    seeds: BTreeSet<SocketAddr>,
    node: String,
    view: watch::Sender<View>,
    /// Set by a noticed stall: until when this speaker reports itself stalled.
    stalled_until: Option<Instant>,
    stall_threshold: Duration,
    stall_grace: Duration,
    /// When a datagram from a peer was last accepted.
    last_heard: Instant,
    /// After a deaf spell: until when suspects are still not declared down.
    hearing_again_until: Option<Instant>,
    deaf_after: Duration,
    suspect_timeout: Duration,
    metrics: MembershipMetrics,
}

/// How often the event loop turns at least, so a stall is noticed.
const TICK: Duration = Duration::from_millis(20);

impl Driver {
    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut opened: mpsc::Receiver<Vec<u8>>,
    ) {
        let mut reseed = tokio::time::interval(Duration::from_secs(1));
        reseed.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let far = Instant::now() + Duration::from_secs(3600);
        let mut last_turn = Instant::now();
        loop {
            let next_timer = self.timers.keys().next().map(|(at, _)| *at).unwrap_or(far);
            // Datagrams that arrived while this task was stalled are read
            // before the timers that fell due meanwhile: an ack waiting in
            // the queue must not be taken for a missing one.
            tokio::select! {
                biased;
                payload = opened.recv() => match payload {
                    Some(payload) => self.on_payload(&payload),
                    None => return,
                },
                command = commands.recv() => match command {
                    Some(Command::Seed(addrs)) => {
                        self.seeds = addrs.into_iter().collect();
                        *self.allowed.write().unwrap_or_else(PoisonError::into_inner) =
                            self.seeds.iter().map(SocketAddr::ip).collect();
                        self.announce_to_seeds();
                    }
                    Some(Command::Key(key)) => {
                        self.keyring
                            .write()
                            .unwrap_or_else(PoisonError::into_inner)
                            .observe(key, std::time::Instant::now());
                    }
                    Some(Command::Leave(done)) => {
                        if let Err(error) = self.foca.leave_cluster(&mut self.runtime) {
                            tracing::warn!(%error, "could not announce the leave");
                        }
                        self.flush().await;
                        let _ = done.send(());
                        // Keep answering until the caller aborts us, so the
                        // leave is not mistaken for a failure meanwhile.
                    }
                    None => return,
                },
                () = tokio::time::sleep_until(next_timer) => self.fire_due_timers(),
                _ = reseed.tick() => self.announce_to_seeds(),
                _ = tick.tick() => {}
            }
            let now = Instant::now();
            if now.duration_since(last_turn) > self.stall_threshold {
                self.metrics.stalls.inc();
                tracing::warn!(
                    stalled_ms = now.duration_since(last_turn).as_millis(),
                    "this speaker was stalled long enough for its peers to declare it down; not answering until the membership confirms"
                );
                self.stalled_until = Some(now + self.stall_grace);
                self.heartbeat
                    .quiet_until(std::time::Instant::now() + self.stall_grace);
            }
            self.heartbeat.beat(std::time::Instant::now());
            last_turn = now;
            self.flush().await;
        }
    }

    fn on_payload(&mut self, payload: &[u8]) {
        let now = Instant::now();
        if self.deaf(now) {
            // Heard again: what it suspected while deaf waits a little
            // longer, so the peers can refute and this speaker can learn
            // whether it was declared down itself before it declares anyone.
            self.hearing_again_until = Some(now + self.deaf_after);
        }
        self.last_heard = now;
        if let Err(error) = self.foca.handle_data(payload, &mut self.runtime) {
            self.metrics.rejected.inc();
            tracing::trace!(%error, "gossip datagram rejected");
        }
    }

    /// Whether peers are known but none was heard from for a while.
    fn deaf(&self, now: Instant) -> bool {
        self.foca.num_members() > 0 && now.duration_since(self.last_heard) > self.deaf_after
    }

    fn fire_due_timers(&mut self) {
        let now = Instant::now();
        let deaf = self.deaf(now) || self.hearing_again_until.is_some_and(|until| now < until);
        let mut deferred = Vec::new();
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let timer = entry.remove();
            if deaf && matches!(timer, Timer::ChangeSuspectToDown { .. }) {
                // Hearing nobody, this speaker cannot tell a dead peer from
                // its own lost inbound: it keeps suspecting, and declares
                // the peer down only if it still cannot refute once this
                // speaker hears again.
                deferred.push(timer);
                continue;
            }
            if let Err(error) = self.foca.handle_timer(timer, &mut self.runtime) {
                tracing::debug!(%error, "membership timer");
            }
        }
        for timer in deferred {
            self.timer_seq += 1;
            self.timers
                .insert((now + self.suspect_timeout, self.timer_seq), timer);
        }
    }

    /// Announces this speaker to the seeds that are not live members. A
    /// seed held down is skipped (until the protocol forgets it, after
    /// `remove_down_after`) unless this speaker sees no peer at all:
    /// announcing to a member we hold down gets *it* told it is down, and a
    /// healthy majority should not be made to rejoin by one isolated node;
    /// the isolated node announces and is the one told to rejoin.
    fn announce_to_seeds(&mut self) {
        let active: BTreeSet<SocketAddr> = self.foca.iter_members().map(|m| m.id().addr).collect();
        let isolated = active.is_empty();
        let down: BTreeSet<SocketAddr> = self
            .foca
            .iter_membership_state()
            .filter(|m| m.state() == foca::State::Down)
            .map(|m| m.id().addr)
            .collect();
        let me = self.foca.identity().addr;
        let targets: Vec<SocketAddr> = self
            .seeds
            .iter()
            .filter(|a| **a != me && !active.contains(a))
            .filter(|a| isolated || !down.contains(a))
            .copied()
            .collect();
        for addr in targets {
            if let Err(error) = self.foca.announce(SpeakerId::seed(addr), &mut self.runtime) {
                tracing::debug!(%error, %addr, "announce to seed");
            }
        }
    }

    /// Starts over as `renewed` with no knowledge of the members: what this
    /// speaker believed while the cluster held it down (possibly that
    /// healthy peers were down) must not spread.
    fn restart_as(&mut self, renewed: SpeakerId) {
        let rng: StdRng = rand::make_rng();
        self.foca = Foca::new(renewed, self.foca_config.clone(), rng, PostcardCodec);
        self.runtime = AccumulatingRuntime::new();
        self.timers.clear();
        self.announce_to_seeds();
    }

    /// Sends what SWIM queued, arms its timers and publishes the view.
    async fn flush(&mut self) {
        let mut renewed = None;
        let mut members_changed = false;
        while let Some(notification) = self.runtime.to_notify() {
            tracing::debug!(?notification, "membership");
            if let OwnedNotification::Rejoin(id) = notification {
                renewed = Some(id);
            }
            members_changed = true;
        }
        if let Some(id) = renewed {
            self.metrics.rejoins.inc();
            tracing::warn!(
                generation = id.generation,
                "the other speakers declared this one down; rejoining as a new incarnation and giving up its IPs to the successors"
            );
            self.stalled_until = None;
            self.restart_as(id);
        }
        let now = std::time::Instant::now();
        while let Some((to, data)) = self.runtime.to_send() {
            let sealed = self
                .keyring
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .seal(&data, now);
            match sealed {
                Ok(sealed) => {
                    if let Err(error) = self.socket.send_to(&sealed, to.addr).await {
                        tracing::trace!(%error, to = %to.addr, "gossip send");
                    }
                }
                Err(error) => tracing::warn!(%error, "cannot seal a gossip datagram"),
            }
        }
        let now = Instant::now();
        while let Some((after, timer)) = self.runtime.to_schedule() {
            self.timer_seq += 1;
            self.timers.insert((now + after, self.timer_seq), timer);
        }
        let stalled = self.stalled_until.is_some_and(|until| now < until);
        if !stalled {
            self.stalled_until = None;
        }
        // The live set changes only with the protocol's notifications; the
        // rest of the view with time. Rebuilt only when it may have changed:
        // this runs on every datagram and every tick.
        let incarnation = self.foca.identity().generation;
        let live = members_changed.then(|| self.live_members());
        let deaf = self.deaf(now);
        let metrics = &self.metrics;
        self.view.send_if_modified(|current| {
            let mut modified = false;
            if let Some(live) = live
                && current.live != live
            {
                tracing::info!(live = ?live.keys().map(NodeName::as_str).collect::<Vec<_>>(), "membership changed");
                metrics
                    .members
                    .set(i64::try_from(live.len()).unwrap_or(i64::MAX));
                current.live = live;
                modified = true;
            }
            if current.deaf != deaf {
                if deaf {
                    tracing::warn!("no gossip heard from any peer: declaring nobody down until it is heard again");
                } else {
                    tracing::info!("hearing peers again");
                }
                current.deaf = deaf;
                modified = true;
            }
            if current.incarnation != incarnation || current.stalled != stalled {
                current.incarnation = incarnation;
                current.stalled = stalled;
                modified = true;
            }
            modified
        });
    }

    /// The live speakers with their incarnations, this one included.
    fn live_members(&self) -> Live {
        let mut live: Live = self
            .foca
            .iter_members()
            .map(|m| m.id())
            .filter(|id| !id.node.is_empty())
            .map(|id| (NodeName::new(id.node.as_str()), id.generation))
            .collect();
        live.insert(
            NodeName::new(self.node.as_str()),
            self.foca.identity().generation,
        );
        live
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn speaker(node: &str, key: u8) -> (Membership, SocketAddr) {
        // Bind to port 0 first to learn a free port, then advertise it.
        let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = probe.local_addr().unwrap();
        drop(probe);
        let config = MembershipConfig::lan(node, addr, addr);
        let key = GossipKey::new(&[key; KEY_LEN]).unwrap();
        let m = Membership::start(config, key, MembershipMetrics::default())
            .await
            .unwrap();
        (m, addr)
    }

    fn names(view: &View) -> BTreeSet<NodeName> {
        view.live.keys().cloned().collect()
    }

    async fn wait_for(
        view: &mut watch::Receiver<View>,
        want: &[&str],
        within: Duration,
    ) -> Duration {
        let start = Instant::now();
        let want: BTreeSet<NodeName> = want.iter().map(|n| NodeName::from(*n)).collect();
        let deadline = start + within;
        loop {
            if names(&view.borrow_and_update()) == want {
                return start.elapsed();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if tokio::time::timeout(left, view.changed()).await.is_err() {
                panic!("live set {:?} never became {want:?}", names(&view.borrow()));
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn join_detect_failure_and_leave() {
        let (a, addr_a) = speaker("a", 7).await;
        let (b, addr_b) = speaker("b", 7).await;
        let (c, addr_c) = speaker("c", 7).await;
        // Every speaker knows every node's address (gossip is accepted from
        // those alone); only c announces itself, and b learns of c through a.
        a.seed(vec![addr_b, addr_c]);
        b.seed(vec![addr_a, addr_c]);
        c.seed(vec![addr_a, addr_b]);
        let mut live_a = a.view();
        let mut live_b = b.view();
        wait_for(&mut live_a, &["a", "b", "c"], Duration::from_secs(5)).await;
        wait_for(&mut live_b, &["a", "b", "c"], Duration::from_secs(5)).await;

        // A crash: c stops answering without a word.
        c.task.abort();
        let detected = wait_for(&mut live_a, &["a", "b"], Duration::from_secs(3)).await;
        assert!(
            detected < Duration::from_secs(1),
            "crash detected in {detected:?}"
        );

        // A graceful leave is seen at once.
        let start = Instant::now();
        b.leave(Duration::from_millis(20)).await;
        let left = wait_for(&mut live_a, &["a"], Duration::from_secs(3)).await;
        assert!(
            start.elapsed() < Duration::from_millis(500),
            "leave seen in {left:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_speaker_without_the_key_is_ignored() {
        let (a, addr_a) = speaker("a", 1).await;
        let (intruder, addr_intruder) = speaker("intruder", 2).await;
        // Even from an address `a` accepts gossip from.
        a.seed(vec![addr_intruder]);
        intruder.seed(vec![addr_a]);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(a.view().borrow().live.len(), 1);
        assert_eq!(intruder.view().borrow().live.len(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn gossip_from_unknown_addresses_is_dropped_unopened() {
        let metrics = MembershipMetrics::default();
        let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = probe.local_addr().unwrap();
        drop(probe);
        let config = MembershipConfig::lan("a", addr, addr);
        let key = GossipKey::new(&[3; KEY_LEN]).unwrap();
        let a = Membership::start(config, key.clone(), metrics.clone())
            .await
            .unwrap();
        a.seed(vec!["127.0.0.9:7946".parse().unwrap()]);
        let flood = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let sealed = key.seal(b"not gossip").unwrap();
        for _ in 0..100 {
            flood.send_to(&sealed, addr).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(metrics.unknown_source.get(), 100);
        assert_eq!(metrics.unauthenticated.get(), 0);
        assert_eq!(metrics.rejected.get(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_rotated_key_keeps_the_membership_whole() {
        let phase = Duration::from_millis(300);
        let mut members = Vec::new();
        let mut addrs = Vec::new();
        for node in ["a", "b", "c"] {
            let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let addr = probe.local_addr().unwrap();
            drop(probe);
            let mut config = MembershipConfig::lan(node, addr, addr);
            config.key_phase = phase;
            let key = GossipKey::new(&[5; KEY_LEN]).unwrap();
            members.push(
                Membership::start(config, key, MembershipMetrics::default())
                    .await
                    .unwrap(),
            );
            addrs.push(addr);
        }
        for m in &members {
            m.seed(addrs.clone());
        }
        let mut view = members[0].view();
        wait_for(&mut view, &["a", "b", "c"], Duration::from_secs(5)).await;
        // The speakers read the new key at different times, up to most of a
        // phase apart, as they would poll the Secret.
        let new = GossipKey::new(&[6; KEY_LEN]).unwrap();
        for m in &members {
            m.key(new.clone());
            tokio::time::sleep(phase / 3).await;
        }
        // Through both phases and past the old key's expiry, nobody is
        // declared down.
        let deadline = Instant::now() + phase * 4;
        while Instant::now() < deadline {
            for m in &members {
                assert_eq!(
                    m.view().borrow().live.len(),
                    3,
                    "the rotation split the membership"
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
