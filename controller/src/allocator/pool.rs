//! An `IPAddressPool` as the allocator sees it: typed ranges and the policy deciding
//! which Services it serves.

use std::cmp::Ordering;
use std::fmt;
use std::net::IpAddr;

use ferrolb_address::{AddressSet, Family, to_bits};

use super::error::AllocationError;
use super::selector::LabelSelector;
use super::service::ServiceRequest;

/// A pool of addresses Services may receive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    /// The `IPAddressPool` name.
    pub name: String,
    /// The pool's addresses, normalised.
    pub addresses: AddressSet,
    /// `spec.autoAssign`: when false only Services naming the pool or one of its IPs
    /// get addresses from it.
    pub auto_assign: bool,
    /// `spec.avoidBuggyIPs`: IPv4 addresses ending in `.0` or `.255` are not part of
    /// the pool at all (neither handed out, nor requestable, nor counted).
    pub avoid_buggy_ips: bool,
    /// `spec.serviceAllocation`: when set, the pool serves only matching Services.
    pub allocation: Option<ServiceAllocation>,
}

/// Why a pool is frozen: it keeps its addresses and the Services holding them, but
/// hands out nothing new (see [`super::Allocator::set_frozen`]).
///
/// Freezing replaces editing the pool into one that serves nobody: the pool's real
/// spec stays in place, so counts, overlaps and restored IPs are judged against it, and
/// every refusal can say why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FreezeReason {
    /// The pool's current spec is invalid; the allocator keeps the last valid one so
    /// that Services keep their IPs.
    Invalid,
    /// The pool is being deleted; its Services keep their IPs until they move or the
    /// deletion is forced.
    Deleting,
}

impl FreezeReason {
    /// What a user should do about it, for error messages.
    pub fn advice(self) -> &'static str {
        match self {
            Self::Invalid => "fix the pool's spec to use it again",
            Self::Deleting => "use another pool",
        }
    }
}

/// The cause as a clause: `IPAddressPool "p" takes no new allocations: <cause>`.
impl fmt::Display for FreezeReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Invalid => "its spec is invalid",
            Self::Deleting => "it is being deleted",
        })
    }
}

/// `spec.serviceAllocation` of a pool.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceAllocation {
    /// Lower is tried first; pools without a priority come after every pool with one.
    pub priority: Option<i32>,
    /// Namespaces served. With `namespace_selectors`, a Service's namespace must be
    /// listed or selected; both empty means every namespace.
    pub namespaces: Vec<String>,
    /// Selectors over Namespace labels.
    pub namespace_selectors: Vec<LabelSelector>,
    /// Selectors over Service labels; empty means every Service (of a served namespace).
    pub service_selectors: Vec<LabelSelector>,
}

impl ServiceAllocation {
    /// Whether the policy admits the Service.
    pub fn matches(&self, request: &ServiceRequest) -> bool {
        let namespace_ok = (self.namespaces.is_empty() && self.namespace_selectors.is_empty())
            || self.namespaces.contains(&request.key.namespace)
            || self
                .namespace_selectors
                .iter()
                .any(|s| s.matches(&request.namespace_labels));
        let service_ok = self.service_selectors.is_empty()
            || self
                .service_selectors
                .iter()
                .any(|s| s.matches(&request.labels));
        namespace_ok && service_ok
    }
}

impl Pool {
    /// A pool with default settings (`autoAssign: true`, no buggy-IP avoidance, no
    /// serviceAllocation).
    pub fn new(name: impl Into<String>, addresses: AddressSet) -> Self {
        Self {
            name: name.into(),
            addresses,
            auto_assign: true,
            avoid_buggy_ips: false,
            allocation: None,
        }
    }

    /// Parses a pool's `spec.addresses`, reporting every bad entry in one error.
    pub fn parse<'a>(
        name: impl Into<String>,
        entries: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, AllocationError> {
        let name = name.into();
        match AddressSet::parse(entries) {
            Ok(addresses) => Ok(Self::new(name, addresses)),
            Err(errors) => Err(AllocationError::InvalidPool { pool: name, errors }),
        }
    }

    /// Whether the Service may receive addresses from this pool at all, whichever way
    /// it asks (by pool, by IP or automatically).
    pub fn serves(&self, request: &ServiceRequest) -> bool {
        self.allocation.as_ref().is_none_or(|a| a.matches(request))
    }

    /// Whether `ip` belongs to the pool: inside its ranges and not excluded by
    /// `avoidBuggyIPs`.
    pub fn offers(&self, ip: IpAddr) -> bool {
        let (family, bits) = to_bits(ip);
        self.addresses.contains(ip) && !self.avoids(family, bits)
    }

