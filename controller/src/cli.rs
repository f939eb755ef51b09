//! Command-line flags, each with an environment variable, parsed once at start-up
//! into a typed [`Cli`] that is passed down.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
pub use ferrolb_telemetry::LogFormat;
use ferrolb_telemetry::MetricsFlags;

/// FerroLB controller: assigns IPs from IPAddressPools to LoadBalancer Services.
#[derive(Debug, Clone, Parser)]
#[command(name = "ferrolb-controller", version, about)]
pub struct Cli {
    /// Port serving /metrics, /healthz and /readyz (on --pod-ip unless
    /// --metrics-bind-address names an address with a port).
    #[arg(long, env = "FERROLB_METRICS_PORT", default_value_t = 7472)]
    pub metrics_port: u16,

    /// Where and how /metrics is served.
    #[command(flatten)]
    pub metrics: MetricsFlags,

    /// Log format. The level filter comes from FERROLB_LOG (default `info`), e.g.
    /// `FERROLB_LOG=ferrolb_controller=debug`.
    #[arg(long, env = "FERROLB_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Handle only Services with this spec.loadBalancerClass. Without it, only Services
    /// without a class are handled.
    #[arg(long, env = "FERROLB_LOAD_BALANCER_CLASS")]
    pub load_balancer_class: Option<String>,

    /// Namespace of the leader-election Lease (normally the controller's own).
    #[arg(long, env = "FERROLB_NAMESPACE", default_value = "ferrolb-system")]
    pub namespace: String,

    /// This replica's identity in the Lease (default: the host name, which is the pod
    /// name in Kubernetes).
    #[arg(long, env = "FERROLB_POD_NAME")]
    pub pod_name: Option<String>,

    /// Name of the leader-election Lease.
    #[arg(long, env = "FERROLB_LEASE_NAME", default_value = "ferrolb-controller")]
    pub lease_name: String,

