//! When two Services may hold the same IP.
//!
//! Rules: both carry the same non-empty sharing key; no `(protocol, port)` pair is
//! exposed by both; and both use the same external traffic policy, selecting the same
//! pods when it is `Local` (one node announces the IP for every Service on it, so that
//! node must run the pods of all of them). Mixing `Cluster` and `Local` Services on
//! one IP is refused, as MetalLB does: the announcing node would be chosen for the
//! `Local` Service only.

use std::fmt;

use super::service::{Port, ServiceRequest, SharingKey, TrafficPolicy};

/// What an IP holder needs to remember about a Service to judge sharing later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ShareProfile {
    pub(crate) key: Option<SharingKey>,
    /// Sorted, without repeats.
    pub(crate) ports: Vec<Port>,
    pub(crate) traffic: TrafficPolicy,
}

impl ShareProfile {
    pub(crate) fn of(request: &ServiceRequest) -> Self {
        let mut ports = request.ports.clone();
        ports.sort_unstable();
        ports.dedup();
        Self {
            key: request.sharing_key.clone(),
            ports,
            traffic: request.traffic_policy.clone(),
        }
    }

    /// Whether a Service with this profile may join an IP held by `holder`.
    pub(crate) fn may_share_with(&self, holder: &ShareProfile) -> Result<(), SharingRefusal> {
        let (Some(ours), Some(theirs)) = (&self.key, &holder.key) else {
            return Err(if self.key.is_none() {
                SharingRefusal::NoSharingKey
            } else {
                SharingRefusal::HolderDoesNotShare
            });
        };
        if ours != theirs {
            return Err(SharingRefusal::DifferentKeys {
                ours: ours.clone(),
                theirs: theirs.clone(),
            });
        }
        if let Some(port) = first_common(&self.ports, &holder.ports) {
            return Err(SharingRefusal::PortOverlap { port });
        }
        match (&self.traffic, &holder.traffic) {
            (TrafficPolicy::Cluster, TrafficPolicy::Cluster) => Ok(()),
            (TrafficPolicy::Local { selector: a }, TrafficPolicy::Local { selector: b }) => {
                if a == b {
                    Ok(())
                } else {
                    Err(SharingRefusal::DifferentPods)
                }
            }
            _ => Err(SharingRefusal::MixedTrafficPolicies),
        }
    }
}

/// The first pair both sorted lists hold, by merge.
fn first_common(a: &[Port], b: &[Port]) -> Option<Port> {
    let (mut i, mut j) = (0, 0);
    while let (Some(x), Some(y)) = (a.get(i), b.get(j)) {
        match x.cmp(y) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => return Some(*x),
        }
    }
    None
}

/// Why a Service may not share an IP with the Service holding it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SharingRefusal {
    /// The requesting Service has no sharing key.
    NoSharingKey,
    /// The holder has no sharing key.
    HolderDoesNotShare,
    /// The keys differ.
    DifferentKeys {
        /// The requesting Service's key.
        ours: SharingKey,
        /// The holder's key.
        theirs: SharingKey,
    },
    /// Both expose this `(protocol, port)` pair.
    PortOverlap {
        /// The common pair.
        port: Port,
    },
    /// One uses `externalTrafficPolicy: Local` and the other `Cluster`.
    MixedTrafficPolicies,
    /// Both use `externalTrafficPolicy: Local` but select different pods.
    DifferentPods,
}

impl fmt::Display for SharingRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoSharingKey => f.write_str(
                "this Service has no ferrolb.io/allow-shared-ip annotation; set the same key on both Services to share the IP",
            ),
            Self::HolderDoesNotShare => f.write_str(
                "that Service has no ferrolb.io/allow-shared-ip annotation; set the same key on both Services to share the IP",
            ),
            Self::DifferentKeys { ours, theirs } => write!(
                f,
                "the sharing keys differ ({ours} here, {theirs} there); use the same ferrolb.io/allow-shared-ip value on both"
            ),
            Self::PortOverlap { port } => write!(
                f,
                "both Services expose {port}; Services sharing an IP must use different ports"
            ),
            Self::MixedTrafficPolicies => f.write_str(
                "one Service uses externalTrafficPolicy Local and the other Cluster; Services sharing an IP must use the same policy",
            ),
            Self::DifferentPods => f.write_str(
                "both use externalTrafficPolicy Local but select different pods; with Local, Services sharing an IP must have the same selector",
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn profile(key: Option<&str>, ports: &[u16], local: Option<&str>) -> ShareProfile {
        ShareProfile {
            key: key.and_then(SharingKey::new),
            ports: ports.iter().map(|p| Port::tcp(*p)).collect(),
            traffic: match local {
                None => TrafficPolicy::Cluster,
                Some(app) => TrafficPolicy::Local {
                    selector: BTreeMap::from([("app".to_owned(), app.to_owned())]),
                },
            },
        }
    }

    #[test]
    fn rules() {
        let a = profile(Some("k"), &[80], None);
        assert_eq!(a.may_share_with(&profile(Some("k"), &[443], None)), Ok(()));
        assert_eq!(
            profile(None, &[443], None).may_share_with(&a),
            Err(SharingRefusal::NoSharingKey)
        );
        assert_eq!(
            a.may_share_with(&profile(None, &[443], None)),
            Err(SharingRefusal::HolderDoesNotShare)
        );
        assert!(matches!(
            a.may_share_with(&profile(Some("j"), &[443], None)),
            Err(SharingRefusal::DifferentKeys { .. })
        ));
        assert_eq!(
            a.may_share_with(&profile(Some("k"), &[22, 80], None)),
            Err(SharingRefusal::PortOverlap {
                port: Port::tcp(80)
            })
        );
        assert_eq!(
            a.may_share_with(&profile(Some("k"), &[443], Some("web"))),
            Err(SharingRefusal::MixedTrafficPolicies)
        );
        let local = profile(Some("k"), &[80], Some("web"));
        assert_eq!(
            local.may_share_with(&profile(Some("k"), &[443], Some("web"))),
            Ok(())
        );
        assert_eq!(
            local.may_share_with(&profile(Some("k"), &[443], Some("db"))),
            Err(SharingRefusal::DifferentPods)
        );
        // Same number, other protocol: no overlap.
        let udp = ShareProfile {
            ports: vec![Port::udp(80)],
            ..a.clone()
        };
        assert_eq!(udp.may_share_with(&a), Ok(()));
    }
}
