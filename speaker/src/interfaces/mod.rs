//! Which network interfaces the speaker announces on: the pure eligibility
//! rules ([`Link`], [`eligibility`]) and the netlink watcher that follows the
//! kernel's links ([`netlink`]).
//!
//! By default the speaker announces on the links that look like the LAN:
//! up, Ethernet, doing ARP, not a bridge or bond member, and not named like
//! a virtual or CNI interface ([`EXCLUDED_PREFIXES`]). An interface an
//! L2Advertisement names explicitly (`spec.interfaces`) is the user's
//! choice, so its name is not held against it: a `veth*` or `docker*`
//! link the user really announces on is used, for the IPs of the
//! advertisements that name it only. What makes a link unusable whatever
//! its name (loopback, no Ethernet address, NOARP, down, enslaved) still
//! applies.

pub mod address;
pub mod netlink;
pub mod pattern;

use std::collections::BTreeSet;

use crate::packet::MacAddr;

/// What the speaker needs to know about one kernel link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// Hardware address, when it is a 6-byte (Ethernet) one.
    pub mac: Option<MacAddr>,
    /// `IFF_UP`: administratively up.
    pub up: bool,
    /// `IFF_LOWER_UP`: carrier present.
    pub lower_up: bool,
    /// `IFF_LOOPBACK`.
    pub loopback: bool,
    /// `IFF_NOARP`: the link does not do neighbour resolution.
    pub noarp: bool,
    /// `IFLA_MASTER`: the index of the bridge or bond this link is a
    /// member of; its traffic belongs to that device.
    pub controller: Option<u32>,
}

/// Name prefixes of virtual interfaces that never carry the LAN: container
/// runtimes, CNI plugins, kube-proxy's dummy and tunnels.
pub const EXCLUDED_PREFIXES: &[&str] = &[
    "lo",
    "docker",
    "cni",
    "veth",
    "cali",
    "flannel",
    "lxc",
    "kube-ipvs",
    "cilium",
    "vxlan",
    "tunl",
    "weave",
];

/// Where an owned IP is announced: what the L2Advertisements selecting the
/// node ask for (the decision side), and what the data plane applies to the
/// interfaces it has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InterfaceSelection {
    /// On every interface eligible by default ([`Usage::Default`]).
    All,
    /// On every interface eligible by default and on these (by name), also
    /// when the default rule excludes them by name (an advertisement without
    /// `interfaces` and one naming some both select the node).
    AllAnd(BTreeSet<String>),
    /// On these interfaces only (by name), where they are eligible
    /// (`L2Advertisement.interfaces`), including those the default rule
    /// excludes by name ([`Usage::Named`]).
    Only(BTreeSet<String>),
}

impl InterfaceSelection {
    /// Whether the interface `name`, open for `usage`, is selected. The
    /// names are patterns ([`pattern`]): `eth0.*` selects every VLAN of eth0.
    #[must_use]
    pub fn includes(&self, name: &str, usage: Usage) -> bool {
        match self {
            Self::All => usage == Usage::Default,
            Self::AllAnd(names) => usage == Usage::Default || names_match(names, name),
            Self::Only(names) => names_match(names, name),
        }
    }

    /// The interfaces announced by either selection.
    #[must_use]
    pub fn union(self, other: Self) -> Self {
        match (self, other) {
            (Self::All, Self::All) => Self::All,
            (Self::Only(mut a), Self::Only(b)) => {
                a.extend(b);
                Self::Only(a)
            }
            (a, b) => {
                let mut names = a.into_names();
                names.extend(b.into_names());
                Self::AllAnd(names)
            }
        }
    }

    fn into_names(self) -> BTreeSet<String> {
        match self {
            Self::All => BTreeSet::new(),
            Self::AllAnd(names) | Self::Only(names) => names,
        }
    }
}

/// An interface a node can announce on, as its speaker publishes it in
/// its SpeakerStatus (`status.interfaceAddresses`) and every speaker reads
/// it back for eligibility.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct NodeInterface {
    /// The interface name.
    pub name: String,
    /// Its global addresses, sorted.
    pub addresses: Vec<address::InterfaceAddress>,
    /// How it is announced on: [`Usage::Named`] when the default rule
    /// excludes it by its name.
    pub usage: Usage,
}

impl NodeInterface {
    /// Whether `ip` is on the subnet of one of the interface's addresses.
    #[must_use]
    pub fn on_subnet(&self, ip: std::net::IpAddr) -> bool {
        self.addresses.iter().any(|a| a.on_subnet(ip))
    }

