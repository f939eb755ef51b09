//! `ferrolb-speaker`: elects one node per LoadBalancer IP set and announces
//! it with gratuitous ARP and unsolicited neighbor advertisements.
//!
//! Wiring only: flags, logs and the runtime. Every decision lives in the
//! library (eligibility, election, schedule, membership).

mod runtime;

use anyhow::Context as _;
use clap::Parser as _;
use tracing_subscriber::EnvFilter;

use crate::runtime::cli::{Cli, LogFormat};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logs(cli.log_format);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(runtime::run(cli))
}

fn init_logs(format: LogFormat) {
    let filter = EnvFilter::try_from_env("FERROLB_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
