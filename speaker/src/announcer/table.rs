//! What this node answers for: the owned IPs with where each is announced,
//! and the interfaces announced on. The announcer writes it; the
//! responder's receive loops look every request up in it.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::InterfaceSelection;
use crate::heartbeat::Heartbeat;
use crate::interfaces::{NodeInterface, Usage};
use crate::packet::MacAddr;
use crate::responder::Lookup;

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

/// Owned IPs with their interface selection, and the interfaces announced
/// on, by index.
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
    /// The interfaces the node can announce on, with their addresses, as
    /// published in its SpeakerStatus.
    pub published: Vec<NodeInterface>,
    /// The membership's heartbeat: nothing is answered or announced while
    /// it does not allow it. `None` (tests, a data plane alone): always.
    pub heartbeat: Option<Arc<Heartbeat>>,
}

impl Table {
    /// Whether the node may answer and announce now (see [`Heartbeat`]).
    #[must_use]
    pub fn alive(&self) -> bool {
        self.heartbeat
            .as_ref()
            .is_none_or(|heart| heart.allows(std::time::Instant::now()))
    }

    /// Our MAC for `ip` on interface `ifindex`, when we answer for it there.
    #[must_use]
    pub fn mac_for(&self, ip: IpAddr, ifindex: u32) -> Option<MacAddr> {
        if !self.alive() {
            return None;
        }
        let link = self.links.get(&ifindex)?;
        self.owned
            .get(&ip)
            .filter(|selection| selection.includes(&link.name, link.usage))
            .map(|_| link.mac)
    }
}

/// The table shared by the announcer and the receive loops.
pub type SharedTable = Arc<RwLock<Table>>;

/// Reads the table, tolerating a writer that panicked: the data is plain
/// and always consistent between statements.
pub(crate) fn read(table: &RwLock<Table>) -> RwLockReadGuard<'_, Table> {
    table.read().unwrap_or_else(PoisonError::into_inner)
}

/// Writes the table, tolerating a writer that panicked (see [`read`]).
pub(crate) fn write(table: &RwLock<Table>) -> RwLockWriteGuard<'_, Table> {
    table.write().unwrap_or_else(PoisonError::into_inner)
}

impl Lookup for RwLock<Table> {
    fn mac_for(&self, ip: IpAddr, ifindex: u32) -> Option<MacAddr> {
        read(self).mac_for(ip, ifindex)
    }

    fn interface_name(&self, ifindex: u32) -> Option<String> {
        read(self).links.get(&ifindex).map(|link| link.name.clone())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    const OUR_MAC: MacAddr = MacAddr(0x02, 0, 0, 0, 0, 0x02);
    const OTHER_MAC: MacAddr = MacAddr(0x02, 0, 0, 0, 0, 0x03);
    const VIP4: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 200));
    const VIP6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0xc8));

    fn link(name: &str, mac: MacAddr, usage: Usage) -> AnnouncingLink {
        AnnouncingLink {
            name: name.to_owned(),
            mac,
            usage,
        }
    }

    /// Owns VIP4 and VIP6 on eth0 (index 2) only; eth1 (index 3) exists.
    fn table() -> SharedTable {
        let only_eth0 = InterfaceSelection::Only(BTreeSet::from(["eth0".to_owned()]));
        Arc::new(RwLock::new(Table {
            owned: BTreeMap::from([(VIP4, only_eth0.clone()), (VIP6, only_eth0)]),
            links: BTreeMap::from([
                (2, link("eth0", OUR_MAC, Usage::Default)),
                (3, link("eth1", OTHER_MAC, Usage::Default)),
            ]),
            published: Vec::new(),
            heartbeat: None,
        }))
    }

    #[test]
    fn nothing_is_answered_while_the_heartbeat_does_not_allow_it() {
        let table = table();
        let now = std::time::Instant::now();
        let heart = Arc::new(Heartbeat::new(std::time::Duration::from_millis(140), now));
        heart.beat(now);
        write(&table).heartbeat = Some(Arc::clone(&heart));
        assert_eq!(table.mac_for(VIP4, 2), Some(OUR_MAC));
        heart.quiet_until(now + std::time::Duration::from_secs(60));
        assert_eq!(table.mac_for(VIP4, 2), None);
        assert!(!read(&table).alive());
    }

    #[test]
    fn answers_for_owned_ips_on_their_selected_interfaces_only() {
        let table = table();
        assert_eq!(table.mac_for(VIP4, 2), Some(OUR_MAC));
        assert_eq!(table.mac_for(VIP6, 2), Some(OUR_MAC));
        assert_eq!(table.mac_for(VIP4, 3), None, "not selected on eth1");
        assert_eq!(table.mac_for(VIP4, 9), None, "an unknown interface");
        let other = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 201));
        assert_eq!(table.mac_for(other, 2), None);
        assert_eq!(table.interface_name(3).as_deref(), Some("eth1"));
        assert_eq!(table.interface_name(9), None);
    }

    #[test]
    fn removed_ip_is_not_answered_from_the_next_request() {
        let table = table();
        assert!(table.mac_for(VIP4, 2).is_some());
        write(&table).owned.remove(&VIP4);
        assert_eq!(table.mac_for(VIP4, 2), None);
    }

    #[test]
    fn all_selects_every_announcing_interface() {
        let table = table();
        write(&table).owned.insert(VIP4, InterfaceSelection::All);
        assert_eq!(table.mac_for(VIP4, 2), Some(OUR_MAC));
        assert_eq!(table.mac_for(VIP4, 3), Some(OTHER_MAC));
    }

    #[test]
    fn a_link_open_because_it_is_named_answers_only_where_named() {
        let table = table();
        {
            let mut table = write(&table);
            table
                .links
                .insert(4, link("veth0", OTHER_MAC, Usage::Named));
            table.owned.insert(VIP4, InterfaceSelection::All);
        }
        assert_eq!(
            table.mac_for(VIP4, 4),
            None,
            "`All` means the interfaces eligible by default"
        );
        write(&table).owned.insert(
            VIP4,
            InterfaceSelection::Only(BTreeSet::from(["veth0".to_owned()])),
        );
        assert_eq!(table.mac_for(VIP4, 4), Some(OTHER_MAC));
        assert_eq!(table.mac_for(VIP4, 2), None);
    }
}