    /// Whether `ip` lies in the pool's ranges but is excluded by `avoidBuggyIPs`.
    pub(crate) fn avoids_ip(&self, ip: IpAddr) -> bool {
        let (family, bits) = to_bits(ip);
        self.addresses.contains(ip) && self.avoids(family, bits)
    }

    pub(crate) fn avoids(&self, family: Family, bits: u128) -> bool {
        self.avoid_buggy_ips && family == Family::V4 && is_buggy(bits)
    }

    /// Whether the pool offers any address of `family`.
    pub fn has_family(&self, family: Family) -> bool {
        self.addresses
            .ranges_of(family)
            .any(|r| usable_count(self.avoids_family(family), r.first_bits(), r.last_bits()) > 0)
    }

    /// The exact number of addresses of `family` the pool offers.
    pub fn size(&self, family: Family) -> u128 {
        let avoid = self.avoids_family(family);
        self.addresses
            .ranges_of(family)
            .map(|r| usable_count(avoid, r.first_bits(), r.last_bits()))
            .sum()
    }

    pub(crate) fn avoids_family(&self, family: Family) -> bool {
        self.avoid_buggy_ips && family == Family::V4
    }

    /// Rank for automatic choice; `None` when the pool is not an automatic candidate
    /// for the Service. Documented order: pools whose serviceAllocation matches, by
    /// priority (lower first, unset after set); then plain autoAssign pools; ties by
    /// name (the caller sorts by `(rank, name)`).
    pub(crate) fn auto_rank(&self, request: &ServiceRequest) -> Option<(u8, i64)> {
        if !self.auto_assign {
            return None;
        }
        match &self.allocation {
            Some(a) if !a.matches(request) => None,
            Some(ServiceAllocation {
                priority: Some(p), ..
            }) => Some((0, i64::from(*p))),
            Some(_) => Some((1, 0)),
            None => Some((2, 0)),
        }
    }

    /// Rank for attributing an IP found in several pools (requested or restored IPs),
    /// where autoAssign does not matter: same order as [`Pool::auto_rank`].
    pub(crate) fn attribution_rank(&self, request: &ServiceRequest) -> (u8, i64) {
        match &self.allocation {
            Some(a) if !a.matches(request) => (3, 0),
            Some(ServiceAllocation {
                priority: Some(p), ..
            }) => (0, i64::from(*p)),
            Some(_) => (1, 0),
            None => (2, 0),
        }
    }
}

/// Orders pools for a Service: by rank, then by name.
pub(crate) fn by_rank_then_name<R: Ord>(a: (R, &str), b: (R, &str)) -> Ordering {
    a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1))
}

/// IPv4 addresses ending in `.0` or `.255`, which some old client firmware mistakes
/// for network or broadcast addresses even inside larger subnets.
pub(crate) fn is_buggy(bits: u128) -> bool {
    matches!(bits & 0xff, 0 | 0xff)
}

/// The number of addresses in `first..=last` that are not avoided, in O(1).
pub(crate) fn usable_count(avoid_buggy: bool, first: u128, last: u128) -> u128 {
    let size = last - first + 1;
    if !avoid_buggy {
        return size;
    }
    // Addresses ≤ n whose low byte is r: (n - r) / 256 + 1 when n ≥ r.
    let upto = |n: u128, r: u128| if n < r { 0 } else { (n - r) / 256 + 1 };
    let buggy_upto = |n: u128| upto(n, 0) + upto(n, 0xff);
    let below = if first == 0 { 0 } else { buggy_upto(first - 1) };
    size - (buggy_upto(last) - below)
}

/// The first address at or after `bits` that is not avoided. For IPv4 offsets only;
/// may return a value past the range end, which the caller checks.
pub(crate) fn first_usable_from(avoid_buggy: bool, bits: u128) -> u128 {
    if !avoid_buggy {
        return bits;
    }
    match bits & 0xff {
        0 => bits + 1,
        0xff => bits + 2,
        _ => bits,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usable_count_matches_brute_force() {
        for (first, last) in [
            (0u128, 0u128),
            (0, 255),
            (0, 256),
            (254, 257),
            (255, 255),
            (1, 254),
            (10, 1000),
        ] {
            let brute = (first..=last).filter(|b| !is_buggy(*b)).count() as u128;
            assert_eq!(usable_count(true, first, last), brute, "{first}..={last}");
            assert_eq!(usable_count(false, first, last), last - first + 1);
        }
    }

    #[test]
    fn first_usable_skips_zero_and_broadcast() {
        assert_eq!(first_usable_from(true, 0x100), 0x101);
        assert_eq!(first_usable_from(true, 0x1ff), 0x201);
        assert_eq!(first_usable_from(true, 0x105), 0x105);
        assert_eq!(first_usable_from(false, 0x100), 0x100);
    }
}
