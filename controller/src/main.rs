//! `ferrolb-controller`: assigns IPs from IPAddressPools to LoadBalancer Services.
//!
//! Wiring only: flags, logs, the metrics endpoint, leader election and the runtime.
//! Every decision lives in the library.

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::Parser;
use ferrolb_controller::check;
use ferrolb_controller::cli::{Cli, Command};
use ferrolb_controller::convert;
use ferrolb_controller::events::Publisher;
use ferrolb_controller::leader::{Election, LeaseConfig};
use ferrolb_controller::metrics::Metrics;
use ferrolb_controller::runtime::{self, Context};
use ferrolb_telemetry::{Health, init_logs};
use prometheus_client::registry::Registry;

fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Some(Command::Convert { file }) = &cli.command {
        return run_convert(file);
    }
    init_logs(cli.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    if let Some(Command::Check {
        controller,
        speaker,
        wait_seconds,
    }) = &cli.command
    {
        let target = check::Target {
            namespace: cli.namespace.clone(),
            controller: controller.clone(),
            speaker: speaker.clone(),
            lease: cli.lease_name.clone(),
            instance: cli.instance.clone().filter(|i| !i.is_empty()),
        };
        return runtime.block_on(run_check(target, Duration::from_secs(*wait_seconds)));
    }
    runtime.block_on(run(cli))
}

/// `check`: reads the installation until every finding is ok or `wait` has passed,
/// prints the last verdict, and fails when a problem remains.
// The verdict on stdout is the point of `check`.
#[allow(clippy::print_stdout)]
async fn run_check(target: check::Target, wait: Duration) -> Result<()> {
    let client = kube::Client::try_default()
        .await
        .context("cannot configure the Kubernetes client (in-cluster or KUBECONFIG)")?;
    let deadline = tokio::time::Instant::now() + wait;
    let findings = loop {
        // A read that fails (not allowed, API server unreachable) is reported at once.
        let findings = check::assess(&target, &check::observe(&client, &target).await?);
        if findings.iter().all(|f| f.ok) || tokio::time::Instant::now() >= deadline {
            break findings;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    for finding in &findings {
        println!("{finding}");
    }
    let problems = findings.iter().filter(|f| !f.ok).count();
    if problems > 0 {
        anyhow::bail!(
            "FerroLB in namespace {} is not working: {problems} problem(s) above",
            target.namespace
        );
    }
    println!("FerroLB in namespace {} works", target.namespace);
    Ok(())
}

// Printing the converted resources on stdout is the point of `convert`.
#[allow(clippy::print_stdout)]
fn run_convert(file: &std::path::Path) -> Result<()> {
    let input = if file.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("cannot read standard input")?;
        s
    } else {
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?
    };
    let conversion = convert::convert(&input)?;
    let mut stderr = std::io::stderr();
    for w in &conversion.warnings {
        writeln!(stderr, "warning: {w}")?;
    }
    print!("{}", conversion.yaml);
    Ok(())
}

async fn run(cli: Cli) -> Result<()> {
    let identity = cli.identity();
    let client = kube::Client::try_default()
        .await
        .context("cannot configure the Kubernetes client (in-cluster or KUBECONFIG)")?;
    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::register(&mut registry));
    let ready = Arc::new(AtomicBool::new(false));
    let health = Health {
        registry: Arc::new(registry),
        ready: ready.clone(),
        not_ready: "watches not synced yet",
    };
    let address = cli.metrics_bind_address;
    let server = tokio::spawn(async move { ferrolb_telemetry::serve(address, health).await });

    let election = if cli.leader_elect {
        Election::start(
            client.clone(),
            LeaseConfig {
                namespace: cli.namespace.clone(),
                name: cli.lease_name.clone(),
                identity: identity.clone(),
                duration: cli.lease_duration,
            },
            metrics.clone(),
        )
    } else {
        metrics.set_leader(true);
        Election::always()
    };
    tracing::info!(
        identity = %identity,
        class = ?cli.load_balancer_class,
        leader_elect = cli.leader_elect,
        "starting"
    );
    let ctx = Context {
        events: Publisher::new(client.clone(), identity),
        client,
        metrics,
        class: cli.load_balancer_class.clone(),
        ready,
        fence: election.fence(),
        field_manager: cli.field_manager.clone(),
        instance: cli.instance.clone().filter(|i| !i.is_empty()),
    };
    let controller = tokio::spawn(runtime::run(ctx, election.leading()));
    tokio::select! {
        result = server => {
            result.context("the metrics server task failed")??;
        }
        result = controller => {
            result.context("the controller task failed")?;
        }
        () = shutdown_signal() => {
            tracing::info!("stopping: releasing the Lease");
        }
    }
    election.resign().await;
    Ok(())
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; stop with Ctrl-C");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
