//! The allocator: which Service holds which IP, from which pool.
//!
//! A plain synchronous state machine. The Kubernetes adapter feeds it pools
//! ([`Allocator::upsert_pool`], [`Allocator::remove_pool`]) and Services
//! ([`Allocator::restore`] on start, then [`Allocator::assign`] and
//! [`Allocator::release`]), and writes back what it returns. Nothing here blocks, talks
//! to the API server or depends on Kubernetes types.
//!
//! Besides pools and Services the adapter feeds it the cluster's own networks
//! ([`Allocator::set_reserved`]), freezes pools that must hand out nothing new
//! ([`Allocator::set_frozen`]), and persists the quarantine of released IPs across
//! restarts ([`Allocator::quarantine`], [`Allocator::restore_quarantine`]).
//!
//! Where things are decided:
//! - `pool`: what a pool holds and which Services it serves;
//! - `free_space`: which free address comes next (on `intervals` of offsets);
//! - `quarantine`: the order released IPs come back in, across edits and restarts;
//! - `reserved`: which addresses belong to the cluster itself;
//! - `sharing`: when two Services may hold one IP;
//! - `assign`: the choice of pool and addresses for one Service, and restoring;
//! - this module: the bookkeeping of holders, pools, overlaps, freezing and counts.

mod assign;
mod error;
mod free_space;
mod intervals;
mod pool;
mod quarantine;
mod reserved;
mod selector;
mod service;
mod sharing;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use ferrolb_address::{Family, IpRange, from_bits, to_bits};

pub use assign::Restored;
pub use error::{AllocationError, AttemptFailure, PoolAttempt};
pub use pool::{FreezeReason, Pool, ServiceAllocation};
pub use selector::{LabelOperator, LabelRequirement, LabelSelector};
pub use service::{
    FamilyPolicy, IpFamilies, Port, Protocol, ServiceKey, ServiceRequest, SharingKey, TrafficPolicy,
};
pub use sharing::SharingRefusal;

use free_space::FreeSpace;
use reserved::ReservedRanges;
use sharing::ShareProfile;

/// The IPs a Service holds and the pool they come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    /// The pool, written to the `ferrolb.io/ip-allocated-from-pool` annotation.
    pub pool: String,
    /// At most one IP per family, in the order of the Service's `spec.ipFamilies`.
    pub ips: Vec<IpAddr>,
}

/// Address counts of one family of one pool.
///
/// Invariant: `total == assigned + available + r`, where `r` is
/// [`Allocator::reserved_unassigned`], the free addresses withheld because they lie in
/// the cluster's own networks (0 without reserved ranges). A frozen pool counts like
/// any other: its free addresses are `available`, though it hands none out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FamilyUsage {
    /// Addresses the pool offers (buggy-IP avoidance applied).
    pub total: u128,
    /// Offered addresses held by at least one Service, reserved ones included.
    pub assigned: u128,
    /// Offered addresses no Service holds and that are not reserved.
    pub available: u128,
}

/// The state of a pool for new allocations, for its `status.conditions`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolHealth {
    /// The pool is used for new allocations.
    Ready,
    /// The pool shares addresses with other pools and is not used for new
    /// allocations; Services keep the IPs they have.
    Overlapping {
        /// Each other pool and the first range both hold.
        with: BTreeMap<String, IpRange>,
    },
}

/// Who holds which IP. See the module documentation.
#[derive(Debug, Default)]
pub struct Allocator {
    pools: BTreeMap<String, PoolEntry>,
    services: BTreeMap<ServiceKey, Holding>,
    ips: BTreeMap<IpAddr, IpUse>,
    /// IPs held under each sharing key, to find a shareable IP without a scan.
    shared: HashMap<SharingKey, BTreeSet<IpAddr>>,
    /// The cluster's own networks.
    reserved: ReservedRanges,
    /// The last quarantine place given out (see `quarantine`).
    next_release: u64,
}

#[derive(Debug)]
struct PoolEntry {
    pool: Pool,
    overlaps: BTreeMap<String, IpRange>,
    /// Free space per family, indexed by [`slot`].
    space: [FreeSpace; 2],
    assigned: [u128; 2],
    frozen: Option<FreezeReason>,
}

