//! `cargo lab`: bring the FerroLB lab up and down, look inside, run the tests.

use std::io::Write as _;
use std::process::{Command, ExitCode};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use ferrolb_e2e::harness::MANDATORY_ENV;
use ferrolb_e2e::lab::{self, DEFAULT_NODES, Lab};
use ferrolb_e2e::{lan, tools};

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
    /// Run every test: unit, integration and end-to-end (in the lab).
    Test {
        /// Extra arguments for `cargo test`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cargo lab: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Cmd::Up { nodes } => {
            let lab = Lab::up(nodes).await?;
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
        Cmd::Test { args } => test(args).await,
    }
}

/// Builds the tools, brings the lab up (unless already up), runs every test
/// of the workspace with the end-to-end tests mandatory, and takes down the
/// lab it brought up.
async fn test(args: Vec<String>) -> Result<ExitCode> {
    lab::check_host()?;
    tools::ensure_built()?;
    let was_up = Lab::current().is_some();
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
    if !was_up {
        lab::down().context("cannot take the lab down after the tests")?;
    }
    Ok(exit_code(status?))
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
