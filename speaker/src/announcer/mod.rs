//! The speaker's data plane: given the IPs this node owns, announce them
//! (gratuitous ARP, unsolicited neighbor advertisements, paced by
//! [`Schedule`]) and answer for them ([`crate::responder`]) on every
//! eligible interface, following interfaces as they come and go.
//!
//! One driver task owns the sockets and the schedule; it reacts to
//! [`Announcer::set_owned`], [`Announcer::set_named_interfaces`], to
//! netlink link events and to the schedule's timer. An interface that comes
//! back (carrier, a reopened socket, a new address) gets the first
//! announcement and the repeats again, on that interface only and for the
//! IPs announced there only. The receive loops, one per interface for ARP
//! and one for ICMPv6, read the shared [`Table`] on every request, which
//! `set_owned` updates before returning: a released IP is not answered from
//! the next request on.

pub mod groups;
pub mod table;

/// The data plane's metrics, at the path they had before they moved to
/// [`crate::metrics`].
pub use crate::metrics;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use self::groups::Memberships;
pub use self::table::{AnnouncingLink, SharedTable, Table};
use self::table::{read, write};
use crate::Error;
use crate::interfaces::address::InterfaceAddress;
use crate::interfaces::netlink::{self, LinkEvent};
use crate::interfaces::{
    EXCLUDED_PREFIXES, Exclusion, Link, NodeInterface, Usage, eligibility, names_match,
};
pub use crate::metrics::AnnouncerMetrics;
use crate::metrics::{AddressFamily, PacketLabels};
use crate::packet::arp::{build_gratuitous_reply, build_gratuitous_request};
use crate::packet::ndp::{ALL_NODES, build_unsolicited_advertisement};
use crate::responder::limits::ReplyLimitConfig;
use crate::responder::{Responder, serve_arp, serve_ndp, serve_nud};
use crate::schedule::{Announcement, Schedule, ScheduleConfig, Scope};
use crate::socket::{FrameIo, Icmpv6Io, NdpSocket, PacketSocket};

pub use crate::interfaces::InterfaceSelection;

/// How the announcer behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnouncerConfig {
    /// Cap on gratuitous packets per second on each interface (a switch
    /// polices ARP per port). An IPv4 announcement is two packets (both
    /// gratuitous forms), an IPv6 one is one; the cap is applied as
    /// `max_pps / 2` announcements per second, with a burst of as many.
    pub max_pps: u32,
    /// Period of re-announcement after the paced repeats; `None` (the
    /// default) stops after them.
    pub refresh: Option<Duration>,
    /// Offsets of the repeats after the first announcement.
    pub repeats: Vec<Duration>,
    /// Interface name prefixes never announced on.
    pub excluded_prefixes: Vec<String>,
    /// Whether to open the ICMPv6 socket; without it IPv6 IPs are neither
    /// announced nor answered.
    pub ipv6: bool,
    /// Limits on ARP replies and solicited neighbor advertisements, per
    /// interface and per sender (see [`ReplyLimitConfig`] for the
    /// defaults and why).
    pub reply_limits: ReplyLimitConfig,
}

impl Default for AnnouncerConfig {
    fn default() -> Self {
        Self {
            max_pps: 2000,
            refresh: None,
            repeats: ScheduleConfig::default().repeats,
            excluded_prefixes: EXCLUDED_PREFIXES.iter().map(|p| (*p).to_owned()).collect(),
            ipv6: true,
            reply_limits: ReplyLimitConfig::default(),
        }
    }
}

impl AnnouncerConfig {
    fn schedule(&self) -> ScheduleConfig {
        let rate = NonZeroU32::new(self.max_pps / 2).unwrap_or(NonZeroU32::MIN);
        ScheduleConfig {
            repeats: self.repeats.clone(),
            refresh: self.refresh,
            per_second: rate,
            burst: rate,
        }
    }
}

enum Command {
    SetOwned(BTreeMap<IpAddr, InterfaceSelection>),
    Reannounce(Vec<IpAddr>),
    SetNamed(BTreeSet<String>),
    Shutdown,
}

