//! The lab's LAN: a bridge in the root namespace holding the gateway, node
//! namespaces and a client namespace, each attached by a veth pair.
//!
//! Only 198.18.0.0/15 and 2001:db8::/32 are used, there is no default route
//! and no NAT: traffic stays inside the namespaces the lab made.

use std::net::{Ipv4Addr, Ipv6Addr};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::command::{run, succeeds};

/// The bridge every lab namespace is attached to.
pub const BRIDGE: &str = "flb0";
/// The gateway (and API server) address on the bridge.
pub const GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// The gateway's IPv6 address on the bridge.
pub const GATEWAY_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x18, 0, 0, 0, 0, 1);
/// Prefix length of the LAN's IPv4 subnet, 198.18.0.0/24.
pub const PREFIX_V4: u8 = 24;
/// Prefix length of the LAN's IPv6 subnet, 2001:db8:18::/64.
pub const PREFIX_V6: u8 = 64;
/// The interface name inside every lab namespace.
pub const INNER_IFACE: &str = "eth0";
/// The most nodes a lab can have (node addresses stay below the client's).
pub const MAX_NODES: u8 = 50;
/// Prefix of every network namespace the lab creates.
const NETNS_PREFIX: &str = "flb-";
/// Prefix of the root-namespace end of every veth pair the lab creates.
const HOST_VETH_PREFIX: &str = "flbh-";

/// A host on the LAN: a node or the client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Host {
    /// Short name: `node1`…`nodeN` or `client`.
    pub name: String,
    /// The network namespace, `flb-<name>`.
    pub netns: String,
    /// The root-namespace end of its veth pair, `flbh-<name>`.
    pub host_veth: String,
    /// Its IPv4 address on the LAN.
    pub ipv4: Ipv4Addr,
    /// Its IPv6 address on the LAN.
    pub ipv6: Ipv6Addr,
}

impl Host {
    fn new(name: String, last: u16) -> Self {
        let last_octet = u8::try_from(last).unwrap_or(u8::MAX);
        // The IPv6 address reads like the IPv4 one: .11 is ::11.
        let v6_last = u16::from_str_radix(&last.to_string(), 16).unwrap_or(last);
        Self {
            netns: format!("{NETNS_PREFIX}{name}"),
            host_veth: format!("{HOST_VETH_PREFIX}{name}"),
            ipv4: Ipv4Addr::new(198, 18, 0, last_octet),
            ipv6: Ipv6Addr::new(0x2001, 0xdb8, 0x18, 0, 0, 0, 0, v6_last),
            name,
        }
    }

    /// Node `index` (1-based): 198.18.0.(10+index), 2001:db8:18::(10+index).
    pub fn node(index: u8) -> Self {
        Self::new(format!("node{index}"), 10 + u16::from(index))
    }

    /// The client: 198.18.0.100, 2001:db8:18::100; on the LAN, not a node.
    pub fn client() -> Self {
        Self::new("client".to_owned(), 100)
    }
}

/// The hosts of a lab with `nodes` nodes: the nodes, then the client.
pub fn hosts(nodes: u8) -> Vec<Host> {
    (1..=nodes)
        .map(Host::node)
        .chain(std::iter::once(Host::client()))
        .collect()
}

/// Resolves what a user typed (`node1`, `flb-node1`, `client`) to a lab netns.
pub fn netns_of(name: &str) -> Result<String> {
    let short = name.strip_prefix(NETNS_PREFIX).unwrap_or(name);
    let valid = short == "client"
        || short
            .strip_prefix("node")
            .is_some_and(|n| n.parse::<u8>().is_ok_and(|n| (1..=MAX_NODES).contains(&n)));
    if !valid {
        bail!("`{name}` is not a lab namespace: use node1…nodeN or client");
    }
    Ok(format!("{NETNS_PREFIX}{short}"))
}

/// The lab's network namespaces that exist now (whatever the lab's size).
pub fn existing_netns() -> Result<Vec<String>> {
    let out = run("ip", &["netns", "list"])?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| netns_of(n).is_ok_and(|full| full == *n))
        .map(str::to_owned)
        .collect())
}

