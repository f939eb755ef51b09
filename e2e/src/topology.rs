//! A second topology beside the lab's flat LAN, with the network shapes real
//! clusters have: two LAN segments on two bridges with a router namespace
//! between them and a client on each; nodes whose LAN interface is an 802.1Q
//! VLAN sub-interface of a trunk; a node with an active-backup bond of two
//! links.
//!
//! ```text
//!              root namespace: kube-apiserver on 198.18.0.1 (flb0, the main LAN)
//!                    | flbs-up 198.18.42.1/30
//!                    | uplink  198.18.42.2/30
//!               +----+-----------------------------+
//!               |  router (flbs-router), forwards  |
//!               +--leg-a------------------leg-b----+
//!       198.18.40.1 |                        | 198.18.41.1
//!  bridge flbs-a, VLAN filtering          bridge flbs-b
//!  ports: router, client A, bond links    ports: router, client B, b1, b2
//!         untagged in VLAN 100
//!         a1, a2: trunks, VLAN 100 tagged
//!    |            |           |                 |            |
//!  shapes-a1   shapes-a2   shapes-a3         shapes-b1    shapes-b2
//!  eth0.100    eth0.100    bond0 = lan0+lan1 eth0         eth0
//!  .40.11      .40.12      .40.13            .41.11       .41.12
//! ```
//!
//! The shared lab's control plane is reused: each extra node gets a Node
//! object (labelled [`TOPOLOGY_LABEL`]`=shapes` and tainted so nothing is
//! scheduled on it), and reaches the API server through the router, whose
//! uplink is a point-to-point veth to the root namespace (the root namespace
//! routes only the two segments to it and holds no address on their bridges,
//! so the router alone joins them). The lab's three nodes and their tests are
//! untouched: nothing here is on `flb0`, and `Lab::nodes()` does not list
//! these nodes.
//!
//! Everything carries the `flbs-` prefix (namespaces, bridges and the
//! root-namespace ends of veths): [`destroy`] removes it all, and
//! `cargo lab down` calls it.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use crate::command::{run, succeeds};
use crate::ipvs;
use crate::lab::Lab;
use crate::lan::{Host, INNER_IFACE};
use crate::process;

/// Prefix of every namespace, bridge and root-namespace veth end made here.
pub const PREFIX: &str = "flbs-";
/// The VLAN segment A's nodes, client and router are in.
pub const VLAN: u16 = 100;
/// The label every extra node carries, with value `shapes`.
pub const TOPOLOGY_LABEL: &str = "ferrolb.io/lab-topology";
/// The label naming a node's segment: `a` or `b`.
pub const SEGMENT_LABEL: &str = "ferrolb.io/lab-segment";
/// The label naming how a node's LAN interface is built: `vlan`, `bond`, `plain`.
pub const LINK_LABEL: &str = "ferrolb.io/lab-link";
/// The router's namespace.
pub const ROUTER_NETNS: &str = "flbs-router";
/// The root-namespace end of the router's uplink.
const UPLINK: &str = "flbs-up";
/// The root namespace's address on the uplink.
const UPLINK_ROOT: Ipv4Addr = Ipv4Addr::new(198, 18, 42, 1);
/// The router's address on the uplink.
const UPLINK_ROUTER: Ipv4Addr = Ipv4Addr::new(198, 18, 42, 2);
/// The API server's address, the only main-LAN address the segments route.
const API_SERVER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);

/// One of the two LAN segments.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Segment {
    /// 198.18.40.0/24, 2001:db8:40::/64: bridge `flbs-a`, VLAN 100.
    A,
    /// 198.18.41.0/24, 2001:db8:41::/64: bridge `flbs-b`.
    B,
}

impl Segment {
    /// Both segments.
    pub const ALL: [Self; 2] = [Self::A, Self::B];

