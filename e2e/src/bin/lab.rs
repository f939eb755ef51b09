//! `cargo lab`: bring the FerroLB lab up and down, look inside, run the tests.

use std::io::Write as _;
use std::process::{Command, ExitCode};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use ferrolb_e2e::harness::MANDATORY_ENV;
use ferrolb_e2e::lab::{self, DEFAULT_NODES, Lab};
use ferrolb_e2e::{lan, tools, topology};

/// The FerroLB lab: a real Kubernetes control plane and a LAN of node
/// network namespaces on this machine (Linux, root).
#[derive(Debug, Parser)]
#[command(name = "cargo lab")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Build the tools if needed and bring the lab up.
    Up {
        /// Number of node namespaces.
        #[arg(long, default_value_t = DEFAULT_NODES)]
        nodes: u8,
        /// strictARP of the emulated IPVS-mode kube-proxy: true sets
        /// arp_ignore=1/arp_announce=2 in the node namespaces, false leaves
        /// them 0 (every node answers ARP for every LoadBalancer IP).
        /// Default true for a new lab; a lab already up is switched only
        /// when the option is given.
        #[arg(long)]
        strict_arp: Option<bool>,
    },
    /// Switch strictARP of the emulated IPVS mode on a running lab (node
    /// sysctls and the kube-system/kube-proxy ConfigMap).
    StrictArp {
        /// on or off.
        #[arg(value_parser = ["on", "off"])]
        state: String,
    },
    /// Print the output of a pod's containers (all, or one with -c).
    Logs {
        /// The pod, as NAMESPACE/NAME.
        pod: String,
        /// Only this container.
        #[arg(short = 'c', long)]
        container: Option<String>,
    },
    /// Run the lab's helm with the lab's admin kubeconfig.
    Helm {
        /// Arguments for helm.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The node agent of one node (started by `up`).
    #[command(hide = true)]
    Agent {
        /// The node's index.
        #[arg(long)]
        node: u8,
        /// The lab's state directory.
        #[arg(long)]
        state: std::path::PathBuf,
    },
    /// The HTTP stand-in for a container image (run by the node agent inside
    /// the pod's network namespace): answers with the pod's name.
    #[command(hide = true)]
    PodServer {
        /// The pod's name.
        #[arg(long)]
        name: String,
        /// A TCP port to answer on (repeatable).
        #[arg(long = "port", required = true)]
        ports: Vec<u16>,
    },
    /// Remove everything the lab created (idempotent).
    Down,
    /// Show processes, namespaces, addresses and nodes.
    Status,
    /// Run the lab's kubectl with the lab's admin kubeconfig.
    Kubectl {
        /// Arguments for kubectl.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build (up) or remove (down) the network-shapes topology beside the
    /// running lab, for exploring it by hand (see e2e/README.md, "Network
    /// shapes"); `cargo lab down` removes it too.
    Shapes {
        /// up or down.
        #[arg(value_parser = ["up", "down"])]
        action: String,
    },
    /// Run a command inside a lab namespace (node1…nodeN or client).
    Exec {
        /// The namespace: node1…nodeN, client (or flb-node1, flb-client).
        namespace: String,
        /// The command and its arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        command: Vec<String>,
    },
    /// Show FerroLB working: lab up, chart installed, a LoadBalancer Service pinged
    /// and fetched from outside the cluster, and a summary.
    Demo,
    /// Run the fault lab (`e2e/tests/faults.rs`) against the running lab, or
    /// a new one: faults injected into the speakers while the client checks
    /// that one node answers for each IP. Arguments go to the test binary:
    /// a name filter, `--ignored soak` for the long soak.
    Faults {
        /// Arguments for the test binary (after `cargo test … --`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run every test: unit, integration and end-to-end (in the lab).
    Test {
        /// Extra arguments for `cargo test`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // The node agent is a daemon with a log file: say what it does.
    let default_level = if matches!(cli.command, Cmd::Agent { .. }) {
        "info"
    } else {
        "error"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cargo lab: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Cmd::Up { nodes, strict_arp } => {
            build_ferrolb();
            let mut lab = Lab::up_with(nodes, strict_arp.unwrap_or(true)).await?;
            if let Some(on) = strict_arp.filter(|on| *on != lab.record.strict_arp) {
                lab.set_strict_arp(on).await?;
            }
            say(&format!(
                "lab up: {} nodes, API server {}\n\
                 try: cargo lab kubectl -- get nodes -o wide\n     \
                 cargo lab exec client -- ping -c1 {}",
                lab.record.nodes,
                ferrolb_e2e::control_plane::server_url(),
                lan::Host::node(1).ipv4
            ))?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Down => {
            lab::down()?;
            say("lab down")?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Status => {
            say(lab::status()?.trim_end())?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Kubectl { args } => {
            let lab = Lab::current().context("the lab is not up: run `cargo lab up`")?;
            let status = Command::new(lab.tools().path("kubectl"))
                .arg("--kubeconfig")
                .arg(lab.kubeconfig())
                .args(&args)
                .status()
                .context("cannot run kubectl")?;
            Ok(exit_code(status))
        }
        Cmd::Exec { namespace, command } => {
            let netns = lan::netns_of(&namespace)?;
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", &netns]).args(&command);
            if let Some(lab) = Lab::current() {
                cmd.env("KUBECONFIG", lab.kubeconfig());
            }
            let status = cmd
                .status()
                .with_context(|| format!("cannot run a command in {netns}"))?;
            Ok(exit_code(status))
        }
        Cmd::Demo => {
            ferrolb_e2e::demo::run().await?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Shapes { action } => {
            let lab = Lab::current().context("the lab is not up: run `cargo lab up`")?;
            if action == "up" {
                let shapes = topology::Topology::create(&lab).await?;
                say(&shapes.summary())?;
                shapes.keep();
            } else {
                topology::Topology::remove(&lab)?;
                say("shapes topology removed")?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Test { args } => test(args).await,
        Cmd::Faults { args } => faults(args),
        Cmd::StrictArp { state } => {
            let mut lab = Lab::current().context("the lab is not up: run `cargo lab up`")?;
            lab.set_strict_arp(state == "on").await?;
            say(&format!("strictARP {state}"))?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Logs { pod, container } => {
            let lab = Lab::current().context("the lab is not up: run `cargo lab up`")?;
            let (ns, name) = pod
                .split_once('/')
                .context("name the pod as NAMESPACE/NAME")?;
            let dir = ferrolb_e2e::agent::pod::pod_dir(&lab.state, ns, name);
            let mut logs: Vec<_> = std::fs::read_dir(&dir)
                .with_context(|| format!("no pod {pod} runs in the lab"))?
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "log"))
                .filter(|p| {
                    container
                        .as_deref()
                        .is_none_or(|c| p.file_stem().is_some_and(|s| s == c))
                })
                .collect();
            logs.sort();
            for log in logs {
                let text = std::fs::read_to_string(&log)
                    .with_context(|| format!("cannot read {}", log.display()))?;
                std::io::stdout()
                    .write_all(text.as_bytes())
                    .context("cannot write to stdout")?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Helm { args } => {
            let lab = Lab::current().context("the lab is not up: run `cargo lab up`")?;
            let status = Command::new(lab.tools().path("helm"))
                .arg("--kubeconfig")
                .arg(lab.kubeconfig())
                .args(&args)
                .status()
                .context("cannot run helm")?;
            Ok(exit_code(status))
        }
        Cmd::Agent { node, state } => {
            ferrolb_e2e::agent::run(node, state).await?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::PodServer { name, ports } => {
            ferrolb_e2e::agent::server::serve(&name, &ports)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Builds FerroLB's binaries, which the node agents run for FerroLB's pods;
/// a failed build is reported, not fatal (the lab itself does not need them).
fn build_ferrolb() {
    if let Err(e) = ferrolb_e2e::agent::build_ferrolb(&ferrolb_e2e::agent::spec::FERROLB_BINARIES) {
        eprintln!(
            "cargo lab: FerroLB's binaries were not built ({e:#}); their pods will not start"
        );
    }
}

/// Builds the tools, brings a fresh lab up (taking down one already running),
/// runs every test of the workspace with the end-to-end tests mandatory, and
/// takes the lab down.
async fn test(args: Vec<String>) -> Result<ExitCode> {
    lab::check_host()?;
    tools::ensure_built()?;
    build_ferrolb();
    // Tests start from a fresh lab: a lab left up (by `cargo lab demo`, say) may hold a
    // FerroLB release whose controller and speakers would act on the tests' Services.
    if Lab::current().is_some() {
        say("cargo lab test: taking the running lab down to start from a fresh one")?;
    }
    lab::down().context("cannot take the running lab down")?;
    Lab::up(DEFAULT_NODES).await?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    // Ctrl-C reaches `cargo test` too; outlive it so the lab is still taken
    // down. Listening for SIGINT replaces the default of dying on it.
    let _interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .context("cannot listen for SIGINT")?;
    let status = Command::new(cargo)
        .args(["test", "--workspace", "--no-fail-fast"])
        .args(&args)
        .env(MANDATORY_ENV, "1")
        .status()
        .context("cannot run cargo test");
    lab::down().context("cannot take the lab down after the tests")?;
    Ok(exit_code(status?))
}

/// Runs the fault lab's tests one at a time, with the end-to-end tests
/// mandatory, in the running lab (the tests bring one up if none runs). The
/// lab stays up.
fn faults(args: Vec<String>) -> Result<ExitCode> {
    lab::check_host()?;
    tools::ensure_built()?;
    build_ferrolb();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["test", "-p", "ferrolb-e2e", "--test", "faults", "--"])
        .args(["--test-threads=1", "--nocapture"])
        .args(&args)
        .env(MANDATORY_ENV, "1")
        .status()
        .context("cannot run cargo test")?;
    Ok(exit_code(status))
}

fn exit_code(status: std::process::ExitStatus) -> ExitCode {
    match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(c) => ExitCode::from(u8::try_from(c).unwrap_or(1)),
        None => ExitCode::FAILURE,
    }
}

fn say(text: &str) -> Result<()> {
    writeln!(std::io::stdout(), "{text}").context("cannot write to stdout")
}
