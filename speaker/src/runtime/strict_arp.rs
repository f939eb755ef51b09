//! Reads what the strictARP check needs: kube-proxy's ConfigMap (one `get`)
//! and the node's ARP sysctls from procfs. The decision itself is the pure
//! [`ferrolb_speaker::strict_arp::evaluate`]. With `--enforce-strict-arp`,
//! [`enforce`] sets the announcing interfaces' own values through rtnetlink
//! (procfs is read-only in containers; netlink needs only NET_ADMIN).

use std::collections::BTreeMap;

use ferrolb_speaker::strict_arp::{
    ArpSysctls, KubeProxyConfig, NodeSysctls, Verdict, evaluate, parse_kube_proxy_config,
};
use futures::TryStreamExt as _;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use rtnetlink::packet_route::link::{
    AfSpecInet, AfSpecUnspec, InetDevConf, LinkAttribute, LinkMessage,
};

/// Runs the check for the interfaces announced on.
pub(crate) async fn check(
    config_maps: &Api<ConfigMap>,
    name: &str,
    interfaces: &[String],
) -> Verdict {
    let kube_proxy = match config_maps.get_opt(name).await {
        Ok(Some(cm)) => parse_kube_proxy_config(&cm.data.unwrap_or_default()),
        Ok(None) => KubeProxyConfig::Absent,
        Err(error) => KubeProxyConfig::Unreadable(format!("cannot read ConfigMap {name}: {error}")),
    };
    let sysctls = NodeSysctls {
        all: read_sysctls("all"),
        interfaces: interfaces
            .iter()
            .map(|i| (i.clone(), read_sysctls(i)))
            .collect::<BTreeMap<_, _>>(),
    };
    evaluate(&kube_proxy, &sysctls)
}

fn read_sysctls(interface: &str) -> Option<ArpSysctls> {
    let read = |knob: &str| -> Option<u8> {
        std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{interface}/{knob}"))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    Some(ArpSysctls {
        ignore: read("arp_ignore")?,
        announce: read("arp_announce")?,
    })
}

/// Makes each interface's own `arp_ignore`/`arp_announce` strict (1 and 2, keeping
/// a stricter `arp_ignore` of 2 or 8) where they are not, and logs what changed.
/// Failures are logged, never fatal: the check then reports the node as it is.
pub(crate) async fn enforce(interfaces: &[String]) {
    for interface in interfaces {
        let Some(before) = read_sysctls(interface) else {
            continue;
        };
        if before.is_strict() {
            continue;
        }
        let target = ArpSysctls {
            ignore: if matches!(before.ignore, 1 | 2 | 8) {
                before.ignore
            } else {
                1
            },
            announce: 2,
        };
        match set_arp_sysctls(interface, target).await {
            Ok(()) => tracing::info!(
                interface,
                "strictARP enforced: arp_ignore {} -> {}, arp_announce {} -> {}",
                before.ignore,
                target.ignore,
                before.announce,
                target.announce
            ),
            Err(error) => tracing::warn!(
                interface,
                error = format!("{error:#}"),
                "cannot enforce strictARP (does the speaker have NET_ADMIN?)"
            ),
        }
    }
}

/// One RTM_SETLINK carrying IFLA_AF_SPEC/AF_INET/IFLA_INET_CONF with only the two
/// values: the request form emits non-zero entries only, so nothing else changes.
async fn set_arp_sysctls(interface: &str, target: ArpSysctls) -> anyhow::Result<()> {
    let (connection, handle, _) = rtnetlink::new_connection()?;
    let connection = tokio::spawn(connection);
    let result = async {
        let link = handle
            .link()
            .get()
            .match_name(interface.to_owned())
            .execute()
            .try_next()
            .await?
            .ok_or_else(|| anyhow::anyhow!("no interface {interface}"))?;
        let mut message = LinkMessage::default();
        message.header.index = link.header.index;
        let mut conf = InetDevConf::default();
        conf.arp_ignore = i32::from(target.ignore);
        conf.arp_announce = i32::from(target.announce);
        message
            .attributes
            .push(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet(vec![
                AfSpecInet::DevConfRequest(conf),
            ])]));
        handle.link().set(message).execute().await?;
        anyhow::Ok(())
    }
    .await;
    connection.abort();
    result
}
