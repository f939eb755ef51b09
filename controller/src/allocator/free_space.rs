//! The free addresses of one pool and family, cheap at any pool size.
//!
//! Never-used addresses are kept as a map of disjoint intervals, so a `/48` costs the
//! same as a `/28`: allocation takes the front of the lowest interval (O(log n) in the
//! number of intervals, which grows only with addresses claimed out of order). Released
//! addresses go to a quarantine queue instead of back into the intervals, and are handed
//! out again (oldest first) only once every never-used address is gone: a released IP
//! may still sit in ARP caches, DNS records or firewall rules pointing at its former
//! Service.

use std::collections::{BTreeMap, HashMap};

use ferrolb_address::IpRange;

use super::pool::{first_usable_from, usable_count};

/// Free addresses of one family of one pool, as offsets.
#[derive(Debug, Clone, Default)]
pub(crate) struct FreeSpace {
    /// Skip IPv4 `.0` and `.255` (only ever set for IPv4).
    avoid_buggy: bool,
    /// Never-used intervals, `first → last` inclusive, disjoint.
    fresh: BTreeMap<u128, u128>,
    /// Usable addresses in `fresh`.
    fresh_count: u128,
    /// Released addresses by release order.
    released: BTreeMap<u64, u128>,
    /// Release order of each address in `released`, for O(log n) removal.
    released_order: HashMap<u128, u64>,
    next_order: u64,
}

impl FreeSpace {
    /// All usable addresses of `ranges` (one family, ascending, disjoint), never used.
    pub(crate) fn new<'a>(avoid_buggy: bool, ranges: impl Iterator<Item = &'a IpRange>) -> Self {
        let mut space = Self {
            avoid_buggy,
            ..Self::default()
        };
        for r in ranges {
            space.fresh.insert(r.first_bits(), r.last_bits());
            space.fresh_count += usable_count(avoid_buggy, r.first_bits(), r.last_bits());
        }
        space
    }

    /// How many addresses can still be handed out.
    pub(crate) fn available(&self) -> u128 {
        // At most one entry per address; usize always fits in u128.
        self.fresh_count + self.released.len() as u128
    }

    /// Takes the lowest never-used address, or else the address released longest ago.
    pub(crate) fn take(&mut self) -> Option<u128> {
        while let Some((&first, &last)) = self.fresh.first_key_value() {
            self.fresh.remove(&first);
            let bits = first_usable_from(self.avoid_buggy, first);
            if bits > last {
                // Only avoided addresses were left in this interval; they never counted.
                continue;
            }
            if bits < last {
                self.fresh.insert(bits + 1, last);
            }
            self.fresh_count -= 1;
            return Some(bits);
        }
        let (_, bits) = self.released.pop_first()?;
        self.released_order.remove(&bits);
        Some(bits)
    }

    /// Removes one specific address (a requested or restored IP); false when it was
    /// not free.
    pub(crate) fn claim(&mut self, bits: u128) -> bool {
        if let Some(order) = self.released_order.remove(&bits) {
            self.released.remove(&order);
            return true;
        }
        let Some((&first, &last)) = self.fresh.range(..=bits).next_back() else {
            return false;
        };
        if last < bits {
            return false;
        }
        self.fresh.remove(&first);
        if first < bits {
            self.fresh.insert(first, bits - 1);
        }
        if bits < last {
            self.fresh.insert(bits + 1, last);
        }
        self.fresh_count -= usable_count(self.avoid_buggy, bits, bits);
        true
    }

    /// Returns an address to the quarantine queue. The caller passes only usable
    /// addresses of the pool that are not free.
    pub(crate) fn release(&mut self, bits: u128) {
        if self.is_free(bits) {
            return;
        }
        let order = self.next_order;
        self.next_order += 1;
        self.released.insert(order, bits);
        self.released_order.insert(bits, order);
    }

    /// Whether the address is free (never used or released).
    pub(crate) fn is_free(&self, bits: u128) -> bool {
        self.released_order.contains_key(&bits)
            || self
                .fresh
                .range(..=bits)
                .next_back()
                .is_some_and(|(_, &last)| bits <= last)
    }

    /// The released addresses, oldest first, to carry the quarantine over a pool edit.
    pub(crate) fn released_in_order(&self) -> impl Iterator<Item = u128> + '_ {
        self.released.values().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrolb_address::Family;

    fn space(avoid: bool, first: u128, last: u128) -> FreeSpace {
        let r = IpRange::from_bits(Family::V4, first, last).unwrap();
        FreeSpace::new(avoid, [r].iter())
    }

    #[test]
    fn takes_in_ascending_order_then_released_oldest_first() {
        let mut s = space(false, 10, 12);
        assert_eq!(s.take(), Some(10));
        assert_eq!(s.take(), Some(11));
        s.release(11);
        s.release(10);
        assert_eq!(s.available(), 3);
        assert_eq!(s.take(), Some(12), "never-used before released");
        assert_eq!(s.take(), Some(11), "released longest ago first");
        assert_eq!(s.take(), Some(10));
        assert_eq!(s.take(), None);
        assert_eq!(s.available(), 0);
    }

    #[test]
    fn claim_splits_intervals_and_counts() {
        let mut s = space(false, 0, 9);
        assert!(s.claim(5));
        assert!(!s.claim(5));
        assert!(!s.is_free(5) && s.is_free(4) && s.is_free(6));
        assert_eq!(s.available(), 9);
        s.release(5);
        assert!(s.claim(5), "a released address can be claimed by request");
        assert_eq!(s.available(), 9);
        assert!(!s.claim(100));
    }

    #[test]
    fn avoided_addresses_are_skipped_without_scanning() {
        let mut s = space(true, 0x1fe, 0x201);
        assert_eq!(s.available(), 2);
        assert_eq!(s.take(), Some(0x1fe));
        assert_eq!(s.take(), Some(0x201));
        assert_eq!(s.take(), None);
    }
}
