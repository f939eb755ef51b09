//! What the controller and the speaker share for operators: the same log set-up
//! (`--log-format`, `FERROLB_LOG`), the same HTTP endpoint (`/metrics`,
//! `/healthz`, `/readyz`; on the pod's address, over HTTPS, `/metrics` only for
//! callers the API server authorises) and the same watch retry policy, so both
//! behave alike on a dashboard, in a pod spec and through an API server outage.

mod auth;
mod build_info;
mod cli;
mod endpoint;
mod http;
mod logs;
mod metric_names;
mod tls;
mod watch;

pub use build_info::{BUILD_INFO, REVISION, VERSION, register_build_info};
pub use cli::undocumented_flags;
pub use endpoint::{BindAddress, Certificate, EndpointConfig, MetricsFlags};
pub use http::{Health, HttpError, MetricsEndpoint};
pub use logs::{LOG_FILTER_ENV, LogFormat, init_logs};
pub use metric_names::{documented_metric_names, registered_metric_names, undocumented_metrics};
pub use watch::{WATCH_BACKOFF_RESET, WatchBackoff, watch_backoff};
