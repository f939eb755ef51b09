//! Answering ARP requests and neighbor solicitations for the IPs this node
//! owns, on the interfaces it announces them on, and nothing else.
//!
//! The responder does not know how ownership is decided: it asks a
//! [`Lookup`] (the announcer's table) which MAC, if any, answers for an IP
//! on an interface, as MetalLB hands its responder a function. The
//! decisions ([`answer_arp`], [`answer_ns`], the [`limits`]) are pure; the
//! loops ([`serve_arp`], [`serve_ndp`], [`serve_nud`]) read from a
//! [`FrameIo`] or [`Icmpv6Io`], so they are tested with in-memory packets.

pub mod limits;

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use self::limits::{Limit, ReplyLimitConfig, ReplyLimits, Sender};
use crate::metrics::{AddressFamily, AnnouncerMetrics, PacketLabels, Suppression};
use crate::packet::arp::{ArpRequest, build_reply};
use crate::packet::ndp::{
    Advertisement, FramedSolicitation, NeighborSolicitation, solicited_node_multicast,
};
use crate::packet::{DecodeError, MacAddr};
use crate::socket::{FrameIo, Icmpv6Io};

/// What the responder asks of whoever decides what this node answers for.
///
/// Called for every request, from every receive loop: implementations
/// answer from memory, without blocking for long.
pub trait Lookup: Send + Sync {
    /// Our MAC for `ip` on interface `ifindex`, when this node answers for
    /// `ip` there.
    fn mac_for(&self, ip: IpAddr, ifindex: u32) -> Option<MacAddr>;

    /// The name of interface `ifindex`, when this node answers on it.
    fn interface_name(&self, ifindex: u32) -> Option<String>;
}

impl<T: Lookup + ?Sized> Lookup for Arc<T> {
    fn mac_for(&self, ip: IpAddr, ifindex: u32) -> Option<MacAddr> {
        (**self).mac_for(ip, ifindex)
    }

    fn interface_name(&self, ifindex: u32) -> Option<String> {
        (**self).interface_name(ifindex)
    }
}

/// Why a received request was dropped without an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ignored {
    /// Not an IP we own on this interface, or not a question (a
    /// gratuitous ARP from another host).
    NotOurs,
    /// A neighbor solicitation whose hop limit is not 255: it was routed,
    /// so it is forged or misdelivered (RFC 4861 §7.1.1).
    HopLimit(Option<u8>),
    /// A solicitation sent to an address that is neither the target nor
    /// its solicited-node group.
    WrongDestination(Ipv6Addr),
    /// A request for an IP we own whose sender's hardware address is
    /// multicast, broadcast or zero: no station has it, so a reply would
    /// flood a group or go nowhere.
    BadSenderMac(MacAddr),
    /// A request for an IP we own whose sender's IP address is multicast
    /// or broadcast.
    BadSenderIp(IpAddr),
}

/// Whether `mac` can be a station's own address: not a group (multicast
/// or broadcast) and not all zeros.
fn is_station(mac: MacAddr) -> bool {
    mac.is_unicast() && !mac.is_zero()
}

/// The reply to an ARP request received on `ifindex`, if this node
/// answers it.
///
/// # Errors
///
/// Why it is not answered.
pub fn answer_arp(
    lookup: &impl Lookup,
    request: &ArpRequest,
    ifindex: u32,
) -> Result<Vec<u8>, Ignored> {
    // Another host's announcement is not a question.
    if request.is_gratuitous() {
        return Err(Ignored::NotOurs);
    }
    let mac = lookup
        .mac_for(IpAddr::V4(request.target_ip), ifindex)
        .ok_or(Ignored::NotOurs)?;
    for sender_mac in [request.eth_source, request.sender_mac] {
        if !is_station(sender_mac) {
            return Err(Ignored::BadSenderMac(sender_mac));
        }
    }
    let sender_ip = request.sender_ip;
    if sender_ip.is_multicast() || sender_ip == Ipv4Addr::BROADCAST {
        return Err(Ignored::BadSenderIp(IpAddr::V4(sender_ip)));
    }
    Ok(build_reply(request, mac))
}

/// The advertisement answering a neighbor solicitation received on
/// `ifindex`, with what the socket showed of the packet around it
/// (`received`).
///
/// Multicast solicitations (address resolution) and unicast ones
/// (reachability checks, NUD) both get a solicited advertisement back
/// to the asker; duplicate address detection for an owned IP gets an
/// unsolicited one to all nodes, which defends the address.
///
/// # Errors
///
/// Why it is not answered.
pub fn answer_ns(
    lookup: &impl Lookup,
    solicitation: &NeighborSolicitation,
    ifindex: u32,
    received: Received,
) -> Result<Advertisement, Ignored> {
    if received.hop_limit != Some(255) {
        return Err(Ignored::HopLimit(received.hop_limit));
    }
    let target = solicitation.target;
    if let Some(destination) = received.destination
        && destination != target
        && destination != solicited_node_multicast(target)
    {
        return Err(Ignored::WrongDestination(destination));
    }
    let mac = lookup
        .mac_for(IpAddr::V6(target), ifindex)
        .ok_or(Ignored::NotOurs)?;
    for sender_mac in [solicitation.source_link_addr, received.eth_source]
        .into_iter()
        .flatten()
    {
        if !is_station(sender_mac) {
            return Err(Ignored::BadSenderMac(sender_mac));
        }
    }
    if solicitation.source.is_multicast() {
        return Err(Ignored::BadSenderIp(IpAddr::V6(solicitation.source)));
    }
    Ok(solicitation.reply(mac))
}

