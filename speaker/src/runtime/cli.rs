//! Command-line flags, each with an environment variable, parsed once at
//! start-up into a typed [`Cli`] that is passed down. The names and defaults
//! match the Helm chart's speaker DaemonSet.

use std::net::IpAddr;
use std::time::Duration;

use clap::Parser;
pub(crate) use ferrolb_telemetry::LogFormat;
use ferrolb_telemetry::MetricsFlags;

use super::instance::Instance;

/// Longest object name (a DNS subdomain).
const MAX_NAME_LEN: usize = 253;

/// FerroLB speaker: elects one node per LoadBalancer IP set and announces it
/// on the local network with gratuitous ARP and neighbor advertisements.
#[derive(Debug, Clone, Parser)]
#[command(name = "ferrolb-speaker", version, about)]
pub(crate) struct Cli {
    /// The node this speaker runs on (the DaemonSet passes spec.nodeName).
    #[arg(long, env = "FERROLB_NODE_NAME")]
    pub node_name: String,

    /// The node's IP that other speakers reach the gossip port at (the
    /// DaemonSet passes status.hostIP). Default: the Node's first InternalIP.
    #[arg(long, env = "FERROLB_HOST_IP")]
    pub host_ip: Option<IpAddr>,

    /// Namespace holding the gossip Secret (the speaker's own).
    #[arg(long, env = "FERROLB_NAMESPACE", default_value = "ferrolb-system")]
    pub namespace: String,

    /// Port serving /metrics, /healthz and /readyz (on --pod-ip, the node's
    /// address, unless --metrics-bind-address names an address with a port).
    #[arg(long, env = "FERROLB_METRICS_PORT", default_value_t = 7473)]
    pub metrics_port: u16,

    /// Where and how /metrics is served.
    #[command(flatten)]
    pub metrics: MetricsFlags,

    /// UDP port of the membership protocol, the same on every node.
    #[arg(long, env = "FERROLB_GOSSIP_PORT", default_value_t = 7946)]
    pub gossip_port: u16,

    /// Secret (in --namespace) whose `key` (32 bytes) encrypts and
    /// authenticates gossip. Re-read every --gossip-key-reload, so a
    /// rotation needs no restart.
    #[arg(long, env = "FERROLB_GOSSIP_SECRET", default_value = "ferrolb-gossip")]
    pub gossip_secret: String,

    /// How often the gossip Secret is read again for a rotated key.
    #[arg(long, env = "FERROLB_GOSSIP_KEY_RELOAD", default_value = "10s", value_parser = humantime::parse_duration)]
    pub gossip_key_reload: Duration,

    /// Length of each phase of a key rotation: a new key is accepted at
    /// once, sent with one phase later, and the old key is refused one phase
    /// after that. Must exceed --gossip-key-reload on every node, so that
    /// every speaker accepts the new key before anyone sends with it.
    #[arg(long, env = "FERROLB_GOSSIP_KEY_PHASE", default_value = "30s", value_parser = humantime::parse_duration)]
    pub gossip_key_phase: Duration,

    /// How often a random peer is probed; lower detects failures sooner at
    /// the cost of a few more packets.
    #[arg(long, env = "FERROLB_GOSSIP_PROBE_PERIOD", default_value = "100ms", value_parser = humantime::parse_duration)]
    pub gossip_probe_period: Duration,

    /// How long a suspected peer has to refute before it is declared down
    /// and its IPs move. Raise it on heavily loaded nodes, where a starved
    /// speaker could miss the window and have its IPs move for nothing.
    #[arg(long, env = "FERROLB_GOSSIP_SUSPECT_TIMEOUT", default_value = "100ms", value_parser = humantime::parse_duration)]
    pub gossip_suspect_timeout: Duration,

