//! Answering ARP requests and neighbor solicitations for the IPs this node
//! owns, on the interfaces it announces them on, and nothing else.
//!
//! The decisions ([`Table::answer_arp`], [`Table::answer_ns`]) are pure;
//! the loops ([`serve_arp`], [`serve_ndp`], [`serve_nud`]) read from a
//! [`FrameIo`] or [`Icmpv6Io`], so they are tested with in-memory packets.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use crate::announcer::InterfaceSelection;
use crate::announcer::metrics::{AddressFamily, AnnouncerMetrics, PacketLabels};
use crate::interfaces::Usage;
use crate::packet::MacAddr;
use crate::packet::arp::{ArpRequest, build_reply};
use crate::packet::ndp::{
    Advertisement, FramedSolicitation, NeighborSolicitation, solicited_node_multicast,
};
use crate::socket::{FrameIo, Icmpv6Io};

/// An interface the node announces on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnouncingLink {
    /// Interface name.
    pub name: String,
    /// Its hardware address: what replies say the IPs are at.
    pub mac: MacAddr,
    /// For every IP, or only for those whose selection names it.
    pub usage: Usage,
}

/// What the responder answers for: owned IPs with their interface
/// selection, and the interfaces announced on, by index.
///
/// Shared between the announcer, which writes it, and the receive loops,
/// which read it for every request: an IP removed here is not answered
/// from the next request on.
#[derive(Debug, Default, Clone)]
pub struct Table {
    /// Owned IPs and where to announce each.
    pub owned: BTreeMap<IpAddr, InterfaceSelection>,
    /// Eligible interfaces with an open socket, by index.
    pub links: BTreeMap<u32, AnnouncingLink>,
}

/// The table shared by the announcer and the receive loops.
pub type SharedTable = Arc<RwLock<Table>>;

/// Why a received packet was dropped without an answer.
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
}

impl Table {
    /// Our MAC for `ip` on interface `ifindex`, when we answer for it there.
    #[must_use]
    pub fn mac_for(&self, ip: IpAddr, ifindex: u32) -> Option<MacAddr> {
        let link = self.links.get(&ifindex)?;
        self.owned
            .get(&ip)
            .filter(|selection| selection.includes(link))
            .map(|_| link.mac)
    }

    /// The reply to an ARP request received on `ifindex`, if we answer it.
    ///
    /// # Errors
    ///
    /// Why it is not answered.
    pub fn answer_arp(&self, request: &ArpRequest, ifindex: u32) -> Result<Vec<u8>, Ignored> {
        // Another host's announcement is not a question.
        if request.is_gratuitous() {
            return Err(Ignored::NotOurs);
        }
        let mac = self
            .mac_for(IpAddr::V4(request.target_ip), ifindex)
            .ok_or(Ignored::NotOurs)?;
        Ok(build_reply(request, mac))
    }

    /// The advertisement answering a neighbor solicitation received on
    /// `ifindex` with `hop_limit` and sent to `destination`.
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
        &self,
        solicitation: &NeighborSolicitation,
        ifindex: u32,
        destination: Option<Ipv6Addr>,
        hop_limit: Option<u8>,
    ) -> Result<Advertisement, Ignored> {
        if hop_limit != Some(255) {
            return Err(Ignored::HopLimit(hop_limit));
        }
        let target = solicitation.target;
        if let Some(destination) = destination
            && destination != target
            && destination != solicited_node_multicast(target)
        {
            return Err(Ignored::WrongDestination(destination));
        }
        let mac = self
            .mac_for(IpAddr::V6(target), ifindex)
            .ok_or(Ignored::NotOurs)?;
        Ok(solicitation.reply(mac))
    }
}

/// Reads the table, tolerating a writer that panicked: the data is plain
/// and always consistent between statements.
pub(crate) fn read(table: &SharedTable) -> std::sync::RwLockReadGuard<'_, Table> {
    table.read().unwrap_or_else(PoisonError::into_inner)
}