#[derive(Debug, Clone)]
struct Holding {
    allocation: Allocation,
    profile: ShareProfile,
    /// Holds fewer families than the Service asks for (PreferDualStack with one
    /// family, or a failed RequireDualStack keeping its valid IP).
    incomplete: bool,
}

#[derive(Debug)]
struct IpUse {
    /// The key every holder carries (holders of a shared IP all carry the same one).
    key: Option<SharingKey>,
    users: Vec<ServiceKey>,
}

const FAMILIES: [Family; 2] = [Family::V4, Family::V6];

fn slot(family: Family) -> usize {
    match family {
        Family::V4 => 0,
        Family::V6 => 1,
    }
}

impl PoolEntry {
    /// Every address of the pool free and never used, reserved ones set apart.
    fn new(pool: Pool, reserved: &ReservedRanges) -> Self {
        let space = FAMILIES.map(|f| {
            let mut space = FreeSpace::new(pool.avoids_family(f), pool.addresses.ranges_of(f));
            space.set_reserved(reserved.within(f, pool.addresses.ranges_of(f)));
            space
        });
        Self {
            pool,
            overlaps: BTreeMap::new(),
            space,
            assigned: [0, 0],
            frozen: None,
        }
    }

    fn first_overlap(&self) -> Option<&String> {
        self.overlaps.keys().next()
    }
}

impl Allocator {
    /// An allocator with no pools and no Services.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a pool or replaces one of the same name. Returns the Services that lost
    /// IPs because the pool no longer offers them (shrunk, or `avoidBuggyIPs` turned
    /// on); the caller re-assigns exactly those. Every other assignment is untouched.
    ///
    /// Overlaps with other pools are recomputed; see [`Allocator::pool_health`].
    /// Services that may now gain a missing family are listed by
    /// [`Allocator::incomplete`].
    /// A pool whose addresses cannot be parsed never reaches the allocator: the
    /// adapter keeps the last valid version (or none) and freezes it
    /// ([`FreezeReason::Invalid`]).
    ///
    /// The quarantine survives the edit in its order, for the addresses the new
    /// version still offers; addresses it newly offers that other pools hold in
    /// quarantine join it at their place. A freeze survives too: the adapter upserts a
    /// fixed spec and then unfreezes explicitly with [`Allocator::set_frozen`], so a
    /// pool never takes allocations between the two calls by accident.
    pub fn upsert_pool(&mut self, pool: Pool) -> Vec<ServiceKey> {
        let name = pool.name.clone();
        let frozen = match self.pools.get(&name) {
            Some(old) if old.pool == pool => return Vec::new(),
            Some(old) => old.frozen,
            None => None,
        };
        let quarantine = self.carried_quarantine(&pool);
        let mut entry = PoolEntry::new(pool, &self.reserved);
        entry.frozen = frozen;
        for family in FAMILIES {
            let i = slot(family);
            let ranges: Vec<IpRange> = entry.pool.addresses.ranges_of(family).copied().collect();
            for r in ranges {
                let span = from_bits(family, r.first_bits())..=from_bits(family, r.last_bits());
                for ip in self.ips.range(span).map(|(ip, _)| *ip) {
                    if entry.pool.offers(ip) {
                        entry.space[i].claim(to_bits(ip).1);
                        entry.assigned[i] += 1;
                    }
                }
            }
            // Keep quarantined addresses behind never-used ones across the edit.
            for &(order, bits) in &quarantine[i] {
                entry.space[i].requeue(bits, order);
            }
        }
        self.pools.insert(name.clone(), entry);
        self.recompute_overlaps();
        self.drop_invalid_in_pool(&name)
    }

    /// Deletes a pool. Returns the Services whose IPs came from it; they hold nothing
    /// from it any more and the caller re-assigns them.
    pub fn remove_pool(&mut self, name: &str) -> Vec<ServiceKey> {
        let affected: Vec<ServiceKey> = self
            .services
            .iter()
            .filter(|(_, h)| h.allocation.pool == name)
            .map(|(k, _)| k.clone())
            .collect();
        for key in &affected {
            self.release(key);
        }
        if self.pools.remove(name).is_some() {
            self.recompute_overlaps();
        }
        affected
    }