    /// Whether the interface holds `ip` itself.
    #[must_use]
    pub fn holds(&self, ip: std::net::IpAddr) -> bool {
        self.addresses.iter().any(|a| a.ip() == ip)
    }
}

/// The interfaces a speaker publishes: every link usable by its default
/// rule, and of those usable only when named, the ones the
/// L2Advertisements selecting the node name (`named`, names or patterns)
/// or that hold a global address (the node's InternalIP may be on one).
/// Pod veths (no address, not named) stay out, so pods coming and going
/// do not rewrite the SpeakerStatus. Sorted by name.
#[must_use]
pub fn published<S: AsRef<str>>(
    links: &std::collections::BTreeMap<u32, Link>,
    addresses: &std::collections::BTreeMap<u32, BTreeSet<address::InterfaceAddress>>,
    excluded_prefixes: &[S],
    named: &BTreeSet<String>,
) -> Vec<NodeInterface> {
    let mut out: Vec<NodeInterface> = links
        .values()
        .filter_map(|link| {
            let usage = eligibility(link, excluded_prefixes, true).ok()?;
            let addresses: Vec<address::InterfaceAddress> = addresses
                .get(&link.index)
                .into_iter()
                .flatten()
                .filter(|a| a.is_global())
                .copied()
                .collect();
            let wanted =
                usage == Usage::Default || names_match(named, &link.name) || !addresses.is_empty();
            wanted.then(|| NodeInterface {
                name: link.name.clone(),
                addresses,
                usage,
            })
        })
        .collect();
    out.sort();
    out
}

/// Whether one of the names or name patterns `names` matches `name`.
#[must_use]
pub fn names_match<S: AsRef<str>>(names: impl IntoIterator<Item = S>, name: &str) -> bool {
    names
        .into_iter()
        .any(|pattern| pattern::matches(pattern.as_ref(), name))
}

/// How an eligible link is announced on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Usage {
    /// For every owned IP: the link passes the default rule.
    Default,
    /// Only for the IPs whose L2Advertisement names it: its name matches a
    /// default exclusion, which naming it overrides.
    Named,
}

/// Why a link is not announced on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exclusion {
    /// The loopback device.
    Loopback,
    /// A virtual interface by name (the matching prefix).
    VirtualName(String),
    /// A member of a bridge or bond (its controller's index).
    Member(u32),
    /// A link with `IFF_NOARP`.
    NoArp,
    /// A link that is administratively down.
    Down,
    /// A link without an Ethernet address.
    NotEthernet,
}

impl std::fmt::Display for Exclusion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Loopback => f.write_str("loopback"),
            Self::VirtualName(prefix) => write!(f, "virtual interface ({prefix}*)"),
            Self::Member(controller) => write!(
                f,
                "member of the bridge or bond with interface index {controller}, which carries its traffic"
            ),
            Self::NoArp => f.write_str("NOARP"),
            Self::Down => f.write_str("down"),
            Self::NotEthernet => f.write_str("no Ethernet address"),
        }
    }
}