/// The running data plane. Dropping it stops it too, without waiting.
#[derive(Debug)]
pub struct Announcer {
    commands: mpsc::UnboundedSender<Command>,
    table: SharedTable,
    interfaces_changed: Arc<Notify>,
    driver: JoinHandle<()>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::SetOwned(owned) => write!(f, "SetOwned({} IPs)", owned.len()),
            Self::Reannounce(ips) => write!(f, "Reannounce({} IPs)", ips.len()),
            Self::SetNamed(names) => write!(f, "SetNamed({names:?})"),
            Self::Shutdown => f.write_str("Shutdown"),
        }
    }
}

/// How often announcements held back by the heartbeat are looked at again.
const HEARTBEAT_RECHECK: Duration = Duration::from_millis(10);

/// How long start-up waits for the kernel's list of links.
const LINK_DUMP_TIMEOUT: Duration = Duration::from_secs(5);

impl Announcer {
    /// Starts the data plane: subscribes to netlink, opens the ICMPv6
    /// socket (when enabled) and an ARP socket on every eligible interface.
    /// Returns once the current interfaces are open.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when netlink or the ICMPv6 socket cannot be opened
    /// (typically a missing `CAP_NET_RAW`). An interface whose socket
    /// fails is logged and skipped, not fatal.
    pub async fn start(config: AnnouncerConfig, metrics: AnnouncerMetrics) -> Result<Self, Error> {
        let (links, watcher) = netlink::watch()
            .map_err(|error| Error::io("subscribing to netlink link events", &error))?;
        let table = SharedTable::default();
        let responder = Arc::new(Responder::new(
            table.clone(),
            &config.reply_limits,
            metrics.clone(),
        ));
        let ndp = if config.ipv6 {
            let socket = NdpSocket::open()
                .map_err(|error| Error::io("opening the raw ICMPv6 socket", &error))?;
            let socket = Arc::new(socket);
            let task = tokio::spawn(serve_ndp(socket.clone(), responder.clone()));
            Some((socket, task))
        } else {
            None
        };
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (ready, ready_rx) = oneshot::channel();
        let interfaces_changed = Arc::new(Notify::new());
        let driver = Driver {
            schedule: Schedule::new(config.schedule()),
            config,
            table: table.clone(),
            responder,
            metrics,
            owned: BTreeMap::new(),
            named: BTreeSet::new(),
            links: BTreeMap::new(),
            addresses: BTreeMap::new(),
            refused: BTreeMap::new(),
            arp: BTreeMap::new(),
            ndp,
            memberships: Memberships::default(),
            interfaces_changed: interfaces_changed.clone(),
            watcher,
        };
        let driver = tokio::spawn(driver.run(command_rx, links, ready));
        // The first event after the dump says the links are open; a
        // timeout only means the dump was slow, and later events catch up.
        let _ = tokio::time::timeout(LINK_DUMP_TIMEOUT, ready_rx).await;
        Ok(Self {
            commands,
            table,
            interfaces_changed,
            driver,
        })
    }

    /// Sets the complete set of IPs this node owns now, each with where to
    /// announce it. Compared with the previous set: new IPs get their first
    /// gratuitous ARP / unsolicited NA at once, then the paced repeats;
    /// removed IPs are not answered from the next request on.
    pub fn set_owned(&self, owned: BTreeMap<IpAddr, InterfaceSelection>) {
        write(&self.table).owned.clone_from(&owned);
        // Fails only when the driver has stopped, and then there is nothing
        // left to announce with.
        let _ = self.commands.send(Command::SetOwned(owned));
    }

    /// Announces `ips`, which stay owned, again on every interface they are
    /// announced on: the first gratuitous packets at once, then the repeats,
    /// as after a takeover (clients that heard another node meanwhile must
    /// point here again). IPs not owned are ignored.
    pub fn reannounce(&self, ips: Vec<IpAddr>) {
        let _ = self.commands.send(Command::Reannounce(ips));
    }

    /// Gates every reply and announcement on `heartbeat` from now on.
    pub fn set_heartbeat(&self, heartbeat: Arc<crate::heartbeat::Heartbeat>) {
        write(&self.table).heartbeat = Some(heartbeat);
    }

    /// Sets the interfaces L2Advertisements name explicitly for this node:
    /// those the default rule excludes only by their name become usable,
    /// for the IPs whose selection names them. A named interface that
    /// cannot be used (down, NOARP, no Ethernet address, a bridge or bond
    /// member, loopback) is logged as a warning with the reason.
    pub fn set_named_interfaces(&self, names: BTreeSet<String>) {
        let _ = self.commands.send(Command::SetNamed(names));
    }

