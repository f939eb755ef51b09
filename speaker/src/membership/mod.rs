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

mod seal;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::num::{NonZeroU8, NonZeroUsize};
use std::sync::Arc;
use std::time::Duration;

use foca::{AccumulatingRuntime, Config, Foca, Identity, NoCustomBroadcast, PostcardCodec, Timer};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

pub use seal::{GossipKey, KEY_LEN, Keyring, OVERHEAD, SealError};

use crate::election::NodeName;

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
        }
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
            remove_down_after: Some(Duration::from_secs(3600)),
            max_packet_size: nz(MAX_PAYLOAD),
            notify_down_members: true,
            periodic_announce: Some(foca::PeriodicParams {
                frequency: Duration::from_secs(10),
                num_members: nz(1),
            }),
            periodic_announce_to_down_members: Some(foca::PeriodicParams {
                frequency: Duration::from_secs(2),
                num_members: nz(2),
            }),
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
        metrics
    }
}

enum Command {
    Seed(Vec<SocketAddr>),
    Rotate(GossipKey),
    Leave(oneshot::Sender<()>),
}

/// A running membership.
#[derive(Debug)]
pub struct Membership {
    commands: mpsc::UnboundedSender<Command>,
    live: watch::Receiver<BTreeSet<NodeName>>,
    task: tokio::task::JoinHandle<()>,
}

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
        let rng: StdRng = rand::make_rng();
        let foca = Foca::new(me, foca_config, rng, PostcardCodec);
        let (commands, rx) = mpsc::unbounded_channel();
        let initial: BTreeSet<NodeName> = [NodeName::new(config.node.as_str())].into();
        let (live_tx, live) = watch::channel(initial);
        metrics.members.set(1);
        let driver = Driver {
            foca,
            socket: Arc::new(socket),
            keyring: Keyring::new(key),
            runtime: AccumulatingRuntime::new(),
            timers: BTreeMap::new(),
            timer_seq: 0,
            seeds: BTreeSet::new(),
            node: config.node,
            live: live_tx,
            metrics,
        };
        let task = tokio::spawn(driver.run(rx));
        Ok(Self {
            commands,
            live,
            task,
        })
    }

    /// The node names of live speakers, this one included; changes as soon
    /// as the protocol declares a member up or down.
    pub fn live(&self) -> watch::Receiver<BTreeSet<NodeName>> {
        self.live.clone()
    }

    /// Addresses to try joining through; may be called again as they change.
    pub fn seed(&self, addrs: Vec<SocketAddr>) {
        let _ = self.commands.send(Command::Seed(addrs));
    }

    /// A new key from the Secret; the old one stays accepted until the next.
    pub fn rotate_key(&self, key: GossipKey) {
        let _ = self.commands.send(Command::Rotate(key));
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
    }
}

struct Driver {
    foca: Foca<SpeakerId, PostcardCodec, StdRng, NoCustomBroadcast>,
    socket: Arc<UdpSocket>,
    keyring: Keyring,
    runtime: AccumulatingRuntime<SpeakerId>,
    timers: BTreeMap<(Instant, u64), Timer<SpeakerId>>,
    timer_seq: u64,
    seeds: BTreeSet<SocketAddr>,
    node: String,
    live: watch::Sender<BTreeSet<NodeName>>,
    metrics: MembershipMetrics,
}

impl Driver {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let mut buf = vec![0u8; MAX_PAYLOAD + seal::OVERHEAD + 64];
        let mut reseed = tokio::time::interval(Duration::from_secs(1));
        reseed.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let far = Instant::now() + Duration::from_secs(3600);
        loop {
            let next_timer = self.timers.keys().next().map(|(at, _)| *at).unwrap_or(far);
            let socket = Arc::clone(&self.socket);
            tokio::select! {
                received = socket.recv_from(&mut buf) => {
                    if let Ok((len, _from)) = received {
                        self.on_datagram(&buf[..len]);
                    }
                }
                () = tokio::time::sleep_until(next_timer) => self.fire_due_timers(),
                command = commands.recv() => match command {
                    Some(Command::Seed(addrs)) => {
                        self.seeds = addrs.into_iter().collect();
                        self.announce_to_unknown_seeds();
                    }
                    Some(Command::Rotate(key)) => self.keyring.rotate(key),
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
                _ = reseed.tick() => self.announce_to_unknown_seeds(),
            }
            self.flush().await;
        }
    }