    /// `a` or `b`: the label value and the names' letter.
    pub fn letter(self) -> &'static str {
        match self {
            Self::A => "a",
            Self::B => "b",
        }
    }

    /// The segment's bridge in the root namespace.
    pub fn bridge(self) -> String {
        format!("{PREFIX}{}", self.letter())
    }

    fn octet(self) -> u8 {
        match self {
            Self::A => 40,
            Self::B => 41,
        }
    }

    /// The segment's address `last` (`.last`, `::last` read as in the main LAN).
    pub fn v4(self, last: u8) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, self.octet(), last)
    }

    /// The segment's IPv6 address `::last`, written with the IPv4 digits.
    pub fn v6(self, last: u16) -> Ipv6Addr {
        // Both groups read like the IPv4 digits: 198.18.40.11 is 2001:db8:40::11.
        let hex = |n: u16| u16::from_str_radix(&n.to_string(), 16).unwrap_or(n);
        Ipv6Addr::new(
            0x2001,
            0xdb8,
            hex(u16::from(self.octet())),
            0,
            0,
            0,
            0,
            hex(last),
        )
    }

    /// The router's address on the segment (the nodes' gateway).
    pub fn gateway_v4(self) -> Ipv4Addr {
        self.v4(1)
    }

    /// The router's IPv6 address on the segment.
    pub fn gateway_v6(self) -> Ipv6Addr {
        self.v6(1)
    }

    fn other(self) -> Self {
        match self {
            Self::A => Self::B,
            Self::B => Self::A,
        }
    }
}

/// How a node's LAN interface is built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkShape {
    /// `eth0` is a trunk (VLAN 100 tagged, nothing untagged) and `eth0.100`
    /// holds the node's addresses.
    Vlan,
    /// `bond0` (active-backup, miimon 100) over `lan0` and `lan1`, two links
    /// to the bridge, holds the addresses.
    Bond,
    /// `eth0` on the bridge holds the addresses.
    Plain,
    /// Where the kernel has no bonding: `br0`, a bridge with the kernel's
    /// spanning tree over `lan0` and `lan1`, two links to the segment's
    /// bridge, holds the addresses. The tree blocks one link and unblocks it
    /// when the other fails: redundant links with one active, like an
    /// active-backup bond, with the spanning tree's timings.
    StpPair,
}

impl LinkShape {
    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Self::Vlan => "vlan",
            Self::Bond => "bond",
            Self::Plain => "plain",
            Self::StpPair => "stp-pair",
        }
    }

    /// The interface holding the node's addresses, which the speaker
    /// should announce on.
    pub fn interface(self) -> String {
        match self {
            Self::Vlan => format!("{INNER_IFACE}.{VLAN}"),
            Self::Bond => "bond0".to_owned(),
            Self::Plain => INNER_IFACE.to_owned(),
            Self::StpPair => "br0".to_owned(),
        }
    }
}

/// An extra node: its host (name, namespace, addresses), segment and link.
#[derive(Clone, Debug)]
pub struct ShapeNode {
    /// The node's name, namespace and addresses. `host_veth` is the
    /// root-namespace end of its (first) link.
    pub host: Host,
    /// The segment it is on.
    pub segment: Segment,
    /// How its LAN interface is built.
    pub link: LinkShape,
}

impl ShapeNode {
    fn new(segment: Segment, index: u8, link: LinkShape) -> Self {
        let short = format!("{}{index}", segment.letter());
        let last = 10 + index;
        Self {
            host: Host {
                name: format!("shapes-{short}"),
                netns: format!("{PREFIX}{short}"),
                host_veth: format!("{PREFIX}{short}"),
                ipv4: segment.v4(last),
                ipv6: segment.v6(u16::from(last)),
            },
            segment,
            link,
        }
    }

    /// The interface holding its addresses (`eth0.100`, `bond0`, `eth0`).
    pub fn interface(&self) -> String {
        self.link.interface()
    }

    /// The root-namespace ends of its links: one, or two for the bond
    /// (`lan0`'s, then `lan1`'s).
    pub fn root_ports(&self) -> Vec<String> {
        match self.link {
            LinkShape::Bond | LinkShape::StpPair => vec![
                format!("{}x", self.host.host_veth),
                format!("{}y", self.host.host_veth),
            ],
            _ => vec![self.host.host_veth.clone()],
        }
    }
}

/// What the running kernel can build. This lab's kernel may lack 802.1Q
/// VLANs (`CONFIG_VLAN_8021Q`), bridge VLAN filtering
/// (`CONFIG_BRIDGE_VLAN_FILTERING`) and bonding (`CONFIG_BONDING`), and
/// cannot load modules: then the topology uses the substitutes the
/// [`LinkShape`]s describe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Support {
    /// VLAN sub-interfaces and a VLAN-filtering bridge.
    pub vlan: bool,
    /// Bonds.
    pub bond: bool,
}

