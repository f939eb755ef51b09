//! `ferrolb-speaker`: elects one node per LoadBalancer IP set and announces
//! it with gratuitous ARP and unsolicited neighbor advertisements.
//!
//! Wiring only: flags, logs and the runtime. Every decision lives in the
//! library (eligibility, election, schedule, membership).

mod runtime;

use anyhow::Context as _;
use clap::Parser as _;
use ferrolb_telemetry::init_logs;

use crate::runtime::cli::Cli;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logs(cli.log_format);
    cli.validate().map_err(anyhow::Error::msg)?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(runtime::run(cli))
}
