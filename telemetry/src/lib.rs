//! What the controller and the speaker share for operators: the same log set-up
//! (`--log-format`, `FERROLB_LOG`), the same HTTP endpoint (`/metrics`,
//! `/healthz`, `/readyz`) and the same watch retry policy, so both behave alike
//! on a dashboard, in a pod spec and through an API server outage.

mod cli;
mod http;
mod logs;
mod watch;

pub use cli::undocumented_flags;
pub use http::{Health, HttpError, serve};
pub use logs::{LOG_FILTER_ENV, LogFormat, init_logs};
pub use watch::{WATCH_BACKOFF_RESET, WatchBackoff, watch_backoff};