impl Support {
    /// What this kernel supports: tried once per process (tests run in
    /// parallel, and the scratch namespace has one name), then remembered.
    pub fn probe() -> Result<Self> {
        static SUPPORT: std::sync::OnceLock<Result<Support, String>> = std::sync::OnceLock::new();
        SUPPORT
            .get_or_init(|| Self::try_each().map_err(|e| format!("{e:#}")))
            .clone()
            .map_err(anyhow::Error::msg)
    }

    /// Tries each in a scratch namespace.
    fn try_each() -> Result<Self> {
        let ns = format!("{PREFIX}probe");
        let _ = run("ip", &["netns", "delete", &ns]);
        ip(&["netns", "add", &ns])?;
        let tried = |args: &[&str]| {
            let mut all = vec!["-n", ns.as_str(), "link", "add"];
            all.extend_from_slice(args);
            succeeds("ip", &all)
        };
        let veth = tried(&["p0", "type", "veth", "peer", "name", "p1"]);
        let vlan = veth
            && tried(&["link", "p0", "name", "p0.100", "type", "vlan", "id", "100"])
            && tried(&["s0", "type", "bridge", "vlan_filtering", "1"]);
        let bond = tried(&["b0", "type", "bond", "mode", "active-backup"]);
        ip(&["netns", "delete", &ns])?;
        Ok(Self { vlan, bond })
    }

    /// What is missing, for messages; empty when nothing is.
    pub fn missing(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if !self.vlan {
            out.push("802.1Q VLANs / bridge VLAN filtering (CONFIG_VLAN_8021Q, CONFIG_BRIDGE_VLAN_FILTERING)");
        }
        if !self.bond {
            out.push("bonding (CONFIG_BONDING)");
        }
        out
    }
}

/// The extra nodes: on A two VLAN nodes and a bonded node, on B two plain
/// ones. Without kernel support, A's VLAN nodes are plain and the bonded
/// node is an [`LinkShape::StpPair`].
pub fn shape_nodes(support: Support) -> Vec<ShapeNode> {
    let vlan = if support.vlan {
        LinkShape::Vlan
    } else {
        LinkShape::Plain
    };
    let bond = if support.bond {
        LinkShape::Bond
    } else {
        LinkShape::StpPair
    };
    vec![
        ShapeNode::new(Segment::A, 1, vlan),
        ShapeNode::new(Segment::A, 2, vlan),
        ShapeNode::new(Segment::A, 3, bond),
        ShapeNode::new(Segment::B, 1, LinkShape::Plain),
        ShapeNode::new(Segment::B, 2, LinkShape::Plain),
    ]
}

/// The client of a segment (not a node): `.100`, `::100`, `eth0` untagged
/// on the segment (in VLAN 100 on A).
pub fn client(segment: Segment) -> Host {
    let short = format!("client{}", segment.letter());
    Host {
        name: format!("shapes-{short}"),
        netns: format!("{PREFIX}{short}"),
        host_veth: format!("{PREFIX}c{}", segment.letter()),
        ipv4: segment.v4(100),
        ipv6: segment.v6(100),
    }
}

/// The topology, built, with a Node object per extra node; removed (network
/// and Nodes) when dropped.
#[derive(Debug)]
pub struct Topology {
    /// The extra nodes.
    pub nodes: Vec<ShapeNode>,
    /// What the kernel could build.
    pub support: Support,
    kubectl: PathBuf,
    kubeconfig: PathBuf,
}

impl Topology {
    /// Builds the network (removing leftovers of an interrupted run first)
    /// and registers the extra nodes with the lab's API server.
    pub async fn create(lab: &Lab) -> Result<Self> {
        destroy()?;
        let support = Support::probe()?;
        let nodes = shape_nodes(support);
        let topology = Self {
            nodes: nodes.clone(),
            support,
            kubectl: lab.tools().path("kubectl"),
            kubeconfig: lab.kubeconfig(),
        };
        topology.delete_nodes();
        build(&nodes, support).context("cannot build the shapes topology")?;
        register(&lab.client().await?, &nodes).await?;
        Ok(topology)
    }

    /// Leaves the topology in place (for `cargo lab shapes up`): nothing is
    /// removed when this returns; `cargo lab shapes down` or `cargo lab down`
    /// removes it.
    pub fn keep(self) {
        std::mem::forget(self);
    }