    /// Field manager of every write, so that two installations' writes are told
    /// apart in `managedFields` (the chart sets it per release).
    #[arg(
        long,
        env = "FERROLB_FIELD_MANAGER",
        default_value = "ferrolb-controller"
    )]
    pub field_manager: String,

    /// Name of this installation when several run side by side (the chart passes the
    /// release name when `loadBalancerClass` is set): only SpeakerStatus objects
    /// labelled `ferrolb.io/instance=<instance>` are read. Without it, only those
    /// without that label.
    #[arg(long, env = "FERROLB_INSTANCE")]
    pub instance: Option<String>,

    /// Elect a leader among replicas; only the leader writes. `false` runs as the only
    /// writer (a single replica).
    #[arg(long, env = "FERROLB_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,

    /// How long the Lease holds without renewal, in seconds: the longest a crashed
    /// leader blocks writes before the other replica takes over.
    #[arg(long, env = "FERROLB_LEASE_DURATION", default_value_t = 15, value_parser = clap::value_parser!(u64).range(3..=300))]
    pub lease_duration: u64,

    /// The speakers' gossip key Secret (in --namespace) that the leader creates,
    /// with a random key, whenever it does not exist; an existing one is never
    /// changed. Empty: the Secret is managed elsewhere (the chart's
    /// `speaker.gossipSecretName`).
    #[arg(long, env = "FERROLB_GOSSIP_SECRET", default_value = "")]
    pub gossip_secret: String,

    /// The Deployment (in --namespace) that owns the gossip key Secret the leader
    /// creates, so deleting the installation deletes the key. Empty: no owner.
    #[arg(long, env = "FERROLB_GOSSIP_SECRET_OWNER", default_value = "")]
    pub gossip_secret_owner: String,

    /// What to run (default: the controller).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Print FerroLB resources equivalent to a MetalLB installation, and rehearse the
    /// cutover. Input: what `kubectl get … -A -o yaml` prints (MetalLB's
    /// IPAddressPools, L2Advertisements, its ConfigMap of before 0.13, Services,
    /// Namespaces), as a List or multi-document YAML. Warnings (BGP, renamed pools,
    /// Services that would not keep their IP) and a summary go to stderr.
    Convert {
        /// The file to read, or `-` for standard input.
        file: PathBuf,

        /// Write here the `kubectl annotate` commands that point Services' pool
        /// annotations at renamed pools. Required when any Service needs them.
        #[arg(long, value_name = "FILE")]
        annotate_script: Option<PathBuf>,
    },
    /// Check a running installation through the API (read-only) and exit non-zero
    /// naming what is wrong: FerroLB's CRDs are served, the controller's replicas are
    /// ready and one of them holds the Lease (--lease-name in --namespace), and a
    /// speaker is ready on every node it should run on and sees all the others
    /// (SpeakerStatus of --instance). The chart's `helm test` runs it.
    Check {
        /// The controller's Deployment, in --namespace.
        #[arg(
            long,
            env = "FERROLB_CHECK_CONTROLLER",
            default_value = "ferrolb-controller"
        )]
        controller: String,
        /// The speakers' DaemonSet, in --namespace.
        #[arg(long, env = "FERROLB_CHECK_SPEAKER", default_value = "ferrolb-speaker")]
        speaker: String,
        /// How long to wait, in seconds, for every check to pass (a fresh install
        /// needs a few seconds) before reporting what still fails.
        #[arg(long, env = "FERROLB_CHECK_WAIT_SECONDS", default_value_t = 60)]
        wait_seconds: u64,
    },
    /// Remove what an uninstalled installation leaves behind (the chart's post-delete
    /// hook): wait for its speaker pods to be gone, then delete the ServiceL2Status
    /// and SpeakerStatus objects its speakers wrote, its Lease (--lease-name in
    /// --namespace) and its pool finalizer, so pools stay deletable without a
    /// controller.
    Cleanup {
        /// Label selector of the installation's speaker pods, in --namespace.
        #[arg(long, env = "FERROLB_CLEANUP_SPEAKER_SELECTOR")]
        speaker_selector: String,
        /// How long to wait, in seconds, for the speaker pods to be gone.
        #[arg(long, env = "FERROLB_CLEANUP_WAIT_SECONDS", default_value_t = 60)]
        wait_seconds: u64,
    },
}

impl Cli {
    /// The Lease identity: `--pod-name`, else the host name.
    pub fn identity(&self) -> String {
        self.pod_name.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| format!("ferrolb-controller-{}", std::process::id()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn every_flag_has_help_and_an_env_var() {
        Cli::command().debug_assert();
        assert_eq!(
            ferrolb_telemetry::undocumented_flags(&Cli::command()),
            Vec::<String>::new()
        );
    }

    #[test]
    fn defaults_match_the_chart() {
        let cli = Cli::try_parse_from(["ferrolb-controller"]).unwrap();
        assert_eq!(cli.metrics_port, 7472);
        assert!(cli.metrics.metrics_auth && cli.metrics.metrics_tls);
        assert_eq!(cli.metrics.metrics_bind_address, None);
        assert_eq!(cli.namespace, "ferrolb-system");
        assert_eq!(cli.lease_name, "ferrolb-controller");
        assert!(cli.leader_elect);
        let cli = Cli::try_parse_from([
            "ferrolb-controller",
            "--metrics-port=9000",
            "--pod-ip=198.18.0.10",
            "--log-format=json",
            "--load-balancer-class=ferrolb.io/lb",
            "--leader-elect=false",
        ])
        .unwrap();
        assert_eq!(cli.log_format, LogFormat::Json);
        assert_eq!(
            cli.metrics
                .endpoint(cli.metrics_port)
                .unwrap()
                .address
                .to_string(),
            "198.18.0.10:9000"
        );
        assert_eq!(cli.load_balancer_class.as_deref(), Some("ferrolb.io/lb"));
        assert!(!cli.leader_elect);
    }
}
