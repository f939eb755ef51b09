//! The strictARP check: will this node's kernel answer ARP for Service IPs it does not
//! own?
//!
//! kube-proxy in IPVS mode binds every Service IP to the `kube-ipvs0` dummy device on
//! every node. Linux answers ARP for any local address on any interface by default
//! (`arp_ignore=0`), so every node then answers for every LoadBalancer IP, and the LAN
//! sees several MACs for one IP: layer-2 load balancing breaks and traffic flaps.
//! kube-proxy's `ipvs.strictARP: true` sets `arp_ignore=1` (answer only for addresses
//! on the receiving interface) and `arp_announce=2` (never use such an address as the
//! ARP source) on `all`, which fixes it. The kernel applies the larger of the `all` and
//! the per-interface value, so either may carry the fix.
//!
//! This module is pure: it turns kube-proxy's configuration and the node's sysctls
//! into a [`Verdict`] that says what is wrong and exactly what to change.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Deserialize;

/// kube-proxy's proxy mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyMode {
    /// `iptables`, also kube-proxy's default when `mode` is empty.
    Iptables,
    /// `nftables`.
    Nftables,
    /// `ipvs`: Service IPs are bound to `kube-ipvs0` on every node.
    Ipvs,
    /// Anything else (e.g. `kernelspace` on Windows), as written.
    Other(String),
}

/// What FerroLB learned of kube-proxy's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KubeProxyConfig {
    /// The configuration was read.
    Known {
        /// The proxy mode.
        mode: ProxyMode,
        /// `ipvs.strictARP`, `None` when not set (kube-proxy's default is false).
        strict_arp: Option<bool>,
    },
    /// No kube-proxy ConfigMap: kube-proxy may be configured by flags, replaced by a CNI,
    /// or absent.
    Absent,
    /// The ConfigMap exists but could not be read or parsed; the text says why.
    Unreadable(String),
}

/// `arp_ignore` and `arp_announce` of one `/proc/sys/net/ipv4/conf/<name>` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpSysctls {
    /// `arp_ignore`.
    pub ignore: u8,
    /// `arp_announce`.
    pub announce: u8,
}

impl ArpSysctls {
    /// What kube-proxy's strictARP sets.
    pub const STRICT: ArpSysctls = ArpSysctls {
        ignore: 1,
        announce: 2,
    };

    /// The value the kernel applies: the larger of `all` and the interface's own.
    pub fn effective(all: ArpSysctls, interface: ArpSysctls) -> ArpSysctls {
        ArpSysctls {
            ignore: all.ignore.max(interface.ignore),
            announce: all.announce.max(interface.announce),
        }
    }

    /// Whether the kernel only answers ARP for addresses on the receiving interface and
    /// never announces another interface's address: `arp_ignore` 1 or 2 (or 8, never
    /// answer) and `arp_announce` 2.
    pub fn is_strict(self) -> bool {
        matches!(self.ignore, 1 | 2 | 8) && self.announce >= 2
    }
}

/// The node's ARP sysctls: `all` and each announcing interface; `None` where unreadable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeSysctls {
    /// `net.ipv4.conf.all.*`.
    pub all: Option<ArpSysctls>,
    /// `net.ipv4.conf.<interface>.*` of the interfaces the speaker announces on.
    pub interfaces: BTreeMap<String, Option<ArpSysctls>>,
}

/// How safe the node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// The kernel will not answer ARP for Service IPs: only the elected node answers.
    Ok,
    /// Cannot be ruled out, or is configured but not in effect: act before it bites.
    AtRisk,
    /// Several nodes will answer ARP for Service IPs.
    Broken,
    /// Not enough could be read to tell.
    Unknown,
}

/// The result of the check, with the message a user reads in `SpeakerStatus`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// How safe the node is.
    pub level: Level,
    /// A CamelCase reason for the `StrictARP` condition.
    pub reason: &'static str,
    /// What is wrong and exactly what to change.
    pub message: String,
}