/// Pause after a receive error, so a socket in a persistent error state
/// does not spin the loop.
const ERROR_BACKOFF: Duration = Duration::from_millis(10);

/// Answers the ARP requests arriving on one interface's socket, forever.
pub async fn serve_arp<F: FrameIo>(
    io: Arc<F>,
    ifindex: u32,
    interface: String,
    table: SharedTable,
    metrics: AnnouncerMetrics,
) {
    let labels = PacketLabels::new(AddressFamily::Ipv4, &interface);
    let mut buf = vec![0_u8; 2048];
    loop {
        let len = match io.recv(&mut buf).await {
            Ok(len) => len,
            Err(error) => {
                tracing::debug!(%interface, %error, "receiving ARP failed");
                tokio::time::sleep(ERROR_BACKOFF).await;
                continue;
            }
        };
        metrics.frames_received.get_or_create(&labels).inc();
        let request = match ArpRequest::decode(&buf[..len]) {
            Ok(request) => request,
            Err(error) => {
                metrics.malformed_received.get_or_create(&labels).inc();
                tracing::trace!(%interface, %error, "dropped a malformed ARP frame");
                continue;
            }
        };
        metrics.arp_requests_received.get_or_create(&labels).inc();
        let answer = read(&table).answer_arp(&request, ifindex);
        if let Ok(reply) = answer {
            if let Err(error) = io.send(&reply) {
                metrics.send_errors.get_or_create(&labels).inc();
                tracing::warn!(%interface, %error, ip = %request.target_ip, "sending an ARP reply failed");
            } else {
                metrics.replies_sent.get_or_create(&labels).inc();
            }
        }
    }
}

/// Answers the unicast neighbor solicitations (reachability checks)
/// arriving on one interface's packet socket, forever; the advertisements
/// go out through the ICMPv6 socket `icmp`.
pub async fn serve_nud<F: FrameIo, I: Icmpv6Io>(
    frames: Arc<F>,
    icmp: Arc<I>,
    ifindex: u32,
    interface: String,
    table: SharedTable,
    metrics: AnnouncerMetrics,
) {
    let labels = PacketLabels::new(AddressFamily::Ipv6, &interface);
    let mut buf = vec![0_u8; 2048];
    loop {
        let len = match frames.recv(&mut buf).await {
            Ok(len) => len,
            Err(error) => {
                tracing::debug!(%interface, %error, "receiving a unicast solicitation failed");
                tokio::time::sleep(ERROR_BACKOFF).await;
                continue;
            }
        };
        metrics.frames_received.get_or_create(&labels).inc();
        let framed = match FramedSolicitation::decode(&buf[..len]) {
            Ok(framed) => framed,
            Err(error) => {
                metrics.malformed_received.get_or_create(&labels).inc();
                tracing::trace!(%interface, %error, "dropped a malformed unicast solicitation");
                continue;
            }
        };
        metrics
            .ndp_solicitations_received
            .get_or_create(&labels)
            .inc();
        let answer = read(&table).answer_ns(
            &framed.solicitation,
            ifindex,
            Some(framed.destination),
            Some(framed.hop_limit),
        );
        match answer {
            Ok(advertisement) => {
                if let Err(error) =
                    icmp.send(&advertisement.message, advertisement.destination, ifindex)
                {
                    metrics.send_errors.get_or_create(&labels).inc();
                    tracing::warn!(%interface, %error, ip = %framed.solicitation.target, "sending a neighbor advertisement failed");
                } else {
                    metrics.replies_sent.get_or_create(&labels).inc();
                }
            }
            Err(Ignored::HopLimit(hops)) => {
                metrics.malformed_received.get_or_create(&labels).inc();
                tracing::trace!(%interface, ?hops, "dropped a routed neighbor solicitation");
            }
            Err(_) => {}
        }
    }
}

