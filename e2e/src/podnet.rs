//! Pod networking: a pod CIDR per node, a network namespace per pod wired
//! to its node by a veth pair, and static routes so that every node (and the
//! API server's namespace) reaches every pod.
//!
//! Node `i` owns 198.18.(64+i).0/24 and 2001:db8:20:i::/64; all pod CIDRs
//! lie in [`CLUSTER_CIDRS`]. A pod's `eth0` holds one address of each family
//! and routes only the lab's blocks (198.18.0.0/15, 2001:db8::/32) to its
//! node, whose end of the veth holds the gateway addresses (`.1` and
//! `fe80::1`): no default route, nothing leaves the lab.

use std::net::{Ipv4Addr, Ipv6Addr};

use anyhow::{Context, Result};

use crate::command::{run, succeeds};
use crate::control_plane::SERVICE_CIDRS;
use crate::lan::{self, Host};

/// Every pod CIDR of every node, one per family (kube-proxy's cluster CIDR).
pub const CLUSTER_CIDRS: [&str; 2] = ["198.18.64.0/18", "2001:db8:20::/48"];
/// Prefix of every pod's network namespace: `flbp-<node>-<n>`.
pub const POD_NETNS_PREFIX: &str = "flbp-";
/// The pod-side gateway on IPv6: link-local on the node's end of each veth.
pub const GATEWAY_V6_LINK_LOCAL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);

/// The pod CIDRs of node `index` (1-based).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PodCidr {
    /// The node's index.
    pub node: u8,
}

impl PodCidr {
    /// The IPv4 network, 198.18.(64+node).0 (/24).
    pub fn v4_network(self) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, 64 + self.node, 0)
    }
    /// The IPv6 network, 2001:db8:20:node:: (/64).
    pub fn v6_network(self) -> Ipv6Addr {
        Ipv6Addr::new(0x2001, 0xdb8, 0x20, u16::from(self.node), 0, 0, 0, 0)
    }
    /// Both CIDRs as `spec.podCIDRs` lists them (IPv4 first).
    pub fn cidrs(self) -> [String; 2] {
        [
            format!("{}/24", self.v4_network()),
            format!("{}/64", self.v6_network()),
        ]
    }
    /// The gateway the node's veths hold: 198.18.(64+node).1.
    pub fn gateway_v4(self) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, 64 + self.node, 1)
    }
    /// Pod number `n` (2..=254): 198.18.(64+node).n and 2001:db8:20:node::n.
    pub fn pod_ips(self, n: u8) -> (Ipv4Addr, Ipv6Addr) {
        (
            Ipv4Addr::new(198, 18, 64 + self.node, n),
            Ipv6Addr::new(
                0x2001,
                0xdb8,
                0x20,
                u16::from(self.node),
                0,
                0,
                0,
                u16::from(n),
            ),
        )
    }
    /// The pod number of an address of this node's IPv4 CIDR, if it is one.
    pub fn pod_number(self, ip: Ipv4Addr) -> Option<u8> {
        let o = ip.octets();
        (o[..3] == self.v4_network().octets()[..3] && (2..=254).contains(&o[3])).then_some(o[3])
    }
}

/// The usable pod numbers of a node.
pub const POD_NUMBERS: std::ops::RangeInclusive<u8> = 2..=254;

/// A pod's network: its namespace and the node end of its veth.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodNet {
    /// The node's host.
    pub node: Host,
    /// The node's pod CIDRs.
    pub cidr: PodCidr,
    /// The pod number (last octet of its IPv4 address).
    pub number: u8,
}

impl PodNet {
    /// The pod's network namespace.
    pub fn netns(&self) -> String {
        format!("{POD_NETNS_PREFIX}{}-{}", self.node.name, self.number)
    }
    /// The node end of the veth, in the node's namespace: `vethpod<n>`,
    /// a `veth…` name like a CNI's, which node software (our speaker)
    /// ignores by default.
    pub fn node_veth(&self) -> String {
        format!("vethpod{}", self.number)
    }
    /// The pod's addresses.
    pub fn ips(&self) -> (Ipv4Addr, Ipv6Addr) {
        self.cidr.pod_ips(self.number)
    }

