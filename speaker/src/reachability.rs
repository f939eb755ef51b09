//! Whether a node can answer for a Service's IPs on the interfaces an
//! L2Advertisement selects: the network side of eligibility.
//!
//! A node that wins an IP it cannot answer for announces nowhere, or on a
//! segment where nobody asks for the IP (a node on another subnet). So a
//! node is eligible for an advertisement's IPs only when
//! - it has at least one of the interfaces the advertisement selects
//!   (a named interface the node lacks makes it ineligible, instead of a
//!   silent non-announcement), and
//! - with the subnet check on (the default), for every IP one of those
//!   interfaces has an address on a subnet containing it. The owner then
//!   announces on those interfaces only.
//!
//! Every speaker must reach the same verdict about every node, so the facts
//! come from shared data: the interfaces and addresses each speaker
//! publishes in its SpeakerStatus ([`NodeInterface`]), never from the
//! deciding speaker's own links.
//!
//! # Unknown nodes
//!
//! A node whose speaker has not published its interfaces (an older
//! version during a rolling upgrade, or a status not written yet) is
//! eligible with the selection unchanged, as before this check existed:
//! refusing would strand IPs during an upgrade, while a node that did
//! publish and is on the wrong subnet is known to be unable to answer.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;

use crate::interfaces::{InterfaceSelection, NodeInterface};

/// Why a node cannot answer for an advertisement's IPs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unreachable {
    /// The node has none of the interfaces the advertisement selects.
    NoSelectedInterface {
        /// What the advertisement selects.
        selection: InterfaceSelection,
    },
    /// No selected interface is on a subnet containing `ip`.
    OffSubnet {
        /// The IP no interface is on the subnet of.
        ip: IpAddr,
        /// The selected interfaces, as `name (address, ...)`.
        interfaces: Vec<String>,
    },
}

impl fmt::Display for Unreachable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoSelectedInterface { selection } => match selection {
                InterfaceSelection::All => f.write_str("has no interface eligible by default"),
                InterfaceSelection::Only(names) | InterfaceSelection::AllAnd(names)
                    if names.is_empty() =>
                {
                    f.write_str("has no interface holding its InternalIP that it can announce on")
                }
                InterfaceSelection::Only(names) | InterfaceSelection::AllAnd(names) => {
                    let names: Vec<&str> = names.iter().map(String::as_str).collect();
                    write!(f, "has none of the interfaces {}", names.join(", "))
                }
            },
            Self::OffSubnet { ip, interfaces } => write!(
                f,
                "has no selected interface on a subnet containing {ip} (it has {})",
                interfaces.join(", ")
            ),
        }
    }
}

/// Where the node whose published interfaces are `published` announces
/// `ips` for an advertisement selecting `selection`, or why it cannot.
///
/// `published` is `None` for a node that did not publish its interfaces:
/// it is eligible with `selection` unchanged (see the module
/// documentation). With `subnet_check`, the result names only the selected
/// interfaces on the subnet of one of the IPs.
///
/// # Errors
///
/// [`Unreachable`] when the node has no selected interface, or, with
/// `subnet_check`, none on the subnet of one of the IPs.
pub fn reach(
    published: Option<&[NodeInterface]>,
    selection: &InterfaceSelection,
    ips: &[IpAddr],
    subnet_check: bool,
) -> Result<InterfaceSelection, Unreachable> {
    let Some(published) = published else {
        return Ok(selection.clone());
    };
    let selected: Vec<&NodeInterface> = published
        .iter()
        .filter(|i| selection.includes(&i.name, i.usage))
        .collect();
    if selected.is_empty() {
        return Err(Unreachable::NoSelectedInterface {
            selection: selection.clone(),
        });
    }
    if !subnet_check {
        return Ok(selection.clone());
    }
    if let Some(ip) = ips
        .iter()
        .find(|ip| !selected.iter().any(|i| i.on_subnet(**ip)))
    {
        let mut interfaces: Vec<String> = selected
            .iter()
            .take(DESCRIBED)
            .map(|i| describe(i))
            .collect();
        if selected.len() > DESCRIBED {
            interfaces.push(format!("{} more", selected.len() - DESCRIBED));
        }
        return Err(Unreachable::OffSubnet {
            ip: *ip,
            interfaces,
        });
    }
    let on_subnet: BTreeSet<String> = selected
        .iter()
        .filter(|i| ips.iter().any(|ip| i.on_subnet(*ip)))
        .map(|i| i.name.clone())
        .collect();
    Ok(InterfaceSelection::Only(on_subnet))
}

