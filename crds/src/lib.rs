//! The FerroLB API, group `ferrolb.io`, version `v1beta1`.
//!
//! Four kinds, all derived with kube's `CustomResource`:
//!
//! | kind | scope | short name | written by |
//! |---|---|---|---|
//! | [`IPAddressPool`] | cluster | `ipp` | users; status by the controller |
//! | [`L2Advertisement`] | cluster | `l2a` | users; status by the controller |
//! | [`ServiceL2Status`] | namespaced | `sl2s` | the speaker that announces a Service |
//! | [`SpeakerStatus`] | cluster | `spks` | each node's speaker |
//!
//! Everything a single object can get wrong is rejected by the API server through CEL
//! rules embedded in the CRD ([`validation`]), so FerroLB needs no admission webhook.
//! What depends on other objects (overlapping pools, unknown pool names) is reported
//! by the controller in `status.conditions`.

pub mod annotations;
pub mod conditions;
mod crd;
mod l2advertisement;
mod names;
mod pool;
mod selector;
mod service_l2_status;
mod speaker_status;
pub mod validation;

pub use crd::{Target, all_crds, render_crds};
pub use l2advertisement::{
    L2Advertisement, L2AdvertisementSpec, L2AdvertisementStatus, NodePreference, SubnetCheck,
};
pub use names::{InterfaceName, NamespaceName, PoolAddress, PoolName};
pub use pool::{
    FamilyUsage, IPAddressPool, IPAddressPoolSpec, IPAddressPoolStatus, ReleasedIp,
    ServiceAllocation,
};
pub use selector::Selector;
pub use service_l2_status::{ServiceL2Status, ServiceL2StatusSpec, ServiceL2StatusStatus};
pub use speaker_status::{
    INSTANCE_LABEL, InterfaceAddresses, SpeakerStatus, SpeakerStatusSpec, SpeakerStatusStatus,
    speaker_field_manager,
};

/// The API group of every FerroLB kind.
pub const GROUP: &str = "ferrolb.io";
/// The served and stored version.
pub const VERSION: &str = "v1beta1";
/// The `kubectl get` category that lists every FerroLB object (`kubectl get ferrolb`).
pub const CATEGORY: &str = "ferrolb";
/// Length in bytes of the speakers' gossip key, the `key` of the gossip Secret
/// (a ChaCha20-Poly1305 key). The controller creates it; the speakers read it.
pub const GOSSIP_KEY_LEN: usize = 32;
/// The data key of the gossip Secret that holds the key.
pub const GOSSIP_SECRET_KEY: &str = "key";