    /// Drops IPs of Services bound to pool `name` that the pool no longer offers.
    fn drop_invalid_in_pool(&mut self, name: &str) -> Vec<ServiceKey> {
        let Some(entry) = self.pools.get(name) else {
            return Vec::new();
        };
        let mut affected = Vec::new();
        for (key, holding) in &self.services {
            if holding.allocation.pool == name
                && holding
                    .allocation
                    .ips
                    .iter()
                    .any(|ip| !entry.pool.offers(*ip))
            {
                affected.push(key.clone());
            }
        }
        for key in &affected {
            let Some(mut holding) = self.services.remove(key) else {
                continue;
            };
            let (keep, drop): (Vec<IpAddr>, Vec<IpAddr>) = holding
                .allocation
                .ips
                .iter()
                .partition(|ip| self.pools.get(name).is_some_and(|e| e.pool.offers(**ip)));
            for ip in drop {
                self.unclaim(key, ip);
            }
            if !keep.is_empty() {
                holding.allocation.ips = keep;
                self.services.insert(key.clone(), holding);
            }
        }
        affected
    }

    fn recompute_overlaps(&mut self) {
        let names: Vec<String> = self.pools.keys().cloned().collect();
        let mut found: Vec<(String, String, IpRange)> = Vec::new();
        for (i, a) in names.iter().enumerate() {
            for b in names.iter().skip(i + 1) {
                if let (Some(pa), Some(pb)) = (self.pools.get(a), self.pools.get(b))
                    && let Some(common) = pa.pool.addresses.first_overlap(&pb.pool.addresses)
                {
                    found.push((a.clone(), b.clone(), common));
                }
            }
        }
        for entry in self.pools.values_mut() {
            entry.overlaps.clear();
        }
        for (a, b, common) in found {
            if let Some(e) = self.pools.get_mut(&a) {
                e.overlaps.insert(b.clone(), common);
            }
            if let Some(e) = self.pools.get_mut(&b) {
                e.overlaps.insert(a, common);
            }
        }
    }

    /// Releases every IP of the Service (deleted, no longer a LoadBalancer, or of
    /// another load-balancer class). Returns the IPs no Service holds any more; a
    /// shared IP stays assigned until its last user releases it.
    pub fn release(&mut self, key: &ServiceKey) -> Vec<IpAddr> {
        let Some(holding) = self.services.remove(key) else {
            return Vec::new();
        };
        holding
            .allocation
            .ips
            .into_iter()
            .filter(|ip| self.unclaim(key, *ip))
            .collect()
    }

    /// Records `service` as a holder of `ip`. The caller has checked that the IP is
    /// free or shareable, and has taken it from its pool's free space when it chose a
    /// never-used one.
    fn claim(&mut self, service: &ServiceKey, key: Option<&SharingKey>, ip: IpAddr) {
        if let Some(used) = self.ips.get_mut(&ip) {
            if !used.users.contains(service) {
                used.users.push(service.clone());
            }
            return;
        }
        self.ips.insert(
            ip,
            IpUse {
                key: key.cloned(),
                users: vec![service.clone()],
            },
        );
        if let Some(k) = key {
            self.shared.entry(k.clone()).or_default().insert(ip);
        }
        let (family, bits) = to_bits(ip);
        // Every pool offering the IP counts it, overlapping pools included.
        for entry in self.pools.values_mut() {
            if entry.pool.offers(ip) {
                entry.space[slot(family)].claim(bits);
                entry.assigned[slot(family)] += 1;
            }
        }
    }

    /// Removes `service` from the holders of `ip`; true when nobody holds it any more.
    fn unclaim(&mut self, service: &ServiceKey, ip: IpAddr) -> bool {
        let Some(used) = self.ips.get_mut(&ip) else {
            return false;
        };
        used.users.retain(|u| u != service);
        if !used.users.is_empty() {
            return false;
        }
        if let Some(IpUse { key: Some(k), .. }) = self.ips.remove(&ip)
            && let Some(set) = self.shared.get_mut(&k)
        {
            set.remove(&ip);
            if set.is_empty() {
                self.shared.remove(&k);
            }
        }
        let (family, bits) = to_bits(ip);
        // One place in every queue: the IP is quarantined, whichever pool offers it.
        let order = self.next_release();
        for entry in self.pools.values_mut() {
            if entry.pool.offers(ip) {
                entry.space[slot(family)].release(bits, order);
                entry.assigned[slot(family)] -= 1;
            }
        }
        true
    }

