//! The free addresses of one pool and family, cheap at any pool size.
//!
//! Never-used addresses are kept as a map of disjoint intervals, so a `/48` costs the
//! same as a `/28`: allocation takes the front of the lowest interval (O(log n) in the
//! number of intervals, which grows only with addresses claimed out of order). Released
//! addresses go to a quarantine queue instead of back into the intervals, and are handed
//! out again (oldest first) only once every never-used address is gone: a released IP
//! may still sit in ARP caches, DNS records or firewall rules pointing at its former
//! Service.
//!
//! Reserved addresses (the cluster's own networks) are set apart on both sides: never-used
//! ones in their own intervals, quarantined ones in their own queue that keeps their
//! release order. Neither is ever handed out, and both return to service, in place, when
//! the reservation ends.
//!
//! Invariant: every usable address of the pool is in exactly one of `fresh`,
//! `fresh_reserved`, `released`, `parked`, or held (in none of them). So
//! `available() + reserved_free() + held == size`.

use std::collections::{BTreeMap, HashMap};

use ferrolb_address::IpRange;

use super::intervals::{self, holds};
use super::pool::{first_usable_from, is_buggy, usable_count};

/// Free addresses of one family of one pool, as offsets.
#[derive(Debug, Clone, Default)]
pub(crate) struct FreeSpace {
    /// Skip IPv4 `.0` and `.255` (only ever set for IPv4).
    avoid_buggy: bool,
    /// Never-used intervals outside reserved ranges, `first → last` inclusive, disjoint.
    fresh: BTreeMap<u128, u128>,
    /// Usable addresses in `fresh`.
    fresh_count: u128,
    /// Never-used intervals inside reserved ranges.
    fresh_reserved: BTreeMap<u128, u128>,
    /// Usable addresses in `fresh_reserved`.
    fresh_reserved_count: u128,
    /// Quarantined addresses outside reserved ranges, by release order.
    released: BTreeMap<u64, u128>,
    /// Quarantined addresses inside reserved ranges, by release order.
    parked: BTreeMap<u64, u128>,
    /// Release order of every quarantined address (released or parked), for O(log n)
    /// removal.
    order_of: HashMap<u128, u64>,
    /// Reserved offsets, normalised.
    reserved: Vec<(u128, u128)>,
}

impl FreeSpace {
    /// All usable addresses of `ranges` (one family, ascending, disjoint), never used,
    /// none reserved.
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

    /// How many free addresses are withheld because they are reserved.
    pub(crate) fn reserved_free(&self) -> u128 {
        self.fresh_reserved_count + self.parked.len() as u128
    }