    /// Creates the namespace and the veth pair, addresses and routes.
    /// Whatever a previous attempt left is removed first.
    pub fn create(&self) -> Result<()> {
        self.destroy();
        let ns = self.netns();
        let node_ns = self.node.netns.as_str();
        let veth = self.node_veth();
        let (v4, v6) = self.ips();
        let gw4 = self.cidr.gateway_v4();
        let steps: Vec<Vec<String>> = vec![
            args(&["netns", "add", &ns]),
            args(&["-n", &ns, "link", "set", "lo", "up"]),
            args(&[
                "-n", node_ns, "link", "add", &veth, "type", "veth", "peer", "name", "eth0",
                "netns", &ns,
            ]),
            args(&[
                "-n",
                node_ns,
                "addr",
                "add",
                &format!("{gw4}/32"),
                "dev",
                &veth,
            ]),
            args(&[
                "-n",
                node_ns,
                "-6",
                "addr",
                "add",
                &format!("{GATEWAY_V6_LINK_LOCAL}/64"),
                "dev",
                &veth,
                "nodad",
            ]),
            args(&["-n", node_ns, "link", "set", &veth, "up"]),
            args(&[
                "-n",
                node_ns,
                "route",
                "add",
                &format!("{v4}/32"),
                "dev",
                &veth,
            ]),
            args(&[
                "-n",
                node_ns,
                "-6",
                "route",
                "add",
                &format!("{v6}/128"),
                "dev",
                &veth,
            ]),
            args(&["-n", &ns, "addr", "add", &format!("{v4}/32"), "dev", "eth0"]),
            args(&[
                "-n",
                &ns,
                "-6",
                "addr",
                "add",
                &format!("{v6}/128"),
                "dev",
                "eth0",
                "nodad",
            ]),
            args(&["-n", &ns, "link", "set", "eth0", "up"]),
            args(&[
                "-n",
                &ns,
                "route",
                "add",
                &format!("{gw4}/32"),
                "dev",
                "eth0",
            ]),
            args(&[
                "-n",
                &ns,
                "route",
                "add",
                "198.18.0.0/15",
                "via",
                &gw4.to_string(),
                "dev",
                "eth0",
            ]),
            args(&[
                "-n",
                &ns,
                "-6",
                "route",
                "add",
                "2001:db8::/32",
                "via",
                &GATEWAY_V6_LINK_LOCAL.to_string(),
                "dev",
                "eth0",
            ]),
        ];
        for step in steps {
            let refs: Vec<&str> = step.iter().map(String::as_str).collect();
            run("ip", &refs)
                .with_context(|| format!("cannot set up the network of pod netns {ns}"))?;
        }
        Ok(())
    }

    /// Removes the namespace (and with it the veth pair and the node's route).
    pub fn destroy(&self) {
        let ns = self.netns();
        if succeeds("ip", &["netns", "pids", &ns]) {
            stop_processes_in(&ns);
            let _ = run("ip", &["netns", "delete", &ns]);
        }
        let _ = run(
            "ip",
            &["-n", &self.node.netns, "link", "delete", &self.node_veth()],
        );
    }
}

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| (*s).to_owned()).collect()
}

/// Stops (SIGTERM, then SIGKILL) every process inside network namespace `ns`.
pub fn stop_processes_in(ns: &str) {
    let pids = run("ip", &["netns", "pids", ns]).unwrap_or_default();
    for pid in pids.lines().filter_map(|p| p.trim().parse::<i32>().ok()) {
        crate::process::stop(pid);
    }
}

