use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

/// The environment variable holding the log filter (`info`, `ferrolb_speaker=debug,info`).
pub const LOG_FILTER_ENV: &str = "FERROLB_LOG";

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Sends logs to standard error in `format`, filtered by `FERROLB_LOG` (default
/// `info`). Colours only when standard error is a terminal, so pod logs stay plain.
pub fn init_logs(format: LogFormat) {
    let filter = EnvFilter::try_from_env(LOG_FILTER_ENV).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