    /// Removes a topology left in place: the Node objects and the network.
    pub fn remove(lab: &Lab) -> Result<()> {
        let support = Support::probe()?;
        let topology = Self {
            nodes: shape_nodes(support),
            support,
            kubectl: lab.tools().path("kubectl"),
            kubeconfig: lab.kubeconfig(),
        };
        topology.delete_nodes();
        // Removed below, with the errors returned rather than printed.
        topology.keep();
        destroy()
    }

    /// What was built, for people: nodes, interfaces, addresses, clients.
    pub fn summary(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::from("shapes topology up beside the lab\n");
        for node in &self.nodes {
            let _ = writeln!(
                out,
                "  node {:<10} segment {}  {:<9} {:<9} {} {}  (ip netns exec {} …)",
                node.host.name,
                node.segment.letter().to_uppercase(),
                node.link.label(),
                node.interface(),
                node.host.ipv4,
                node.host.ipv6,
                node.host.netns
            );
        }
        for segment in Segment::ALL {
            let c = client(segment);
            let _ = writeln!(
                out,
                "  client of segment {}: {} {}  (ip netns exec {} …)",
                segment.letter().to_uppercase(),
                c.ipv4,
                c.ipv6,
                c.netns
            );
        }
        let _ = writeln!(
            out,
            "  router: {ROUTER_NETNS}; kernel support: {:?}{}",
            self.support,
            if self.support.missing().is_empty() {
                String::new()
            } else {
                format!(" (missing: {})", self.support.missing().join("; "))
            }
        );
        out.push_str("remove with `cargo lab shapes down` (or `cargo lab down`)");
        out
    }

    /// The extra node named `name`.
    pub fn node(&self, name: &str) -> Result<&ShapeNode> {
        self.nodes
            .iter()
            .find(|n| n.host.name == name)
            .with_context(|| format!("{name} is not a node of the shapes topology"))
    }

    /// The nodes of `segment`.
    pub fn in_segment(&self, segment: Segment) -> Vec<&ShapeNode> {
        self.nodes.iter().filter(|n| n.segment == segment).collect()
    }

    /// The MAC address of `node`'s LAN interface (lowercase): the one that
    /// should answer for the IPs it owns.
    pub fn mac(&self, node: &ShapeNode) -> Result<String> {
        link_mac(&node.host.netns, &node.interface())
    }

    /// Binds `ips` to `kube-ipvs0` in every extra node, as IPVS kube-proxy
    /// does (the lab's node agents do it only for the lab's nodes), with
    /// strictARP's sysctls, so the owner answers ping and only the speaker
    /// answers ARP and neighbour solicitations.
    pub fn bind_vips(&self, ips: &[IpAddr]) -> Result<()> {
        let ips: BTreeSet<IpAddr> = ips.iter().copied().collect();
        let hosts: Vec<Host> = self.nodes.iter().map(|n| n.host.clone()).collect();
        ipvs::set_strict_arp(&hosts, true)?;
        for host in &hosts {
            ipvs::sync_addresses(host, &ips)?;
        }
        Ok(())
    }

    /// The root-namespace end of the link `node` sends through now: the
    /// bond's active member, or the spanning tree's forwarding port.
    pub fn active_port(&self, node: &ShapeNode) -> Result<String> {
        let ns = node.host.netns.as_str();
        let active = match node.link {
            LinkShape::Bond => {
                let out = run("ip", &["-n", ns, "-d", "-j", "link", "show", "bond0"])?;
                let links: serde_json::Value =
                    serde_json::from_str(&out).context("cannot parse `ip -j link` output")?;
                links
                    .get(0)
                    .and_then(|l| l["linkinfo"]["info_data"]["active_slave"].as_str())
                    .map(str::to_owned)
            }
            LinkShape::StpPair => {
                let out = run("ip", &["netns", "exec", ns, "bridge", "-j", "link", "show"])?;
                let ports: serde_json::Value =
                    serde_json::from_str(&out).context("cannot parse `bridge -j link` output")?;
                ports
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|p| p["state"] == "forwarding")
                    .and_then(|p| p["ifname"].as_str())
                    .map(str::to_owned)
            }
            _ => bail!("{} has a single link", node.host.name),
        };
        let ports = node.root_ports();
        match active.as_deref() {
            Some("lan0") => Ok(ports[0].clone()),
            Some("lan1") => Ok(ports[1].clone()),
            other => bail!("{} sends through {other:?}", node.host.name),
        }
    }

    /// Deletes the extra nodes' Node objects and the SpeakerStatuses named
    /// after them (a killed speaker leaves its own).
    fn delete_nodes(&self) {
        let names: Vec<&str> = self.nodes.iter().map(|n| n.host.name.as_str()).collect();
        for kind in ["node", "speakerstatuses.ferrolb.io"] {
            let _ = Command::new(&self.kubectl)
                .arg("--kubeconfig")
                .arg(&self.kubeconfig)
                .args(["delete", kind, "--ignore-not-found", "--wait=false"])
                .args(&names)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        self.delete_nodes();
        if let Err(e) = destroy() {
            eprintln!("cannot remove the shapes topology: {e:#} (run `cargo lab down`)");
        }
    }
}