/// The pod namespaces that exist now, of one node (`Some("node1")`) or all.
pub fn existing_pod_netns(node: Option<&str>) -> Result<Vec<String>> {
    let prefix = match node {
        Some(n) => format!("{POD_NETNS_PREFIX}{n}-"),
        None => POD_NETNS_PREFIX.to_owned(),
    };
    let out = run("ip", &["netns", "list"])?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&prefix))
        .map(str::to_owned)
        .collect())
}

/// Removes every pod namespace of `node` (or of every node) with its processes.
pub fn destroy_pod_netns(node: Option<&str>) -> Result<()> {
    for ns in existing_pod_netns(node)? {
        stop_processes_in(&ns);
        run("ip", &["netns", "delete", &ns])?;
    }
    Ok(())
}

/// Makes every node a router for its pods and routes every other node's pod
/// CIDRs to that node over the LAN; the root namespace (the API server's)
/// gets the same routes, so replies to pods find their way back. Routes via
/// the bridge disappear with it on `down`.
pub fn route_between_nodes(nodes: &[Host]) -> Result<()> {
    for (i, node) in nodes.iter().enumerate() {
        let ns = node.netns.as_str();
        for key in ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"] {
            run("ip", &["netns", "exec", ns, "sysctl", "-q", "-w", key])?;
        }
        // Locally sent traffic to a ClusterIP needs a route before
        // kube-proxy's output-hook DNAT rewrites it (a real node has a
        // default route for that); on-link, inside the lab's blocks.
        for cidr in SERVICE_CIDRS {
            let family = if cidr.contains(':') { "-6" } else { "-4" };
            run(
                "ip",
                &[
                    "-n",
                    ns,
                    family,
                    "route",
                    "replace",
                    cidr,
                    "dev",
                    lan::INNER_IFACE,
                ],
            )?;
        }
        for (j, other) in nodes.iter().enumerate() {
            if i == j {
                continue;
            }
            let cidr = PodCidr {
                node: index_of(other)?,
            };
            let [v4, v6] = cidr.cidrs();
            run(
                "ip",
                &[
                    "-n",
                    ns,
                    "route",
                    "replace",
                    &v4,
                    "via",
                    &other.ipv4.to_string(),
                ],
            )?;
            run(
                "ip",
                &[
                    "-n",
                    ns,
                    "-6",
                    "route",
                    "replace",
                    &v6,
                    "via",
                    &other.ipv6.to_string(),
                ],
            )?;
        }
    }
    for node in nodes {
        let cidr = PodCidr {
            node: index_of(node)?,
        };
        let [v4, v6] = cidr.cidrs();
        run(
            "ip",
            &[
                "route",
                "replace",
                &v4,
                "via",
                &node.ipv4.to_string(),
                "dev",
                lan::BRIDGE,
            ],
        )?;
        run(
            "ip",
            &[
                "-6",
                "route",
                "replace",
                &v6,
                "via",
                &node.ipv6.to_string(),
                "dev",
                lan::BRIDGE,
            ],
        )?;
    }
    Ok(())
}

/// The index of a node host (`node3` is 3).
pub fn index_of(node: &Host) -> Result<u8> {
    node.name
        .strip_prefix("node")
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("{} is not a node", node.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_cidrs_stay_in_the_cluster_cidrs() {
        let c = PodCidr {
            node: lan::MAX_NODES,
        };
        assert_eq!(
            c.cidrs(),
            [
                "198.18.114.0/24".to_owned(),
                "2001:db8:20:32::/64".to_owned()
            ]
        );
        let first = PodCidr { node: 1 };
        assert_eq!(first.pod_ips(7).0, Ipv4Addr::new(198, 18, 65, 7));
        assert_eq!(first.pod_ips(7).1.to_string(), "2001:db8:20:1::7");
        assert_eq!(first.pod_number(Ipv4Addr::new(198, 18, 65, 7)), Some(7));
        assert_eq!(first.pod_number(Ipv4Addr::new(198, 18, 66, 7)), None);
        assert_eq!(first.pod_number(Ipv4Addr::new(198, 18, 65, 1)), None);
    }
}