    /// Takes the lowest never-used address, or else the address released longest ago.
    /// Never a reserved one.
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
        self.order_of.remove(&bits);
        Some(bits)
    }

    /// Removes one specific address (a requested or restored IP, reserved or not);
    /// false when it was not free or is avoided.
    pub(crate) fn claim(&mut self, bits: u128) -> bool {
        if self.avoid_buggy && is_buggy(bits) {
            return false;
        }
        if let Some(order) = self.order_of.remove(&bits) {
            if self.released.remove(&order).is_none() {
                self.parked.remove(&order);
            }
            return true;
        }
        if cut_out(&mut self.fresh, bits) {
            self.fresh_count -= 1;
            return true;
        }
        if cut_out(&mut self.fresh_reserved, bits) {
            self.fresh_reserved_count -= 1;
            return true;
        }
        false
    }

    /// Puts an address at its place in the quarantine: `order` is the allocator-wide
    /// release order, so one release has the same place in every pool offering the
    /// address. The caller passes only usable addresses of the pool that are held.
    pub(crate) fn release(&mut self, bits: u128, order: u64) {
        if self.is_free(bits) {
            return;
        }
        if holds(&self.reserved, bits) {
            self.parked.insert(order, bits);
        } else {
            self.released.insert(order, bits);
        }
        self.order_of.insert(bits, order);
    }

    /// Moves a free address (never used, or already quarantined) to place `order` in
    /// the quarantine; false when it is held or not usable.
    pub(crate) fn requeue(&mut self, bits: u128, order: u64) -> bool {
        if !self.claim(bits) {
            return false;
        }
        self.release(bits, order);
        true
    }

    /// Whether the address is free (never used or quarantined).
    pub(crate) fn is_free(&self, bits: u128) -> bool {
        self.order_of.contains_key(&bits) || self.is_never_used(bits)
    }

    /// Whether the address is usable, free and was never handed out.
    pub(crate) fn is_never_used(&self, bits: u128) -> bool {
        !(self.avoid_buggy && is_buggy(bits))
            && (in_map(&self.fresh, bits) || in_map(&self.fresh_reserved, bits))
    }

    /// The quarantine as `(release order, address)`, oldest first, reserved addresses
    /// included: it is what a restart must restore.
    pub(crate) fn queued(&self) -> impl Iterator<Item = (u64, u128)> + '_ {
        let mut released = self.released.iter().peekable();
        let mut parked = self.parked.iter().peekable();
        std::iter::from_fn(move || {
            let next = match (released.peek(), parked.peek()) {
                (Some(r), Some(p)) if p.0 < r.0 => parked.next(),
                (Some(_), _) => released.next(),
                (None, _) => parked.next(),
            };
            next.map(|(order, bits)| (*order, *bits))
        })
    }

    /// Sets the reserved offsets (normalised). Never-used addresses move between
    /// `fresh` and `fresh_reserved`, quarantined ones between `released` and `parked`
    /// keeping their order. O(intervals + quarantine), never O(addresses).
    pub(crate) fn set_reserved(&mut self, reserved: Vec<(u128, u128)>) {
        if reserved == self.reserved {
            return;
        }
        let never_used = intervals::normalise(
            self.fresh
                .iter()
                .chain(self.fresh_reserved.iter())
                .map(|(f, l)| (*f, *l))
                .collect(),
        );
        let parts = intervals::split(&never_used, &reserved);
        let count = |set: &[(u128, u128)]| -> u128 {
            set.iter()
                .map(|(f, l)| usable_count(self.avoid_buggy, *f, *l))
                .sum()
        };
        self.fresh_count = count(&parts.outside);
        self.fresh_reserved_count = count(&parts.inside);
        self.fresh = parts.outside.into_iter().collect();
        self.fresh_reserved = parts.inside.into_iter().collect();
        let queued: Vec<(u64, u128)> = self.queued().collect();
        self.released.clear();
        self.parked.clear();
        for (order, bits) in queued {
            if holds(&reserved, bits) {
                self.parked.insert(order, bits);
            } else {
                self.released.insert(order, bits);
            }
        }
        self.reserved = reserved;
    }
}

/// Removes `bits` from an interval map; false when no interval holds it.
fn cut_out(map: &mut BTreeMap<u128, u128>, bits: u128) -> bool {
    let Some((&first, &last)) = map.range(..=bits).next_back() else {
        return false;
    };
    if last < bits {
        return false;
    }
    map.remove(&first);
    if first < bits {
        map.insert(first, bits - 1);
    }
    if bits < last {
        map.insert(bits + 1, last);
    }
    true
}

