//! What the controller and the speaker share for operators: the same log set-up
//! (`--log-format`, `FERROLB_LOG`) and the same HTTP endpoint (`/metrics`,
//! `/healthz`, `/readyz`), so both behave alike on a dashboard and in a pod spec.

mod cli;
mod http;
mod logs;

pub use cli::undocumented_flags;
pub use http::{Health, HttpError, serve};
pub use logs::{LOG_FILTER_ENV, LogFormat, init_logs};