    /// The interfaces announced on now, by name.
    #[must_use]
    pub fn interfaces(&self) -> Vec<String> {
        read(&self.table)
            .links
            .values()
            .map(|link| link.name.clone())
            .collect()
    }

    /// The interfaces this node can announce on, with their addresses: what
    /// the SpeakerStatus publishes for the other speakers' eligibility (see
    /// [`crate::interfaces::published`]).
    #[must_use]
    pub fn published_interfaces(&self) -> Vec<NodeInterface> {
        read(&self.table).published.clone()
    }

    /// The interfaces announced on now that `selection` includes, by name.
    #[must_use]
    pub fn interfaces_for(&self, selection: &InterfaceSelection) -> Vec<String> {
        read(&self.table)
            .links
            .values()
            .filter(|link| selection.includes(&link.name, link.usage))
            .map(|link| link.name.clone())
            .collect()
    }

    /// Notified whenever an interface starts or stops being announced on.
    #[must_use]
    pub fn interfaces_changed(&self) -> Arc<Notify> {
        self.interfaces_changed.clone()
    }

    /// Stops announcing and answering, closes every socket and waits for
    /// the driver to finish.
    pub async fn shutdown(self) {
        let _ = self.commands.send(Command::Shutdown);
        let _ = self.driver.await;
    }
}

/// The sockets of one announcing interface and the loops answering on
/// them.
struct OpenLink {
    socket: Arc<PacketSocket>,
    responder: JoinHandle<()>,
    /// The unicast-solicitation loop, when IPv6 is on.
    nud: Option<JoinHandle<()>>,
}

/// The state behind the [`Announcer`] handle.
struct Driver {
    config: AnnouncerConfig,
    table: SharedTable,
    /// What the receive loops share.
    responder: Arc<Responder<SharedTable>>,
    metrics: AnnouncerMetrics,
    schedule: Schedule,
    /// Owned IPs as last applied to the schedule.
    owned: BTreeMap<IpAddr, InterfaceSelection>,
    /// Interfaces L2Advertisements name explicitly.
    named: BTreeSet<String>,
    /// Every link the kernel reported, eligible or not.
    links: BTreeMap<u32, Link>,
    /// The addresses of every link, by index.
    addresses: BTreeMap<u32, BTreeSet<InterfaceAddress>>,
    /// Why each named link is unusable, as last logged.
    refused: BTreeMap<u32, Exclusion>,
    /// Sockets of the eligible links.
    arp: BTreeMap<u32, OpenLink>,
    ndp: Option<(Arc<NdpSocket>, JoinHandle<()>)>,
    memberships: Memberships,
    interfaces_changed: Arc<Notify>,
    watcher: JoinHandle<()>,
}