/// A root-namespace link (a bridge port) set down, as pulling its cable
/// would; set up again when dropped.
#[derive(Debug)]
pub struct PortDown {
    port: String,
}

impl PortDown {
    /// Sets `port` down.
    pub fn set(port: &str) -> Result<Self> {
        run("ip", &["link", "set", port, "down"])?;
        Ok(Self {
            port: port.to_owned(),
        })
    }
}

impl Drop for PortDown {
    fn drop(&mut self) {
        let _ = run("ip", &["link", "set", &self.port, "up"]);
    }
}

/// The MAC address of `iface` in `netns` (lowercase).
pub fn link_mac(netns: &str, iface: &str) -> Result<String> {
    let out = run("ip", &["-n", netns, "-j", "link", "show", iface])?;
    let links: serde_json::Value =
        serde_json::from_str(&out).context("cannot parse `ip -j link` output")?;
    links
        .get(0)
        .and_then(|l| l["address"].as_str())
        .map(str::to_lowercase)
        .with_context(|| format!("no MAC address on {iface} in {netns}"))
}

fn ip(args: &[&str]) -> Result<()> {
    run("ip", args).map(drop)
}

fn sysctl(netns: &str, key: &str, value: &str) -> Result<()> {
    ip(&[
        "netns",
        "exec",
        netns,
        "sysctl",
        "-q",
        "-w",
        &format!("{key}={value}"),
    ])
}

/// A namespace with loopback up and no duplicate address detection (so
/// addresses are usable at once, as on the main LAN).
fn namespace(netns: &str) -> Result<()> {
    ip(&["netns", "add", netns])?;
    ip(&["-n", netns, "link", "set", "lo", "up"])?;
    sysctl(netns, "net.ipv6.conf.all.accept_dad", "0")?;
    sysctl(netns, "net.ipv6.conf.default.accept_dad", "0")
}

/// A veth pair from the root namespace (`root`, down) into `netns` (`inner`).
fn veth(root: &str, netns: &str, inner: &str) -> Result<()> {
    ip(&[
        "link", "add", root, "type", "veth", "peer", "name", inner, "netns", netns,
    ])
}

/// How a bridge port carries VLAN 100 on segment A.
#[derive(Clone, Copy)]
enum Port {
    /// Untagged frames belong to VLAN 100 (an access port).
    Access,
    /// Only frames tagged 100 pass (a trunk); untagged ones are dropped.
    Trunk,
}

/// Puts `port` on `segment`'s bridge and sets it up.
fn plug(segment: Segment, port: &str, kind: Port) -> Result<()> {
    ip(&["link", "set", port, "master", &segment.bridge()])?;
    let filtering = run("ip", &["-d", "-j", "link", "show", &segment.bridge()])?
        .contains("\"vlan_filtering\":1");
    if filtering {
        let vid = VLAN.to_string();
        // Out of the default VLAN 1, into VLAN 100.
        run("bridge", &["vlan", "del", "dev", port, "vid", "1"])?;
        match kind {
            Port::Access => run(
                "bridge",
                &["vlan", "add", "dev", port, "vid", &vid, "pvid", "untagged"],
            )?,
            Port::Trunk => run("bridge", &["vlan", "add", "dev", port, "vid", &vid])?,
        };
    }
    ip(&["link", "set", port, "up"])
}