/// What the socket tells about a received neighbor solicitation besides
/// its ICMPv6 message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Received {
    /// The IPv6 destination address.
    pub destination: Option<Ipv6Addr>,
    /// The IPv6 hop limit.
    pub hop_limit: Option<u8>,
    /// The Ethernet source address.
    pub eth_source: Option<MacAddr>,
}

/// What every receive loop shares: where answers come from, the reply
/// limits and the counters.
#[derive(Debug)]
pub struct Responder<L> {
    lookup: L,
    limits: Mutex<ReplyLimits>,
    metrics: AnnouncerMetrics,
}

impl<L: Lookup> Responder<L> {
    /// A responder answering what `lookup` says, within `limits`.
    pub fn new(lookup: L, limits: &ReplyLimitConfig, metrics: AnnouncerMetrics) -> Self {
        Self {
            lookup,
            limits: Mutex::new(ReplyLimits::new(limits)),
            metrics,
        }
    }

    /// Whether a reply to `sender` may go out on `ifindex` now.
    fn admit(&self, ifindex: u32, sender: Sender) -> Result<(), Limit> {
        self.limits
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .admit(ifindex, sender, Instant::now())
    }
}

/// Pause after a receive error, so a socket in a persistent error state
/// does not spin the loop.
const ERROR_BACKOFF: Duration = Duration::from_millis(10);

/// What a receive loop says in its logs: that receiving failed, what a
/// malformed packet and a reply are called.
struct Protocol {
    receiving: &'static str,
    packet: &'static str,
    reply: &'static str,
}

const ARP: Protocol = Protocol {
    receiving: "receiving ARP failed",
    packet: "ARP frame",
    reply: "an ARP reply",
};
const NUD: Protocol = Protocol {
    receiving: "receiving a unicast solicitation failed",
    packet: "unicast solicitation",
    reply: "a neighbor advertisement",
};
const NDP: Protocol = Protocol {
    receiving: "receiving ICMPv6 failed",
    packet: "neighbor solicitation",
    reply: "a neighbor advertisement",
};

/// A well-formed request: the IP it asks about, who asked, and the reply
/// or why there is none.
struct Answer<R> {
    target: IpAddr,
    sender: Sender,
    reply: Result<R, Ignored>,
}

/// The next packet's metadata from `recv`, or `None` after logging the
/// error with `log` and pausing ([`ERROR_BACKOFF`]).
async fn receive<T>(
    recv: impl Future<Output = io::Result<T>>,
    log: impl FnOnce(io::Error),
) -> Option<T> {
    match recv.await {
        Ok(received) => Some(received),
        Err(error) => {
            log(error);
            tokio::time::sleep(ERROR_BACKOFF).await;
            None
        }
    }
}

/// What every receive loop does with a packet that arrived on interface
/// `ifindex` (of `labels`): count it, drop it counted when it is
/// malformed, and send the reply, if any and within the limits, through
/// `send`. `decoded` is `Ok(None)` for a packet left to another loop.
fn respond<L: Lookup, R>(
    protocol: &Protocol,
    (ifindex, labels): (u32, &PacketLabels),
    decoded: Result<Option<Answer<R>>, DecodeError>,
    responder: &Responder<L>,
    send: impl FnOnce(&R) -> io::Result<()>,
) {
    let metrics = &responder.metrics;
    let interface = &labels.interface;
    metrics.frames_received.get_or_create(labels).inc();
    let answer = match decoded {
        Ok(Some(answer)) => answer,
        Ok(None) => return,
        Err(error) => {
            metrics.malformed_received.get_or_create(labels).inc();
            tracing::trace!(%interface, %error, "dropped a malformed {}", protocol.packet);
            return;
        }
    };
    let requests = match labels.family {
        AddressFamily::Ipv4 => &metrics.arp_requests_received,
        AddressFamily::Ipv6 => &metrics.ndp_solicitations_received,
    };
    requests.get_or_create(labels).inc();
    let (ip, sender) = (answer.target, answer.sender);
    let suppressed = |reason: Suppression| {
        metrics.suppressed(labels.family, interface, reason);
        tracing::trace!(%interface, %ip, sender = %sender.ip, reason = reason.as_str(), "suppressed {}", protocol.reply);
    };
    match answer.reply {
        Ok(reply) => match responder.admit(ifindex, sender) {
            Ok(()) => {
                if let Err(error) = send(&reply) {
                    metrics.send_errors.get_or_create(labels).inc();
                    tracing::warn!(%interface, %error, %ip, "sending {} failed", protocol.reply);
                } else {
                    metrics.replies_sent.get_or_create(labels).inc();
                }
            }
            Err(Limit::Interface) => suppressed(Suppression::RateInterface),
            Err(Limit::Sender) => suppressed(Suppression::RateSender),
        },
        Err(Ignored::HopLimit(hops)) => {
            metrics.malformed_received.get_or_create(labels).inc();
            tracing::trace!(%interface, ?hops, "dropped a routed neighbor solicitation");
        }
        Err(Ignored::BadSenderMac(_) | Ignored::BadSenderIp(_)) => {
            suppressed(Suppression::BadSender);
        }
        Err(Ignored::NotOurs | Ignored::WrongDestination(_)) => {}
    }
}