    fn on_datagram(&mut self, datagram: &[u8]) {
        match self.keyring.open(datagram) {
            Ok(payload) => {
                if let Err(error) = self.foca.handle_data(&payload, &mut self.runtime) {
                    self.metrics.rejected.inc();
                    tracing::trace!(%error, "gossip datagram rejected");
                }
            }
            Err(_) => {
                self.metrics.unauthenticated.inc();
            }
        }
    }

    fn fire_due_timers(&mut self) {
        let now = Instant::now();
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let timer = entry.remove();
            if let Err(error) = self.foca.handle_timer(timer, &mut self.runtime) {
                tracing::debug!(%error, "membership timer");
            }
        }
    }

    /// Seeds whose address is not a known live member get an announce; an
    /// answer adds the peer under its real identity.
    fn announce_to_unknown_seeds(&mut self) {
        let known: BTreeSet<SocketAddr> = self.foca.iter_members().map(|m| m.id().addr).collect();
        let me = self.foca.identity().addr;
        let targets: Vec<SocketAddr> = self
            .seeds
            .iter()
            .filter(|a| **a != me && !known.contains(a))
            .copied()
            .collect();
        for addr in targets {
            if let Err(error) = self.foca.announce(SpeakerId::seed(addr), &mut self.runtime) {
                tracing::debug!(%error, %addr, "announce to seed");
            }
        }
    }

    /// Sends what SWIM queued, arms its timers and publishes the live set.
    async fn flush(&mut self) {
        while let Some((to, data)) = self.runtime.to_send() {
            match self.keyring.seal(&data) {
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
        let mut changed = false;
        while let Some(notification) = self.runtime.to_notify() {
            tracing::debug!(?notification, "membership");
            changed = true;
        }
        if changed {
            let mut live: BTreeSet<NodeName> = self
                .foca
                .iter_members()
                .map(|m| m.id().node.as_str())
                .filter(|n| !n.is_empty())
                .map(NodeName::new)
                .collect();
            live.insert(NodeName::new(self.node.as_str()));
            self.metrics
                .members
                .set(i64::try_from(live.len()).unwrap_or(i64::MAX));
            self.live.send_if_modified(|current| {
                if *current == live {
                    false
                } else {
                    tracing::info!(live = ?live.iter().map(NodeName::as_str).collect::<Vec<_>>(), "membership changed");
                    *current = live;
                    true
                }
            });
        }
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

    async fn wait_for(
        live: &mut watch::Receiver<BTreeSet<NodeName>>,
        want: &[&str],
        within: Duration,
    ) -> Duration {
        let start = Instant::now();
        let want: BTreeSet<NodeName> = want.iter().map(|n| NodeName::from(*n)).collect();
        let deadline = start + within;
        loop {
            if *live.borrow_and_update() == want {
                return start.elapsed();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if tokio::time::timeout(left, live.changed()).await.is_err() {
                panic!("live set {:?} never became {want:?}", *live.borrow());
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn join_detect_failure_and_leave() {
        let (a, addr_a) = speaker("a", 7).await;
        let (b, addr_b) = speaker("b", 7).await;
        let (c, _) = speaker("c", 7).await;
        // b and c only know a; they find each other through it.
        b.seed(vec![addr_a]);
        c.seed(vec![addr_a, addr_b]);
        let mut live_a = a.live();
        let mut live_b = b.live();
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
        let (intruder, _) = speaker("intruder", 2).await;
        intruder.seed(vec![addr_a]);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(a.live().borrow().len(), 1);
        assert_eq!(intruder.live().borrow().len(), 1);
    }
}
