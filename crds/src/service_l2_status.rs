use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Which node announces a Service's IPs, on which interfaces, and since when.
///
/// Written by the speaker that owns the Service, in the Service's namespace and with
/// the Service's name, and owned by the Service so it is deleted with it.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "ferrolb.io",
    version = "v1beta1",
    kind = "ServiceL2Status",
    plural = "servicel2statuses",
    shortname = "sl2s",
    category = "ferrolb",
    namespaced,
    status = "ServiceL2StatusStatus",
    derive = "PartialEq",
    derive = "Default",
    printcolumn = r#"{"name":"Service","type":"string","jsonPath":".spec.serviceName"}"#,
    printcolumn = r#"{"name":"Node","type":"string","jsonPath":".status.node"}"#,
    printcolumn = r#"{"name":"Interfaces","type":"string","jsonPath":".status.interfaces"}"#,
    printcolumn = r#"{"name":"IPs","type":"string","jsonPath":".status.ips"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    doc = "Which node announces a Service's IPs, on which interfaces, and since when."
)]
#[serde(rename_all = "camelCase")]
pub struct ServiceL2StatusSpec {
    /// The Service this status describes (same namespace).
    pub service_name: String,
}

/// The announcement of one Service.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceL2StatusStatus {
    /// The node answering ARP and neighbor solicitations for the IPs; absent when no
    /// node may announce them (`reason` says why).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The interfaces the node announces on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<String>,
    /// The announced IPs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<String>,
    /// When `node` took over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Time>,
    /// The membership incarnation of `node`'s speaker when it took over. The
    /// speakers read it to keep ownership where it is: a claim made by an
    /// earlier incarnation (the speaker restarted, or its peers declared it
    /// down meanwhile) no longer holds, so the node does not take back IPs a
    /// successor announces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incarnation: Option<u64>,
    /// Why the IPs are not announced, e.g. `NoReadyEndpoints` or `NoEligibleNode`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A human explanation of `reason`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}
