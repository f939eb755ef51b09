//! The speaker's own metrics, and the one registry `/metrics` serves with
//! every metric of the binary in it.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use ferrolb_speaker::AnnouncerMetrics;
use ferrolb_speaker::election::NodeName;
use ferrolb_speaker::eligibility::Live;
use ferrolb_speaker::membership::MembershipMetrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Every metric of the speaker, registered in the registry `/metrics` serves.
#[derive(Debug)]
pub(crate) struct Registered {
    pub registry: Registry,
    pub speaker: SpeakerMetrics,
    pub membership: MembershipMetrics,
    pub announcer: AnnouncerMetrics,
}

/// Builds the registry the binary serves; the docs test lists the same one.
pub(crate) fn registered() -> Registered {
    let mut registry = Registry::default();
    ferrolb_telemetry::register_build_info(&mut registry, "speaker");
    let speaker = SpeakerMetrics::register(&mut registry);
    let membership = MembershipMetrics::register(&mut registry);
    let announcer = AnnouncerMetrics::register(&mut registry);
    Registered {
        registry,
        speaker,
        membership,
        announcer,
    }
}

/// Buckets of the takeover time, in seconds: from a millisecond (a leave message
/// handled at once) to 2.5 s (a loop held up far beyond the failover target).
const TAKEOVER_BUCKETS: [f64; 11] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Labels naming the API resource a failed call was about.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ApiLabels {
    /// e.g. `services`, `servicel2statuses`.
    pub resource: String,
}

/// Labels naming this node.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct NodeLabels {
    /// The node.
    pub node: String,
}

/// Metrics of the election and API side of the speaker.
#[derive(Debug, Clone)]
pub(crate) struct SpeakerMetrics {
    /// Times this node gained or lost an election unit.
    pub ownership_changes: Counter,
    /// Failed API calls, by resource.
    pub api_errors: Family<ApiLabels, Counter>,
    /// 1 when the node's ARP settings are safe, 0 when not.
    pub strict_arp_ok: Family<NodeLabels, Gauge>,
    /// 1 while the speaker hears no peer although other ready speakers exist.
    pub isolated: Gauge,
    /// Times the speaker stood down because its peers had declared it down.
    pub stand_downs: Counter,
    /// Seconds from a peer leaving the membership to this speaker handing the
    /// IPs it gained to the announcer; see [`TakeoverClock`].
    pub takeover: Histogram,
}

impl Default for SpeakerMetrics {
    fn default() -> Self {
        Self {
            ownership_changes: Counter::default(),
            api_errors: Family::default(),
            strict_arp_ok: Family::default(),
            isolated: Gauge::default(),
            stand_downs: Counter::default(),
            takeover: Histogram::new(TAKEOVER_BUCKETS),
        }
    }
}

impl SpeakerMetrics {
    /// Registers the metrics.
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "ferrolb_speaker_ownership_changes",
            "Election units this node took over or released",
            m.ownership_changes.clone(),
        );
        registry.register(
            "ferrolb_speaker_api_errors",
            "Failed Kubernetes API calls, by resource",
            m.api_errors.clone(),
        );
        registry.register(
            "ferrolb_speaker_strict_arp_ok",
            "1 when the node's ARP settings are safe for layer-2 announcements",
            m.strict_arp_ok.clone(),
        );
        registry.register(
            "ferrolb_speaker_isolated",
            "1 while this speaker hears no peer although other ready speakers exist (it then claims no IP of theirs)",
            m.isolated.clone(),
        );
        registry.register(
            "ferrolb_speaker_stand_downs",
            "Times this speaker gave up its IPs because its peers had declared it down",
            m.stand_downs.clone(),
        );
        registry.register(
            "ferrolb_speaker_takeover_seconds",
            "Seconds from a peer leaving the membership (declared down, or its leave received) \
             to this speaker handing the IPs it gained to the announcer, which sends the first \
             gratuitous packet at once",
            m.takeover.clone(),
        );
        m
    }

    /// Counts a failed call about `resource`.
    pub(crate) fn api_error(&self, resource: &str) {
        self.api_errors
            .get_or_create(&ApiLabels {
                resource: resource.to_owned(),
            })
            .inc();
    }
}

