//! What `ferrolb_service_ip_latency_seconds` times: from the watch delivering a
//! change of a LoadBalancer Service to the status write with the IPs it asked for
//! returning. Plain bookkeeping over Service keys, versions and instants; the
//! runtime feeds it watch events, passes and writes.
//!
//! A change is *pending* from its arrival until a write decided on it (or on a
//! later version) succeeds, or until a pass that saw it decides nothing needs
//! writing (a label edit; a Service waiting for a free address, whose write will
//! come from a pool change, not from the Service). The echoes of the controller's
//! own writes are not changes. Several changes before one write count from the
//! first: that is when the Service started waiting.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::allocator::ServiceKey;

/// Versions remembered per pending Service: enough for the changes in flight
/// while one write is (the write's own echo among them).
const VERSIONS: usize = 8;

/// Changes of one Service not yet written.
#[derive(Debug)]
struct Pending {
    /// When the first of them arrived.
    since: Instant,
    /// Their resourceVersions, oldest first (the oldest dropped beyond
    /// [`VERSIONS`]).
    versions: Vec<String>,
}

/// Pending Service changes, and the versions the controller's own writes
/// produced that the watch has not echoed yet.
#[derive(Debug, Default)]
pub struct ServiceLatency {
    pending: HashMap<ServiceKey, Pending>,
    ours: HashMap<ServiceKey, Vec<String>>,
}

impl ServiceLatency {
    /// The watch delivered `version` of `key` at `at`; `load_balancer` whether the
    /// Service is of type LoadBalancer (others get no IP and are not timed).
    pub fn seen(&mut self, key: ServiceKey, version: String, load_balancer: bool, at: Instant) {
        if !load_balancer {
            self.gone(&key);
            return;
        }
        if let Some(ours) = self.ours.get_mut(&key)
            && let Some(i) = ours.iter().position(|v| *v == version)
        {
            ours.remove(i);
            if ours.is_empty() {
                self.ours.remove(&key);
            }
            return;
        }
        let pending = self.pending.entry(key).or_insert_with(|| Pending {
            since: at,
            versions: Vec::new(),
        });
        if pending.versions.len() == VERSIONS {
            pending.versions.remove(0);
        }
        pending.versions.push(version);
    }

    /// The Service is gone.
    pub fn gone(&mut self, key: &ServiceKey) {
        self.pending.remove(key);
        self.ours.remove(key);
    }

    /// Whether any change waits; passes skip [`ServiceLatency::planned`] when none does.
    pub fn is_idle(&self) -> bool {
        self.pending.is_empty()
    }

    /// A pass decided on the versions `decided_on` gives for each Service and
    /// plans a write for the Services `writing` accepts: a change that pass saw
    /// and wrote nothing for stops pending.
    pub fn planned(
        &mut self,
        decided_on: impl Fn(&ServiceKey) -> Option<String>,
        writing: impl Fn(&ServiceKey) -> bool,
    ) {
        self.pending.retain(|key, pending| {
            writing(key)
                || decided_on(key).is_none_or(|version| !pending.versions.contains(&version))
        });
    }

    /// The write of `key` decided on `decided` succeeded, its status call
    /// returning at `at`, and produced `produced` (whose echoes are no change).
    /// How long the Service waited, when the write answered a pending change.
    pub fn written(
        &mut self,
        key: &ServiceKey,
        decided: &str,
        produced: &[String],
        at: Instant,
    ) -> Option<Duration> {
        let pending = self.pending.remove(key);
        // Echoes that already arrived were taken for changes above; only the
        // others are still to come.
        let to_come: Vec<String> = produced
            .iter()
            .filter(|v| pending.as_ref().is_none_or(|p| !p.versions.contains(v)))
            .cloned()
            .collect();
        if to_come.is_empty() {
            self.ours.remove(key);
        } else {
            self.ours.insert(key.clone(), to_come);
        }
        let pending = pending?;
        pending
            .versions
            .iter()
            .any(|v| v == decided)
            .then(|| at.saturating_duration_since(pending.since))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn web() -> ServiceKey {
        ServiceKey::new("default", "web")
    }

    #[test]
    fn a_new_service_waits_from_its_arrival_to_its_status_write() {
        let t0 = Instant::now();
        let mut l = ServiceLatency::default();
        l.seen(web(), "10".into(), true, t0);
        let took = l.written(&web(), "10", &["11".into(), "12".into()], t0 + ms(12));
        assert_eq!(took, Some(ms(12)));
        // The echoes of the status and annotation writes are no new change.
        l.seen(web(), "11".into(), true, t0 + ms(13));
        l.seen(web(), "12".into(), true, t0 + ms(14));
        assert!(l.is_idle());
    }

    #[test]
    fn an_echo_before_the_response_does_not_hide_the_write() {
        let t0 = Instant::now();
        let mut l = ServiceLatency::default();
        l.seen(web(), "10".into(), true, t0);
        // The watch shows the controller's status write before its PATCH returns.
        l.seen(web(), "11".into(), true, t0 + ms(9));
        assert_eq!(
            l.written(&web(), "10", &["11".into()], t0 + ms(10)),
            Some(ms(10))
        );
        assert!(l.is_idle());
        assert!(l.ours.is_empty(), "an echo already seen is not awaited");
    }

    #[test]
    fn changes_before_the_write_count_from_the_first() {
        let t0 = Instant::now();
        let mut l = ServiceLatency::default();
        l.seen(web(), "10".into(), true, t0);
        // Changed again before the decision's write: that write conflicted, and
        // the next one, decided on the newer version, ends the wait.
        l.seen(web(), "11".into(), true, t0 + ms(4));
        assert_eq!(l.written(&web(), "11", &[], t0 + ms(30)), Some(ms(30)));
    }

    #[test]
    fn a_change_that_needs_no_write_stops_pending() {
        let t0 = Instant::now();
        let mut l = ServiceLatency::default();
        l.seen(web(), "10".into(), true, t0);
        // A pass decided on an older version: the change may still need a write.
        l.planned(|_| Some("9".into()), |_| false);
        assert!(!l.is_idle());
        // A pass saw it and planned nothing (a label edit, or no free address).
        l.planned(|_| Some("10".into()), |_| false);
        assert!(l.is_idle());
        // A later write, caused by a pool change, is no Service latency.
        assert_eq!(l.written(&web(), "10", &[], t0 + ms(60_000)), None);
    }

    #[test]
    fn other_types_and_deleted_services_are_not_timed() {
        let t0 = Instant::now();
        let mut l = ServiceLatency::default();
        l.seen(web(), "10".into(), true, t0);
        l.seen(web(), "11".into(), false, t0 + ms(1));
        assert_eq!(l.written(&web(), "11", &[], t0 + ms(5)), None);
        l.seen(web(), "12".into(), true, t0 + ms(6));
        l.gone(&web());
        assert!(l.is_idle());
    }
}
