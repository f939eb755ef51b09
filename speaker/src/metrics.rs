//! The data plane's Prometheus metrics (SPEC §8): requests received,
//! replies sent or suppressed, gratuitous packets sent, IPs announced.
//!
//! Shared by the [`announcer`](crate::announcer), which sends gratuitous
//! packets, and the [`responder`](crate::responder), which answers
//! requests; neither owns them, so neither depends on the other for them.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Address family of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressFamily {
    /// ARP.
    Ipv4,
    /// Neighbor discovery.
    Ipv6,
}

impl AddressFamily {
    /// The label value: `ipv4` or `ipv6`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ipv4 => "ipv4",
            Self::Ipv6 => "ipv6",
        }
    }
}

impl EncodeLabelValue for AddressFamily {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

/// Labels of the per-family, per-interface counters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct PacketLabels {
    /// `ipv4` or `ipv6`.
    pub family: AddressFamily,
    /// Interface name.
    pub interface: String,
}

impl PacketLabels {
    /// Labels for `family` on `interface`.
    #[must_use]
    pub fn new(family: AddressFamily, interface: &str) -> Self {
        Self {
            family,
            interface: interface.to_owned(),
        }
    }
}

/// Why a reply that would have been sent was not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Suppression {
    /// Over the per-interface reply rate.
    RateInterface,
    /// Over the per-sender reply rate.
    RateSender,
    /// The asker's hardware address is multicast, broadcast or zero, or its
    /// IP address is multicast or broadcast: a reply would go to a group,
    /// or to nobody.
    BadSender,
}

impl Suppression {
    /// The label value: `rate_interface`, `rate_sender` or `bad_sender`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RateInterface => "rate_interface",
            Self::RateSender => "rate_sender",
            Self::BadSender => "bad_sender",
        }
    }
}

impl EncodeLabelValue for Suppression {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

/// Labels of the suppressed-replies counter: the packet's family and
/// interface, and why.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct SuppressedLabels {
    /// `ipv4` or `ipv6`.
    pub family: AddressFamily,
    /// Interface name.
    pub interface: String,
    /// Why the reply was not sent.
    pub reason: Suppression,
}

/// Counters and gauges of the data plane. Cloning shares the metrics.
#[derive(Debug, Clone, Default)]
pub struct AnnouncerMetrics {
    /// Every frame or ICMPv6 message the receive sockets delivered, before
    /// decoding. With the kernel filters this moves only with ARP requests
    /// and neighbor solicitations; the integration test relies on it.
    pub frames_received: Family<PacketLabels, Counter>,
    /// Well-formed ARP requests received (for any IP).
    pub arp_requests_received: Family<PacketLabels, Counter>,
    /// Well-formed neighbor solicitations received (for any IP).
    pub ndp_solicitations_received: Family<PacketLabels, Counter>,
    /// Received packets that failed to decode, or arrived with a hop limit
    /// other than 255, and were dropped.
    pub malformed_received: Family<PacketLabels, Counter>,
    /// ARP replies and solicited neighbor advertisements sent.
    pub replies_sent: Family<PacketLabels, Counter>,
    /// Requests for an IP this node answers for that got no reply, by
    /// reason: over a rate limit, or from a sender no reply may go to.
    pub replies_suppressed: Family<SuppressedLabels, Counter>,
    /// Gratuitous ARP and unsolicited neighbor advertisements sent.
    pub gratuitous_sent: Family<PacketLabels, Counter>,
    /// Packets that the kernel refused to send.
    pub send_errors: Family<PacketLabels, Counter>,
    /// IPs this node owns and announces.
    pub announced_ips: Gauge,
}

impl AnnouncerMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "ferrolb_speaker_frames_received",
            "Frames and ICMPv6 messages delivered by the receive sockets, before decoding",
            metrics.frames_received.clone(),
        );
        registry.register(
            "ferrolb_speaker_arp_requests_received",
            "Well-formed ARP requests received",
            metrics.arp_requests_received.clone(),
        );
        registry.register(
            "ferrolb_speaker_ndp_solicitations_received",
            "Well-formed neighbor solicitations received",
            metrics.ndp_solicitations_received.clone(),
        );
        registry.register(
            "ferrolb_speaker_malformed_received",
            "Received ARP or NDP packets dropped as malformed",
            metrics.malformed_received.clone(),
        );
        registry.register(
            "ferrolb_speaker_replies_sent",
            "ARP replies and solicited neighbor advertisements sent",
            metrics.replies_sent.clone(),
        );
        registry.register(
            "ferrolb_speaker_replies_suppressed",
            "ARP replies and neighbor advertisements not sent for an owned IP, by reason (rate_interface, rate_sender, bad_sender)",
            metrics.replies_suppressed.clone(),
        );
        registry.register(
            "ferrolb_speaker_gratuitous_sent",
            "Gratuitous ARP and unsolicited neighbor advertisements sent",
            metrics.gratuitous_sent.clone(),
        );
        registry.register(
            "ferrolb_speaker_send_errors",
            "ARP or NDP packets the kernel refused to send",
            metrics.send_errors.clone(),
        );
        registry.register(
            "ferrolb_speaker_announced_ips",
            "IPs this node owns and announces",
            metrics.announced_ips.clone(),
        );
        metrics
    }

    /// The value of `counter` for `family` on `interface`; for tests and logs.
    #[must_use]
    pub fn get(
        counter: &Family<PacketLabels, Counter>,
        family: AddressFamily,
        interface: &str,
    ) -> u64 {
        counter
            .get_or_create(&PacketLabels::new(family, interface))
            .get()
    }

    /// Counts a reply to a request received on `interface` suppressed for
    /// `reason`.
    pub fn suppressed(&self, family: AddressFamily, interface: &str, reason: Suppression) {
        self.replies_suppressed
            .get_or_create(&SuppressedLabels {
                family,
                interface: interface.to_owned(),
                reason,
            })
            .inc();
    }

    /// The number of replies suppressed for `reason` for `family` on
    /// `interface`; for tests and logs.
    #[must_use]
    pub fn suppressed_count(
        &self,
        family: AddressFamily,
        interface: &str,
        reason: Suppression,
    ) -> u64 {
        self.replies_suppressed
            .get_or_create(&SuppressedLabels {
                family,
                interface: interface.to_owned(),
                reason,
            })
            .get()
    }
}