/// Times takeovers for `ferrolb_speaker_takeover_seconds`: from the instant the
/// election loop receives a membership view without a peer it saw before (declared
/// down by the failure detector, or its leave message received) to the election
/// that follows, when it gives this node IPs. The failure detection before (probe
/// period and suspicion timeout, both configured) is not part of it; the
/// announcer's pacing after (`--announce-max-pps`) is not either.
#[derive(Debug, Default)]
pub(crate) struct TakeoverClock {
    /// The peers in the last view.
    peers: BTreeSet<NodeName>,
    /// When a peer was first missed since the last election.
    since: Option<Instant>,
}

impl TakeoverClock {
    /// A membership view arrived at `now`.
    pub(crate) fn view(&mut self, live: &Live, now: Instant) {
        if self.since.is_none() && self.peers.iter().any(|p| !live.contains_key(p)) {
            self.since = Some(now);
        }
        self.peers = live.keys().cloned().collect();
    }

    /// An election ran at `now`; `gained` whether it gave this node IPs. The
    /// takeover time when it followed a peer's departure; the departure is
    /// accounted for either way (another node may have taken its IPs).
    pub(crate) fn elected(&mut self, gained: bool, now: Instant) -> Option<Duration> {
        let since = self.since.take()?;
        gained.then(|| now.saturating_duration_since(since))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every metric family the binary registers has one name: Prometheus refuses
    /// a scrape with a family twice.
    #[test]
    fn metric_names_are_unique() {
        let mut names = ferrolb_telemetry::registered_metric_names(&registered().registry);
        let all = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), all, "a metric name is registered twice");
        for name in [
            "ferrolb_build_info",
            "ferrolb_speaker_announced_ips",
            "ferrolb_speaker_membership_size",
            "ferrolb_speaker_takeover_seconds",
            "ferrolb_speaker_gossip_unauthenticated",
        ] {
            assert!(names.iter().any(|n| n == name), "{name} not registered");
        }
    }

    /// The speaker metrics table of docs/operations.md lists exactly what the
    /// speaker registers, families without series included.
    #[test]
    fn every_metric_is_documented() {
        let docs = include_str!("../../../docs/operations.md");
        let registered = ferrolb_telemetry::registered_metric_names(&registered().registry);
        let documented = ferrolb_telemetry::documented_metric_names(docs, "### Speaker metrics");
        let (unknown, missing) = ferrolb_telemetry::undocumented_metrics(&registered, &documented);
        assert!(
            missing.is_empty(),
            "registered but not in docs/operations.md's speaker metrics table: {missing:?}"
        );
        assert!(
            unknown.is_empty(),
            "in docs/operations.md's speaker metrics table but not registered: {unknown:?}"
        );
    }

    fn live(names: &[&str]) -> Live {
        names.iter().map(|n| (NodeName::new(*n), 0)).collect()
    }

    #[test]
    fn takeover_runs_from_the_first_missed_peer_to_the_election_that_gains() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut clock = TakeoverClock::default();
        clock.view(&live(&["a", "b", "c"]), t0);
        assert_eq!(clock.elected(true, t0 + ms(1)), None, "nobody left");
        clock.view(&live(&["a", "b"]), t0 + ms(10));
        clock.view(&live(&["a"]), t0 + ms(12));
        assert_eq!(clock.elected(true, t0 + ms(15)), Some(ms(5)));
        assert_eq!(clock.elected(true, t0 + ms(20)), None, "counted once");
    }

    #[test]
    fn a_departure_whose_ips_went_elsewhere_is_not_timed_later() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut clock = TakeoverClock::default();
        clock.view(&live(&["a", "b", "c"]), t0);
        clock.view(&live(&["a", "b"]), t0 + ms(1));
        assert_eq!(clock.elected(false, t0 + ms(2)), None);
        // A new Service later gives this node an IP: no peer left for it.
        assert_eq!(clock.elected(true, t0 + ms(500)), None);
        // Joins and rejoins are no departures.
        clock.view(&live(&["a", "b", "d"]), t0 + ms(600));
        clock.view(&live(&["a", "b", "d"]), t0 + ms(601));
        assert_eq!(clock.elected(true, t0 + ms(602)), None);
    }
}
