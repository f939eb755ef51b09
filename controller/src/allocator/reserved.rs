//! The cluster's own networks (Service CIDRs, pod CIDRs, node addresses), which no
//! Service may receive.
//!
//! A LoadBalancer IP inside one of them breaks the cluster, not just the Service: the
//! kube-proxy rules, the pod routes or the node's own address would answer instead. So a
//! reserved address is never handed out, neither never-used, nor from the quarantine,
//! nor when requested. A Service that already holds one keeps it (stability first: the
//! user sees the pool's condition and moves it deliberately, rather than losing a
//! working IP because a node joined).
//!
//! Each pool's free space carves the reserved ranges out of its never-used intervals
//! and parks reserved addresses of its quarantine, so allocation stays O(log n);
//! changing the ranges costs O(pools × (intervals + quarantine)), fine for the rare
//! event it is.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ferrolb_address::{AddressSet, Family, IpRange, to_bits};

use super::intervals::{self, holds};
use super::{Allocator, FAMILIES, slot};

/// The reserved ranges, labelled for messages and merged for lookups.
#[derive(Debug, Clone, Default)]
pub(crate) struct ReservedRanges {
    /// As given: `(label, range)`.
    labelled: Vec<(String, IpRange)>,
    /// Every range's offsets, normalised, per family by [`slot`].
    merged: [Vec<(u128, u128)>; 2],
}

impl ReservedRanges {
    fn new(labelled: Vec<(String, IpRange)>) -> Self {
        let merged = FAMILIES.map(|family| {
            intervals::normalise(
                labelled
                    .iter()
                    .filter(|(_, r)| r.family() == family)
                    .map(|(_, r)| (r.first_bits(), r.last_bits()))
                    .collect(),
            )
        });
        Self { labelled, merged }
    }

    /// The first labelled range holding `ip`, if it is reserved. O(log n) when it is
    /// not, which is the common case.
    pub(crate) fn covering(&self, ip: IpAddr) -> Option<(&str, IpRange)> {
        let (family, bits) = to_bits(ip);
        if !holds(&self.merged[slot(family)], bits) {
            return None;
        }
        self.labelled
            .iter()
            .find(|(_, r)| r.contains(ip))
            .map(|(label, r)| (label.as_str(), *r))
    }

    /// Whether `ip` is reserved, in O(log n).
    pub(crate) fn holds(&self, ip: IpAddr) -> bool {
        let (family, bits) = to_bits(ip);
        holds(&self.merged[slot(family)], bits)
    }

    /// The reserved offsets of `family` inside `ranges` (one family, ascending,
    /// disjoint): all a pool's free space needs to know.
    pub(crate) fn within<'a>(
        &self,
        family: Family,
        ranges: impl Iterator<Item = &'a IpRange>,
    ) -> Vec<(u128, u128)> {
        let pool: Vec<(u128, u128)> = ranges.map(|r| (r.first_bits(), r.last_bits())).collect();
        intervals::split(&pool, &self.merged[slot(family)]).inside
    }

    /// Per label, the lowest range both the label's ranges and `addresses` hold.
    fn overlaps(&self, addresses: &AddressSet) -> Vec<(String, IpRange)> {
        let mut found: BTreeMap<&str, IpRange> = BTreeMap::new();
        for (label, range) in &self.labelled {
            let common = addresses
                .ranges_of(range.family())
                .find_map(|p| p.intersection(range));
            if let Some(common) = common {
                found
                    .entry(label)
                    .and_modify(|c| *c = (*c).min(common))
                    .or_insert(common);
            }
        }
        found
            .into_iter()
            .map(|(label, r)| (label.to_owned(), r))
            .collect()
    }
}

impl Allocator {
    /// Sets the cluster's own networks, each with a label naming it in messages (e.g.
    /// `ServiceCIDR kubernetes`, `podCIDR of node node3`, `InternalIP of node node2`).
    /// Replaces the previous set; an identical set changes nothing.
    ///
    /// From then on no reserved address is handed out: not as a never-used address,
    /// not from the quarantine (reserved quarantined addresses keep their place and
    /// return to it when the reservation ends), not when requested
    /// ([`super::AllocationError::IpReserved`]). Services already holding a reserved
    /// address keep it, and [`Allocator::restore`] accepts it: moving a working IP
    /// because a node joined would break clients; the pool's status names the overlap
    /// ([`Allocator::reserved_overlaps`]) so the user can move it deliberately.
    ///
    /// Cost: O(pools × (free intervals + quarantine)), never the size of a pool.
    pub fn set_reserved(&mut self, ranges: Vec<(String, IpRange)>) {
        if ranges == self.reserved.labelled {
            return;
        }
        self.reserved = ReservedRanges::new(ranges);
        for entry in self.pools.values_mut() {
            for family in FAMILIES {
                let inside = self
                    .reserved
                    .within(family, entry.pool.addresses.ranges_of(family));
                entry.space[slot(family)].set_reserved(inside);
            }
        }
    }

    /// Per reserved label, the lowest range the pool's `spec.addresses` share with
    /// it, sorted by label; empty for an unknown pool or one clear of the cluster's
    /// networks. For the pool's status condition.
    pub fn reserved_overlaps(&self, pool: &str) -> Vec<(String, IpRange)> {
        self.pools
            .get(pool)
            .map(|e| self.reserved.overlaps(&e.pool.addresses))
            .unwrap_or_default()
    }

    /// Offered addresses of one family of a pool that no Service holds and that are
    /// withheld because they are reserved; `None` for an unknown pool. With
    /// [`Allocator::usage`]: `total == assigned + available + reserved_unassigned`.
    pub fn reserved_unassigned(&self, pool: &str, family: Family) -> Option<u128> {
        let entry = self.pools.get(pool)?;
        Some(entry.space[slot(family)].reserved_free())
    }
}