    /// kube-proxy's ConfigMap as namespace/name, read for the strictARP check.
    #[arg(
        long,
        env = "FERROLB_KUBE_PROXY_CONFIG",
        default_value = "kube-system/kube-proxy"
    )]
    pub kube_proxy_config: String,

    /// Cap on gratuitous ARP/NA packets per second per interface, so switch
    /// ARP policers are not tripped during a mass takeover.
    #[arg(long, env = "FERROLB_ANNOUNCE_MAX_PPS", default_value_t = 1000)]
    pub announce_max_pps: u32,

    /// Re-announce owned IPs this often after the initial repeats; 0s turns
    /// periodic refresh off.
    #[arg(long, env = "FERROLB_ANNOUNCE_REFRESH", default_value = "0s", value_parser = humantime::parse_duration)]
    pub announce_refresh: Duration,

    /// Announce from nodes labelled
    /// node.kubernetes.io/exclude-from-external-load-balancers too.
    #[arg(long, env = "FERROLB_IGNORE_EXCLUDE_LABEL")]
    pub ignore_exclude_label: bool,

    /// Set arp_ignore=1 and arp_announce=2 on announcing interfaces (needs
    /// NET_ADMIN). Only interfaces announced on are touched, and only values less
    /// strict than those.
    #[arg(long, env = "FERROLB_ENFORCE_STRICT_ARP")]
    pub enforce_strict_arp: bool,

    /// Announce only Services with this spec.loadBalancerClass. Without it,
    /// only Services without a class.
    #[arg(long, env = "FERROLB_LOAD_BALANCER_CLASS")]
    pub load_balancer_class: Option<String>,

    /// The name of this FerroLB installation, when several run side by side
    /// (the chart passes the release name when loadBalancerClass is set).
    /// This speaker's SpeakerStatus is then `<instance>-<node>`, labelled
    /// ferrolb.io/instance=<instance>, and only speakers with the same
    /// instance count as peers. Empty: the installation without a name.
    #[arg(long, env = "FERROLB_INSTANCE", default_value = "")]
    pub instance: String,

    /// Log format. The level filter comes from FERROLB_LOG (default `info`).
    #[arg(long, env = "FERROLB_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl Cli {
    /// Checks what clap cannot: relations between flags.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.gossip_key_reload.is_zero() || self.gossip_key_phase <= self.gossip_key_reload {
            return Err(format!(
                "--gossip-key-phase ({:?}) must be longer than --gossip-key-reload ({:?}), which must not be zero: otherwise a speaker may send with a key a peer has not read yet",
                self.gossip_key_phase, self.gossip_key_reload
            ));
        }
        let name = Instance::new(&self.instance)?.status_name(&self.node_name);
        if name.len() > MAX_NAME_LEN {
            return Err(format!(
                "the SpeakerStatus name {name:?} (--instance, '-', --node-name) is longer than {MAX_NAME_LEN} characters; use a shorter --instance"
            ));
        }
        Ok(())
    }

    /// `--instance` as the installation it names.
    pub(crate) fn instance(&self) -> Instance {
        Instance::new(&self.instance).unwrap_or_default()
    }

    /// `--announce-refresh`, with zero meaning off.
    pub(crate) fn refresh(&self) -> Option<Duration> {
        Some(self.announce_refresh).filter(|d| !d.is_zero())
    }

    /// `--kube-proxy-config` split into namespace and name.
    pub(crate) fn kube_proxy_config(&self) -> Option<(&str, &str)> {
        self.kube_proxy_config
            .split_once('/')
            .filter(|(ns, name)| !ns.is_empty() && !name.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn every_flag_has_help_and_an_env_var() {
        Cli::command().debug_assert();
        assert_eq!(
            ferrolb_telemetry::undocumented_flags(&Cli::command()),
            Vec::<String>::new()
        );
    }

    #[test]
    fn the_charts_arguments_parse() {
        let cli = Cli::try_parse_from([
            "ferrolb-speaker",
            "--node-name=node-1",
            "--metrics-port=7473",
            "--pod-ip=198.18.0.11",
            "--gossip-port=7946",
            "--gossip-secret=ferrolb-gossip",
            "--gossip-probe-period=200ms",
            "--gossip-suspect-timeout=1m30s",
            "--kube-proxy-config=kube-system/kube-proxy",
            "--announce-max-pps=1000",
            "--announce-refresh=0s",
            "--log-format=json",
            "--ignore-exclude-label",
            "--enforce-strict-arp",
            "--load-balancer-class=ferrolb.io/l2",
            "--instance=ferrolb-l2",
        ])
        .unwrap();
        assert_eq!(cli.node_name, "node-1");
        let metrics = cli.metrics.endpoint(cli.metrics_port).unwrap();
        assert_eq!(metrics.address.to_string(), "198.18.0.11:7473");
        assert!(metrics.auth && metrics.tls.is_some());
        assert_eq!(cli.gossip_probe_period, Duration::from_millis(200));
        assert_eq!(cli.gossip_suspect_timeout, Duration::from_secs(90));
        assert_eq!(cli.refresh(), None);
        assert_eq!(cli.kube_proxy_config(), Some(("kube-system", "kube-proxy")));
        assert!(cli.ignore_exclude_label && cli.enforce_strict_arp);
        assert_eq!(cli.log_format, LogFormat::Json);
        assert_eq!(cli.instance, "ferrolb-l2");
        let cli =
            Cli::try_parse_from(["ferrolb-speaker", "--node-name=n", "--announce-refresh=30s"])
                .unwrap();
        assert_eq!(cli.refresh(), Some(Duration::from_secs(30)));
        assert_eq!(cli.namespace, "ferrolb-system");
        assert_eq!(cli.instance, "");
        assert_eq!(cli.gossip_probe_period, Duration::from_millis(100));
        assert_eq!(cli.gossip_suspect_timeout, Duration::from_millis(100));
    }

    #[test]
    fn key_phase_must_outlast_the_reload() {
        let parse = |args: &[&str]| {
            let mut all = vec!["ferrolb-speaker", "--node-name=n"];
            all.extend_from_slice(args);
            Cli::try_parse_from(all).unwrap()
        };
        assert!(parse(&[]).validate().is_ok());
        assert!(
            parse(&["--gossip-key-reload=1s", "--gossip-key-phase=3s"])
                .validate()
                .is_ok()
        );
        assert!(parse(&["--gossip-key-reload=30s"]).validate().is_err());
        assert!(parse(&["--gossip-key-reload=0s"]).validate().is_err());
        assert!(parse(&["--instance=Not_A_Name"]).validate().is_err());
        assert!(parse(&["--instance=ferrolb-a"]).validate().is_ok());
        let long_node = |instance: &str| {
            let node = format!("--node-name={}", "n".repeat(250));
            Cli::try_parse_from(["ferrolb-speaker", &node, instance]).unwrap()
        };
        assert!(long_node("--instance=").validate().is_ok());
        assert!(long_node("--instance=ferrolb-a").validate().is_err());
    }

    #[test]
    fn node_name_is_required() {
        assert!(Cli::try_parse_from(["ferrolb-speaker"]).is_err());
    }
}