impl Driver {
    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut links: mpsc::UnboundedReceiver<LinkEvent>,
        ready: oneshot::Sender<()>,
    ) {
        let mut ready = Some(ready);
        loop {
            let mut wakeup = self.schedule.next_wakeup().map(Instant::from_std);
            if !read(&self.table).alive() {
                // Announcements wait for the heartbeat: look again shortly
                // rather than spin on what is due.
                wakeup = wakeup.map(|at| at.max(Instant::now() + HEARTBEAT_RECHECK));
            }
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::SetOwned(owned)) => self.set_owned(owned),
                    Some(Command::Reannounce(ips)) => self.reannounce_ips(&ips),
                    Some(Command::SetNamed(names)) => self.set_named(names),
                    Some(Command::Shutdown) | None => break,
                },
                event = links.recv() => match event {
                    Some(LinkEvent::Synced) => {
                        if let Some(ready) = ready.take() {
                            let _ = ready.send(());
                        }
                    }
                    Some(event) => self.link_event(event),
                    None => {
                        tracing::error!("netlink link events stopped; interfaces are no longer followed");
                        links.close();
                        // Keep serving the interfaces we have.
                        links = mpsc::unbounded_channel().1;
                    }
                },
                () = sleep_until(wakeup) => {}
            }
            self.send_due();
        }
        self.stop();
    }

    fn set_owned(&mut self, owned: BTreeMap<IpAddr, InterfaceSelection>) {
        let now = std::time::Instant::now();
        for (ip, selection) in &self.owned {
            if owned.get(ip) != Some(selection) {
                self.schedule.release(*ip);
            }
        }
        for ip in owned.keys() {
            self.schedule.take_over(*ip, now);
        }
        self.metrics
            .announced_ips
            .set(i64::try_from(owned.len()).unwrap_or(i64::MAX));
        self.owned = owned;
        self.sync_memberships();
    }

    fn set_named(&mut self, named: BTreeSet<String>) {
        if named == self.named {
            return;
        }
        let missing: Vec<&String> = named
            .iter()
            .filter(|name| {
                !self
                    .links
                    .values()
                    .any(|link| crate::interfaces::pattern::matches(name, &link.name))
            })
            .collect();
        if !missing.is_empty() {
            tracing::info!(interfaces = ?missing, "L2Advertisements name interfaces this node does not have; nothing is announced on them here");
        }
        self.named = named;
        let links: Vec<Link> = self.links.values().cloned().collect();
        for link in &links {
            self.apply(link, Some(link));
        }
        self.publish();
    }

    /// Updates the published interfaces; notifies when they changed.
    fn publish(&mut self) {
        let published = crate::interfaces::published(
            &self.links,
            &self.addresses,
            &self.config.excluded_prefixes,
            &self.named,
        );
        let mut table = write(&self.table);
        if table.published != published {
            table.published = published;
            drop(table);
            self.interfaces_changed.notify_one();
        }
    }

    fn link_event(&mut self, event: LinkEvent) {
        match event {
            LinkEvent::Changed(link) => {
                let previous = self.links.insert(link.index, link.clone());
                self.apply(&link, previous.as_ref());
            }
            LinkEvent::Removed(index) => {
                self.links.remove(&index);
                self.addresses.remove(&index);
                self.refused.remove(&index);
                self.close(index);
            }
            LinkEvent::AddressAdded(index, address) => {
                self.addresses.entry(index).or_default().insert(address);
                // IPv6 announcements need a link-local source address; the
                // first ones may have gone out (or failed) before it existed.
                if self.arp.contains_key(&index) {
                    self.reannounce(index, IpAddr::is_ipv6);
                }
            }
            LinkEvent::AddressRemoved(index, address) => {
                if let Some(addresses) = self.addresses.get_mut(&index) {
                    addresses.remove(&address);
                }
            }
            LinkEvent::Synced => {}
        }
        self.publish();
    }

    /// Opens, closes or re-announces on `link`, which was `previous`
    /// before this change (the same when only the named interfaces changed).
    fn apply(&mut self, link: &Link, previous: Option<&Link>) {
        let index = link.index;
        let named = names_match(&self.named, &link.name);
        // Only an exact name is a request for this very link worth a warning;
        // a pattern (`eth*`) is not about the bond members it also matches.
        let named_exactly = self.named.contains(&link.name);
        let usage = match eligibility(link, &self.config.excluded_prefixes, named) {
            Ok(usage) => {
                if self.refused.remove(&index).is_some() {
                    tracing::info!(interface = %link.name, "the interface an L2Advertisement names is usable now");
                }
                Some(usage)
            }
            Err(reason) if named_exactly => {
                if self.refused.get(&index) != Some(&reason) {
                    let hint = match &reason {
                        Exclusion::Member(controller) => match self.links.get(controller) {
                            Some(c) => format!("; name the bridge or bond {} instead", c.name),
                            None => "; name its bridge or bond instead".to_owned(),
                        },
                        _ => String::new(),
                    };
                    tracing::warn!(interface = %link.name, %reason, "an L2Advertisement names this interface, but it cannot be announced on: {reason}{hint}; nothing is announced on it until that changes");
                    self.refused.insert(index, reason);
                }
                None
            }
            Err(reason) => {
                self.refused.remove(&index);
                tracing::debug!(interface = %link.name, %reason, "not announcing on this interface");
                None
            }
        };
        let open_as = read(&self.table).links.get(&index).map(|open| open.usage);
        let renamed = previous.is_some_and(|p| p.name != link.name || p.mac != link.mac);
        if self.arp.contains_key(&index) && (usage.is_none() || renamed || open_as != usage) {
            self.close(index);
        }
        let Some(usage) = usage else {
            return;
        };
        if !self.arp.contains_key(&index) {
            self.open(link, usage);
            self.reannounce(index, |_| true);
        } else if previous.is_some_and(|p| !p.lower_up) && link.lower_up {
            // Carrier came back: whatever was sent on it meanwhile was lost.
            self.reannounce(index, |_| true);
        }
    }

    fn open(&mut self, link: &Link, usage: Usage) {
        let Some(mac) = link.mac else {
            return;
        };
        let socket = match PacketSocket::arp_requests(link.index) {
            Ok(socket) => Arc::new(socket),
            Err(error) => {
                tracing::warn!(interface = %link.name, %error, "cannot open the ARP socket; not announcing on this interface");
                return;
            }
        };
        let responder = tokio::spawn(serve_arp(
            socket.clone(),
            link.index,
            link.name.clone(),
            self.responder.clone(),
        ));
        let nud = self.ndp.as_ref().and_then(|(icmp, _)| {
            match PacketSocket::unicast_solicitations(link.index) {
                Ok(frames) => Some(tokio::spawn(serve_nud(
                    Arc::new(frames),
                    icmp.clone(),
                    link.index,
                    link.name.clone(),
                    self.responder.clone(),
                ))),
                Err(error) => {
                    tracing::warn!(interface = %link.name, %error, "cannot open the unicast solicitation socket; IPv6 reachability checks will go unanswered here");
                    None
                }
            }
        });
        self.arp.insert(
            link.index,
            OpenLink {
                socket,
                responder,
                nud,
            },
        );
        write(&self.table).links.insert(
            link.index,
            AnnouncingLink {
                name: link.name.clone(),
                mac,
                usage,
            },
        );
        match usage {
            Usage::Default => {
                tracing::info!(interface = %link.name, %mac, "announcing on interface")
            }
            Usage::Named => {
                tracing::info!(interface = %link.name, %mac, "announcing on interface for the L2Advertisements that name it (excluded by default by its name)")
            }
        }
        self.sync_memberships();
        self.interfaces_changed.notify_one();
    }

    fn close(&mut self, index: u32) {
        if let Some(open) = self.arp.remove(&index) {
            open.responder.abort();
            if let Some(nud) = open.nud {
                nud.abort();
            }
            // The socket closes when the aborted loop drops its reference.
            drop(open.socket);
        }
        let removed = write(&self.table).links.remove(&index);
        if let Some(link) = removed {
            tracing::info!(interface = %link.name, "stopped announcing on interface");
            self.interfaces_changed.notify_one();
        }
        // Leaving the groups of a link that is gone fails harmlessly; one
        // that is only down keeps them until left here.
        self.sync_memberships();
    }

    /// Restarts the schedule of `ips` on every interface each is announced on.
    fn reannounce_ips(&mut self, ips: &[IpAddr]) {
        let wanted: BTreeSet<IpAddr> = ips.iter().copied().collect();
        let indexes: Vec<u32> = read(&self.table).links.keys().copied().collect();
        for index in indexes {
            self.reannounce(index, |ip| wanted.contains(ip));
        }
    }

    /// Restarts the schedule of the owned IPs announced on `index` that
    /// `filter` accepts, on that interface only: it gets first
    /// announcements and repeats again, the other interfaces nothing more.
    fn reannounce(&mut self, index: u32, filter: impl Fn(&IpAddr) -> bool) {
        let Some(link) = read(&self.table).links.get(&index).cloned() else {
            return;
        };
        let now = std::time::Instant::now();
        for ip in announced_on(&self.owned, &link).filter(|ip| filter(ip)) {
            self.schedule.reannounce(ip, index, now);
        }
    }

    fn sync_memberships(&mut self) {
        let Some((socket, _)) = &self.ndp else {
            return;
        };
        let table = read(&self.table);
        let per_address: Vec<(std::net::Ipv6Addr, Vec<u32>)> = self
            .owned
            .iter()
            .filter_map(|(ip, selection)| match ip {
                IpAddr::V6(ip) => Some((
                    *ip,
                    table
                        .links
                        .iter()
                        .filter(|(_, link)| selection.includes(&link.name, link.usage))
                        .map(|(index, _)| *index)
                        .collect(),
                )),
                IpAddr::V4(_) => None,
            })
            .collect();
        drop(table);
        let wanted = Memberships::wanted(
            per_address
                .iter()
                .map(|(ip, links)| (*ip, links.as_slice())),
        );
        let changes = self.memberships.update(wanted);
        for (index, group) in changes.join {
            match socket.join(group, index) {
                // Already a member: the kernel kept it across a link flap.
                Err(error) if error.raw_os_error() == Some(libc::EADDRINUSE) => {}
                Err(error) => {
                    tracing::warn!(%group, index, %error, "cannot join the solicited-node group");
                }
                Ok(()) => {}
            }
        }
        for (index, group) in changes.leave {
            if let Err(error) = socket.leave(group, index) {
                tracing::debug!(%group, index, %error, "cannot leave the solicited-node group");
            }
        }
    }

    /// Sends every announcement the schedule says is due.
    fn send_due(&mut self) {
        // Not while the membership's heartbeat says this node may have been
        // declared down: the announcements stay due, and go out later if the
        // IPs are still owned then.
        if !read(&self.table).alive() {
            return;
        }
        let due = self.schedule.due(std::time::Instant::now());
        if due.is_empty() {
            return;
        }
        let table = read(&self.table);
        for announcement in due {
            for (index, link) in recipients(&table, &announcement) {
                match announcement.ip {
                    IpAddr::V4(ip) => {
                        let Some(open) = self.arp.get(index) else {
                            continue;
                        };
                        let labels = PacketLabels::new(AddressFamily::Ipv4, &link.name);
                        for frame in [
                            build_gratuitous_request(ip, link.mac),
                            build_gratuitous_reply(ip, link.mac),
                        ] {
                            self.count_send(&labels, open.socket.send(&frame));
                        }
                    }
                    IpAddr::V6(ip) => {
                        let Some((socket, _)) = &self.ndp else {
                            continue;
                        };
                        let labels = PacketLabels::new(AddressFamily::Ipv6, &link.name);
                        let message = build_unsolicited_advertisement(ip, link.mac);
                        self.count_send(&labels, socket.send(&message, ALL_NODES, *index));
                    }
                }
            }
        }
    }

    fn count_send(&self, labels: &PacketLabels, result: std::io::Result<()>) {
        match result {
            Ok(()) => {
                self.metrics.gratuitous_sent.get_or_create(labels).inc();
            }
            Err(error) => {
                self.metrics.send_errors.get_or_create(labels).inc();
                tracing::debug!(interface = %labels.interface, %error, "sending a gratuitous packet failed");
            }
        }
    }

    fn stop(&mut self) {
        self.watcher.abort();
        for (_, open) in std::mem::take(&mut self.arp) {
            open.responder.abort();
            if let Some(nud) = open.nud {
                nud.abort();
            }
        }
        if let Some((_, task)) = self.ndp.take() {
            task.abort();
        }
        let mut table = write(&self.table);
        *table = Table::default();
        self.metrics.announced_ips.set(0);
    }
}

