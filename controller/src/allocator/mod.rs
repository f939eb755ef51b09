//! The allocator: which Service holds which IP, from which pool.
//!
//! A plain synchronous state machine. The Kubernetes adapter feeds it pools
//! ([`Allocator::upsert_pool`], [`Allocator::remove_pool`]) and Services
//! ([`Allocator::restore`] on start, then [`Allocator::assign`] and
//! [`Allocator::release`]), and writes back what it returns. Nothing here blocks, talks
//! to the API server or depends on Kubernetes types.
//!
//! Where things are decided:
//! - `pool`: what a pool holds and which Services it serves;
//! - `free_space`: which free address comes next;
//! - `sharing`: when two Services may hold one IP;
//! - `assign`: the choice of pool and addresses for one Service, and restoring;
//! - this module: the bookkeeping of holders, pools, overlaps and counts.

mod assign;
mod error;
mod free_space;
mod pool;
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
pub use pool::{Pool, ServiceAllocation};
pub use selector::{LabelOperator, LabelRequirement, LabelSelector};
pub use service::{
    FamilyPolicy, IpFamilies, Port, Protocol, ServiceKey, ServiceRequest, SharingKey, TrafficPolicy,
};
pub use sharing::SharingRefusal;

use free_space::FreeSpace;
use sharing::ShareProfile;

/// The IPs a Service holds and the pool they come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    /// The pool, written to the `ferrolb.io/ip-allocated-from-pool` annotation.
    pub pool: String,
    /// At most one IP per family, in the order of the Service's `spec.ipFamilies`.
    pub ips: Vec<IpAddr>,
}

/// Address counts of one family of one pool. `total == assigned + available` always.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FamilyUsage {
    /// Addresses the pool offers (buggy-IP avoidance applied).
    pub total: u128,
    /// Offered addresses held by at least one Service.
    pub assigned: u128,
    /// Offered addresses no Service holds.
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
}

#[derive(Debug)]
struct PoolEntry {
    pool: Pool,
    overlaps: BTreeMap<String, IpRange>,
    /// Free space per family, indexed by [`slot`].
    space: [FreeSpace; 2],
    assigned: [u128; 2],
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
    fn new(pool: Pool) -> Self {
        let space =
            FAMILIES.map(|f| FreeSpace::new(pool.avoids_family(f), pool.addresses.ranges_of(f)));
        Self {
            pool,
            overlaps: BTreeMap::new(),
            space,
            assigned: [0, 0],
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
    /// adapter keeps the last valid version (or none) and reports it `Invalid`.
    pub fn upsert_pool(&mut self, pool: Pool) -> Vec<ServiceKey> {
        let name = pool.name.clone();
        let quarantine: [Vec<u128>; 2] = match self.pools.get(&name) {
            Some(old) if old.pool == pool => return Vec::new(),
            Some(old) => old
                .space
                .each_ref()
                .map(|s| s.released_in_order().collect()),
            None => [Vec::new(), Vec::new()],
        };
        let mut entry = PoolEntry::new(pool);
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
            for bits in &quarantine[i] {
                if !entry.pool.avoids(family, *bits) && entry.space[i].claim(*bits) {
                    entry.space[i].release(*bits);
                }
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
        for entry in self.pools.values_mut() {
            if entry.pool.offers(ip) {
                entry.space[slot(family)].release(bits);
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

    /// Whether the pool is used for new allocations; `None` for an unknown pool.
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
}
