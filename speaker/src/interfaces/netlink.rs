//! Following the kernel's links through rtnetlink: one dump at start, then
//! the link and address notifications (`RTNLGRP_LINK`,
//! `RTNLGRP_IPV4_IFADDR`, `RTNLGRP_IPV6_IFADDR`), for links and their
//! addresses. No polling.

use std::io;

use futures::{StreamExt, TryStreamExt};
use rtnetlink::constants::{RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR, RTMGRP_LINK};
use rtnetlink::packet_core::NetlinkPayload;
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use rtnetlink::sys::{AsyncSocket, SocketAddr};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::Link;
use super::address::InterfaceAddress;
use crate::packet::MacAddr;

/// A change of the kernel's links, in the order the kernel reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// A link exists with this state (from the initial dump or a change).
    Changed(Link),
    /// The link with this index is gone.
    Removed(u32),
    /// An address was added to the link with this index (from the initial
    /// dump or a change); announcements sent before it had one (IPv6 needs
    /// a link-local source) may have been lost.
    AddressAdded(u32, InterfaceAddress),
    /// An address was removed from the link with this index.
    AddressRemoved(u32, InterfaceAddress),
    /// The initial dump is complete: every link that existed at start has
    /// been reported.
    Synced,
}

/// Starts following the links: returns the events (the current links
/// first) and the task producing them; abort the task to stop.
///
/// # Errors
///
/// When the netlink socket cannot be opened or bound.
pub fn watch() -> io::Result<(mpsc::UnboundedReceiver<LinkEvent>, JoinHandle<()>)> {
    let (mut connection, handle, mut messages) = rtnetlink::new_connection()?;
    // Subscribe before dumping, so that nothing changes unseen in between.
    connection.socket_mut().socket_mut().bind(&SocketAddr::new(
        0,
        RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR,
    ))?;
    let (events, receiver) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let connection = tokio::spawn(connection);
        let mut dump = handle.link().get().execute();
        loop {
            match dump.try_next().await {
                Ok(Some(message)) => {
                    if events.send(LinkEvent::Changed(link(&message))).is_err() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    tracing::warn!(%error, "dumping network links failed; following changes only");
                    break;
                }
            }
        }
        let mut dump = handle.address().get().execute();
        loop {
            match dump.try_next().await {
                Ok(Some(message)) => {
                    let Some((index, address)) = address(&message) else {
                        continue;
                    };
                    if events
                        .send(LinkEvent::AddressAdded(index, address))
                        .is_err()
                    {
                        return;
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    tracing::warn!(%error, "dumping interface addresses failed; following changes only");
                    break;
                }
            }
        }
        if events.send(LinkEvent::Synced).is_err() {
            return;
        }
        while let Some((message, _)) = messages.next().await {
            let event = match message.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(message)) => {
                    LinkEvent::Changed(link(&message))
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(message)) => {
                    LinkEvent::Removed(message.header.index)
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewAddress(message)) => {
                    let Some((index, address)) = address(&message) else {
                        continue;
                    };
                    LinkEvent::AddressAdded(index, address)
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelAddress(message)) => {
                    let Some((index, address)) = address(&message) else {
                        continue;
                    };
                    LinkEvent::AddressRemoved(index, address)
                }
                _ => continue,
            };
            if events.send(event).is_err() {
                break;
            }
        }
        connection.abort();
    });
    Ok((receiver, task))
}

/// The fields of a link message the eligibility rules need.
#[must_use]
pub fn link(message: &LinkMessage) -> Link {
    let flags = message.header.flags;
    let mut link = Link {
        index: message.header.index,
        name: String::new(),
        mac: None,
        up: flags.contains(LinkFlags::Up),
        lower_up: flags.contains(LinkFlags::LowerUp),
        loopback: flags.contains(LinkFlags::Loopback),
        noarp: flags.contains(LinkFlags::Noarp),
        controller: None,
    };
    for attribute in &message.attributes {
        match attribute {
            LinkAttribute::IfName(name) => link.name.clone_from(name),
            LinkAttribute::Address(bytes) => {
                if let [a, b, c, d, e, f] = bytes[..] {
                    link.mac = Some(MacAddr::new(a, b, c, d, e, f));
                }
            }
            LinkAttribute::Controller(index) if *index != 0 => link.controller = Some(*index),
            _ => {}
        }
    }
    link
}

/// The link index and address of an address message: the local address
/// (`IFA_LOCAL`, which differs from `IFA_ADDRESS` on point-to-point links)
/// or else the address, with the prefix length.
#[must_use]
pub fn address(message: &AddressMessage) -> Option<(u32, InterfaceAddress)> {
    let local = message.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    let ip = local.or_else(|| {
        message.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        })
    })?;
    let address = InterfaceAddress::new(ip, message.header.prefix_len)?;
    Some((message.header.index, address))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_local_address_and_prefix() {
        let mut message = AddressMessage::default();
        message.header.index = 3;
        message.header.prefix_len = 24;
        message.attributes = vec![
            AddressAttribute::Address("198.18.0.1".parse().unwrap()),
            AddressAttribute::Local("198.18.0.11".parse().unwrap()),
        ];
        let (index, got) = address(&message).unwrap();
        assert_eq!((index, got.to_string().as_str()), (3, "198.18.0.11/24"));
        message.attributes = vec![AddressAttribute::Address("2001:db8::11".parse().unwrap())];
        message.header.prefix_len = 64;
        assert_eq!(address(&message).unwrap().1.to_string(), "2001:db8::11/64");
        message.attributes.clear();
        assert_eq!(address(&message), None);
    }

    fn message(flags: LinkFlags, attributes: Vec<LinkAttribute>) -> LinkMessage {
        let mut message = LinkMessage::default();
        message.header.index = 4;
        message.header.flags = flags;
        message.attributes = attributes;
        message
    }

    #[test]
    fn reads_what_eligibility_needs() {
        let up_ethernet = message(
            LinkFlags::Up | LinkFlags::LowerUp | LinkFlags::Broadcast,
            vec![
                LinkAttribute::IfName("eth0".to_owned()),
                LinkAttribute::Address(vec![2, 0, 0, 0, 0, 9]),
            ],
        );
        assert_eq!(
            link(&up_ethernet),
            Link {
                index: 4,
                name: "eth0".to_owned(),
                mac: Some(MacAddr::new(2, 0, 0, 0, 0, 9)),
                up: true,
                lower_up: true,
                loopback: false,
                noarp: false,
                controller: None,
            }
        );
    }

    #[test]
    fn members_noarp_and_odd_addresses() {
        let member = link(&message(
            LinkFlags::Up | LinkFlags::Noarp,
            vec![
                LinkAttribute::IfName("eth1".to_owned()),
                LinkAttribute::Controller(7),
                // An InfiniBand-sized address is not an Ethernet one.
                LinkAttribute::Address(vec![0; 20]),
            ],
        ));
        assert_eq!(member.controller, Some(7));
        assert!(member.noarp);
        assert!(!member.lower_up);
        assert_eq!(member.mac, None);
        // A controller index of 0 means none.
        let free = link(&message(LinkFlags::Up, vec![LinkAttribute::Controller(0)]));
        assert_eq!(free.controller, None);
    }
}