impl Verdict {
    /// The `StrictARP` condition status: `True` when safe, `False` when broken or at
    /// risk, `Unknown` when it cannot be told.
    pub fn condition_status(&self) -> &'static str {
        match self.level {
            Level::Ok => "True",
            Level::AtRisk | Level::Broken => "False",
            Level::Unknown => "Unknown",
        }
    }

    /// The `ferrolb_speaker_strict_arp_ok` gauge: 1 safe, 0 not, none when unknown.
    pub fn metric_value(&self) -> Option<i64> {
        match self.level {
            Level::Ok => Some(1),
            Level::AtRisk | Level::Broken => Some(0),
            Level::Unknown => None,
        }
    }
}

const FIX_KUBE_PROXY: &str = "set ipvs.strictARP: true in ConfigMap kube-system/kube-proxy \
(kubectl -n kube-system edit configmap kube-proxy) and restart kube-proxy \
(kubectl -n kube-system rollout restart daemonset kube-proxy)";
const FIX_SYSCTLS: &str = "or set net.ipv4.conf.all.arp_ignore=1 and \
net.ipv4.conf.all.arp_announce=2 on every node, or let the speaker set them on its \
interfaces (chart value speaker.strictARP.enforce=true)";

/// Decides whether the node is safe.
pub fn evaluate(kube_proxy: &KubeProxyConfig, sysctls: &NodeSysctls) -> Verdict {
    let unsafe_interfaces = unsafe_interfaces(sysctls);
    let sysctls_known = sysctls.all.is_some() && sysctls.interfaces.values().all(Option::is_some);
    if sysctls_known && unsafe_interfaces.is_empty() {
        return Verdict {
            level: Level::Ok,
            reason: "StrictARPSysctls",
            message: format!(
                "arp_ignore and arp_announce are strict on {}: the kernel answers ARP only for addresses of the receiving interface",
                describe_scope(sysctls)
            ),
        };
    }
    let found = describe_unsafe(&unsafe_interfaces, sysctls_known);
    match kube_proxy {
        KubeProxyConfig::Known {
            mode: ProxyMode::Ipvs,
            strict_arp: Some(true),
        } => Verdict {
            level: Level::AtRisk,
            reason: "StrictARPNotApplied",
            message: format!(
                "kube-proxy is configured with ipvs.strictARP: true, but {found}; kube-proxy applies it when it starts, so it may not have run on this node yet or something reset the sysctls; until then every node may answer ARP for every Service IP. Restart kube-proxy on this node, {FIX_SYSCTLS}"
            ),
        },
        KubeProxyConfig::Known {
            mode: ProxyMode::Ipvs,
            strict_arp,
        } => Verdict {
            level: Level::Broken,
            reason: "IPVSWithoutStrictARP",
            message: format!(
                "kube-proxy runs in IPVS mode with ipvs.strictARP {}, and {found}: every node binds every Service IP to kube-ipvs0 and answers ARP for it, so clients see several MACs per IP and traffic flaps. Fix: {FIX_KUBE_PROXY}, {FIX_SYSCTLS}",
                if strict_arp.is_some() {
                    "false"
                } else {
                    "unset (false)"
                },
            ),
        },
        KubeProxyConfig::Known { mode, .. } => Verdict {
            level: Level::Ok,
            reason: "NoIPVS",
            message: format!(
                "kube-proxy runs in {} mode, which does not bind Service IPs to node interfaces, so the kernel does not answer ARP for them (if you switch kube-proxy to IPVS, also set ipvs.strictARP: true)",
                mode_name(mode)
            ),
        },
        KubeProxyConfig::Absent => Verdict {
            level: Level::Unknown,
            reason: "KubeProxyConfigNotFound",
            message: format!(
                "ConfigMap kube-system/kube-proxy was not found, so FerroLB cannot tell whether Service IPs are bound to node interfaces, and {found}. If kube-proxy runs in IPVS mode, {FIX_SYSCTLS}; otherwise this is harmless"
            ),
        },
        KubeProxyConfig::Unreadable(why) => Verdict {
            level: Level::Unknown,
            reason: "KubeProxyConfigUnreadable",
            message: format!(
                "kube-proxy's configuration could not be read ({why}), and {found}. If kube-proxy runs in IPVS mode, {FIX_SYSCTLS}"
            ),
        },
    }
}

