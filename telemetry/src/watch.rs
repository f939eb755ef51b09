//! How the controller and the speaker retry their watches of the API server.

use std::time::Duration;

use kube::runtime::utils::{Backoff, ResetTimerBackoff};

/// A watch that has not failed for this long starts over from the shortest
/// retry delay.
pub const WATCH_BACKOFF_RESET: Duration = Duration::from_secs(30);

/// Watch retry delays: 0.25 s doubling to 3 s, plus up to as much again of
/// jitter. kube's default grows to 30 s (60 s with jitter) and resets only
/// after two error-free minutes, which after an API server outage left new
/// Services without an IP or unannounced for half a minute: a restarted API
/// server first refuses connections, then answers every resumed watch with
/// 410 Expired, and each answer waited out a full delay before the relist.
/// The jitter spreads the reconnects of many nodes; the caches keep serving
/// their last contents meanwhile.
#[derive(Debug)]
pub struct WatchBackoff {
    builder: backon::ExponentialBuilder,
    delays: backon::ExponentialBackoff,
}

impl Default for WatchBackoff {
    fn default() -> Self {
        let builder = backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(250))
            .with_max_delay(Duration::from_secs(3))
            .with_factor(2.0)
            .with_jitter()
            .without_max_times();
        Self {
            delays: backon::BackoffBuilder::build(builder),
            builder,
        }
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        self.delays.next()
    }
}

impl Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.delays = backon::BackoffBuilder::build(self.builder);
    }
}

/// The retry policy of every watch: [`WatchBackoff`], starting over after
/// [`WATCH_BACKOFF_RESET`] without errors. For `WatchStreamExt::backoff`.
pub fn watch_backoff() -> ResetTimerBackoff<WatchBackoff> {
    ResetTimerBackoff::new(WatchBackoff::default(), WATCH_BACKOFF_RESET)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_retries_stay_short_and_start_over_on_reset() {
        let mut backoff = WatchBackoff::default();
        let delays: Vec<Duration> = backoff.by_ref().take(12).collect();
        assert_eq!(delays.len(), 12, "retries never stop");
        for d in &delays {
            // Jitter adds at most the delay itself.
            assert!(
                *d >= Duration::from_millis(250) && *d <= Duration::from_secs(6),
                "{delays:?}"
            );
        }
        assert!(delays[0] < Duration::from_millis(500), "{delays:?}");
        assert!(
            delays[8..].iter().all(|d| *d >= Duration::from_secs(3)),
            "{delays:?}"
        );
        backoff.reset();
        assert!(
            backoff
                .next()
                .is_some_and(|d| d < Duration::from_millis(500))
        );
    }
}
