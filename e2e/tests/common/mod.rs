//! What the speaker and fault tests share beyond `ferrolb_e2e::speakers`: the
//! owner the speaker's own election picks, computed here so that the lab's
//! library (and the `cargo lab` binary) does not depend on the speaker crate.

use std::net::IpAddr;

use ferrolb_speaker::election::{ElectionKey, NodeName, owner};

/// The node the election picks among `nodes` for `ips`, the IPs of one
/// Service (its dual-stack IPs are elected together, as one key).
pub(crate) fn expected_owner(
    ips: impl IntoIterator<Item = impl Into<IpAddr>>,
    nodes: &[&str],
) -> String {
    let candidates: Vec<NodeName> = nodes.iter().map(|n| NodeName::from(*n)).collect();
    let key = ElectionKey::new(ips.into_iter().map(Into::into));
    owner(&key, &candidates)
        .map(ToString::to_string)
        .unwrap_or_default()
}