/// The published interface holding the node's InternalIP, by name.
#[must_use]
pub fn node_address_interface(
    published: Option<&[NodeInterface]>,
    internal_ip: Option<IpAddr>,
) -> Option<&str> {
    let ip = internal_ip?;
    published?
        .iter()
        .find(|i| i.holds(ip))
        .map(|i| i.name.as_str())
}

/// How many interfaces, and addresses of each, a message describes: it
/// goes into a status and an Event, which must stay short.
const DESCRIBED: usize = 4;

fn describe(interface: &NodeInterface) -> String {
    if interface.addresses.is_empty() {
        return format!("{} without addresses", interface.name);
    }
    let mut addresses: Vec<String> = interface
        .addresses
        .iter()
        .take(DESCRIBED)
        .map(ToString::to_string)
        .collect();
    if interface.addresses.len() > DESCRIBED {
        addresses.push(format!(
            "and {} more",
            interface.addresses.len() - DESCRIBED
        ));
    }
    format!("{} {}", interface.name, addresses.join(" "))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::interfaces::Usage;

    fn interface(name: &str, addresses: &[&str], usage: Usage) -> NodeInterface {
        NodeInterface {
            name: name.to_owned(),
            addresses: addresses.iter().map(|a| a.parse().unwrap()).collect(),
            usage,
        }
    }

    fn only(names: &[&str]) -> InterfaceSelection {
        InterfaceSelection::Only(names.iter().map(|n| (*n).to_owned()).collect())
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// A node on two segments: the LAN on a VLAN of a bond, and storage.
    fn node() -> Vec<NodeInterface> {
        vec![
            interface("bond0", &[], Usage::Default),
            interface("bond0.200", &["198.18.2.11/24"], Usage::Default),
            interface(
                "eth2",
                &["198.18.3.11/24", "2001:db8:3::11/64"],
                Usage::Default,
            ),
            interface("veth9", &["198.18.9.1/24"], Usage::Named),
        ]
    }

    /// A case: what it shows, the selection, the IPs, whether the subnet
    /// check is on, and the verdict.
    type Row = (
        &'static str,
        InterfaceSelection,
        Vec<IpAddr>,
        bool,
        Result<InterfaceSelection, String>,
    );

    #[test]
    fn verdicts() {
        let n = node();
        let all = InterfaceSelection::All;
        let cases: Vec<Row> = vec![
            ("on the VLAN's subnet", all.clone(), vec![ip("198.18.2.200")], true, Ok(only(&["bond0.200"]))),
            ("dual-stack on eth2", all.clone(), vec![ip("198.18.3.200"), ip("2001:db8:3::c8")], true, Ok(only(&["eth2"]))),
            ("two segments, two IPs", all.clone(), vec![ip("198.18.2.200"), ip("198.18.3.200")], true, Ok(only(&["bond0.200", "eth2"]))),
            (
                "another subnet",
                all.clone(),
                vec![ip("198.18.5.200")],
                true,
                Err("has no selected interface on a subnet containing 198.18.5.200 (it has bond0 without addresses, bond0.200 198.18.2.11/24, eth2 198.18.3.11/24 2001:db8:3::11/64)".to_owned()),
            ),
            ("another subnet, check disabled", all.clone(), vec![ip("198.18.5.200")], false, Ok(all.clone())),
            (
                "a veth is not selected unless named",
                all.clone(),
                vec![ip("198.18.9.200")],
                true,
                Err("has no selected interface on a subnet containing 198.18.9.200 (it has bond0 without addresses, bond0.200 198.18.2.11/24, eth2 198.18.3.11/24 2001:db8:3::11/64)".to_owned()),
            ),
            ("a named veth", only(&["veth9"]), vec![ip("198.18.9.200")], true, Ok(only(&["veth9"]))),
            ("a pattern", only(&["bond0.*"]), vec![ip("198.18.2.200")], true, Ok(only(&["bond0.200"]))),
            (
                "a named interface the node lacks",
                only(&["eth7"]),
                vec![ip("198.18.2.200")],
                false,
                Err("has none of the interfaces eth7".to_owned()),
            ),
            (
                "named interface off the subnet",
                only(&["eth2"]),
                vec![ip("198.18.2.200")],
                true,
                Err("has no selected interface on a subnet containing 198.18.2.200 (it has eth2 198.18.3.11/24 2001:db8:3::11/64)".to_owned()),
            ),
        ];
        for (name, selection, ips, check, want) in cases {
            let got = reach(Some(&n), &selection, &ips, check).map_err(|e| e.to_string());
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn unknown_nodes_are_eligible_as_selected() {
        let selection = only(&["eth7"]);
        assert_eq!(
            reach(None, &selection, &[ip("198.18.5.1")], true),
            Ok(selection)
        );
        // Published, but nothing at all: known to be unable.
        assert!(
            reach(
                Some(&[]),
                &InterfaceSelection::All,
                &[ip("198.18.5.1")],
                false
            )
            .is_err()
        );
    }

    #[test]
    fn the_interface_holding_the_node_address() {
        let n = node();
        assert_eq!(
            node_address_interface(Some(&n), Some(ip("198.18.2.11"))),
            Some("bond0.200")
        );
        assert_eq!(
            node_address_interface(Some(&n), Some(ip("198.18.2.12"))),
            None
        );
        assert_eq!(node_address_interface(None, Some(ip("198.18.2.11"))), None);
        assert_eq!(node_address_interface(Some(&n), None), None);
    }

    fn arbitrary_node() -> impl Strategy<Value = Vec<NodeInterface>> {
        let address = (
            0u8..4,
            1u8..255,
            prop_oneof![Just(24u8), Just(23u8), Just(32u8)],
        )
            .prop_map(|(net, host, len)| format!("198.18.{net}.{host}/{len}"));
        let iface = (
            prop_oneof![Just("eth0"), Just("eth1"), Just("bond0.100"), Just("veth1")],
            prop::collection::vec(address, 0..3),
        )
            .prop_map(|(name, addresses)| NodeInterface {
                name: name.to_owned(),
                addresses: addresses.iter().map(|a| a.parse().unwrap()).collect(),
                usage: if name.starts_with("veth") {
                    Usage::Named
                } else {
                    Usage::Default
                },
            });
        prop::collection::vec(iface, 0..4)
    }

    fn arbitrary_selection() -> impl Strategy<Value = InterfaceSelection> {
        prop_oneof![
            Just(InterfaceSelection::All),
            Just(only(&["eth*"])),
            Just(only(&["veth1", "bond0.100"])),
            Just(only(&["eth9"])),
        ]
    }

    proptest! {
        /// With the check on, the result selects only interfaces that exist,
        /// the advertisement selects, and every IP is on the subnet of one
        /// of them: the node can answer for every IP where it announces.
        #[test]
        fn a_reachable_node_can_answer_where_it_announces(
            n in arbitrary_node(),
            selection in arbitrary_selection(),
            hosts in prop::collection::vec((0u8..4, 1u8..255), 1..3),
        ) {
            let ips: Vec<IpAddr> = hosts.iter().map(|(net, host)| ip(&format!("198.18.{net}.{host}"))).collect();
            if let Ok(chosen) = reach(Some(&n), &selection, &ips, true) {
                let announcing: Vec<&NodeInterface> = n
                    .iter()
                    .filter(|i| chosen.includes(&i.name, i.usage))
                    .collect();
                for i in &announcing {
                    prop_assert!(selection.includes(&i.name, i.usage));
                }
                for ip in &ips {
                    prop_assert!(announcing.iter().any(|i| i.on_subnet(*ip)), "{ip}");
                }
            } else {
                let any_selected = n.iter().any(|i| selection.includes(&i.name, i.usage));
                let all_on_subnet = ips.iter().all(|ip| {
                    n.iter().any(|i| selection.includes(&i.name, i.usage) && i.on_subnet(*ip))
                });
                prop_assert!(!any_selected || !all_on_subnet);
            }
        }
    }
}