/// Answers what arrives on one interface's packet socket `io`, forever:
/// `answer` decodes a frame and answers the request in it, `send` sends
/// the reply.
async fn serve_link<F: FrameIo, L: Lookup, R>(
    io: &F,
    protocol: &Protocol,
    (ifindex, labels): (u32, &PacketLabels),
    responder: &Responder<L>,
    answer: impl Fn(&[u8]) -> Result<Answer<R>, DecodeError>,
    send: impl Fn(&R) -> io::Result<()>,
) {
    let interface = &labels.interface;
    let mut buf = vec![0_u8; 2048];
    loop {
        let received = receive(io.recv(&mut buf), |error| {
            tracing::debug!(%interface, %error, "{}", protocol.receiving);
        });
        let Some(len) = received.await else { continue };
        let decoded = answer(&buf[..len]).map(Some);
        respond(protocol, (ifindex, labels), decoded, responder, &send);
    }
}

/// Answers the ARP requests arriving on one interface's socket, forever.
pub async fn serve_arp<F: FrameIo, L: Lookup>(
    io: Arc<F>,
    ifindex: u32,
    interface: String,
    responder: Arc<Responder<L>>,
) {
    let labels = PacketLabels::new(AddressFamily::Ipv4, &interface);
    let answer = |frame: &[u8]| {
        ArpRequest::decode(frame).map(|request| Answer {
            target: IpAddr::V4(request.target_ip),
            sender: Sender {
                mac: Some(request.sender_mac),
                ip: IpAddr::V4(request.sender_ip),
            },
            reply: answer_arp(&responder.lookup, &request, ifindex),
        })
    };
    let send = |reply: &Vec<u8>| io.send(reply);
    serve_link(&*io, &ARP, (ifindex, &labels), &responder, answer, send).await;
}

/// Answers the unicast neighbor solicitations (reachability checks)
/// arriving on one interface's packet socket, forever; the advertisements
/// go out through the ICMPv6 socket `icmp`.
pub async fn serve_nud<F: FrameIo, I: Icmpv6Io, L: Lookup>(
    frames: Arc<F>,
    icmp: Arc<I>,
    ifindex: u32,
    interface: String,
    responder: Arc<Responder<L>>,
) {
    let labels = PacketLabels::new(AddressFamily::Ipv6, &interface);
    let answer = |frame: &[u8]| {
        FramedSolicitation::decode(frame).map(|framed| {
            let ns = framed.solicitation;
            let received = Received {
                destination: Some(framed.destination),
                hop_limit: Some(framed.hop_limit),
                eth_source: Some(framed.eth_source),
            };
            Answer {
                target: IpAddr::V6(ns.target),
                sender: Sender {
                    mac: ns.source_link_addr.or(Some(framed.eth_source)),
                    ip: IpAddr::V6(ns.source),
                },
                reply: answer_ns(&responder.lookup, &ns, ifindex, received),
            }
        })
    };
    let send = |advertisement: &Advertisement| {
        icmp.send(&advertisement.message, advertisement.destination, ifindex)
    };
    serve_link(&*frames, &NUD, (ifindex, &labels), &responder, answer, send).await;
}