/// Creates the bridge and every host's namespace; fails if any exists already.
pub fn create(hosts: &[Host]) -> Result<()> {
    if succeeds("ip", &["link", "show", BRIDGE]) {
        bail!("bridge {BRIDGE} already exists: run `cargo lab down` first");
    }
    run("ip", &["link", "add", BRIDGE, "type", "bridge"])?;
    // Without snooping the bridge floods IPv6 multicast, so neighbour
    // discovery works at once.
    run(
        "ip",
        &[
            "link",
            "set",
            BRIDGE,
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ],
    )?;
    sysctl(None, &format!("net.ipv6.conf.{BRIDGE}.accept_dad"), "0")?;
    run(
        "ip",
        &[
            "addr",
            "add",
            &format!("{GATEWAY_V4}/{PREFIX_V4}"),
            "dev",
            BRIDGE,
        ],
    )?;
    run(
        "ip",
        &[
            "-6",
            "addr",
            "add",
            &format!("{GATEWAY_V6}/{PREFIX_V6}"),
            "dev",
            BRIDGE,
            "nodad",
        ],
    )?;
    run("ip", &["link", "set", BRIDGE, "up"])?;
    for host in hosts {
        attach(host).with_context(|| format!("cannot attach {} to the LAN", host.name))?;
    }
    Ok(())
}

fn attach(host: &Host) -> Result<()> {
    let ns = host.netns.as_str();
    run("ip", &["netns", "add", ns])?;
    sysctl(Some(ns), "net.ipv6.conf.all.accept_dad", "0")?;
    sysctl(Some(ns), "net.ipv6.conf.default.accept_dad", "0")?;
    run(
        "ip",
        &[
            "link",
            "add",
            &host.host_veth,
            "type",
            "veth",
            "peer",
            "name",
            INNER_IFACE,
            "netns",
            ns,
        ],
    )?;
    run(
        "ip",
        &["link", "set", &host.host_veth, "master", BRIDGE, "up"],
    )?;
    run("ip", &["-n", ns, "link", "set", "lo", "up"])?;
    run(
        "ip",
        &[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{}/{PREFIX_V4}", host.ipv4),
            "dev",
            INNER_IFACE,
        ],
    )?;
    run(
        "ip",
        &[
            "-n",
            ns,
            "-6",
            "addr",
            "add",
            &format!("{}/{PREFIX_V6}", host.ipv6),
            "dev",
            INNER_IFACE,
            "nodad",
        ],
    )?;
    run("ip", &["-n", ns, "link", "set", INNER_IFACE, "up"])?;
    Ok(())
}

fn sysctl(netns: Option<&str>, key: &str, value: &str) -> Result<()> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    match netns {
        None => std::fs::write(&path, value).with_context(|| format!("cannot set {key}")),
        Some(ns) => run(
            "ip",
            &[
                "netns",
                "exec",
                ns,
                "sysctl",
                "-q",
                "-w",
                &format!("{key}={value}"),
            ],
        )
        .map(drop),
    }
}

/// Removes every lab namespace and the bridge. Idempotent.
pub fn destroy() -> Result<()> {
    for ns in existing_netns()? {
        // Deleting the namespace deletes its veth pair too.
        run("ip", &["netns", "delete", &ns])?;
    }
    if succeeds("ip", &["link", "show", BRIDGE]) {
        run("ip", &["link", "delete", BRIDGE])?;
    }
    Ok(())
}

/// Sets the root-namespace end of a host's veth down (`up == false`) or up:
/// the host's cable is cut or reconnected.
pub fn set_link(host: &Host, up: bool) -> Result<()> {
    let state = if up { "up" } else { "down" };
    run("ip", &["link", "set", &host.host_veth, state]).map(drop)
}

/// The MAC address of a host's LAN interface.
pub fn mac_of(host: &Host) -> Result<String> {
    let out = run(
        "ip",
        &["-n", &host.netns, "-j", "link", "show", INNER_IFACE],
    )?;
    let links: serde_json::Value =
        serde_json::from_str(&out).context("cannot parse `ip -j link` output")?;
    links
        .get(0)
        .and_then(|l| l.get("address"))
        .and_then(|a| a.as_str())
        .map(str::to_lowercase)
        .with_context(|| format!("no MAC address on {INNER_IFACE} in {}", host.netns))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_addresses_follow_the_index() {
        let n = Host::node(3);
        assert_eq!(n.netns, "flb-node3");
        assert_eq!(n.host_veth, "flbh-node3");
        assert_eq!(n.ipv4, Ipv4Addr::new(198, 18, 0, 13));
        assert_eq!(n.ipv6.to_string(), "2001:db8:18::13");
        assert_eq!(Host::client().ipv6.to_string(), "2001:db8:18::100");
    }

    #[test]
    fn netns_names_resolve() {
        assert_eq!(netns_of("node2").ok().as_deref(), Some("flb-node2"));
        assert_eq!(netns_of("flb-client").ok().as_deref(), Some("flb-client"));
        assert!(netns_of("eth0").is_err());
        assert!(netns_of("node0").is_err());
        assert!(netns_of("flb-nodex").is_err());
    }

    #[test]
    fn host_veth_names_fit_the_kernel_limit() {
        for h in hosts(MAX_NODES) {
            assert!(h.host_veth.len() <= 15, "{}", h.host_veth);
        }
    }
}
