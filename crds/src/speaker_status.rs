use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The label naming the installation (`--instance`) a SpeakerStatus belongs to; absent
/// on the statuses of the installation without an instance name.
pub const INSTANCE_LABEL: &str = "ferrolb.io/instance";

/// The server-side-apply field manager of the speakers of installation
/// `instance` (`None`: the installation without a name). One name for every
/// speaker of an installation, so a new owner's apply replaces every field the
/// previous owner set; it also tells which installation wrote a
/// ServiceL2Status.
pub fn speaker_field_manager(instance: Option<&str>) -> String {
    match instance {
        Some(instance) => format!("ferrolb-speaker-{instance}"),
        None => "ferrolb-speaker".to_owned(),
    }
}

/// The health of the FerroLB speaker on one node; the object is named after the node,
/// or `<instance>-<node>` and labelled `ferrolb.io/instance: <instance>` for a speaker
/// of a named installation (`--instance`), so installations side by side do not share
/// one object.
///
/// `kubectl get speakerstatuses` shows at a glance which speakers are ready, how many
/// peers each sees, how many IPs each announces and whether the node's ARP settings
/// are safe (`STRICTARP`; see the strictARP documentation).
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "ferrolb.io",
    version = "v1beta1",
    kind = "SpeakerStatus",
    plural = "speakerstatuses",
    shortname = "spks",
    category = "ferrolb",
    status = "SpeakerStatusStatus",
    derive = "PartialEq",
    derive = "Default",
    printcolumn = r#"{"name":"Node","type":"string","jsonPath":".spec.nodeName"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"StrictARP","type":"string","jsonPath":".status.conditions[?(@.type==\"StrictARP\")].status"}"#,
    printcolumn = r#"{"name":"Peers","type":"integer","jsonPath":".status.peerCount"}"#,
    printcolumn = r#"{"name":"Announcing","type":"integer","jsonPath":".status.announcing"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    doc = "The health of the FerroLB speaker on one node."
)]
#[serde(rename_all = "camelCase")]
pub struct SpeakerStatusSpec {
    /// The node the speaker runs on.
    pub node_name: String,
}

/// A speaker's view of itself and its peers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SpeakerStatusStatus {
    /// Nodes whose speakers this speaker sees alive, itself included.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<String>,
    /// Number of live peers, itself included.
    #[serde(default)]
    pub peer_count: u32,
    /// The gossip address other speakers reach this one at (`ip:port`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gossip_address: Option<String>,
    /// Interfaces the speaker announces on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<String>,
    /// The interfaces this speaker can announce on, with their addresses: every
    /// interface eligible by default and those the L2Advertisements selecting the node
    /// name, plus the one holding the node's InternalIP. The other speakers read it to
    /// elect a node only for IPs on one of its selected interfaces' subnets. Absent
    /// when the speaker does not publish it (an older version): it is then eligible
    /// whatever its subnets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface_addresses: Option<Vec<InterfaceAddresses>>,
    /// Number of IPs this node currently announces.
    #[serde(default)]
    pub announcing: u32,
    /// The speaker's version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// `Ready` and `StrictARP` (True when the node's ARP settings are safe for layer-2
    /// announcements; the message says exactly what to change when False).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// One interface a speaker can announce on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InterfaceAddresses {
    /// The interface name, e.g. `eth0` or `bond0.200`.
    pub name: String,
    /// Its global addresses with their prefix lengths, e.g. `198.18.0.11/24` and
    /// `2001:db8::11/64` (link-local addresses are left out).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    /// True when the default rules exclude the interface by its name (veth*, docker*,
    /// ...): it is used only for L2Advertisements that name it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub named_only: bool,
}
