//! The seam between the election and the data plane: the only module that
//! talks to the [`Announcer`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use ferrolb_speaker::interfaces::NodeInterface;
use ferrolb_speaker::{Announcer, AnnouncerConfig, AnnouncerMetrics, InterfaceSelection};
use tokio::sync::Notify;

/// The data plane, started.
#[derive(Debug)]
pub(crate) struct DataPlane {
    announcer: Announcer,
}

impl DataPlane {
    /// Opens the sockets and starts following interfaces.
    pub(crate) async fn start(
        max_pps: u32,
        refresh: Option<Duration>,
        metrics: AnnouncerMetrics,
    ) -> anyhow::Result<Self> {
        let config = AnnouncerConfig {
            max_pps,
            refresh,
            ..AnnouncerConfig::default()
        };
        let announcer = Announcer::start(config, metrics).await.map_err(|e| {
            anyhow::anyhow!("cannot start the data plane (is CAP_NET_RAW granted?): {e}")
        })?;
        Ok(Self { announcer })
    }

    /// Announces exactly `owned` from now on.
    pub(crate) fn set_owned(&self, owned: &BTreeMap<IpAddr, InterfaceSelection>) {
        self.announcer.set_owned(owned.clone());
    }

    /// Gates replies and announcements on the membership's heartbeat.
    pub(crate) fn set_heartbeat(&self, heartbeat: Arc<ferrolb_speaker::heartbeat::Heartbeat>) {
        self.announcer.set_heartbeat(heartbeat);
    }

    /// Announces `ips`, which this node keeps owning, again from the first
    /// gratuitous packet on, as if just taken over.
    pub(crate) fn reannounce(&self, ips: &[IpAddr]) {
        self.announcer.reannounce(ips.to_vec());
    }

    /// The interfaces the L2Advertisements selecting this node name: usable
    /// for their IPs even when excluded by default by their names.
    pub(crate) fn set_named_interfaces(&self, names: BTreeSet<String>) {
        self.announcer.set_named_interfaces(names);
    }

    /// The interfaces announced on.
    pub(crate) fn interfaces(&self) -> Vec<String> {
        self.announcer.interfaces()
    }

    /// The interfaces this node can announce on, with their addresses, for
    /// its SpeakerStatus.
    pub(crate) fn published_interfaces(&self) -> Vec<NodeInterface> {
        self.announcer.published_interfaces()
    }

    /// The interfaces announced on now that `interfaces` selects.
    pub(crate) fn interfaces_for(&self, interfaces: &InterfaceSelection) -> Vec<String> {
        self.announcer.interfaces_for(interfaces)
    }

    /// Notified when an interface starts or stops being announced on.
    pub(crate) fn interfaces_changed(&self) -> Arc<Notify> {
        self.announcer.interfaces_changed()
    }

    /// Stops announcing and answering.
    pub(crate) async fn shutdown(self) {
        self.announcer.shutdown().await;
    }
}