/// The owned IPs announced on `link`.
fn announced_on<'a>(
    owned: &'a BTreeMap<IpAddr, InterfaceSelection>,
    link: &'a AnnouncingLink,
) -> impl Iterator<Item = IpAddr> + 'a {
    owned
        .iter()
        .filter(|(_, selection)| selection.includes(&link.name, link.usage))
        .map(|(ip, _)| *ip)
}

/// The open links `announcement` goes out on: those its IP's selection
/// includes, narrowed to one by an interface scope.
fn recipients<'a>(
    table: &'a Table,
    announcement: &Announcement,
) -> impl Iterator<Item = (&'a u32, &'a AnnouncingLink)> + 'a {
    let selection = table.owned.get(&announcement.ip);
    let scope = announcement.scope;
    table.links.iter().filter(move |(index, link)| {
        selection.is_some_and(|selection| selection.includes(&link.name, link.usage))
            && match scope {
                Scope::All => true,
                Scope::Interface(only) => **index == only,
            }
    })
}

async fn sleep_until(wakeup: Option<Instant>) {
    match wakeup {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_handle_can_be_shared_between_tasks() {
        fn shareable<T: Send + Sync>() {}
        shareable::<Announcer>();
        shareable::<AnnouncerMetrics>();
    }

    #[test]
    fn the_packet_cap_becomes_an_announcement_cap() {
        // Two packets per IPv4 announcement: the default lets the first
        // announcements of 1,000 IPs out at once, as the schedule's default.
        let schedule = AnnouncerConfig::default().schedule();
        assert_eq!(schedule.per_second.get(), 1000);
        assert_eq!(schedule.burst.get(), 1000);
        assert_eq!(schedule.repeats, ScheduleConfig::default().repeats);
        let tiny = AnnouncerConfig {
            max_pps: 1,
            refresh: Some(Duration::from_secs(60)),
            ..AnnouncerConfig::default()
        }
        .schedule();
        assert_eq!(tiny.per_second.get(), 1);
        assert_eq!(tiny.refresh, Some(Duration::from_secs(60)));
    }

    fn link(name: &str, usage: Usage) -> AnnouncingLink {
        AnnouncingLink {
            name: name.to_owned(),
            mac: crate::packet::MacAddr::new(2, 0, 0, 0, 0, 2),
            usage,
        }
    }

    fn only(names: &[&str]) -> InterfaceSelection {
        InterfaceSelection::Only(names.iter().map(|n| (*n).to_owned()).collect())
    }

    #[test]
    fn selection() {
        let eth0 = link("eth0", Usage::Default);
        let eth1 = link("eth1", Usage::Default);
        let veth0 = link("veth0", Usage::Named);
        assert!(InterfaceSelection::All.includes(&eth0.name, eth0.usage));
        assert!(
            !InterfaceSelection::All.includes(&veth0.name, veth0.usage),
            "a link open only because it is named is not part of `All`"
        );
        assert!(only(&["eth1"]).includes(&eth1.name, eth1.usage));
        assert!(!only(&["eth1"]).includes(&eth0.name, eth0.usage));
        assert!(only(&["veth0"]).includes(&veth0.name, veth0.usage));
        let all_and_veth0 = InterfaceSelection::AllAnd(BTreeSet::from(["veth0".to_owned()]));
        assert!(all_and_veth0.includes(&eth0.name, eth0.usage));
        assert!(all_and_veth0.includes(&veth0.name, veth0.usage));
        let all_and_other = InterfaceSelection::AllAnd(BTreeSet::from(["veth1".to_owned()]));
        assert!(!all_and_other.includes(&veth0.name, veth0.usage));
    }

    /// eth0 (2) and eth1 (3) by default, veth0 (4) because it is named;
    /// .1 on every default interface, .2 on eth1 only, .3 on veth0 only.
    fn table() -> Table {
        let ip = |n: u8| IpAddr::from([198, 18, 0, n]);
        Table {
            owned: BTreeMap::from([
                (ip(1), InterfaceSelection::All),
                (ip(2), only(&["eth1"])),
                (ip(3), only(&["veth0", "eth9"])),
            ]),
            links: BTreeMap::from([
                (2, link("eth0", Usage::Default)),
                (3, link("eth1", Usage::Default)),
                (4, link("veth0", Usage::Named)),
            ]),
            published: Vec::new(),
            heartbeat: None,
        }
    }

    #[test]
    fn an_interface_that_came_back_reannounces_only_its_own_ips() {
        let table = table();
        let on = |index: u32| -> Vec<IpAddr> {
            announced_on(&table.owned, &table.links[&index]).collect()
        };
        let ip = |n: u8| IpAddr::from([198, 18, 0, n]);
        assert_eq!(on(2), vec![ip(1)]);
        assert_eq!(on(3), vec![ip(1), ip(2)]);
        assert_eq!(on(4), vec![ip(3)]);
    }

    #[test]
    fn an_announcement_goes_out_on_its_scope_only() {
        let table = table();
        let ip = |n: u8| IpAddr::from([198, 18, 0, n]);
        let to = |n: u8, scope: Scope| -> Vec<u32> {
            let announcement = Announcement {
                ip: ip(n),
                scope,
                kind: crate::schedule::AnnouncementKind::First,
            };
            recipients(&table, &announcement)
                .map(|(index, _)| *index)
                .collect()
        };
        assert_eq!(to(1, Scope::All), vec![2, 3]);
        assert_eq!(to(1, Scope::Interface(3)), vec![3]);
        // An interface the IP is not announced on gets nothing, even when
        // the schedule names it (the selection changed meanwhile).
        assert_eq!(to(1, Scope::Interface(4)), Vec::<u32>::new());
        assert_eq!(to(2, Scope::All), vec![3]);
        assert_eq!(to(2, Scope::Interface(2)), Vec::<u32>::new());
        assert_eq!(to(3, Scope::All), vec![4]);
        assert_eq!(to(3, Scope::Interface(4)), vec![4]);
        // Not owned (released since): nowhere.
        assert_eq!(to(9, Scope::All), Vec::<u32>::new());
    }
}