fn in_map(map: &BTreeMap<u128, u128>, bits: u128) -> bool {
    map.range(..=bits)
        .next_back()
        .is_some_and(|(_, &last)| bits <= last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrolb_address::Family;
    use proptest::prelude::*;

    fn space(avoid: bool, first: u128, last: u128) -> FreeSpace {
        let r = IpRange::from_bits(Family::V4, first, last).unwrap();
        FreeSpace::new(avoid, [r].iter())
    }

    #[test]
    fn takes_in_ascending_order_then_released_oldest_first() {
        let mut s = space(false, 10, 12);
        assert_eq!(s.take(), Some(10));
        assert_eq!(s.take(), Some(11));
        s.release(11, 1);
        s.release(10, 2);
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
        s.release(5, 1);
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
        assert!(
            !s.requeue(0x200, 1),
            "an avoided address never enters the queue"
        );
    }

    #[test]
    fn requeue_moves_a_free_address_to_its_place_and_refuses_held_ones() {
        let mut s = space(false, 0, 9);
        assert!(s.requeue(7, 5));
        assert!(s.requeue(3, 2));
        assert_eq!(s.queued().collect::<Vec<_>>(), [(2, 3), (5, 7)]);
        assert!(s.requeue(3, 9), "a queued address moves to its new place");
        assert_eq!(s.queued().collect::<Vec<_>>(), [(5, 7), (9, 3)]);
        assert_eq!(s.available(), 10);
        assert_eq!(s.take(), Some(0));
        assert!(!s.requeue(0, 10), "held");
        assert!(!s.is_never_used(7) && s.is_never_used(8));
    }

    #[test]
    fn reserved_addresses_are_never_taken_and_return_in_place() {
        let mut s = space(false, 0, 9);
        assert_eq!(s.take(), Some(0));
        assert_eq!(s.take(), Some(1));
        s.release(1, 1);
        s.release(0, 2);
        s.set_reserved(vec![(1, 4)]);
        assert_eq!((s.available(), s.reserved_free()), (6, 4));
        assert_eq!(s.queued().collect::<Vec<_>>(), [(1, 1), (2, 0)]);
        let taken: Vec<u128> = std::iter::from_fn(|| s.take()).collect();
        assert_eq!(taken, [5, 6, 7, 8, 9, 0], "never 1..=4");
        assert!(s.claim(3), "a reserved address can still be restored");
        assert_eq!(s.reserved_free(), 3);
        s.release(3, 3);
        assert_eq!(
            s.reserved_free(),
            4,
            "released back into the reserved queue"
        );
        s.set_reserved(Vec::new());
        assert_eq!((s.available(), s.reserved_free()), (4, 0));
        let taken: Vec<u128> = std::iter::from_fn(|| s.take()).collect();
        assert_eq!(
            taken,
            [2, 4, 1, 3],
            "never-used first, then the queue in order"
        );
    }

    #[test]
    fn a_huge_reserved_block_inside_a_huge_pool_costs_a_few_intervals() {
        let pool = IpRange::from_bits(Family::V6, 0, (1 << 64) - 1).unwrap();
        let mut s = FreeSpace::new(false, [pool].iter());
        s.set_reserved(vec![(0, (1 << 16) - 1)]);
        assert_eq!(s.fresh.len() + s.fresh_reserved.len(), 2);
        assert_eq!(s.take(), Some(1 << 16));
        assert_eq!(s.available(), (1 << 64) - (1 << 16) - 1);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Take,
        Claim(u128),
        Release(u128),
        Requeue(u128),
        Reserve(Vec<(u128, u128)>),
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => Just(Op::Take),
            2 => (0u128..24).prop_map(Op::Claim),
            3 => (0u128..24).prop_map(Op::Release),
            1 => (0u128..24).prop_map(Op::Requeue),
            1 => prop::collection::vec((0u128..24, 0u128..5), 0..3).prop_map(|v| {
                Op::Reserve(intervals::normalise(v.into_iter().map(|(f, n)| (f, f + n)).collect()))
            }),
        ]
    }

    proptest! {
        /// FreeSpace against a model: a list of never-used addresses and a queue.
        #[test]
        fn behaves_like_a_plain_model(avoid in any::<bool>(), ops in prop::collection::vec(arb_op(), 1..60)) {
            // 0xfe..=0x115 crosses a .255 and a .0.
            let base = 0xfe;
            let mut s = space(avoid, base, base + 23);
            let usable = |b: u128| !(avoid && is_buggy(b));
            let mut held: Vec<u128> = Vec::new();
            let mut queue: Vec<u128> = Vec::new();
            let mut reserved: Vec<(u128, u128)> = Vec::new();
            let mut order = 0;
            for op in ops {
                match op {
                    Op::Take => {
                        let free_fresh = (base..base + 24).find(|b| {
                            usable(*b) && !held.contains(b) && !queue.contains(b) && !holds(&reserved, *b)
                        });
                        let expected = free_fresh.or_else(|| queue.iter().copied().find(|b| !holds(&reserved, *b)));
                        let got = s.take();
                        prop_assert_eq!(got, expected);
                        if let Some(b) = got {
                            queue.retain(|q| *q != b);
                            held.push(b);
                        }
                    }
                    Op::Claim(i) => {
                        let b = base + i;
                        let free = usable(b) && !held.contains(&b);
                        prop_assert_eq!(s.claim(b), free);
                        if free {
                            queue.retain(|q| *q != b);
                            held.push(b);
                        }
                    }
                    Op::Release(i) => {
                        let b = base + i;
                        if held.contains(&b) {
                            order += 1;
                            s.release(b, order);
                            held.retain(|h| *h != b);
                            queue.push(b);
                        }
                    }
                    Op::Requeue(i) => {
                        let b = base + i;
                        order += 1;
                        let free = usable(b) && !held.contains(&b);
                        prop_assert_eq!(s.requeue(b, order), free);
                        if free {
                            queue.retain(|q| *q != b);
                            queue.push(b);
                        }
                    }
                    Op::Reserve(r) => {
                        s.set_reserved(r.clone());
                        reserved = r;
                    }
                }
                let free: Vec<u128> = (base..base + 24).filter(|b| usable(*b) && !held.contains(b)).collect();
                let (withheld, offered): (Vec<u128>, Vec<u128>) = free.iter().partition(|b| holds(&reserved, **b));
                prop_assert_eq!(s.available(), offered.len() as u128);
                prop_assert_eq!(s.reserved_free(), withheld.len() as u128);
                let queued: Vec<u128> = s.queued().map(|(_, b)| b).collect();
                prop_assert_eq!(queued, queue.clone());
            }
        }
    }
}
