//! The speaker's own metrics and the HTTP endpoint serving them with the
//! health probes.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

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
#[derive(Debug, Clone, Default)]
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

#[cfg(test)]
mod tests {
    use super::*;
    use ferrolb_speaker::announcer::metrics::AnnouncerMetrics;
    use ferrolb_speaker::membership::MembershipMetrics;

    /// Every metric family the binary registers has one name: Prometheus refuses
    /// a scrape with a family twice.
    #[test]
    fn metric_names_are_unique() {
        let mut registry = Registry::default();
        let _speaker = SpeakerMetrics::register(&mut registry);
        let _membership = MembershipMetrics::register(&mut registry);
        let _announcer = AnnouncerMetrics::register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let mut names: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# HELP ")?.split(' ').next())
            .collect();
        let all = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(
            names.len(),
            all,
            "a metric name is registered twice:\n{text}"
        );
        assert!(names.contains(&"ferrolb_speaker_announced_ips"));
    }
}