/// Answers the neighbor solicitations arriving on the ICMPv6 socket, forever.
///
/// Solicitations sent to a unicast address are left to [`serve_nud`],
/// which sees every one of them, also when the kernel would not deliver
/// them here; answering them here too would answer twice.
pub async fn serve_ndp<I: Icmpv6Io, L: Lookup>(io: Arc<I>, responder: Arc<Responder<L>>) {
    let mut buf = vec![0_u8; 2048];
    loop {
        let received = receive(io.recv(&mut buf), |error| {
            tracing::debug!(%error, "{}", NDP.receiving);
        });
        let Some(meta) = received.await else { continue };
        let Some(ifindex) = meta.interface else {
            continue;
        };
        let interface = responder
            .lookup
            .interface_name(ifindex)
            .unwrap_or_else(|| ifindex.to_string());
        let labels = PacketLabels::new(AddressFamily::Ipv6, &interface);
        let decoded = if meta.destination.is_some_and(|to| !to.is_multicast()) {
            Ok(None)
        } else {
            let message = buf.get(..meta.len).unwrap_or(&buf);
            NeighborSolicitation::decode(message, meta.source).map(|ns| {
                let received = Received {
                    destination: meta.destination,
                    hop_limit: meta.hop_limit,
                    eth_source: None,
                };
                Some(Answer {
                    target: IpAddr::V6(ns.target),
                    sender: Sender {
                        mac: ns.source_link_addr,
                        ip: IpAddr::V6(ns.source),
                    },
                    reply: answer_ns(&responder.lookup, &ns, ifindex, received),
                })
            })
        };
        respond(
            &NDP,
            (ifindex, &labels),
            decoded,
            &responder,
            |advertisement| io.send(&advertisement.message, advertisement.destination, ifindex),
        );
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, VecDeque};
    use std::io;
    use std::net::Ipv4Addr;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;
    use tokio::sync::Notify;

    use super::*;
    use crate::packet::arp::{ARP_LEN, ETHERNET_HEADER_LEN, build_gratuitous_request};
    use crate::packet::ndp::ALL_NODES;
    use crate::socket::Icmpv6Meta;

    const OUR_MAC: MacAddr = MacAddr(0x02, 0, 0, 0, 0, 0x02);
    const ASKER_MAC: MacAddr = MacAddr(0x02, 0, 0, 0, 0, 0x01);
    const VIP4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 200);
    const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0xc8);
    const ASKER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);

    /// Answers for VIP4 and VIP6 on eth0 (index 2) only; eth1 (index 3)
    /// is announced on too.
    #[derive(Debug, Default)]
    struct Owned {
        macs: BTreeMap<(IpAddr, u32), MacAddr>,
        names: BTreeMap<u32, String>,
    }

    impl Lookup for Owned {
        fn mac_for(&self, ip: IpAddr, ifindex: u32) -> Option<MacAddr> {
            self.macs.get(&(ip, ifindex)).copied()
        }

        fn interface_name(&self, ifindex: u32) -> Option<String> {
            self.names.get(&ifindex).cloned()
        }
    }

    fn owned() -> Owned {
        Owned {
            macs: BTreeMap::from([
                ((IpAddr::V4(VIP4), 2), OUR_MAC),
                ((IpAddr::V6(VIP6), 2), OUR_MAC),
            ]),
            names: BTreeMap::from([(2, "eth0".to_owned()), (3, "eth1".to_owned())]),
        }
    }

    /// A responder for [`owned`] with the default limits, counting into
    /// `metrics`.
    fn responder(metrics: &AnnouncerMetrics) -> Arc<Responder<Owned>> {
        responder_with(&ReplyLimitConfig::default(), metrics)
    }

    fn responder_with(
        limits: &ReplyLimitConfig,
        metrics: &AnnouncerMetrics,
    ) -> Arc<Responder<Owned>> {
        Arc::new(Responder::new(owned(), limits, metrics.clone()))
    }

    /// A sent packet, with its IPv6 destination and interface for ICMPv6.
    type Sent = (Vec<u8>, Option<(Ipv6Addr, u32)>);

    /// In-memory packets: a queue to receive from (packets or receive
    /// errors), a list of what was sent, and whether sending fails.
    struct Memory<In> {
        incoming: Mutex<VecDeque<io::Result<In>>>,
        arrived: Notify,
        sent: Mutex<Vec<Sent>>,
        sent_signal: Notify,
        refuse_sends: AtomicBool,
    }

    impl<In> Default for Memory<In> {
        fn default() -> Self {
            Self {
                incoming: Mutex::default(),
                arrived: Notify::new(),
                sent: Mutex::default(),
                sent_signal: Notify::new(),
                refuse_sends: AtomicBool::new(false),
            }
        }
    }

    impl<In> Memory<In> {
        fn push(&self, item: In) {
            self.incoming.lock().unwrap().push_back(Ok(item));
            self.arrived.notify_one();
        }

        /// Makes the next receive fail, as a socket in an error state does.
        fn push_error(&self) {
            let error = io::Error::from_raw_os_error(libc::ENETDOWN);
            self.incoming.lock().unwrap().push_back(Err(error));
            self.arrived.notify_one();
        }

        /// Records `packet` as sent, or refuses it like a full send queue.
        fn record(&self, packet: Sent) -> io::Result<()> {
            if self.refuse_sends.load(Ordering::Relaxed) {
                return Err(io::Error::from_raw_os_error(libc::ENOBUFS));
            }
            self.sent.lock().unwrap().push(packet);
            self.sent_signal.notify_one();
            Ok(())
        }

        async fn next(&self) -> io::Result<In> {
            loop {
                let next = self.incoming.lock().unwrap().pop_front();
                if let Some(item) = next {
                    return item;
                }
                self.arrived.notified().await;
            }
        }

        fn sent(&self) -> Vec<Sent> {
            self.sent.lock().unwrap().clone()
        }
    }

    impl FrameIo for Memory<Vec<u8>> {
        async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
            let frame = self.next().await?;
            buf[..frame.len()].copy_from_slice(&frame);
            Ok(frame.len())
        }

        fn send(&self, frame: &[u8]) -> io::Result<()> {
            self.record((frame.to_vec(), None))
        }
    }

    impl Icmpv6Io for Memory<(Vec<u8>, Icmpv6Meta)> {
        async fn recv(&self, buf: &mut [u8]) -> io::Result<Icmpv6Meta> {
            let (message, meta) = self.next().await?;
            buf[..message.len()].copy_from_slice(&message);
            Ok(Icmpv6Meta {
                len: message.len(),
                ..meta
            })
        }

        fn send(&self, message: &[u8], destination: Ipv6Addr, ifindex: u32) -> io::Result<()> {
            self.record((message.to_vec(), Some((destination, ifindex))))
        }
    }

    fn request_for(target: Ipv4Addr) -> Vec<u8> {
        ArpRequest {
            eth_destination: MacAddr::broadcast(),
            eth_source: ASKER_MAC,
            sender_mac: ASKER_MAC,
            sender_ip: Ipv4Addr::new(198, 18, 0, 1),
            target_mac: MacAddr::zero(),
            target_ip: target,
        }
        .encode()
    }

    /// Feeds `frames` to a responder on `ifindex` and returns what it sent
    /// once every frame has been processed, with the metrics.
    async fn run_arp(
        ifindex: u32,
        name: &str,
        frames: Vec<Vec<u8>>,
    ) -> (Vec<Vec<u8>>, AnnouncerMetrics) {
        run_arp_within(&ReplyLimitConfig::default(), ifindex, name, frames).await
    }

    /// [`run_arp`] with other reply limits.
    async fn run_arp_within(
        limits: &ReplyLimitConfig,
        ifindex: u32,
        name: &str,
        frames: Vec<Vec<u8>>,
    ) -> (Vec<Vec<u8>>, AnnouncerMetrics) {
        let io = Arc::new(Memory::<Vec<u8>>::default());
        let metrics = AnnouncerMetrics::default();
        let count = frames.len() as u64;
        for frame in frames {
            io.push(frame);
        }
        let task = tokio::spawn(serve_arp(
            io.clone(),
            ifindex,
            name.to_owned(),
            responder_with(limits, &metrics),
        ));
        let labels = PacketLabels::new(AddressFamily::Ipv4, name);
        while metrics.frames_received.get_or_create(&labels).get() < count {
            tokio::task::yield_now().await;
        }
        task.abort();
        let sent = io.sent().into_iter().map(|(frame, _)| frame).collect();
        (sent, metrics)
    }

    #[tokio::test]
    async fn arp_request_for_an_owned_ip_gets_exactly_one_reply_with_our_mac() {
        let (sent, metrics) = run_arp(2, "eth0", vec![request_for(VIP4)]).await;
        assert_eq!(sent.len(), 1);
        let reply = &sent[0];
        // Unicast to the asker, from us, operation reply, sha = our MAC, spa = VIP.
        assert_eq!(&reply[0..6], &ASKER_MAC.octets());
        assert_eq!(&reply[6..12], &OUR_MAC.octets());
        assert_eq!(&reply[20..22], &[0, 2]);
        let arp = &reply[ETHERNET_HEADER_LEN..ETHERNET_HEADER_LEN + ARP_LEN];
        assert_eq!(&arp[8..14], &OUR_MAC.octets());
        assert_eq!(&arp[14..18], &VIP4.octets());
        assert_eq!(
            AnnouncerMetrics::get(&metrics.replies_sent, AddressFamily::Ipv4, "eth0"),
            1
        );
    }

    #[tokio::test]
    async fn arp_request_for_another_ip_or_on_another_interface_is_not_answered() {
        let (sent, metrics) = run_arp(
            2,
            "eth0",
            vec![
                request_for(Ipv4Addr::new(198, 18, 0, 201)),
                build_gratuitous_request(VIP4, ASKER_MAC),
            ],
        )
        .await;
        assert!(sent.is_empty());
        assert_eq!(
            AnnouncerMetrics::get(&metrics.arp_requests_received, AddressFamily::Ipv4, "eth0"),
            2
        );
        // Owned, but not selected on eth1.
        let (sent, _) = run_arp(3, "eth1", vec![request_for(VIP4)]).await;
        assert!(sent.is_empty());
        // An interface the lookup does not know.
        let (sent, _) = run_arp(9, "eth9", vec![request_for(VIP4)]).await;
        assert!(sent.is_empty());
    }

    #[tokio::test]
    async fn malformed_frames_are_counted_and_ignored() {
        let mut reply = request_for(VIP4);
        reply[21] = 2;
        let (sent, metrics) = run_arp(
            2,
            "eth0",
            vec![vec![], vec![0xff; 20], reply, request_for(VIP4)],
        )
        .await;
        // Only the good request at the end is answered.
        assert_eq!(sent.len(), 1);
        assert_eq!(
            AnnouncerMetrics::get(&metrics.malformed_received, AddressFamily::Ipv4, "eth0"),
            3
        );
    }

    /// Waits until `done` holds; fails the test after a few seconds.
    async fn until(done: impl Fn() -> bool) {
        let wait = async {
            while !done() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), wait)
            .await
            .unwrap();
    }

    type Frames = Arc<Memory<Vec<u8>>>;
    type Icmp = Arc<Memory<(Vec<u8>, Icmpv6Meta)>>;

    /// Runs the ARP loop on eth0 over `frames` and the ICMPv6 loop over
    /// `icmp`, each holding one request for us, until `counter` is 1 in both
    /// families on eth0.
    async fn run_until(
        frames: &Frames,
        icmp: &Icmp,
        counter: fn(&AnnouncerMetrics) -> &Family<PacketLabels, Counter>,
    ) -> AnnouncerMetrics {
        let metrics = AnnouncerMetrics::default();
        frames.push(request_for(VIP4));
        let group = solicited_node_multicast(VIP6);
        icmp.push((solicitation(ASKER6, true), meta(ASKER6, group, 2, 255)));
        let arp = serve_arp(frames.clone(), 2, "eth0".to_owned(), responder(&metrics));
        let arp = tokio::spawn(arp);
        let ndp = tokio::spawn(serve_ndp(icmp.clone(), responder(&metrics)));
        until(|| {
            [AddressFamily::Ipv4, AddressFamily::Ipv6]
                .iter()
                .all(|family| AnnouncerMetrics::get(counter(&metrics), *family, "eth0") == 1)
        })
        .await;
        arp.abort();
        ndp.abort();
        metrics
    }

    #[tokio::test]
    async fn a_receive_error_pauses_the_loop_and_the_next_request_is_answered() {
        let (frames, icmp) = (Frames::default(), Icmp::default());
        frames.push_error();
        icmp.push_error();
        let metrics = run_until(&frames, &icmp, |metrics| &metrics.replies_sent).await;
        assert_eq!(frames.sent().len(), 1);
        assert_eq!(icmp.sent().len(), 1);
        // A failed receive is not a frame.
        for family in [AddressFamily::Ipv4, AddressFamily::Ipv6] {
            assert_eq!(
                AnnouncerMetrics::get(&metrics.frames_received, family, "eth0"),
                1
            );
        }
    }

    #[tokio::test]
    async fn a_refused_reply_is_counted_as_a_send_error_not_as_sent() {
        let (frames, icmp) = (Frames::default(), Icmp::default());
        frames.refuse_sends.store(true, Ordering::Relaxed);
        icmp.refuse_sends.store(true, Ordering::Relaxed);
        let metrics = run_until(&frames, &icmp, |metrics| &metrics.send_errors).await;
        assert!(frames.sent().is_empty());
        assert!(icmp.sent().is_empty());
        for family in [AddressFamily::Ipv4, AddressFamily::Ipv6] {
            assert_eq!(
                AnnouncerMetrics::get(&metrics.replies_sent, family, "eth0"),
                0
            );
        }
    }

    fn solicitation(source: Ipv6Addr, with_link_addr: bool) -> Vec<u8> {
        NeighborSolicitation {
            source,
            target: VIP6,
            source_link_addr: with_link_addr.then_some(ASKER_MAC),
        }
        .encode()
    }

    fn meta(source: Ipv6Addr, destination: Ipv6Addr, ifindex: u32, hops: u8) -> Icmpv6Meta {
        Icmpv6Meta {
            len: 0,
            source,
            destination: Some(destination),
            interface: Some(ifindex),
            hop_limit: Some(hops),
        }
    }

    async fn run_ndp(messages: Vec<(Vec<u8>, Icmpv6Meta)>) -> (Vec<Sent>, AnnouncerMetrics) {
        let io = Arc::new(Memory::<(Vec<u8>, Icmpv6Meta)>::default());
        let metrics = AnnouncerMetrics::default();
        let count = messages.len() as u64;
        for message in messages {
            io.push(message);
        }
        let task = tokio::spawn(serve_ndp(io.clone(), responder(&metrics)));
        let total = || {
            ["eth0", "eth1", "9"]
                .iter()
                .map(|name| {
                    AnnouncerMetrics::get(&metrics.frames_received, AddressFamily::Ipv6, name)
                })
                .sum::<u64>()
        };
        while total() < count {
            tokio::task::yield_now().await;
        }
        task.abort();
        (io.sent(), metrics)
    }

    #[tokio::test]
    async fn multicast_solicitation_for_an_owned_ip_gets_a_solicited_advertisement() {
        let group = solicited_node_multicast(VIP6);
        let (sent, _) = run_ndp(vec![(
            solicitation(ASKER6, true),
            meta(ASKER6, group, 2, 255),
        )])
        .await;
        assert_eq!(sent.len(), 1);
        let (message, to) = &sent[0];
        assert_eq!(*to, Some((ASKER6, 2)));
        assert_eq!(message[0], 136);
        // Solicited and Override.
        assert_eq!(message[4], 0x60);
        assert_eq!(&message[8..24], &VIP6.octets());
        assert_eq!(&message[26..32], &OUR_MAC.octets());
    }

    #[tokio::test]
    async fn unicast_reachability_probe_is_answered_from_the_packet_socket() {
        let mut message = solicitation(ASKER6, false);
        crate::packet::ndp::fill_checksum(&mut message, ASKER6, VIP6).unwrap();
        let frame = |hop_limit: u8, destination: Ipv6Addr| {
            let mut frame = OUR_MAC.octets().to_vec();
            frame.extend_from_slice(&ASKER_MAC.octets());
            frame.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
            frame.extend_from_slice(&u16::try_from(message.len()).unwrap().to_be_bytes());
            frame.extend_from_slice(&[58, hop_limit]);
            frame.extend_from_slice(&ASKER6.octets());
            frame.extend_from_slice(&destination.octets());
            frame.extend_from_slice(&message);
            frame
        };
        let frames = Arc::new(Memory::<Vec<u8>>::default());
        let icmp = Arc::new(Memory::<(Vec<u8>, Icmpv6Meta)>::default());
        let metrics = AnnouncerMetrics::default();
        // Answered; then a routed one (hop limit 64), one sent to another
        // address (whose checksum no longer matches), and garbage: none
        // answered, all three counted as malformed.
        frames.push(frame(255, VIP6));
        frames.push(frame(64, VIP6));
        frames.push(frame(255, ASKER6));
        frames.push(vec![0; 30]);
        let task = tokio::spawn(serve_nud(
            frames.clone(),
            icmp.clone(),
            2,
            "eth0".to_owned(),
            responder(&metrics),
        ));
        while AnnouncerMetrics::get(&metrics.frames_received, AddressFamily::Ipv6, "eth0") < 4 {
            tokio::task::yield_now().await;
        }
        task.abort();
        let sent = icmp.sent();
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert_eq!(sent[0].1, Some((ASKER6, 2)));
        // Solicited and Override, for the VIP, at our MAC.
        assert_eq!(sent[0].0[4], 0x60);
        assert_eq!(&sent[0].0[8..24], &VIP6.octets());
        assert_eq!(&sent[0].0[26..32], &OUR_MAC.octets());
        assert_eq!(
            AnnouncerMetrics::get(&metrics.malformed_received, AddressFamily::Ipv6, "eth0"),
            3
        );
    }

    #[tokio::test]
    async fn the_icmpv6_socket_leaves_unicast_solicitations_to_the_packet_socket() {
        let (sent, _) = run_ndp(vec![(
            solicitation(ASKER6, false),
            meta(ASKER6, VIP6, 2, 255),
        )])
        .await;
        assert!(sent.is_empty());
    }

    #[tokio::test]
    async fn an_icmpv6_message_without_its_interface_is_neither_counted_nor_answered() {
        let group = solicited_node_multicast(VIP6);
        let unknown = Icmpv6Meta {
            interface: None,
            ..meta(ASKER6, group, 2, 255)
        };
        let io = Arc::new(Memory::<(Vec<u8>, Icmpv6Meta)>::default());
        let metrics = AnnouncerMetrics::default();
        io.push((solicitation(ASKER6, true), unknown));
        io.push((solicitation(ASKER6, true), meta(ASKER6, group, 2, 255)));
        let task = tokio::spawn(serve_ndp(io.clone(), responder(&metrics)));
        // The second message is answered, so the first has been handled.
        until(|| io.sent().len() == 1).await;
        task.abort();
        assert_eq!(
            AnnouncerMetrics::get(&metrics.frames_received, AddressFamily::Ipv6, "eth0"),
            1
        );
    }

    #[tokio::test]
    async fn duplicate_address_detection_is_defended_to_all_nodes() {
        let group = solicited_node_multicast(VIP6);
        let (sent, _) = run_ndp(vec![(
            solicitation(Ipv6Addr::UNSPECIFIED, false),
            meta(Ipv6Addr::UNSPECIFIED, group, 2, 255),
        )])
        .await;
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].1, Some((ALL_NODES, 2)));
        // Override only: not solicited.
        assert_eq!(sent[0].0[4], 0x20);
    }

    #[tokio::test]
    async fn solicitations_not_ours_routed_or_malformed_are_not_answered() {
        let group = solicited_node_multicast(VIP6);
        let other = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0xc9);
        let mut for_other = solicitation(ASKER6, true);
        for_other[8..24].copy_from_slice(&other.octets());
        let mut advertisement = solicitation(ASKER6, true);
        advertisement[0] = 136;
        let (sent, metrics) = run_ndp(vec![
            // Routed: hop limit 64.
            (solicitation(ASKER6, true), meta(ASKER6, group, 2, 64)),
            // Another IP.
            (
                for_other,
                meta(ASKER6, solicited_node_multicast(other), 2, 255),
            ),
            // Owned, but not on eth1.
            (solicitation(ASKER6, true), meta(ASKER6, group, 3, 255)),
            // Sent to some unrelated address.
            (solicitation(ASKER6, true), meta(ASKER6, ASKER6, 2, 255)),
            // Malformed.
            (vec![135, 0, 0, 0], meta(ASKER6, group, 2, 255)),
            (advertisement, meta(ASKER6, group, 2, 255)),
        ])
        .await;
        assert!(sent.is_empty(), "{sent:?}");
        assert_eq!(
            AnnouncerMetrics::get(&metrics.malformed_received, AddressFamily::Ipv6, "eth0"),
            3
        );
    }

    /// A request for `target` from `sender` (hardware and IP), with
    /// `eth_source` as the frame's source.
    fn request_from(eth_source: MacAddr, sender_mac: MacAddr, sender_ip: Ipv4Addr) -> ArpRequest {
        ArpRequest {
            eth_destination: MacAddr::broadcast(),
            eth_source,
            sender_mac,
            sender_ip,
            target_mac: MacAddr::zero(),
            target_ip: VIP4,
        }
    }

    #[test]
    fn arp_from_a_group_or_zero_address_is_not_answered() {
        let asker_ip = Ipv4Addr::new(198, 18, 0, 1);
        let multicast = MacAddr::new(0x01, 0x00, 0x5e, 0, 0, 1);
        let cases = [
            (
                "multicast Ethernet source",
                request_from(multicast, ASKER_MAC, asker_ip),
                Ignored::BadSenderMac(multicast),
            ),
            (
                "broadcast sender hardware address",
                request_from(ASKER_MAC, MacAddr::broadcast(), asker_ip),
                Ignored::BadSenderMac(MacAddr::broadcast()),
            ),
            (
                "zero sender hardware address",
                request_from(ASKER_MAC, MacAddr::zero(), asker_ip),
                Ignored::BadSenderMac(MacAddr::zero()),
            ),
            (
                "zero Ethernet source",
                request_from(MacAddr::zero(), ASKER_MAC, asker_ip),
                Ignored::BadSenderMac(MacAddr::zero()),
            ),
            (
                "multicast sender IP",
                request_from(ASKER_MAC, ASKER_MAC, Ipv4Addr::new(224, 0, 0, 1)),
                Ignored::BadSenderIp(IpAddr::from([224, 0, 0, 1])),
            ),
            (
                "broadcast sender IP",
                request_from(ASKER_MAC, ASKER_MAC, Ipv4Addr::BROADCAST),
                Ignored::BadSenderIp(IpAddr::V4(Ipv4Addr::BROADCAST)),
            ),
        ];
        for (name, request, ignored) in cases {
            assert_eq!(answer_arp(&owned(), &request, 2), Err(ignored), "{name}");
            // For an IP we do not answer for, it is simply not ours.
            let elsewhere = answer_arp(&owned(), &request, 3);
            assert_eq!(elsewhere, Err(Ignored::NotOurs), "{name}");
        }
        // An RFC 5227 probe (sender IP 0.0.0.0) is answered, as Linux does.
        let probe = request_from(ASKER_MAC, ASKER_MAC, Ipv4Addr::UNSPECIFIED);
        assert!(answer_arp(&owned(), &probe, 2).is_ok());
    }

    #[test]
    fn solicitations_from_a_group_or_zero_address_are_not_answered() {
        let multicast = MacAddr::new(0x33, 0x33, 0, 0, 0, 1);
        let solicitation = |source: Ipv6Addr, link: Option<MacAddr>| NeighborSolicitation {
            source,
            target: VIP6,
            source_link_addr: link,
        };
        let received = |eth_source: Option<MacAddr>| Received {
            destination: Some(solicited_node_multicast(VIP6)),
            hop_limit: Some(255),
            eth_source,
        };
        let cases = [
            (
                "multicast source link-layer address",
                solicitation(ASKER6, Some(multicast)),
                received(None),
                Ignored::BadSenderMac(multicast),
            ),
            (
                "zero source link-layer address",
                solicitation(ASKER6, Some(MacAddr::zero())),
                received(Some(ASKER_MAC)),
                Ignored::BadSenderMac(MacAddr::zero()),
            ),
            (
                "broadcast Ethernet source",
                solicitation(ASKER6, None),
                received(Some(MacAddr::broadcast())),
                Ignored::BadSenderMac(MacAddr::broadcast()),
            ),
            (
                "multicast source address",
                solicitation(ALL_NODES, Some(ASKER_MAC)),
                received(Some(ASKER_MAC)),
                Ignored::BadSenderIp(IpAddr::V6(ALL_NODES)),
            ),
        ];
        for (name, ns, received, ignored) in cases {
            assert_eq!(
                answer_ns(&owned(), &ns, 2, received),
                Err(ignored),
                "{name}"
            );
        }
        // Duplicate address detection has neither address and is answered.
        let dad = solicitation(Ipv6Addr::UNSPECIFIED, None);
        assert!(answer_ns(&owned(), &dad, 2, received(None)).is_ok());
    }

    fn limits(per_interface: (u32, u32), per_sender: (u32, u32)) -> ReplyLimitConfig {
        let rate = |(per_second, burst): (u32, u32)| {
            limits::Rate::new(
                std::num::NonZeroU32::new(per_second).unwrap(),
                std::num::NonZeroU32::new(burst).unwrap(),
            )
        };
        ReplyLimitConfig {
            per_interface: rate(per_interface),
            per_sender: rate(per_sender),
            ..ReplyLimitConfig::default()
        }
    }

    #[tokio::test]
    async fn replies_over_a_limit_or_to_a_bad_sender_are_counted_as_suppressed() {
        let asker_ip = Ipv4Addr::new(198, 18, 0, 1);
        let other = MacAddr::new(0x02, 0, 0, 0, 0, 0x09);
        let frames = vec![
            request_from(ASKER_MAC, MacAddr::broadcast(), asker_ip).encode(),
            // The asker: two answered, the third over its limit.
            request_for(VIP4),
            request_for(VIP4),
            request_for(VIP4),
            // Another host: the interface's third reply, then over the
            // interface's limit.
            request_from(other, other, Ipv4Addr::new(198, 18, 0, 9)).encode(),
            request_from(other, other, Ipv4Addr::new(198, 18, 0, 9)).encode(),
            // Not ours: no reply would have gone out, nothing suppressed.
            request_for(Ipv4Addr::new(198, 18, 0, 201)),
        ];
        let limits = limits((1, 3), (1, 2));
        let (sent, metrics) = run_arp_within(&limits, 2, "eth0", frames).await;
        assert_eq!(sent.len(), 3);
        let suppressed = |reason| metrics.suppressed_count(AddressFamily::Ipv4, "eth0", reason);
        assert_eq!(suppressed(Suppression::BadSender), 1);
        assert_eq!(suppressed(Suppression::RateSender), 1);
        assert_eq!(suppressed(Suppression::RateInterface), 1);
        assert_eq!(
            AnnouncerMetrics::get(&metrics.replies_sent, AddressFamily::Ipv4, "eth0"),
            3
        );
    }

    #[tokio::test]
    async fn a_solicitation_with_a_multicast_link_layer_address_is_counted_as_suppressed() {
        let group = solicited_node_multicast(VIP6);
        let mut message = solicitation(ASKER6, true);
        message[26..32].copy_from_slice(&[0x33, 0x33, 0, 0, 0, 1]);
        let (sent, metrics) = run_ndp(vec![(message, meta(ASKER6, group, 2, 255))]).await;
        assert!(sent.is_empty(), "{sent:?}");
        assert_eq!(
            metrics.suppressed_count(AddressFamily::Ipv6, "eth0", Suppression::BadSender),
            1
        );
    }
}
