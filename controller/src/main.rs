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
use ferrolb_controller::gossip_key::KeySecret;
use ferrolb_controller::leader::{Election, LeaseConfig};
use ferrolb_controller::metrics::Metrics;
use ferrolb_controller::runtime::{self, Context};
use ferrolb_controller::uninstall::{self, Cleanup};
use ferrolb_telemetry::{Health, MetricsEndpoint, init_logs};

fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Some(Command::Convert {
        file,
        annotate_script,
    }) = &cli.command
    {
        return run_convert(file, annotate_script.as_deref());
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
    if let Some(Command::Cleanup {
        speaker_selector,
        wait_seconds,
    }) = &cli.command
    {
        let cleanup = Cleanup {
            namespace: cli.namespace.clone(),
            speaker_selector: speaker_selector.clone(),
            instance: cli.instance.clone().filter(|i| !i.is_empty()),
            class: cli.load_balancer_class.clone(),
            lease_name: cli.lease_name.clone(),
            wait: Duration::from_secs(*wait_seconds),
        };
        return runtime.block_on(run_cleanup(cleanup));
    }
    runtime.block_on(run(cli))
}

/// `cleanup`: the chart's post-delete hook.
async fn run_cleanup(cleanup: Cleanup) -> Result<()> {
    let client = kube::Client::try_default()
        .await
        .context("cannot configure the Kubernetes client (in-cluster or KUBECONFIG)")?;
    let removed = uninstall::run(client, &cleanup).await?;
    tracing::info!(
        service_l2_statuses = removed.service_statuses,
        speaker_statuses = removed.speaker_statuses,
        pools_unlocked = removed.pools_unlocked,
        lease = removed.lease,
        "removed what the installation left behind"
    );
    Ok(())
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
fn run_convert(file: &std::path::Path, script_path: Option<&std::path::Path>) -> Result<()> {
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
    writeln!(stderr, "{}", conversion.summary)?;
    print!("{}", conversion.yaml);
    match (&conversion.script, script_path) {
        (Some(script), Some(path)) => {
            std::fs::write(path, script)
                .with_context(|| format!("cannot write {}", path.display()))?;
            writeln!(
                stderr,
                "wrote {}: run it after stopping MetalLB's controller and before applying the FerroLB pools (docs/migration.md)",
                path.display()
            )?;
        }
        (Some(_), None) => anyhow::bail!(
            "some Services name pools whose FerroLB name differs; run again with --annotate-script FILE to get the kubectl commands that update them (docs/migration.md)"
        ),
        (None, _) => {}
    }
    Ok(())
}

async fn run(cli: Cli) -> Result<()> {
    let identity = cli.identity();
    let client = kube::Client::try_default()
        .await
        .context("cannot configure the Kubernetes client (in-cluster or KUBECONFIG)")?;
    let (registry, metrics) = Metrics::registered();
    let metrics = Arc::new(metrics);
    let ready = Arc::new(AtomicBool::new(false));
    let health = Health {
        registry: Arc::new(registry),
        ready: ready.clone(),
        not_ready: "watches not synced yet",
    };
    let endpoint =
        MetricsEndpoint::bind(&cli.metrics.endpoint(cli.metrics_port)?, client.clone()).await?;
    let server = tokio::spawn(endpoint.serve(health));

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
        gossip_secret: (!cli.gossip_secret.is_empty()).then(|| KeySecret {
            namespace: cli.namespace.clone(),
            name: cli.gossip_secret.clone(),
            owner: Some(cli.gossip_secret_owner.clone()).filter(|o| !o.is_empty()),
        }),
    };
    let controller = tokio::spawn(runtime::run(ctx, election.leading()));
    tokio::select! {
        result = server => {
            result.context("the metrics server task failed")?;
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
