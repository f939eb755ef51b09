//! The real kube-proxy, one per node namespace, in nftables mode (iptables
//! when the kernel lacks nftables), with the lab's kube-proxy client
//! certificate (`system:kube-proxy`, bound to `system:node-proxier` by the
//! API server's bootstrap RBAC).

use std::path::Path;

use crate::command::succeeds;
use crate::lan::Host;
use crate::podnet::CLUSTER_CIDRS;
use crate::process::Daemon;

/// The proxy mode this kernel supports: `nftables` if `nft` works inside a
/// node namespace, else `iptables`.
pub fn mode(node: &Host) -> &'static str {
    if succeeds(
        "ip",
        &["netns", "exec", &node.netns, "nft", "list", "ruleset"],
    ) {
        "nftables"
    } else {
        "iptables"
    }
}

/// The kube-proxy daemon of `node`.
pub fn daemon(program: &Path, kubeconfig: &Path, node: &Host, mode: &str) -> Daemon {
    Daemon {
        name: format!("kube-proxy-{}", node.name),
        program: program.to_owned(),
        args: vec![
            format!("--kubeconfig={}", kubeconfig.display()),
            format!("--hostname-override={}", node.name),
            format!("--proxy-mode={mode}"),
            format!("--cluster-cidr={}", CLUSTER_CIDRS.join(",")),
            // NodePorts on the node's LAN addresses only.
            format!("--nodeport-addresses={}/32,{}/128", node.ipv4, node.ipv6),
            // Leave the (shared) conntrack table size alone.
            "--conntrack-max-per-core=0".into(),
            "--metrics-bind-address=127.0.0.1:10249".into(),
            "--healthz-bind-address=0.0.0.0:10256".into(),
            "--v=1".into(),
        ],
        netns: Some(node.netns.clone()),
    }
}