fn address(netns: &str, iface: &str, v4: Ipv4Addr, v6: Ipv6Addr) -> Result<()> {
    ip(&[
        "-n",
        netns,
        "addr",
        "add",
        &format!("{v4}/24"),
        "dev",
        iface,
    ])?;
    ip(&[
        "-n",
        netns,
        "-6",
        "addr",
        "add",
        &format!("{v6}/64"),
        "dev",
        iface,
        "nodad",
    ])
}

/// Routes of a host on `segment`: the other segment and the API server
/// through the router. No default route: nothing leaves the lab.
fn routes(netns: &str, segment: Segment) -> Result<()> {
    let gw4 = segment.gateway_v4().to_string();
    let gw6 = segment.gateway_v6().to_string();
    let other = segment.other();
    ip(&[
        "-n",
        netns,
        "route",
        "add",
        &format!("{}/24", other.v4(0)),
        "via",
        &gw4,
    ])?;
    ip(&[
        "-n",
        netns,
        "route",
        "add",
        &format!("{API_SERVER}/32"),
        "via",
        &gw4,
    ])?;
    ip(&[
        "-n",
        netns,
        "-6",
        "route",
        "add",
        &format!("{}/64", other.v6(0)),
        "via",
        &gw6,
    ])
}

fn build(nodes: &[ShapeNode], support: Support) -> Result<()> {
    for segment in Segment::ALL {
        let bridge = segment.bridge();
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        // Without snooping the bridge floods IPv6 multicast, so neighbour
        // discovery works at once (as on flb0).
        ip(&[
            "link",
            "set",
            &bridge,
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ])?;
        if segment == Segment::A && !support.bond {
            // The switch runs the spanning tree too, as the root bridge: the
            // node's blocked link then holds the root's information and takes
            // over within two forward delays when the other fails (instead
            // of waiting for its own stale information to age out first).
            ip(&[
                "link",
                "set",
                &bridge,
                "type",
                "bridge",
                "stp_state",
                "1",
                "priority",
                "4096",
                "forward_delay",
                "200",
                "hello_time",
                "100",
                "max_age",
                "600",
            ])?;
        }
        if segment == Segment::A && support.vlan {
            ip(&[
                "link",
                "set",
                &bridge,
                "type",
                "bridge",
                "vlan_filtering",
                "1",
            ])?;
        }
        // The bridges are pure switches: no address, no link-local either.
        ip(&["link", "set", &bridge, "addrgenmode", "none"])?;
        ip(&["link", "set", &bridge, "up"])?;
    }

    // The router: a leg in each segment and an uplink to the root namespace.
    namespace(ROUTER_NETNS)?;
    sysctl(ROUTER_NETNS, "net.ipv4.ip_forward", "1")?;
    sysctl(ROUTER_NETNS, "net.ipv6.conf.all.forwarding", "1")?;
    for segment in Segment::ALL {
        let leg = format!("leg-{}", segment.letter());
        let port = format!("{PREFIX}r{}", segment.letter());
        veth(&port, ROUTER_NETNS, &leg)?;
        plug(segment, &port, Port::Access)?;
        address(
            ROUTER_NETNS,
            &leg,
            segment.gateway_v4(),
            segment.gateway_v6(),
        )?;
        ip(&["-n", ROUTER_NETNS, "link", "set", &leg, "up"])?;
    }
    veth(UPLINK, ROUTER_NETNS, "uplink")?;
    ip(&["addr", "add", &format!("{UPLINK_ROOT}/30"), "dev", UPLINK])?;
    ip(&["link", "set", UPLINK, "addrgenmode", "none"])?;
    ip(&["link", "set", UPLINK, "up"])?;
    ip(&[
        "-n",
        ROUTER_NETNS,
        "addr",
        "add",
        &format!("{UPLINK_ROUTER}/30"),
        "dev",
        "uplink",
    ])?;
    ip(&["-n", ROUTER_NETNS, "link", "set", "uplink", "up"])?;
    ip(&[
        "-n",
        ROUTER_NETNS,
        "route",
        "add",
        &format!("{API_SERVER}/32"),
        "via",
        &UPLINK_ROOT.to_string(),
    ])?;
    for segment in Segment::ALL {
        ip(&[
            "route",
            "add",
            &format!("{}/24", segment.v4(0)),
            "via",
            &UPLINK_ROUTER.to_string(),
            "dev",
            UPLINK,
        ])?;
    }

    for segment in Segment::ALL {
        let host = client(segment);
        namespace(&host.netns)?;
        veth(&host.host_veth, &host.netns, INNER_IFACE)?;
        plug(segment, &host.host_veth, Port::Access)?;
        address(&host.netns, INNER_IFACE, host.ipv4, host.ipv6)?;
        ip(&["-n", &host.netns, "link", "set", INNER_IFACE, "up"])?;
        routes(&host.netns, segment)?;
    }

    for node in nodes {
        build_node(node).with_context(|| format!("cannot build {}", node.host.name))?;
    }
    settle_spanning_trees(nodes)
}