    /// Moves a solely held IP to its holder's new sharing key.
    fn rekey(&mut self, ip: IpAddr, key: Option<&SharingKey>) {
        let Some(used) = self.ips.get_mut(&ip) else {
            return;
        };
        if used.key.as_ref() == key {
            return;
        }
        if let Some(old) = used.key.take()
            && let Some(set) = self.shared.get_mut(&old)
        {
            set.remove(&ip);
            if set.is_empty() {
                self.shared.remove(&old);
            }
        }
        used.key = key.cloned();
        if let Some(k) = key {
            self.shared.entry(k.clone()).or_default().insert(ip);
        }
    }

    /// The Service's current allocation.
    pub fn allocation(&self, key: &ServiceKey) -> Option<&Allocation> {
        self.services.get(key).map(|h| &h.allocation)
    }

    /// Every Service holding IPs, by key.
    pub fn allocations(&self) -> impl Iterator<Item = (&ServiceKey, &Allocation)> {
        self.services.iter().map(|(k, h)| (k, &h.allocation))
    }

    /// Services holding fewer families than they ask for, e.g. PreferDualStack
    /// Services whose pool had no free address of the other family. After a pool
    /// change, re-assign them (with the Services whose assignment failed) so they gain
    /// the missing family; what they hold does not move.
    pub fn incomplete(&self) -> impl Iterator<Item = &ServiceKey> {
        self.services
            .iter()
            .filter(|(_, h)| h.incomplete)
            .map(|(k, _)| k)
    }

    /// The Services holding `ip` (more than one only when they share it).
    pub fn holders(&self, ip: IpAddr) -> &[ServiceKey] {
        self.ips.get(&ip).map_or(&[], |u| u.users.as_slice())
    }

    /// The names of the known pools.
    pub fn pool_names(&self) -> impl Iterator<Item = &str> {
        self.pools.keys().map(String::as_str)
    }

    /// Counts of one family of a pool, exact at any size; `None` for an unknown pool.
    pub fn usage(&self, pool: &str, family: Family) -> Option<FamilyUsage> {
        let entry = self.pools.get(pool)?;
        let i = slot(family);
        Some(FamilyUsage {
            total: entry.pool.size(family),
            assigned: entry.assigned[i],
            available: entry.space[i].available(),
        })
    }

    /// Whether the pool's addresses overlap other pools, which keeps it from new
    /// allocations; `None` for an unknown pool. Freezing is reported apart, by
    /// [`Allocator::frozen`].
    pub fn pool_health(&self, pool: &str) -> Option<PoolHealth> {
        let entry = self.pools.get(pool)?;
        Some(if entry.overlaps.is_empty() {
            PoolHealth::Ready
        } else {
            PoolHealth::Overlapping {
                with: entry.overlaps.clone(),
            }
        })
    }

    /// Freezes the pool (`Some(reason)`) or thaws it (`None`); false for an unknown
    /// pool, which nothing can freeze.
    ///
    /// A frozen pool keeps its addresses, its holders and its quarantine, and still
    /// reports usage and overlaps: Services keep what they hold (re-assigning or
    /// restoring them keeps it, as long as it is otherwise valid). But it hands out
    /// nothing new, whichever way a Service asks: not automatically, not through a
    /// matching serviceAllocation, not when the Service names it, not for an IP inside
    /// it, not to share an IP it holds, not for a missing family. Each refusal is
    /// [`AllocationError::PoolFrozen`] saying why.
    ///
    /// The freeze survives [`Allocator::upsert_pool`] of the same name and ends only
    /// here, or with [`Allocator::remove_pool`].
    pub fn set_frozen(&mut self, pool: &str, frozen: Option<FreezeReason>) -> bool {
        let Some(entry) = self.pools.get_mut(pool) else {
            return false;
        };
        entry.frozen = frozen;
        true
    }

    /// Why the pool is frozen; `None` when it is not, or unknown.
    pub fn frozen(&self, pool: &str) -> Option<FreezeReason> {
        self.pools.get(pool).and_then(|e| e.frozen)
    }
}
