//! The quarantine of released IPs, kept across pool edits and restarts.
//!
//! A released IP goes behind every never-used one (see `free_space`), because it may
//! still sit in ARP caches, DNS records or firewall rules. The queue lives in memory,
//! so the controller persists it in each pool's status ([`Allocator::quarantine`]) and
//! rebuilds it after a restart ([`Allocator::restore_quarantine`]); without that every
//! released IP would become never-used again and the lowest just-released one would be
//! handed out first.
//!
//! Quarantine belongs to the IP, not to a pool: a release takes one allocator-wide
//! order number and enters the queue of every pool offering the IP at that place (as
//! claim and release count an IP in every pool offering it). So any two pools order
//! their common quarantined IPs alike, and a pool created or edited over quarantined
//! IPs of other pools takes them in the same order.

use std::collections::HashMap;
use std::net::IpAddr;

use ferrolb_address::{from_bits, to_bits};

use super::{Allocator, FAMILIES, Pool, slot};

impl Allocator {
    /// The IPs of the pool that are free and quarantined, oldest release first, both
    /// families interleaved by release order; reserved ones included (they keep their
    /// place until the reservation ends). Empty for an unknown pool. The controller
    /// persists this in the pool's status to hand to
    /// [`Allocator::restore_quarantine`] after a restart.
    pub fn quarantine(&self, pool: &str) -> Vec<IpAddr> {
        let Some(entry) = self.pools.get(pool) else {
            return Vec::new();
        };
        let mut queued: Vec<(u64, IpAddr)> = FAMILIES
            .iter()
            .flat_map(|f| {
                entry.space[slot(*f)]
                    .queued()
                    .map(|(order, bits)| (order, from_bits(*f, bits)))
            })
            .collect();
        queued.sort_unstable_by_key(|(order, _)| *order);
        queued.into_iter().map(|(_, ip)| ip).collect()
    }

    /// Rebuilds the pool's quarantine from a list persisted by
    /// [`Allocator::quarantine`], oldest first. Call it once per pool after the pools
    /// are upserted, the reserved ranges set and the Services restored, before any
    /// assignment. Returns how many IPs were quarantined.
    ///
    /// Each listed IP the pool offers that no Service holds goes to the back of the
    /// pool's queue, in list order (the list is the pool's own record, so an IP another
    /// pool's list already quarantined moves to its listed place). In every other pool
    /// offering it, a never-used IP joins the back of the queue too, and an already
    /// quarantined one stays where it is: after every pool's list is restored, each
    /// pool holds its recorded order. IPs held, not offered (or avoided) by the pool,
    /// and unknown pools are ignored: the list may be older than the Services.
    pub fn restore_quarantine(
        &mut self,
        pool: &str,
        ips: impl IntoIterator<Item = IpAddr>,
    ) -> usize {
        let mut applied = 0;
        for ip in ips {
            let offered = self.pools.get(pool).is_some_and(|e| e.pool.offers(ip));
            if !offered || self.ips.contains_key(&ip) {
                continue;
            }
            let order = self.next_release();
            let (family, bits) = to_bits(ip);
            let i = slot(family);
            for (name, entry) in &mut self.pools {
                // The named pool takes its listed place; others keep a place they have.
                let moves =
                    name == pool || entry.pool.offers(ip) && entry.space[i].is_never_used(bits);
                if moves {
                    entry.space[i].requeue(bits, order);
                }
            }
            applied += 1;
        }
        applied
    }

    /// The quarantine a new version of a pool starts with, per family by [`slot`] and
    /// oldest first: its old version's, plus IPs it now offers that other pools hold in
    /// quarantine (released while only they offered them). Held IPs are never in a
    /// queue, so everything returned is free.
    pub(super) fn carried_quarantine(&self, pool: &Pool) -> [Vec<(u64, u128)>; 2] {
        FAMILIES.map(|family| {
            let i = slot(family);
            let mut order_of: HashMap<u128, u64> = HashMap::new();
            for (name, entry) in &self.pools {
                if *name == pool.name {
                    continue;
                }
                for (order, bits) in entry.space[i].queued() {
                    if pool.offers(from_bits(family, bits)) {
                        // A restored list may have given an IP a later place in some
                        // pools than in others; the earliest is the true release.
                        order_of
                            .entry(bits)
                            .and_modify(|o| *o = (*o).min(order))
                            .or_insert(order);
                    }
                }
            }
            // The pool's own order stands over what other pools say.
            if let Some(old) = self.pools.get(&pool.name) {
                for (order, bits) in old.space[i].queued() {
                    if pool.offers(from_bits(family, bits)) {
                        order_of.insert(bits, order);
                    }
                }
            }
            let mut queue: Vec<(u64, u128)> = order_of.into_iter().map(|(b, o)| (o, b)).collect();
            queue.sort_unstable();
            queue
        })
    }

    /// A new place at the back of every quarantine queue.
    pub(super) fn next_release(&mut self) -> u64 {
        self.next_release += 1;
        self.next_release
    }
}