/// Waits until no port of a spanning-tree bridge is still listening or
/// learning (two forward delays after it came up): until then it drops
/// traffic.
fn settle_spanning_trees(nodes: &[ShapeNode]) -> Result<()> {
    let mut views: Vec<Vec<String>> = vec![vec!["bridge".into(), "-j".into(), "link".into()]];
    for node in nodes.iter().filter(|n| n.link == LinkShape::StpPair) {
        views.push(
            [
                "ip",
                "netns",
                "exec",
                &node.host.netns,
                "bridge",
                "-j",
                "link",
            ]
            .map(str::to_owned)
            .to_vec(),
        );
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let mut settling = Vec::new();
        for view in &views {
            let args: Vec<&str> = view[1..].iter().map(String::as_str).collect();
            let out = run(&view[0], &args)?;
            let ports: serde_json::Value =
                serde_json::from_str(&out).context("cannot parse `bridge -j link` output")?;
            settling.extend(
                ports
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|p| {
                        p["ifname"]
                            .as_str()
                            .is_some_and(|n| ours(n) || n.starts_with("lan"))
                    })
                    .filter(|p| p["state"] == "listening" || p["state"] == "learning")
                    .filter_map(|p| p["ifname"].as_str().map(str::to_owned)),
            );
        }
        if settling.is_empty() {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            bail!("the spanning tree did not settle: {settling:?} still listening or learning");
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

fn build_node(node: &ShapeNode) -> Result<()> {
    let ns = node.host.netns.as_str();
    namespace(ns)?;
    let iface = node.interface();
    match node.link {
        LinkShape::Plain => {
            veth(&node.host.host_veth, ns, INNER_IFACE)?;
            plug(node.segment, &node.host.host_veth, Port::Access)?;
        }
        LinkShape::Vlan => {
            veth(&node.host.host_veth, ns, INNER_IFACE)?;
            plug(node.segment, &node.host.host_veth, Port::Trunk)?;
            ip(&["-n", ns, "link", "set", INNER_IFACE, "up"])?;
            ip(&[
                "-n",
                ns,
                "link",
                "add",
                "link",
                INNER_IFACE,
                "name",
                &iface,
                "type",
                "vlan",
                "id",
                &VLAN.to_string(),
            ])?;
        }
        LinkShape::Bond => {
            ip(&[
                "-n",
                ns,
                "link",
                "add",
                &iface,
                "type",
                "bond",
                "mode",
                "active-backup",
                "miimon",
                "100",
            ])?;
            for (member, port) in ["lan0", "lan1"].iter().zip(node.root_ports()) {
                veth(&port, ns, member)?;
                ip(&["-n", ns, "link", "set", member, "master", &iface])?;
                plug(node.segment, &port, Port::Access)?;
            }
        }
        LinkShape::StpPair => {
            // The kernel's spanning tree in a namespace other than the
            // root's (no user-space helper), with its shortest timers:
            // forward delay 2 s, hello 1 s, max age 6 s.
            ip(&[
                "-n",
                ns,
                "link",
                "add",
                &iface,
                "type",
                "bridge",
                "stp_state",
                "1",
                "forward_delay",
                "200",
                "hello_time",
                "100",
                "max_age",
                "600",
                "mcast_snooping",
                "0",
            ])?;
            for (member, port) in ["lan0", "lan1"].iter().zip(node.root_ports()) {
                veth(&port, ns, member)?;
                ip(&["-n", ns, "link", "set", member, "master", &iface])?;
                ip(&["-n", ns, "link", "set", member, "up"])?;
                plug(node.segment, &port, Port::Access)?;
            }
        }
    }
    address(ns, &iface, node.host.ipv4, node.host.ipv6)?;
    ip(&["-n", ns, "link", "set", &iface, "up"])?;
    routes(ns, node.segment)
}

/// Registers a Node object per extra node (InternalIPs, Ready), labelled
/// with the topology, its segment and its link shape, and tainted so that
/// the scheduler and DaemonSets leave it alone.
async fn register(client: &kube::Client, nodes: &[ShapeNode]) -> Result<()> {
    let hosts: Vec<&Host> = nodes.iter().map(|n| &n.host).collect();
    crate::nodes::register(client, &hosts).await?;
    let api: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    for node in nodes {
        let patch = json!({
            "metadata": {"labels": {
                TOPOLOGY_LABEL: "shapes",
                SEGMENT_LABEL: node.segment.letter(),
                LINK_LABEL: node.link.label(),
            }},
            "spec": {"taints": [{"key": TOPOLOGY_LABEL, "value": "shapes", "effect": "NoSchedule"}]},
        });
        api.patch(
            &node.host.name,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .with_context(|| format!("cannot label Node {}", node.host.name))?;
    }
    Ok(())
}

/// Whether `name` (a namespace or a root-namespace link) is this topology's.
fn ours(name: &str) -> bool {
    name.starts_with(PREFIX)
}

/// Removes the topology's network: processes left in its namespaces, the
/// namespaces (with their veths), its bridges, the uplink and the routes
/// through it. Idempotent; Node objects are the lab's API server's (gone
/// with it on `cargo lab down`).
pub fn destroy() -> Result<()> {
    let listed = run("ip", &["netns", "list"])?;
    let namespaces: Vec<&str> = listed
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| ours(n))
        .collect();
    for ns in &namespaces {
        let pids = run("ip", &["netns", "pids", ns]).unwrap_or_default();
        for pid in pids.lines().filter_map(|p| p.trim().parse::<i32>().ok()) {
            process::kill_now(pid);
        }
    }
    for ns in &namespaces {
        ip(&["netns", "delete", ns])?;
    }
    let links = run("ip", &["-j", "link", "show"])?;
    let links: serde_json::Value =
        serde_json::from_str(&links).context("cannot parse `ip -j link` output")?;
    for name in links
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["ifname"].as_str())
        .filter(|n| ours(n))
    {
        if succeeds("ip", &["link", "show", name]) {
            ip(&["link", "delete", name])?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_the_kernel_limit_and_carry_the_prefix() {
        let all = Support {
            vlan: true,
            bond: true,
        };
        let mut names: Vec<String> = shape_nodes(all)
            .iter()
            .flat_map(|n| {
                let mut v = n.root_ports();
                v.push(n.host.netns.clone());
                v.push(n.interface());
                v
            })
            .collect();
        for s in Segment::ALL {
            names.push(s.bridge());
            names.push(client(s).host_veth);
            names.push(client(s).netns);
        }
        names.push(UPLINK.to_owned());
        for name in &names {
            assert!(name.len() <= 15, "{name}");
        }
        assert!(
            names
                .iter()
                .filter(|n| !n.contains("eth0") && *n != "bond0")
                .all(|n| ours(n))
        );
    }

    #[test]
    fn addresses_follow_the_segment() {
        let nodes = shape_nodes(Support {
            vlan: true,
            bond: true,
        });
        assert_eq!(nodes[0].host.name, "shapes-a1");
        assert_eq!(nodes[0].host.ipv4, Ipv4Addr::new(198, 18, 40, 11));
        assert_eq!(nodes[0].host.ipv6.to_string(), "2001:db8:40::11");
        assert_eq!(nodes[3].host.ipv4, Ipv4Addr::new(198, 18, 41, 11));
        assert_eq!(client(Segment::B).ipv6.to_string(), "2001:db8:41::100");
        assert_eq!(Segment::A.v6(200).to_string(), "2001:db8:40::200");
        assert_eq!(nodes[2].interface(), "bond0");
        assert_eq!(nodes[0].interface(), "eth0.100");
        assert_eq!(nodes[2].root_ports(), ["flbs-a3x", "flbs-a3y"]);
        let without = shape_nodes(Support {
            vlan: false,
            bond: false,
        });
        assert_eq!(without[0].interface(), "eth0");
        assert_eq!(without[2].interface(), "br0");
    }

    #[test]
    fn lab_prefixes_do_not_overlap() {
        assert!(!ours("flb-node1") && !ours("flbh-node1") && !ours("flbp-node1-1"));
    }
}