/// Whether `link` is one to announce on, how, and if not why. `named`
/// says whether an L2Advertisement names the link explicitly: then a name
/// matching one of `excluded_prefixes` does not exclude it.
///
/// A link without carrier (`!lower_up`) stays eligible: its socket can be
/// open before the cable is, and the first announcements go out when the
/// kernel brings it up and reports it again.
///
/// # Errors
///
/// The reason the link is excluded. For a named link it is never
/// [`Exclusion::VirtualName`].
pub fn eligibility<S: AsRef<str>>(
    link: &Link,
    excluded_prefixes: &[S],
    named: bool,
) -> Result<Usage, Exclusion> {
    if link.loopback {
        return Err(Exclusion::Loopback);
    }
    let mut usage = Usage::Default;
    if let Some(prefix) = excluded_prefixes
        .iter()
        .find(|prefix| link.name.starts_with(prefix.as_ref()))
    {
        if !named {
            return Err(Exclusion::VirtualName(prefix.as_ref().to_owned()));
        }
        usage = Usage::Named;
    }
    if let Some(controller) = link.controller {
        return Err(Exclusion::Member(controller));
    }
    if link.noarp {
        return Err(Exclusion::NoArp);
    }
    if !link.up {
        return Err(Exclusion::Down);
    }
    if link.mac.is_none_or(|mac| mac == MacAddr::zero()) {
        return Err(Exclusion::NotEthernet);
    }
    Ok(usage)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ethernet(name: &str) -> Link {
        Link {
            index: 2,
            name: name.to_owned(),
            mac: Some(MacAddr::new(2, 0, 0, 0, 0, 2)),
            up: true,
            lower_up: true,
            loopback: false,
            noarp: false,
            controller: None,
        }
    }

    #[test]
    fn default_exclusions() {
        let cases: Vec<(&str, Link, Result<Usage, Exclusion>)> = vec![
            ("physical NIC", ethernet("eth0"), Ok(Usage::Default)),
            ("predictable name", ethernet("enp3s0f1"), Ok(Usage::Default)),
            ("bond itself", ethernet("bond0"), Ok(Usage::Default)),
            ("bridge itself", ethernet("br-lan"), Ok(Usage::Default)),
            ("VLAN on a NIC", ethernet("eth0.100"), Ok(Usage::Default)),
            ("VLAN on a bond", ethernet("bond0.200"), Ok(Usage::Default)),
            (
                "predictable VLAN name",
                ethernet("enp3s0.42"),
                Ok(Usage::Default),
            ),
            (
                "no carrier yet",
                Link {
                    lower_up: false,
                    ..ethernet("eth1")
                },
                Ok(Usage::Default),
            ),
            (
                "loopback",
                Link {
                    loopback: true,
                    mac: Some(MacAddr::zero()),
                    ..ethernet("lo")
                },
                Err(Exclusion::Loopback),
            ),
            (
                "lo by name",
                ethernet("lo0"),
                Err(Exclusion::VirtualName("lo".to_owned())),
            ),
            (
                "docker bridge",
                ethernet("docker0"),
                Err(Exclusion::VirtualName("docker".to_owned())),
            ),
            (
                "CNI bridge",
                ethernet("cni0"),
                Err(Exclusion::VirtualName("cni".to_owned())),
            ),
            (
                "pod veth",
                ethernet("veth1a2b3c"),
                Err(Exclusion::VirtualName("veth".to_owned())),
            ),
            (
                "calico",
                ethernet("cali12345"),
                Err(Exclusion::VirtualName("cali".to_owned())),
            ),
            (
                "flannel",
                ethernet("flannel.1"),
                Err(Exclusion::VirtualName("flannel".to_owned())),
            ),
            (
                "lxc",
                ethernet("lxc_health"),
                Err(Exclusion::VirtualName("lxc".to_owned())),
            ),
            (
                "kube-proxy IPVS dummy",
                ethernet("kube-ipvs0"),
                Err(Exclusion::VirtualName("kube-ipvs".to_owned())),
            ),
            (
                "cilium",
                ethernet("cilium_host"),
                Err(Exclusion::VirtualName("cilium".to_owned())),
            ),
            (
                "vxlan",
                ethernet("vxlan.calico"),
                Err(Exclusion::VirtualName("vxlan".to_owned())),
            ),
            (
                "IPIP tunnel",
                ethernet("tunl0"),
                Err(Exclusion::VirtualName("tunl".to_owned())),
            ),
            (
                "weave",
                ethernet("weave"),
                Err(Exclusion::VirtualName("weave".to_owned())),
            ),
            (
                "bond member",
                Link {
                    controller: Some(7),
                    ..ethernet("eth2")
                },
                Err(Exclusion::Member(7)),
            ),
            (
                "NOARP link",
                Link {
                    noarp: true,
                    ..ethernet("wg0")
                },
                Err(Exclusion::NoArp),
            ),
            (
                "down",
                Link {
                    up: false,
                    ..ethernet("eth3")
                },
                Err(Exclusion::Down),
            ),
            (
                "no hardware address",
                Link {
                    mac: None,
                    ..ethernet("ppp0")
                },
                Err(Exclusion::NotEthernet),
            ),
        ];
        for (name, link, expected) in cases {
            assert_eq!(
                eligibility(&link, EXCLUDED_PREFIXES, false),
                expected,
                "{name}"
            );
        }
    }

    #[test]
    fn naming_an_interface_overrides_its_name_only() {
        let cases: Vec<(&str, Link, Result<Usage, Exclusion>)> = vec![
            ("pod veth", ethernet("veth1a2b3c"), Ok(Usage::Named)),
            ("docker bridge", ethernet("docker0"), Ok(Usage::Named)),
            ("CNI bridge", ethernet("cni0"), Ok(Usage::Named)),
            ("lxc bridge", ethernet("lxcbr0"), Ok(Usage::Named)),
            (
                "vxlan with an Ethernet address",
                ethernet("vxlan100"),
                Ok(Usage::Named),
            ),
            (
                "no carrier yet",
                Link {
                    lower_up: false,
                    ..ethernet("veth9")
                },
                Ok(Usage::Named),
            ),
            // Named and eligible anyway: usable for every IP, as without the name.
            ("physical NIC", ethernet("eth0"), Ok(Usage::Default)),
            ("bridge itself", ethernet("br-lan"), Ok(Usage::Default)),
            // What no name overrides.
            (
                "loopback",
                Link {
                    loopback: true,
                    mac: Some(MacAddr::zero()),
                    ..ethernet("lo")
                },
                Err(Exclusion::Loopback),
            ),
            (
                "loopback-like name without an Ethernet address",
                Link {
                    mac: Some(MacAddr::zero()),
                    ..ethernet("lo0")
                },
                Err(Exclusion::NotEthernet),
            ),
            (
                "kube-proxy IPVS dummy, NOARP",
                Link {
                    noarp: true,
                    ..ethernet("kube-ipvs0")
                },
                Err(Exclusion::NoArp),
            ),
            (
                "down veth",
                Link {
                    up: false,
                    ..ethernet("veth0")
                },
                Err(Exclusion::Down),
            ),
            (
                "IPIP tunnel without a hardware address",
                Link {
                    mac: None,
                    noarp: false,
                    ..ethernet("tunl0")
                },
                Err(Exclusion::NotEthernet),
            ),
            (
                "veth enslaved to a bridge",
                Link {
                    controller: Some(9),
                    ..ethernet("veth7")
                },
                Err(Exclusion::Member(9)),
            ),
            (
                "bond member",
                Link {
                    controller: Some(7),
                    ..ethernet("eth2")
                },
                Err(Exclusion::Member(7)),
            ),
        ];
        for (name, link, expected) in cases {
            assert_eq!(
                eligibility(&link, EXCLUDED_PREFIXES, true),
                expected,
                "{name}"
            );
        }
    }

    #[test]
    fn what_a_speaker_publishes() {
        use std::collections::BTreeMap;
        let mut links = BTreeMap::new();
        let mut addresses: BTreeMap<u32, BTreeSet<address::InterfaceAddress>> = BTreeMap::new();
        let mut add = |index: u32, link: Link, addrs: &[&str]| {
            links.insert(index, Link { index, ..link });
            addresses.insert(index, addrs.iter().map(|a| a.parse().unwrap()).collect());
        };
        add(2, ethernet("bond0"), &[]);
        add(
            3,
            Link {
                controller: Some(2),
                ..ethernet("eth0")
            },
            &[],
        );
        add(4, ethernet("bond0.200"), &["198.18.2.11/24", "fe80::1/64"]);
        add(5, ethernet("veth12ab"), &[]);
        add(6, ethernet("cni0"), &["198.19.0.1/24"]);
        add(
            7,
            Link {
                loopback: true,
                ..ethernet("lo")
            },
            &["127.0.0.1/8"],
        );
        add(8, ethernet("vethnamed"), &[]);
        let named: BTreeSet<String> = ["veth*named".to_owned()].into();
        let got = published(&links, &addresses, EXCLUDED_PREFIXES, &named);
        let summary: Vec<(String, Vec<String>, Usage)> = got
            .iter()
            .map(|i| {
                let addrs = i.addresses.iter().map(ToString::to_string).collect();
                (i.name.clone(), addrs, i.usage)
            })
            .collect();
        let row = |name: &str, addrs: &[&str], usage| {
            let addrs = addrs.iter().map(|a| (*a).to_owned()).collect();
            (name.to_owned(), addrs, usage)
        };
        assert_eq!(
            summary,
            [
                row("bond0", &[], Usage::Default),
                row("bond0.200", &["198.18.2.11/24"], Usage::Default),
                row("cni0", &["198.19.0.1/24"], Usage::Named),
                row("vethnamed", &[], Usage::Named),
            ],
            "bond members, loopback and unnamed address-less veths stay out"
        );
        assert!(got[1].on_subnet("198.18.2.200".parse().unwrap()));
        assert!(got[1].holds("198.18.2.11".parse().unwrap()));
        assert!(!got[1].holds("198.18.2.12".parse().unwrap()));
    }

    #[test]
    fn prefixes_are_configurable() {
        // The integration test announces on a veth, which is excluded by default.
        assert_eq!(
            eligibility(&ethernet("veth0"), &["lo", "docker"], false),
            Ok(Usage::Default)
        );
        assert_eq!(
            eligibility::<&str>(&ethernet("eth0"), &[], false),
            Ok(Usage::Default)
        );
    }
}