fn unsafe_interfaces(sysctls: &NodeSysctls) -> Vec<(String, ArpSysctls)> {
    let Some(all) = sysctls.all else {
        return Vec::new();
    };
    let mut found: Vec<(String, ArpSysctls)> = sysctls
        .interfaces
        .iter()
        .filter_map(|(name, own)| {
            let effective = ArpSysctls::effective(all, (*own)?);
            (!effective.is_strict()).then(|| (name.clone(), effective))
        })
        .collect();
    if sysctls.interfaces.is_empty() && !all.is_strict() {
        found.push(("all".to_owned(), all));
    }
    found
}

fn describe_scope(sysctls: &NodeSysctls) -> String {
    if sysctls.interfaces.is_empty() {
        "all interfaces".to_owned()
    } else {
        sysctls
            .interfaces
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn describe_unsafe(found: &[(String, ArpSysctls)], known: bool) -> String {
    if found.is_empty() {
        return if known {
            "the ARP sysctls are strict".to_owned()
        } else {
            "the node's ARP sysctls could not be read".to_owned()
        };
    }
    let mut out = String::from("the kernel answers ARP loosely on ");
    for (i, (name, s)) in found.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(
            out,
            "{name} (effective arp_ignore={}, arp_announce={})",
            s.ignore, s.announce
        );
    }
    out
}

fn mode_name(mode: &ProxyMode) -> &str {
    match mode {
        ProxyMode::Iptables => "iptables",
        ProxyMode::Nftables => "nftables",
        ProxyMode::Ipvs => "ipvs",
        ProxyMode::Other(name) => name,
    }
}

#[derive(Debug, Deserialize)]
struct KubeProxyConfiguration {
    #[serde(default)]
    mode: String,
    #[serde(default)]
    ipvs: IpvsConfiguration,
}

#[derive(Debug, Default, Deserialize)]
struct IpvsConfiguration {
    #[serde(default, rename = "strictARP")]
    strict_arp: Option<bool>,
}

/// Reads kube-proxy's configuration from its ConfigMap's data: kubeadm writes it under
/// `config.conf`; other installers use another key, so any entry holding a
/// `KubeProxyConfiguration` is accepted.
pub fn parse_kube_proxy_config(data: &BTreeMap<String, String>) -> KubeProxyConfig {
    let entry = data
        .get("config.conf")
        .or_else(|| data.values().find(|v| v.contains("KubeProxyConfiguration")));
    let Some(text) = entry else {
        return KubeProxyConfig::Unreadable(
            "the ConfigMap holds no KubeProxyConfiguration (expected key config.conf)".to_owned(),
        );
    };
    match serde_yaml::from_str::<KubeProxyConfiguration>(text) {
        Ok(config) => KubeProxyConfig::Known {
            mode: match config.mode.trim().to_ascii_lowercase().as_str() {
                "" | "iptables" => ProxyMode::Iptables,
                "nftables" => ProxyMode::Nftables,
                "ipvs" => ProxyMode::Ipvs,
                _ => ProxyMode::Other(config.mode),
            },
            strict_arp: config.ipvs.strict_arp,
        },
        Err(e) => KubeProxyConfig::Unreadable(format!("config.conf is not valid YAML: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOOSE: ArpSysctls = ArpSysctls {
        ignore: 0,
        announce: 0,
    };

    fn ipvs(strict: Option<bool>) -> KubeProxyConfig {
        KubeProxyConfig::Known {
            mode: ProxyMode::Ipvs,
            strict_arp: strict,
        }
    }

    fn mode(m: ProxyMode) -> KubeProxyConfig {
        KubeProxyConfig::Known {
            mode: m,
            strict_arp: None,
        }
    }

    fn node(all: Option<ArpSysctls>, eth0: Option<ArpSysctls>) -> NodeSysctls {
        NodeSysctls {
            all,
            interfaces: BTreeMap::from([("eth0".to_owned(), eth0)]),
        }
    }

    fn s(ignore: u8, announce: u8) -> ArpSysctls {
        ArpSysctls { ignore, announce }
    }

    #[test]
    fn verdicts() {
        let strict = ArpSysctls::STRICT;
        let table: Vec<(&str, KubeProxyConfig, NodeSysctls, Level, &str)> = vec![
            (
                "ipvs without strictARP, loose sysctls",
                ipvs(None),
                node(Some(LOOSE), Some(LOOSE)),
                Level::Broken,
                "IPVSWithoutStrictARP",
            ),
            (
                "ipvs strictARP false, loose sysctls",
                ipvs(Some(false)),
                node(Some(LOOSE), Some(LOOSE)),
                Level::Broken,
                "IPVSWithoutStrictARP",
            ),
            (
                "ipvs strictARP true, applied on all",
                ipvs(Some(true)),
                node(Some(strict), Some(LOOSE)),
                Level::Ok,
                "StrictARPSysctls",
            ),
            (
                "ipvs strictARP true, not applied yet",
                ipvs(Some(true)),
                node(Some(LOOSE), Some(LOOSE)),
                Level::AtRisk,
                "StrictARPNotApplied",
            ),
            (
                "ipvs without strictARP, sysctls enforced on the interface",
                ipvs(None),
                node(Some(LOOSE), Some(strict)),
                Level::Ok,
                "StrictARPSysctls",
            ),
            (
                "ipvs, only arp_ignore set",
                ipvs(None),
                node(Some(s(1, 0)), Some(LOOSE)),
                Level::Broken,
                "IPVSWithoutStrictARP",
            ),
            (
                "ipvs, only arp_announce set",
                ipvs(None),
                node(Some(s(0, 2)), Some(LOOSE)),
                Level::Broken,
                "IPVSWithoutStrictARP",
            ),
            (
                "ipvs, ignore from all and announce from interface",
                ipvs(None),
                node(Some(s(1, 0)), Some(s(0, 2))),
                Level::Ok,
                "StrictARPSysctls",
            ),
            (
                "ipvs, arp_ignore=3 is not strict",
                ipvs(None),
                node(Some(s(3, 2)), Some(LOOSE)),
                Level::Broken,
                "IPVSWithoutStrictARP",
            ),
            (
                "ipvs, arp_ignore=8 never answers",
                ipvs(None),
                node(Some(s(8, 2)), Some(LOOSE)),
                Level::Ok,
                "StrictARPSysctls",
            ),
            (
                "ipvs, arp_ignore=2 is stricter still",
                ipvs(None),
                node(Some(s(2, 2)), Some(LOOSE)),
                Level::Ok,
                "StrictARPSysctls",
            ),
            (
                "iptables, loose sysctls",
                mode(ProxyMode::Iptables),
                node(Some(LOOSE), Some(LOOSE)),
                Level::Ok,
                "NoIPVS",
            ),
            (
                "nftables, loose sysctls",
                mode(ProxyMode::Nftables),
                node(Some(LOOSE), Some(LOOSE)),
                Level::Ok,
                "NoIPVS",
            ),
            (
                "other mode, loose sysctls",
                mode(ProxyMode::Other("kernelspace".into())),
                node(Some(LOOSE), Some(LOOSE)),
                Level::Ok,
                "NoIPVS",
            ),
            (
                "no ConfigMap, loose sysctls",
                KubeProxyConfig::Absent,
                node(Some(LOOSE), Some(LOOSE)),
                Level::Unknown,
                "KubeProxyConfigNotFound",
            ),
            (
                "no ConfigMap, strict sysctls",
                KubeProxyConfig::Absent,
                node(Some(strict), None),
                Level::Unknown,
                "KubeProxyConfigNotFound",
            ),
            (
                "no ConfigMap, strict everywhere",
                KubeProxyConfig::Absent,
                node(Some(strict), Some(strict)),
                Level::Ok,
                "StrictARPSysctls",
            ),
            (
                "unreadable ConfigMap, loose",
                KubeProxyConfig::Unreadable("forbidden".into()),
                node(Some(LOOSE), Some(LOOSE)),
                Level::Unknown,
                "KubeProxyConfigUnreadable",
            ),
            (
                "ipvs, sysctls unreadable",
                ipvs(None),
                node(None, None),
                Level::Broken,
                "IPVSWithoutStrictARP",
            ),
            (
                "iptables, sysctls unreadable",
                mode(ProxyMode::Iptables),
                node(None, None),
                Level::Ok,
                "NoIPVS",
            ),
        ];
        for (name, config, sysctls, level, reason) in table {
            let v = evaluate(&config, &sysctls);
            assert_eq!(
                (v.level, v.reason),
                (level, reason),
                "{name}: {}",
                v.message
            );
        }
    }

    #[test]
    fn messages_say_what_to_change() {
        let v = evaluate(&ipvs(None), &node(Some(LOOSE), Some(s(0, 1))));
        assert_eq!(v.condition_status(), "False");
        assert_eq!(v.metric_value(), Some(0));
        assert!(
            v.message
                .contains("eth0 (effective arp_ignore=0, arp_announce=1)"),
            "{}",
            v.message
        );
        assert!(v.message.contains("ipvs.strictARP: true"), "{}", v.message);
        assert!(v.message.contains("arp_ignore=1"), "{}", v.message);
        assert!(
            v.message.contains("speaker.strictARP.enforce=true"),
            "{}",
            v.message
        );
        let ok = evaluate(
            &ipvs(Some(true)),
            &node(Some(ArpSysctls::STRICT), Some(LOOSE)),
        );
        assert_eq!(
            (ok.condition_status(), ok.metric_value()),
            ("True", Some(1))
        );
        let unknown = evaluate(&KubeProxyConfig::Absent, &node(Some(LOOSE), Some(LOOSE)));
        assert_eq!(
            (unknown.condition_status(), unknown.metric_value()),
            ("Unknown", None)
        );
    }

    #[test]
    fn parses_kube_proxy_configuration() {
        let data = |text: &str| BTreeMap::from([("config.conf".to_owned(), text.to_owned())]);
        let cases = [
            (
                "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: ipvs\nipvs:\n  strictARP: true\n",
                ipvs(Some(true)),
            ),
            (
                "kind: KubeProxyConfiguration\nmode: \"ipvs\"\nipvs:\n  strictARP: false\n",
                ipvs(Some(false)),
            ),
            ("kind: KubeProxyConfiguration\nmode: ipvs\n", ipvs(None)),
            (
                "kind: KubeProxyConfiguration\nmode: \"\"\n",
                mode(ProxyMode::Iptables),
            ),
            ("kind: KubeProxyConfiguration\n", mode(ProxyMode::Iptables)),
            (
                "kind: KubeProxyConfiguration\nmode: nftables\n",
                mode(ProxyMode::Nftables),
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_kube_proxy_config(&data(text)), expected, "{text}");
        }
        let other_key = BTreeMap::from([(
            "kube-proxy.yaml".to_owned(),
            "kind: KubeProxyConfiguration\nmode: ipvs\n".to_owned(),
        )]);
        assert_eq!(parse_kube_proxy_config(&other_key), ipvs(None));
        assert!(matches!(
            parse_kube_proxy_config(&data("mode: [")),
            KubeProxyConfig::Unreadable(_)
        ));
        assert!(matches!(
            parse_kube_proxy_config(&BTreeMap::new()),
            KubeProxyConfig::Unreadable(_)
        ));
    }
}