/// Answers the neighbor solicitations arriving on the ICMPv6 socket, forever.
///
/// Solicitations sent to a unicast address are left to [`serve_nud`],
/// which sees every one of them, also when the kernel would not deliver
/// them here; answering them here too would answer twice.
pub async fn serve_ndp<I: Icmpv6Io>(io: Arc<I>, table: SharedTable, metrics: AnnouncerMetrics) {
    let mut buf = vec![0_u8; 2048];
    loop {
        let meta = match io.recv(&mut buf).await {
            Ok(meta) => meta,
            Err(error) => {
                tracing::debug!(%error, "receiving ICMPv6 failed");
                tokio::time::sleep(ERROR_BACKOFF).await;
                continue;
            }
        };
        let Some(ifindex) = meta.interface else {
            continue;
        };
        let interface = read(&table)
            .links
            .get(&ifindex)
            .map_or_else(|| ifindex.to_string(), |link| link.name.clone());
        let labels = PacketLabels::new(AddressFamily::Ipv6, &interface);
        metrics.frames_received.get_or_create(&labels).inc();
        if meta
            .destination
            .is_some_and(|destination| !destination.is_multicast())
        {
            continue;
        }
        let message = buf.get(..meta.len).unwrap_or(&buf);
        let solicitation = match NeighborSolicitation::decode(message, meta.source) {
            Ok(solicitation) => solicitation,
            Err(error) => {
                metrics.malformed_received.get_or_create(&labels).inc();
                tracing::trace!(%interface, %error, "dropped a malformed neighbor solicitation");
                continue;
            }
        };
        metrics
            .ndp_solicitations_received
            .get_or_create(&labels)
            .inc();
        let answer =
            read(&table).answer_ns(&solicitation, ifindex, meta.destination, meta.hop_limit);
        match answer {
            Ok(advertisement) => {
                if let Err(error) =
                    io.send(&advertisement.message, advertisement.destination, ifindex)
                {
                    metrics.send_errors.get_or_create(&labels).inc();
                    tracing::warn!(%interface, %error, ip = %solicitation.target, "sending a neighbor advertisement failed");
                } else {
                    metrics.replies_sent.get_or_create(&labels).inc();
                }
            }
            Err(Ignored::HopLimit(hops)) => {
                metrics.malformed_received.get_or_create(&labels).inc();
                tracing::trace!(%interface, ?hops, "dropped a routed neighbor solicitation");
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, VecDeque};
    use std::io;
    use std::net::Ipv4Addr;
    use std::sync::Mutex;

    use tokio::sync::Notify;

    use super::*;
    use crate::packet::arp::{ARP_LEN, ETHERNET_HEADER_LEN, build_gratuitous_request};
    use crate::packet::ndp::ALL_NODES;
    use crate::socket::Icmpv6Meta;

    const OUR_MAC: MacAddr = MacAddr(0x02, 0, 0, 0, 0, 0x02);
    const OTHER_MAC: MacAddr = MacAddr(0x02, 0, 0, 0, 0, 0x03);
    const ASKER_MAC: MacAddr = MacAddr(0x02, 0, 0, 0, 0, 0x01);
    const VIP4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 200);
    const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0xc8);
    const ASKER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);

    /// Owns VIP4 and VIP6 on eth0 (index 2) only; eth1 (index 3) exists.
    fn table() -> SharedTable {
        let only_eth0 = InterfaceSelection::Only(BTreeSet::from(["eth0".to_owned()]));
        Arc::new(RwLock::new(Table {
            owned: BTreeMap::from([
                (IpAddr::V4(VIP4), only_eth0.clone()),
                (IpAddr::V6(VIP6), only_eth0),
            ]),
            links: BTreeMap::from([
                (
                    2,
                    AnnouncingLink {
                        name: "eth0".to_owned(),
                        mac: OUR_MAC,
                        usage: Usage::Default,
                    },
                ),
                (
                    3,
                    AnnouncingLink {
                        name: "eth1".to_owned(),
                        mac: OTHER_MAC,
                        usage: Usage::Default,
                    },
                ),
            ]),
        }))
    }

    /// A sent packet, with its IPv6 destination and interface for ICMPv6.
    type Sent = (Vec<u8>, Option<(Ipv6Addr, u32)>);

    /// In-memory packets: a queue to receive from, a list of what was sent.
    struct Memory<In> {
        incoming: Mutex<VecDeque<In>>,
        arrived: Notify,
        sent: Mutex<Vec<Sent>>,
        sent_signal: Notify,
    }

    impl<In> Default for Memory<In> {
        fn default() -> Self {
            Self {
                incoming: Mutex::default(),
                arrived: Notify::new(),
                sent: Mutex::default(),
                sent_signal: Notify::new(),
            }
        }
    }

    impl<In> Memory<In> {
        fn push(&self, item: In) {
            self.incoming.lock().unwrap().push_back(item);
            self.arrived.notify_one();
        }

        async fn next(&self) -> In {
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
            let frame = self.next().await;
            buf[..frame.len()].copy_from_slice(&frame);
            Ok(frame.len())
        }

        fn send(&self, frame: &[u8]) -> io::Result<()> {
            self.sent.lock().unwrap().push((frame.to_vec(), None));
            self.sent_signal.notify_one();
            Ok(())
        }
    }

    impl Icmpv6Io for Memory<(Vec<u8>, Icmpv6Meta)> {
        async fn recv(&self, buf: &mut [u8]) -> io::Result<Icmpv6Meta> {
            let (message, meta) = self.next().await;
            buf[..message.len()].copy_from_slice(&message);
            Ok(Icmpv6Meta {
                len: message.len(),
                ..meta
            })
        }

        fn send(&self, message: &[u8], destination: Ipv6Addr, ifindex: u32) -> io::Result<()> {
            self.sent
                .lock()
                .unwrap()
                .push((message.to_vec(), Some((destination, ifindex))));
            self.sent_signal.notify_one();
            Ok(())
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
            table(),
            metrics.clone(),
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
        // An interface the table does not know.
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

    #[test]
    fn removed_ip_is_not_answered_from_the_next_request() {
        let table = table();
        let request = ArpRequest::decode(&request_for(VIP4)).unwrap();
        assert!(read(&table).answer_arp(&request, 2).is_ok());
        table.write().unwrap().owned.remove(&IpAddr::V4(VIP4));
        assert_eq!(read(&table).answer_arp(&request, 2), Err(Ignored::NotOurs));
    }

    #[test]
    fn all_selects_every_announcing_interface() {
        let table = table();
        table
            .write()
            .unwrap()
            .owned
            .insert(IpAddr::V4(VIP4), InterfaceSelection::All);
        let request = ArpRequest::decode(&request_for(VIP4)).unwrap();
        let on_eth1 = read(&table).answer_arp(&request, 3).unwrap();
        assert_eq!(&on_eth1[6..12], &OTHER_MAC.octets());
    }

    #[test]
    fn a_link_open_because_it_is_named_answers_only_where_named() {
        let table = table();
        {
            let mut table = table.write().unwrap();
            table.links.insert(
                4,
                AnnouncingLink {
                    name: "veth0".to_owned(),
                    mac: OTHER_MAC,
                    usage: Usage::Named,
                },
            );
            table
                .owned
                .insert(IpAddr::V4(VIP4), InterfaceSelection::All);
        }
        let request = ArpRequest::decode(&request_for(VIP4)).unwrap();
        assert_eq!(
            read(&table).answer_arp(&request, 4),
            Err(Ignored::NotOurs),
            "`All` means the interfaces eligible by default"
        );
        table.write().unwrap().owned.insert(
            IpAddr::V4(VIP4),
            InterfaceSelection::Only(BTreeSet::from(["veth0".to_owned()])),
        );
        let on_veth0 = read(&table).answer_arp(&request, 4).unwrap();
        assert_eq!(&on_veth0[6..12], &OTHER_MAC.octets());
        assert_eq!(read(&table).answer_arp(&request, 2), Err(Ignored::NotOurs));
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
        let task = tokio::spawn(serve_ndp(io.clone(), table(), metrics.clone()));
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
            table(),
            metrics.clone(),
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
}
